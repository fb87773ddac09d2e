"""Evaluate: score every fitted grid point and a popularity baseline, pick the best, score it on test.

Top-k runs inside Spark: users arrive in Arrow batches through ``mapInPandas`` and each batch is one
matrix product plus a partial sort per row (``music_recsys.evaluation.scoring``) — no ``recommendForUserSubset``.
The Python workers read the item factors from the trial's ``item_factors.npy`` (shared storage, as every
run artifact), so the same code runs under spark-submit and on a Spark Connect server. Metrics follow
Spark ``RankingMetrics`` (``music_recsys.evaluation.metrics``), plus MPR, graded NDCG, catalogue coverage and the
popularity of what is recommended, overall and per segment of users by train history length.
Already-played train items are excluded unless ``--keep-seen``.

Best point: the ``--selection-metric`` on validation (lowest for mpr, else highest), ties by NDCG@k,
then by trial id.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np

from music_recsys import constants as C
from music_recsys.evaluation.metrics import METRIC_DEFINITIONS, METRIC_NAMES
from music_recsys.evaluation.scoring import (
    COVERAGE_SEGMENT,
    USER_SUMS,
    popularity_percentiles,
    score_batches,
    segment_boundaries,
)
from music_recsys.pipeline import job
from music_recsys.store.layout import RunLayout, read_json, save_npy, write_json

# Every metric a scored row carries (als_trials columns).
ROW_METRICS = (*METRIC_NAMES, "ndcg_graded_at_k", "mpr", "coverage_at_k", "mean_rec_popularity")
SEGMENT_NAMES = ("light", "medium", "heavy")


def selection_rule(metric: str) -> str:
    direction = "lowest" if metric in C.LOWER_IS_BETTER else "highest"
    return f"{direction} validation {metric}; ties by ndcg_at_k, then the last trial_id in sort order"


def segment_labels(boundaries: list[int]) -> list[dict]:
    """Name and train-history range (tracks played) of each segment."""
    names = SEGMENT_NAMES if len(boundaries) == 2 else [f"segment {i + 1}" for i in range(len(boundaries) + 1)]
    lows = [0, *(b + 1 for b in boundaries)]
    highs = [*boundaries, None]
    return [
        {"segment": i, "name": names[i], "min_history": lo, "max_history": hi}
        for i, (lo, hi) in enumerate(zip(lows, highs, strict=True))
    ]


def summarise(groups: list, n_items: int) -> tuple[dict, list[dict]]:
    """Overall metrics and per-segment metrics from the per-segment sums of ``score_batches`` rows."""

    def means(sums: dict, n_users: int) -> dict:
        out = {name: sums[name] / n_users if n_users else None for name in (*METRIC_NAMES, "ndcg_graded_at_k")}
        out["mpr"] = sums["mpr_num"] / sums["mpr_den"] if sums["mpr_den"] else None
        out["mean_rec_popularity"] = sums["rec_pop_sum"] / sums["n_recs"] if sums["n_recs"] else None
        return out

    total = dict.fromkeys(USER_SUMS, 0.0)
    n_users = n_cold = 0
    segments = []
    item_counts = np.zeros(n_items, dtype=np.int64)
    for group in groups:
        if group["segment"] == COVERAGE_SEGMENT:
            for counts in group["item_counts"]:
                item_counts += np.asarray(counts, dtype=np.int64)
            continue
        sums = {name: group[name] or 0.0 for name in USER_SUMS}
        for name in USER_SUMS:
            total[name] += sums[name]
        n_users += group["n_users"]
        n_cold += group["n_cold_users"]
        segments.append({"segment": group["segment"], "n_users": group["n_users"], **means(sums, group["n_users"])})
    overall = {
        **means(total, n_users),
        "coverage_at_k": float(np.count_nonzero(item_counts)) / n_items if n_items else None,
        "n_users": n_users,
        "n_cold_users": n_cold,
    }
    return overall, sorted(segments, key=lambda s: s["segment"])


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


def pick_best(rows: list[dict], metric: str = "map", transform: str | None = None) -> dict | None:
    """The selection rule (``selection_rule``) over successful ALS validation rows, optionally of one transform."""
    scored = [
        r
        for r in rows
        if r["split"] == "validation"
        and r["model"] == "als"
        and r["status"] == "success"
        and r[metric] is not None
        and transform in (None, r["transform"])
    ]
    if not scored:
        return None
    sign = -1.0 if metric in C.LOWER_IS_BETTER else 1.0
    return max(scored, key=lambda r: (sign * r[metric], r["ndcg_at_k"], r["trial_id"]))


def run(spark, index_dir: str, plan: str, k: int, keep_seen: bool, selection_metric: str, result: str) -> dict:
    from pyspark.sql import functions as F

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
                    **dict.fromkeys(ROW_METRICS),
                    "split": "validation",
                    "n_users": None,
                    "n_cold_users": None,
                    "eval_seconds": None,
                }
            )
    best = pick_best(rows, selection_metric)
    # Test: the baseline, the best point, and the best point of each transform (the study's §5 table).
    evaluate(baseline, "test")
    if best is not None:
        on_test = set()
        for transform in sorted({t["transform"] for t in trials}):
            if (best_of_transform := pick_best(rows, selection_metric, transform)) is not None:
                on_test.add(best_of_transform["trial_id"])
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
        choices=C.SELECTION_METRICS,
        default="map",
        help="validation metric that picks the best grid point (mpr: lowest wins; others: highest)",
    )
    p.add_argument("--result", required=True, help="path of the JSON result file")
    return p.parse_args(argv)


if __name__ == "__main__":
    job.main(run, parse_args)
