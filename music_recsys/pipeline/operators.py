"""``SparkJobOperator``: runs one ``jobs/*.py`` application and returns its JSON result to XCom.

The Spark connection decides how the job runs:
- type ``spark`` (the default; ``local[*]`` when the connection is not defined): ``spark-submit``, as
  ``SparkSubmitOperator`` does — a fresh Spark application per task (isolation, per-task resources);
- type ``spark_connect``: the job's ``run(spark, ...)`` in the task process against a Spark Connect
  session on a long-running server (a warm Spark shared by every task).

Either way the job writes its result at a run-scoped path the DAG chose (``SparkSubmitOperator.execute``
returns nothing), and this operator returns that file. A job that failed on its input or params says
so in the result (``music_recsys.pipeline.job``), and the task then fails without retries.

``inputs_from`` reads ``application_args`` and ``result_path`` at run time from another task's XCom
(keys ``<task_id>_args`` and ``<task_id>_result``) instead of through an XComArg: that task is then not a
direct upstream, so a trigger rule such as ``all_done_min_one_success`` counts only the real upstreams
(``evaluate`` must not start because ``prepare`` succeeded while every fit was lost).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from music_recsys import settings
from music_recsys.pipeline.spark import CONNECT_RETRY_SECONDS, spark_conf, spark_env

# What runs when the connection is not defined: Spark in the worker, on every core (the provider would
# otherwise fall back to YARN).
LOCAL_SPARK_CONNECTION = json.dumps({"conn_type": "spark", "host": "local[*]"})
# spark-submit's exit code when the driver JVM died of an OutOfMemoryError (Spark's SparkExitCode.OOM).
SPARK_OOM_EXIT_CODE = 52


class SparkJobOperator(SparkSubmitOperator):
    """Run one job through the Spark connection and return its JSON result (``result_path``)."""

    template_fields = (*SparkSubmitOperator.template_fields, "result_path", "grid_point")

    def __init__(self, *, result_path: str = "", grid_point: str = "", inputs_from: str = "", **kwargs: Any) -> None:
        if not result_path and not inputs_from:
            raise ValueError(f"task {kwargs.get('task_id')!r}: give result_path, or inputs_from (a task id)")
        conf = {**spark_conf(), **(kwargs.pop("conf", None) or {})}
        kwargs.setdefault("py_files", settings.optional("RECSYS_PY_FILES"))
        # spark-submit's environment, which a client-mode or local driver JVM inherits.
        kwargs["env_vars"] = {**spark_env(), **(kwargs.get("env_vars") or {})}
        if settings.optional("RECSYS_SPARK_CORES_MAX"):
            # On a standalone cluster an app takes every free core unless capped.
            kwargs.setdefault("total_executor_cores", settings.integer("RECSYS_SPARK_CORES_MAX", minimum=1))
        super().__init__(conf=conf, **kwargs)
        self.result_path = result_path
        self.grid_point = grid_point
        self.inputs_from = inputs_from

    def execute(self, context: Any) -> dict:
        if self.inputs_from:
            self.pull_inputs(context)
        connection = self.spark_connection()
        # A retry must not read the previous attempt's result.
        Path(self.result_path).unlink(missing_ok=True)
        try:
            if connection.conn_type == "spark_connect":
                self.run_on_connect(connection)
            else:
                if shutil.which("spark-submit") is None:
                    # pyspark installs spark-submit next to this interpreter; the provider looks on PATH.
                    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
                super().execute(context)
        except Exception as exc:
            self.fail_without_retry_on_input_error()
            self.fail_without_retry_on_driver_oom(exc)
            raise
        result_file = Path(self.result_path)
        if not result_file.exists():
            raise RuntimeError(f"{self.application} finished but wrote no result at {result_file}")
        return json.loads(result_file.read_text())

    def pull_inputs(self, context: Any) -> None:
        """``application_args`` and ``result_path`` from the XCom of ``inputs_from`` (see the module doc)."""
        values = {}
        for field in ("args", "result"):
            key = f"{self.task_id}_{field}"
            values[field] = context["ti"].xcom_pull(task_ids=self.inputs_from, key=key)
            if values[field] is None:
                raise RuntimeError(
                    f"task {self.task_id!r}: no XCom {key!r} from task {self.inputs_from!r} in this run; "
                    f"{self.inputs_from!r} must succeed (and return {key!r}) before {self.task_id!r} runs"
                )
        self.application_args, self.result_path = list(values["args"]), str(values["result"])

    def spark_connection(self) -> Any:
        """The Spark connection; only one that is not defined falls back to local Spark."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return BaseHook.get_connection(self._conn_id)
        except AirflowNotFoundException:
            # Any other error (a secrets backend that is down, say) fails the task: production jobs
            # must not quietly run on the worker.
            self.log.info("Spark connection %r is not defined: running Spark here, master local[*]", self._conn_id)
            os.environ[f"AIRFLOW_CONN_{self._conn_id.upper()}"] = LOCAL_SPARK_CONNECTION
            return BaseHook.get_connection(self._conn_id)

    def run_on_connect(self, connection: Any) -> None:
        """The job's ``run`` in this process, against a session on the connection's Spark Connect server."""
        from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook

        from music_recsys.pipeline import job
        from music_recsys.pipeline.spark import connect_session

        module = job.load_job(self.application)
        kwargs = vars(module.parse_args([str(a) for a in self.application_args or []]))
        url = SparkConnectHook(conn_id=self._conn_id).get_connection_url()
        retry_seconds = float(connection.extra_dejson.get("retry_seconds", CONNECT_RETRY_SECONDS))
        self.log.info("running %s on Spark Connect %s", Path(self.application).name, url.split("/;")[0])
        with connect_session(url, retry_seconds=retry_seconds) as spark:
            for archive in (self.py_files or "").split(","):
                if archive.strip():  # the server's Python workers import this package from it
                    spark.addArtifacts(archive.strip(), pyfile=True)
            job.execute(module.run, spark, kwargs)

    def fail_without_retry_on_driver_oom(self, exc: Exception) -> None:
        """When spark-submit says the driver JVM died of an ``OutOfMemoryError`` (Spark's exit code 52), end
        the task now with what to change: a retry with the same heap fails the same way. Under ``local[*]``
        the driver does all the work, so its heap is ``RECSYS_DRIVER_MEMORY``; at the study's size (48M train
        rows) the fit needs more than the default 2g (docs/benchmarks.md#driver-memory)."""
        from airflow.sdk.exceptions import AirflowFailException

        if f"Error code is: {SPARK_OOM_EXIT_CODE}." not in str(exc):
            return
        heap = (self.conf or {}).get("spark.driver.memory", "unset")
        raise AirflowFailException(
            f"{Path(self.application).name}: the Spark driver ran out of memory (java.lang.OutOfMemoryError, "
            f"spark-submit exit code {SPARK_OOM_EXIT_CODE}) with spark.driver.memory {heap}; raise "
            "RECSYS_DRIVER_MEMORY (docs/benchmarks.md#driver-memory gives measured heaps per data size) "
            "(not retried)"
        ) from exc

    def fail_without_retry_on_input_error(self) -> None:
        """When the job's result says its input made it fail, end the task now: a retry cannot help."""
        from airflow.sdk.exceptions import AirflowFailException

        result_file = Path(self.result_path)
        if not result_file.exists():
            return
        try:
            result = json.loads(result_file.read_text())
        except ValueError:
            return
        if result.get("status") == "failed" and result.get("retryable") is False:
            raise AirflowFailException(f"{Path(self.application).name}: {result['error']} (not retried)")


class ScreeningJobOperator(SparkJobOperator):
    """A screening fit of the adaptive search (``music_recsys.pipeline.search``): when its last attempt
    fails, the task ends skipped instead of failed, so the next round is still proposed (a lost fit is
    told to Optuna as failed) while a failure before the search still stops the run."""

    def execute(self, context: Any) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        try:
            return super().execute(context)
        except AirflowSkipException:
            raise
        except Exception as exc:
            from airflow.sdk.exceptions import AirflowFailException

            if not isinstance(exc, AirflowFailException) and context["ti"].try_number <= (self.retries or 0):
                raise  # retries left
            raise AirflowSkipException(f"screening fit lost, the search goes on without it: {exc}") from exc
