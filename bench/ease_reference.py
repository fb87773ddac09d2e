"""A ceiling for the search on real data: EASE (Steck 2019, closed-form item-item) on MovieLens-100K, split,
scored and selected exactly as the DAG does it (bench/movielens.py's split and seed; hold-out tracks unseen
in train dropped as the index stage drops them; played tracks excluded; top-k; the selection metric is
validation MAP), for every lambda of a grid and two inputs (binary, log1p of the count). Prints one table
and appends it to bench/RESULTS.md; `bench/adaptive_search.py` gives the grid's and the adaptive search's
figures on the same split.

    .venv/bin/python bench/ease_reference.py [--k 100]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.movielens import fetch_ml100k, ml100k_splits  # noqa: E402
from bench.results import append_section  # noqa: E402
from music_recsys import constants as C  # noqa: E402
from music_recsys.evaluation.metrics import ranking_metrics  # noqa: E402
from music_recsys.evaluation.topk import top_k  # noqa: E402

LAMBDAS = [10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0]


def ease_weights(x: np.ndarray, lam: float) -> np.ndarray:
    """B = I - P diagMat(1 / diag(P)), P = (XᵀX + λI)⁻¹; zero diagonal."""
    gram = x.T @ x
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)
    b[np.diag_indices_from(b)] = 0.0
    return b


def scored(x: np.ndarray, b: np.ndarray, played: np.ndarray, held: dict[int, tuple], k: int) -> dict[str, float]:
    """Mean ranking metrics of the held-out users (rows of ``x``), played tracks excluded."""
    rows = np.fromiter(held, dtype=np.int64)
    # The evaluation's top-k kernel: scores = X_u · B, i.e. user vectors X_u against item vectors Bᵀ.
    lists = top_k(x[rows], b.T, k, exclude=[np.flatnonzero(played[u]) for u in rows])
    per_user = [ranking_metrics(lists[i], *held[int(u)], k) for i, u in enumerate(rows)]
    return {name: float(np.mean([m[name] for m in per_user])) for name in ("map", "precision_at_k", "ndcg_at_k")}


def main(k: int, holdout_users: int, seed: int, cache: Path, write: bool) -> None:
    splits = ml100k_splits(fetch_ml100k(cache), holdout_users=holdout_users, seed=seed)
    train = splits["train"]
    users, user_of = np.unique(train[C.USER_ID], return_inverse=True)
    items, item_of = np.unique(train[C.TRACK_ID], return_inverse=True)
    counts = np.zeros((len(users), len(items)))
    np.add.at(counts, (user_of, item_of), train[C.COUNT])
    played = counts > 0
    held_out = {}
    for split in ("validation", "test"):
        part = splits[split]
        known = np.isin(part[C.TRACK_ID], items) & np.isin(part[C.USER_ID], users)
        u = np.searchsorted(users, part[C.USER_ID][known])
        i = np.searchsorted(items, part[C.TRACK_ID][known])
        c = part[C.COUNT][known]
        held = {}
        for user in np.unique(u):
            mine = u == user
            order = np.argsort(i[mine])
            held[int(user)] = (i[mine][order], c[mine][order])
        held_out[split] = held
    head = (
        f"MovieLens-100K as bench/movielens.py splits it ({holdout_users} hold-out users, seed {seed}): "
        f"{len(users)} users × {len(items)} items, {int(played.sum())} train pairs; k = {k}; played tracks "
        "excluded; hold-out tracks unseen in train dropped (as the index stage does); numpy, exact inverse."
    )
    lines = ["| input | lambda | val MAP | test MAP | test precision@k | test NDCG@k |", "|---|---|---|---|---|---|"]
    best = None
    for name, x in (("binary", played.astype(np.float64)), ("log1p", np.log1p(counts))):
        for lam in LAMBDAS:
            b = ease_weights(x, lam)
            val = scored(x, b, played, held_out["validation"], k)
            test = scored(x, b, played, held_out["test"], k)
            lines.append(
                f"| {name} | {lam:g} | {val['map']:.4f} | {test['map']:.4f} | {test['precision_at_k']:.4f} "
                f"| {test['ndcg_at_k']:.4f} |"
            )
            if best is None or val["map"] > best[0]:
                best = (val["map"], test["map"], name, lam)
    lines.append(f"\nBest on validation: {best[2]}, lambda {best[3]:g}: val MAP {best[0]:.4f}, test MAP {best[1]:.4f}.")
    body = head + "\n\n" + "\n".join(lines)
    print(body)
    if write:
        append_section("EASE on MovieLens-100K: a ceiling for the search", body)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=100, help="list length (the bench's DAG runs use 100)")
    p.add_argument("--holdout-users", type=int, default=200, help="as bench/movielens.py")
    p.add_argument("--seed", type=int, default=0, help="split seed, as bench/movielens.py")
    p.add_argument("--cache", type=Path, default=REPO / "data" / "cache", help="where the recbole wheel is kept")
    p.add_argument("--no-write", dest="write", action="store_false", help="do not append to bench/RESULTS.md")
    main(**vars(p.parse_args()))
