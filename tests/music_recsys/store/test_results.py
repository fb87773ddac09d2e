"""The results store: same upsert code on SQLite and PostgreSQL; re-runs rewrite, never duplicate."""

from __future__ import annotations

import pytest

from music_recsys.store.results import ResultsStore, to_sqlalchemy_url
from tests.stores import open_store, sqlite_url

ALS_COLUMNS = {
    "run_id",
    "trial_id",
    "rank",
    "reg_param",
    "alpha",
    "transform",
    "split",
    "map",
    "map_at_k",
    "precision_at_k",
    "ndcg_at_k",
    "fit_seconds",
    "status",
}
ANN_COLUMNS = {
    "run_id",
    "metric",
    "n_trees",
    "search_k",
    "k",
    "recall",
    "qps",
    "p50_ms",
    "p99_ms",
    "build_seconds",
}


def _als_row(**over):
    row = {
        "run_id": "r1",
        "trial_id": "r5_reg0.1_a1_none",
        "model": "als",
        "rank": 5,
        "reg_param": 0.1,
        "alpha": 1.0,
        "transform": "none",
        "split": "validation",
        "map": 0.1,
        "map_at_k": 0.1,
        "precision_at_k": 0.02,
        "ndcg_at_k": 0.3,
        "recall_at_k": 0.5,
        "fit_seconds": 3.0,
        "status": "success",
        "unknown_column": "ignored",
    }
    return {**row, **over}


def _ann_row(**over):
    row = {
        "run_id": "r1",
        "metric": "dot",
        "n_trees": 10,
        "search_k": 1000,
        "k": 50,
        "candidates": 50,
        "recall": 0.8,
        "qps": 900.0,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "build_seconds": 0.5,
    }
    return {**row, **over}


def _exercise(store: ResultsStore):
    assert store.upsert("als_trials", [_als_row(), _als_row(split="test", map=0.09)]) == 2
    assert store.upsert("als_trials", [_als_row(map=0.2)]) == 1  # rerun: rewrite, not a new row
    rows = store.fetch("als_trials", "r1")
    assert len(rows) == 2
    assert ALS_COLUMNS <= set(rows[0])
    validation = next(r for r in rows if r["split"] == "validation")
    assert validation["map"] == pytest.approx(0.2)
    store.upsert("ann_trials", [_ann_row(), _ann_row(k=500, candidates=500, recall=0.5)])
    store.upsert("ann_trials", [_ann_row(recall=0.85)])
    ann = store.fetch("ann_trials", "r1")
    assert ANN_COLUMNS <= set(ann[0])
    assert sorted(r["recall"] for r in ann) == [0.5, 0.85]
    assert store.fetch("als_trials", "other-run") == []


def test_sqlite_store(tmp_path):
    with open_store(sqlite_url(tmp_path)) as store:
        _exercise(store)


@pytest.mark.postgres
def test_postgres_store(postgres_url):
    store = open_store(postgres_url)
    _exercise(store)
    # Values are bound parameters: a quote in an id is data, not SQL.
    store.upsert("als_trials", [_als_row(trial_id="x'); DROP TABLE als_trials; --")])
    assert len(store.fetch("als_trials", "r1")) == 3
    store.close()


def test_airflow_uri_becomes_sqlalchemy_url():
    assert to_sqlalchemy_url("postgres://u:p@h:5432/db") == "postgresql+psycopg2://u:p@h:5432/db"
    assert to_sqlalchemy_url("sqlite:////tmp/x.sqlite") == "sqlite:////tmp/x.sqlite"


@pytest.mark.postgres
def test_rows_of_several_tables_land_together_or_not_at_all(postgres_url):
    """``record``'s write: a failure in the last table's statement leaves the earlier tables untouched."""
    store = open_store(postgres_url)
    assert store.upsert_together({"als_trials": [_als_row(run_id="t1")], "ann_trials": [_ann_row(run_id="t1")]}) == {
        "als_trials": 1,
        "ann_trials": 1,
    }
    broken = _ann_row(run_id="t2", n_trees=None)  # NOT NULL key column: the second statement fails
    with pytest.raises(Exception, match="n_trees"):
        store.upsert_together({"als_trials": [_als_row(run_id="t2")], "ann_trials": [broken]})
    assert store.fetch("als_trials", "t2") == [] and store.fetch("ann_trials", "t2") == []
    assert len(store.fetch("als_trials", "t1")) == 1
    store.close()
