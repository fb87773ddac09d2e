"""Benchmark: the whole DAG (one spark-submit per stage and grid point) vs the seed's way (one Spark
session looping over the grid in one script), same data, same grid, same job code.

The seed-style side calls the jobs' ``run`` functions in one session: ingest, index, every fit,
evaluate. The DAG side is ``dag.test()`` of DAG music_recsys (tasks one after another, as
``RECSYS_MAX_PARALLEL_FITS=1`` would schedule them on 2 cores). Defaults: the seed's 27-point grid
× transforms none and log1p (54 fits) on the demo data set.

    .venv/bin/python bench/orchestration.py
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

from music_recsys.demo import airflow_env  # noqa: E402


def seed_style(conf: dict, run_id: str) -> float:
    """All stages in one Spark session, looping over the grid like the seed's full-script.py."""
    from jobs import evaluate, fit_als, index_ids, ingest
    from music_recsys.pipeline import prepare
    from music_recsys.spark import get_spark

    started = time.perf_counter()
    plan = prepare(conf, run_id)
    spark = get_spark("bench.seed_style")

    # The jobs' own argument parsers turn the DAG's spark-submit arguments into typed kwargs.
    ingest.run(spark, **vars(ingest.parse_args(plan["ingest_args"])))
    index_ids.run(spark, **vars(index_ids.parse_args(plan["index_args"])))
    for fit in plan["fit_kwargs"]:
        fit_als.run(spark, **vars(fit_als.parse_args(fit["application_args"])))
    evaluate.run(spark, **vars(evaluate.parse_args(plan["evaluate_args"])))
    spark.stop()
    return time.perf_counter() - started


def main(data: str, transforms: list[str], write: bool) -> None:
    env = airflow_env()
    os.environ.update(env)
    conf = {
        "train_path": f"{data}/train.parquet",
        "validation_path": f"{data}/validation.parquet",
        "test_path": f"{data}/test.parquet",
        "transforms": transforms,
    }
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, env=env, stdout=subprocess.DEVNULL)
    from music_recsys.config import RunConfig
    from music_recsys.demo import run_dag

    n_fits = len(RunConfig.from_params(conf).trials())
    started = time.perf_counter()
    summary = run_dag(conf)
    dag_s = time.perf_counter() - started
    loop_s = seed_style(conf, f"bench_seed_style_{int(time.time())}")
    line = (
        f"| {data} | {n_fits} | {dag_s:.0f} | {loop_s:.0f} | **{dag_s / loop_s:.2f}x** | "
        f"{summary['best_trial_id']} | {summary['best_validation']['map']:.4f} | "
        f"{summary['popularity_validation']['map']:.4f} |"
    )
    print(line)
    if write:
        with (REPO / "bench" / "RESULTS.md").open("a") as fh:
            fh.write(
                f"\n### Orchestration: DAG vs one-session loop — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
                f"{platform.machine()}, {os.cpu_count()} cpus; Spark local[*]; grid = the seed's 27 points × "
                f"transforms {transforms}; DAG via dag.test (sequential tasks), run `{summary['run_id']}`.\n\n"
                "| data | fits | DAG s | one-session loop s | DAG / loop | best point (DAG) | best val MAP | "
                "popularity val MAP |\n|---|---|---|---|---|---|---|---|\n" + line + "\n"
            )
    print(json.dumps(summary, indent=1)[:2000])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="msd_like", help="folder under RECSYS_DATA_ROOT with train/validation/test")
    p.add_argument("--transforms", nargs="+", default=["none", "log1p"], help="grid transforms")
    p.add_argument("--no-write", dest="write", action="store_false", help="do not append to bench/RESULTS.md")
    main(**vars(p.parse_args()))
