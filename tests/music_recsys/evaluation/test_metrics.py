"""Ranking metrics: hand-computed cases, graded NDCG, percentile ranks (MPR), parity with Spark RankingMetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from music_recsys.evaluation.metrics import METRIC_NAMES, percentile_ranks
from tests.music_recsys.evaluation.reference_metrics import mean_metrics, ndcg_graded_at_k, user_metrics


def test_hand_computed_single_user():
    # pred hits at positions 1 and 3; 3 relevant items, one never recommended.
    m = user_metrics([7, 1, 9, 4], {7, 9, 5}, k=2)
    assert m["map"] == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert m["map_at_k"] == pytest.approx((1 / 1) / 2)
    assert m["precision_at_k"] == pytest.approx(1 / 2)
    assert m["recall_at_k"] == pytest.approx(1 / 3)
    dcg = 1 / math.log(2)
    idcg = 1 / math.log(2) + 1 / math.log(3)
    assert m["ndcg_at_k"] == pytest.approx(dcg / idcg)


def test_perfect_and_empty_lists():
    perfect = user_metrics([3, 2, 1], [1, 2, 3], k=3)
    assert all(perfect[name] == pytest.approx(1.0) for name in METRIC_NAMES)
    empty = user_metrics([], [1, 2], k=5)
    assert all(empty[name] == 0.0 for name in METRIC_NAMES)
    no_truth = user_metrics([1, 2], [], k=5)
    assert all(no_truth[name] == 0.0 for name in METRIC_NAMES)


def test_precision_divides_by_k_even_when_list_is_shorter():
    assert user_metrics([1], [1], k=10)["precision_at_k"] == pytest.approx(0.1)


def test_mean_metrics_averages_users():
    m = mean_metrics([[1, 2], [3, 4]], [[1], [9]], k=2)
    assert m["map"] == pytest.approx(0.5)
    assert m["precision_at_k"] == pytest.approx(0.25)


def test_invalid_k_and_empty_split():
    with pytest.raises(ValueError, match="k=0"):
        user_metrics([1], [1], k=0)
    with pytest.raises(ValueError, match="empty"):
        mean_metrics([], [], k=3)


def test_graded_ndcg_of_a_perfect_ranking_is_one():
    # Held-out counts 2, 5, 1: the ideal order is by count, 20 (5) then 10 (2) then 30 (1).
    relevant, counts = np.array([10, 20, 30]), np.array([2, 5, 1])
    assert ndcg_graded_at_k([20, 10, 30], relevant, counts, k=3) == pytest.approx(1.0)
    # Cut at k=2 the list only has to hold the two largest gains in order; item 7 after the cut is free.
    assert ndcg_graded_at_k([20, 10, 7], relevant, counts, k=2) == pytest.approx(1.0)


def test_graded_ndcg_hand_computed():
    # Gains: item 10 -> ln(1 + 1) = ln 2, item 20 -> ln(1 + 3) = 2 ln 2.
    relevant, counts = np.array([10, 20]), np.array([1, 3])
    # pred [5, 10, 20]: DCG = 0/log2(2) + ln2/log2(3) + 2ln2/log2(4) = ln2 (1/log2 3 + 1)
    # ideal [20, 10]:   IDCG = 2ln2/log2(2) + ln2/log2(3)          = ln2 (2 + 1/log2 3)
    # NDCG = (1 + 0.63093) / (2 + 0.63093) = 0.61991
    inv_log2_3 = 1 / math.log2(3)
    expected = (1 + inv_log2_3) / (2 + inv_log2_3)
    assert expected == pytest.approx(0.61991, abs=1e-5)
    assert ndcg_graded_at_k([5, 10, 20], relevant, counts, k=3) == pytest.approx(expected)
    # k=1, pred [10, 20]: DCG = ln 2, IDCG cut at one = 2 ln 2 -> exactly 1/2.
    assert ndcg_graded_at_k([10, 20], relevant, counts, k=1) == pytest.approx(0.5)
    # No held-out item in the list -> 0; no held-out items at all -> 0.
    assert ndcg_graded_at_k([1, 2, 3], relevant, counts, k=3) == 0.0
    assert ndcg_graded_at_k([1, 2, 3], np.array([]), np.array([]), k=3) == 0.0


def test_percentile_rank_top_item_is_zero_and_bottom_item_is_one():
    scores = np.array([0.9, 0.5, 0.1, 0.3])
    # Top item 0.9: nothing is higher -> 0 / 3 = 0. Bottom item 0.1: 3 higher -> 3 / 3 = 1.
    np.testing.assert_array_equal(percentile_ranks(scores, np.array([0.9, 0.1]), n_candidates=4), [0.0, 1.0])
    # Third of four: 0.9 and 0.5 are higher -> 2 / 3.
    assert percentile_ranks(scores, np.array([0.3]), 4)[0] == pytest.approx(2 / 3)


def test_percentile_rank_ties_are_not_higher():
    # Three candidates tie at 0.5 with the held-out item: only 0.8 is strictly higher -> 1 / (5 - 1).
    scores = np.array([0.8, 0.5, 0.5, 0.5, 0.2])
    assert percentile_ranks(scores, np.array([0.5]), n_candidates=5)[0] == pytest.approx(0.25)


def test_percentile_rank_never_counts_excluded_items():
    # Two excluded items at -inf, three candidates: 0.1 has 0.7 and 0.4 above -> 2 / (3 - 1) = 1.
    scores = np.array([-np.inf, -np.inf, 0.7, 0.4, 0.1])
    np.testing.assert_array_equal(percentile_ranks(scores, np.array([0.1, 0.7, 0.4]), 3), [1.0, 0.0, 0.5])
    # A single candidate has no rank to share: 0.
    np.testing.assert_array_equal(percentile_ranks(np.array([-np.inf, 0.3]), np.array([0.3]), 1), [0.0])


def test_percentile_rank_comparison_and_sorted_paths_agree_with_brute_force():
    rng = np.random.default_rng(7)
    # Rounded scores give many ties; 300 of 3,000 candidates excluded (-inf).
    scores = np.round(rng.normal(size=3000), 2)
    scores[rng.choice(3000, size=300, replace=False)] = -np.inf
    finite = scores[np.isfinite(scores)]
    relevant = rng.choice(finite, size=2000)  # held-out scores drawn from the candidates: ties with them too
    n_candidates = len(finite)
    brute = np.array([np.sum(scores > r) for r in relevant]) / (n_candidates - 1)
    # 2,000 held-out scores (more than 32): the path that sorts the candidates once.
    sorted_path = percentile_ranks(scores, relevant, n_candidates)
    # 25 at a time (at most 32): the path that counts the candidates above each held-out score.
    comparison_path = np.concatenate(
        [percentile_ranks(scores, chunk, n_candidates) for chunk in np.split(relevant, 80)]
    )
    np.testing.assert_array_equal(sorted_path, brute)
    np.testing.assert_array_equal(comparison_path, brute)
    assert 0.0 <= sorted_path.min() and sorted_path.max() <= 1.0


def _cases(rng: np.random.Generator):
    cases = [
        ([1, 2, 3], [1]),  # one relevant item, found first
        ([1, 2, 3], [3]),  # one relevant item, found last
        ([], [1, 2]),  # empty recommendation list
        (list(range(20)), [5, 19, 40]),  # k larger than the list for some k
        ([4, 4, 4, 1], [4, 1]),  # repeated item: Spark counts each occurrence
    ]
    for _ in range(60):
        n_items = int(rng.integers(5, 60))
        pred = rng.permutation(n_items)[: int(rng.integers(0, n_items))].tolist()
        rel = rng.choice(n_items, size=int(rng.integers(1, 12)), replace=True).tolist()
        cases.append((pred, rel))
    return cases


@pytest.mark.spark
@pytest.mark.parametrize("k", [1, 3, 10, 100])
def test_parity_with_spark_ranking_metrics(spark, k):
    from pyspark.mllib.evaluation import RankingMetrics

    cases = _cases(np.random.default_rng(k))
    rdd = spark.sparkContext.parallelize([(list(map(int, p)), list(map(int, r))) for p, r in cases], 4)
    spark_metrics = RankingMetrics(rdd)
    ours = mean_metrics([p for p, _ in cases], [r for _, r in cases], k)
    assert ours["map"] == pytest.approx(spark_metrics.meanAveragePrecision, abs=1e-9)
    assert ours["map_at_k"] == pytest.approx(spark_metrics.meanAveragePrecisionAt(k), abs=1e-9)
    assert ours["precision_at_k"] == pytest.approx(spark_metrics.precisionAt(k), abs=1e-9)
    assert ours["ndcg_at_k"] == pytest.approx(spark_metrics.ndcgAt(k), abs=1e-9)
    assert ours["recall_at_k"] == pytest.approx(spark_metrics.recallAt(k), abs=1e-9)
