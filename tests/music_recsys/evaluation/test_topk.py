"""Exact top-k kernel: known answers, seen-item exclusion, short catalogues, one query, re-ranking."""

from __future__ import annotations

import numpy as np
import pytest

from music_recsys.evaluation.topk import rerank, top_k, top_k_blocks, top_k_of_row, top_k_of_scores, top_k_one


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


def test_one_query_matches_the_batch_kernel_and_excludes():
    rng = np.random.default_rng(3)
    items = rng.normal(size=(400, 6)).astype(np.float32)
    queries = rng.normal(size=(9, 6)).astype(np.float32)
    exclude = [rng.choice(400, size=30, replace=False) for _ in queries]
    batched = top_k(queries, items, 40, exclude=exclude)
    for q, excluded, expected in zip(queries, exclude, batched, strict=True):
        top, scores = top_k_one(items, q, 40, excluded)
        assert top.tolist() == expected.tolist()
        assert not np.isin(top, excluded).any()
        np.testing.assert_allclose(scores, items[top] @ q, rtol=1e-6)
        assert np.all(np.diff(scores) <= 0)


def test_one_query_list_shrinks_to_the_items_left_and_ties_go_by_index():
    items = np.array([[1.0], [2.0], [2.0], [0.0]], dtype=np.float32)
    top, scores = top_k_one(items, np.array([1.0], dtype=np.float32), 10, exclude=[3])
    assert top.tolist() == [1, 2, 0] and scores.tolist() == [2.0, 2.0, 1.0]
    top, _ = top_k_one(items, np.array([1.0], dtype=np.float32), 2, exclude=[0, 1, 2, 3])
    assert top.tolist() == []


def test_rerank_orders_candidates_exactly_ties_by_item_index():
    items = np.array([[0.5], [3.0], [1.0], [3.0], [2.0]], dtype=np.float32)
    # Candidates in an approximate index's order; 1 and 3 tie at 3.0.
    ids, scores = rerank(items, np.array([1.0], dtype=np.float32), [3, 4, 1, 0], 3)
    assert ids.tolist() == [1, 3, 4] and scores.tolist() == [3.0, 3.0, 2.0]
    ids, scores = rerank(items, np.array([1.0], dtype=np.float32), [], 3)
    assert ids.tolist() == [] and scores.tolist() == []


def test_blocks_keep_raw_scores_of_excluded_items():
    items = np.array([[1.0], [3.0], [2.0]])
    users = np.array([[1.0], [2.0], [-1.0]])
    blocks = list(top_k_blocks(users, items, 2, exclude=[[1], [], [0, 2]], keep=[[1, 2], [0], [2]], block_size=2))
    assert [b.start for b in blocks] == [0, 2]
    first, second = blocks
    # User 0: item 1 is excluded (-inf in the block) but its raw score 3.0 is kept.
    assert first.top[0].tolist() == [2, 0] and first.kept[0].tolist() == [3.0, 2.0]
    assert first.scores[0, 1] == -np.inf
    assert first.top[1].tolist() == [1, 2] and first.kept[1].tolist() == [2.0]
    assert second.top[0].tolist() == [1] and second.kept[0].tolist() == [-2.0]
    with pytest.raises(ValueError, match="keep has 1 rows for 3 users"):
        next(top_k_blocks(users, items, 2, keep=[[0]]))


@pytest.mark.parametrize("k", [1, 7, 60, 200])
def test_one_row_and_block_forms_give_the_same_lists(k):
    rng = np.random.default_rng(k)
    # Rounded scores: many ties, which both forms must order by item index.
    scores = np.round(rng.normal(size=(20, 60)), 1).astype(np.float32)
    for row, expected in zip(scores, top_k_of_scores(scores.copy(), k), strict=True):
        assert top_k_of_row(row, k).tolist() == expected.tolist()


@pytest.mark.parametrize("k", [1, 10, 50])
def test_the_sampled_cut_equals_a_full_sort_ties_by_index(k):
    # 6,000 items: the floor comes from a strided sample (stride 6,000 // (32 k) > 1). Scores rounded to
    # one decimal: hundreds of ties at the k-th score, of which the lowest indices must make the cut;
    # excluded items (-inf) and a row with fewer than k items left never return an excluded item.
    rng = np.random.default_rng(k)
    scores = np.round(rng.normal(size=(12, 6000)), 1).astype(np.float32)
    scores[3, :] = -np.inf
    scores[3, [7, 4001, 9]] = [0.5, 0.5, 2.0]
    scores[5, rng.choice(6000, size=3000, replace=False)] = -np.inf
    for row, got in zip(scores, top_k_of_scores(scores.copy(), k), strict=True):
        expected = np.lexsort((np.arange(len(row)), -row))[:k]
        expected = expected[np.isfinite(row[expected])]
        assert got.tolist() == expected.tolist()
        assert top_k_of_row(row.copy(), k).tolist() == expected.tolist()
    assert top_k_of_scores(scores[3:4].copy(), k)[0].tolist() == [9, 7, 4001][:k]
