"""Benchmark: the exact top-k kernel before and after the sampled floor (issue 23), side by side in one run.

``music_recsys.evaluation.topk`` is the one exact kernel behind evaluation, batch recommendations, the
exact serving endpoint and the fast-search ground truth. Before, each row of a score block was cut with
``argpartition`` over the whole catalogue; after, a floor from a strided sample of the row leaves a few
times k candidates and only those are partitioned and sorted. This runs both — the old module read from
git at ``--before`` — on the same factors, alternately, and checks they return the same lists:
``top_k_blocks`` with played tracks excluded (blocks of users, as the batch job and the evaluation run it)
and ``top_k_one`` (one query, as the exact endpoint runs it).

    .venv/bin/python bench/topk_kernel.py                      # 385K/77K/20K tracks, k = 50 and 500
    .venv/bin/python bench/topk_kernel.py --items 20000 --users 200 --repeats 1 --no-write   # a smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results import append_section  # noqa: E402
from music_recsys.evaluation import topk as after  # noqa: E402

BEFORE = "7042104"  # the last commit with the argpartition cut


def module_at(commit: str, path: str = "music_recsys/evaluation/topk.py"):
    """``path`` as it was at ``commit``, imported as a module of its own."""
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO, check=True, capture_output=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="topk-before-"))
    (folder / "topk_before.py").write_bytes(source)
    spec = importlib.util.spec_from_file_location("topk_before", folder / "topk_before.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def factors(n_users: int, n_items: int, rank: int, played: int, seed: int):
    """ALS-like factors (non-negative-ish, a popularity skew in the item norms) and played lists."""
    rng = np.random.default_rng(seed)
    users = np.abs(rng.normal(size=(n_users, rank))).astype(np.float32)
    items = (rng.normal(size=(n_items, rank)) * rng.pareto(2.0, size=(n_items, 1))).astype(np.float32)
    exclude = [rng.choice(n_items, size=min(played, n_items - 1), replace=False) for _ in range(n_users)]
    return users, items, exclude


def time_blocks(module, users, items, k, exclude) -> tuple[float, list[np.ndarray]]:
    started = time.perf_counter()
    lists = [top for block in module.top_k_blocks(users, items, k, exclude=exclude) for top in block.top]
    return time.perf_counter() - started, lists


def time_queries(module, users, items, k, exclude) -> tuple[float, list[np.ndarray]]:
    started = time.perf_counter()
    lists = [module.top_k_one(items, u, k, e)[0] for u, e in zip(users, exclude, strict=True)]
    return time.perf_counter() - started, lists


def measure(before, args) -> list[dict]:
    rows = []
    for n_items in args.items:
        users, items, exclude = factors(args.users, n_items, args.rank, args.played, args.seed)
        for k in args.k:
            forms = (("top_k_blocks", time_blocks, args.users), ("top_k_one", time_queries, args.queries))
            for label, runner, n in forms:
                u, e = users[:n], exclude[:n]
                runner(after, u[:50], items, k, e[:50])  # warm caches and lazy imports, both sides
                runner(before, u[:50], items, k, e[:50])
                times = {"before": [], "after": []}
                same = True
                for _ in range(args.repeats):  # alternately, so drift hits both sides alike
                    tb, lb = runner(before, u, items, k, e)
                    ta, la = runner(after, u, items, k, e)
                    times["before"].append(tb)
                    times["after"].append(ta)
                    same = same and all(np.array_equal(x, y) for x, y in zip(lb, la, strict=True))
                b, a = statistics.median(times["before"]), statistics.median(times["after"])
                row = {"items": n_items, "k": k, "form": label, "users": n, "before": b, "after": a, "same": same}
                print(row, flush=True)
                rows.append(row)
    return rows


def report(rows: list[dict], args) -> str:
    lines = [
        f"{platform.machine()}, {os.cpu_count()} cpus, numpy {np.__version__}, one process (numpy's BLAS threads "
        f"for the products); rank {args.rank}, {args.played} played tracks excluded per user, median of "
        f"{args.repeats} alternating runs; before = `music_recsys/evaluation/topk.py` at {args.before} "
        f"({'`argpartition` of every row' if args.before == BEFORE else 'see the section'}), after = the "
        "kernel as it is now (the sampled floor). `top_k_blocks`: users in the package's "
        "block size, as the batch job and the evaluation run it; `top_k_one`: one query at a time, as the "
        "exact serving endpoint does.",
        "",
        "| tracks | k | form | before ms per 1,000 users | after | **before / after** | same lists |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = 1000 / r["users"] * 1000
        lines.append(
            f"| {r['items']:,} | {r['k']} | `{r['form']}` | {r['before'] * per:,.0f} | {r['after'] * per:,.0f} | "
            f"**{r['before'] / r['after']:.1f}x** | {'yes' if r['same'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, nargs="+", default=[385_000, 77_000, 20_000], help="catalogue sizes")
    p.add_argument("--k", type=int, nargs="+", default=[50, 500], help="list lengths (batch_k 50, evaluation 500)")
    p.add_argument("--users", type=int, default=2000, help="users per timed top_k_blocks run")
    p.add_argument("--queries", type=int, default=300, help="queries per timed top_k_one run")
    p.add_argument("--rank", type=int, default=20)
    p.add_argument("--played", type=int, default=44, help="played tracks excluded per user (the study's mean)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--before", default=BEFORE, help=f"commit of the kernel to compare with (default {BEFORE}: argpartition)"
    )
    p.add_argument("--no-write", dest="write", action="store_false", help="do not append to bench/RESULTS.md")
    return p.parse_args(argv)


def main(args: argparse.Namespace, before=None) -> int:
    """Time ``before`` (default: the kernel at commit ``--before``, read from git) against today's kernel."""
    rows = measure(before or module_at(args.before), args)
    text = report(rows, args)
    print(text)
    if args.write:
        title = (
            "Exact top-k kernel: argpartition of every row vs the sampled floor"
            if args.before == BEFORE
            else f"Exact top-k kernel: {args.before} vs now"
        )
        append_section(title, text)
    return 0 if all(r["same"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main(parse_args()))
