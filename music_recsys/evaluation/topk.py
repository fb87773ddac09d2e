"""Exact top-k by inner product: the one kernel behind evaluation, fast search, serving and batch scoring.

A block of users is one matrix product; each row is cut to its k best exactly — a floor from a strided
sample of the row leaves a few times k candidates, and only those are partitioned and sorted — and ordered
by score, ties by item index.
Excluded items (already played) are set to -inf before the cut and never returned. ``top_k_blocks`` is the
kernel; ``top_k`` (a batch of users) is it flattened, and ``top_k_one`` (one query, as serving and the
single-query search baseline ask) and ``rerank`` (exact order of approximate candidates) are its one-row
form (``top_k_of_row``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

ItemLists = Sequence[np.ndarray | Sequence[int]]


@dataclass(frozen=True)
class ScoredBlock:
    """One block of users: ``scores[i]`` is user ``start + i``'s row (excluded items at -inf), ``top[i]``
    their ranked item indices, ``kept[i]`` the raw scores of the items ``keep`` asked for, read before
    exclusion (the evaluation's held-out items: MPR ranks them even when they were also played)."""

    start: int
    scores: np.ndarray
    top: list[np.ndarray]
    kept: list[np.ndarray] | None


def block_rows(n_items: int) -> int:
    """Users per score block: keeps a block's float32 score matrix near 16 MB, so the product and the cut
    stay in cache-sized pieces."""
    return max(1, min(1024, 4_000_000 // max(n_items, 1)))


def top_k_blocks(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    k: int,
    exclude: ItemLists | None = None,
    keep: ItemLists | None = None,
    block_size: int | None = None,
) -> Iterator[ScoredBlock]:
    """The kernel: score blocks of users against every item, exclude, cut to the k best, best first.

    ``exclude[i]`` lists item indices user i must not get; a user's list is shorter than k when fewer than
    k items remain. Within a list equal scores are ordered by item index, and of several items tied at the
    k-th score the lowest indices make the cut.
    """
    _check(k, user_vectors.shape[0], exclude, "exclude")
    _check(k, user_vectors.shape[0], keep, "keep")
    block_size = block_size or block_rows(item_vectors.shape[0])
    # One transposed copy up front: a C-contiguous (rank, n_items) right operand measured faster in the
    # block product than BLAS reading the transpose of the item matrix.
    item_t = np.ascontiguousarray(item_vectors.T)
    for start in range(0, user_vectors.shape[0], block_size):
        scores = user_vectors[start : start + block_size] @ item_t
        stop = start + len(scores)
        kept = None
        if keep is not None:  # fancy indexing copies: the raw scores survive the masking below
            kept = [scores[row, np.asarray(items, dtype=np.int64)] for row, items in enumerate(keep[start:stop])]
        if exclude is not None:
            mask_items(scores, exclude[start:stop])
        yield ScoredBlock(start, scores, top_k_of_scores(scores, k), kept)


def top_k(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    k: int,
    exclude: ItemLists | None = None,
    block_size: int | None = None,
) -> list[np.ndarray]:
    """Indices of the k highest-scoring items per user, best first (``top_k_blocks``'s rules)."""
    out: list[np.ndarray] = []
    for block in top_k_blocks(user_vectors, item_vectors, k, exclude=exclude, block_size=block_size):
        out.extend(block.top)
    return out


def top_k_one(
    item_vectors: np.ndarray, query: np.ndarray, k: int, exclude: np.ndarray | Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One query's top k (item indices, their scores), best first, ``exclude`` never returned.

    The same cut and order as ``top_k``; the product is a matrix-vector one against the items as stored,
    since transposing the catalogue for a single query would cost more than the product.
    """
    _check(k, 1, None, "exclude")
    scores = item_vectors @ query
    masked = exclude is not None and len(exclude) > 0
    if masked:
        scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
    top = top_k_of_row(scores, k)
    if masked:  # excluded items sort last: drop them when fewer than k others were left
        top = top[np.isfinite(scores[top])]
    return top, scores[top]


def rerank(
    item_vectors: np.ndarray, query: np.ndarray, candidates: np.ndarray | Sequence[int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top k of approximate ``candidates`` by inner product (indices, scores), ties by item index
    as in ``top_k``."""
    ids = np.sort(np.asarray(candidates, dtype=np.int64))  # sorted, so position order is item order
    scores = item_vectors[ids] @ query
    top = top_k_of_row(scores, k)
    return ids[top], scores[top]


def top_k_of_row(scores: np.ndarray, k: int) -> np.ndarray:
    """``top_k_of_scores`` for one row of scores (one query, as serving and re-ranking ask)."""
    if not len(scores):
        return np.zeros(0, dtype=np.int64)
    return _ranked_above(scores, _floors(scores[np.newaxis, :], min(k, len(scores)))[0], k)


def mask_items(scores: np.ndarray, exclude: ItemLists) -> None:
    """Set ``scores[i, exclude[i]]`` to -inf in place, so those items are never ranked."""
    for row, items in enumerate(exclude):
        items = np.asarray(items, dtype=np.int64)
        if len(items):
            scores[row, items] = -np.inf


def top_k_of_scores(scores: np.ndarray, k: int) -> list[np.ndarray]:
    """Per row of a score block, the indices of the k highest finite scores, best first, ties by index
    (a tie at the k-th score keeps the lowest indices)."""
    kk = min(k, scores.shape[1])
    if not kk:
        return [np.zeros(0, dtype=np.int64) for _ in scores]
    return [_ranked_above(row, floor, kk) for row, floor in zip(scores, _floors(scores, kk), strict=True)]


# Sampled scores per row: the larger of SAMPLE_PER_K · k and SAMPLE_SCALE · √(k · n_items). A sample of m
# scores sets a floor that about k · n_items / m scores of the row reach; partitioning the sample costs m,
# cutting what is left costs k · n_items / m, so m grows with √(k · n_items) on large catalogues; on small ones
# a sample of half the row or more is the row itself, whose floor is exact. Either term alone was slower
# somewhere (bench/topk_kernel.py --before 82447e0; bench/RESULTS.md, "Exact top-k kernel: 82447e0 vs now").
SAMPLE_PER_K = 32
SAMPLE_SCALE = 2.0


def _floors(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, a score no higher than the row's k-th highest: the k-th highest of an evenly strided
    sample of the row (every sampled score is a score of the row, so at least k of the row's scores reach
    it). Every item of the top k, ties at the k-th score included, is at or above it, and only about
    k · n_items / (sample size) items are, so the exact cut partitions a short list instead of the whole
    catalogue (``bench/topk_kernel.py`` measures it against ``argpartition`` of each row; figures in
    docs/benchmarks.md). When the sample would be half the row or more, it is the whole row."""
    n_items = scores.shape[1]
    sampled = max(SAMPLE_PER_K * k, SAMPLE_SCALE * math.sqrt(k * n_items))
    stride = max(1, int(n_items // sampled))
    sample = scores[:, ::stride]
    return np.partition(sample, sample.shape[1] - k, axis=1)[:, sample.shape[1] - k]


def _ranked_above(row: np.ndarray, floor: float, k: int) -> np.ndarray:
    """The k best finite scores of ``row`` among the items at or above ``floor``, best first, ties by index."""
    cand = np.flatnonzero(row >= floor)
    cand_scores = row[cand]
    if len(cand) > k:  # cut to the k-th score, keeping every item tied with it
        kth = cand_scores[np.argpartition(-cand_scores, k - 1)[k - 1]]
        keep = cand_scores >= kth
        cand, cand_scores = cand[keep], cand_scores[keep]
    order = np.lexsort((cand, -cand_scores))[:k]
    top, top_scores = cand[order], cand_scores[order]
    finite = np.isfinite(top_scores)
    return top if finite.all() else top[finite]


def _check(k: int, n_users: int, lists: ItemLists | None, name: str) -> None:
    if k <= 0:
        raise ValueError(f"k={k} must be positive")
    if lists is not None and len(lists) != n_users:
        raise ValueError(f"{name} has {len(lists)} rows for {n_users} users")
