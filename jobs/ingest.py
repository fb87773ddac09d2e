"""Ingest: read train/validation/test play counts, validate, profile, downsample, write parquet.

Keeps every hold-out user (anyone in validation or test) and samples the other train users by
``--sample-fraction`` with a seeded hash of the user id, so the sample does not depend on how Spark
partitions the data. Rejected rows go to ``<out-dir>/quarantine/<split>`` with their reason. Each split's
profile (rows, users, tracks, plays, count distribution; ``music_recsys.data.drift``) is in the result,
and train's hashed user and track ids go to ``<out-dir>/ids`` for the next run's data check.
"""

from __future__ import annotations

import argparse

from music_recsys import constants as C
from music_recsys.data.drift import hashed_ids, profile
from music_recsys.data.readers import clean
from music_recsys.pipeline import job
from music_recsys.pipeline.job import InputError
from music_recsys.run_folders import write_json


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

    report: dict = {"splits": {}, "sample_fraction": sample_fraction, "seed": seed, "ids_dir": f"{out_dir}/ids"}
    sampling = sample_fraction < 1.0
    for split, path in zip(C.SPLITS, (train, validation, test), strict=True):
        kept, rejected, split_report = clean(spark, path)
        fraction = split_report["rows_rejected"] / split_report["rows_read"]
        if fraction > max_reject_fraction:
            raise InputError(
                f"{path}: {split_report['rows_rejected']:,} of {split_report['rows_read']:,} rows rejected "
                f"({fraction:.2%} > max_reject_fraction {max_reject_fraction:.2%}): "
                f"{split_report['rejected_by_reason']}. Fix the file or raise max_reject_fraction"
            )
        if split_report["rows_rejected"]:
            rejected.write.mode("overwrite").parquet(f"{out_dir}/quarantine/{split}")
        # Written once, sorted, so every downstream stage sees the same row order (ALS needs determinism);
        # the profile and the ids are read from what was written.
        target = f"{out_dir}/train_full" if split == "train" and sampling else f"{out_dir}/{split}"
        _write_sorted(kept, target)
        written = spark.read.parquet(target)
        split_profile = profile(written)
        split_report.update(
            rows_kept=split_profile["rows"],
            duplicates_merged=split_report["rows_valid"] - split_profile["rows"],
            profile=split_profile,
            rows_written=split_profile["rows"],
            **{key: split_profile[key] for key in ("users", "tracks", "plays")},
        )
        report["splits"][split] = split_report
        if split == "train":
            for column, name in ((C.USER_ID, "users"), (C.TRACK_ID, "tracks")):
                hashed_ids(written, column).write.mode("overwrite").parquet(f"{report['ids_dir']}/train_{name}")
    report["train_users_before_sample"] = report["splits"]["train"]["users"]

    if sampling:
        holdout = (
            spark.read.parquet(f"{out_dir}/validation")
            .select(C.USER_ID)
            .union(spark.read.parquet(f"{out_dir}/test").select(C.USER_ID))
            .distinct()
            .withColumn("_holdout", F.lit(True))
        )
        bucket = F.pmod(F.xxhash64(F.col(C.USER_ID), F.lit(seed)), F.lit(1_000_000)) / 1_000_000.0
        sampled = (
            spark.read.parquet(f"{out_dir}/train_full")
            .join(F.broadcast(holdout), C.USER_ID, "left")
            .filter(F.col("_holdout").isNotNull() | (bucket < F.lit(sample_fraction)))
            .drop("_holdout")
        )
        _write_sorted(sampled, f"{out_dir}/train")
        written = profile(spark.read.parquet(f"{out_dir}/train"))
        report["splits"]["train"].update(
            rows_written=written["rows"], **{key: written[key] for key in ("users", "tracks", "plays")}
        )
        report["holdout_users"] = holdout.count()
    write_json(result, report)
    return report


def _write_sorted(frame, path: str) -> None:
    frame.repartition(4, C.USER_ID).sortWithinPartitions(C.USER_ID, C.TRACK_ID).write.mode("overwrite").parquet(path)


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
    job.main(run, parse_args)
