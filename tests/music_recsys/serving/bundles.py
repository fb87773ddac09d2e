"""What the serving tests share: the small hand-made catalogue, how they write it as a bundle, a locator
the test controls (``Switch``) and ``wait_for``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from music_recsys.store import recommendations as recs
from music_recsys.store.bundle import write_bundle

N_USERS, N_TRACKS, RANK = 30, 60, 4
USERS = [f"u{i:02d}" for i in range(N_USERS)]
TRACKS = [f"t{i:02d}" for i in range(N_TRACKS)]
PARAMS = {
    "rank": RANK,
    "reg_param": 0.1,
    "alpha": 2.0,
    "transform": "none",
    "nonnegative": False,
    "drop_threshold": 0,
    "max_iter": 10,
    "seed": 42,
}
ANNOY = {
    "metric": "angular_ip",
    "n_trees": 5,
    "search_k": 1000,
    "candidates": 40,
    "k": 10,
    "recall": 1.0,
    "qps": 1.0,
    "p50_ms": 0.1,
    "p99_ms": 0.2,
    "exact_qps": 1.0,
}


def make_arrays(seed: int) -> dict[str, np.ndarray]:
    """Random factors, t11 = 2 x t10 (cosine 1), user i played tracks i, i+1, ..., i+4 (mod 60)."""
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(N_TRACKS, RANK)).astype(np.float32)
    items[11] = 2.0 * items[10]
    played = [np.sort((np.arange(5) + u) % N_TRACKS).astype(np.int32) for u in range(N_USERS)]
    return {
        "user_factors": rng.normal(size=(N_USERS, RANK)).astype(np.float32),
        "item_factors": items,
        "played_indptr": np.arange(0, 5 * N_USERS + 1, 5, dtype=np.int64),
        "played_indices": np.concatenate(played),
        "popularity": (rng.permutation(N_TRACKS) + 1).astype(np.float32),
    }


def write_test_bundle(
    folder: Path, arrays: dict[str, np.ndarray], version: str, annoy: dict | None, params: dict | None = None
) -> Path:
    """``arrays`` as bundle ``folder/version`` with a card like ``publish`` writes (users u00.., tracks t00..)."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for key, ids in (("users", USERS), ("tracks", TRACKS)):
        labels[key] = folder / f"{version}-{key}-labels.parquet"
        pq.write_table(pa.table({"id": ids}), labels[key])
    card = {
        "version": version,
        "run_id": f"manual__{version}",
        "trial_id": "r4_reg0.1_a2_none",
        "logical_date": "2026-11-30T03:00:00+00:00",
        "created_at": "2026-11-30T03:30:00+00:00",
        "params": params or PARAMS,
        "selection_metric": "map",
        "k": 10,
        "exclude_seen": True,
        "metrics": {"validation": {"map": 0.2}, "test": {"map": 0.25}},
        "popularity": {"validation": {"map": 0.1}, "test": {"map": 0.1}},
        "data": {"hash": "0" * 16},
        "n_users": N_USERS,
        "n_items": N_TRACKS,
        "libraries": {},
    }
    return write_bundle(folder / version, arrays, labels, card, annoy, seed=3)


class Switch:
    """A locator whose answer the test sets: None (no champion), (version, folder) or an exception."""

    def __init__(self, found=None):
        self.found = found

    def __call__(self):
        if isinstance(self.found, Exception):
            raise self.found
        return self.found


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {condition.__doc__ or condition}")
        time.sleep(0.01)


def precompute(bundle: Path, k: int) -> Path:
    """What the batch job writes, without Spark: its mapInPandas body over every user, in two part files."""
    n_users = N_USERS
    folder = recs.recommendations_dir(bundle)
    folder.mkdir()
    for part, users in enumerate(np.array_split(np.arange(n_users), 2)):
        frames = list(recs.recommend_batches(iter([pd.DataFrame({"id": users})]), str(bundle), k))
        table = pa.Table.from_pandas(pd.concat(frames), schema=recs.arrow_schema(), preserve_index=False)
        pq.write_table(table, folder / f"part-{part:05d}.parquet")
    rows = int(recs.expected_lengths(bundle, k).sum())
    recs.record_in_card(bundle, recs.card_entry(bundle, k, rows, n_users, 0, 0, 0.0))
    return bundle


def varied_arrays(seed: int) -> dict[str, np.ndarray]:
    """Random factors; each user played 1 to 7 random tracks."""
    rng = np.random.default_rng(seed)
    played = [np.sort(rng.choice(N_TRACKS, size=int(rng.integers(1, 8)), replace=False)) for _ in range(N_USERS)]
    return {
        "user_factors": rng.normal(size=(N_USERS, RANK)).astype(np.float32),
        "item_factors": rng.normal(size=(N_TRACKS, RANK)).astype(np.float32),
        "played_indptr": np.cumsum([0, *map(len, played)]).astype(np.int64),
        "played_indices": np.concatenate(played).astype(np.int32),
        "popularity": (rng.permutation(N_TRACKS) + 1).astype(np.float32),
    }
