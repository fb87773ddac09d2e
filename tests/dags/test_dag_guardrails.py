"""Retraining guardrails on the real DAG (Spark Connect, to be quick): a backfill of an older date never
replaces the champion; the same trial at another k is compared like for like; a drop with 60 % of its
train rows gone stops before any fit, or with on_data_drift: warn finishes without being promoted. (A file
of bad rows failing once, without retries: test_dag_fault_drills.py.)"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from harness.airflow import run_summary
from music_recsys.pipeline.plan import planned_trials
from music_recsys.run_folders import RunLayout, read_json, run_dir
from music_recsys.store import registry
from music_recsys.store.results import ResultsStore
from tests.dags.dagruns import GRID, paths, task_instances

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def thinned(data_root, tiny_data):
    """``thin/``: the tiny drop with 60 % of its train rows removed (seeded), validation and test as they were."""
    folder = data_root / "thin"
    folder.mkdir(exist_ok=True)
    train = pq.read_table(data_root / "tiny" / "train.parquet")
    keep = np.sort(np.random.default_rng(0).choice(train.num_rows, int(train.num_rows * 0.4), replace=False))
    pq.write_table(train.take(keep), folder / "train.parquet")
    for split in ("validation", "test"):
        pq.write_table(pq.read_table(data_root / "tiny" / f"{split}.parquet"), folder / f"{split}.parquet")
    return {"rows_before": train.num_rows, "rows_after": len(keep)}


def _champion(embedded) -> str:
    store = ResultsStore(embedded.results_url)
    version = registry.champion(store)["model_version"]
    store.close()
    return version


# One point of the embedded grid, without batch recommendations: these runs judge the gate, not the grid.
ONE_POINT = {**GRID, "alphas": [1.0], "transforms": ["none"], "batch_k": 0}


@pytest.fixture(scope="module")
def older_backfill(connect_run, embedded, connect_server) -> dict:
    """A backfill of an older date (one point at k 50) after the Connect run made its champion."""
    champion = _champion(embedded)
    dagrun = embedded.run(
        {**paths("tiny"), **ONE_POINT},
        logical_date=datetime(2026, 1, 5, 3, tzinfo=UTC),
        AIRFLOW_CONN_SPARK_DEFAULT=connect_server.connection(),
    )
    return {"dagrun": dagrun, "champion_before": champion, "champion_after": _champion(embedded)}


def test_a_backfill_of_an_older_date_leaves_the_champion_alone(older_backfill):
    dagrun = older_backfill["dagrun"]
    assert str(dagrun.state).endswith("success")
    model = run_summary(dagrun.run_id)["model"]
    assert model["status"] == "candidate" and "a backfill never replaces a newer model" in model["reason"]
    assert older_backfill["champion_after"] == older_backfill["champion_before"]
    assert {ti.state for ti in task_instances(dagrun)["announce_champion"]} == {"skipped"}  # no asset event


def test_the_same_trial_at_another_k_is_compared_like_for_like(older_backfill, embedded, connect_server):
    """The issue's report: a champion measured at one k (the backfill's model, k 50), then the very same
    trial (params, seed, data) at k 500. The gate compares the candidate with the champion re-scored on its
    data at k 500, not with the champion's own k-50 figures."""
    summary = run_summary(older_backfill["dagrun"].run_id)
    at_50 = summary["model"]["version"]
    with ResultsStore(embedded.results_url) as store:
        registry.promote_manually(store, at_50, "the k-50 model is champion (test setup)")
        trial = registry.get(store, at_50)["trial_id"]
    plan = read_json(RunLayout(run_dir(older_backfill["dagrun"].run_id)).plan)
    point = next(t for t in planned_trials(plan) if t["trial_id"] == trial)
    same_trial = {**ONE_POINT, "alphas": [point["alpha"]], "transforms": [point["transform"]], "k": 500}
    second = embedded.run(
        {**paths("tiny"), **same_trial}, datetime.now(UTC), AIRFLOW_CONN_SPARK_DEFAULT=connect_server.connection()
    )
    assert str(second.state).endswith("success")
    at_500 = run_summary(second.run_id)["model"]["version"]
    with ResultsStore(embedded.results_url) as store:
        old, new = registry.get(store, at_50), registry.get(store, at_500)
    assert new["trial_id"] == trial and (old["k"], new["k"]) == (50, 500)
    assert (new["compared_with"], new["comparison"]) == (at_50, "rescored")
    assert new["compared_test_map"] == pytest.approx(new["test_map"], abs=0.002)
    assert abs(old["test_map"] - new["test_map"]) > 0.002  # what the old gate compared: not the same thing
    assert new["status"] == "champion" and f"champion {at_50} re-scored on this run's data at k=500" in new["reason"]


def test_a_thinned_drop_stops_before_any_fit(connect_run, embedded, connect_server, thinned):
    dagrun = embedded.run({**paths("thin"), **GRID}, AIRFLOW_CONN_SPARK_DEFAULT=connect_server.connection())
    assert str(dagrun.state).endswith("failed")
    tis = task_instances(dagrun)
    check = tis["check_data"][0]
    assert (check.state, check.try_number) == ("failed", 1)  # retries=3 on this task, none used
    assert {ti.state for ti in tis["index"] + tis["fit"] + tis["publish"]} == {"upstream_failed"}
    store = ResultsStore(embedded.results_url)
    train = next(r for r in store.fetch("data_profiles", dagrun.run_id) if r["split"] == "train")
    store.close()
    assert train["verdict"] == "drift" and train["rows"] == thinned["rows_after"]
    rows = next(v for v in train["violations"] if v["figure"] == "rows")
    assert rows["before"] == thinned["rows_before"] and rows["value"] == pytest.approx(-0.6, abs=0.001)


def test_a_thinned_drop_with_warn_finishes_and_is_not_promoted(connect_run, embedded, connect_server, thinned):
    champion = _champion(embedded)
    dagrun = embedded.run(  # what is judged is the drop, not the grid
        {**paths("thin"), **ONE_POINT, "on_data_drift": "warn"}, AIRFLOW_CONN_SPARK_DEFAULT=connect_server.connection()
    )
    assert str(dagrun.state).endswith("success")
    summary = run_summary(dagrun.run_id)
    assert summary["data_check"] == "drift"
    assert summary["model"]["status"] == "rejected" and "the data check found drift" in summary["model"]["reason"]
    assert "-60.0%" in summary["model"]["reason"]
    assert _champion(embedded) == champion


def test_an_adaptive_search_screens_in_rounds_and_fits_the_best_within_its_budget(embedded, connect_server):
    """``search: adaptive`` on the tiny drop with a one-minute budget and at most 4 fits: screening rounds
    on a share of the users, the best fitted on the full data, selected on validation and recorded with
    its round and fidelity; a retrained run's first proposals are the champion's and earlier searches' points."""
    import sqlalchemy as sa

    from music_recsys.pipeline import search
    from tests.stores import migrated

    seeds = search.seed_points(migrated(embedded.results_url), "not this run")
    conf = {**paths("tiny"), "search": "adaptive", "search_budget_minutes": 1.0, "search_max_fits": 4,
            "fits_per_task": 3, "k": 50, "annoy_trees": GRID["annoy_trees"], "annoy_search_k": GRID["annoy_search_k"],
            "on_data_drift": "warn", "promote": False, "batch_k": 0}  # fmt: skip
    dagrun = embedded.run(conf, AIRFLOW_CONN_SPARK_DEFAULT=connect_server.connection())
    assert str(dagrun.state).endswith("success")
    tis = task_instances(dagrun)
    assert {str(ti.state) for ti in tis["screen_round_1"]} == {"success"}
    summary = run_summary(dagrun.run_id)
    rounds = search.read_rounds(summary["run_dir"])
    assert [r["round"] for r in rounds] == [1, 2, 3] and rounds[0]["trials"]
    sizes = [len(r["trials"]) for r in rounds]
    assert sizes[0] == 2 and sum(sizes) <= 4, sizes  # round 1 (sized by the prior) takes half the fits at most
    first = [search.clip_point({k: t[k] for k in ("rank", "reg_param", "alpha", "transform", "max_iter")})
             for t in rounds[0]["trials"]]  # fmt: skip
    assert first[: len(seeds)] == seeds[: len(first)]
    with ResultsStore(embedded.results_url) as store:
        trials = store.transaction(
            lambda conn: [dict(r._mapping) for r in conn.execute(sa.text(
                "SELECT trial_id, split, round, fidelity, max_iter, map, is_best FROM als_trials "
                "WHERE run_id = :r AND model = 'als'"), {"r": dagrun.run_id})]
        )  # fmt: skip
    screened = [t for t in trials if t["round"] in (1, 2)]
    assert {(t["round"], t["fidelity"], t["split"]) for t in screened} <= {
        (1, 0.25, "validation"),
        (2, 0.5, "validation"),
    }
    assert all(t["trial_id"].startswith(f"s{t['round']}_") and t["max_iter"] for t in screened)
    best = [t for t in trials if t["is_best"]]
    assert {(t["trial_id"], t["round"], t["fidelity"]) for t in best} == {(summary["best_trial_id"], 3, 1.0)}
    assert summary["adaptive_search"]["chosen"] == summary["best_trial_id"]
    assert summary["best_validation"]["map"] > summary["popularity_validation"]["map"]
    assert "## Adaptive search" in Path(summary["report"]).read_text()
