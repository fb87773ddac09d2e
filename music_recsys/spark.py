"""Spark session for the jobs: spark-submit decides the master; these are the job-side defaults."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


# JVM flags of the driver and executors, measured on an ALS fit (bench/als_tuning.py, 894K ratings,
# best of 3): the throughput collector instead of G1, -10 %; the Java Vector API for netlib's pure-Java
# BLAS (no native BLAS needed), -9 %.
JAVA_OPTIONS = os.environ.get("RECSYS_SPARK_JAVA_OPTIONS", "-XX:+UseParallelGC --add-modules=jdk.incubator.vector")

# Small data on few cores: the default 200 shuffle partitions are mostly scheduling overhead.
# The DAG passes the same settings to spark-submit (music_recsys.operators).
LOCAL_DEFAULTS = {
    "spark.sql.shuffle.partitions": os.environ.get("RECSYS_SHUFFLE_PARTITIONS", "8"),
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.driver.memory": os.environ.get("RECSYS_DRIVER_MEMORY", "2g"),
    "spark.driver.extraJavaOptions": JAVA_OPTIONS,
    "spark.executor.extraJavaOptions": JAVA_OPTIONS,
}


def get_spark(app_name: str, checkpoint_dir: str | None = None) -> SparkSession:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        # Run directly with python (tests, debugging): a local master. Under spark-submit the JVM
        # already exists (it set PYSPARK_GATEWAY_PORT) and the master comes from the submit.
        builder = builder.master(os.environ.get("RECSYS_SPARK_MASTER", "local[*]"))
        # Python workers must be this interpreter (pandas, pyarrow and this package live here).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        for key, value in LOCAL_DEFAULTS.items():
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("RECSYS_SPARK_LOG_LEVEL", "WARN"))
    if checkpoint_dir:
        # Without a checkpoint dir, ALS ignores checkpointInterval and lineage grows unbounded.
        spark.sparkContext.setCheckpointDir(checkpoint_dir)
    return spark
