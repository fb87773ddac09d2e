"""A failed run under a real deployment (api-server, scheduler, dag-processor on loopback; no Spark): the
DAG's on_failure_callback runs in the dag-processor, where there is no metadata DB, reads the task states
through the supervisor, writes failure.json and sets the run's note through the REST API with the
``recsys_airflow_api`` connection (a user of the simple auth manager). About 30 s."""

from __future__ import annotations

import json

import pytest

from harness.airflow import local_airflow
from harness.services import free_port, wait_until
from music_recsys.pipeline import failure as F
from music_recsys.run_folders import run_dir

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_dag_processor_writes_failure_json_and_the_runs_note(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-failure-note")
    port = free_port()
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({"ops": "s3cret"}))
    api = {"conn_type": "http", "host": "127.0.0.1", "port": port, "login": "ops", "password": "s3cret"}
    env = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "ops:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        f"AIRFLOW_CONN_{F.api_conn_id().upper()}": json.dumps(api),
        "RECSYS_RETRIES": "0",
        "RECSYS_SCHEDULE_CRON": "",  # data drops only: unpausing must not start a scheduled run
    }
    with local_airflow(home, port, env) as airflow:
        airflow.unpause()
        run_id = airflow.trigger({"train_path": "missing/train.parquet"}, "manual__failure_note")
        [run] = airflow.wait_for_runs(1, 240)
        assert run["state"] == "failed"
        path = run_dir(run_id) / F.FAILURE_FILE

        def written() -> bool:  # the callback runs after the run is marked failed
            return path.exists() and "note" in json.loads(path.read_text())

        wait_until(written, 120, f"{path} with the note's outcome (logs in {home})")
        failure = json.loads(path.read_text())
        wait_until(lambda: airflow.get(f"dags/music_recsys/dagRuns/{run_id}")["note"], 30, "the run's note")
        note = airflow.get(f"dags/music_recsys/dagRuns/{run_id}")["note"]
    assert (failure["stage"], failure["task"], failure["retryable"], failure["note"]) == (
        "prepare",
        "prepare",
        False,
        "rest_api",
    )
    assert failure["message"].startswith("train_path: ") and failure["message"].endswith("does not exist")
    assert failure["not_run"][:3] == ["grid_points", "ingest", "check_data"] and "finish" in failure["not_run"]
    assert failure["states"]["prepare"] == "failed" and failure["states"]["publish"] == "upstream_failed"
    assert note == F.note_line(failure) and note.startswith("Failed at prepare (not retried: fix the input): ")
