"""Fold-in: the implicit-ALS user step against fixed item factors reproduces what Spark's ALS gave a
training user; the NNLS solver matches a brute-force search on small problems."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from music_recsys import constants as C
from music_recsys.model.foldin import fold_in, nnls, ratings_from_counts


def test_transforms_match_the_fit_job():
    keep, ratings = ratings_from_counts(np.array([1, 2, 5]), "log1p_drop", drop_threshold=1)
    assert keep.tolist() == [False, True, True]
    assert ratings[1:] == pytest.approx(np.log1p([2, 5]), rel=1e-6)
    keep, ratings = ratings_from_counts(np.array([1, 7]), "none", drop_threshold=1)
    assert keep.all() and ratings.tolist() == [1.0, 7.0]


def test_nnls_matches_brute_force_over_active_sets():
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = rng.normal(size=(6, 4))
        a = m.T @ m + 0.1 * np.eye(4)
        b = rng.normal(size=4)
        best, best_value = None, np.inf
        for support in itertools.product([False, True], repeat=4):  # the optimum solves A_SS x_S = b_S
            idx = np.flatnonzero(support)
            x = np.zeros(4)
            if len(idx):
                x[idx] = np.linalg.solve(a[np.ix_(idx, idx)], b[idx])
            if (x >= -1e-12).all() and (value := 0.5 * x @ a @ x - b @ x) < best_value:
                best, best_value = x, value
        assert nnls(a, b) == pytest.approx(best, abs=1e-9)


@pytest.fixture(scope="module")
def trained(spark):
    """Spark implicit ALS on a small clustered data set: users, their histories, both kinds of solve."""
    from music_recsys.model.als import apply_transform, build_als

    rng = np.random.default_rng(5)
    n_users, n_items = 120, 80
    rows = []
    for user in range(n_users):
        liked = rng.choice(n_items // 2, size=10, replace=False) + (n_items // 2 if user % 2 else 0)
        rows += [(user, int(item), int(rng.integers(1, 20))) for item in liked]
    frame = spark.createDataFrame(rows, [C.USER_IDX, C.ITEM_IDX, C.COUNT])
    models = {}
    for nonnegative in (True, False):
        als = build_als(6, 0.1, 5.0, 10, seed=3, num_blocks=2, nonnegative=nonnegative)
        model = als.fit(apply_transform(frame, "log1p", 1))
        users = {r["id"]: np.array(r["features"]) for r in model.userFactors.collect()}
        items = np.zeros((n_items, 6), dtype=np.float32)
        for r in model.itemFactors.collect():
            items[r["id"]] = r["features"]
        models[nonnegative] = (users, items)
    return rows, models


@pytest.mark.spark
@pytest.mark.parametrize("nonnegative", [True, False])
def test_fold_in_of_a_training_history_reproduces_the_users_factor(trained, nonnegative):
    rows, models = trained
    users, items = models[nonnegative]
    gram = items.astype(np.float64).T @ items.astype(np.float64)
    cosines = []
    for user in range(0, 120, 7):
        history = [(item, count) for u, item, count in rows if u == user]
        vector = fold_in(
            items,
            gram,
            np.array([i for i, _ in history]),
            np.array([c for _, c in history], dtype=np.float64),
            alpha=5.0,
            reg_param=0.1,
            transform="log1p",
            drop_threshold=1,
            nonnegative=nonnegative,
        )
        spark_factor = users[user]
        cosines.append(vector @ spark_factor / (np.linalg.norm(vector) * np.linalg.norm(spark_factor)))
        if nonnegative:
            assert (vector >= 0).all()
    assert min(cosines) >= 0.99, cosines


def test_a_history_the_transform_empties_has_no_factor():
    items = np.eye(3, dtype=np.float32)
    vector = fold_in(
        items, items.T @ items, np.array([0, 1]), np.array([1.0, 1.0]), alpha=1.0, reg_param=0.1,
        transform="drop", drop_threshold=1, nonnegative=True,
    )  # fmt: skip
    assert vector is None
