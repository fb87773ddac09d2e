"""End to end: the real DAG on tiny generated data, spark-submit on local Spark, results in PostgreSQL.

One grid point is made to fail (the drop transform with a threshold above every count) to show that
the others are still evaluated and recorded, and that the failure is recorded with its reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from music_recsys import datagen
from music_recsys.config import run_dir
from music_recsys.results import ResultsStore

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def tiny_data(data_root):
    out = data_root / "tiny"
    datagen.main(out=str(out), users=1200, items=500, holdout_users=160, mean_tracks=14.0)
    return out


def test_dag_end_to_end_records_trials_in_postgres(airflow_db, tiny_data, postgres_url, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW_CONN_RECSYS_RESULTS", postgres_url.replace("postgresql://", "postgres://"))
    monkeypatch.setenv("RECSYS_RETRIES", "0")
    dag = DagBag(dag_folder=str(REPO / "dags")).dags["music_recsys"]
    conf = {
        "train_path": "tiny/train.parquet",
        "validation_path": "tiny/validation.parquet",
        "test_path": str(tiny_data / "test.parquet"),
        "ranks": [8],
        "reg_params": [0.1],
        "alphas": [1.0, 10.0],
        "transforms": ["none", "drop"],
        "drop_threshold": 100000,
        "k": 50,
        "max_iter": 5,
        "annoy_trees": [1, 4],
        "annoy_search_k": [50, 500, 100000],
    }
    dagrun = dag.test(run_conf=conf)
    assert str(dagrun.state).endswith("success")

    store = ResultsStore(postgres_url)
    als = {(r["trial_id"], r["split"]): r for r in store.fetch("als_trials", dagrun.run_id)}
    ann = store.fetch("ann_trials", dagrun.run_id)
    store.close()

    validation = {t: r for (t, s), r in als.items() if s == "validation"}
    assert set(validation) == {
        "popularity",
        "r8_reg0.1_a1_none",
        "r8_reg0.1_a10_none",
        "r8_reg0.1_a1_drop",
        "r8_reg0.1_a10_drop",
    }
    for trial_id in ("r8_reg0.1_a1_drop", "r8_reg0.1_a10_drop"):
        failed = validation[trial_id]
        assert failed["status"] == "failed" and "leaves no training rows" in failed["error"]
        assert failed["map"] is None
    ok = [r for r in validation.values() if r["status"] == "success"]
    assert len(ok) == 3
    for row in ok:
        assert 0.0 < row["map"] <= 1.0 and 0.0 < row["ndcg_at_k"] <= 1.0
        assert 0.0 < row["precision_at_k"] <= 1.0 and row["map_at_k"] <= 1.0
        assert row["n_users"] == 80 and row["k"] == 50 and row["exclude_seen"] is True
    best = [r for r in validation.values() if r["is_best"]]
    assert len(best) == 1 and best[0]["map"] == max(r["map"] for r in ok if r["model"] == "als")
    assert best[0]["map"] > validation["popularity"]["map"]  # taste structure is learnable
    assert best[0]["fit_seconds"] > 0
    tests = {t for (t, s) in als if s == "test"}
    assert tests == {"popularity", best[0]["trial_id"]}

    metrics = {r["metric"] for r in ann}
    assert metrics == {"exact", "exact_batched", "dot", "angular_ip"}
    assert {r["k"] for r in ann} == {50}
    for row in ann:
        assert 0.0 <= row["recall"] <= 1.0 and row["qps"] > 0 and row["p99_ms"] >= row["p50_ms"]
    operating = [r for r in ann if r["is_operating_point"]]
    assert len(operating) <= 1 and all(r["recall"] >= 0.9 for r in operating)
    exhaustive = [r for r in ann if r["metric"] == "angular_ip" and r["search_k"] == 100000]
    assert exhaustive and all(r["recall"] > 0.99 for r in exhaustive)

    report_dir = run_dir(dagrun.run_id) / "report"
    assert (report_dir / "als_grid.png").stat().st_size > 10_000
    assert (report_dir / "fast_search.png").stat().st_size > 10_000
    assert best[0]["trial_id"] in (report_dir / "report.md").read_text()
    assert os.path.exists(run_dir(dagrun.run_id) / "trials" / best[0]["trial_id"] / "item_factors.npy")
