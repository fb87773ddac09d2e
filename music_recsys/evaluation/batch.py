"""Every train user's top-k of a published bundle: the kernel the batch job's Spark workers run.

It lives in the package, not in ``jobs/batch_recommend.py``: the workers must import it by name
(cloudpickle sends an lru_cache wrapper as a reference, and a spark-submitted script is ``__main__``).
Users with factors go through the evaluation's exact kernel (``topk.top_k_blocks``); users without get
the serving API's popularity fallback, so the precomputed lists equal what the API answers.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from music_recsys.evaluation.topk import top_k_blocks
from music_recsys.store.bundle import load_arrays


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


@functools.lru_cache(maxsize=2)
def _bundle(path: str) -> dict:
    """A worker's view of the bundle, loaded once per Python worker: arrays memory-mapped, ids as Arrow."""
    import pyarrow.parquet as pq

    arrays = load_arrays(Path(path), mmap=True)
    labels = {
        key: pq.read_table(Path(path) / name, columns=["id"])["id"].combine_chunks()
        for key, name in (("users", "users.parquet"), ("tracks", "tracks.parquet"))
    }
    return {
        **arrays,
        "item_vectors": np.asarray(arrays["item_factors"], dtype=np.float32),
        "by_popularity": popularity_order(arrays["popularity"]),
        **labels,
    }


def recommend_batches(batches: Iterator, bundle: str, k: int) -> Iterator:
    """``mapInPandas`` body: batches of user indices (column ``id``) to rows user_id, rank, track_id, score."""
    import pandas as pd
    import pyarrow as pa

    b = _bundle(bundle)
    indptr, indices = b["played_indptr"], b["played_indices"]
    for batch in batches:
        users = batch["id"].to_numpy(dtype=np.int64)
        played = [np.asarray(indices[indptr[u] : indptr[u + 1]], dtype=np.int64) for u in users]
        vectors = b["user_factors"][users]
        lists = recommend_users(vectors, b["item_vectors"], played, b["popularity"], b["by_popularity"], k)
        lengths = np.fromiter((len(t) for t, _ in lists), dtype=np.int64, count=len(lists))
        tracks = np.concatenate([t for t, _ in lists]) if len(lists) else np.zeros(0, dtype=np.int64)
        scores = np.concatenate([s for _, s in lists]) if len(lists) else np.zeros(0, dtype=np.float32)
        ranks = np.arange(1, lengths.sum() + 1) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        yield pd.DataFrame(
            {
                "user_id": b["users"].take(pa.array(np.repeat(users, lengths))).to_pandas(),
                "rank": ranks.astype(np.int32),
                "track_id": b["tracks"].take(pa.array(tracks)).to_pandas(),
                "score": scores.astype(np.float32),
            }
        )


def expected_lengths(bundle: Path, k: int) -> np.ndarray:
    """Each user's list length: k, or every track they have not played when fewer are left."""
    arrays = load_arrays(bundle, mmap=True)
    n_items = len(arrays["popularity"])
    return np.minimum(k, n_items - np.diff(arrays["played_indptr"]))
