"""Scoring one model on one split: every metric of every user in a single pass over the score matrix.

``score_block`` is plain numpy (the unit tests call it); ``score_batches`` is the same work as a
``mapInPandas`` function, run by Spark's Python workers — locally, on executors, or on a Spark Connect
server — so it reads the item factors from a ``.npy`` path the job gives it rather than from a broadcast
variable (which Spark Connect does not have). Per-user rows come back with the user's history segment;
one extra row per batch (``segment = -1``) carries how often each track was recommended, for coverage.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from music_recsys.evaluation.metrics import METRIC_NAMES, percentile_ranks, ranking_metrics
from music_recsys.evaluation.topk import top_k_blocks

# Per-user figures summed by the aggregation; means and ratios are formed from the sums.
USER_SUMS = (*METRIC_NAMES, "ndcg_graded_at_k", "mpr_num", "mpr_den", "rec_pop_sum", "n_recs")
COVERAGE_SEGMENT = -1


@dataclass
class Truth:
    """One block of users: held-out tracks with their play counts, and tracks played in train."""

    relevant: Sequence[np.ndarray]
    counts: Sequence[np.ndarray]
    seen: Sequence[np.ndarray]


def score_block(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    truth: Truth,
    k: int,
    exclude_seen: bool,
    popularity_pct: np.ndarray,
) -> tuple[list[dict[str, float]], np.ndarray]:
    """Per-user metric parts for users with factors, and how often each item was recommended."""
    n_items = len(item_vectors)
    rows: list[dict[str, float]] = []
    recommended: list[np.ndarray] = []
    blocks = top_k_blocks(
        np.asarray(user_vectors, dtype=np.float32),
        np.asarray(item_vectors, dtype=np.float32),
        k,
        exclude=truth.seen if exclude_seen else None,
        keep=truth.relevant,  # raw held-out scores, for MPR
    )
    for block in blocks:
        for offset, pred in enumerate(block.top):
            u = block.start + offset
            order = np.argsort(truth.relevant[u], kind="stable")  # ranking_metrics wants them sorted
            rel, cnt, raw = truth.relevant[u][order], truth.counts[u][order], block.kept[offset][order]
            row = ranking_metrics(pred, rel, cnt, k)
            candidates, excluded = block.scores[offset], 0
            if exclude_seen and len(truth.seen[u]):
                also_played = np.isin(rel, truth.seen[u], assume_unique=True)
                excluded = len(truth.seen[u]) - int(also_played.sum())
                if also_played.any():
                    # A held-out track also played in train stays a candidate: its own score, not -inf.
                    candidates = candidates.copy()
                    candidates[rel] = raw
            ranks = percentile_ranks(candidates, raw, n_items - excluded)
            row["mpr_num"] = float(ranks @ cnt)
            row["mpr_den"] = float(cnt.sum())
            row["rec_pop_sum"] = float(popularity_pct[pred].sum())
            row["n_recs"] = float(len(pred))
            recommended.append(pred)
            rows.append(row)
    item_counts = np.bincount(np.concatenate(recommended), minlength=n_items) if recommended else None
    return rows, item_counts if item_counts is not None else np.zeros(n_items, dtype=np.int64)


def cold_user_row(counts: np.ndarray) -> dict[str, float]:
    """A user the model has no factors for: an empty list (every ranking metric 0), random order for MPR."""
    return {**dict.fromkeys(USER_SUMS, 0.0), "mpr_num": 0.5 * float(np.sum(counts)), "mpr_den": float(np.sum(counts))}


def popularity_percentiles(item_popularity: np.ndarray) -> np.ndarray:
    """Each item's popularity percentile: 0 the least, 1 the most popular; ties share their mean rank."""
    n = len(item_popularity)
    if n < 2:
        return np.ones(n)
    order = np.argsort(item_popularity, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(n)
    # Ties: every item of a value gets the mean rank of that value.
    values, inverse = np.unique(item_popularity, return_inverse=True)
    mean_rank = np.bincount(inverse, weights=ranks) / np.bincount(inverse)
    return mean_rank[inverse] / (n - 1)


def segment_of(history_lengths: np.ndarray, boundaries: Sequence[int]) -> np.ndarray:
    """Segment index per user: 0 for lengths <= boundaries[0], 1 up to boundaries[1], ..., last above."""
    return np.searchsorted(np.asarray(boundaries), history_lengths, side="left")


def segment_boundaries(history_lengths: np.ndarray, n_segments: int = 3) -> list[int]:
    """Upper bounds (inclusive) of equal-share history-length segments; fewer when lengths repeat."""
    if len(history_lengths) == 0:
        return []
    cuts = np.quantile(history_lengths, np.arange(1, n_segments) / n_segments, method="lower")
    return sorted({int(c) for c in cuts if c < history_lengths.max()})


@functools.lru_cache(maxsize=4)
def _load(path: str) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def score_batches(
    batches: Iterator,
    items_path: str,
    popularity_path: str,
    k: int,
    exclude_seen: bool,
    boundaries: Sequence[int],
) -> Iterator:
    """``mapInPandas`` body: batches of (user_idx, relevant, counts, seen, n_train, features) to metric rows."""
    import pandas as pd

    item_vectors = np.asarray(_load(items_path))
    popularity_pct = np.asarray(_load(popularity_path))
    empty = np.zeros(0, dtype=np.int64)
    for batch in batches:
        has_factors = batch["features"].notna().to_numpy()
        relevant = [np.asarray(r, dtype=np.int64) for r in batch["relevant"]]
        counts = [np.asarray(c, dtype=np.float64) for c in batch["counts"]]
        seen = [np.asarray(s, dtype=np.int64) if s is not None else empty for s in batch["seen"]]
        rows = [cold_user_row(c) for c in counts]
        item_counts = np.zeros(len(item_vectors), dtype=np.int64)
        warm = np.flatnonzero(has_factors)
        if len(warm):
            vectors = np.stack(batch["features"].to_numpy()[warm]).astype(np.float32)
            truth = Truth([relevant[i] for i in warm], [counts[i] for i in warm], [seen[i] for i in warm])
            scored, item_counts = score_block(vectors, item_vectors, truth, k, exclude_seen, popularity_pct)
            for i, row in zip(warm, scored, strict=True):
                rows[i] = row
        frame = pd.DataFrame(rows, columns=list(USER_SUMS))
        frame.insert(0, "cold", (~has_factors).astype("int32"))
        frame.insert(0, "segment", segment_of(batch["n_train"].to_numpy(), boundaries).astype("int32"))
        frame["item_counts"] = None
        summary = {**dict.fromkeys(USER_SUMS, 0.0), "cold": 0, "segment": COVERAGE_SEGMENT}
        summary["item_counts"] = item_counts
        yield pd.concat([frame, pd.DataFrame([summary])], ignore_index=True)
