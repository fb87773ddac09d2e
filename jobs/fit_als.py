"""Fit: one implicit-feedback ALS model for one grid point; save its user and item factors.

Writes ``<out-dir>/user_factors`` and ``<out-dir>/item_factors`` (parquet: id, features) and
``<out-dir>/item_factors.npy`` (a dense float32 matrix, row = item index; items the transform
removed from train have zero rows) for evaluation and the search stage.
"""

from __future__ import annotations

import argparse
import time
import traceback

import numpy as np

from music_recsys import constants as C
from music_recsys.als import apply_transform, build_als
from music_recsys.artifacts import save_npy, write_json
from music_recsys.spark import get_spark


def factors_matrix(rows: list, n: int, rank: int) -> np.ndarray:
    """Dense (n, rank) matrix from (id, features) rows; ids without factors stay zero."""
    matrix = np.zeros((n, rank), dtype=np.float32)
    for row in rows:
        matrix[row["id"]] = row["features"]
    return matrix


def run(
    spark,
    train: str,
    out_dir: str,
    trial_id: str,
    rank: int,
    reg_param: float,
    alpha: float,
    transform: str,
    drop_threshold: int,
    max_iter: int,
    seed: int,
    checkpoint_dir: str,
    result: str,
    num_blocks: int = 0,
) -> dict:
    from pyspark.sql import functions as F

    params = {
        "trial_id": trial_id,
        "rank": rank,
        "reg_param": reg_param,
        "alpha": alpha,
        "transform": transform,
        "drop_threshold": drop_threshold,
        "max_iter": max_iter,
        "seed": seed,
    }
    # Without a checkpoint dir, ALS ignores checkpointInterval and lineage grows unbounded.
    spark.sparkContext.setCheckpointDir(checkpoint_dir)
    ratings = None
    try:
        indexed = spark.read.parquet(train)
        size = indexed.agg(F.max(C.USER_IDX).alias("u"), F.max(C.ITEM_IDX).alias("i")).first()
        n_users, n_items = size["u"] + 1, size["i"] + 1
        ratings = apply_transform(indexed, transform, drop_threshold).cache()
        n_ratings = ratings.count()
        if n_ratings == 0:
            raise ValueError(f"transform {transform!r} with drop_threshold={drop_threshold} leaves no training rows")
        started = time.perf_counter()
        # 0 = one block per core Spark gives us (local: the machine's cores; cluster: executor cores).
        blocks = num_blocks or spark.sparkContext.defaultParallelism
        model = build_als(rank, reg_param, alpha, max_iter, seed, blocks).fit(ratings)
        # Factors are computed lazily; materialise them inside the timed section.
        users_with_factors = model.userFactors.count()
        item_rows = model.itemFactors.collect()
        fit_seconds = time.perf_counter() - started
        model.userFactors.write.mode("overwrite").parquet(f"{out_dir}/user_factors")
        model.itemFactors.write.mode("overwrite").parquet(f"{out_dir}/item_factors")
        save_npy(f"{out_dir}/item_factors.npy", factors_matrix(item_rows, n_items, rank))
        report = {
            **params,
            "status": "success",
            "fit_seconds": fit_seconds,
            "n_ratings": n_ratings,
            "n_users": n_users,
            "n_items": n_items,
            "users_with_factors": users_with_factors,
            "items_with_factors": len(item_rows),
            "num_blocks": blocks,
            "out_dir": out_dir,
        }
    except Exception as exc:
        # Record why this grid point failed so evaluation can label it; then fail the task.
        write_json(
            result,
            {
                **params,
                "status": "failed",
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            },
        )
        raise
    finally:
        if ratings is not None:
            ratings.unpersist()
    write_json(result, report)
    return report


def main(**kwargs) -> dict:
    spark = get_spark(f"music_recsys.fit.{kwargs['trial_id']}")
    try:
        return run(spark, **kwargs)
    finally:
        spark.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True, help="indexed train parquet (user_idx, item_idx, count)")
    p.add_argument("--out-dir", required=True, help="where the factors go")
    p.add_argument("--trial-id", required=True, help="name of this grid point")
    p.add_argument("--rank", type=int, required=True, help="number of latent factors")
    p.add_argument("--reg-param", type=float, required=True, help="ALS regParam (scaled per user/item)")
    p.add_argument("--alpha", type=float, required=True, help="implicit confidence scaling")
    p.add_argument("--transform", choices=C.TRANSFORMS, required=True, help="count transform")
    p.add_argument("--drop-threshold", type=int, required=True, help="drop counts <= this for drop transforms")
    p.add_argument("--max-iter", type=int, required=True, help="ALS iterations")
    p.add_argument("--seed", type=int, required=True, help="ALS seed")
    p.add_argument("--checkpoint-dir", required=True, help="Spark checkpoint directory")
    p.add_argument(
        "--num-blocks",
        type=int,
        default=0,
        help="ALS user and item blocks; 0 = Spark's default parallelism (one per core)",
    )
    p.add_argument("--result", required=True, help="path of the JSON result file")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(**vars(parse_args()))
