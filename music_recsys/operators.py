"""``SparkJobOperator``: SparkSubmitOperator that returns the job's JSON result to XCom.

``SparkSubmitOperator.execute`` returns nothing, so every job in ``jobs/`` writes a small JSON result
at a run-scoped path the DAG chose; this operator submits the job, then reads that file and returns
it. It also fills in the defaults this project needs on any cluster: the Python interpreter of the
workers, a quiet console, small shuffles, no UI port per driver.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from music_recsys.spark import JAVA_OPTIONS

# Where the embedded default runs Spark when no spark_default connection exists (the provider
# would otherwise silently fall back to YARN).
LOCAL_SPARK_CONNECTION = json.dumps({"conn_type": "spark", "host": "local[*]"})


def default_spark_conf() -> dict[str, str]:
    """Job defaults; every value can be changed through the environment of the Airflow worker."""
    partitions = os.environ.get("RECSYS_SHUFFLE_PARTITIONS", "8")
    conf = {
        # The driver runs here (client mode); executors may run elsewhere with their own Python.
        "spark.pyspark.driver.python": sys.executable,
        "spark.pyspark.python": os.environ.get("RECSYS_SPARK_PYTHON", sys.executable),
        "spark.sql.shuffle.partitions": partitions,
        # A UI per concurrent client-mode driver exhausts ports past 16 drivers on one host.
        "spark.ui.enabled": os.environ.get("RECSYS_SPARK_UI", "false"),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.extraJavaOptions": JAVA_OPTIONS,
        "spark.executor.extraJavaOptions": JAVA_OPTIONS,
        # Keep task logs readable: Spark's INFO lines drown the job's own output.
        "spark.log.level": os.environ.get("RECSYS_SPARK_LOG_LEVEL", "WARN"),
    }
    if os.environ.get("RECSYS_SPARK_DRIVER_HOST"):
        conf["spark.driver.host"] = os.environ["RECSYS_SPARK_DRIVER_HOST"]
    if os.environ.get("RECSYS_SPARK_EVENT_LOG_DIR"):
        # For the Spark history server.
        conf["spark.eventLog.enabled"] = "true"
        conf["spark.eventLog.dir"] = os.environ["RECSYS_SPARK_EVENT_LOG_DIR"]
    return conf


class SparkJobOperator(SparkSubmitOperator):
    """Submit one ``jobs/*.py`` application and return its JSON result (``result_path``)."""

    template_fields = (*SparkSubmitOperator.template_fields, "result_path", "grid_point")

    def __init__(self, *, result_path: str, grid_point: str = "", **kwargs: Any) -> None:
        conf = {**default_spark_conf(), **(kwargs.pop("conf", None) or {})}
        kwargs.setdefault("py_files", os.environ.get("RECSYS_PY_FILES") or None)
        kwargs.setdefault("driver_memory", os.environ.get("RECSYS_DRIVER_MEMORY", "2g"))
        if os.environ.get("RECSYS_SPARK_CORES_MAX"):
            # On a standalone cluster an app takes every free core unless capped.
            kwargs.setdefault("total_executor_cores", int(os.environ["RECSYS_SPARK_CORES_MAX"]))
        super().__init__(conf=conf, **kwargs)
        self.result_path = result_path
        self.grid_point = grid_point

    def execute(self, context: Any) -> dict:
        self._ensure_spark_environment()
        # A retry must not read the previous attempt's result.
        Path(self.result_path).unlink(missing_ok=True)
        super().execute(context)
        result_file = Path(self.result_path)
        if not result_file.exists():
            raise RuntimeError(f"{self.application} finished but wrote no result at {result_file}")
        return json.loads(result_file.read_text())

    def _ensure_spark_environment(self) -> None:
        from airflow.sdk import BaseHook

        try:
            BaseHook.get_connection(self._conn_id)
        except Exception:
            env_key = f"AIRFLOW_CONN_{self._conn_id.upper()}"
            self.log.warning(
                "connection %r not defined; running Spark locally (%s)", self._conn_id, LOCAL_SPARK_CONNECTION
            )
            os.environ[env_key] = LOCAL_SPARK_CONNECTION
        if shutil.which("spark-submit") is None:
            # pyspark installs spark-submit next to this interpreter; the provider looks it up on PATH.
            os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
