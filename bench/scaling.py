"""Benchmark: the DAG's stages at growing data sizes; seconds and cost per interaction per stage.

Generates MSD-like data at each size (users scale, tracks grow more slowly), runs DAG music_recsys
with one grid point (rank 20, regParam 0.1, alpha 10, transform none) and reads each task's wall
time from the metadata DB, and what the run weighs on disk (all of it, and what retention keeps once the
run is among the old ones); appends a table to bench/RESULTS.md.

    .venv/bin/python bench/scaling.py --sizes 100000 1000000 10000000
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results import append_section  # noqa: E402
from harness.airflow import run_dag_summary  # noqa: E402
from harness.demo import demo_env  # noqa: E402

STAGES = ("ingest", "index", "fit", "evaluate", "fast_search")


def shape_for(interactions: int) -> dict:
    """Users and tracks for a target number of train interactions (~40 tracks per user)."""
    users = max(1000, interactions // 40)
    items = int(min(400_000, max(2000, 20 * users**0.75)))
    return {"users": users, "items": items, "holdout_users": max(100, users // 50), "mean_tracks": 40.0}


def one_point_conf(folder: str, **params: object) -> dict:
    """The DAG conf of the scale benchmarks: one grid point (rank 20, regParam 0.1, alpha 10, no transform) on
    ``folder``'s three splits, judged as a candidate only (``promote`` false: the benchmark must not change
    what `make serve` serves) and with the data check warning (each size is another data set, not a weekly
    drop). ``params`` adds or overrides DAG params."""
    return {
        "train_path": f"{folder}/train.parquet",
        "validation_path": f"{folder}/validation.parquet",
        "test_path": f"{folder}/test.parquet",
        "ranks": [20],
        "reg_params": [0.1],
        "alphas": [10.0],
        "transforms": ["none"],
        "on_data_drift": "warn",
        "promote": False,
        **params,
    }


def task_seconds(dag_id: str, run_id: str) -> dict[str, float]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    totals: dict[str, float] = {}
    with create_session() as session:
        for ti in session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id):
            if ti.start_date and ti.end_date:
                totals[ti.task_id] = totals.get(ti.task_id, 0.0) + (ti.end_date - ti.start_date).total_seconds()
    return totals


def main(sizes: list[int], write: bool) -> None:
    env = demo_env()
    os.environ.update(env)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, env=env, stdout=subprocess.DEVNULL)
    from music_recsys.run_folders import RunLayout, read_json, run_dir
    from music_recsys.store.retention import bulky_paths, folder_bytes

    root = Path(env["RECSYS_DATA_ROOT"])
    lines = []
    for size in sizes:
        shape = shape_for(size)
        folder = f"scale_{size}"
        if not (root / folder / "manifest.json").exists():
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "music_recsys.data.generate",
                    "--out",
                    str(root / folder),
                    "--users",
                    str(shape["users"]),
                    "--items",
                    str(shape["items"]),
                    "--holdout-users",
                    str(shape["holdout_users"]),
                    "--mean-tracks",
                    str(shape["mean_tracks"]),
                ],
                check=True,
                env=env,
            )
            print(f"generated {folder} in {time.perf_counter() - started:.0f} s", flush=True)
        conf = one_point_conf(folder, k=500, annoy_trees=[10], annoy_search_k=[10000], annoy_max_queries=500)
        started = time.perf_counter()
        summary = run_dag_summary(conf)
        total = time.perf_counter() - started
        seconds = task_seconds("music_recsys", summary["run_id"])
        rows = read_json(run_dir(summary["run_id"]) / "results" / "ingest.json")["splits"]["train"]["rows_written"]
        fit = read_json(next((run_dir(summary["run_id"]) / "results" / "fit").glob("*.json")))
        per = " | ".join(f"{seconds.get(s, 0):.0f} ({seconds.get(s, 0) / rows * 1e6:.1f})" for s in STAGES)
        layout = RunLayout(run_dir(summary["run_id"]))
        weight = folder_bytes(layout.root)
        kept = weight - sum(folder_bytes(p) for p in bulky_paths(layout))
        line = (
            f"| {rows:,} | {shape['users']:,} × {shape['items']:,} | {per} | {fit['fit_seconds']:.1f} | "
            f"{total:.0f} | {summary['best_validation']['map']:.4f} | {weight / 1e6:.1f} ({kept / 1e6:.1f}) |"
        )
        print(line, flush=True)
        lines.append(line)
    if write:
        append_section(
            "Scaling: DAG stages by data size",
            f"{platform.machine()}, {os.cpu_count()} cpus, Spark local[*]; one grid point (rank 20, "
            "regParam 0.1, alpha 10, 10 iterations), k = 500. Each stage: task wall seconds (µs per train "
            "interaction), spark-submit start included. Run MB: the run folder on disk (what retention keeps "
            "of it once it is old).\n\n"
            "| train rows | users × tracks | " + " | ".join(STAGES) + " | ALS fit s (inside fit) | "
            "DAG s | val MAP | run MB (kept) |\n|---|---|"
            + "---|" * (len(STAGES) + 4)
            + "\n"
            + "\n".join(lines)
            + "\n",
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000], help="target train interactions"
    )
    p.add_argument("--no-write", dest="write", action="store_false", help="do not append to bench/RESULTS.md")
    main(**vars(p.parse_args()))
