"""Ranking metrics with Spark ``RankingMetrics`` definitions, computed in numpy.

Each metric's name, one-line definition, direction and label are stated once, in the catalogue
(``music_recsys.evaluation.catalogue``, re-exported here: ``METRICS``, ``metrics_markdown``); this
docstring gives the formulas.

Definitions (binary relevance; ``pred`` is the ranked recommendation list, ``rel`` the set of
held-out items; every metric is 0 for a user with no relevant items, as in Spark):

- ``map``: mean average precision over the whole list, not cut at k — Spark's
  ``meanAveragePrecision``: sum over hits at position i of (hits so far / i) divided by |rel|.
- ``map_at_k``: Spark's ``meanAveragePrecisionAt(k)``: the same over the first k, divided by
  min(|rel|, k).
- ``precision_at_k``: hits in the first k divided by k (Spark ``precisionAt``).
- ``ndcg_at_k``: DCG of the first k over the ideal DCG of min(|rel|, k) hits (Spark ``ndcgAt``).
- ``recall_at_k``: hits in the first k divided by |rel| (Spark ``recallAt``).

The parity tests check every one against Spark on the same lists. Beyond Spark's metrics
(``music_recsys.evaluation.scoring`` computes them in the same pass):

- ``ndcg_graded_at_k``: NDCG@k with gain log(1 + held-out play count) and discount 1/log2(position + 1);
  the ideal DCG sorts the user's own held-out gains; mean over users.
- ``mpr``: expected percentile rank (Hu, Koren, Volinsky 2008): for each held-out (user, track), the
  share of the user's candidate tracks (all tracks, minus those played in train when seen items are
  excluded) scored strictly higher; averaged over all held-out pairs weighted by play count. 0 is
  perfect, a random order gives 0.5. A user without factors counts as a random order.
- ``coverage_at_k``: share of the catalogue that appears in at least one user's top k.
- ``mean_rec_popularity``: mean popularity percentile (0 = least, 1 = most played track in train) of
  the recommended tracks.
"""

from __future__ import annotations

import functools

import numpy as np

# The metric catalogue lives in a module without numpy (the DAG's params read it at parse time); its names
# are re-exported here, where the metrics are computed.
from music_recsys.evaluation.catalogue import (  # noqa: F401
    ACCURACY_METRIC_NAMES,
    ALL_METRIC_NAMES,
    METRIC_BY_NAME,
    METRIC_DEFINITIONS,
    METRIC_NAMES,
    METRICS,
    SEGMENT_METRIC_NAMES,
    SELECTION_METRICS,
    Metric,
    lower_is_better,
    metric,
    metrics_markdown,
    selection_choices_text,
)


@functools.lru_cache(maxsize=8)
def _discounts(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions 1..k, and the NDCG discounts 1/ln(position + 1) with their running sums."""
    positions = np.arange(1, k + 1, dtype=np.float64)
    discounts = 1.0 / np.log(positions + 1.0)
    return positions, discounts, np.cumsum(discounts)


def ranking_metrics(pred: np.ndarray, relevant: np.ndarray, counts: np.ndarray, k: int) -> dict[str, float]:
    """Every Spark metric and ``ndcg_graded_at_k`` of one user's ranked list, in one pass.

    ``relevant`` must be sorted and unique (the evaluation's held-out tracks are) and ``pred`` at most k
    long. The tests hold it to a plain reference implementation of the definitions above
    (tests/music_recsys/evaluation/reference_metrics.py), and that one to Spark's RankingMetrics.
    """
    n_rel = len(relevant)
    if n_rel == 0:
        return {**dict.fromkeys(METRIC_NAMES, 0.0), "ndcg_graded_at_k": 0.0}
    positions, discounts, cumulative = _discounts(k)
    n_pred = len(pred)
    at = np.minimum(np.searchsorted(relevant, pred), n_rel - 1)
    hits = relevant[at] == pred
    cum_hits = np.cumsum(hits)
    precision_sum = float((cum_hits / positions[:n_pred])[hits].sum())
    hits_k = int(cum_hits[-1]) if n_pred else 0
    n = min(max(n_pred, n_rel), k)
    dcg = float(discounts[:n_pred][hits].sum())
    idcg = float(cumulative[min(n, n_rel) - 1])
    # The graded NDCG's base-2 discounts are the base-e ones times ln 2: the ratio does not change.
    gains = np.log1p(np.asarray(counts, dtype=np.float64))
    graded = float(gains[at][hits] @ discounts[:n_pred][hits])
    ideal = np.sort(gains)[::-1][:k]
    ideal_dcg = float(ideal @ discounts[: len(ideal)])
    return {
        "map": precision_sum / n_rel,
        "map_at_k": precision_sum / min(n_rel, k),
        "precision_at_k": hits_k / k,
        "ndcg_at_k": dcg / idcg if idcg > 0 else 0.0,
        "recall_at_k": hits_k / n_rel,
        "ndcg_graded_at_k": graded / ideal_dcg if ideal_dcg > 0 else 0.0,
    }


def percentile_ranks(scores: np.ndarray, relevant_scores: np.ndarray, n_candidates: int) -> np.ndarray:
    """For each relevant item: the candidates scored strictly higher than it, over (candidates - 1).

    ``scores`` holds one user's candidate scores, excluded items at -inf (never higher); ties are not
    higher. 0 is the top of the list, 1 the bottom (Hu, Koren, Volinsky 2008, expected percentile rank).
    """
    if n_candidates <= 1:
        return np.zeros(len(relevant_scores))
    if len(relevant_scores) <= 32:  # one vectorised comparison and count per held-out item
        higher = np.array([np.count_nonzero(scores > s) for s in relevant_scores], dtype=np.int64)
    else:  # many held-out items: one sort of the scores is cheaper than a pass per item
        ordered = np.sort(scores)
        higher = len(scores) - np.searchsorted(ordered, relevant_scores, side="right")
    return higher / (n_candidates - 1)
