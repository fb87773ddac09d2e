"""The DAG on a real Spark standalone cluster: a master and a worker started from the installed pyspark
on 127.0.0.1, spark_default pointing at it in client mode. The master's JSON must list every job of
the run as a completed application."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from music_recsys import datagen

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.slow]


def _master_state(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory, free_port, wait_until):
    spark_class = str(Path(sys.executable).parent / "spark-class")
    work = tmp_path_factory.mktemp("spark-cluster")
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_WORKER_DIR": str(work / "worker"),
        "SPARK_LOG_DIR": str(work / "logs"),
    }
    port, ui_port, worker_ui = free_port(), free_port(), free_port()
    master = subprocess.Popen(
        [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui_port),
        ],
        env=env,
        stdout=open(work / "master.log", "w"),
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [
            spark_class,
            "org.apache.spark.deploy.worker.Worker",
            f"spark://127.0.0.1:{port}",
            "--cores",
            "2",
            "--memory",
            "3g",
            "--webui-port",
            str(worker_ui),
            "--host",
            "127.0.0.1",
        ],
        env=env,
        stdout=open(work / "worker.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: any(w["state"] == "ALIVE" for w in _master_state(ui_port)["workers"]),
            90,
            f"Spark worker did not register (logs in {work})",
        )
        yield {"port": port, "ui_port": ui_port}
    finally:
        for process in (worker, master):
            process.terminate()
        for process in (worker, master):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_dag_runs_on_a_standalone_cluster(standalone_cluster, airflow_db, data_root, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    datagen.main(out=str(data_root / "cluster"), users=600, items=300, holdout_users=80)
    connection = {
        "conn_type": "spark",
        "host": "spark://127.0.0.1",
        "port": standalone_cluster["port"],
        "extra": {"deploy-mode": "client"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps(connection))
    monkeypatch.setenv("RECSYS_SPARK_DRIVER_HOST", "127.0.0.1")
    monkeypatch.setenv("RECSYS_RETRIES", "0")
    dag = DagBag(dag_folder=str(REPO / "dags")).dags["music_recsys"]
    dagrun = dag.test(
        run_conf={
            "train_path": "cluster/train.parquet",
            "validation_path": "cluster/validation.parquet",
            "test_path": "cluster/test.parquet",
            "ranks": [4],
            "reg_params": [0.1],
            "alphas": [5.0],
            "transforms": ["none"],
            "k": 20,
            "max_iter": 3,
            "annoy_trees": [2],
            "annoy_search_k": [100],
        }
    )
    assert str(dagrun.state).endswith("success")
    state = _master_state(standalone_cluster["ui_port"])
    completed = {app["name"] for app in state["completedapps"]}
    assert {
        "music_recsys.ingest",
        "music_recsys.index",
        "music_recsys.fit.r4_reg0.1_a5_none",
        "music_recsys.evaluate",
    } <= completed
    assert all(app["state"] == "FINISHED" for app in state["completedapps"])
    assert not state["activeapps"]
