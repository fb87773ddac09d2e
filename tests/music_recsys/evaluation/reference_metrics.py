"""The metric definitions of ``music_recsys.evaluation.metrics`` written plainly, one user at a time: the
reference the production kernel (``ranking_metrics``) is held to, itself held to Spark's RankingMetrics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from music_recsys.evaluation.metrics import METRIC_NAMES


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


def ndcg_graded_at_k(pred: Sequence[int] | np.ndarray, relevant: np.ndarray, counts: np.ndarray, k: int) -> float:
    """NDCG@k with graded gains: gain log(1 + held-out count), discount 1 / log2(position + 1), the ideal
    DCG from the user's own held-out gains sorted, cut at k; 0 for a user with no held-out items."""
    relevant, counts = np.asarray(relevant), np.asarray(counts, dtype=np.float64)
    if len(relevant) == 0:
        return 0.0
    order = np.argsort(relevant, kind="stable")
    items, gains = relevant[order], np.log1p(counts[order])
    top = np.asarray(pred, dtype=items.dtype)[:k]
    at = np.minimum(np.searchsorted(items, top), len(items) - 1)
    hits = items[at] == top
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float(np.where(hits, gains[at], 0.0) @ discounts[: len(top)])
    ideal = np.sort(gains)[::-1][:k]
    idcg = float(ideal @ discounts[: len(ideal)])
    return dcg / idcg if idcg > 0 else 0.0
