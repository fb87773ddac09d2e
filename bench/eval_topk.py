"""Benchmark: the evaluation's top-k and metrics — inside Spark vs numpy, and what the extended metrics cost.

Two comparisons on the same synthetic factors, measured side by side in one run:
- Spark (``jobs/evaluate.py::score_split``: ``mapInPandas`` over user batches) vs the same work in one
  numpy process (``music_recsys.evaluation.scoring.score_block``): top-k with played items excluded and every
  metric (the five Spark RankingMetrics ones, graded NDCG, MPR, coverage, popularity of what is
  recommended), metrics compared to 1e-9;
- the evaluation today vs the evaluation before MPR, graded NDCG, coverage and segments were added
  (``jobs/evaluate.py`` at ``--before``, taken from git), in the same Spark session, alternately: the
  price of the extended metrics.

    .venv/bin/python bench/eval_topk.py --sizes 5000x20000 20000x100000 --k 500
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results import append_section  # noqa: E402
from jobs.evaluate import score_split  # noqa: E402
from music_recsys import constants as C  # noqa: E402
from music_recsys.evaluation.scoring import Truth, popularity_percentiles, score_block, segment_boundaries  # noqa: E402
from music_recsys.evaluation.selection import summarise  # noqa: E402
from music_recsys.pipeline.spark import get_spark  # noqa: E402

BEFORE = "01586cc"  # the last commit before the extended metrics


def synthetic(n_users: int, n_items: int, rank: int, seed: int):
    rng = np.random.default_rng(seed)
    users = np.abs(rng.normal(size=(n_users, rank))).astype(np.float32)
    items = np.abs(rng.normal(size=(n_items, rank))).astype(np.float32)
    seen = [np.sort(rng.choice(n_items, size=int(rng.integers(5, 60)), replace=False)) for _ in range(n_users)]
    relevant = [np.sort(rng.choice(n_items, size=int(rng.integers(1, 20)), replace=False)) for _ in range(n_users)]
    counts = [rng.integers(1, 20, size=len(r)).astype(np.float64) for r in relevant]
    return users, items, seen, relevant, counts


def load_before(commit: str, workdir: Path):
    """``jobs/evaluate.py`` as it was at ``commit``."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{commit}:jobs/evaluate.py"], check=True, capture_output=True, text=True
    ).stdout
    path = workdir / "evaluate_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("evaluate_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def frames(spark, users, seen, relevant, counts):
    from pyspark.sql import types as T

    n_train = [len(s) for s in seen]
    schema = T.StructType(
        [
            T.StructField(C.USER_IDX, T.IntegerType()),
            T.StructField("relevant", T.ArrayType(T.IntegerType())),
            T.StructField("counts", T.ArrayType(T.LongType())),
            T.StructField("seen", T.ArrayType(T.IntegerType())),
            T.StructField("n_train", T.IntegerType()),
        ]
    )
    rows = [
        (i, relevant[i].tolist(), counts[i].astype(int).tolist(), seen[i].tolist(), n_train[i])
        for i in range(len(users))
    ]
    truth = spark.createDataFrame(rows, schema).cache()
    factors = spark.createDataFrame(
        [(i, users[i].tolist()) for i in range(len(users))], "id int, features array<float>"
    ).cache()
    truth.count(), factors.count()
    return truth, factors, segment_boundaries(np.array(n_train))


def score_today(spark, truth, bounds, factors, items_path: str, popularity_path: str, k: int, n_items: int) -> dict:
    """Today's evaluation of one model on one split, played items excluded: the overall metrics."""
    return score_split(spark, truth, bounds, factors, items_path, popularity_path, k, True, n_items)[0]


def main(sizes: list[str], k: int, rank: int, seed: int, repeat: int, before: str, write: bool) -> None:
    spark = get_spark("bench.eval_topk")
    cores = f"{spark.sparkContext.master} on {os.cpu_count()} cpus"
    work = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    old = load_before(before, work)
    price, cost = [], []
    for size in sizes:
        n_users, n_items = map(int, size.lower().split("x"))
        users, items, seen, relevant, counts = synthetic(n_users, n_items, rank, seed)
        items_path, pop_path = work / f"items_{size}.npy", work / f"popularity_{size}.npy"
        np.save(items_path, items)
        popularity = np.bincount(np.concatenate(seen), minlength=n_items).astype(np.float32)
        np.save(pop_path, popularity_percentiles(popularity))
        truth, factors, bounds = frames(spark, users, seen, relevant, counts)

        today = functools.partial(
            score_today, spark, truth, bounds, factors, str(items_path), str(pop_path), k, n_items
        )
        yesterday = functools.partial(
            old.score_split, spark, truth.select(C.USER_IDX, "relevant", "seen"), factors, items, k, True
        )

        today(), yesterday()  # warm-up: JIT, Python workers
        times_today, times_before = [], []
        for _ in range(repeat):  # alternately, so drift in the machine's speed hits both
            started = time.perf_counter()
            spark_metrics = today()
            times_today.append(time.perf_counter() - started)
            started = time.perf_counter()
            before_metrics = yesterday()
            times_before.append(time.perf_counter() - started)
        started = time.perf_counter()
        rows, item_counts = score_block(users, items, Truth(relevant, counts, seen), k, True, np.load(pop_path))
        sums = {name: sum(r[name] for r in rows) for name in rows[0]}
        numpy_metrics, _ = summarise(
            [{"segment": 0, "n_users": len(rows), "n_cold_users": 0, **sums},
             {"segment": -1, "item_counts": [item_counts]}],
            n_items,
        )  # fmt: skip
        numpy_s = time.perf_counter() - started
        spark_s, before_s = statistics.median(times_today), statistics.median(times_before)
        # MPR counts scores strictly above each held-out score: a float32 product computed in other blocks
        # (Spark's Arrow batches vs numpy's) can break a near-tie the other way, hence a relative 1e-6.
        tolerance = {"mpr": 1e-6 * abs(numpy_metrics["mpr"])}
        names = ("map", "ndcg_at_k", "ndcg_graded_at_k", "mpr", "coverage_at_k", "mean_rec_popularity")
        differ = {
            m: (spark_metrics[m], numpy_metrics[m])
            for m in names
            if abs(spark_metrics[m] - numpy_metrics[m]) >= tolerance.get(m, 1e-9)
        }
        if differ:
            print("Spark and numpy differ:", differ, flush=True)
        same = not differ
        same_before = all(abs(spark_metrics[m] - before_metrics[m]) < 1e-9 for m in ("map", "ndcg_at_k"))
        price.append(
            f"| {n_users:,} × {n_items:,} | {rank} | {k} | {spark_s:.2f} | {numpy_s:.2f} | "
            f"{spark_s / numpy_s:.2f}x | {'yes' if same else 'NO'} |"
        )
        cost.append(
            f"| {n_users:,} × {n_items:,} | {before_s:.2f} | {spark_s:.2f} | **{spark_s / before_s:.2f}x** | "
            f"{'yes' if same_before else 'NO'} |"
        )
        print(price[-1], cost[-1], sep="\n", flush=True)
    spark.stop()
    table = (
        "| users × items | rank | k | Spark s | numpy s | Spark / numpy | same metrics |\n"
        "|---|---|---|---|---|---|---|\n"
        + "\n".join(price)
        + f"\n\n| users × items | before ({before}) s | today s | today / before | same MAP, NDCG@k |\n"
        "|---|---|---|---|---|\n" + "\n".join(cost)
    )
    print(table)
    if write:
        import pyspark

        append_section(
            "Evaluation: Spark vs numpy, and the cost of the extended metrics",
            f"Machine: {platform.machine()}, Spark {cores}, Python {platform.python_version()}, pyspark "
            f"{pyspark.__version__}, numpy {np.__version__}. One (model, split) scored with played items "
            f"excluded: today every metric (Spark's five, graded NDCG, MPR, coverage, recommended popularity, "
            f"three user segments) vs the evaluation at {before} (the five); median of {repeat} alternate "
            "runs after a warm-up; numpy is one process.\n\n" + table + "\n",
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["5000x20000", "20000x100000"], help="USERSxITEMS")
    p.add_argument("--k", type=int, default=500, help="recommendations per user")
    p.add_argument("--rank", type=int, default=20, help="factor dimension")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic factors")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each side")
    p.add_argument("--before", default=BEFORE, help="git commit of the evaluation to compare with")
    p.add_argument("--no-write", dest="write", action="store_false", help="do not append to bench/RESULTS.md")
    main(**vars(p.parse_args()))
