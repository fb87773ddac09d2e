"""A real backfill: `airflow backfill create` over two weekly dates with a small grid in --dag-run-conf,
executed by a running scheduler (LocalExecutor, PostgreSQL metadata) with both runs active at once.
Each date reads its own data partition (`drops/{{ ds }}/…`), writes its own run directory and records
its own rows in the results store; no scheduled run starts when the DAG is unpaused."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from music_recsys import datagen
from music_recsys.config import run_dir
from music_recsys.results import ResultsStore

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.postgres, pytest.mark.slow]

DATES = ["2026-01-05", "2026-01-12"]  # two Mondays: the weekly schedule's logical dates (03:00 UTC)
USERS = {"2026-01-05": 500, "2026-01-12": 700}  # different partitions, told apart by their size
CONF = {
    "train_path": "drops/{{ ds }}/train.parquet",
    "validation_path": "drops/{{ ds }}/validation.parquet",
    "test_path": "drops/{{ ds }}/test.parquet",
    "ranks": [4],
    "reg_params": [0.1],
    "alphas": [5.0],
    "transforms": ["none"],
    "k": 20,
    "max_iter": 3,
    "annoy_trees": [2],
    "annoy_search_k": [100],
}


@pytest.fixture(scope="module")
def scheduler(module_postgres, airflow_services, data_root):
    manifests = {
        ds: datagen.main(out=str(data_root / "drops" / ds), users=USERS[ds], items=300, holdout_users=80, seed=i)
        for i, ds in enumerate(DATES)
    }
    results_url = module_postgres()
    airflow = airflow_services(
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=module_postgres().replace("postgresql://", "postgresql+psycopg2://"),
        AIRFLOW_CONN_RECSYS_RESULTS=results_url.replace("postgresql://", "postgres://"),
        # The weekly schedule stays on, but its first tick is far ahead: unpausing starts nothing.
        RECSYS_START_DATE="2100-01-01",
    )
    return airflow, results_url, manifests


def test_backfill_runs_each_date_on_its_partition_concurrently(scheduler, data_root):
    airflow, results_url, manifests = scheduler
    airflow.unpause()
    airflow.cli(
        "backfill", "create", "--dag-id", "music_recsys", "--from-date", DATES[0], "--to-date", "2026-01-13",
        "--max-active-runs", "2", "--dag-run-conf", json.dumps(CONF),
    )  # fmt: skip
    runs = airflow.wait_for_runs(2, timeout=900)
    assert len(runs) == 2, runs

    # Only the two backfill runs: the schedule started nothing.
    assert [r["run_type"] for r in runs] == ["backfill", "backfill"]
    assert [r["state"] for r in runs] == ["success", "success"]
    assert [r["logical_date"][:10] for r in runs] == DATES
    assert all(r["conf"]["ranks"] == [4] for r in runs)
    # Both runs were active at the same time (the backfill allows 2; the fits still queue one at a time).
    spans = [(datetime.fromisoformat(r["start_date"]), datetime.fromisoformat(r["end_date"])) for r in runs]
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans

    store = ResultsStore(results_url)
    try:
        for run, ds in zip(runs, DATES, strict=True):
            directory = run_dir(run["dag_run_id"])
            plan = json.loads((directory / "plan.json").read_text())
            train = plan["ingest_args"][plan["ingest_args"].index("--train") + 1]
            assert train == str(data_root / "drops" / ds / "train.parquet")
            ingest = json.loads((directory / "results" / "ingest.json").read_text())
            assert ingest["splits"]["train"]["rows_read"] == manifests[ds]["stats"]["train"]["rows"]
            rows = store.fetch("als_trials", run["dag_run_id"])
            assert {(r["trial_id"], r["split"]) for r in rows} >= {
                ("popularity", "validation"),
                ("r4_reg0.1_a5_none", "validation"),
                ("r4_reg0.1_a5_none", "test"),
            }
            assert all(r["status"] == "success" for r in rows)
            assert store.fetch("ann_trials", run["dag_run_id"])
        assert run_dir(runs[0]["dag_run_id"]) != run_dir(runs[1]["dag_run_id"])
        assert manifests[DATES[0]]["stats"]["train"]["rows"] != manifests[DATES[1]]["stats"]["train"]["rows"]
    finally:
        store.close()
