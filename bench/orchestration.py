"""Benchmark: the whole DAG on a real scheduler vs the study's way (one Spark session looping over the
grid in one script), same data, same grid, same job code, measured side by side in one run.

DAG variants run on api-server + scheduler (LocalExecutor) + dag-processor on loopback, PostgreSQL
metadata, fit tasks limited to ``--parallel-fits`` at a time (default: the cores):
  - ``submit``: one fit task per grid point, every stage a spark-submit (the default mode);
  - ``packed``: the grid packed into one fit task per parallel slot (``fits_per_task``), spark-submit;
  - ``connect``: one fit task per grid point, every stage a client of one Spark Connect server (started
    before the run, from the installed pyspark, ``local[*]``: a warm Spark shared by the tasks);
  - optionally (``--embedded``) the embedded default of ``make demo``: ``dag.test()``, tasks in sequence.
The study-style side calls the jobs' ``run`` functions in one session: ingest, index, every fit, evaluate,
in a process of its own (a fresh JVM, as the study's script had), before and after the DAG runs; the
ratios are to the two loops' mean.
Default grid: the study's 27 points (transform none) on the demo data set.

    .venv/bin/python bench/orchestration.py [--variants submit packed connect]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results import append_section  # noqa: E402
from harness.airflow import local_airflow, run_dag_summary  # noqa: E402
from harness.demo import demo_data, demo_env  # noqa: E402
from harness.services import Databases, connect_server, free_port  # noqa: E402

STAGES = ("ingest", "index", "fit", "evaluate")


def seed_style_fresh(conf: dict, run_id: str) -> tuple[float, dict[str, float]]:
    """``seed_style`` in a process of its own, so every loop starts its JVM as the study's script did (a second
    session in this process would find the first one's JVM warm)."""
    import json
    import subprocess

    code = (
        "import json, sys; from bench.orchestration import seed_style; "
        "print('SEED_STYLE', json.dumps(seed_style(json.loads(sys.argv[1]), sys.argv[2])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(conf), run_id],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    line = next(line for line in reversed(out.splitlines()) if line.startswith("SEED_STYLE "))  # past the logs
    seconds, stages = json.loads(line.removeprefix("SEED_STYLE "))
    return seconds, stages


def seed_style(conf: dict, run_id: str) -> tuple[float, dict[str, float]]:
    """All stages in one Spark session, looping over the grid like the study's full-script.py: seconds in
    all (session start and stop included), and per stage."""
    from jobs import evaluate, fit_als, index_ids, ingest
    from music_recsys.pipeline.spark import get_spark
    from music_recsys.pipeline.tasks import prepare

    started = time.perf_counter()
    plan = prepare(conf, run_id)
    spark = get_spark("bench.seed_style")
    stages: dict[str, float] = {}

    def timed(stage: str, job, args: list[str]) -> None:
        t0 = time.perf_counter()
        # The jobs' own argument parsers turn the DAG's spark-submit arguments into typed kwargs.
        job.run(spark, **vars(job.parse_args(args)))
        stages[stage] = stages.get(stage, 0.0) + time.perf_counter() - t0

    timed("ingest", ingest, plan["ingest_args"])
    timed("index", index_ids, plan["index_args"])
    for fit in plan["fit_kwargs"]:
        timed("fit", fit_als, fit["application_args"])
    timed("evaluate", evaluate, plan["evaluate_args"])
    spark.stop()
    return time.perf_counter() - started, stages


def scheduled_runs(conf: dict, variants: dict[str, dict], parallel: int, extra_env: dict[str, str]) -> dict:
    """Each variant's conf as one run on a fresh local scheduler stack, one after another; seconds per run."""
    extra = {
        "RECSYS_MAX_PARALLEL_FITS": str(parallel),
        "RECSYS_START_DATE": "2100-01-01",
        "RECSYS_RETRIES": "0",
        **extra_env,
    }
    databases = None
    with contextlib.suppress(Exception):
        databases = Databases()
        extra["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = databases.create().replace(
            "postgresql://", "postgresql+psycopg2://"
        )
    out: dict[str, dict] = {}
    try:
        with local_airflow(Path(tempfile.mkdtemp(prefix="bench-airflow-")), free_port(), extra) as airflow:
            airflow.unpause()
            for i, (name, over) in enumerate(variants.items()):
                started = time.perf_counter()
                run_id = airflow.trigger({**conf, **over}, f"bench_{int(time.time())}_{i}")
                run = next(r for r in airflow.wait_for_runs(i + 1, timeout=7200) if r["dag_run_id"] == run_id)
                if run["state"] != "success":
                    raise RuntimeError(f"{name}: run {run_id} ended {run['state']}")
                span = datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])
                out[name] = {
                    "run_id": run_id,
                    "seconds": span.total_seconds(),
                    "wall": time.perf_counter() - started,
                    **task_stats(airflow.task_instances(run_id), span.total_seconds()),
                }
                print(name, out[name], flush=True)
    finally:
        if databases:
            databases.drop_all()
    return out


def task_stats(task_instances: list[dict], run_seconds: float) -> dict:
    """Median seconds of a fit task, how busy the run's task slots were (task seconds per run second), and
    each Spark stage's span (first start to last end of its task instances, the fit's map indexes as one)."""
    import statistics

    def at(t: dict, key: str) -> datetime:
        return datetime.fromisoformat(t[key])

    done = [t for t in task_instances if t["start_date"] and t["end_date"]]
    fits = [(at(t, "end_date") - at(t, "start_date")).total_seconds() for t in done if t["task_id"] == "fit"]
    stages = {}
    for stage in STAGES:
        mine = [t for t in done if t["task_id"] == stage]
        stages[stage] = (max(at(t, "end_date") for t in mine) - min(at(t, "start_date") for t in mine)).total_seconds()
    ingest_start = min(at(t, "start_date") for t in done if t["task_id"] == "ingest")
    evaluate_end = max(at(t, "end_date") for t in done if t["task_id"] == "evaluate")
    # Every task's span (first start to last end of its instances), in the order the tasks started.
    spans: dict[str, tuple[datetime, datetime]] = {}
    for t in sorted(done, key=lambda t: at(t, "start_date")):
        first, last = spans.get(t["task_id"], (at(t, "start_date"), at(t, "end_date")))
        spans[t["task_id"]] = (min(first, at(t, "start_date")), max(last, at(t, "end_date")))
    run_start = min(first for first, _ in spans.values())
    return {
        "task_spans": {
            task: ((first - run_start).total_seconds(), (last - first).total_seconds())
            for task, (first, last) in spans.items()
        },
        "fit_task_median_s": statistics.median(fits) if fits else None,
        "task_seconds_per_run_second": sum((at(t, "end_date") - at(t, "start_date")).total_seconds() for t in done)
        / run_seconds,
        "stages": stages,
        # ingest's start to evaluate's end: the stages the one-session loop runs too, scheduling gaps included
        "spark_stages_s": (evaluate_end - ingest_start).total_seconds(),
    }


def best_point(run_id: str) -> str:
    """Best grid point and its validation MAP, from the run's evaluation result (all variants must agree)."""
    from music_recsys.run_folders import read_json, run_dir

    evaluation = read_json(run_dir(run_id) / "results" / "evaluate.json")
    best = evaluation["best_trial_id"]
    row = next(r for r in evaluation["rows"] if r["trial_id"] == best and r["split"] == "validation")
    return f"{best} {row['map']:.4f}"


def main(
    data: str,
    transforms: list[str],
    parallel_fits: int,
    variants: list[str],
    embedded: bool,
    write: bool,
    ranks: list[int] | None = None,
    reg_params: list[float] | None = None,
    alphas: list[float] | None = None,
    loop_twice: bool = True,
):
    env = demo_env()
    os.environ.update(env)
    if data == "msd_like":
        demo_data(Path(env["RECSYS_DATA_ROOT"]))
    conf = {
        "train_path": f"{data}/train.parquet",
        "validation_path": f"{data}/validation.parquet",
        "test_path": f"{data}/test.parquet",
        "transforms": transforms,
        # Every variant reads the same drop: the data check has nothing to compare, no model is promoted.
        "on_data_drift": "warn",
        "promote": False,
        # A smaller grid than the study's, when asked (the hidden-data figure had 4 points).
        **{
            name: values
            for name, values in (("ranks", ranks), ("reg_params", reg_params), ("alphas", alphas))
            if values
        },
    }
    from music_recsys.pipeline.config import RunConfig

    n_fits = len(RunConfig.from_params(conf).trials())
    packed = math.ceil(n_fits / parallel_fits)
    names = {
        "submit": f"DAG on a scheduler, spark-submit, one task per grid point, {parallel_fits} fits at a time",
        "packed": f"DAG on a scheduler, spark-submit, {packed} grid points per task, {parallel_fits} tasks at a time",
        "connect": f"DAG on a scheduler, Spark Connect, one task per grid point, {parallel_fits} fits at a time",
    }
    rows: dict[str, tuple[float, str]] = {}
    stats: dict[str, dict] = {}
    loop_name = "one Spark session looping over the grid (study style)"
    loops: list[tuple[float, dict[str, float], str]] = []
    if loop_twice:  # once before the DAG runs and once after: a machine that drifts weighs on both sides
        loop_id = f"bench_seed_style_{int(time.time())}_before"
        loops.append((*seed_style_fresh(conf, loop_id), loop_id))
    submit_variants = {names[v]: {"fits_per_task": packed if v == "packed" else 1} for v in variants if v != "connect"}
    if submit_variants:
        for name, r in scheduled_runs(conf, submit_variants, parallel_fits, {}).items():
            rows[name], stats[name] = (r["seconds"], r["run_id"]), r
    if "connect" in variants:
        # The same grid twice on one server: just started (cold JIT), then warm, as a long-lived server is.
        connect = {
            f"{names['connect']}, server just started": {"fits_per_task": 1},
            f"{names['connect']}, server warm (its second run)": {"fits_per_task": 1},
        }
        with connect_server(Path(tempfile.mkdtemp(prefix="bench-connect-")), cores=os.cpu_count() or 2) as server:
            runs = scheduled_runs(conf, connect, parallel_fits, {"AIRFLOW_CONN_SPARK_DEFAULT": server.connection()})
        for name, r in runs.items():
            rows[name], stats[name] = (r["seconds"], r["run_id"]), r
    if embedded:
        import subprocess

        migrate = [sys.executable, "-m", "airflow", "db", "migrate"]
        subprocess.run(migrate, check=True, env=env, stdout=subprocess.DEVNULL)
        started = time.perf_counter()
        summary = run_dag_summary(conf)
        rows["DAG embedded (`make demo`: dag.test, tasks in sequence)"] = (
            time.perf_counter() - started,
            summary["run_id"],
        )
    loop_id = f"bench_seed_style_{int(time.time())}"
    loops.append((*seed_style_fresh(conf, loop_id), loop_id))
    # The ratios are to the loops' mean; each loop is listed.
    loop_s = sum(seconds for seconds, _, _ in loops) / len(loops)
    for i, (seconds, stages, run_id) in enumerate(loops):
        name = loop_name if len(loops) == 1 else f"{loop_name}, {('before', 'after')[i]} the DAG runs"
        rows[name] = (seconds, run_id)
        stats[name] = {"stages": stages, "spark_stages_s": seconds}

    def detail(name: str) -> str:
        if "fit_task_median_s" not in stats.get(name, {}):
            return "— | —"
        fit = stats[name]["fit_task_median_s"]
        return f"{fit:.1f} | {stats[name]['task_seconds_per_run_second']:.2f}"

    lines = [
        "| variant | fits | seconds | vs one-session loop | median fit task s | task s per run s "
        "| best point, val MAP |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {name} | {n_fits} | {secs:.0f} | **{secs / loop_s:.2f}x** | {detail(name)} | {best_point(run_id)} |"
            for name, (secs, run_id) in rows.items()
        ),
        "",
        # The DAG also runs the Annoy sweep, record, publish and report, which the loop does not: the stages
        # both run, side by side (a stage = first task start to last task end; the loop's whole includes its
        # session start and stop).
        "| variant | ingest s | index s | fits s | evaluate s | ingest start to evaluate end s | vs the loop |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {name} | "
            + " | ".join(f"{st['stages'][stage]:.0f}" for stage in STAGES)
            + f" | {st['spark_stages_s']:.0f} | **{st['spark_stages_s'] / loop_s:.2f}x** |"
            for name, st in stats.items()
            if "stages" in st
        ),
    ]
    # Where a scheduled run's time goes: each task's start (seconds after the first task started) and span.
    for name, st in stats.items():
        if "task_spans" in st:
            lines += ["", f"{name}: task start s / span s", "", "| task | starts at s | span s |", "|---|---|---|"]
            lines += [f"| {task} | {start:.1f} | {span:.1f} |" for task, (start, span) in st["task_spans"].items()]
    print("\n".join(lines))
    grid = (
        " × ".join(
            f"{name} {conf[name]}" if name in conf else f"{name} (default)"
            for name in ("ranks", "reg_params", "alphas")
        )
        + f" × transforms {transforms}"
    )
    if write:
        append_section(
            "Orchestration: DAG vs one-session loop",
            f"{platform.machine()}, {os.cpu_count()} cpus; Spark local[*]; data `{data}`; grid = {grid} "
            f"({n_fits} points); scheduler runs: LocalExecutor, PostgreSQL metadata, "
            "seconds = the run's start to end as Airflow recorded them; the Spark Connect server was started "
            "just before its first run, and its second run found it warm. "
            + (
                f"The loop ran before and after the DAG runs; ratios are to their mean ({loop_s:.0f} s). "
                if len(loops) > 1
                else ""
            )
            + "Second table: the stages the loop "
            "runs too (the DAG adds the Annoy sweep, record, publish, report).\n\n" + "\n".join(lines) + "\n",
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="msd_like", help="folder under RECSYS_DATA_ROOT with train/validation/test")
    p.add_argument("--transforms", nargs="+", default=["none"], help="grid transforms")
    p.add_argument("--parallel-fits", type=int, default=os.cpu_count() or 2, help="fit tasks at a time")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=["submit", "packed", "connect"],
        default=["submit", "packed", "connect"],
        help="DAG variants on a scheduler",
    )
    p.add_argument("--ranks", nargs="+", type=int, help="grid ranks (default: the params' default)")
    p.add_argument("--reg-params", nargs="+", type=float, help="grid regParams (default: the params' default)")
    p.add_argument("--alphas", nargs="+", type=float, help="grid alphas (default: the params' default)")
    p.add_argument("--embedded", action="store_true", help="also time the embedded default (dag.test)")
    p.add_argument("--loop-once", dest="loop_twice", action="store_false", help="run the loop after the DAG runs only")
    p.add_argument("--no-write", dest="write", action="store_false", help="do not append to bench/RESULTS.md")
    main(**vars(p.parse_args()))
