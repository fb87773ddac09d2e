"""Benchmark: Annoy vs exact top-k at the study's scale (385K items × rank 20), measured side by side.

Item factors are synthetic but shaped like nonnegative ALS factors: clustered directions (genres) and
heavy-tailed norms (popularity). Runs the same sweep as the DAG's fast_search stage and appends the
frontier and the operating point to ``bench/RESULTS.md``.

    .venv/bin/python bench/fast_search.py --items 385000 --queries 200
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results import append_section  # noqa: E402
from music_recsys.evaluation.search import ANNOY_METRICS, operating_point, sweep  # noqa: E402


def clustered_factors(n_items: int, n_queries: int, rank: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.abs(rng.normal(size=(50, rank)))
    genre = rng.integers(0, 50, size=n_items)
    directions = np.abs(centers[genre] + 0.5 * rng.normal(size=(n_items, rank)))
    norms = rng.lognormal(mean=0.0, sigma=0.6, size=(n_items, 1))
    items = (directions / np.linalg.norm(directions, axis=1, keepdims=True) * norms).astype(np.float32)
    taste = rng.integers(0, 50, size=n_queries)
    queries = np.abs(centers[taste] + 0.5 * rng.normal(size=(n_queries, rank))).astype(np.float32)
    return items, queries


def main(
    items: int,
    queries: int,
    rank: int,
    ks: list[int],
    trees: list[int],
    search_ks: list[int],
    target: float,
    seed: int,
    write: bool,
) -> None:
    item_vectors, query_vectors = clustered_factors(items, queries, rank, seed)
    started = time.perf_counter()
    rows = sweep(item_vectors, query_vectors, ks, trees, search_ks, seed, workdir=REPO / "data")
    elapsed = time.perf_counter() - started
    lines = []
    for r in sorted(rows, key=lambda r: (r.k, r.metric, r.n_trees, r.candidates, r.search_k)):
        lines.append(
            f"| {r.k} | {r.metric} | {r.n_trees} | {r.search_k} | {r.candidates} | {r.recall:.3f} | "
            f"{r.qps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.build_seconds:.1f} |"
        )
    points = []
    for k in ks:
        for metrics in (ANNOY_METRICS, ("dot",), ("angular_ip",)):
            p = operating_point(rows, k, target, metrics)
            label = "+".join(metrics)
            if p["found"]:
                points.append(
                    f"- k={k}, {label}: {p['metric']} {p['n_trees']} trees, search_k {p['search_k']}, "
                    f"{p['candidates']} candidates: recall {p['recall']:.3f}, {p['qps']:.0f} q/s = "
                    f"**{p['speedup_vs_exact']:.2f}x** single-query exact ({p['exact_qps']:.0f} q/s); "
                    f"batched exact {p['exact_batched_qps']:.0f} q/s"
                )
            else:
                points.append(
                    f"- k={k}, {label}: {p['message']} (best recall {p['best_recall']:.3f}); "
                    f"exact {p['exact_qps']:.0f} q/s single, {p['exact_batched_qps']:.0f} q/s batched"
                )
    print("\n".join(points))
    if write:
        append_section(
            f"Fast search at {items:,} items × rank {rank}",
            f"{queries} queries, one core (annoy builds n_jobs=1), {platform.machine()}, sweep took "
            f"{elapsed:.0f} s. Synthetic clustered nonnegative factors. Operating points at recall "
            f">= {target}:\n\n" + "\n".join(points) + "\n\n"
            "| k | metric | trees | search_k | candidates | recall | q/s | p50 ms | p99 ms | build s |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n",
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=385_000, help="catalogue size")
    p.add_argument("--queries", type=int, default=200, help="query users")
    p.add_argument("--rank", type=int, default=20, help="factor dimension")
    p.add_argument("--ks", type=int, nargs="+", default=[500, 50], help="list lengths")
    p.add_argument("--trees", type=int, nargs="+", default=[1, 5, 10, 30], help="Annoy n_trees values")
    p.add_argument(
        "--search-ks",
        type=int,
        nargs="+",
        default=[100, 500, 1000, 5000, 10000, 50000, 100000, 500000],
        help="Annoy search_k values",
    )
    p.add_argument("--target", type=float, default=0.9, help="recall the operating point must reach")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--no-write", dest="write", action="store_false", help="do not append to bench/RESULTS.md")
    main(**vars(p.parse_args()))
