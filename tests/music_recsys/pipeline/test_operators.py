"""SparkJobOperator.execute: the connection picks spark-submit or Spark Connect, the job's result file
comes back as XCom, a failure the job calls not retryable ends the task, and only an undefined
connection falls back to local Spark."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from music_recsys.pipeline import job
from music_recsys.pipeline.job import InputError
from music_recsys.pipeline.operators import LOCAL_SPARK_CONNECTION, SparkJobOperator

JOB = """
import argparse, json
from music_recsys.pipeline.job import InputError

def run(spark, value, result):
    if value == "bad":
        raise InputError("value 'bad' cannot work")
    json.dump({"value": value, "spark": spark}, open(result, "w"))
    return {}

def parse_args(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--value", required=True)
    p.add_argument("--result", required=True)
    return p.parse_args(argv)
"""


def _operator(tmp_path: Path, conn_id: str, value: str = "ok") -> SparkJobOperator:
    job = tmp_path / "toy_job.py"
    job.write_text(JOB)
    result = tmp_path / "result.json"
    return SparkJobOperator(
        task_id="toy",
        application=str(job),
        application_args=["--value", value, "--result", str(result)],
        result_path=str(result),
        conn_id=conn_id,
    )


def test_spark_connection_submits_and_returns_the_result_file(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TOY_SPARK", json.dumps({"conn_type": "spark", "host": "local[2]"}))
    op = _operator(tmp_path, "toy_spark")
    (tmp_path / "result.json").write_text('{"stale": true}')  # a previous attempt's: never returned
    submitted = []

    def fake_submit(self, context):
        submitted.append(self.application_args)
        Path(self.result_path).write_text('{"rows": 3}')

    monkeypatch.setattr(SparkSubmitOperator, "execute", fake_submit)
    assert op.execute({}) == {"rows": 3}
    assert submitted == [["--value", "ok", "--result", str(tmp_path / "result.json")]]
    assert op.conf["spark.ui.enabled"] == "false" and op.conf["spark.sql.shuffle.partitions"] == "4"
    # spark-submit's environment, inherited by the local driver JVM where every task runs.
    assert op.env_vars == {"OPENBLAS_NUM_THREADS": "1"}


def test_the_blas_threads_setting_reaches_spark_submit_and_a_given_env_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_SPARK_BLAS_THREADS", "2")
    assert _operator(tmp_path, "toy_spark").env_vars == {"OPENBLAS_NUM_THREADS": "2"}
    job = tmp_path / "toy_job.py"
    op = SparkJobOperator(task_id="t", application=str(job), result_path="r", env_vars={"OPENBLAS_NUM_THREADS": "4"})
    assert op.env_vars == {"OPENBLAS_NUM_THREADS": "4"}
    assert op.conf["spark.executorEnv.OPENBLAS_NUM_THREADS"] == "2"


def test_a_fit_tasks_own_settings_are_added_to_every_jobs_settings(tmp_path):
    from music_recsys.pipeline.spark import fit_conf, spark_conf

    conf = fit_conf(8)  # a rank-8 task: Java BLAS (the default RECSYS_NATIVE_BLAS_MIN_RANK is 40)
    op = SparkJobOperator(task_id="fit", application=str(tmp_path / "fit.py"), result_path="r", conf=conf)
    assert "allowNative=false" in op.conf["spark.driver.extraJavaOptions"]
    assert op.conf == {**spark_conf(), **conf} and set(conf) < set(op.conf)


def test_a_submit_that_writes_no_result_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TOY_SPARK", json.dumps({"conn_type": "spark", "host": "local[2]"}))
    monkeypatch.setattr(SparkSubmitOperator, "execute", lambda self, context: None)
    with pytest.raises(RuntimeError, match="wrote no result"):
        _operator(tmp_path, "toy_spark").execute({})


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"status": "failed", "retryable": False, "error": "InputError: 4 of 5 rows rejected"}, AirflowFailException),
        ({"status": "failed", "retryable": True, "error": "Py4JError: lost"}, AirflowException),
        (None, AirflowException),  # killed before it could write anything: retried
    ],
)
def test_failed_submit_is_retried_unless_the_job_says_not(tmp_path, monkeypatch, result, expected):
    monkeypatch.setenv("AIRFLOW_CONN_TOY_SPARK", json.dumps({"conn_type": "spark", "host": "local[2]"}))

    def failing_submit(self, context):
        if result is not None:
            Path(self.result_path).write_text(json.dumps(result))
        raise AirflowException("Cannot execute: spark-submit ... Error code is: 2.")

    monkeypatch.setattr(SparkSubmitOperator, "execute", failing_submit)
    with pytest.raises(AirflowException) as info:
        _operator(tmp_path, "toy_spark").execute({})
    assert type(info.value) is expected
    if expected is AirflowFailException:
        assert "4 of 5 rows rejected" in str(info.value) and "not retried" in str(info.value)


def test_undefined_connection_falls_back_to_local_spark_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AIRFLOW_CONN_TOY_UNDEFINED", raising=False)
    seen = []
    monkeypatch.setattr(SparkSubmitOperator, "execute", lambda self, context: seen.append(self.spark_connection()))
    op = _operator(tmp_path, "toy_undefined")
    with contextlib.suppress(RuntimeError):  # the fake submit writes no result
        op.execute({})
    assert seen[0].conn_type == "spark" and seen[0].host == "local[*]"
    assert json.loads(LOCAL_SPARK_CONNECTION) == {"conn_type": "spark", "host": "local[*]"}
    # Airflow's task logger writes to stdout here: one INFO line naming the connection and the master.
    notes = [line for line in capsys.readouterr().out.splitlines() if "is not defined" in line]
    assert len(notes) == 1 and "[info" in notes[0]
    assert "Spark connection 'toy_undefined' is not defined: running Spark here, master local[*]" in notes[0]


def test_other_connection_errors_fail_the_task(tmp_path, monkeypatch):
    from airflow.sdk import BaseHook

    def broken(conn_id):
        raise PermissionError("secrets backend: access denied")

    monkeypatch.setattr(BaseHook, "get_connection", staticmethod(broken))
    monkeypatch.setattr(SparkSubmitOperator, "execute", lambda self, context: pytest.fail("must not submit"))
    with pytest.raises(PermissionError, match="access denied"):
        _operator(tmp_path, "toy_spark").execute({})


@contextlib.contextmanager
def _fake_session(url, retry_seconds):
    yield f"session at {url} (retries {retry_seconds:g} s)"


def test_spark_connect_connection_runs_the_job_in_process(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_TOY_CONNECT",
        json.dumps({"conn_type": "spark_connect", "host": "10.1.2.3", "port": 15002, "extra": {"retry_seconds": 5}}),
    )
    monkeypatch.setattr("music_recsys.pipeline.spark.connect_session", _fake_session)
    monkeypatch.setattr(SparkSubmitOperator, "execute", lambda self, context: pytest.fail("must not spark-submit"))
    assert _operator(tmp_path, "toy_connect").execute({}) == {
        "value": "ok",
        "spark": "session at sc://10.1.2.3:15002/ (retries 5 s)",
    }


def test_spark_connect_input_error_is_not_retried_and_leaves_its_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TOY_CONNECT", json.dumps({"conn_type": "spark_connect", "host": "h", "port": 1}))
    monkeypatch.setattr("music_recsys.pipeline.spark.connect_session", _fake_session)
    with pytest.raises(AirflowFailException, match="value 'bad' cannot work"):
        _operator(tmp_path, "toy_connect", value="bad").execute({})
    written = json.loads((tmp_path / "result.json").read_text())
    assert written["status"] == "failed" and written["retryable"] is False


def test_unreachable_connect_server_fails_with_its_address():
    from harness.services import free_port
    from music_recsys.pipeline.spark import connect_session

    port = free_port()  # nothing listens there
    with pytest.raises(ConnectionError, match=rf"Spark Connect server at sc://127.0.0.1:{port} did not answer"):
        with connect_session(f"sc://127.0.0.1:{port}", retry_seconds=1):
            pass
    import os

    assert "SPARK_CONNECT_MODE_ENABLED" not in os.environ  # the process may still run classic Spark


def test_job_file_loads_as_a_module(tmp_path):
    (tmp_path / "toy_job.py").write_text(JOB)
    module = job.load_job(str(tmp_path / "toy_job.py"))
    assert vars(module.parse_args(["--value", "v", "--result", "r"])) == {"value": "v", "result": "r"}
    with pytest.raises(InputError):
        module.run(None, "bad", str(tmp_path / "r.json"))


def test_a_driver_out_of_memory_is_not_retried_and_says_which_setting_to_raise(tmp_path, monkeypatch):
    # At the study's size the fit dies this way with the default 2g heap (bench/RESULTS.md, stage replay):
    # the JVM exits 52 before the job can write a result, and the same heap would fail again.
    monkeypatch.setenv("AIRFLOW_CONN_TOY_SPARK", json.dumps({"conn_type": "spark", "host": "local[2]"}))
    monkeypatch.setenv("RECSYS_DRIVER_MEMORY", "2g")

    def dying_submit(self, context):
        raise AirflowException("Cannot execute: spark-submit --master local[2] toy_job.py. Error code is: 52.")

    monkeypatch.setattr(SparkSubmitOperator, "execute", dying_submit)
    with pytest.raises(AirflowFailException) as info:
        _operator(tmp_path, "toy_spark").execute({})
    message = str(info.value)
    assert message.startswith("toy_job.py: the Spark driver ran out of memory")
    assert "spark.driver.memory 2g" in message and "raise RECSYS_DRIVER_MEMORY" in message
    assert "Error code is: 52." in str(info.value.__cause__)


@pytest.mark.parametrize(
    ("result", "try_number", "expected"),
    [
        (None, 1, AirflowException),  # a transient failure with a retry left: retried as any fit
        (None, 2, "skipped"),  # the last attempt: the screening fit is lost, the search goes on
        ({"status": "failed", "retryable": False, "error": "InputError: no training rows"}, 1, "skipped"),
    ],
)
def test_a_lost_screening_fit_ends_skipped_on_its_last_attempt(tmp_path, monkeypatch, result, try_number, expected):
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowSkipException

    from music_recsys.pipeline.operators import ScreeningJobOperator

    monkeypatch.setenv("AIRFLOW_CONN_TOY_SPARK", json.dumps({"conn_type": "spark", "host": "local[2]"}))

    def failing_submit(self, context):
        if result is not None:
            Path(self.result_path).write_text(json.dumps(result))
        raise AirflowException("Cannot execute: spark-submit ... Error code is: 1.")

    monkeypatch.setattr(SparkSubmitOperator, "execute", failing_submit)
    result_path = tmp_path / "result.json"
    (tmp_path / "toy_job.py").write_text(JOB)
    op = ScreeningJobOperator(task_id="screen", application=str(tmp_path / "toy_job.py"), retries=1,
                              application_args=["--value", "x", "--result", str(result_path)],
                              result_path=str(result_path), conn_id="toy_spark")  # fmt: skip
    context = {"ti": SimpleNamespace(try_number=try_number)}
    if expected == "skipped":
        with pytest.raises(AirflowSkipException, match="screening fit lost, the search goes on without it"):
            op.execute(context)
    else:
        with pytest.raises(expected) as info:
            op.execute(context)
        assert type(info.value) is expected
