"""Benchmark: Spark stages of a finished run again, one spark-submit each, at chosen driver heaps (issue 23).

What ``RECSYS_DRIVER_MEMORY`` a data size needs is a question of which heap a stage still finishes in,
and how fast; the RSS a run shows answers neither (a JVM grows into the heap it is given). This replays
stages of a run the DAG finished (``bench/full_size.py`` by default: the newest run on ``study_1``) with
the arguments its plan recorded and the Spark settings every stage gets (``pipeline.spark.spark_conf``,
``--master local[*]``), only the heap changed, writing into a scratch run folder so the original stays as
it was: wall time, the JVM's peak RSS (``wait4``), exit code and any out-of-memory line. ``batch`` (the
batch recommendations) writes into the published bundle, the way a rerun of the task does (a staged swap,
so the bundle stays whole). ``evaluate`` is not offered: its plan names the original run's working folder.

    .venv/bin/python bench/stage_replay.py --stages ingest fit --driver-memory 2g 4g
    .venv/bin/python bench/stage_replay.py --stages batch --driver-memory 12g   # the batch stage alone
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results import append_section  # noqa: E402

MB = 1e6
JOBS = {
    "ingest": "ingest.py",
    "index": "index_ids.py",
    "fit": "fit_als.py",
    "batch": "batch_recommend.py",
}
# Arguments that name the original run's outputs, read as inputs by a later stage: kept as they are.
INPUT_FLAGS = {"--ingest-dir", "--train", "--index-dir", "--plan", "--bundle"}
OOM = ("OutOfMemoryError", "Java heap space", "GC overhead limit exceeded", "Container killed", "exit code 137")


def newest_run(data_root: Path, data_folder: str) -> Path:
    """The newest run under ``runs/`` whose ingest read ``data_folder``."""
    runs = [
        p.parent
        for p in (data_root / "runs").glob("*/plan.json")
        if f"/{data_folder}/" in " ".join(json.loads(p.read_text())["ingest_args"])
    ]
    if not runs:
        raise SystemExit(f"no run under {data_root / 'runs'} read {data_folder}; run bench/full_size.py first")
    return max(runs, key=lambda p: p.stat().st_mtime)


def stage_args(stage: str, run: Path, scratch: Path) -> list[str]:
    """The stage's arguments from the run's plan, its outputs moved under ``scratch``."""
    plan = json.loads((run / "plan.json").read_text())
    if stage == "batch":
        from music_recsys.pipeline.batch import batch_job

        publication = json.loads((run / "results" / "publish.json").read_text())
        args = batch_job(plan, publication)["application_args"]
    else:
        args = plan[f"{stage}_args"] if stage != "fit" else plan["fit_kwargs"][0]["application_args"]
    out, keep = [], False
    for arg in map(str, args):
        out.append(arg if keep else arg.replace(str(run), str(scratch)))
        keep = arg in INPUT_FLAGS
    return out


def replay(stage: str, memory: str, run: Path, scratch_root: Path) -> dict:
    from music_recsys.pipeline.spark import spark_conf

    scratch = scratch_root / f"{stage}-{memory}"
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "results" / "fit_tasks").mkdir(parents=True)
    os.environ["RECSYS_DRIVER_MEMORY"] = memory
    conf = [item for key, value in spark_conf().items() for item in ("--conf", f"{key}={value}")]
    command = [
        str(Path(sys.executable).with_name("spark-submit")),
        "--master",
        "local[*]",
        *conf,
        "--name",
        f"bench.replay.{stage}",
        str(REPO / "jobs" / JOBS[stage]),
        *stage_args(stage, run, scratch),
    ]
    log = scratch / "spark.log"
    started = time.perf_counter()
    with log.open("w") as fh:
        child = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    text = log.read_text(errors="replace")
    oom = next((line.strip() for line in text.splitlines() if any(m in line for m in OOM)), None)
    row = {
        "stage": stage,
        "memory": memory,
        "exit": os.waitstatus_to_exitcode(status),
        "seconds": seconds,
        "peak_rss": usage.ru_maxrss * 1024,  # KiB on Linux; the JVM (spark-submit execs it) or its largest child
        "oom": oom[:200] if oom else None,
        "log": str(log),
    }
    print(row, flush=True)
    return row


def report(rows: list[dict], run: Path, rows_in_train: int | None) -> str:
    lines = [
        f"{platform.machine()}, {os.cpu_count()} cpus, spark-submit --master local[*] with the stages' own settings, "
        f"only `spark.driver.memory` changed; replayed from run `{run.name}`"
        + (f" ({rows_in_train:,} train rows)" if rows_in_train else "")
        + "; peak RSS = the JVM's (wait4).",
        "",
        "| stage | driver heap | exit | wall s | peak RSS MB | out of memory |",
        "|---|---|---|---|---|---|",
    ]
    cells = [(r["stage"], r["memory"], r["exit"], f"{r['seconds']:.1f}", f"{r['peak_rss'] / MB:,.0f}", r["oom"] or "no")
             for r in rows]  # fmt: skip
    return "\n".join([*lines, *("| " + " | ".join(map(str, c)) + " |" for c in cells)]) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, help="the run folder to replay (default: the newest on --data)")
    p.add_argument("--data", default="study_1", help="data folder under the data root the default run read")
    p.add_argument("--stages", nargs="+", choices=list(JOBS), default=["ingest", "fit"])
    p.add_argument("--driver-memory", nargs="+", default=["2g"], help="heaps to try, each stage at each")
    p.add_argument("--no-write", dest="write", action="store_false", help="do not append to bench/RESULTS.md")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    from harness.demo import demo_env

    env = demo_env()
    os.environ.update(env)
    root = Path(env["RECSYS_DATA_ROOT"])
    run = args.run or newest_run(root, args.data)
    ingest = run / "results" / "ingest.json"
    train_rows = json.loads(ingest.read_text())["splits"]["train"]["rows_written"] if ingest.exists() else None
    rows = [replay(s, m, run, root / "bench-replay") for s in args.stages for m in args.driver_memory]
    text = report(rows, run, train_rows)
    print(text)
    if args.write:
        append_section(f"Stage replay at chosen driver heaps: {', '.join(args.stages)}", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(parse_args()))
