"""Evaluate: score every fitted grid point and a popularity baseline, pick the best, score it on test.

Top-k runs inside Spark: the item factors are broadcast once, users arrive in Arrow batches through
``mapInPandas``, and each batch is one matrix product plus a partial sort per row
(``music_recsys.topk``) — no ``recommendForUserSubset``. Metrics follow Spark ``RankingMetrics``
(``music_recsys.metrics``). Already-played train items are excluded unless ``--keep-seen``.

Best point: highest validation MAP, ties broken by NDCG@k, then by trial id.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from music_recsys import constants as C
from music_recsys.artifacts import read_json, write_json
from music_recsys.metrics import METRIC_DEFINITIONS, METRIC_NAMES
from music_recsys.spark import get_spark

SELECTION_RULE = "highest validation map; ties by ndcg_at_k, then trial_id"


def score_split(spark, users, user_factors, item_matrix: np.ndarray, k: int, exclude_seen: bool) -> dict:
    """Mean metrics over ``users`` (user_idx, relevant, seen) for one model's factors.

    ``user_factors`` is a DataFrame (id, features), or None for the popularity baseline, which is
    the rank-1 model whose user factor is 1 and item factor the item's popularity.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from music_recsys.metrics import user_metrics
    from music_recsys.topk import top_k

    if user_factors is None:
        scored = users.withColumn("features", F.array(F.lit(1.0).cast("float")))
    else:
        scored = users.join(user_factors.withColumnRenamed("id", C.USER_IDX), C.USER_IDX, "left")
    items = spark.sparkContext.broadcast(item_matrix)
    out_schema = T.StructType(
        [T.StructField(C.USER_IDX, T.IntegerType()), T.StructField("cold", T.IntegerType())]
        + [T.StructField(name, T.DoubleType()) for name in METRIC_NAMES]
    )

    def score_batches(batches):
        import pandas as pd

        item_vectors = items.value
        for batch in batches:
            has_factors = batch["features"].notna().to_numpy()
            preds: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(batch)
            if has_factors.any():
                rows = np.flatnonzero(has_factors)
                vectors = np.stack(batch["features"].to_numpy()[rows]).astype(np.float32)
                seen = None
                if exclude_seen:
                    seen = [s if s is not None else np.zeros(0, dtype=np.int64) for s in batch["seen"].to_numpy()[rows]]
                for row, pred in zip(rows, top_k(vectors, item_vectors, k, exclude=seen), strict=True):
                    preds[row] = pred
            metrics = [user_metrics(p, r, k) for p, r in zip(preds, batch["relevant"].to_numpy(), strict=True)]
            frame = pd.DataFrame(metrics, columns=list(METRIC_NAMES))
            frame.insert(0, "cold", (~has_factors).astype("int32"))
            frame.insert(0, C.USER_IDX, batch[C.USER_IDX].astype("int32").to_numpy())
            yield frame

    per_user = scored.select(C.USER_IDX, "relevant", "seen", "features").mapInPandas(score_batches, out_schema)
    aggs = [F.avg(name).alias(name) for name in METRIC_NAMES]
    row = per_user.agg(*aggs, F.count("*").alias("n_users"), F.sum("cold").alias("n_cold_users")).first()
    items.unpersist()
    return row.asDict()


def load_trials(plan: dict) -> list[dict]:
    """The plan's trials joined with their fit results; a missing result means the fit never ran."""
    trials = []
    for trial in plan["trials"]:
        result_path = Path(trial["result"])
        fit = (
            read_json(result_path)
            if result_path.exists()
            else {"status": "missing", "error": "fit task produced no result"}
        )
        trials.append(
            {
                **trial,
                "status": fit["status"],
                "fit_seconds": fit.get("fit_seconds"),
                "error": fit.get("error"),
            }
        )
    return trials


def pick_best(rows: list[dict], transform: str | None = None) -> dict | None:
    """The selection rule (SELECTION_RULE) over successful ALS validation rows, optionally of one transform."""
    scored = [
        r
        for r in rows
        if r["split"] == "validation"
        and r["model"] == "als"
        and r["status"] == "success"
        and transform in (None, r["transform"])
    ]
    if not scored:
        return None
    return max(scored, key=lambda r: (r["map"], r["ndcg_at_k"], r["trial_id"]))


def run(spark, index_dir: str, plan: str, k: int, keep_seen: bool, result: str) -> dict:
    from pyspark.sql import functions as F

    run_plan = read_json(plan)
    exclude_seen = not keep_seen
    train = spark.read.parquet(f"{index_dir}/train")
    n_items = train.agg(F.max(C.ITEM_IDX)).first()[0] + 1
    seen = train.groupBy(C.USER_IDX).agg(F.collect_list(C.ITEM_IDX).alias("seen"))
    truth = {}
    for split in C.EVAL_SPLITS:
        relevant = (
            spark.read.parquet(f"{index_dir}/{split}")
            .groupBy(C.USER_IDX)
            .agg(F.collect_set(C.ITEM_IDX).alias("relevant"))
        )
        truth[split] = relevant.join(seen, C.USER_IDX, "left").cache()

    popularity = np.zeros((n_items, 1), dtype=np.float32)
    for row in train.groupBy(C.ITEM_IDX).agg(F.count("*").alias("n")).collect():
        popularity[row[C.ITEM_IDX], 0] = row["n"]

    label = {"k": k, "exclude_seen": exclude_seen}
    rows: list[dict] = []

    def evaluate(trial: dict, split: str) -> dict:
        started = time.perf_counter()
        if trial["model"] == "popularity":
            metrics = score_split(spark, truth[split], None, popularity, k, exclude_seen)
        else:
            item_matrix = np.load(f"{trial['out_dir']}/item_factors.npy")
            user_factors = spark.read.parquet(f"{trial['out_dir']}/user_factors")
            metrics = score_split(spark, truth[split], user_factors, item_matrix, k, exclude_seen)
        row = {**trial, **label, **metrics, "split": split, "eval_seconds": time.perf_counter() - started}
        rows.append(row)
        return row

    baseline = {
        "trial_id": C.POPULARITY_TRIAL_ID,
        "model": "popularity",
        "rank": None,
        "reg_param": None,
        "alpha": None,
        "transform": "none",
        "status": "success",
        "fit_seconds": 0.0,
        "error": None,
    }
    trials = [{**t, "model": "als"} for t in load_trials(run_plan)]
    evaluate(baseline, "validation")
    for trial in trials:
        if trial["status"] == "success":
            evaluate(trial, "validation")
        else:
            rows.append(
                {
                    **trial,
                    **label,
                    **dict.fromkeys(METRIC_NAMES),
                    "split": "validation",
                    "n_users": None,
                    "n_cold_users": None,
                    "eval_seconds": None,
                }
            )
    best = pick_best(rows)
    # Test: the baseline, the best point, and the best point of each transform (the seed's §5 table).
    evaluate(baseline, "test")
    on_test = set()
    if best is not None:
        for transform in sorted({t["transform"] for t in trials}):
            if (best_of_transform := pick_best(rows, transform)) is not None:
                on_test.add(best_of_transform["trial_id"])
        for trial in trials:
            if trial["trial_id"] in on_test:
                evaluate(trial, "test")
    report = {
        **label,
        "selection_rule": SELECTION_RULE,
        "metric_definitions": METRIC_DEFINITIONS,
        "best_trial_id": best["trial_id"] if best else None,
        "n_items": n_items,
        "rows": rows,
    }
    write_json(result, report)
    for frame in truth.values():
        frame.unpersist()
    return report


def main(**kwargs) -> dict:
    spark = get_spark("music_recsys.evaluate")
    try:
        return run(spark, **kwargs)
    finally:
        spark.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index-dir", required=True, help="the index stage's output directory")
    p.add_argument("--plan", required=True, help="the run's plan.json (trials and their result paths)")
    p.add_argument("--k", type=int, required=True, help="length of each recommendation list")
    p.add_argument("--keep-seen", action="store_true", help="do not exclude items the user already played in train")
    p.add_argument("--result", required=True, help="path of the JSON result file")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(**vars(parse_args()))
