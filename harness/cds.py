"""The class-data-sharing (CDS) archive of the jobs' driver JVM: a cheaper cold spark-submit.

Every spark-submit starts a JVM that loads and verifies thousands of Spark classes one by one. ``build``
runs every job once (ingest, index, one fit, evaluate) on a tiny generated data set in one spark-submit
whose JVM writes the classes it loaded to an archive at exit (``-XX:ArchiveClassesAtExit``); later driver
JVMs map that archive instead (``music_recsys.pipeline.spark.java_options``). ``make setup`` builds it
(``python -m harness.cds --build``); the JVM ignores an archive that does not fit it (another JDK or
classpath), so a stale one only costs the time it would have saved. What it buys: bench/RESULTS.md,
"One cold fit task".
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from music_recsys import settings

# The same folder the DAG submits from (one rule: ``settings.jobs_dir``).
JOBS_DIR = settings.jobs_dir(beside=__file__)
# The jobs the training run runs, in order (every Spark stage of a run).
JOBS = ("ingest", "index_ids", "fit_als", "evaluate")


def training_run() -> None:
    """Inside spark-submit: every job once on a tiny data set under ``RECSYS_DATA_ROOT``."""
    from music_recsys.data import generate
    from music_recsys.pipeline.config import RunConfig
    from music_recsys.pipeline.job import load_job
    from music_recsys.pipeline.plan import write_plan
    from music_recsys.pipeline.spark import get_spark
    from music_recsys.settings import data_root

    generate.main(out=str(data_root() / "cds"), users=300, items=120, holdout_users=40)
    paths = {f"{split}_path": f"cds/{split}.parquet" for split in ("train", "validation", "test")}
    config = RunConfig.from_params(
        {**paths, "ranks": [4], "reg_params": [0.1], "alphas": [1.0], "transforms": ["none"]}
    )
    plan = write_plan(config, "cds")
    spark = get_spark("harness.cds")
    args = {"ingest": plan["ingest_args"], "index_ids": plan["index_args"], "evaluate": plan["evaluate_args"]}
    args["fit_als"] = plan["fit_kwargs"][0]["application_args"]
    for name in JOBS:
        module = load_job(JOBS_DIR / f"{name}.py")
        module.run(spark, **vars(module.parse_args(args[name])))
    spark.stop()


def build(target: Path) -> Path:
    """Write the archive to ``target`` (atomically: a JVM never maps a half-written one)."""
    from music_recsys.pipeline.spark import CDS_QUIET, executor_java_options, spark_conf

    target.parent.mkdir(parents=True, exist_ok=True)
    archive = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # same folder: the rename is atomic
    with tempfile.TemporaryDirectory(prefix="music-recsys-cds-") as tmp:
        flags = f"{executor_java_options()} -XX:ArchiveClassesAtExit={archive} {CDS_QUIET}"
        conf = {**spark_conf(), "spark.driver.extraJavaOptions": flags}
        command = [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]"]
        for key, value in conf.items():
            command += ["--conf", f"{key}={value}"]
        env = {
            **os.environ,
            "RECSYS_DATA_ROOT": str(Path(tmp) / "data"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        done = subprocess.run([*command, __file__], env=env, capture_output=True, text=True)
    if done.returncode != 0 or not archive.exists():
        archive.unlink(missing_ok=True)
        # spark-submit passes the application's Python traceback to stdout, Spark's log to stderr.
        said = f"{done.stdout[-3000:]}\n{done.stderr[-1500:]}"
        raise RuntimeError(f"building the CDS archive failed ({done.returncode}):\n{said}")
    archive.replace(target)
    return target


if __name__ == "__main__":
    if sys.argv[1:] == ["--build"]:  # make setup: python -m harness.cds --build
        import time

        from music_recsys.pipeline.spark import cds_path

        started = time.perf_counter()
        path = build(cds_path())
        size = path.stat().st_size / 1e6
        print(f"ok: class-data-sharing archive of the jobs' driver JVM, {size:.0f} MB at {path} "
              f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    else:  # the spark-submit application build() starts
        training_run()
