"""Adaptive search vs the default grid, side by side in one run, on MovieLens-100K and on the generator.

For each data set the DAG runs twice through ``dag.test`` (every task in this process, one after the
other): first ``search: grid`` with the default grid (ranks × regParams × alphas × transforms of
``music_recsys.constants``), then ``search: adaptive`` with ``search_budget_minutes`` set to the grid
run's fit-stage wall time (first fit start to last fit end), so the search never gets more time than the
grid's fits had. Both runs use the same ``k``, seed, ``fits_per_task`` and a results store of their own
(a fresh data root per invocation: no champion or earlier search seeds either run). Reported per run:
best validation MAP, its test MAP, fits, fit-stage wall time and the whole run's wall time; appended to
``bench/RESULTS.md``.

MovieLens-100K comes from the ``recbole`` wheel as in ``bench/movielens.py`` (ratings as play counts).

    .venv/bin/python bench/adaptive_search.py --fits-per-task 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.movielens import convert, fetch_ml100k  # noqa: E402
from bench.results import append_section  # noqa: E402
from harness.demo import demo_env  # noqa: E402

FIT_STAGES = ("screen_round_1", "screen_round_2", "fit")


def fit_stage_seconds(dagrun) -> float:
    """Wall seconds from the first fit (any round) starting to the last one ending."""
    tis = [ti for ti in dagrun.get_task_instances() if ti.task_id in FIT_STAGES and ti.start_date and ti.end_date]
    return (max(ti.end_date for ti in tis) - min(ti.start_date for ti in tis)).total_seconds()


def run_once(conf: dict) -> dict:
    from harness.airflow import run_dag, run_summary
    from music_recsys.pipeline.search import read_rounds

    started = time.perf_counter()
    dagrun = run_dag(conf)
    wall = time.perf_counter() - started
    if not str(dagrun.state).endswith("success"):
        raise RuntimeError(f"DAG run {dagrun.run_id} ended {dagrun.state}; see the task logs above")
    summary = run_summary(dagrun.run_id)
    rounds = read_rounds(summary["run_dir"])
    fits = sum(len(r["trials"]) for r in rounds) if rounds else len(json.loads(
        (Path(summary["run_dir"]) / "plan.json").read_text())["trials"])  # fmt: skip
    return {
        "run_id": dagrun.run_id,
        "best": summary["best_trial_id"],
        "val_map": summary["best_validation"]["map"],
        "test_map": summary["best_test"]["map"],
        "pop_val_map": summary["popularity_validation"]["map"],
        "fits": fits,
        "rounds": [len(r["trials"]) for r in rounds],
        "fit_wall": fit_stage_seconds(dagrun),
        "wall": wall,
    }


def data_sets(root: Path, which: list[str], seed: int, gen_users: int, gen_items: int) -> dict[str, dict]:
    out = {}
    if "movielens" in which:
        stats = convert(fetch_ml100k(REPO / "data" / "cache"), root / "movielens", holdout_users=200, seed=seed)
        out["MovieLens-100K"] = {"folder": "movielens", "rows": stats["train"]["rows"]}
    if "generated" in which:
        from music_recsys.data import generate

        manifest = generate.main(
            out=str(root / "generated"), users=gen_users, items=gen_items, holdout_users=gen_users // 10, seed=seed
        )
        rows = manifest["stats"]["train"]["rows"]
        out[f"generated {gen_users:,} × {gen_items:,}"] = {"folder": "generated", "rows": rows}
    return out


def main(data: list[str], k: int, seed: int, fits_per_task: int, max_fits: int | None, gen_users: int, gen_items: int,
         write: bool, budget_minutes: float, grid_json: str) -> None:  # fmt: skip
    max_fits_param = {"search_max_fits": max_fits} if max_fits else {}  # else RunConfig's default
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    env = demo_env()
    env["RECSYS_DATA_ROOT"] = str(REPO / "data" / f"bench_adaptive_{stamp}")  # a results store of its own
    os.environ.update(env)
    root = Path(env["RECSYS_DATA_ROOT"])
    sets = data_sets(root, data, seed, gen_users, gen_items)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, env=env, stdout=subprocess.DEVNULL)
    started = time.perf_counter()
    lines = []
    for name, info in sets.items():
        base = {
            **{f"{s}_path": f"{info['folder']}/{s}.parquet" for s in ("train", "validation", "test")},
            "k": k,
            "seed": seed,
            "fits_per_task": fits_per_task,
            "annoy_trees": [1, 5, 10],
            "annoy_search_k": [100, 1000, 10000],
            "on_data_drift": "warn",
            "promote": False,  # no champion: the adaptive run must not start from the grid's best point
            "batch_k": 0,
        }
        if budget_minutes:  # the grid's figures from an earlier invocation (--grid-json)
            grid = json.loads(Path(grid_json).read_text())[name]
            budget = budget_minutes
        else:
            grid = run_once({**base, "search": "grid"})
            print(name, "grid", json.dumps(grid), flush=True)
            budget = grid["fit_wall"] / 60.0
        adaptive = run_once({**base, "search": "adaptive", "search_budget_minutes": round(budget, 2), **max_fits_param})
        print(name, "adaptive", json.dumps(adaptive), flush=True)
        for mode, r in (("grid (default, 54 points)", grid), (f"adaptive, budget {budget:.1f} min", adaptive)):
            lines.append(
                f"| {name} | {mode} | {r['best']} | {r['val_map']:.4f} | {r['test_map']:.4f} | {r['fits']}"
                + (f" ({' + '.join(map(str, r['rounds']))})" if r["rounds"] else "")
                + f" | {r['fit_wall']:.0f} | {r['wall']:.0f} |"
            )
        lines.append(
            f"| {name} | adaptive / grid | | **{adaptive['val_map'] / grid['val_map']:.3f}x** | "
            f"**{adaptive['test_map'] / grid['test_map']:.3f}x** | | "
            f"{adaptive['fit_wall'] / grid['fit_wall']:.2f}x | {adaptive['wall'] / grid['wall']:.2f}x |"
        )
    load = os.getloadavg()[0]
    table = (
        "| data | search | best point | val MAP | test MAP | fits (per round) | fit-stage wall s | run wall s |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(lines)
    )
    print(table)
    if write:
        append_section(
            "Adaptive search vs the default grid",
            f"`bench/adaptive_search.py --fits-per-task {fits_per_task} --max-fits {max_fits or '(default)'} --k {k}`: "
            f"{platform.machine()}, {os.cpu_count()} cpus, local Spark (spark-submit per task), `dag.test` (tasks "
            f"one after the other); k = {k}, played items excluded, MAP = the selection metric, on validation; "
            f"test MAP of the selected point. The adaptive budget is the grid run's fit-stage wall time; both "
            f"runs of a data set share `fits_per_task` = {fits_per_task} and a fresh results store (no seeds). "
            f"Whole bench {(time.perf_counter() - started) / 60:.1f} min; 1-min load average at its end "
            f"{load:.1f} (the machine is shared).\n\n" + table + "\n",
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", choices=["movielens", "generated"], default=["movielens", "generated"],
                   help="data sets to run")  # fmt: skip
    p.add_argument("--k", type=int, default=100, help="recommendations per user")
    p.add_argument("--seed", type=int, default=0, help="split, generator, model and sampler seed")
    p.add_argument("--fits-per-task", type=int, default=1, help="points per fit task, both searches")
    p.add_argument("--max-fits", type=int, help="adaptive search: search_max_fits (default: the param's)")
    p.add_argument("--gen-users", type=int, default=6000, help="generated data: users")
    p.add_argument("--gen-items", type=int, default=3000, help="generated data: tracks")
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=0.0,
        help="run the adaptive search only, with this budget; the grid's figures come from --grid-json",
    )
    p.add_argument("--grid-json", default="", help="with --budget-minutes: {data set name: grid run figures}")
    p.add_argument("--no-write", dest="write", action="store_false", help="do not append to bench/RESULTS.md")
    main(**vars(p.parse_args()))
