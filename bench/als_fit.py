"""Benchmark: our Spark ALS fit vs the ``implicit`` library's CPU ALS on the same data and settings.

Same ratings (play counts), rank, iterations, alpha, thread count (Spark local[N] vs implicit
num_threads=N); quality compared by validation MAP with the same evaluation code. Note that Spark
scales regParam by each user's/item's rating count (ALS-WR) and implicit does not, so the same number
is not the same model; both use the value given.

    .venv/bin/pip install -r requirements-bench.txt
    .venv/bin/python bench/als_fit.py --users 25000 --items 20000 --mean-tracks 38
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results import append_section  # noqa: E402
from music_recsys import constants as C  # noqa: E402
from music_recsys.data.generate import GeneratorConfig, generate  # noqa: E402
from music_recsys.evaluation.metrics import ranking_metrics  # noqa: E402
from music_recsys.evaluation.topk import top_k  # noqa: E402
from music_recsys.model.als import build_als  # noqa: E402


def indexed(splits):
    train, val = splits["train"], splits["validation"]
    users, u_inv = np.unique(train[C.USER_ID], return_inverse=True)
    items, i_inv = np.unique(train[C.TRACK_ID], return_inverse=True)
    u_of = {u: i for i, u in enumerate(users)}
    i_of = {t: i for i, t in enumerate(items)}
    keep = [j for j in range(len(val[C.USER_ID])) if val[C.TRACK_ID][j] in i_of]
    vu = np.array([u_of[val[C.USER_ID][j]] for j in keep])
    vi = np.array([i_of[val[C.TRACK_ID][j]] for j in keep])
    return u_inv, i_inv, train[C.COUNT].astype(np.float32), len(users), len(items), vu, vi


def validation_map(user_factors, item_factors, tu, ti, vu, vi, k):
    users = np.unique(vu)
    order = np.argsort(tu, kind="stable")
    bounds = np.searchsorted(tu[order], np.arange(user_factors.shape[0] + 1))
    seen = [ti[order[bounds[u] : bounds[u + 1]]] for u in users]
    relevant = [np.unique(vi[vu == u]) for u in users]
    tops = top_k(user_factors[users], item_factors, k, exclude=seen)
    return float(
        np.mean([ranking_metrics(p, r, np.ones(len(r)), k)["map"] for p, r in zip(tops, relevant, strict=True)])
    )


def spark_fit(tu, ti, counts, n_users, n_items, rank, reg, alpha, iters, threads, seed, blocks):
    from music_recsys.pipeline.spark import get_spark, set_checkpoint_dir

    os.environ["RECSYS_SPARK_MASTER"] = f"local[{threads}]"
    spark = get_spark("bench.als_fit")
    set_checkpoint_dir(spark, str(REPO / "data" / "bench-checkpoints"))  # as the fit job does
    import pandas as pd

    frame = pd.DataFrame({C.USER_IDX: tu.astype("int32"), C.ITEM_IDX: ti.astype("int32"), C.RATING: counts})
    ratings = spark.createDataFrame(frame).repartition(threads).cache()
    ratings.count()
    build_als(rank, reg, alpha, 2, seed, blocks, nonnegative=True).fit(ratings).itemFactors.count()  # warm-up
    started = time.perf_counter()
    model = build_als(rank, reg, alpha, iters, seed, blocks, nonnegative=True).fit(ratings)
    users, items = np.zeros((n_users, rank), np.float32), np.zeros((n_items, rank), np.float32)
    for row in model.userFactors.collect():
        users[row["id"]] = row["features"]
    for row in model.itemFactors.collect():
        items[row["id"]] = row["features"]
    seconds = time.perf_counter() - started
    spark.stop()
    return users, items, seconds


def implicit_fit(tu, ti, counts, n_users, n_items, rank, reg, alpha, iters, threads, seed, use_cg=True):
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares

    user_items = sp.csr_matrix((counts, (tu, ti)), shape=(n_users, n_items))
    model = AlternatingLeastSquares(
        factors=rank,
        regularization=reg,
        alpha=alpha,
        iterations=iters,
        num_threads=threads,
        random_state=seed,
        calculate_training_loss=False,
        use_cg=use_cg,
    )
    started = time.perf_counter()
    model.fit(user_items, show_progress=False)
    return np.asarray(model.user_factors), np.asarray(model.item_factors), time.perf_counter() - started


def main(
    users: int,
    items: int,
    mean_tracks: float,
    rank: int,
    reg: float,
    alpha: float,
    iters: int,
    threads: int,
    blocks: int,
    k: int,
    seed: int,
    write: bool,
) -> None:
    cfg = GeneratorConfig(
        users=users, items=items, holdout_users=max(2, users // 20), mean_tracks=mean_tracks, seed=seed
    )
    splits, _ = generate(cfg)
    tu, ti, counts, n_users, n_items, vu, vi = indexed(splits)
    su, si, spark_s = spark_fit(tu, ti, counts, n_users, n_items, rank, reg, alpha, iters, threads, seed, blocks)
    iu, ii, implicit_s = implicit_fit(tu, ti, counts, n_users, n_items, rank, reg, alpha, iters, threads, seed)
    spark_map = validation_map(su, si, tu, ti, vu, vi, k)
    implicit_map = validation_map(iu, ii, tu, ti, vu, vi, k)
    line = (
        f"| {len(tu):,} | {n_users:,} × {n_items:,} | {rank} / {reg:g} / {alpha:g} / {iters} | {threads} | "
        f"{blocks} | {spark_s:.2f} | {implicit_s:.2f} | **{spark_s / implicit_s:.1f}x** | {spark_map:.4f} | "
        f"{implicit_map:.4f} |"
    )
    print(line)
    if write:
        import implicit
        import pyspark

        append_section(
            "ALS fit: Spark vs implicit",
            f"{platform.machine()}, {os.cpu_count()} cpus, pyspark {pyspark.__version__}, implicit "
            f"{implicit.__version__}; fit time excludes JVM start (warm-up fit first), includes "
            f"collecting factors; MAP on validation, k={k}, played items excluded.\n\n"
            "| train rows | users × items | rank / reg / alpha / iters | threads | Spark blocks | "
            "Spark s | implicit s | Spark / implicit | Spark MAP | implicit MAP |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n" + line + "\n",
        )


def add_fit_arguments(p: argparse.ArgumentParser) -> None:
    """Data set and ALS settings shared by the ALS benchmarks (defaults: the 1M-row comparison set)."""
    p.add_argument("--users", type=int, default=25_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--mean-tracks", type=float, default=38.0)
    p.add_argument("--rank", type=int, default=20)
    p.add_argument("--reg", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=10.0)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--k", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", dest="write", action="store_false")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_fit_arguments(p)
    p.add_argument("--blocks", type=int, default=os.cpu_count() or 2, help="Spark ALS user/item blocks")
    main(**vars(p.parse_args()))
