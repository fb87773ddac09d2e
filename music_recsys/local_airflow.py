"""Airflow as a deployment runs it, on one machine: api-server (which also serves the execution API the
task processes talk to), scheduler with LocalExecutor, and dag-processor, on loopback. Used by the
tests that need a real scheduler (UI, backfills, concurrent runs) and by the orchestration benchmark.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

DAG_ID = "music_recsys"


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


class LocalAirflow:
    def __init__(self, base_url: str, env: dict[str, str]):
        self.base_url = base_url
        self.env = env
        self.airflow = str(Path(sys.executable).parent / "airflow")

    def cli(self, *args: str) -> str:
        return subprocess.run([self.airflow, *args], env=self.env, check=True, capture_output=True, text=True).stdout

    def unpause(self) -> None:
        self.cli("dags", "unpause", DAG_ID)

    def trigger(self, conf: dict, run_id: str) -> str:
        self.cli("dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps(conf))
        return run_id

    def runs(self) -> list[dict]:
        return get_json(f"{self.base_url}/api/v2/dags/{DAG_ID}/dagRuns?order_by=logical_date")["dag_runs"]

    def wait_for_runs(self, count: int, timeout: float) -> list[dict]:
        """Poll until ``count`` runs exist and all have finished; return them (oldest logical date first)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                runs = self.runs()
            except OSError:  # a busy api-server (the runs' Spark jobs share the cores) may answer late
                runs = []
            if len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs):
                return runs
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} runs not finished within {timeout:.0f} s: {runs}")
            time.sleep(3)


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
        **(extra_env or {}),
    }
    service = LocalAirflow(f"http://127.0.0.1:{port}", env)
    service.cli("db", "migrate")
    with contextlib.ExitStack() as stack:
        for args in (["api-server", "--port", str(port)], ["scheduler"], ["dag-processor"]):
            log = stack.enter_context(open(home / f"{args[0]}.log", "w"))
            process = subprocess.Popen([service.airflow, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
            stack.callback(_stop, process)
        deadline = time.monotonic() + 180
        while True:
            try:
                if get_json(f"{service.base_url}/api/v2/dags/{DAG_ID}")["dag_id"] == DAG_ID:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"DAG {DAG_ID} not served within 180 s (logs in {home})")
            time.sleep(2)
        yield service


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
