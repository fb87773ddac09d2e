"""The grid's count transforms and the ALS settings shared by the fit job and benchmarks."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from music_recsys import constants as C

if TYPE_CHECKING:
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import DataFrame

TRANSFORM_DESCRIPTIONS = {
    "none": "rating = play count",
    "log1p": "rating = log(1 + play count) (the seed's log compression)",
    "drop": "rows with play count <= drop_threshold removed, rating = play count",
    "log1p_drop": "rows with play count <= drop_threshold removed, rating = log(1 + play count)",
}


def apply_transform(df: DataFrame, transform: str, drop_threshold: int) -> DataFrame:
    """Turn indexed counts into the ALS ``rating`` column according to one grid transform."""
    from pyspark.sql import functions as F

    if transform not in C.TRANSFORMS:
        raise ValueError(f"transform {transform!r}: choose from {list(C.TRANSFORMS)}")
    if transform in ("drop", "log1p_drop"):
        df = df.filter(F.col(C.COUNT) > drop_threshold)
    rating = F.log1p(F.col(C.COUNT)) if transform.startswith("log1p") else F.col(C.COUNT).cast("double")
    return df.select(C.USER_IDX, C.ITEM_IDX, rating.cast("float").alias(C.RATING))


# ALS's in/out blocks and per-iteration factors. MEMORY_ONLY measured 20 % faster than Spark's default
# MEMORY_AND_DISK (bench/als_tuning.py, 894K ratings); set MEMORY_AND_DISK when the ratings do not fit
# in executor memory (evicted blocks are then recomputed from the last checkpoint).
STORAGE_LEVEL = os.environ.get("RECSYS_ALS_STORAGE_LEVEL", "MEMORY_ONLY")


def build_als(
    rank: int,
    reg_param: float,
    alpha: float,
    max_iter: int,
    seed: int,
    num_blocks: int = 10,
    *,
    nonnegative: bool = True,
    storage_level: str = STORAGE_LEVEL,
) -> ALS:
    """Implicit ALS as in the seed (``nonnegative=True``: NNLS solves). ``num_blocks`` partitions users
    and items; Spark's default of 10 costs more in scheduling than it gains on few cores (measured on
    894K ratings, 2 cores, one run: 26.7 s with 10 blocks, 26.5 s with 1, 18.4 s with 2 = one per core)."""
    from pyspark.ml.recommendation import ALS

    return ALS(
        numUserBlocks=num_blocks,
        numItemBlocks=num_blocks,
        rank=rank,
        regParam=reg_param,
        alpha=alpha,
        maxIter=max_iter,
        seed=seed,
        implicitPrefs=True,
        nonnegative=nonnegative,
        coldStartStrategy="drop",
        intermediateStorageLevel=storage_level,
        finalStorageLevel=storage_level,
        checkpointInterval=5,
        userCol=C.USER_IDX,
        itemCol=C.ITEM_IDX,
        ratingCol=C.RATING,
    )
