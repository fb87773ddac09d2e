"""Every train user's top-k from a model's factors: the kernel of the batch recommendations.

Users with factors go through the evaluation's exact kernel (``topk.top_k_blocks``); users without get
the serving API's popularity fallback, so the precomputed lists equal what the API answers. Plain numpy:
``music_recsys.store.recommendations.recommend_batches`` feeds it a bundle's arrays inside Spark.
"""

from __future__ import annotations

import numpy as np

from music_recsys.evaluation.topk import top_k_blocks


def popularity_order(popularity: np.ndarray) -> np.ndarray:
    """Track indices by train listeners, most first, ties by index: the serving API's fallback order."""
    return np.argsort(-np.asarray(popularity), kind="stable")


def recommend_users(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    played: list[np.ndarray],
    popularity: np.ndarray,
    by_popularity: np.ndarray,
    k: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per user, (track indices, scores) of the k best unplayed tracks, best first, ties by track index.

    Users with factors: the evaluation's kernel (``topk.top_k_blocks``: one matrix product per block of
    users, played tracks masked, the exact cut, ties by index), scores read from the same block. Users
    whose factor is all zeros: the most popular unplayed tracks, scored by popularity (what the serving API
    answers for them)."""
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(user_vectors)
    has_factors = np.any(user_vectors != 0, axis=1)
    warm = np.flatnonzero(has_factors)
    if len(warm):
        vectors = np.asarray(user_vectors[warm], dtype=np.float32)
        items = np.asarray(item_vectors, dtype=np.float32)
        for block in top_k_blocks(vectors, items, k, exclude=[played[u] for u in warm]):
            for offset, top in enumerate(block.top):
                out[warm[block.start + offset]] = (top, block.scores[offset, top])
    for u in np.flatnonzero(~has_factors):
        top = by_popularity[~np.isin(by_popularity, played[u])][:k]
        out[u] = (top, np.asarray(popularity, dtype=np.float32)[top])
    return out  # type: ignore[return-value]
