"""Fault drills on the real DAG: a Spark fit killed mid-run is retried and the grid completes with one
row per trial; re-recording the same run rewrites identical rows."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from music_recsys import datagen
from music_recsys.artifacts import read_json
from music_recsys.config import TrialSpec, run_dir
from music_recsys.pipeline import record
from music_recsys.results import ResultsStore

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.postgres, pytest.mark.slow]
VICTIM = TrialSpec(6, 0.1, 10.0, "none")  # r6_reg0.1_a10_none


def _kill_fit_once(spec: TrialSpec, killed: list, stop: threading.Event) -> None:
    """Wait for the fit of ``spec`` to be running for a few seconds, then SIGKILL its processes."""
    seen_at = None
    while not stop.is_set():
        victims = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "fit_als.py" in cmdline and f"--trial {spec}" in cmdline:
                victims.append(proc)
        if victims:
            seen_at = seen_at or time.monotonic()
            if time.monotonic() - seen_at > 4:  # mid-run: JVM up, fit under way
                for proc in victims:
                    try:
                        proc.send_signal(signal.SIGKILL)
                    except psutil.NoSuchProcess:
                        pass
                killed.extend(p.pid for p in victims)
                return
        time.sleep(0.2)


def test_killed_fit_is_retried_and_rerecording_is_idempotent(airflow_db, data_root, postgres_url, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    datagen.main(out=str(data_root / "faults"), users=800, items=400, holdout_users=100)
    monkeypatch.setenv("AIRFLOW_CONN_RECSYS_RESULTS", postgres_url.replace("postgresql://", "postgres://"))
    monkeypatch.setenv("RECSYS_RETRIES", "1")
    monkeypatch.setenv("RECSYS_RETRY_DELAY_SECONDS", "1")
    dag = DagBag(dag_folder=str(REPO / "dags")).dags["music_recsys"]
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_fit_once, args=(VICTIM, killed, stop), daemon=True)
    killer.start()
    try:
        dagrun = dag.test(
            run_conf={
                "train_path": "faults/train.parquet",
                "validation_path": "faults/validation.parquet",
                "test_path": "faults/test.parquet",
                "ranks": [6],
                "reg_params": [0.1],
                "alphas": [1.0, 10.0],
                "transforms": ["none"],
                "k": 30,
                "max_iter": 8,
                "annoy_trees": [2],
                "annoy_search_k": [100],
            }
        )
    finally:
        stop.set()
        killer.join(timeout=5)
    assert killed, "the drill never found the fit process to kill"
    assert str(dagrun.state).endswith("success")
    fit_result = read_json(run_dir(dagrun.run_id) / "results" / "fit" / f"{VICTIM.trial_id}.json")
    assert fit_result["status"] == "success"  # the retry produced it

    store = ResultsStore(postgres_url)
    first = store.fetch("als_trials", dagrun.run_id)
    ann_first = store.fetch("ann_trials", dagrun.run_id)
    keys = [(r["trial_id"], r["split"]) for r in first]
    assert len(keys) == len(set(keys))
    assert {t for t, s in keys if s == "validation"} == {"popularity", VICTIM.trial_id, "r6_reg0.1_a1_none"}
    assert all(r["status"] == "success" for r in first)

    # Re-running record for the same run (as after clearing the task) rewrites the same rows.
    results = run_dir(dagrun.run_id) / "results"
    plan = read_json(run_dir(dagrun.run_id) / "plan.json")
    record(plan, read_json(results / "evaluate.json"), read_json(results / "fast_search.json"), url=postgres_url)
    second = store.fetch("als_trials", dagrun.run_id)
    ann_second = store.fetch("ann_trials", dagrun.run_id)
    store.close()

    def strip(rows):
        return sorted(
            json.dumps({k: v for k, v in r.items() if k != "recorded_at"}, sort_keys=True, default=str) for r in rows
        )

    assert strip(first) == strip(second)
    assert strip(ann_first) == strip(ann_second)
