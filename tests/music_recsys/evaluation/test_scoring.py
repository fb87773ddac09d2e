"""One-pass scoring (evaluation.scoring): MPR, graded NDCG, coverage counts, popularity, segments, batches."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from music_recsys.evaluation.metrics import METRIC_NAMES
from music_recsys.evaluation.scoring import (
    COVERAGE_SEGMENT,
    USER_SUMS,
    Truth,
    cold_user_row,
    popularity_percentiles,
    score_batches,
    score_block,
    segment_boundaries,
    segment_of,
)
from music_recsys.evaluation.topk import top_k
from tests.music_recsys.evaluation.reference_metrics import ndcg_graded_at_k

# Rank-1 fixture: five items whose factor is their score for a user with factor [1]:
# item 0 scores 5, item 1 scores 4, item 2 scores 3, item 3 scores 2, item 4 scores 1.
ITEMS = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]], dtype=np.float32)
UP = np.array([[1.0]], dtype=np.float32)  # ranks items 0, 1, 2, 3, 4
DOWN = np.array([[-1.0]], dtype=np.float32)  # ranks items 4, 3, 2, 1, 0
FLAT_POP = np.zeros(len(ITEMS))


def _one_user(relevant, counts, seen=(), user=UP, k=2, exclude_seen=False, popularity_pct=FLAT_POP):
    truth = Truth(
        relevant=[np.array(relevant, dtype=np.int64)],
        counts=[np.array(counts, dtype=np.float64)],
        seen=[np.array(seen, dtype=np.int64)],
    )
    rows, item_counts = score_block(user, ITEMS, truth, k, exclude_seen, popularity_pct)
    assert len(rows) == 1
    return rows[0], item_counts


def _mpr(row):
    return row["mpr_num"] / row["mpr_den"]


def test_mpr_is_zero_when_the_held_out_item_is_scored_highest():
    # Held-out item 0 has the top score: no candidate higher -> 0 / 4.
    row, _ = _one_user([0], [3])
    assert row["mpr_num"] == 0.0 and row["mpr_den"] == 3.0
    assert _mpr(row) == 0.0


def test_mpr_of_two_held_out_items_at_the_top_counts_the_other_held_out_item():
    # By definition every candidate counts, other held-out tracks included: item 0 -> 0/4, item 1 has item 0
    # above it -> 1/4; mean (0 + 1/4) / 2 = 1/8. Only a single held-out item can reach exactly 0.
    row, _ = _one_user([0, 1], [1, 1])
    assert _mpr(row) == pytest.approx(0.125)


def test_mpr_is_one_for_the_reversed_ranking():
    # The user ranks items 4..0; held-out item 0 is last: 4 candidates higher -> 4 / (5 - 1) = 1.
    row, _ = _one_user([0], [2], user=DOWN)
    assert row["mpr_num"] == pytest.approx(2.0) and row["mpr_den"] == 2.0
    assert _mpr(row) == pytest.approx(1.0)


def test_mpr_of_a_random_ranking_is_one_half():
    # Random factors, held-out items drawn independently of the scores: each pair's percentile rank is uniform
    # on {0, 1/1999, ..., 1} (mean 0.5, variance ~1/12). 200 independent users x 50 items = 10,000 pairs, so the
    # standard error is at most sqrt(1/12 / 10,000) = 0.0029 (drawing without replacement within a user only
    # lowers it); 0.015 is 5 standard errors.
    rng = np.random.default_rng(11)
    n_users, n_items, per_user = 200, 2000, 50
    users = rng.normal(size=(n_users, 8)).astype(np.float32)
    items = rng.normal(size=(n_items, 8)).astype(np.float32)
    relevant = [rng.choice(n_items, size=per_user, replace=False) for _ in range(n_users)]
    truth = Truth(relevant, [np.ones(per_user)] * n_users, [np.zeros(0, dtype=np.int64)] * n_users)
    rows, _ = score_block(users, items, truth, 10, False, np.zeros(n_items))
    mpr = sum(r["mpr_num"] for r in rows) / sum(r["mpr_den"] for r in rows)
    assert sum(r["mpr_den"] for r in rows) == n_users * per_user
    assert mpr == pytest.approx(0.5, abs=0.015)


def test_mpr_is_weighted_by_held_out_counts():
    # Item 0 (count 1) ranks 0/4 = 0, item 4 (count 3) ranks 4/4 = 1.
    # Weighted: (1 * 0 + 3 * 1) / (1 + 3) = 0.75; the unweighted mean would be 0.5.
    row, _ = _one_user([0, 4], [1, 3])
    assert row["mpr_num"] == pytest.approx(3.0)
    assert row["mpr_den"] == pytest.approx(4.0)
    assert _mpr(row) == pytest.approx(0.75)


def test_exclude_seen_removes_played_items_from_the_candidates():
    # Held-out item 3 (score 2), train-played items 0 and 1 (scores 5, 4), count 2.
    # Keep seen: 5 candidates, items 0, 1, 2 higher -> 3 / (5 - 1) = 0.75, mpr_num = 2 * 0.75 = 1.5.
    kept, _ = _one_user([3], [2], seen=[0, 1], exclude_seen=False)
    assert kept["mpr_num"] == pytest.approx(1.5)
    # Exclude seen: 3 candidates (2, 3, 4), only item 2 higher -> 1 / (3 - 1) = 0.5, mpr_num = 2 * 0.5 = 1.0.
    excluded, _ = _one_user([3], [2], seen=[0, 1], exclude_seen=True)
    assert excluded["mpr_num"] == pytest.approx(1.0)
    assert excluded["mpr_den"] == 2.0


def test_held_out_track_also_played_in_train_keeps_its_raw_score():
    # Train-played items 0 and 2; item 2 is also held out. Only item 0 leaves the candidates: 4 remain
    # (1, 2, 3, 4). Item 2 (raw score 3) has item 1 (4) above it -> 1 / (4 - 1) = 1/3.
    row, _ = _one_user([2], [1], seen=[0, 2], exclude_seen=True)
    assert _mpr(row) == pytest.approx(1 / 3)
    # Two held-out items, one played in train: relevant 2 and 3, seen 0, 1, 2. Candidates 2, 3, 4 (n = 3).
    # Item 2 (3): nothing higher -> 0. Item 3 (2): item 2 is higher at its raw score 3 -> 1 / (3 - 1) = 0.5.
    # Had item 2 stayed at -inf, item 3 would rank 0; had it been dropped from the count, the denominator
    # would be 1. mpr = (0 + 0.5) / 2 = 0.25.
    row, _ = _one_user([2, 3], [1, 1], seen=[0, 1, 2], exclude_seen=True)
    assert row["mpr_num"] == pytest.approx(0.5)
    assert _mpr(row) == pytest.approx(0.25)


def test_exclude_seen_masks_played_items_out_of_the_list():
    # seen 0, 1 masked: the top-2 list is [2, 3]; held-out 3 is the second hit -> precision 1/2, recall 1.
    row, item_counts = _one_user([3], [1], seen=[0, 1], exclude_seen=True)
    np.testing.assert_array_equal(item_counts, [0, 0, 1, 1, 0])
    assert row["precision_at_k"] == pytest.approx(0.5)
    assert row["recall_at_k"] == pytest.approx(1.0)
    assert row["n_recs"] == 2.0


def test_graded_ndcg_matches_ndcg_graded_at_k_on_the_produced_list():
    # Hand case: list [0, 1, 2] (k = 3), held-out 1 (count 3, gain ln 4) and 3 (count 1, gain ln 2).
    # DCG = ln4 / log2(3); IDCG = ln4 / log2(2) + ln2 / log2(3);
    # NDCG = (2 / log2 3) / (2 + 1 / log2 3) = 1.26186 / 2.63093 = 0.47962.
    row, _ = _one_user([1, 3], [3, 1], k=3)
    expected = (2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert expected == pytest.approx(0.47962, abs=1e-5)
    assert row["ndcg_graded_at_k"] == pytest.approx(expected)
    assert row["ndcg_graded_at_k"] == pytest.approx(ndcg_graded_at_k([0, 1, 2], np.array([1, 3]), np.array([3, 1]), 3))

    # Random users: the same figure as the function applied to the same engine's list.
    rng = np.random.default_rng(3)
    users = rng.normal(size=(30, 4)).astype(np.float32)
    items = rng.normal(size=(60, 4)).astype(np.float32)
    relevant = [rng.choice(60, size=6, replace=False) for _ in range(30)]
    counts = [rng.integers(1, 20, size=6).astype(np.float64) for _ in range(30)]
    seen = [rng.choice(60, size=5, replace=False) for _ in range(30)]
    rows, _ = score_block(users, items, Truth(relevant, counts, seen), 10, True, np.zeros(60))
    lists = top_k(users, items, 10, exclude=seen)
    for row, pred, rel, cnt in zip(rows, lists, relevant, counts, strict=True):
        assert row["ndcg_graded_at_k"] == pytest.approx(ndcg_graded_at_k(pred, rel, cnt, 10))


def test_item_counts_and_recommended_popularity():
    # Users UP, DOWN, UP with k = 2: lists [0, 1], [4, 3], [0, 1] -> item 0: 2, item 1: 2, item 2: 0,
    # item 3: 1, item 4: 1; coverage = 4 of 5 items.
    # Popularity [40, 30, 20, 10, 0] -> percentiles [1, 0.75, 0.5, 0.25, 0]:
    # rec_pop_sum UP = 1 + 0.75 = 1.75, DOWN = 0 + 0.25 = 0.25.
    pct = popularity_percentiles(np.array([40.0, 30.0, 20.0, 10.0, 0.0]))
    np.testing.assert_allclose(pct, [1.0, 0.75, 0.5, 0.25, 0.0])
    users = np.array([[1.0], [-1.0], [1.0]], dtype=np.float32)
    truth = Truth([np.array([2])] * 3, [np.array([1.0])] * 3, [np.zeros(0, dtype=np.int64)] * 3)
    rows, item_counts = score_block(users, ITEMS, truth, 2, False, pct)
    np.testing.assert_array_equal(item_counts, [2, 2, 0, 1, 1])
    assert np.count_nonzero(item_counts) / len(ITEMS) == pytest.approx(0.8)
    assert [r["rec_pop_sum"] for r in rows] == pytest.approx([1.75, 0.25, 1.75])
    assert [r["n_recs"] for r in rows] == [2.0, 2.0, 2.0]


def test_cold_user_row_is_a_random_order():
    # Counts 1 and 3: mpr_den = 4, mpr_num = 0.5 * 4 = 2; every other figure 0.
    row = cold_user_row(np.array([1.0, 3.0]))
    assert set(row) == set(USER_SUMS)
    assert row["mpr_num"] == 2.0 and row["mpr_den"] == 4.0
    assert all(row[name] == 0.0 for name in USER_SUMS if name not in ("mpr_num", "mpr_den"))


def test_popularity_percentiles_known_answers():
    # [5, 1, 5, 3]: sorted ranks 1 -> 0, 3 -> 1, the two 5s -> 2 and 3, mean 2.5; over n - 1 = 3.
    np.testing.assert_allclose(popularity_percentiles(np.array([5.0, 1.0, 5.0, 3.0])), [2.5 / 3, 0.0, 2.5 / 3, 1 / 3])
    # All tied: every rank is the mean of 0, 1, 2 = 1 -> 1/2.
    np.testing.assert_allclose(popularity_percentiles(np.array([2.0, 2.0, 2.0])), [0.5, 0.5, 0.5])
    # One item: the most played track -> 1.
    np.testing.assert_array_equal(popularity_percentiles(np.array([7.0])), [1.0])
    assert len(popularity_percentiles(np.array([]))) == 0


def test_segment_boundaries_are_tertile_cut_points():
    # Lengths 1..9, method "lower": q = 1/3 at position 8/3 -> index 2 -> 3; q = 2/3 at 16/3 -> index 5 -> 6.
    lengths = np.arange(1, 10)
    assert segment_boundaries(lengths) == [3, 6]
    np.testing.assert_array_equal(segment_of(lengths, [3, 6]), [0, 0, 0, 1, 1, 1, 2, 2, 2])


def test_repeated_lengths_collapse_segments():
    # Six 1s of nine: both cut points are 1 -> one boundary, two segments.
    assert segment_boundaries(np.array([1, 1, 1, 1, 1, 1, 2, 3, 4])) == [1]
    # All equal: a cut at the maximum would leave an empty top segment -> no boundary, one segment.
    assert segment_boundaries(np.array([5, 5, 5])) == []
    np.testing.assert_array_equal(segment_of(np.array([5, 5, 5]), []), [0, 0, 0])
    assert segment_boundaries(np.array([], dtype=np.int64)) == []


def test_length_on_a_boundary_goes_to_the_lower_segment():
    np.testing.assert_array_equal(segment_of(np.array([0, 3, 4, 6, 7]), [3, 6]), [0, 0, 1, 1, 2])


def test_score_batches_rows_segments_and_coverage_row(tmp_path):
    items_path = tmp_path / "item_factors.npy"
    popularity_path = tmp_path / "popularity_percentiles.npy"
    np.save(items_path, ITEMS)
    np.save(popularity_path, np.array([1.0, 0.75, 0.5, 0.25, 0.0]))
    batch = pd.DataFrame(
        {
            "user_idx": [10, 11, 12],
            "relevant": [[3], [0, 2], [0]],
            "counts": [[2], [1, 3], [1]],
            "seen": [[0, 1], None, [4]],
            "n_train": [2, 5, 9],
            "features": [[1.0], None, [-1.0]],
        }
    )
    out = list(
        score_batches(iter([batch]), str(items_path), str(popularity_path), k=2, exclude_seen=True, boundaries=(2, 6))
    )
    assert len(out) == 1
    frame = out[0]
    assert list(frame.columns) == ["segment", "cold", *USER_SUMS, "item_counts"]
    assert len(frame) == 4
    warm_up, cold, warm_down, coverage = (frame.iloc[i] for i in range(4))

    # Segments by n_train with boundaries (2, 6): 2 -> 0 (on the boundary), 5 -> 1, 9 -> 2.
    assert [int(frame["segment"][i]) for i in range(3)] == [0, 1, 2]
    assert [int(frame["cold"][i]) for i in range(4)] == [0, 1, 0, 0]

    # User 10 (UP, seen 0 and 1 masked): list [2, 3]; held-out 3 (count 2) is the hit at position 2.
    # map = map_at_k = (1/2) / 1; precision 1/2; recall 1; ndcg = (1/ln 3) / (1/ln 2) = ln2 / ln3.
    # graded: gain ln 3 at position 2 over ln 3 at position 1 = 1 / log2(3) (the same number).
    # MPR: candidates 2, 3, 4; item 2 higher -> 1 / 2; mpr_num = 2 * 0.5 = 1, mpr_den 2.
    # rec_pop_sum = pct[2] + pct[3] = 0.5 + 0.25.
    assert warm_up["map"] == pytest.approx(0.5)
    assert warm_up["map_at_k"] == pytest.approx(0.5)
    assert warm_up["precision_at_k"] == pytest.approx(0.5)
    assert warm_up["recall_at_k"] == pytest.approx(1.0)
    assert warm_up["ndcg_at_k"] == pytest.approx(math.log(2) / math.log(3))
    assert warm_up["ndcg_graded_at_k"] == pytest.approx(1 / math.log2(3))
    assert (warm_up["mpr_num"], warm_up["mpr_den"]) == pytest.approx((1.0, 2.0))
    assert warm_up["rec_pop_sum"] == pytest.approx(0.75)
    assert warm_up["n_recs"] == 2.0

    # User 11 has no factors: every ranking metric 0, mpr_num = 0.5 * (1 + 3) = 2, mpr_den 4.
    assert all(cold[name] == 0.0 for name in (*METRIC_NAMES, "ndcg_graded_at_k", "rec_pop_sum", "n_recs"))
    assert (cold["mpr_num"], cold["mpr_den"]) == (2.0, 4.0)

    # User 12 (DOWN, seen 4 masked): list [3, 2]; held-out 0 missed -> ranking metrics 0.
    # MPR: candidates 0..3, items 1, 2, 3 higher than item 0 -> 3 / 3 = 1. rec_pop_sum = 0.25 + 0.5.
    assert all(warm_down[name] == 0.0 for name in (*METRIC_NAMES, "ndcg_graded_at_k"))
    assert (warm_down["mpr_num"], warm_down["mpr_den"]) == pytest.approx((1.0, 1.0))
    assert warm_down["rec_pop_sum"] == pytest.approx(0.75)

    # The extra row: coverage segment, no user sums, item counts = bincount([2, 3] + [3, 2]).
    assert coverage["segment"] == COVERAGE_SEGMENT
    assert all(coverage[name] == 0.0 for name in USER_SUMS)
    np.testing.assert_array_equal(coverage["item_counts"], np.bincount([2, 3, 3, 2], minlength=5))
    assert all(frame["item_counts"][i] is None for i in range(3))


def test_score_batches_all_cold_batch_has_an_empty_coverage_row(tmp_path):
    items_path, popularity_path = tmp_path / "items.npy", tmp_path / "pct.npy"
    np.save(items_path, ITEMS)
    np.save(popularity_path, np.zeros(5))
    batch = pd.DataFrame(
        {"user_idx": [1], "relevant": [[4]], "counts": [[6]], "seen": [None], "n_train": [0], "features": [None]}
    )
    (frame,) = score_batches(iter([batch]), str(items_path), str(popularity_path), 2, True, (3, 6))
    assert (frame["mpr_num"][0], frame["mpr_den"][0]) == (3.0, 6.0)
    assert int(frame["segment"][0]) == 0 and int(frame["cold"][0]) == 1
    assert frame["segment"][1] == COVERAGE_SEGMENT
    np.testing.assert_array_equal(frame["item_counts"][1], np.zeros(5))
