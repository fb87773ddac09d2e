"""Airflow for tests and benchmarks: the DAG run in-process (``dag.test``), or Airflow as a deployment
runs it on one machine — api-server (which also serves the execution API the task processes talk to),
scheduler with LocalExecutor, and dag-processor, on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.services import BIN, get_json, stop, wait_until

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "music_recsys"


def load_dag():
    """The DAG as the dag-processor would parse it (no metadata DB needed)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.dags[DAG_ID]


# Where dag.test's scheduling loop lives (tests/harness/test_airflow.py checks it still does).
DAG_TEST_MODULE = "airflow.sdk.definitions.dag"


def run_dag(conf: dict[str, Any], logical_date: datetime | None = None):
    """One run of the DAG in this process, every task in sequence (``dag.test``); the DagRun."""
    dag = load_dag()
    with quick_polls(), remembered_param_checks():
        return dag.test(run_conf=conf, logical_date=logical_date)


@contextlib.contextmanager
def remembered_param_checks() -> Iterator[None]:
    """Each time ``dag.test`` serializes the DAG, Airflow checks every param of every task against its schema
    (``jsonschema.validate``, which first checks the schema against its dialect's metaschema): the same
    few hundred checks tens of thousands of times a run (measured: docs/development.md). Within this
    block a (value, schema) pair that passed once passes again without the check; one that fails is
    checked every time, so its error is jsonschema's own."""
    import jsonschema

    real = jsonschema.validate
    passed: set[tuple[str, str]] = set()

    def validate(instance: Any, schema: Any, *args: Any, **kwargs: Any) -> None:
        # repr, not JSON, for the value: jsonschema tells a tuple from a list, and True from 1.
        key = (repr(instance), json.dumps(schema, sort_keys=True, default=repr))
        if key not in passed:
            real(instance, schema, *args, **kwargs)
            passed.add(key)

    jsonschema.validate = validate
    try:
        yield
    finally:
        jsonschema.validate = real


@contextlib.contextmanager
def quick_polls(seconds: float = 0.1) -> Iterator[None]:
    """``dag.test`` sleeps 1 s each time no task is ready to run: after each level of a skip cascading down
    (grid mode's skipped search chain takes three) and while a retry's delay runs out. Its sleeps last
    ``seconds`` instead; every other caller's sleep is left alone (the caller is looked up by its module)."""
    import sys
    import time

    real = time.sleep

    def sleep(wanted: float) -> None:
        real(seconds if sys._getframe(1).f_globals.get("__name__") == DAG_TEST_MODULE else wanted)

    time.sleep = sleep
    try:
        yield
    finally:
        time.sleep = real


def run_summary(run_id: str) -> dict[str, Any]:
    """The report task's ``summary.json`` of a run."""
    from music_recsys.run_folders import run_dir

    return json.loads((run_dir(run_id) / "report" / "summary.json").read_text())


def run_dag_summary(conf: dict[str, Any], logical_date: datetime | None = None) -> dict[str, Any]:
    """``run_dag``, which must succeed; the run's summary."""
    dagrun = run_dag(conf, logical_date)
    if not str(dagrun.state).endswith("success"):
        raise RuntimeError(f"DAG run {dagrun.run_id} ended {dagrun.state}; see the task logs above")
    return run_summary(dagrun.run_id)


class LocalAirflow:
    def __init__(self, base_url: str, env: dict[str, str]):
        self.base_url = base_url
        self.env = env
        self.airflow = str(BIN / "airflow")

    def cli(self, *args: str) -> str:
        return subprocess.run([self.airflow, *args], env=self.env, check=True, capture_output=True, text=True).stdout

    def unpause(self) -> None:
        self.cli("dags", "unpause", DAG_ID)

    def trigger(self, conf: dict, run_id: str) -> str:
        self.cli("dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps(conf))
        return run_id

    def get(self, path: str) -> dict:
        return get_json(f"{self.base_url}/api/v2/{path}")

    def runs(self, run_type: str | None = None) -> list[dict]:
        """The DAG's runs (oldest logical date first), or only those of ``run_type`` (``backfill``, ...)."""
        query = f"order_by=logical_date&run_type={run_type}" if run_type else "order_by=logical_date"
        return self.get(f"dags/{DAG_ID}/dagRuns?{query}")["dag_runs"]

    def task_instances(self, run_id: str) -> list[dict]:
        return self.get(f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def wait_for_runs(self, count: int, timeout: float, run_type: str | None = None) -> list[dict]:
        """Poll until ``count`` runs (of ``run_type``) exist and all have finished; return them (oldest logical
        date first)."""
        found: list[dict] = []

        def finished() -> bool:
            nonlocal found
            found = self.runs(run_type)  # a busy api-server (the runs' Spark jobs share the cores) may answer late
            return len(found) >= count and all(r["state"] in ("success", "failed") for r in found)

        wait_until(finished, timeout, f"{count} runs finished (last seen: {found})", interval=3)
        return found


@contextlib.contextmanager
def local_airflow(home: Path, port: int, extra_env: dict[str, str] | None = None) -> Iterator[LocalAirflow]:
    """Start the three services with ``AIRFLOW_HOME=home`` and ``extra_env``; stop them on exit."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # The DAG file does not change while a stack runs: parsed once (and again for a callback), not every
        # 30 s (Airflow's default), each time in a new process.
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
        # A task's end is noticed within 1 s, not up to 5 (docker-compose.yaml says why).
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        **(extra_env or {}),
    }
    service = LocalAirflow(f"http://127.0.0.1:{port}", env)
    service.cli("db", "migrate")
    with contextlib.ExitStack() as stack:
        processes: list[subprocess.Popen] = []
        stack.callback(lambda: stop(*processes))  # all three at once on the way out
        for args in (["api-server", "--port", str(port)], ["scheduler"], ["dag-processor"]):
            log = stack.enter_context(open(home / f"{args[0]}.log", "w"))
            processes.append(subprocess.Popen([service.airflow, *args], env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_until(
            lambda: service.get(f"dags/{DAG_ID}")["dag_id"] == DAG_ID,
            180,
            f"DAG {DAG_ID} served (logs in {home})",
            interval=2,
        )
        yield service
