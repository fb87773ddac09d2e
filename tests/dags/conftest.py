"""The DAG runs the DAG tests share, made once per session in the order a deployment sees them.

All embedded runs (``dag.test``: every task in this process) record into one results PostgreSQL, so the
model registry and the data check see a history: the reference run (spark-submit to a standalone
cluster) makes the first champion, the Connect run (same data, a newer date) replaces it while a served
API is being queried, and later runs (an older date, a thinned drop) are judged against them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from harness.services import airflow_uri, free_port, get_json, standalone_cluster, stop, wait_until
from tests.dags.dagruns import GRID, VICTIM, Embedded, Hammer, fit_processes, kill_when, paths, sigkill


@pytest.fixture(scope="session")
def embedded(databases, airflow_db, tiny_data) -> Embedded:
    return Embedded(databases.create())


# The Spark application of the reference run's fit task that holds VICTIM (two points per task).
VICTIM_APP = "music_recsys.fit.r8_reg0.1_a1_none..r8_reg0.1_a10_none"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A Spark standalone master and worker (2 cores) on 127.0.0.1, from the installed pyspark."""
    with standalone_cluster(tmp_path_factory.mktemp("spark-cluster")) as ports:
        yield ports


@pytest.fixture(scope="session")
def reference_run(embedded, cluster):
    """Run 1, spark-submit (the default mode) to the standalone cluster in client mode, two grid points per
    fit task (``fits_per_task``: one Spark application fits both): the task fitting VICTIM is SIGKILLed
    mid-run once. Returns the run, what the drill killed, and the master's applications after the run."""
    connection = {"conn_type": "spark", "host": "spark://127.0.0.1", "port": cluster["port"],
                  "extra": {"deploy-mode": "client"}}  # fmt: skip

    def victim_fitting() -> list:  # its processes, once the master runs its application (a JVM takes seconds)
        if not (found := fit_processes(VICTIM)):
            return []
        try:
            active = {app["name"] for app in cluster["state"]()["activeapps"]}
        except OSError:
            return []
        return found if VICTIM_APP in active else []

    with kill_when(victim_fitting, sigkill) as killed:
        # batch_to_store: its batch recommendations also go to the results PostgreSQL (test_dag_e2e.py).
        dagrun = embedded.run(
            {**paths("tiny"), **GRID, "batch_to_store": True, "fits_per_task": 2},
            AIRFLOW_CONN_SPARK_DEFAULT=json.dumps(connection),
            RECSYS_SPARK_DRIVER_HOST="127.0.0.1",
        )
    return {"dagrun": dagrun, "killed": killed, "cluster": cluster["state"]()}


@dataclass
class Served:
    base_url: str
    process: subprocess.Popen
    log: Path

    def get(self, path: str) -> dict:
        return get_json(f"{self.base_url}{path}", timeout=10)


@pytest.fixture(scope="session")
def served(reference_run, embedded, session_dir):
    """``music-recsys serve`` on the registry's champion (the reference run's model), polling every 0.5 s."""
    port = free_port()
    log = session_dir / "serve.log"
    env = {**os.environ, "AIRFLOW_CONN_RECSYS_RESULTS": airflow_uri(embedded.results_url)}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "music-recsys"), "serve", "--port", str(port), "--poll-seconds", "0.5"],
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    server = Served(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until(lambda: server.get("/healthz")["status"] == "ok", 60, f"the API serving a model (log {log})", 0.3)
        yield server
    finally:
        stop(process)


@pytest.fixture(scope="session")
def connect_run(reference_run, served, embedded, connect_server):
    """Run 2, Spark Connect, same data and grid, a newer logical date, while the API is queried without
    pause: once the VICTIM's ALS fit has started (the job runs in this process, so the drill hooks the
    ALS it builds), the Connect server is SIGKILLed and started again."""
    from music_recsys.model import als

    user = _a_validation_user(reference_run["dagrun"].run_id)
    crashed: list[int] = []
    build_als = als.build_als

    def crash_and_restart() -> None:
        time.sleep(0.2)  # the fit is under way on the server
        connect_server.kill()
        connect_server.start()
        crashed.append(connect_server.starts)

    def build_als_then_crash(rank, reg_param, alpha, *args, **kwargs):
        if (rank, reg_param, alpha) == (VICTIM.rank, VICTIM.reg_param, VICTIM.alpha) and not crashed:
            threading.Thread(target=crash_and_restart, daemon=True).start()
        return build_als(rank, reg_param, alpha, *args, **kwargs)

    submits = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SparkSubmitOperator, "execute", lambda self, context: submits.append(self.task_id))
        mp.setattr(als, "build_als", build_als_then_crash)
        with Hammer(served.base_url, user) as hammer:
            dagrun = embedded.run(
                {**paths("tiny"), **GRID},
                logical_date=datetime.now(UTC),
                AIRFLOW_CONN_SPARK_DEFAULT=connect_server.connection(retry_seconds=90),
            )
            version = _published(dagrun)
            wait_until(lambda: hammer.seen[-1][1] == version, 30, f"the API serving the new champion {version}", 0.2)
    return {"dagrun": dagrun, "hammer": hammer, "crashed": crashed, "user": user, "submits": submits}


def _published(dagrun) -> str | None:
    from harness.airflow import run_summary

    return run_summary(dagrun.run_id)["model"]["version"]


def _a_validation_user(run_id: str) -> str:
    import pyarrow.parquet as pq

    from music_recsys.run_folders import run_dir

    return pq.read_table(run_dir(run_id) / "ingest" / "validation", columns=["user_id"])["user_id"][0].as_py()
