"""The DAG's Python tasks: planning (date placeholders per logical date and nothing else of the run's
context, run-scoped outputs that never collide, bad params fail fast) and the data check against the last
good run (first run, pass, incomplete, drift with fail or warn, backfills compared with what came before
them)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from music_recsys.pipeline.config import TrialSpec
from music_recsys.pipeline.params import ParamError
from music_recsys.pipeline.tasks import DataDriftError, check_data, fail_fast, prepare


@pytest.fixture
def dated_drops(data_root):
    for day in ("2026-01-05", "2026-01-12"):
        folder = data_root / "drops" / day
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("train", "validation", "test"):
            (folder / f"{name}.txt").write_text("u\tt\t1\n")
    return data_root / "drops"


def _params(**over):
    return {
        "train_path": "drops/{{ ds }}/train.txt",
        "validation_path": "drops/{{ ds }}/validation.txt",
        "test_path": "drops/{{ ds }}/test.txt",
        "ranks": [5],
        "reg_params": [0.1],
        "alphas": [1.0],
        "transforms": ["none", "log1p"],
        **over,
    }


def test_each_logical_date_reads_its_own_partition(dated_drops):
    plans = {}
    for day in ("2026-01-05", "2026-01-12"):
        plans[day] = prepare(_params(), f"backfill__{day}T03:00:00+00:00", f"{day}T03:00:00+00:00")
    for day, plan in plans.items():
        args = plan["ingest_args"]
        assert args[args.index("--train") + 1] == str(dated_drops / day / "train.txt")
    # Run-scoped outputs: two runs (e.g. two backfill dates in parallel) share no output path.
    a, b = (plans[d] for d in plans)
    outputs_a = {a["run_dir"], *(t["out_dir"] for t in a["trials"]), *(t["result"] for t in a["trials"])}
    outputs_b = {b["run_dir"], *(t["out_dir"] for t in b["trials"]), *(t["result"] for t in b["trials"])}
    assert not outputs_a & outputs_b
    assert all(Path(p).is_relative_to(a["run_dir"]) for p in outputs_a)


def test_plan_is_saved_with_the_validated_config(dated_drops):
    plan = prepare(
        _params(
            train_path="drops/2026-01-05/train.txt",
            validation_path="drops/2026-01-05/validation.txt",
            test_path="drops/2026-01-05/test.txt",
        ),
        "manual__x",
    )
    saved = json.loads(Path(plan["plan_path"]).read_text())
    assert saved["trials"] == plan["trials"] and plan["n_trials"] == 2
    config = json.loads((Path(plan["run_dir"]) / "config.json").read_text())
    assert config["train_path"] == str(dated_drops / "2026-01-05" / "train.txt")
    fit_args = plan["fit_kwargs"][0]["application_args"]
    assert isinstance(fit_args, list) and all(isinstance(a, str) for a in fit_args)  # argv, no shell


def test_a_filled_path_escaping_the_root_is_still_refused(dated_drops):
    with pytest.raises(ValueError, match="outside the allowed roots"):
        prepare(_params(train_path="drops/{{ ds }}/../../../../etc/passwd"), "manual__y", "2026-01-05T03:00:00+00:00")


def test_data_interval_placeholders_fill_from_the_runs_dates(dated_drops):
    plan = prepare(
        _params(train_path="drops/{{ data_interval_start | ds }}/train.txt"),
        "scheduled__w",
        "2026-01-12T03:00:00+00:00",
        {"data_interval_start": datetime(2026, 1, 5, 3, tzinfo=UTC), "data_interval_end": None},
    )
    args = plan["ingest_args"]
    assert args[args.index("--train") + 1] == str(dated_drops / "2026-01-05" / "train.txt")
    assert args[args.index("--validation") + 1] == str(dated_drops / "2026-01-12" / "validation.txt")


@pytest.mark.parametrize(
    "expression",
    [
        "{{ conn.recsys_results.password }}",
        "{{ var.value.secret_probe }}",
        "{{ macros.ds_add(ds, 1) }}",
        "{{ ds | upper }}",
        "{% if true %}x{% endif %}",
        "{{ dag_run.conf }}",
        "{{ ds }}{# note #}",
    ],
)
def test_a_path_param_never_reaches_connections_or_variables(dated_drops, monkeypatch, expression):
    """Only the date placeholders are filled, without a template engine: anything else is refused, and
    the error neither renders nor repeats it."""
    monkeypatch.setenv("AIRFLOW_CONN_RECSYS_RESULTS_PROBE", "postgres://u:pw-9f2c1e@h/db")
    monkeypatch.setenv("AIRFLOW_VAR_SECRET_PROBE", "var-77a0b3")
    with pytest.raises(ParamError) as info:
        prepare(_params(train_path=f"drops/{expression}/train.txt"), "manual__s", "2026-01-05T03:00:00+00:00")
    message = str(info.value)
    assert message.startswith("train_path: holds a template expression that is not one of the date placeholders")
    assert "{{ ds }}" in message and "pw-9f2c1e" not in message and "var-77a0b3" not in message
    assert expression not in message


IDS = ["r5_reg0.1_a1_none", "r5_reg0.1_a10_none", "r5_reg0.1_a1_log1p", "r5_reg0.1_a10_log1p"]


@pytest.mark.parametrize(
    ("fits_per_task", "labels", "points"),
    [
        (1, IDS, [1, 1, 1, 1]),
        (3, [f"{IDS[0]}..{IDS[2]}", IDS[3]], [3, 1]),
        (50, [f"{IDS[0]}..{IDS[3]}"], [4]),
    ],
)
def test_fit_tasks_pack_grid_points(dated_drops, fits_per_task, labels, points):
    plan = prepare(
        _params(alphas=[1.0, 10.0], fits_per_task=fits_per_task), "manual__pack", "2026-01-05T03:00:00+00:00"
    )
    tasks = plan["fit_kwargs"]
    assert [t["trial_id"] for t in plan["trials"]] == IDS
    assert [t["grid_point"] for t in tasks] == labels
    assert [t["application_args"].count("--trial") for t in tasks] == points
    # Every grid point is fitted exactly once, in plan order.
    argvs = [t["application_args"] for t in tasks]
    specs = [argv[i + 1] for argv in argvs for i, a in enumerate(argv) if a == "--trial"]
    assert [TrialSpec.parse(s).trial_id for s in specs] == IDS
    # Task summaries never overwrite a grid point's own result.
    results = [t["result_path"] for t in tasks]
    assert len(set(results)) == len(tasks) and not set(results) & {t["result"] for t in plan["trials"]}


def test_missing_input_fails_before_any_job(dated_drops):
    with pytest.raises(ParamError, match="test_path: .*/drops/2026-01-05/missing.txt does not exist"):
        prepare(_params(test_path="drops/{{ ds }}/missing.txt"), "manual__missing", "2026-01-05T03:00:00+00:00")


def test_fail_fast_turns_input_errors_into_failures_without_retry():
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="ranks: bad"):
        with fail_fast():
            raise ParamError("ranks: bad")
    with pytest.raises(KeyError):  # anything else keeps the task's retries
        with fail_fast():
            raise KeyError("transient")


def _profile(rows: int, users: int = 100, tracks: int = 50, histogram: list[int] | None = None) -> dict:
    return {
        "rows": rows,
        "users": users,
        "tracks": tracks,
        "plays": rows * 3,
        "median_count": 1.0,
        "p99_count": 20.0,
        "share_count_1": 0.55,
        "count_histogram": histogram or [55, 20, 15, 10, 0, 0, 0, 0, 0, 0, 0],
    }


def _drop(tmp_path: Path, name: str, train_rows: int, users: range, tracks: range) -> dict:
    """An ingest result as the ingest job writes it, with hashed train ids on disk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = tmp_path / name / "ids"
    for kind, values in (("users", users), ("tracks", tracks)):
        (ids / f"train_{kind}").mkdir(parents=True)
        pq.write_table(pa.table({"h": np.array(values, dtype=np.int64)}), ids / f"train_{kind}" / "part-0.parquet")
    profiles = {"train": _profile(train_rows, len(users), len(tracks))}
    profiles |= {"validation": _profile(50), "test": _profile(50)}
    return {"ids_dir": str(ids), "splits": {s: {"profile": p} for s, p in profiles.items()}}


def _plan(data_root: Path, run_id: str, logical_date: str, **params) -> dict:
    for split in ("train", "validation", "test"):
        (data_root / "check").mkdir(exist_ok=True)
        (data_root / "check" / f"{split}.txt").write_text("u\tt\t1\n")
    return prepare(
        {**{f"{s}_path": f"check/{s}.txt" for s in ("train", "validation", "test")}, **params}, run_id, logical_date
    )


def test_data_check_against_the_last_good_run(data_root, tmp_path):
    from music_recsys.store.results import ResultsStore
    from tests.stores import migrated

    url = migrated(f"sqlite:///{tmp_path / 'results.sqlite'}")
    first = check_data(
        _plan(data_root, "w1", "2026-01-05T03:00:00+00:00"), _drop(tmp_path, "w1", 1000, range(100), range(50)), url
    )
    assert first["verdict"] == "first_run" and first["baseline_run_id"] is None
    assert "first run" in first["message"]
    # Not finished successfully yet: it is no baseline.
    second = check_data(
        _plan(data_root, "w2", "2026-01-12T03:00:00+00:00"), _drop(tmp_path, "w2", 1100, range(100), range(50)), url
    )
    assert second["verdict"] == "first_run"
    store = ResultsStore(url)
    store.mark_run_succeeded("w1")
    store.mark_run_succeeded("w2")
    # Week 3: 10 % more rows, 5 new users of 105, 2 new tracks of 52: passes against week 2.
    third = check_data(
        _plan(data_root, "w3", "2026-01-19T03:00:00+00:00"), _drop(tmp_path, "w3", 1210, range(105), range(52)), url
    )
    assert third["verdict"] == "pass" and third["baseline_run_id"] == "w2"
    assert third["changes"]["train"]["rows"] == pytest.approx(0.1)
    assert third["changes"]["train"]["new_user_share"] == pytest.approx(5 / 105)
    assert third["changes"]["train"]["new_track_share"] == pytest.approx(2 / 52)
    # A backfill of a date before week 2 compares with week 1, the last good run before it.
    backfill = check_data(
        _plan(data_root, "b", "2026-01-08T03:00:00+00:00"), _drop(tmp_path, "b", 1000, range(100), range(50)), url
    )
    assert backfill["baseline_run_id"] == "w1"
    # A drop with 60 % of the train rows gone stops the run, naming the figure, now vs before vs limit.
    with pytest.raises(DataDriftError) as info:
        check_data(
            _plan(data_root, "w4", "2026-01-26T03:00:00+00:00"), _drop(tmp_path, "w4", 440, range(100), range(50)), url
        )
    message = str(info.value)
    assert "differs from run w2 beyond the thresholds" in message and "on_data_drift: fail" in message
    assert "train  rows    440    1,100   -60.0%  ±50%" in message
    rows = {r["split"]: r for r in store.fetch("data_profiles", "w4")}
    assert rows["train"]["verdict"] == "drift" and rows["train"]["rows"] == 440
    assert rows["train"]["violations"][0]["figure"] == "rows" and rows["validation"]["violations"] == []
    # The same drop with on_data_drift: warn goes on, its verdict recorded.
    warned = check_data(
        _plan(data_root, "w4w", "2026-01-26T03:00:00+00:00", on_data_drift="warn"),
        _drop(tmp_path, "w4w", 440, range(100), range(50)),
        url,
    )
    assert warned["verdict"] == "drift" and warned["on_data_drift"] == "warn"
    assert store.fetch("data_profiles", "w4w")[0]["verdict"] == "drift"
    # A drift run, even finished, never becomes a baseline.
    store.mark_run_succeeded("w3")
    store.mark_run_succeeded("w4w")
    assert store.latest_good_profile_run(datetime(2027, 1, 1, tzinfo=UTC), "x") == "w3"
    # Week 3's hashed ids are gone (retention): the new-id checks cannot run, and the verdict says so
    # instead of a plain pass.
    import shutil

    shutil.rmtree(tmp_path / "w3" / "ids")
    fifth = check_data(
        _plan(data_root, "w5", "2026-02-02T03:00:00+00:00"), _drop(tmp_path, "w5", 1250, range(105), range(52)), url
    )
    assert fifth["verdict"] == "incomplete" and fifth["baseline_run_id"] == "w3"
    assert [c["check"] for c in fifth["skipped"]] == ["new_user_share", "new_track_share"]
    assert (
        "could not run: new_user_share of train (the hashed train ids of baseline run w3 are gone" in fifth["message"]
    )
    assert store.fetch("data_profiles", "w5")[0]["verdict"] == "incomplete"
    train = next(r for r in store.fetch("data_profiles", "w5") if r["split"] == "train")
    assert [c["check"] for c in train["skipped_checks"]] == ["new_user_share", "new_track_share"]
    store.close()
