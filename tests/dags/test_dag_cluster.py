"""The DAG on a real Spark standalone cluster: a master and a worker started from the installed pyspark
on 127.0.0.1, spark_default pointing at it in client mode. The master's JSON must list every job of
the run as a completed application."""

from __future__ import annotations

import json

import pytest

from harness.services import standalone_cluster
from tests.dags.dagruns import Embedded, paths

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with standalone_cluster(tmp_path_factory.mktemp("spark-cluster")) as ports:
        yield ports


def test_dag_runs_on_a_standalone_cluster(cluster, databases, airflow_db, tiny_data):
    connection = {
        "conn_type": "spark",
        "host": "spark://127.0.0.1",
        "port": cluster["port"],
        "extra": {"deploy-mode": "client"},
    }
    conf = {**paths("tiny"), "ranks": [4], "reg_params": [0.1], "alphas": [5.0], "transforms": ["none"], "k": 20,
            "max_iter": 3, "annoy_trees": [2], "annoy_search_k": [100], "batch_k": 0}  # fmt: skip
    dagrun = Embedded(databases.create()).run(  # its own results store: the lifecycle runs' history is theirs
        conf,
        AIRFLOW_CONN_SPARK_DEFAULT=json.dumps(connection),
        RECSYS_SPARK_DRIVER_HOST="127.0.0.1",
        RECSYS_RETRIES="0",
    )
    assert str(dagrun.state).endswith("success")
    state = cluster["state"]()
    completed = {app["name"] for app in state["completedapps"]}
    assert {
        "music_recsys.ingest",
        "music_recsys.index",
        "music_recsys.fit.r4_reg0.1_a5_none",
        "music_recsys.evaluate",
    } <= completed
    assert all(app["state"] == "FINISHED" for app in state["completedapps"])
    assert not state["activeapps"]
