"""Ranking metrics: hand-computed cases and parity with Spark RankingMetrics on the same lists."""

from __future__ import annotations

import math

import numpy as np
import pytest

from music_recsys.metrics import METRIC_NAMES, mean_metrics, user_metrics


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
