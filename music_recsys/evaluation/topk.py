"""Exact top-k by inner product: the one kernel behind evaluation, fast search, serving and batch scoring.

A block of users is one matrix product; each row is cut to its k best with ``argpartition`` (the honest
exact baseline: a partial sort, not a full argsort) and those k are ordered by score, ties by item index.
Excluded items (already played) are set to -inf before the cut and never returned. ``top_k_blocks`` is the
kernel; ``top_k`` (a batch of users) is it flattened, and ``top_k_one`` (one query, as serving and the
single-query search baseline ask) and ``rerank`` (exact order of approximate candidates) are its one-row
form (``top_k_of_row``).
"""

from __future__ import annotations

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
    """Users per score block: keeps a block's float32 score matrix near 16 MB, past which argpartition is
    memory-bound."""
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
    k items remain. Within a list equal scores are ordered by item index; which of several items tied at
    the k-th score makes the cut is up to argpartition, deterministic for the same input.
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
    """``top_k_of_scores`` for one row of scores, without the 2-D bookkeeping (lexsort, take_along_axis)
    that measured up to 1.8x the cost of a single query here; the tests hold the two to the same answers."""
    n_items = len(scores)
    kk = min(k, n_items)
    cand = np.argpartition(-scores, kk - 1)[:kk] if kk < n_items else np.arange(n_items)
    cand_scores = scores[cand]
    order = np.argsort(-cand_scores, kind="stable")
    ranked_scores = cand_scores[order]
    if kk > 1 and (ranked_scores[1:] == ranked_scores[:-1]).any():
        # Ties (rare with float factors): order them by item index, as the block form does. Checking is
        # cheaper than always sorting by two keys.
        order = np.lexsort((cand, -cand_scores))
    return cand[order]


def mask_items(scores: np.ndarray, exclude: ItemLists) -> None:
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


def _check(k: int, n_users: int, lists: ItemLists | None, name: str) -> None:
    if k <= 0:
        raise ValueError(f"k={k} must be positive")
    if lists is not None and len(lists) != n_users:
        raise ValueError(f"{name} has {len(lists)} rows for {n_users} users")
