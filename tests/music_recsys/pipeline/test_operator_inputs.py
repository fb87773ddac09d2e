"""SparkJobOperator(inputs_from=...): args and result path read from another task's XCom when the task
starts, so that task is no direct upstream (the gate in front of ``evaluate``, issue #19)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from music_recsys.pipeline.operators import SparkJobOperator


class FakeTI:
    """``ti.xcom_pull`` over a dict of (task id, key) → value."""

    def __init__(self, xcoms: dict[tuple[str, str], object]):
        self.xcoms = xcoms
        self.pulled: list[tuple[str, str]] = []

    def xcom_pull(self, task_ids: str, key: str):
        self.pulled.append((task_ids, key))
        return self.xcoms.get((task_ids, key))


def test_args_and_result_path_come_from_the_planning_tasks_xcom(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TOY_SPARK", json.dumps({"conn_type": "spark", "host": "local[2]"}))
    result = tmp_path / "evaluate.json"
    ti = FakeTI({("prepare", "evaluate_args"): ["--run-dir", "runs/r1"], ("prepare", "evaluate_result"): str(result)})
    submitted = []

    def fake_submit(self, context):
        submitted.append(list(self.application_args))
        Path(self.result_path).write_text('{"best_trial_id": "r8"}')

    monkeypatch.setattr(SparkSubmitOperator, "execute", fake_submit)
    op = SparkJobOperator(
        task_id="evaluate", application="jobs/evaluate.py", inputs_from="prepare", conn_id="toy_spark"
    )
    assert op.execute({"ti": ti}) == {"best_trial_id": "r8"}
    assert submitted == [["--run-dir", "runs/r1"]] and op.result_path == str(result)
    assert ti.pulled == [("prepare", "evaluate_args"), ("prepare", "evaluate_result")]


def test_a_missing_xcom_names_the_task_and_key(monkeypatch):
    op = SparkJobOperator(task_id="evaluate", application="jobs/evaluate.py", inputs_from="prepare")
    monkeypatch.setattr(SparkSubmitOperator, "execute", lambda self, context: pytest.fail("must not submit"))
    with pytest.raises(RuntimeError, match="task 'evaluate': no XCom 'evaluate_args' from task 'prepare'"):
        op.execute({"ti": FakeTI({})})


def test_an_operator_needs_a_result_path_or_inputs_from():
    with pytest.raises(ValueError, match="task 'toy': give result_path, or inputs_from"):
        SparkJobOperator(task_id="toy", application="jobs/x.py")


def test_evaluates_only_upstream_is_fit():
    """Any direct upstream that succeeds satisfies all_done_min_one_success: it must be the fits only."""
    from harness.airflow import load_dag

    evaluate = load_dag().get_task("evaluate")
    assert evaluate.upstream_task_ids == {"fit"} and evaluate.trigger_rule == "all_done_min_one_success"
    assert evaluate.inputs_from == "prepare"
