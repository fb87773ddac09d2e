"""Evaluate: score every fitted grid point and a popularity baseline, pick the best, score it on test.

Top-k runs inside Spark: users arrive in Arrow batches through ``mapInPandas`` and each batch is one
matrix product plus a partial sort per row (``music_recsys.evaluation.scoring``) — no ``recommendForUserSubset``.
The Python workers read the item factors from the trial's ``item_factors.npy`` (shared storage, as every
run artifact), so the same code runs under spark-submit and on a Spark Connect server. Metrics follow
Spark ``RankingMetrics`` (``music_recsys.evaluation.metrics``), plus MPR, graded NDCG, catalogue coverage and the
popularity of what is recommended, overall and per segment of users by train history length.
Already-played train items are excluded unless ``--keep-seen``.

Best point: the ``--selection-metric`` on validation (``music_recsys.evaluation.selection``). This script
only wires Spark to the package: reading inputs, ``mapInPandas``, writing the result.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np

from music_recsys import constants as C
from music_recsys.evaluation.catalogue import METRIC_DEFINITIONS, SELECTION_METRICS
from music_recsys.evaluation.scoring import USER_SUMS, popularity_percentiles, score_batches, segment_boundaries
from music_recsys.evaluation.selection import (
    check_selection_metric,
    load_trials,
    pick_best,
    popularity_trial,
    segment_labels,
    selection_rule,
    summarise,
    trials_for_test,
    unscored_row,
)
from music_recsys.pipeline import job
from music_recsys.run_folders import RunLayout, read_json, save_npy, write_json


def score_split(
    spark,
    truth,
    boundaries: list[int],
    user_factors,
    items_path: str,
    popularity_path: str,
    k: int,
    exclude_seen: bool,
    n_items: int,
) -> tuple[dict, list[dict]]:
    """Metrics of one model on one split (overall, per segment). ``user_factors`` is a DataFrame (id,
    features), or None for the popularity baseline: the rank-1 model whose user factor is 1 and item
    factor the item's popularity."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if user_factors is None:
        scored = truth.withColumn("features", F.array(F.lit(1.0).cast("float")))
    else:
        scored = truth.join(user_factors.withColumnRenamed("id", C.USER_IDX), C.USER_IDX, "left")
    schema = T.StructType(
        [T.StructField("segment", T.IntegerType()), T.StructField("cold", T.IntegerType())]
        + [T.StructField(name, T.DoubleType()) for name in USER_SUMS]
        + [T.StructField("item_counts", T.ArrayType(T.LongType()))]
    )
    batches = functools.partial(
        score_batches,
        items_path=items_path,
        popularity_path=popularity_path,
        k=k,
        exclude_seen=exclude_seen,
        boundaries=tuple(boundaries),
    )
    per_user = scored.select(C.USER_IDX, "relevant", "counts", "seen", "n_train", "features").mapInPandas(
        batches, schema
    )
    groups = (
        per_user.groupBy("segment")
        .agg(
            *[F.sum(name).alias(name) for name in USER_SUMS],
            F.count("*").alias("n_users"),
            F.sum("cold").alias("n_cold_users"),
            F.collect_list("item_counts").alias("item_counts"),
        )
        .collect()
    )
    return summarise([g.asDict() for g in groups], n_items)


def run(spark, index_dir: str, plan: str, k: int, keep_seen: bool, selection_metric: str, result: str) -> dict:
    from pyspark.sql import functions as F

    check_selection_metric(selection_metric)
    run_plan = read_json(plan)
    work = RunLayout(run_plan["run_dir"]).evaluation_dir
    exclude_seen = not keep_seen
    train = spark.read.parquet(f"{index_dir}/train")
    # Popularity = train listeners per track: the baseline's item factors and the percentiles of what is
    # recommended. Written next to the run, where Spark's Python workers read them.
    counts = train.groupBy(C.ITEM_IDX).agg(F.count("*").alias("n")).toPandas()
    n_items = int(counts[C.ITEM_IDX].max()) + 1
    popularity = np.zeros(n_items, dtype=np.float32)
    popularity[counts[C.ITEM_IDX].to_numpy()] = counts["n"].to_numpy()
    popularity_items = str(save_npy(work / "popularity_factors.npy", popularity[:, None]))
    popularity_pct = str(save_npy(work / "popularity_percentiles.npy", popularity_percentiles(popularity)))

    seen = train.groupBy(C.USER_IDX).agg(
        F.collect_list(C.ITEM_IDX).alias("seen"), F.count("*").cast("int").alias("n_train")
    )
    truth, boundaries = {}, {}
    for split in C.EVAL_SPLITS:
        held_out = (
            spark.read.parquet(f"{index_dir}/{split}")
            .groupBy(C.USER_IDX)
            .agg(F.sort_array(F.collect_list(F.struct(C.ITEM_IDX, C.COUNT))).alias("pairs"))
            .select(
                C.USER_IDX,
                F.col(f"pairs.{C.ITEM_IDX}").alias("relevant"),
                F.col(f"pairs.{C.COUNT}").alias("counts"),
            )
        )
        truth[split] = held_out.join(seen, C.USER_IDX, "left").fillna({"n_train": 0}).cache()
        lengths = truth[split].select("n_train").toPandas()["n_train"].to_numpy()
        boundaries[split] = segment_boundaries(lengths)

    label = {"k": k, "exclude_seen": exclude_seen}
    rows: list[dict] = []
    segments: list[dict] = []

    def evaluate(trial: dict, split: str) -> dict:
        started = time.perf_counter()
        if trial["model"] == "popularity":
            user_factors, items_path = None, popularity_items
        else:
            user_factors = spark.read.parquet(f"{trial['out_dir']}/user_factors")
            items_path = f"{trial['out_dir']}/item_factors.npy"
        metrics, by_segment = score_split(
            spark, truth[split], boundaries[split], user_factors, items_path, popularity_pct, k, exclude_seen, n_items
        )
        row = {**trial, **label, **metrics, "split": split, "eval_seconds": time.perf_counter() - started}
        rows.append(row)
        ranges = {s["segment"]: s for s in segment_labels(boundaries[split])}
        segments.extend(
            {"trial_id": trial["trial_id"], "split": split, **ranges[s["segment"]], **s} for s in by_segment
        )
        return row

    baseline = popularity_trial()
    trials = [{**t, "model": "als"} for t in load_trials(run_plan)]
    evaluate(baseline, "validation")
    for trial in trials:
        if trial["status"] == "success":
            evaluate(trial, "validation")
        else:
            rows.append(unscored_row(trial, label))
    best = pick_best(rows, selection_metric)
    evaluate(baseline, "test")
    on_test = trials_for_test(rows, (t["transform"] for t in trials), selection_metric)
    for trial in trials:
        if trial["trial_id"] in on_test:
            evaluate(trial, "test")
    report = {
        **label,
        "selection_metric": selection_metric,
        "selection_rule": selection_rule(selection_metric),
        "metric_definitions": METRIC_DEFINITIONS,
        "best_trial_id": best["trial_id"] if best else None,
        "n_items": n_items,
        "segment_boundaries": boundaries,
        "rows": rows,
        "segments": segments,
    }
    write_json(result, report)
    for frame in truth.values():
        frame.unpersist()
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index-dir", required=True, help="the index stage's output directory")
    p.add_argument("--plan", required=True, help="the run's plan.json (trials and their result paths)")
    p.add_argument("--k", type=int, required=True, help="length of each recommendation list")
    p.add_argument("--keep-seen", action="store_true", help="do not exclude items the user already played in train")
    p.add_argument(
        "--selection-metric",
        choices=SELECTION_METRICS,
        required=True,
        help="validation metric that picks the best grid point (mpr: lowest wins; others: highest); "
        "the DAG passes the run's selection_metric param",
    )
    p.add_argument("--result", required=True, help="path of the JSON result file")
    return p.parse_args(argv)


if __name__ == "__main__":
    job.main(run, parse_args)
