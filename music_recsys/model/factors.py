"""ALS factors as dense matrices: row i is the factor of index i, zero where the model has none (a user or
track the transform left without training rows). The fit job writes the item matrix from the factors it
collects; publishing and the search read a factors parquet folder the fit wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def dense_factors(ids: np.ndarray, features: np.ndarray, n: int, rank: int) -> np.ndarray:
    """A float32 (n, rank) matrix with ``features[j]`` at row ``ids[j]`` (features flat or (m, rank))."""
    matrix = np.zeros((n, rank), dtype=np.float32)
    if len(ids):
        matrix[np.asarray(ids, dtype=np.int64)] = np.asarray(features, dtype=np.float32).reshape(-1, rank)
    return matrix


def read_dense_factors(parquet_dir: Path, n: int, rank: int) -> np.ndarray:
    """A Spark factors parquet folder (id, features) as ``dense_factors``."""
    import pyarrow.dataset as ds

    table = ds.dataset(str(parquet_dir), format="parquet").to_table(columns=["id", "features"])
    if not table.num_rows:
        return np.zeros((n, rank), dtype=np.float32)
    features = table["features"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return dense_factors(table["id"].to_numpy(), features, n, rank)
