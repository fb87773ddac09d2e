"""Benchmark: where a cold fit task's seconds go, and what each cut buys.

A fit task in the default mode is one ``spark-submit jobs/fit_als.py`` of one grid point: a fresh JVM,
a SparkContext, Python imports, the reads, the ALS fit, the writes, the stop. This measures it by
subtraction, each step a whole spark-submit with the operator's settings, repeated and the median kept:

  1. an empty Python application                      -> JVM start, launcher, Python driver start, exit
  2. the fit job's imports, no session                -> + Python imports
  3. imports and a SparkSession, then stop            -> + SparkContext start and stop
  4. the fit job on the demo data's indexed train     -> + reads, the ALS fit (its own figure), writes

then each cut alone against the same job, pairs run alternately (A B A B ...) so the machine's drift
cancels: the Spark UI on (Spark's default) vs off (ours), 200 shuffle partitions (Spark's default) vs 8
(ours), and the JVM's class-data-sharing archive (``make setup`` builds it) vs none.

    .venv/bin/python bench/cold_start.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results import append_section  # noqa: E402
from harness.demo import DEMO_CONF, DEMO_ITEMS, DEMO_USERS, demo_data, demo_env  # noqa: E402
from music_recsys.pipeline.spark import cds_archive, spark_conf  # noqa: E402

SPARK_SUBMIT = str(Path(sys.executable).parent / "spark-submit")
STEPS = {
    "empty": "pass\n",
    "imports": "import jobs.fit_als\n",
    "session": (
        "import jobs.fit_als\nfrom music_recsys.pipeline.spark import get_spark\n"
        "spark = get_spark('bench')\nspark.range(1).count()\nspark.stop()\n"
    ),
}


def submit(application: str, args: list[str], conf: dict[str, str]) -> float:
    command = [SPARK_SUBMIT, "--master", "local[*]", "--name", "bench.cold_start"]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    started = time.perf_counter()
    subprocess.run([*command, application, *args], check=True, capture_output=True, env={**os.environ,
                   "PYTHONPATH": str(REPO)})  # fmt: skip
    return time.perf_counter() - started


def prepare_index(work: Path) -> str:
    """The demo data's indexed train, made once in a local session with the jobs' own code."""
    from jobs import index_ids, ingest
    from music_recsys.pipeline.spark import get_spark
    from music_recsys.settings import data_root

    spark = get_spark("bench.cold_start.prepare")
    root = data_root()
    demo_data(root)
    ingest.run(spark, *(str(root / DEMO_CONF[f"{s}_path"]) for s in ("train", "validation", "test")),
               out_dir=str(work / "ingest"), sample_fraction=1.0, seed=42, max_reject_fraction=0.01,
               result=str(work / "ingest.json"))  # fmt: skip
    index_ids.run(spark, str(work / "ingest"), str(work / "index"), str(work / "index.json"))
    spark.stop()
    return str(work / "index" / "train")


def fit_args(train: str, work: Path, i: int) -> list[str]:
    """One fit of rank 20, regParam 0.1, alpha 10 with the run configuration's other defaults."""
    from dataclasses import fields

    from music_recsys.pipeline.config import RunConfig

    nonnegative = next(f.default for f in fields(RunConfig) if f.name == "nonnegative")
    return ["--train", train, "--run-dir", str(work / f"run{i}"), "--trial", "20,0.1,10.0,none", "--drop-threshold",
            "1", "--max-iter", "10", "--seed", "42", "--nonnegative" if nonnegative else "--no-nonnegative",
            "--result", str(work / f"run{i}" / "task.json")]  # fmt: skip


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main(repeat: int, write: bool) -> None:
    env = demo_env()
    os.environ.update(env)
    work = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    train = prepare_index(work)
    base = spark_conf()
    job = str(REPO / "jobs" / "fit_als.py")
    counter = iter(range(10_000))

    def fit(conf: dict[str, str]) -> tuple[float, float]:
        i = next(counter)
        wall = submit(job, fit_args(train, work, i), conf)
        inner = json.loads((work / f"run{i}" / "results" / "fit" / "r20_reg0.1_a10_none.json").read_text())
        return wall, inner["fit_seconds"]

    steps = {}
    for name, code in STEPS.items():
        script = work / f"{name}.py"
        script.write_text(code)
        steps[name] = median([submit(str(script), [], base) for _ in range(repeat)])
        print(name, f"{steps[name]:.2f}", flush=True)
    fits = [fit(base) for _ in range(repeat)]
    steps["fit job"] = median([w for w, _ in fits])
    als = median([f for _, f in fits])
    breakdown = [
        ("JVM, launcher and Python driver start, exit", steps["empty"]),
        ("Python imports of the job", steps["imports"] - steps["empty"]),
        ("SparkContext start and stop", steps["session"] - steps["imports"]),
        ("ALS fit (the job's fit_seconds: fit, factors counted and collected)", als),
        ("reads, caching, counts, writes", steps["fit job"] - steps["session"] - als),
    ]
    lines = [f"| {what} | {seconds:.2f} |" for what, seconds in breakdown]
    lines.append(f"| **whole fit task (spark-submit wall)** | **{steps['fit job']:.2f}** |")

    archive = cds_archive()
    variants = {
        "Spark UI on (Spark's default) vs off": {**base, "spark.ui.enabled": "true"},
        "200 shuffle partitions (Spark's default) vs 8": {**base, "spark.sql.shuffle.partitions": "200"},
    }
    if archive:  # the base conf uses it: compare against the same flags without it
        no_cds = {**base}
        for key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"):
            no_cds[key] = " ".join(f for f in base[key].split() if "SharedArchiveFile" not in f)
        variants["no class-data-sharing archive vs the archive"] = no_cds
    cuts = []
    for name, conf in variants.items():
        a, b = [], []
        for _ in range(repeat):
            a.append(fit(conf)[0])
            b.append(fit(base)[0])
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        cuts.append(f"| {name} | {median(a):.2f} | {median(b):.2f} | {median(ratios):.2f}x |")
        print(cuts[-1], flush=True)
    table = (
        "| step | seconds |\n|---|---|\n" + "\n".join(lines) + "\n\n"
        "| cut: without it vs with it | without s | with s | without / with (median of pairs) |\n"
        "|---|---|---|---|\n" + "\n".join(cuts)
    )
    print(table)
    if write:
        append_section(
            "One cold fit task, step by step",
            f"{platform.machine()}, {os.cpu_count()} cpus, Java 17, `local[*]`; one spark-submit of "
            "`jobs/fit_als.py` (rank 20, regParam 0.1, alpha 10, 10 iterations) on the demo data's indexed "
            f"train ({DEMO_USERS:,} users × {DEMO_ITEMS:,} tracks), the operator's settings; median of {repeat} "
            f"runs per step, each a fresh JVM. Class-data-sharing archive: {archive or 'none'}.\n\n" + table + "\n",
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5, help="spark-submits per step and per variant")
    p.add_argument("--no-write", dest="write", action="store_false", help="do not append to bench/RESULTS.md")
    main(**vars(p.parse_args()))
