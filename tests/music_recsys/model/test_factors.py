"""Factors as dense matrices, whether collected from the fit or read from its parquet: rows by index, zero
where the model has no factor."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from music_recsys.model.factors import dense_factors, read_dense_factors


def test_rows_land_at_their_index_and_the_others_stay_zero():
    matrix = dense_factors(np.array([3, 0]), np.array([[1.0, 2.0], [3.0, 4.0]]), n=5, rank=2)
    np.testing.assert_array_equal(matrix, [[3, 4], [0, 0], [0, 0], [1, 2], [0, 0]])
    assert matrix.dtype == np.float32
    assert not dense_factors(np.array([], dtype=np.int64), np.zeros((0, 2)), 3, 2).any()


def test_a_factors_parquet_folder_reads_as_the_same_matrix(tmp_path):
    ids, features = [4, 1, 2], [[1.0, 0.5], [2.0, -1.0], [0.0, 3.0]]  # Spark writes (id, features array)
    pq.write_table(pa.table({"id": ids[:2], "features": features[:2]}), tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"id": ids[2:], "features": features[2:]}), tmp_path / "part-1.parquet")
    np.testing.assert_array_equal(
        read_dense_factors(tmp_path, 5, 2), dense_factors(np.array(ids), np.array(features), 5, 2)
    )
