"""The generator's model: play counts, a genre-clustered latent taste model, user activity, hold-out splits,
and the two samplers (exact for small catalogues, candidates by popularity then taste for large ones),
which hand out users a block at a time so any size streams.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from music_recsys import constants as C
from music_recsys.data.writers import Block

# Count model: P(count = 1) = P1; otherwise 2 + floor(Lomax(shape, scale)), capped like the study's max.
COUNT_P1 = 0.55
COUNT_SHAPE = 2.3
COUNT_SCALE = 5.0
COUNT_CAP = 9667

# Distinct tracks per user: min_tracks + floor(Lomax(ACTIVITY_SHAPE)), capped at half the catalogue.
ACTIVITY_SHAPE = 1.8

# Candidates drawn per block of users by the large-scale sampler (its memory: ~100 bytes each).
CANDIDATES_PER_BLOCK = 4_000_000


@dataclass(frozen=True)
class GeneratorConfig:
    users: int = 3000
    items: int = 1500
    holdout_users: int = 300
    holdout_train_fraction: float = 0.5
    mean_tracks: float = 15.0
    min_tracks: int = 5
    factors: int = 16
    genres: int = 12
    popularity_exponent: float = 0.5
    taste_temperature: float = 0.2
    seed: int = C.DEFAULT_SEED
    # Weekly drop number: the same listeners, catalogue, ids and tastes, with every play sampled anew.
    drop: int = 0

    def validate(self) -> None:
        if self.users < 2 or self.items < 2:
            raise ValueError(f"need at least 2 users and 2 items, got users={self.users} items={self.items}")
        if not 2 <= self.holdout_users <= self.users:
            raise ValueError(
                f"holdout_users={self.holdout_users} must be between 2 and the number of users "
                f"({self.users}); hold-out users are split between validation and test"
            )
        if not 0.0 < self.holdout_train_fraction < 1.0:
            raise ValueError(f"holdout_train_fraction={self.holdout_train_fraction} must be in (0, 1)")
        if not 2 <= self.min_tracks <= self.items:
            raise ValueError(f"min_tracks={self.min_tracks} must be in [2, items={self.items}]")
        if self.mean_tracks <= self.min_tracks:
            raise ValueError(f"mean_tracks={self.mean_tracks} must exceed min_tracks={self.min_tracks}")


def sample_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Play counts with the study's marginal statistics (see module docstring)."""
    counts = np.ones(n, dtype=np.int64)
    more = rng.random(n) >= COUNT_P1
    lomax = COUNT_SCALE * (rng.random(int(more.sum())) ** (-1.0 / COUNT_SHAPE) - 1.0)
    counts[more] = np.minimum(2 + np.floor(lomax), COUNT_CAP).astype(np.int64)
    return counts


def _hex_ids(rng: np.random.Generator, n: int, nbytes: int) -> np.ndarray:
    raw = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    ids = np.array([row.tobytes().hex() for row in raw])
    if len(np.unique(ids)) != n:  # 2^-64 odds at these sizes; still, never emit duplicates
        raise RuntimeError("id collision; change the seed")
    return ids


def _track_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.array(["TR" + h[:16].upper() for h in _hex_ids(rng, n, 8)])


@dataclass
class LatentModel:
    """The ground truth behind a generated data set (kept for tests and diagnostics)."""

    user_factors: np.ndarray
    item_factors: np.ndarray
    item_log_popularity: np.ndarray

    def scores(self, users: np.ndarray, popularity_exponent: float, temperature: float) -> np.ndarray:
        return (
            popularity_exponent * self.item_log_popularity
            + (self.user_factors[users] @ self.item_factors.T) / temperature
        )


def latent_model(cfg: GeneratorConfig, rng: np.random.Generator) -> LatentModel:
    d, g = cfg.factors, cfg.genres
    centers = rng.normal(size=(g, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    genre_sizes = 1.0 / np.arange(1, g + 1) ** 0.7
    item_genre = rng.choice(g, size=cfg.items, p=genre_sizes / genre_sizes.sum())
    items = centers[item_genre] + 0.35 * rng.normal(size=(cfg.items, d)) / np.sqrt(d)
    # Each user likes one to three genres, unevenly.
    users = np.zeros((cfg.users, d))
    n_liked = rng.integers(1, 4, size=cfg.users)
    for u in range(cfg.users):
        liked = rng.choice(g, size=n_liked[u], replace=False, p=genre_sizes / genre_sizes.sum())
        weights = rng.dirichlet(np.ones(n_liked[u]))
        users[u] = weights @ centers[liked]
    users += 0.25 * rng.normal(size=users.shape) / np.sqrt(d)
    # Track popularity: Zipf over a random order of the catalogue.
    rank_of_item = rng.permutation(cfg.items)
    log_pop = -np.log1p(rank_of_item).astype(float)
    return LatentModel(users, items, log_pop)


def activity_cap(items: int, min_tracks: int) -> int:
    """Most distinct tracks one user plays: half the catalogue (never below ``min_tracks``)."""
    return max(min_tracks, items // 2)


def user_activity(cfg: GeneratorConfig, rng: np.random.Generator) -> np.ndarray:
    """Distinct tracks per user: min_tracks + a Pareto tail with the requested mean."""
    scale = (cfg.mean_tracks - cfg.min_tracks) * (ACTIVITY_SHAPE - 1.0)
    extra = scale * (rng.random(cfg.users) ** (-1.0 / ACTIVITY_SHAPE) - 1.0)
    return np.minimum(cfg.min_tracks + np.floor(extra), activity_cap(cfg.items, cfg.min_tracks)).astype(np.int64)


def holdout_splits(n_users: int, holdout_users: int, rng: np.random.Generator) -> np.ndarray:
    """Split code per user: ``holdout_users`` random users, half validation (1) and half test (2); 0 = train only."""
    if not 2 <= holdout_users <= n_users:
        raise ValueError(f"holdout_users={holdout_users} must be between 2 and the number of users ({n_users})")
    holdout = rng.choice(n_users, size=holdout_users, replace=False)
    split_of_user = np.zeros(n_users, dtype=np.int8)
    split_of_user[holdout[: holdout_users // 2]] = 1
    split_of_user[holdout[holdout_users // 2 :]] = 2
    return split_of_user


def hide_rows(
    user_of_row: np.ndarray,
    split_of_user: np.ndarray,
    holdout_train_fraction: float,
    rng: np.random.Generator,
    held: np.ndarray | None = None,
) -> np.ndarray:
    """Split code per row: a hold-out user's row stays in train (0) with probability
    ``holdout_train_fraction``, else goes to the user's split; each hold-out user keeps at least one row
    and hides at least one. ``held``: the hold-out users that must have rows here (default: those present)."""
    hidden = (split_of_user[user_of_row] > 0) & (rng.random(len(user_of_row)) >= holdout_train_fraction)
    if held is None:
        held = np.unique(user_of_row[split_of_user[user_of_row] > 0])
    order = np.argsort(user_of_row, kind="stable")
    ordered = user_of_row[order]
    starts = np.searchsorted(ordered, held, side="left")
    ends = np.searchsorted(ordered, held, side="right")
    for u, start, end in zip(held, starts, ends, strict=True):
        rows = order[start:end]
        if len(rows) < 2:
            raise ValueError(f"hold-out user {u} has {len(rows)} rows; hold-out users need at least 2")
        if hidden[rows].all():
            hidden[rows[0]] = False
        if not hidden[rows].any():
            hidden[rows[-1]] = True
    return np.where(hidden, split_of_user[user_of_row], 0)


def assign_splits(
    user_of_row: np.ndarray, n_users: int, holdout_users: int, holdout_train_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Split code per row (0 train, 1 validation, 2 test) with the study's shape, all rows at once.

    ``holdout_users`` random users are split between validation and test; each keeps a random
    ``holdout_train_fraction`` of its rows in train (at least one) and hides the rest (at least one).
    """
    split_of_user = holdout_splits(n_users, holdout_users, rng)
    held = np.flatnonzero(split_of_user)
    # The hold-out users in the order they were drawn does not matter: each touches only its own rows.
    return hide_rows(user_of_row, split_of_user, holdout_train_fraction, rng, held=held)


# Above this many (user, track) pairs, scoring every track for every user is too slow (10M rows:
# 250K users x 200K tracks); candidates are drawn by popularity first and chosen among by taste.
EXACT_SAMPLING_LIMIT = 500_000_000


def _choose_exact(cfg: GeneratorConfig, model: LatentModel, n_tracks: np.ndarray, rng: np.random.Generator):
    """Each user's tracks by Gumbel-top-n over the whole catalogue: sampling without replacement
    proportional to popularity^exponent * exp(taste / temperature)."""
    user_rows, item_rows, count_rows = [], [], []
    block = max(1, 2_000_000 // cfg.items)
    for start in range(0, cfg.users, block):
        users = np.arange(start, min(cfg.users, start + block))
        perturbed = model.scores(users, cfg.popularity_exponent, cfg.taste_temperature)
        perturbed += rng.gumbel(size=perturbed.shape)
        width = int(n_tracks[users].max())
        top = np.argpartition(-perturbed, width - 1, axis=1)[:, :width]
        order = np.take_along_axis(perturbed, top, axis=1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, axis=1)
        for row, u in enumerate(users):
            n = int(n_tracks[u])
            # The most-wanted tracks get the most plays: counts carry the taste signal too.
            counts = np.sort(sample_counts(rng, n))[::-1]
            user_rows.append(np.full(n, u))
            item_rows.append(top[row, :n])
            count_rows.append(counts)
    return np.concatenate(user_rows), np.concatenate(item_rows), np.concatenate(count_rows)


def _candidate_blocks(
    cfg: GeneratorConfig, model: LatentModel, n_tracks: np.ndarray, rng: np.random.Generator, oversample: int = 16
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The large-scale sampler, one block of users at a time: per user, ``oversample * n`` candidates
    drawn by popularity^exponent, then the n best by taste / temperature + Gumbel noise (distinct tracks,
    best first). Yields (user, track, count) index arrays, ``CANDIDATES_PER_BLOCK`` candidates' worth of
    users at a time."""
    popularity = np.exp(cfg.popularity_exponent * (model.item_log_popularity - model.item_log_popularity.max()))
    cdf = np.cumsum(popularity / popularity.sum())
    cdf[-1] = 1.0
    block = max(1, CANDIDATES_PER_BLOCK // (oversample * int(n_tracks.mean()) + 1))
    for start in range(0, cfg.users, block):
        users = np.arange(start, min(cfg.users, start + block))
        n = n_tracks[users]
        m = np.minimum(oversample * n, cfg.items)
        owner = np.repeat(users, m)
        cand = np.minimum(np.searchsorted(cdf, rng.random(int(m.sum()))), cfg.items - 1)
        score = np.empty(len(cand))
        # The gathered factors of 4M candidates would be 0.5 GB each; a million at a time keeps the peak small.
        for lo in range(0, len(cand), 1 << 20):
            hi = lo + (1 << 20)
            score[lo:hi] = np.einsum("ij,ij->i", model.user_factors[owner[lo:hi]], model.item_factors[cand[lo:hi]])
        score /= cfg.taste_temperature
        score += rng.gumbel(size=len(cand))
        order = np.lexsort((-score, owner))  # by user, best first
        owner, cand = owner[order], cand[order]
        # Keep each (user, track) once, at its best score, then the first n of each user.
        _, first = np.unique(owner.astype(np.int64) * cfg.items + cand, return_index=True)
        keep = np.zeros(len(cand), dtype=bool)
        keep[first] = True
        owner, cand = owner[keep], cand[keep]
        starts = np.searchsorted(owner, users)
        position = np.arange(len(owner)) - np.repeat(starts, np.diff(np.append(starts, len(owner))))
        chosen = position < n[owner - start]
        owner, cand, position = owner[chosen], cand[chosen], position[chosen]
        counts = sample_counts(rng, len(owner))
        # The most-wanted tracks get the most plays: counts sorted high to low within each user.
        counts = counts[np.lexsort((-counts, owner))]
        yield owner, cand, counts


@dataclass
class Population:
    """What every block draws on: the latent truth, the ids, each user's number of tracks, the sampler's rng."""

    model: LatentModel
    user_ids: np.ndarray
    track_ids: np.ndarray
    n_tracks: np.ndarray
    rng: np.random.Generator


def population(cfg: GeneratorConfig) -> Population:
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    model = latent_model(cfg, rng)
    ids = np.random.default_rng([cfg.seed, 7])  # the same ids in every drop
    user_ids = _hex_ids(ids, cfg.users, 20)
    track_ids = _track_ids(ids, cfg.items)
    if cfg.drop:
        rng = np.random.default_rng([cfg.seed, 1000 + cfg.drop])
    return Population(model, user_ids, track_ids, user_activity(cfg, rng), rng)


def sample_blocks(cfg: GeneratorConfig, pop: Population) -> Iterator[Block]:
    """The data set in blocks of users (ascending). Small catalogues: one block from the exact sampler.
    Large ones: the candidate sampler's blocks, each split as it is drawn (hold-out users are chosen
    first), so no more than one block's rows is ever in memory."""
    if cfg.users * cfg.items <= EXACT_SAMPLING_LIMIT:
        users, items, counts = _choose_exact(cfg, pop.model, pop.n_tracks, pop.rng)
        split = assign_splits(users, cfg.users, cfg.holdout_users, cfg.holdout_train_fraction, pop.rng)
        yield Block(users, items, counts, split)
        return
    # A stream of its own for the splits: drawing them inside the sampler's stream would need every row first.
    split_rng = np.random.default_rng([cfg.seed, 11, cfg.drop])
    split_of_user = holdout_splits(cfg.users, cfg.holdout_users, split_rng)
    for users, items, counts in _candidate_blocks(cfg, pop.model, pop.n_tracks, pop.rng):
        yield Block(users, items, counts, hide_rows(users, split_of_user, cfg.holdout_train_fraction, split_rng))
