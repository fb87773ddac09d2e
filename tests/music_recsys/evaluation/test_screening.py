"""A screening fit's own score: known answers by hand, cold users counted as zero, seen items excluded."""

from __future__ import annotations

import numpy as np
import pytest

from music_recsys.evaluation.screening import group_items, screen_metrics


def test_group_items_sorts_and_sums_per_user():
    got = group_items(np.array([2, 1, 2, 2]), np.array([5, 3, 1, 5]), np.array([1, 4, 2, 3]))
    assert {u: (list(i), list(c)) for u, (i, c) in got.items()} == {1: ([3], [4]), 2: ([1, 5], [2, 4])}


def test_screen_metrics_known_answer():
    # Items 0..3 on one axis; user 0 scores item 3 > 2 > 1 > 0 and played item 3, so its top-2 is [2, 1].
    items = np.array([[0.0], [1.0], [2.0], [3.0]])
    users = np.array([[1.0]])
    truth = {0: (np.array([1]), np.array([1])), 7: (np.array([2]), np.array([1]))}  # user 7 has no factor
    seen = {0: (np.array([3]), np.array([1]))}
    got = screen_metrics(truth, seen, np.array([0]), users, items, k=2)
    # User 0: its one relevant item at position 2 -> AP = 1/2, precision@2 = 1/2, NDCG = (1/ln 3)/(1/ln 2).
    assert got["map"] == pytest.approx(0.5 / 2) and got["precision_at_k"] == pytest.approx(0.5 / 2)
    assert got["ndcg_at_k"] == pytest.approx((np.log(2) / np.log(3)) / 2)
    assert (got["n_users"], got["n_cold_users"]) == (2, 1)
    kept = screen_metrics(truth, seen, np.array([0]), users, items, k=2, exclude_seen=False)
    assert kept["map"] == pytest.approx(0.0)  # the top-2 is then [3, 2]: no hit


def test_screen_metrics_without_validation_users_says_so():
    with pytest.raises(ValueError, match="no validation users"):
        screen_metrics({}, {}, np.array([0]), np.ones((1, 1)), np.ones((2, 1)), k=1)
