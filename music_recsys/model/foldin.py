"""Fold-in: the implicit-ALS user step for a listener who is not in the training data.

Spark's implicit ALS solves, for each user u with ratings r_ui (after the grid's transform) against the
item factors Y (``ALS.computeFactors``, Hu, Koren, Volinsky 2008 with ALS-WR regularisation):

    (YᵀY + Σ_i c_i y_i y_iᵀ + λ·n_u·I) x = Σ_{i: r_ui > 0} (1 + c_i) y_i,   c_i = alpha·|r_ui|,

where n_u counts the user's positive ratings; with ``nonnegative`` the same normal equation is solved as
a non-negative least-squares problem (min ½xᵀAx − bᵀx, x ≥ 0). Solving it against a model's final item
factors reproduces what the model's last iteration gave a training user, so a new listener is placed
exactly as a training user with the same history would be.
"""

from __future__ import annotations

import numpy as np

from music_recsys.model.transforms import count_transform


def ratings_from_counts(counts: np.ndarray, transform: str, drop_threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """The grid's transform of play counts (``music_recsys.model.transforms``, as the fit's
    ``music_recsys.model.als.apply_transform``): (kept mask, ratings)."""
    spec = count_transform(transform)
    counts = np.asarray(counts, dtype=np.float64)
    keep = counts > drop_threshold if spec.drop else np.ones(len(counts), dtype=bool)
    ratings = np.log1p(counts) if spec.log1p else counts
    return keep, ratings.astype(np.float32).astype(np.float64)  # Spark's rating column is float


def normal_equation(
    item_factors: np.ndarray, gram: np.ndarray, items: np.ndarray, ratings: np.ndarray, alpha: float, reg_param: float
) -> tuple[np.ndarray, np.ndarray]:
    """A and b of the user's implicit-ALS normal equation; ``gram`` is YᵀY (float64)."""
    y = np.asarray(item_factors[items], dtype=np.float64)
    c1 = alpha * np.abs(ratings)
    positive = ratings > 0
    a = gram + (y * c1[:, None]).T @ y
    a[np.diag_indices_from(a)] += reg_param * int(positive.sum())
    b = ((1.0 + c1)[positive, None] * y[positive]).sum(axis=0)
    return a, b


def nnls(a: np.ndarray, b: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """min ½xᵀAx − bᵀx subject to x ≥ 0, for symmetric positive definite A (Lawson–Hanson active set)."""
    n = len(b)
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    gradient = b - a @ x  # the negative gradient
    for _ in range(3 * n + 10):
        free = ~passive & (gradient > tol)
        if not free.any():
            break
        passive[np.argmax(np.where(~passive, gradient, -np.inf))] = True
        while True:
            s = np.zeros(n)
            idx = np.flatnonzero(passive)
            s[idx] = np.linalg.solve(a[np.ix_(idx, idx)], b[idx])
            if np.all(s[idx] > tol):
                x = s
                break
            # Step back along x -> s to the first variable that would turn negative; drop it.
            blocked = passive & (s <= tol)
            gap = x[blocked] - s[blocked]
            step = float(np.min(np.where(gap > 0, x[blocked] / np.where(gap > 0, gap, 1.0), 0.0)))
            x = x + step * (s - x)
            passive &= x > tol
            x[~passive] = 0.0
        gradient = b - a @ x
    return x


def fold_in(
    item_factors: np.ndarray,
    gram: np.ndarray,
    items: np.ndarray,
    counts: np.ndarray,
    *,
    alpha: float,
    reg_param: float,
    transform: str,
    drop_threshold: int,
    nonnegative: bool,
) -> np.ndarray | None:
    """The user factor for a history (track indices, play counts); None when the transform keeps nothing."""
    keep, ratings = ratings_from_counts(counts, transform, drop_threshold)
    if not keep.any():
        return None
    a, b = normal_equation(item_factors, gram, np.asarray(items)[keep], ratings[keep], alpha, reg_param)
    x = nnls(a, b) if nonnegative else np.linalg.solve(a, b)
    return x.astype(np.float32)
