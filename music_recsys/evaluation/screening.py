"""A screening fit's own validation score: the adaptive search ranks its cheap fits without an evaluate job.

The fit job collects the validation users' factors and the item factors and calls ``screen_metrics``: the
same top-k kernel (``music_recsys.evaluation.topk``) and per-user metrics
(``music_recsys.evaluation.metrics.ranking_metrics``) as evaluation, averaged over every validation user; a
user without a factor (no train rows left) scores 0, as a cold user does in evaluation.
"""

from __future__ import annotations

import numpy as np

from music_recsys.evaluation.metrics import ranking_metrics
from music_recsys.evaluation.topk import top_k

SCREEN_METRICS = ("map", "map_at_k", "precision_at_k", "ndcg_at_k")


def group_items(users: np.ndarray, items: np.ndarray, counts: np.ndarray | None = None) -> dict[int, tuple]:
    """Per user: sorted unique items (and their counts summed), from parallel row arrays."""
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    counts = np.ones(len(items), dtype=np.int64) if counts is None else counts[order]
    out: dict[int, tuple] = {}
    bounds = np.flatnonzero(np.diff(users)) + 1
    for chunk in np.split(np.arange(len(users)), bounds):
        if len(chunk) == 0:
            continue
        unique, first = np.unique(items[chunk], return_index=True)
        out[int(users[chunk[0]])] = (unique, np.add.reduceat(counts[chunk], first))
    return out


def screen_metrics(
    truth: dict[int, tuple],
    seen: dict[int, tuple],
    user_ids: np.ndarray,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    k: int,
    exclude_seen: bool = True,
) -> dict[str, float]:
    """Mean of each ``SCREEN_METRICS`` over the users of ``truth`` (user -> (sorted items, counts)); ``user_ids``
    and ``user_factors`` are the users that have factors; ``seen`` (user -> (sorted items, _)) is excluded
    from the lists when ``exclude_seen``."""
    if not truth:
        raise ValueError("screening: no validation users to score")
    row_of = {int(u): i for i, u in enumerate(user_ids)}
    users = [u for u in sorted(truth) if u in row_of]
    k = min(k, item_factors.shape[0])
    sums = dict.fromkeys(SCREEN_METRICS, 0.0)
    if users:
        vectors = user_factors[[row_of[u] for u in users]]
        exclude = [seen.get(u, (np.empty(0, np.int64),))[0] for u in users] if exclude_seen else None
        for user, pred in zip(users, top_k(vectors, item_factors, k, exclude=exclude), strict=True):
            relevant, counts = truth[user]
            metrics = ranking_metrics(pred, relevant, counts, k)
            for name in SCREEN_METRICS:
                sums[name] += metrics[name]
    n = len(truth)
    return {**{name: sums[name] / n for name in SCREEN_METRICS}, "n_users": n, "n_cold_users": n - len(users)}
