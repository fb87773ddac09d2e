"""Exact top-k: known answers, seen-item exclusion, short catalogues."""

from __future__ import annotations

import numpy as np
import pytest

from music_recsys.evaluation.topk import top_k


def test_known_answer_orders_by_score():
    items = np.array([[1.0], [3.0], [2.0], [0.5]])
    users = np.array([[1.0], [-1.0]])
    result = top_k(users, items, 2)
    assert result[0].tolist() == [1, 2]
    assert result[1].tolist() == [3, 0]


def test_excluded_items_never_returned_and_lists_shrink():
    items = np.array([[1.0], [3.0], [2.0]])
    result = top_k(np.array([[1.0]]), items, 5, exclude=[[1]])
    assert result[0].tolist() == [2, 0]


def test_ties_ordered_by_item_index():
    items = np.ones((4, 1))
    assert top_k(np.array([[1.0]]), items, 4)[0].tolist() == [0, 1, 2, 3]


def test_matches_full_sort_on_random_data():
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(37, 8)), rng.normal(size=(500, 8))
    result = top_k(users, items, 25, block_size=10)
    expected = np.argsort(-(users @ items.T), axis=1)[:, :25]
    assert np.array_equal(np.stack(result), expected)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k=0"):
        top_k(np.ones((1, 1)), np.ones((1, 1)), 0)
    with pytest.raises(ValueError, match="exclude has 2 rows"):
        top_k(np.ones((1, 1)), np.ones((3, 1)), 1, exclude=[[0], [1]])
