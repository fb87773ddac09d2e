"""Ranking metrics with Spark ``RankingMetrics`` definitions, computed in numpy.

Definitions (binary relevance; ``pred`` is the ranked recommendation list, ``rel`` the set of
held-out items; every metric is 0 for a user with no relevant items, as in Spark):

- ``map``: mean average precision over the whole list, not cut at k — Spark's
  ``meanAveragePrecision``: sum over hits at position i of (hits so far / i) divided by |rel|.
- ``map_at_k``: Spark's ``meanAveragePrecisionAt(k)``: the same over the first k, divided by
  min(|rel|, k).
- ``precision_at_k``: hits in the first k divided by k (Spark ``precisionAt``).
- ``ndcg_at_k``: DCG of the first k over the ideal DCG of min(|rel|, k) hits (Spark ``ndcgAt``).
- ``recall_at_k``: hits in the first k divided by |rel| (Spark ``recallAt``).

The parity test checks every one against Spark on the same lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

METRIC_NAMES = ("map", "map_at_k", "precision_at_k", "ndcg_at_k", "recall_at_k")

METRIC_DEFINITIONS = {
    "map": "Spark RankingMetrics.meanAveragePrecision over the full recommendation list (not cut at k)",
    "map_at_k": "Spark RankingMetrics.meanAveragePrecisionAt(k)",
    "precision_at_k": "Spark RankingMetrics.precisionAt(k)",
    "ndcg_at_k": "Spark RankingMetrics.ndcgAt(k), binary relevance",
    "recall_at_k": "Spark RankingMetrics.recallAt(k)",
}


def user_metrics(pred: Sequence[int] | np.ndarray, relevant: Iterable[int] | np.ndarray, k: int) -> dict[str, float]:
    """All metrics for one user's ranked list ``pred`` against the relevant items."""
    if k <= 0:
        raise ValueError(f"k={k}: ranking position k must be positive")
    rel = np.unique(np.asarray(list(relevant) if not isinstance(relevant, np.ndarray) else relevant))
    n_rel = len(rel)
    if n_rel == 0:
        return dict.fromkeys(METRIC_NAMES, 0.0)
    pred = np.asarray(pred)
    hits = np.isin(pred, rel) if len(pred) else np.zeros(0, dtype=bool)
    positions = np.arange(1, len(pred) + 1)
    cum_hits = np.cumsum(hits)
    prec_at_hit = np.where(hits, cum_hits / positions, 0.0)
    hits_k = int(hits[:k].sum())
    n = min(max(len(pred), n_rel), k)
    discounts = 1.0 / np.log(np.arange(n) + 2.0)
    dcg = float(discounts[: min(n, len(pred))][hits[:n]].sum())
    idcg = float(discounts[: min(n, n_rel)].sum())
    return {
        "map": float(prec_at_hit.sum() / n_rel),
        "map_at_k": float(prec_at_hit[:k].sum() / min(n_rel, k)),
        "precision_at_k": hits_k / k,
        "ndcg_at_k": dcg / idcg if idcg > 0 else 0.0,
        "recall_at_k": hits_k / n_rel,
    }


def mean_metrics(
    preds: Iterable[Sequence[int] | np.ndarray], relevants: Iterable[Iterable[int]], k: int
) -> dict[str, float]:
    """Mean of ``user_metrics`` over users (the order of ``preds`` and ``relevants`` must match)."""
    totals = dict.fromkeys(METRIC_NAMES, 0.0)
    n_users = 0
    for pred, rel in zip(preds, relevants, strict=True):
        for name, value in user_metrics(pred, rel, k).items():
            totals[name] += value
        n_users += 1
    if n_users == 0:
        raise ValueError("no users to score: the evaluation split is empty")
    return {name: total / n_users for name, total in totals.items()}
