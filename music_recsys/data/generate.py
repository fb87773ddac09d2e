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
from dataclasses import asdict
from pathlib import Path

import numpy as np

from music_recsys import constants as C
from music_recsys.data.sampling import (
    ACTIVITY_SHAPE,
    GeneratorConfig,
    LatentModel,
    activity_cap,
    population,
    sample_blocks,
)
from music_recsys.data.writers import Block, SplitWriter

# The study's data set: the MSD taste profile's train plays as the study describes them (issue 23).
STUDY_USERS = 1_100_000
STUDY_ITEMS = 385_000
STUDY_TRAIN_ROWS = 48_000_000
STUDY_HOLDOUT_USERS = 10_000
PRESETS = ("study",)
# The flags a preset decides; giving one with --preset is refused rather than silently overridden.
SIZE_FIELDS = ("users", "items", "holdout_users", "mean_tracks")


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
