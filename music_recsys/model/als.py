"""The count transforms in Spark and the ALS settings shared by the fit job and benchmarks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from music_recsys import constants as C
from music_recsys import settings
from music_recsys.model.transforms import count_transform

if TYPE_CHECKING:
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import DataFrame


def apply_transform(df: DataFrame, transform: str, drop_threshold: int) -> DataFrame:
    """Turn indexed counts into the ALS ``rating`` column according to one grid transform
    (``music_recsys.model.transforms``)."""
    from pyspark.sql import functions as F

    spec = count_transform(transform)
    if spec.drop:
        df = df.filter(F.col(C.COUNT) > drop_threshold)
    rating = F.log1p(F.col(C.COUNT)) if spec.log1p else F.col(C.COUNT).cast("double")
    return df.select(C.USER_IDX, C.ITEM_IDX, rating.cast("float").alias(C.RATING))


# ALS's in/out blocks and per-iteration factors. MEMORY_ONLY measured faster than Spark's default
# MEMORY_AND_DISK (bench/RESULTS.md, "ALS tuning"); set MEMORY_AND_DISK when the ratings do not fit in
# executor memory (evicted blocks are then recomputed from the last checkpoint): RECSYS_ALS_STORAGE_LEVEL.


def build_als(
    rank: int,
    reg_param: float,
    alpha: float,
    max_iter: int,
    seed: int,
    num_blocks: int,
    *,
    nonnegative: bool,
    storage_level: str | None = None,
) -> ALS:
    """Implicit ALS (``nonnegative=True``: NNLS solves, as in the study). ``num_blocks`` partitions users
    and items: the fit job passes one block per core Spark gives it, which measured faster than Spark's
    default of 10 on few cores (bench/RESULTS.md, "ALS tuning")."""
    from pyspark.ml.recommendation import ALS

    storage_level = storage_level or settings.text("RECSYS_ALS_STORAGE_LEVEL")
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
