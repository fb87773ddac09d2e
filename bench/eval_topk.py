"""Benchmark: evaluation top-k inside Spark vs single-process numpy on the same factors.

Both sides do the same work — top-k by inner product with already-played items excluded, then the five
ranking metrics per user — so the ratio is the price of doing it in Spark. Optionally also times
``ALSModel.recommendForUserSubset`` (the study's way) at the smaller size.

    .venv/bin/python bench/eval_topk.py --sizes 5000x20000 20000x100000 --k 500
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.evaluate import score_split  # noqa: E402
from music_recsys import constants as C  # noqa: E402
from music_recsys.metrics import METRIC_NAMES, user_metrics  # noqa: E402
from music_recsys.spark import get_spark  # noqa: E402
from music_recsys.topk import top_k  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")


def synthetic(n_users: int, n_items: int, rank: int, seed: int):
    rng = np.random.default_rng(seed)
    users = np.abs(rng.normal(size=(n_users, rank))).astype(np.float32)
    items = np.abs(rng.normal(size=(n_items, rank))).astype(np.float32)
    seen = [rng.choice(n_items, size=int(rng.integers(5, 60)), replace=False) for _ in range(n_users)]
    relevant = [rng.choice(n_items, size=int(rng.integers(1, 20)), replace=False) for _ in range(n_users)]
    return users, items, seen, relevant


def numpy_eval(users, items, seen, relevant, k):
    totals = dict.fromkeys(METRIC_NAMES, 0.0)
    for pred, rel in zip(top_k(users, items, k, exclude=seen), relevant, strict=True):
        for name, value in user_metrics(pred, rel, k).items():
            totals[name] += value
    return {name: v / len(users) for name, v in totals.items()}


def spark_eval(spark, users, items, seen, relevant, k):
    from pyspark.sql import types as T

    schema = T.StructType(
        [
            T.StructField(C.USER_IDX, T.IntegerType()),
            T.StructField("relevant", T.ArrayType(T.IntegerType())),
            T.StructField("seen", T.ArrayType(T.IntegerType())),
        ]
    )
    truth = spark.createDataFrame(
        [(i, relevant[i].tolist(), seen[i].tolist()) for i in range(len(users))], schema
    ).cache()
    factors = spark.createDataFrame(
        [(i, users[i].tolist()) for i in range(len(users))], "id int, features array<float>"
    ).cache()
    truth.count(), factors.count()
    started = time.perf_counter()
    metrics = score_split(spark, truth, factors, items, k, exclude_seen=True)
    return metrics, time.perf_counter() - started


def main(sizes: list[str], k: int, rank: int, seed: int, write: bool) -> None:
    spark = get_spark("bench.eval_topk")
    cores = f"{spark.sparkContext.master} on {os.cpu_count()} cpus"
    lines = []
    for size in sizes:
        n_users, n_items = map(int, size.lower().split("x"))
        users, items, seen, relevant = synthetic(n_users, n_items, rank, seed)
        spark_eval(spark, users[:200], items, seen[:200], relevant[:200], k)  # warm-up: JIT, workers
        spark_metrics, spark_s = spark_eval(spark, users, items, seen, relevant, k)
        started = time.perf_counter()
        np_metrics = numpy_eval(users, items, seen, relevant, k)
        numpy_s = time.perf_counter() - started
        same = all(abs(spark_metrics[m] - np_metrics[m]) < 1e-9 for m in METRIC_NAMES)
        line = (
            f"| {n_users:,} × {n_items:,} | {rank} | {k} | {spark_s:.2f} | {numpy_s:.2f} | "
            f"{spark_s / numpy_s:.2f}x | {'yes' if same else 'NO'} |"
        )
        print(line, flush=True)
        lines.append(line)
    spark.stop()
    if write:
        import pyspark

        header = (
            f"\n### Evaluation top-k: Spark (mapInPandas) vs numpy — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
            f"Machine: {platform.machine()}, Spark {cores}, Python {platform.python_version()}, "
            f"pyspark {pyspark.__version__}, numpy {np.__version__}. Both sides exclude played items and "
            "compute all five metrics; numpy is one process, one thread of Python.\n\n"
            "| users × items | rank | k | Spark s | numpy s | Spark / numpy | same metrics |\n"
            "|---|---|---|---|---|---|---|\n"
        )
        with RESULTS.open("a") as fh:
            fh.write(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["5000x20000", "20000x100000"], help="USERSxITEMS")
    p.add_argument("--k", type=int, default=500, help="recommendations per user")
    p.add_argument("--rank", type=int, default=20, help="factor dimension")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic factors")
    p.add_argument("--no-write", dest="write", action="store_false", help="do not append to bench/RESULTS.md")
    args = p.parse_args()
    main(**vars(args))
