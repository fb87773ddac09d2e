"""Batch recommendations: a published model's top-k tracks for every train user, written into its bundle.

Reads the bundle (``models/<version>/``: factors, each user's train tracks, popularity, id labels) and
writes ``recommendations/`` inside it: parquet ``user_id``, ``rank`` (1 = best), ``track_id``, ``score``,
original string ids, users in index order, tracks the user played in train excluded. The top-k is the
evaluation's kernel (``music_recsys.evaluation.topk``: a blocked matrix product and an exact cut, ties by
track index) run on contiguous ranges of users inside Spark through ``mapInPandas`` — not
``recommendForAllUsers``, which is slow and memory-hungry (apache/spark #17742). The Python workers read
the bundle's ``.npy`` files memory-mapped from its path (shared storage), so the same code runs under
spark-submit and on a Spark Connect server.

A user the transform left without factors gets what the serving API gives them: the most played train
tracks they have not played, scored by train listeners. A user with fewer than k unplayed tracks gets
them all. The row count and a checksum of the files are recorded in the bundle's ``model.json``.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
import uuid
from pathlib import Path

import numpy as np

from music_recsys.pipeline import job
from music_recsys.pipeline.job import InputError
from music_recsys.run_folders import replace_folder, write_json
from music_recsys.store import recommendations as recs
from music_recsys.store.bundle import BundleError, load_arrays, verify_bundle

# Users per Spark partition (one parquet file each) past the cores' worth: bounds a task's output.
USERS_PER_PARTITION = 200_000


def run(spark, bundle: str, k: int, result: str, partitions: int = 0) -> dict:
    from pyspark.sql import types as T

    from music_recsys.pipeline.spark import default_parallelism

    started = time.perf_counter()
    if k < 1:
        raise InputError(f"--k {k}: the number of recommendations per user must be at least 1")
    folder = Path(bundle)
    try:
        card = verify_bundle(folder)
    except BundleError as exc:
        raise InputError(f"{exc}; publish the model again") from exc
    n_users = card["n_users"]
    if partitions <= 0:
        partitions = max(default_parallelism(spark), math.ceil(n_users / USERS_PER_PARTITION))
    partitions = max(1, min(partitions, n_users))
    schema = T.StructType(
        [
            T.StructField("user_id", T.StringType(), False),
            T.StructField("rank", T.IntegerType(), False),
            T.StructField("track_id", T.StringType(), False),
            T.StructField("score", T.FloatType(), False),
        ]
    )
    # range() with explicit slices gives each partition a contiguous block of user indices, without a
    # shuffle; the written files then hold users in index order.
    users = spark.range(0, n_users, 1, partitions)
    rows = users.mapInPandas(functools.partial(recs.recommend_batches, bundle=str(folder), k=k), schema)
    target = recs.recommendations_dir(folder)
    staging = folder / f".{recs.RECOMMENDATIONS_DIR}.{uuid.uuid4().hex[:8]}"
    try:
        rows.write.mode("error").parquet(str(staging))
        lengths = recs.expected_lengths(folder, k)
        written = recs.parquet_rows(staging)
        if written != int(lengths.sum()):
            raise RuntimeError(f"{staging}: {written} rows written, {int(lengths.sum())} expected ({n_users} users)")
        replace_folder(staging, target)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    factors = load_arrays(folder, mmap=True)["user_factors"]
    cold = int((~np.any(np.asarray(factors) != 0, axis=1)).sum())
    short = int((lengths < k).sum())
    seconds = time.perf_counter() - started
    entry = recs.card_entry(folder, k, written, n_users, short, cold, seconds)
    recs.record_in_card(folder, entry)
    report = {
        "status": "success",
        "version": card["version"],
        "bundle": str(folder),
        "path": str(target),
        "k": k,
        "rows": written,
        "users": n_users,
        "short_lists": short,
        "popularity_fallback_users": cold,
        "partitions": partitions,
        "checksum": entry["checksum"]["digest"],
        "seconds": seconds,
        "rows_per_second": written / seconds if seconds else None,
    }
    write_json(result, report)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="the published model's bundle folder (models/<version>)")
    p.add_argument("--k", type=int, required=True, help="tracks per user (the run's batch_k)")
    p.add_argument(
        "--partitions",
        type=int,
        default=0,
        help=f"Spark partitions (= output files); 0: the cores, or one per {USERS_PER_PARTITION:,} users if more",
    )
    p.add_argument("--result", required=True, help="path of the JSON result file")
    return p.parse_args(argv)


if __name__ == "__main__":
    job.main(run, parse_args)
