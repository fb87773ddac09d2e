"""Spark Connect execution mode: the same DAG, jobs and data as the spark-submit reference run, through a
Connect server chosen by the connection alone. Same trials, best point and metrics; a server that dies
mid-fit fails the task and the retry succeeds once it is back, with no duplicate rows; meanwhile the
served API switches to the run's newer model without a failed request."""

from __future__ import annotations

import pytest

from harness.airflow import run_summary
from music_recsys.run_folders import read_json, run_dir
from music_recsys.store import registry
from music_recsys.store.results import ResultsStore
from tests.dags.dagruns import VICTIM, task_instances

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.postgres, pytest.mark.slow]
METRICS = ("map", "map_at_k", "precision_at_k", "ndcg_at_k", "recall_at_k", "ndcg_graded_at_k", "mpr",
           "coverage_at_k", "mean_rec_popularity")  # fmt: skip


def _trials(store: ResultsStore, run_id: str) -> dict:
    return {(r["trial_id"], r["split"]): r for r in store.fetch("als_trials", run_id)}


def test_connect_run_gives_the_same_trials_best_point_and_metrics(connect_run, reference_run, embedded):
    assert str(connect_run["dagrun"].state).endswith("success")
    assert connect_run["submits"] == []  # no stage went through spark-submit
    store = ResultsStore(embedded.results_url)
    submitted = _trials(store, reference_run["dagrun"].run_id)
    connected = _trials(store, connect_run["dagrun"].run_id)
    store.close()
    assert set(connected) == set(submitted)
    for key, row in submitted.items():
        other = connected[key]
        assert (other["status"], other["is_best"], other["n_users"]) == (row["status"], row["is_best"], row["n_users"])
        for metric in METRICS:
            # Same input files in the same row order, same seed, one ALS block per core on two cores on both
            # sides (the cluster's executor, the server's local[2]): the same computation, so the metrics agree
            # to float round-off.
            if row[metric] is None:
                assert other[metric] is None, (key, metric)
            else:
                assert other[metric] == pytest.approx(row[metric], rel=1e-9, abs=1e-12), (key, metric)
    assert (
        run_summary(connect_run["dagrun"].run_id)["best_trial_id"]
        == run_summary(reference_run["dagrun"].run_id)["best_trial_id"]
    )


def test_a_crashed_connect_server_fails_the_fit_and_the_retry_succeeds(connect_run, embedded):
    assert connect_run["crashed"] == [2], "the drill never caught the ALS fit running on the server"
    fits = {ti.rendered_map_index: ti for ti in task_instances(connect_run["dagrun"])["fit"]}
    assert (fits[VICTIM.trial_id].state, fits[VICTIM.trial_id].try_number) == ("success", 2)
    assert (fits["r8_reg0.1_a1_none"].state, fits["r8_reg0.1_a1_none"].try_number) == ("success", 1)
    store = ResultsStore(embedded.results_url)
    rows = store.fetch("als_trials", connect_run["dagrun"].run_id)
    store.close()
    keys = [(r["trial_id"], r["split"]) for r in rows]
    assert len(keys) == len(set(keys)) == 7  # popularity + 4 points on validation, popularity + best on test
    # The BLAS of a Connect fit is the server's JVM's: the client has none to ask, and says so.
    summary = read_json(run_dir(connect_run["dagrun"].run_id) / "results" / "fit_tasks" / f"{VICTIM.trial_id}.json")
    assert summary["blas"] is None and summary["failed"] == []


def test_the_served_api_switched_to_the_new_champion_without_a_failed_request(connect_run, reference_run, embedded):
    old = run_summary(reference_run["dagrun"].run_id)["model"]["version"]
    new = run_summary(connect_run["dagrun"].run_id)["model"]
    assert new["status"] == "champion" and f"champion {old} re-scored on this run's data at k=50" in new["reason"]
    hammer = connect_run["hammer"]
    assert len(hammer.seen) > 50 and hammer.statuses() == {200: len(hammer.seen)}
    versions = [version for _, version in hammer.seen]
    switch = versions.index(new["version"])
    assert set(versions[:switch]) == {old} and set(versions[switch:]) == {new["version"]}
    store = ResultsStore(embedded.results_url)
    statuses = {r["model_version"]: r["status"] for r in registry.all_models(store)}
    store.close()
    assert statuses[old] == "retired" and statuses[new["version"]] == "champion"
