"""Fault drills end to end (issue #19), the real DAG on Spark Connect: a file of malformed rows and a grid
in which every point fails each end the run at the failing stage — no later task starts, no retry is
spent, the champion and the served model stay, no result rows are written, and ``failure.json`` and the
run's note name the cause. One point failing among others is tolerated (the reference run's grid).
The same faults without Spark, for every stage, are in test_dag_faults.py."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from music_recsys.pipeline import failure as F
from music_recsys.run_folders import run_dir
from music_recsys.store import registry
from music_recsys.store.results import ResultsStore
from tests.dags.dagruns import GRID, paths, task_instances

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.postgres, pytest.mark.slow]

AFTER_FITS = ["evaluate", "fast_search", "record", "publish", "report", "announce_champion", "finish"]
RESULT_TABLES = ("als_trials", "als_segments", "ann_trials")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[")  # structlog's console lines start with a timestamp


def _registry(embedded) -> tuple[dict, list[dict]]:
    store = ResultsStore(embedded.results_url)
    try:
        return registry.champion(store), registry.all_models(store)
    finally:
        store.close()


def _rows(embedded, run_id: str) -> dict[str, int]:
    store = ResultsStore(embedded.results_url)
    try:
        return {table: len(store.fetch(table, run_id)) for table in (*RESULT_TABLES, "data_profiles")}
    finally:
        store.close()


def _note(run_id: str) -> str | None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.query(DagRun).filter_by(run_id=run_id).one().note


def _drill(embedded, connect_server, served, conf: dict) -> dict:
    """One run with ``conf``; what the registry and the served API said before and after, and its seconds."""
    champion, models = _registry(embedded)
    serving = served.get("/healthz")["model_version"]
    started = time.monotonic()
    dagrun = embedded.run(conf, AIRFLOW_CONN_SPARK_DEFAULT=connect_server.connection())
    seconds = time.monotonic() - started
    print(f"fault drill {dagrun.run_id}: {seconds:.1f} s")  # the before/after note (-s shows it)
    after_champion, after_models = _registry(embedded)
    folder = run_dir(dagrun.run_id)
    return {
        "dagrun": dagrun,
        "seconds": seconds,
        "tis": task_instances(dagrun),
        "champion": (champion, after_champion),
        "models": (models, after_models),
        "serving": (serving, served.get("/healthz")["model_version"]),
        "failure": json.loads((folder / F.FAILURE_FILE).read_text()),
        "note": _note(dagrun.run_id),
        "rows": _rows(embedded, dagrun.run_id),
    }


def _assert_nothing_changed(drill: dict) -> None:
    before, after = drill["champion"]
    assert before is not None and after["model_version"] == before["model_version"]
    assert len(drill["models"][1]) == len(drill["models"][0])  # no bundle registered, not even a candidate
    assert drill["serving"][0] == drill["serving"][1] == before["model_version"]
    assert registry.bundle_path(after).exists() and run_dir(before["run_id"]).exists()  # retention kept the champion's
    assert {t: drill["rows"][t] for t in RESULT_TABLES} == dict.fromkeys(RESULT_TABLES, 0)  # absent, not half


def _states(tis: list) -> set[str]:
    return {str(ti.state) for ti in tis}


def first_error(output: str) -> str:
    """The first error the run logged: its log line and the traceback under it."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if " [error " in line)
    end = next((i for i in range(start + 1, len(lines)) if LOG_LINE.match(lines[i])), len(lines))
    return "\n".join(lines[start:end])


def test_a_malformed_file_stops_the_run_at_ingest(embedded, connect_server, served, data_root, capfd):
    """A TSV whose rows are mostly malformed (the issue's first report)."""
    folder = data_root / "malformed"
    folder.mkdir(exist_ok=True)
    rows = ["u1\tT1\t3", "u2\tT2\tthree", "u3\tT3", "u4\t\t2", "\tT5\t1", "u6\tT6\t-4", "u7\tT7\t1.5"]
    (folder / "train.txt").write_text("\n".join(rows) + "\n")
    for split in ("validation", "test"):
        (folder / f"{split}.txt").write_text("u1\tT3\t1\n")
    conf = {**{f"{s}_path": f"malformed/{s}.txt" for s in ("train", "validation", "test")}, **GRID}
    capfd.readouterr()
    malformed = _drill(embedded, connect_server, served, conf)
    output = capfd.readouterr().out
    tis = malformed["tis"]
    assert str(malformed["dagrun"].state).endswith("failed")
    assert [(str(ti.state), ti.try_number, ti.max_tries) for ti in tis["ingest"]] == [
        ("failed", 1, 1)
    ]  # one retry allowed, none spent
    result = json.loads((run_dir(malformed["dagrun"].run_id) / "results" / "ingest.json").read_text())
    assert result["retryable"] is False
    assert "train.txt: 6 of 7 rows rejected (85.71% > max_reject_fraction 1.00%)" in result["error"]
    for task_id in ["check_data", "index", "fit", *AFTER_FITS]:
        assert _states(tis[task_id]) == {"upstream_failed"}, task_id  # evaluate no longer starts
    failure = malformed["failure"]
    assert (failure["stage"], failure["task"], failure["retryable"]) == ("ingest", "ingest", False)
    assert "train.txt: 6 of 7 rows rejected" in failure["message"] and "max_reject_fraction" in failure["message"]
    assert failure["not_run"][:3] == ["check_data", "index", "propose_round_1"]
    assert {"fit", "evaluate"} <= set(failure["not_run"])
    assert failure["failed_after"] == [] and failure["note"] == "metadata_db"
    assert malformed["note"].startswith("Failed at ingest (not retried: fix the input): ingest.py: ")
    assert "6 of 7 rows rejected" in malformed["note"]
    _assert_nothing_changed(malformed)
    assert malformed["rows"]["data_profiles"] == 0  # check_data never ran: no baseline candidate either
    assert "6 of 7 rows rejected" in first_error(output)  # what a person reads first is the cause
    assert "PATH_NOT_FOUND" not in output  # the old symptom: evaluate reading an index never written


def test_every_fit_failing_fails_the_run_with_each_points_error(embedded, connect_server, served, tiny_data, capfd):
    """The drop transform with a threshold above every count: no grid point has training rows."""
    capfd.readouterr()
    every_fit_fails = _drill(embedded, connect_server, served, {**paths("tiny"), **GRID, "transforms": ["drop"]})
    output = capfd.readouterr().out
    tis = every_fit_fails["tis"]
    assert str(every_fit_fails["dagrun"].state).endswith("failed")
    fits = {ti.rendered_map_index: (str(ti.state), ti.try_number) for ti in tis["fit"]}
    assert fits == {"r8_reg0.1_a1_drop": ("failed", 1), "r8_reg0.1_a10_drop": ("failed", 1)}
    for task_id in AFTER_FITS:  # evaluate used to run here, and fast_search to fail twice on its symptom
        assert _states(tis[task_id]) == {"upstream_failed"}, task_id
    failure = every_fit_fails["failure"]
    assert (failure["stage"], failure["task"], failure["retryable"]) == ("fit", "fit", False)
    assert failure["message"].startswith("every grid point failed (2 of 2), so nothing was scored: ")
    for point in fits:
        assert f"{point}: fit_als.py: " in failure["message"]
    assert failure["message"].count("leaves no training rows") == 2
    assert failure["not_run"][:2] == ["evaluate", "fast_search"] and "publish" in failure["not_run"]
    assert every_fit_fails["note"] == F.note_line(failure)
    _assert_nothing_changed(every_fit_fails)
    store_profiles = every_fit_fails["rows"]["data_profiles"]
    assert store_profiles == 3  # checked, but never a baseline: finish did not run (run_status stays running)
    assert "leaves no training rows" in first_error(output)
    assert "no successful ALS trial" not in output  # the old symptom: fast_search failing, twice


def test_one_failing_point_among_others_is_tolerated(reference_run, embedded):
    """The reference run's grid has two points that cannot fit and two that do: it succeeds and publishes,
    and leaves no failure.json. (Its task instances and run row may be gone by now: a later ``dag.test``
    without a logical date replaces the DAG's runs without one; test_dag_e2e checks them while they exist.)"""
    dagrun = reference_run["dagrun"]
    assert str(dagrun.state).endswith("success")
    store = ResultsStore(embedded.results_url)
    rows = store.fetch("als_trials", dagrun.run_id)
    trials = {r["trial_id"]: r["status"] for r in rows if r["split"] == "validation"}
    published = [m for m in registry.all_models(store) if m["run_id"] == dagrun.run_id]
    store.close()
    assert sorted(trials.values()).count("failed") == 2 and "success" in trials.values()
    assert len(published) == 1
    assert not (run_dir(dagrun.run_id) / F.FAILURE_FILE).exists()


def test_a_runs_conf_cannot_read_connections_or_variables(embedded, session_dir, capfd):
    """Anyone allowed to trigger the DAG could read every connection and variable through a path param that
    the first task rendered with its full context. Now only date placeholders are filled: the run fails at
    prepare with an error that repeats nothing, and neither secret lands in any file, log, XCom or note."""
    secret, variable = f"pw-{uuid.uuid4().hex}", f"var-{uuid.uuid4().hex}"
    conf = {
        **paths("tiny"),
        **GRID,
        "train_path": "{{ conn.secret_probe.password }}",
        "test_path": "tiny/{{ var.value.secret_probe }}/test.parquet",
    }
    started = time.time()
    capfd.readouterr()
    dagrun = embedded.run(
        conf, AIRFLOW_CONN_SECRET_PROBE=f"postgres://u:{secret}@db.example/x", AIRFLOW_VAR_SECRET_PROBE=variable
    )
    output = capfd.readouterr()
    assert str(dagrun.state).endswith("failed")
    tis = task_instances(dagrun)
    assert [(str(ti.state), ti.try_number) for ti in tis["prepare"]] == [("failed", 1)]
    failure = json.loads((run_dir(dagrun.run_id) / F.FAILURE_FILE).read_text())
    assert failure["task"] == "prepare" and failure["retryable"] is False
    assert "train_path: holds a template expression that is not one of the date placeholders" in failure["message"]
    note = _note(dagrun.run_id)
    assert note.startswith("Failed at prepare (not retried: fix the input)")
    for leak in (secret, variable):
        assert leak not in output.out + output.err and leak not in note
        # Every file the run touched: run folder, failure records, task logs, Airflow's metadata database
        # (XComs and the note live there), the results store.
        metadata = [p for p in (session_dir / "airflow").glob("*.db*") if p.is_file()]
        touched = [p for p in session_dir.rglob("*") if p.is_file() and p.stat().st_mtime >= started - 1]
        assert metadata and touched
        assert [p for p in {*metadata, *touched} if leak.encode() in p.read_bytes()] == []
