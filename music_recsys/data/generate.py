"""Generate MSD-like play-count triplets with real latent taste structure.

The Million Song Dataset taste profile cannot be downloaded here, so this CLI writes data with the
same shape: ``user_id`` (40 hex chars), ``count`` (plays, integer >= 1), ``track_id`` (``TR`` + 16
chars). Counts follow the study's statistics (median 1, 75th percentile 3, mean ~2.9, std ~6.5, capped
at 9667); user activity and track popularity are power laws; which tracks a user plays, and how often,
comes from a genre-clustered latent factor model, so a factor model can beat a popularity ranking.

Splits follow the study: train holds the full histories of most users plus part of the histories of the
hold-out users; validation and test hold the rest of those histories (hold-out users are divided
between validation and test).

    music-recsys generate --users 3000 --items 1500 --out data/msd_like
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from music_recsys import constants as C

# Count model: P(count = 1) = P1; otherwise 2 + floor(Lomax(shape, scale)), capped like the study's max.
COUNT_P1 = 0.55
COUNT_SHAPE = 2.3
COUNT_SCALE = 5.0
COUNT_CAP = 9667


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


def user_activity(cfg: GeneratorConfig, rng: np.random.Generator) -> np.ndarray:
    """Distinct tracks per user: min_tracks + a Pareto tail with the requested mean."""
    shape = 1.8
    scale = (cfg.mean_tracks - cfg.min_tracks) * (shape - 1.0)
    extra = scale * (rng.random(cfg.users) ** (-1.0 / shape) - 1.0)
    cap = max(cfg.min_tracks, cfg.items // 2)
    return np.minimum(cfg.min_tracks + np.floor(extra), cap).astype(np.int64)


def assign_splits(
    user_of_row: np.ndarray, n_users: int, holdout_users: int, holdout_train_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Split code per row (0 train, 1 validation, 2 test) with the study's shape.

    ``holdout_users`` random users are split between validation and test; each keeps a random
    ``holdout_train_fraction`` of its rows in train (at least one) and hides the rest (at least one).
    """
    if not 2 <= holdout_users <= n_users:
        raise ValueError(f"holdout_users={holdout_users} must be between 2 and the number of users ({n_users})")
    holdout = rng.choice(n_users, size=holdout_users, replace=False)
    split_of_user = np.zeros(n_users, dtype=np.int8)  # 0 = train only
    split_of_user[holdout[: holdout_users // 2]] = 1  # validation users
    split_of_user[holdout[holdout_users // 2 :]] = 2  # test users
    hidden = (split_of_user[user_of_row] > 0) & (rng.random(len(user_of_row)) >= holdout_train_fraction)
    order = np.argsort(user_of_row, kind="stable")
    bounds = np.searchsorted(user_of_row[order], np.arange(n_users + 1))
    for u in holdout:
        rows = order[bounds[u] : bounds[u + 1]]
        if len(rows) < 2:
            raise ValueError(f"hold-out user {u} has {len(rows)} rows; hold-out users need at least 2")
        if hidden[rows].all():
            hidden[rows[0]] = False
        if not hidden[rows].any():
            hidden[rows[-1]] = True
    return np.where(hidden, split_of_user[user_of_row], 0)


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


def _choose_by_candidates(
    cfg: GeneratorConfig, model: LatentModel, n_tracks: np.ndarray, rng: np.random.Generator, oversample: int = 16
):
    """The large-scale sampler: per user, ``oversample * n`` candidates drawn by popularity^exponent,
    then the n best by taste / temperature + Gumbel noise (distinct tracks, best first)."""
    popularity = np.exp(cfg.popularity_exponent * (model.item_log_popularity - model.item_log_popularity.max()))
    cdf = np.cumsum(popularity / popularity.sum())
    cdf[-1] = 1.0
    user_rows, item_rows, count_rows = [], [], []
    block = max(1, 4_000_000 // (oversample * int(n_tracks.mean()) + 1))
    for start in range(0, cfg.users, block):
        users = np.arange(start, min(cfg.users, start + block))
        n = n_tracks[users]
        m = np.minimum(oversample * n, cfg.items)
        owner = np.repeat(users, m)
        cand = np.minimum(np.searchsorted(cdf, rng.random(int(m.sum()))), cfg.items - 1)
        score = np.einsum("ij,ij->i", model.user_factors[owner], model.item_factors[cand]) / cfg.taste_temperature
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
        user_rows.append(owner)
        item_rows.append(cand)
        count_rows.append(counts)
    return np.concatenate(user_rows), np.concatenate(item_rows), np.concatenate(count_rows)


def generate(cfg: GeneratorConfig) -> tuple[dict[str, dict[str, np.ndarray]], LatentModel]:
    """Return {split: {user_id, count, track_id}} and the latent model behind it."""
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    model = latent_model(cfg, rng)
    ids = np.random.default_rng([cfg.seed, 7])  # the same ids in every drop
    user_ids = _hex_ids(ids, cfg.users, 20)
    track_ids = _track_ids(ids, cfg.items)
    if cfg.drop:
        rng = np.random.default_rng([cfg.seed, 1000 + cfg.drop])
    n_tracks = user_activity(cfg, rng)
    if cfg.users * cfg.items <= EXACT_SAMPLING_LIMIT:
        users, items, counts = _choose_exact(cfg, model, n_tracks, rng)
    else:
        users, items, counts = _choose_by_candidates(cfg, model, n_tracks, rng)

    split = assign_splits(users, cfg.users, cfg.holdout_users, cfg.holdout_train_fraction, rng)
    out = {}
    for code, name in enumerate(C.SPLITS):
        mask = split == code
        out[name] = {
            C.USER_ID: user_ids[users[mask]],
            C.COUNT: counts[mask],
            C.TRACK_ID: track_ids[items[mask]],
        }
    return out, model


def write_split(columns: dict[str, np.ndarray], path: Path, fmt: str) -> Path:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pa.table({c: columns[c] for c in C.RAW_COLUMNS})
    if fmt == "parquet":
        target = path.with_suffix(".parquet")
        pq.write_table(table, target)
    elif fmt == "tsv":
        # MSD train_triplets.txt: user \t song \t count, no header.
        target = path.with_suffix(".txt")
        with open(target, "w", encoding="utf-8") as fh:
            for u, c, t in zip(columns[C.USER_ID], columns[C.COUNT], columns[C.TRACK_ID], strict=True):
                fh.write(f"{u}\t{t}\t{c}\n")
    elif fmt == "csv":
        target = path.with_suffix(".csv")
        pacsv.write_csv(table, target)
    else:
        raise ValueError(f"format {fmt!r}: choose parquet, tsv or csv")
    return target


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


def main(out: str, fmt: str = "parquet", **kwargs: object) -> dict:
    cfg = GeneratorConfig(**kwargs)  # type: ignore[arg-type]
    splits, _ = generate(cfg)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"config": asdict(cfg), "format": fmt, "files": {}, "stats": {}}
    for name, columns in splits.items():
        target = write_split(columns, out_dir / name, fmt)
        manifest["files"][name] = str(target)
        manifest["stats"][name] = {
            **count_statistics(columns[C.COUNT]),
            "users": int(len(np.unique(columns[C.USER_ID]))),
            "tracks": int(len(np.unique(columns[C.TRACK_ID]))),
        }
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
    p.add_argument("--users", type=int, default=defaults.users, help="number of users")
    p.add_argument("--items", type=int, default=defaults.items, help="number of tracks")
    p.add_argument(
        "--holdout-users",
        type=int,
        default=defaults.holdout_users,
        help="users whose histories are partly hidden (half validation, half test)",
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
        default=defaults.mean_tracks,
        help="mean distinct tracks per user (power-law tail)",
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
            f"{name:>10}: {stats['rows']:>9,} rows  {stats['users']:>7,} users  {stats['tracks']:>7,} tracks  "
            f"-> {manifest['files'][name]}"
        )


if __name__ == "__main__":
    print_manifest(main(**vars(parse_args())))
