"""Spark for the jobs: the settings every job runs with, built in one place, and the three ways a job
gets its session — under spark-submit, as a local session (tests, benchmarks, debugging), or as a
Spark Connect client (the execution mode of a ``spark_connect`` connection).

Jobs use only what both kinds of session have (no ``sparkContext``, broadcast variables or RDDs); the
two places the kinds differ (checkpoint directory, default parallelism) are answered here.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from music_recsys import settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# How long a Spark Connect client retries an unavailable server (long enough to ride out a server
# restart); a ``spark_connect`` connection's ``retry_seconds`` extra overrides it.
CONNECT_RETRY_SECONDS = 60.0


def executor_java_options() -> str:
    """JVM flags of the driver and executors (``RECSYS_SPARK_JAVA_OPTIONS``), chosen on an ALS fit
    (bench/RESULTS.md, "ALS tuning"): the throughput collector instead of G1, and the Java Vector API
    for netlib's pure-Java BLAS."""
    return settings.text("RECSYS_SPARK_JAVA_OPTIONS")


# A JVM that cannot use the archive (another JDK or classpath) would say so in every task log.
CDS_QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def cds_path() -> Path:
    """Where the class-data-sharing archive of the jobs' driver JVM lives (``harness.cds``)."""
    return Path(settings.optional("RECSYS_SPARK_CDS_ARCHIVE") or Path(sys.prefix) / "spark-classes.jsa")


def cds_archive() -> str | None:
    """The archive, when ``make setup`` built it: a driver JVM maps it instead of loading and verifying
    the same classes one by one (bench/RESULTS.md, "One cold fit task")."""
    path = cds_path()
    return str(path) if path.is_file() else None


def java_options() -> str:
    """The driver's JVM flags: ``executor_java_options()``, plus the class-data-sharing archive when there
    is one."""
    flags = executor_java_options()
    archive = cds_archive()
    return f"{flags} -XX:SharedArchiveFile={archive} {CDS_QUIET}" if archive else flags


def spark_env() -> dict[str, str]:
    """Environment of the Spark JVMs the jobs start (a local driver, where ``local[*]`` runs every task, and
    the executors): ``RECSYS_SPARK_BLAS_THREADS`` threads per native BLAS call. Spark runs one task per core,
    and OpenBLAS would give each task's every call all the cores again; measured, that made native BLAS
    slower than Spark's Java BLAS on a busy machine (docs/benchmarks.md, "Native BLAS")."""
    return {"OPENBLAS_NUM_THREADS": str(settings.integer("RECSYS_SPARK_BLAS_THREADS", minimum=1))}


# JVM flags that make netlib skip the native libraries: Spark's ALS then runs its BLAS and LAPACK in Java.
JAVA_BLAS_OPTIONS = "-Ddev.ludovic.netlib.blas.allowNative=false -Ddev.ludovic.netlib.lapack.allowNative=false"


def fit_conf(max_rank: int) -> dict[str, str]:
    """A fit application's settings beyond ``spark_conf()``: netlib's Java BLAS when its highest rank is below
    ``RECSYS_NATIVE_BLAS_MIN_RANK``. A rank-k normal equation is built from one packed rank-1 update (``dspr``)
    per rating; at small k a native call's JNI crossing costs more than the update (measured by rank:
    docs/benchmarks.md, "Native BLAS")."""
    if max_rank >= settings.integer("RECSYS_NATIVE_BLAS_MIN_RANK", minimum=0):
        return {}
    return {
        "spark.driver.extraJavaOptions": f"{java_options()} {JAVA_BLAS_OPTIONS}",
        "spark.executor.extraJavaOptions": f"{executor_java_options()} {JAVA_BLAS_OPTIONS}",
    }


# Session-level settings, the only ones a Spark Connect client can set (the rest belong to the server).
RUNTIME_KEYS = ("spark.sql.shuffle.partitions", "spark.sql.execution.arrow.pyspark.enabled")


def spark_conf() -> dict[str, str]:
    """Settings of every job's Spark application; every value can be changed through the environment.

    spark-submit passes them as ``--conf`` (``SparkJobOperator``), a local session sets them on its
    builder (``get_spark``), a Connect session applies the runtime ones (``connect_session``).
    """
    conf = {
        # Small data on few cores: Spark's default 200 shuffle partitions are mostly scheduling overhead.
        "spark.sql.shuffle.partitions": settings.text("RECSYS_SHUFFLE_PARTITIONS"),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Batch jobs need no UI, and a UI per concurrent client-mode driver exhausts ports past 16 drivers.
        "spark.ui.enabled": settings.text("RECSYS_SPARK_UI"),
        "spark.ui.showConsoleProgress": "false",
        # Task logs stay readable: Spark's INFO lines would drown the job's own output.
        "spark.log.level": settings.text("RECSYS_SPARK_LOG_LEVEL"),
        "spark.driver.memory": settings.text("RECSYS_DRIVER_MEMORY"),
        "spark.driver.extraJavaOptions": java_options(),
        "spark.executor.extraJavaOptions": executor_java_options(),
        # The driver runs in this process's environment (client mode); executors may have another Python.
        "spark.pyspark.driver.python": sys.executable,
        "spark.pyspark.python": settings.text("RECSYS_SPARK_PYTHON"),
        **{f"spark.executorEnv.{key}": value for key, value in spark_env().items()},
    }
    if driver_host := settings.optional("RECSYS_SPARK_DRIVER_HOST"):
        conf["spark.driver.host"] = driver_host
    if event_log_dir := settings.optional("RECSYS_SPARK_EVENT_LOG_DIR"):  # for the Spark history server
        conf["spark.eventLog.enabled"] = "true"
        conf["spark.eventLog.dir"] = event_log_dir
    return conf


def get_spark(app_name: str) -> SparkSession:
    """The job's session: the one spark-submit started, or a local one when run with plain python."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        # Not under spark-submit (tests, benchmarks, debugging): a local master with the job settings.
        # Under spark-submit the JVM exists already and master, name and settings come from the submit.
        builder = builder.master(settings.text("RECSYS_SPARK_MASTER")).appName(app_name)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # UDF workers need this package
        os.environ.update(spark_env())  # the JVM about to start inherits it
        for key, value in spark_conf().items():
            builder = builder.config(key, value)
    return builder.getOrCreate()


@contextlib.contextmanager
def connect_session(url: str, retry_seconds: float = CONNECT_RETRY_SECONDS) -> Iterator[SparkSession]:
    """A new Spark Connect client session at ``url`` (``sc://host:port/...``) with the job settings.

    The client retries an unavailable server for about ``retry_seconds`` (long enough to ride out a
    server restart), then fails with the server's address. PySpark marks a process as Connect-only by
    an environment variable; it is restored on exit, so a process that also has a classic session (the
    test suite) keeps working.
    """
    from pyspark.sql import SparkSession
    from pyspark.sql.connect.client.retries import DefaultPolicy

    marker = "SPARK_CONNECT_MODE_ENABLED"
    was_set = marker in os.environ
    spark = SparkSession.builder.remote(url).create()
    try:
        spark.client.set_retry_policies([DefaultPolicy(**retry_policy(retry_seconds))])
        conf = spark_conf()
        try:
            for key in RUNTIME_KEYS:
                spark.conf.set(key, conf[key])
        except Exception as exc:
            address = url.split("/;")[0].rstrip("/")
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            raise ConnectionError(
                f"Spark Connect server at {address} did not answer within {retry_seconds:.0f} s: "
                f"{type(exc).__name__}: {first_line}"
            ) from exc
        yield spark
    finally:
        try:
            spark.stop()
        finally:
            if not was_set:
                os.environ.pop(marker, None)


def retry_policy(seconds: float, initial_ms: int = 50, multiplier: float = 4.0, max_ms: int = 5000) -> dict:
    """Arguments of the Connect client's retry policy whose back-off waits add up to about ``seconds``."""
    waited, wait, retries = 0.0, float(initial_ms), 0
    while waited + wait <= seconds * 1000:
        waited += wait
        wait = min(max_ms, wait * multiplier)
        retries += 1
    return {
        "max_retries": max(retries, 1),
        "initial_backoff": initial_ms,
        "backoff_multiplier": multiplier,
        "max_backoff": max_ms,
    }


def is_connect(spark: SparkSession) -> bool:
    return type(spark).__module__.startswith("pyspark.sql.connect")


def set_checkpoint_dir(spark: SparkSession, path: str) -> None:
    """Without a checkpoint dir ALS ignores ``checkpointInterval`` and its lineage grows unbounded.

    A Connect client cannot set it: the server's ``spark.checkpoint.dir`` applies (docs/spark-modes.md).
    """
    if not is_connect(spark):
        spark.sparkContext.setCheckpointDir(path)


def default_parallelism(spark: SparkSession) -> int:
    """Cores Spark gives a job: the partitions of a ``range`` with no explicit slices in Connect mode."""
    if not is_connect(spark):
        return spark.sparkContext.defaultParallelism
    from pyspark.sql import functions as F

    partitions = spark.range(0, 1 << 16).select(F.spark_partition_id().alias("p"))
    return int(partitions.agg(F.max("p")).first()[0]) + 1
