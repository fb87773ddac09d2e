"""Ingest: read train/validation/test play counts, validate, downsample, write parquet.

Keeps every hold-out user (anyone in validation or test) and samples the other train users by
``--sample-fraction`` with a seeded hash of the user id, so the sample does not depend on how Spark
partitions the data. Rejected rows go to ``<out-dir>/quarantine/<split>`` with their reason.
"""

from __future__ import annotations

import argparse

from music_recsys import constants as C
from music_recsys.artifacts import write_json
from music_recsys.interactions import clean
from music_recsys.spark import get_spark


def run(
    spark,
    train: str,
    validation: str,
    test: str,
    out_dir: str,
    sample_fraction: float,
    seed: int,
    max_reject_fraction: float,
    result: str,
) -> dict:
    from pyspark.sql import functions as F

    report: dict = {"splits": {}, "sample_fraction": sample_fraction, "seed": seed}
    frames = {}
    for split, path in zip(C.SPLITS, (train, validation, test), strict=True):
        kept, rejected, split_report = clean(spark, path)
        fraction = split_report["rows_rejected"] / split_report["rows_read"]
        if fraction > max_reject_fraction:
            raise ValueError(
                f"{path}: {split_report['rows_rejected']:,} of {split_report['rows_read']:,} rows rejected "
                f"({fraction:.2%} > max_reject_fraction {max_reject_fraction:.2%}): "
                f"{split_report['rejected_by_reason']}. Fix the file or raise max_reject_fraction"
            )
        if split_report["rows_rejected"]:
            rejected.write.mode("overwrite").parquet(f"{out_dir}/quarantine/{split}")
        frames[split] = kept
        report["splits"][split] = split_report

    holdout = frames["validation"].select(C.USER_ID).union(frames["test"].select(C.USER_ID)).distinct()
    report["holdout_users"] = holdout.count()
    report["train_users_before_sample"] = frames["train"].select(C.USER_ID).distinct().count()
    holdout = holdout.withColumn("_holdout", F.lit(True))
    train = frames["train"].join(F.broadcast(holdout), C.USER_ID, "left")
    bucket = F.pmod(F.xxhash64(F.col(C.USER_ID), F.lit(seed)), F.lit(1_000_000)) / 1_000_000.0
    sampled = train.filter(F.col("_holdout").isNotNull() | (bucket < F.lit(sample_fraction))).drop("_holdout")
    frames["train"] = sampled

    for split, frame in frames.items():
        # Sorted output makes every downstream stage see the same row order (ALS needs determinism).
        frame = frame.repartition(4, C.USER_ID).sortWithinPartitions(C.USER_ID, C.TRACK_ID)
        frame.write.mode("overwrite").parquet(f"{out_dir}/{split}")
        written = spark.read.parquet(f"{out_dir}/{split}")
        stats = written.agg(
            F.count("*").alias("rows"),
            F.countDistinct(C.USER_ID).alias("users"),
            F.countDistinct(C.TRACK_ID).alias("tracks"),
            F.sum(C.COUNT).alias("plays"),
        ).first()
        report["splits"][split].update(
            {
                "rows_written": stats["rows"],
                "users": stats["users"],
                "tracks": stats["tracks"],
                "plays": stats["plays"],
            }
        )
    write_json(result, report)
    return report


def main(**kwargs) -> dict:
    spark = get_spark("music_recsys.ingest")
    try:
        return run(spark, **kwargs)
    finally:
        spark.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True, help="train file (parquet, MSD TSV or CSV)")
    p.add_argument("--validation", required=True, help="validation file")
    p.add_argument("--test", required=True, help="test file")
    p.add_argument("--out-dir", required=True, help="run-scoped output directory")
    p.add_argument(
        "--sample-fraction",
        type=float,
        required=True,
        help="share of non-hold-out train users to keep (hold-out users are always kept)",
    )
    p.add_argument("--seed", type=int, required=True, help="seed of the user sample")
    p.add_argument(
        "--max-reject-fraction",
        type=float,
        required=True,
        help="fail when a split has a larger share of invalid rows",
    )
    p.add_argument("--result", required=True, help="path of the JSON result file")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(**vars(parse_args()))
