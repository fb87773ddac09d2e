"""Exact top-k by inner product: a blocked matrix product plus a partial sort per row.

This is the honest exact baseline (argpartition, not a full argsort) and the engine of the
evaluation job, which runs it on blocks of users inside Spark.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def top_k(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    k: int,
    exclude: Sequence[np.ndarray | Sequence[int]] | None = None,
    block_size: int | None = None,
) -> list[np.ndarray]:
    """Indices of the k highest-scoring items per user, best first.

    ``exclude[i]`` lists item indices user i must not get (e.g. already played). A user's list is
    shorter than k when fewer than k items remain. Within the list, equal scores are ordered by item
    index; which of several items tied at the k-th score makes the cut is up to argpartition, which is
    deterministic for the same input.
    """
    if k <= 0:
        raise ValueError(f"k={k} must be positive")
    n_users, n_items = user_vectors.shape[0], item_vectors.shape[0]
    if exclude is not None and len(exclude) != n_users:
        raise ValueError(f"exclude has {len(exclude)} rows for {n_users} users")
    block_size = block_size or block_rows(n_items)
    item_t = np.ascontiguousarray(item_vectors.T)
    out: list[np.ndarray] = []
    for start in range(0, n_users, block_size):
        scores = user_vectors[start : start + block_size] @ item_t
        if exclude is not None:
            mask_items(scores, exclude[start : start + len(scores)])
        out.extend(top_k_of_scores(scores, k))
    return out


def block_rows(n_items: int) -> int:
    """Users per score block: keeps a block's float32 score matrix near 16 MB, past which argpartition is
    memory-bound."""
    return max(1, min(1024, 4_000_000 // max(n_items, 1)))


def mask_items(scores: np.ndarray, exclude: Sequence[np.ndarray | Sequence[int]]) -> None:
    """Set ``scores[i, exclude[i]]`` to -inf in place, so those items are never ranked."""
    for row, items in enumerate(exclude):
        items = np.asarray(items, dtype=np.int64)
        if len(items):
            scores[row, items] = -np.inf


def top_k_of_scores(scores: np.ndarray, k: int) -> list[np.ndarray]:
    """Per row of a score block, the indices of the k highest finite scores, best first, ties by index."""
    n_items = scores.shape[1]
    kk = min(k, n_items)
    if kk < n_items:
        cand = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    else:
        cand = np.broadcast_to(np.arange(n_items), scores.shape)
    cand_scores = np.take_along_axis(scores, cand, axis=1)
    # One vectorised lexsort per block: score descending, then item index ascending.
    order = np.lexsort((cand, -cand_scores), axis=1)
    ranked = np.take_along_axis(cand, order, axis=1)
    finite = np.isfinite(np.take_along_axis(cand_scores, order, axis=1))
    if finite.all():
        return list(ranked)
    return [row[keep] for row, keep in zip(ranked, finite, strict=True)]
