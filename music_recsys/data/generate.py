"""Generate MSD-like play-count triplets with real latent taste structure.

The Million Song Dataset taste profile cannot be downloaded here, so this CLI writes data with the
same shape: ``user_id`` (40 hex chars), ``count`` (plays, integer >= 1), ``track_id`` (``TR`` + 16
chars). Counts follow the study's statistics (median 1, 75th percentile 3, mean ~2.9, std ~6.5, capped
at 9667); user activity and track popularity are power laws; which tracks a user plays, and how often,
comes from a genre-clustered latent factor model, so a factor model can beat a popularity ranking.

Splits follow the study: train holds the full histories of most users plus part of the histories of the
hold-out users; validation and test hold the rest of those histories (hold-out users are divided
between validation and test).

Files are written a row group at a time while users are sampled, so memory stays bounded at any size;
``--preset study`` is the study's full size (1.1M users, 385K tracks, ~48M train plays, 10K hold-out
users), ``--scale`` a fraction of it.

    music-recsys generate --users 3000 --items 1500 --out data/msd_like
    music-recsys generate --preset study --out data/study          # the full size
    music-recsys generate --preset study --scale 0.1 --out data/study_10pct
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from music_recsys import constants as C

# Count model: P(count = 1) = P1; otherwise 2 + floor(Lomax(shape, scale)), capped like the study's max.
COUNT_P1 = 0.55
COUNT_SHAPE = 2.3
COUNT_SCALE = 5.0
COUNT_CAP = 9667

# Distinct tracks per user: min_tracks + floor(Lomax(ACTIVITY_SHAPE)), capped at half the catalogue.
ACTIVITY_SHAPE = 1.8

# The study's data set: the MSD taste profile's train plays as the study describes them (issue 23).
STUDY_USERS = 1_100_000
STUDY_ITEMS = 385_000
STUDY_TRAIN_ROWS = 48_000_000
STUDY_HOLDOUT_USERS = 10_000
PRESETS = ("study",)
# The flags a preset decides; giving one with --preset is refused rather than silently overridden.
SIZE_FIELDS = ("users", "items", "holdout_users", "mean_tracks")

# Candidates drawn per block of users by the large-scale sampler (its memory: ~100 bytes each).
CANDIDATES_PER_BLOCK = 4_000_000

# Rows per parquet row group (and per CSV/TSV write): the unit of the streaming writes.
ROW_GROUP_ROWS = 1 << 20


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


def expected_tracks_per_user(mean_tracks: float, min_tracks: int, items: int) -> float:
    """The exact mean of ``user_activity``: the floor and the cap make it less than ``mean_tracks``.

    With X ~ Lomax(a, s), n = min(min_tracks + floor(X), cap), so E[n] = min_tracks + sum over
    j = 1 .. cap - min_tracks of P(X >= j) = (1 + j / s) ** -a.
    """
    scale = (mean_tracks - min_tracks) * (ACTIVITY_SHAPE - 1.0)
    j = np.arange(1, activity_cap(items, min_tracks) - min_tracks + 1, dtype=np.float64)
    return min_tracks + float(np.sum((1.0 + j / scale) ** -ACTIVITY_SHAPE))


def expected_train_rows(cfg: GeneratorConfig) -> float:
    """Train rows ``cfg`` yields on average: every user's tracks but the hidden share of hold-out users'."""
    per_user = expected_tracks_per_user(cfg.mean_tracks, cfg.min_tracks, cfg.items)
    return per_user * (cfg.users - cfg.holdout_users * (1.0 - cfg.holdout_train_fraction))


def study_config(scale: float = 1.0, **overrides: object) -> GeneratorConfig:
    """The study's size times ``scale``: users, tracks, hold-out users and train rows scale together (so
    tracks per user stay the full size's ~44); ``mean_tracks`` is solved so that the expected train rows
    are ``STUDY_TRAIN_ROWS * scale``. ``overrides`` set the other fields (seed, drop, ...)."""
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"--scale {scale}: give the fraction of the study's size to generate, in (0, 1]")
    given = sorted(set(overrides) & set(SIZE_FIELDS))
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ValueError(f"--preset study sets the size itself; drop {flags} (or the preset and give every size)")
    base = GeneratorConfig(
        users=round(STUDY_USERS * scale),
        items=round(STUDY_ITEMS * scale),
        holdout_users=max(2, round(STUDY_HOLDOUT_USERS * scale)),
        **overrides,  # type: ignore[arg-type]
    )
    kept = base.users - base.holdout_users * (1.0 - base.holdout_train_fraction)
    per_user = STUDY_TRAIN_ROWS * scale / kept
    most = activity_cap(base.items, base.min_tracks)

    def mean_of(mean_tracks: float) -> float:
        return expected_tracks_per_user(mean_tracks, base.min_tracks, base.items)

    # E[n] grows with mean_tracks towards the cap; bisect between just above min_tracks and a bound past it.
    low, high = base.min_tracks + 1e-9, max(2.0 * per_user, base.min_tracks + 1.0)
    while mean_of(high) < per_user:
        high *= 2.0
        if high > 1e9:
            raise ValueError(
                f"--scale {scale}: {base.items} tracks cap a user at {most} tracks, too few for the study's "
                f"{per_user:.1f} tracks per user on average; use a larger scale (>= 0.001)"
            )
    for _ in range(100):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if mean_of(middle) < per_user else (low, middle)
    return GeneratorConfig(**{**asdict(base), "mean_tracks": 0.5 * (low + high)})


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
class Block:
    """Rows of one block of users, as indices: user, track, plays, split code (0 train, 1 validation, 2 test)."""

    users: np.ndarray
    items: np.ndarray
    counts: np.ndarray
    split: np.ndarray


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


def generate(cfg: GeneratorConfig) -> tuple[dict[str, dict[str, np.ndarray]], LatentModel]:
    """Return {split: {user_id, count, track_id}} and the latent model behind it, all in memory (tests,
    small benchmarks); ``main`` streams the same blocks to files instead."""
    pop = population(cfg)
    parts: dict[str, list[Block]] = {name: [] for name in C.SPLITS}
    for block in sample_blocks(cfg, pop):
        for code, name in enumerate(C.SPLITS):
            mask = block.split == code
            parts[name].append(Block(block.users[mask], block.items[mask], block.counts[mask], block.split[mask]))
    out = {}
    for name, blocks in parts.items():
        out[name] = {
            C.USER_ID: pop.user_ids[np.concatenate([b.users for b in blocks])],
            C.COUNT: np.concatenate([b.counts for b in blocks]),
            C.TRACK_ID: pop.track_ids[np.concatenate([b.items for b in blocks])],
        }
    return out, pop.model


SUFFIX = {"parquet": ".parquet", "tsv": ".txt", "csv": ".csv"}


class SplitWriter:
    """One split's file, written ``ROW_GROUP_ROWS`` rows at a time, with running statistics (a count
    histogram and which users and tracks occur) so no split is ever held whole."""

    def __init__(self, path: Path, fmt: str, user_ids: object, track_ids: object):
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        if fmt not in SUFFIX:
            raise ValueError(f"format {fmt!r}: choose parquet, tsv or csv")
        self.target = path.with_suffix(SUFFIX[fmt])
        self.fmt = fmt
        self.user_ids, self.track_ids = user_ids, track_ids  # pyarrow string arrays, taken from by index
        types = {C.USER_ID: pa.string(), C.COUNT: pa.int64(), C.TRACK_ID: pa.string()}
        if fmt == "parquet":
            self.columns = list(C.RAW_COLUMNS)
            self.schema = pa.schema([(c, types[c]) for c in self.columns])
            self.writer = pq.ParquetWriter(self.target, self.schema)
        elif fmt == "tsv":
            # MSD train_triplets.txt: user \t song \t count, no header, nothing quoted.
            self.columns = [C.USER_ID, C.TRACK_ID, C.COUNT]
            self.schema = pa.schema([(c, types[c]) for c in self.columns])
            options = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
            self.writer = pacsv.CSVWriter(self.target, self.schema, write_options=options)
        else:
            self.columns = list(C.RAW_COLUMNS)
            self.schema = pa.schema([(c, types[c]) for c in self.columns])
            self.writer = pacsv.CSVWriter(self.target, self.schema)
        self.pending: list[Block] = []
        self.pending_rows = 0
        self.histogram = np.zeros(COUNT_CAP + 1, dtype=np.int64)
        self.users_seen = np.zeros(len(user_ids), dtype=bool)
        self.tracks_seen = np.zeros(len(track_ids), dtype=bool)

    def add(self, block: Block) -> None:
        self.pending.append(block)
        self.pending_rows += len(block.users)
        counts = np.bincount(block.counts, minlength=len(self.histogram))
        if len(counts) > len(self.histogram):  # write_split of data not from this generator: counts past the cap
            counts[: len(self.histogram)] += self.histogram
            self.histogram = counts
        else:
            self.histogram += counts
        self.users_seen[block.users] = True
        self.tracks_seen[block.items] = True
        if self.pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self.pending:
            return
        users = pa.array(np.concatenate([b.users for b in self.pending]))
        items = pa.array(np.concatenate([b.items for b in self.pending]))
        values = {
            C.USER_ID: self.user_ids.take(users),
            C.COUNT: pa.array(np.concatenate([b.counts for b in self.pending]).astype(np.int64)),
            C.TRACK_ID: self.track_ids.take(items),
        }
        table = pa.table([values[c] for c in self.columns], schema=self.schema)
        if self.fmt == "parquet":
            self.writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        else:
            self.writer.write_table(table)
        self.pending, self.pending_rows = [], 0

    def close(self) -> dict:
        """Flush, close; the split's statistics (as ``count_statistics`` plus users and tracks)."""
        self._flush()
        self.writer.close()
        if not self.histogram.any():
            raise ValueError(f"split file {self.target}: no rows were generated; give more users or hold-out users")
        return {
            **histogram_statistics(self.histogram),
            "users": int(self.users_seen.sum()),
            "tracks": int(self.tracks_seen.sum()),
        }


def write_split(columns: dict[str, np.ndarray], path: Path, fmt: str) -> Path:
    """Write one in-memory split (``generate``'s form) as ``fmt``; the file's path."""
    import pyarrow as pa

    user_ids, user_of_row = np.unique(columns[C.USER_ID], return_inverse=True)
    track_ids, track_of_row = np.unique(columns[C.TRACK_ID], return_inverse=True)
    writer = SplitWriter(path, fmt, pa.array(user_ids), pa.array(track_ids))
    counts = np.asarray(columns[C.COUNT])
    writer.add(Block(user_of_row, track_of_row, counts, np.zeros(len(counts), dtype=np.int8)))
    writer.close()
    return writer.target


def count_statistics(counts: np.ndarray) -> dict[str, float]:
    q25, q50, q75 = np.percentile(counts, [25, 50, 75])
    return {
        "rows": int(len(counts)),
        "mean": float(counts.mean()),
        "std": float(counts.std()),
        "min": int(counts.min()),
        "p25": float(q25),
        "median": float(q50),
        "p75": float(q75),
        "max": int(counts.max()),
    }


def histogram_statistics(histogram: np.ndarray) -> dict[str, float]:
    """``count_statistics`` from ``histogram[v]`` = rows with count v, percentiles interpolated as numpy's."""
    values = np.arange(len(histogram), dtype=np.float64)
    n = int(histogram.sum())
    mean = float((values * histogram).sum() / n)
    cumulative = np.cumsum(histogram)

    def sorted_value(i: int) -> float:  # the i-th smallest count (0-based)
        return float(np.searchsorted(cumulative, i, side="right"))

    def percentile(q: float) -> float:
        position = q / 100.0 * (n - 1)
        lo = int(np.floor(position))
        below, above = sorted_value(lo), sorted_value(min(lo + 1, n - 1))
        return below + (position - lo) * (above - below)

    present = np.flatnonzero(histogram)
    return {
        "rows": n,
        "mean": mean,
        "std": float(np.sqrt(((values - mean) ** 2 * histogram).sum() / n)),
        "min": int(present[0]),
        "p25": percentile(25),
        "median": percentile(50),
        "p75": percentile(75),
        "max": int(present[-1]),
    }


def config_for(preset: str | None = None, scale: float = 1.0, **kwargs: object) -> GeneratorConfig:
    """The config of a ``main`` call: a preset at a scale, or the flags given (``None`` = the default)."""
    given = {k: v for k, v in kwargs.items() if v is not None}
    if preset is None:
        if scale != 1.0:
            raise ValueError(f"--scale {scale} applies to a preset; add --preset study (or give the sizes)")
        return GeneratorConfig(**given)  # type: ignore[arg-type]
    if preset != "study":
        raise ValueError(f"--preset {preset!r}: choose one of {', '.join(PRESETS)}")
    return study_config(scale, **given)


def main(out: str, fmt: str = "parquet", preset: str | None = None, scale: float = 1.0, **kwargs: object) -> dict:
    """Generate a data set into ``out`` (streamed, a row group at a time); its manifest."""
    started = time.perf_counter()
    cfg = config_for(preset, scale, **kwargs)
    pop = population(cfg)
    import pyarrow as pa

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    user_ids, track_ids = pa.array(pop.user_ids), pa.array(pop.track_ids)
    del pop.user_ids, pop.track_ids  # the numpy copies are 4x the arrow ones at the full size
    writers = {name: SplitWriter(out_dir / name, fmt, user_ids, track_ids) for name in C.SPLITS}
    for block in sample_blocks(cfg, pop):
        for code, name in enumerate(C.SPLITS):
            mask = block.split == code
            writers[name].add(Block(block.users[mask], block.items[mask], block.counts[mask], block.split[mask]))
    manifest: dict = {"config": asdict(cfg), "format": fmt, "files": {}, "stats": {}, "bytes": {}}
    if preset:
        manifest["preset"] = {"name": preset, "scale": scale, "expected_train_rows": round(expected_train_rows(cfg))}
    for name, writer in writers.items():
        manifest["stats"][name] = writer.close()
        manifest["files"][name] = str(writer.target)
        manifest["bytes"][name] = writer.target.stat().st_size
    manifest["seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def add_arguments(p: argparse.ArgumentParser) -> None:
    defaults = GeneratorConfig()
    p.add_argument("--out", required=True, help="output directory for train/validation/test files")
    p.add_argument(
        "--format",
        dest="fmt",
        choices=["parquet", "tsv", "csv"],
        default="parquet",
        help="parquet (the study's schema), tsv (MSD train_triplets.txt) or csv with header",
    )
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default=None,
        help=f"study: the study's size ({STUDY_USERS:,} users, {STUDY_ITEMS:,} tracks, ~{STUDY_TRAIN_ROWS:,} train "
        f"plays, {STUDY_HOLDOUT_USERS:,} hold-out users); sets --users, --items, --holdout-users, --mean-tracks",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="with --preset: this fraction of its users, tracks, hold-out users and train plays (default 1)",
    )
    # Size flags default to None so that a preset can tell given flags from defaults.
    p.add_argument("--users", type=int, default=None, help=f"number of users (default {defaults.users})")
    p.add_argument("--items", type=int, default=None, help=f"number of tracks (default {defaults.items})")
    p.add_argument(
        "--holdout-users",
        type=int,
        default=None,
        help=f"users whose histories are partly hidden (half validation, half test; default {defaults.holdout_users})",
    )
    p.add_argument(
        "--holdout-train-fraction",
        type=float,
        default=defaults.holdout_train_fraction,
        help="share of a hold-out user's history kept in train",
    )
    p.add_argument(
        "--mean-tracks",
        type=float,
        default=None,
        help=f"mean distinct tracks per user (power-law tail; default {defaults.mean_tracks:g})",
    )
    p.add_argument("--min-tracks", type=int, default=defaults.min_tracks, help="fewest tracks per user")
    p.add_argument("--factors", type=int, default=defaults.factors, help="latent dimensions of the truth")
    p.add_argument("--genres", type=int, default=defaults.genres, help="taste clusters")
    p.add_argument(
        "--popularity-exponent",
        type=float,
        default=defaults.popularity_exponent,
        help="weight of track popularity in what users play",
    )
    p.add_argument(
        "--taste-temperature",
        type=float,
        default=defaults.taste_temperature,
        help="lower = stronger personal taste",
    )
    p.add_argument("--seed", type=int, default=defaults.seed, help="random seed (same seed, same data)")
    p.add_argument(
        "--drop",
        type=int,
        default=defaults.drop,
        help="weekly drop number: same listeners, tracks and ids as drop 0, every play sampled anew",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return p.parse_args(argv)


def print_manifest(manifest: dict) -> None:
    for name, stats in manifest["stats"].items():
        print(
            f"{name:>10}: {stats['rows']:>10,} rows  {stats['users']:>9,} users  {stats['tracks']:>7,} tracks  "
            f"{manifest['bytes'][name] / 1e6:>8.1f} MB -> {manifest['files'][name]}"
        )
    print(f"{'':>10}  written in {manifest['seconds']:.1f} s")


if __name__ == "__main__":
    print_manifest(main(**vars(parse_args())))
