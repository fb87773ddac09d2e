"""The fit job: several grid points in one Spark application, a failing point recorded without stopping
the others, and a retry that keeps finished points instead of refitting them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs import fit_als
from jobs.index_ids import write_labels
from music_recsys import constants as C
from music_recsys.pipeline.config import TrialSpec
from music_recsys.pipeline.job import InputError
from music_recsys.run_folders import RunLayout, read_json, write_json

pytestmark = pytest.mark.spark

N_USERS, N_ITEMS = 60, 40


@pytest.fixture(scope="module")
def indexed_train(spark, tmp_path_factory):
    """Indexed train play counts: every user plays 8 of 40 items, counts 1..5."""
    rng = np.random.default_rng(3)
    rows = [
        (u, int(i), int(rng.integers(1, 6))) for u in range(N_USERS) for i in rng.choice(N_ITEMS, size=8, replace=False)
    ]
    index = tmp_path_factory.mktemp("fit")
    spark.createDataFrame(rows, [C.USER_IDX, C.ITEM_IDX, C.COUNT]).write.parquet(str(index / "train"))
    # The index job's labels, where the fit job reads the number of users and tracks.
    write_labels([f"u{i}" for i in range(N_USERS)], index / "labels" / "users.parquet")
    write_labels([f"t{i}" for i in range(N_ITEMS)], index / "labels" / "tracks.parquet")
    return str(index / "train")


def _argv(train, run_dir, trials, result, *flags):
    argv = ["--train", train, "--run-dir", str(run_dir), "--drop-threshold", "3", "--max-iter", "3", *flags]
    argv += ["--seed", "7", "--result", str(result)]
    for spec in trials:
        argv += ["--trial", str(spec)]
    return argv


def _args(train, run_dir, trials, result, *flags):
    return vars(fit_als.parse_args(_argv(train, run_dir, trials, result, *(flags or ["--nonnegative"]))))


def test_several_grid_points_in_one_application(spark, indexed_train, tmp_path):
    specs = [TrialSpec(3, 0.1, 1.0, "none"), TrialSpec(5, 0.5, 10.0, "log1p")]
    summary = fit_als.run(spark, **_args(indexed_train, tmp_path, specs, tmp_path / "task.json"))
    layout = RunLayout(tmp_path)
    assert summary["failed"] == [] and list(summary["trials"]) == [s.trial_id for s in specs]
    for spec in specs:
        result = read_json(layout.trial_result(spec.trial_id))
        assert result["status"] == "success" and result["rank"] == spec.rank and result["alpha"] == spec.alpha
        assert result["n_ratings"] == N_USERS * 8 and result["fit_seconds"] > 0
        items = np.load(layout.trial_dir(spec.trial_id) / "item_factors.npy")
        assert items.shape == (N_ITEMS, spec.rank) and np.all(items >= 0) and np.abs(items).sum() > 0
    assert json.loads((tmp_path / "task.json").read_text()) == summary
    assert summary["blas"].startswith("dev.ludovic.netlib.blas.")  # which one the session's JVM got


def test_a_failing_point_is_recorded_and_a_retry_keeps_the_finished_one(spark, indexed_train, tmp_path):
    good, bad = TrialSpec(3, 0.1, 1.0, "none"), TrialSpec(3, 0.1, 1.0, "drop")
    kwargs = _args(indexed_train, tmp_path, [bad, good], tmp_path / "task.json")
    kwargs["drop_threshold"] = 100  # every count is <= 100: the drop transform leaves nothing
    # Nothing a retry could fix failed: the job says so (the task then ends without retries).
    with pytest.raises(InputError, match=r"1 of 2 grid points failed: .*leaves no training rows"):
        fit_als.run(spark, **kwargs)
    layout = RunLayout(tmp_path)
    failed = read_json(layout.trial_result(bad.trial_id))
    assert failed["status"] == "failed" and failed["retryable"] is False
    assert read_json(layout.trial_result(good.trial_id))["status"] == "success"
    first_fit = read_json(layout.trial_result(good.trial_id))["fit_seconds"]

    with pytest.raises(InputError):  # the retry: the good point is kept, the bad one tried again
        fit_als.run(spark, **kwargs)
    summary = read_json(tmp_path / "task.json")
    assert summary["kept_from_earlier_attempt"] == [good.trial_id] and summary["failed"] == [bad.trial_id]
    assert read_json(layout.trial_result(good.trial_id))["fit_seconds"] == first_fit

    # The run cleared and re-run on changed data (ingest read other rows: another content checksum): the
    # factors on disk are not reused, the good point is fitted again.
    first_inputs = read_json(layout.trial_result(good.trial_id))["inputs"]
    profile = {"rows": 10, "users": 2, "tracks": 3, "checksum": "e" * 64}
    ingest = {"sample_fraction": 1.0, "splits": {split: {"profile": profile} for split in C.SPLITS}}
    write_json(layout.stage_result("ingest"), ingest)
    with pytest.raises(InputError):
        fit_als.run(spark, **kwargs)
    assert read_json(tmp_path / "task.json")["kept_from_earlier_attempt"] == []
    refit = read_json(layout.trial_result(good.trial_id))
    assert refit["status"] == "success" and refit["inputs"] != first_inputs


def test_unconstrained_factors_on_request(spark, indexed_train, tmp_path):
    spec = TrialSpec(5, 0.1, 10.0, "none")
    with pytest.raises(SystemExit):  # no hidden default: the plan always says which solve
        fit_als.parse_args(_argv(indexed_train, tmp_path, [spec], tmp_path / "task.json"))
    kwargs = _args(indexed_train, tmp_path, [spec], tmp_path / "task.json", "--no-nonnegative")
    fit_als.run(spark, **kwargs)
    layout = RunLayout(tmp_path)
    assert read_json(layout.trial_result(spec.trial_id))["nonnegative"] is False
    assert np.load(layout.trial_dir(spec.trial_id) / "item_factors.npy").min() < 0


def test_trial_spec_round_trips_through_the_command_line():
    spec = TrialSpec(20, 0.01, 40.0, "log1p_drop")
    assert str(spec) == "20,0.01,40.0,log1p_drop"
    assert TrialSpec.parse(str(spec)) == spec and spec.trial_id == "r20_reg0.01_a40_log1p_drop"
    with pytest.raises(ValueError, match="transform must be one of"):
        TrialSpec.parse("20,0.01,40,sqrt")
    with pytest.raises(ValueError, match="expected RANK,REG_PARAM,ALPHA,TRANSFORM"):
        TrialSpec.parse("20,0.01")


@pytest.fixture(scope="module")
def with_validation(spark, indexed_train, tmp_path_factory):
    """The same train beside a validation split: users 0-9 each hold out 3 items they did not play."""
    import shutil
    from pathlib import Path

    index = tmp_path_factory.mktemp("screen")
    shutil.copytree(Path(indexed_train), index / "train")
    shutil.copytree(Path(indexed_train).parent / "labels", index / "labels")
    played = {(r[C.USER_IDX], r[C.ITEM_IDX]) for r in spark.read.parquet(indexed_train).collect()}
    rows = []
    for u in range(10):
        unplayed = [i for i in range(N_ITEMS) if (u, i) not in played]
        rows += [(u, i, 2) for i in unplayed[:3]]
    spark.createDataFrame(rows, [C.USER_IDX, C.ITEM_IDX, C.COUNT]).write.parquet(str(index / "validation"))
    return str(index / "train")


def test_a_screening_fit_sees_a_share_of_the_users_and_scores_itself(spark, with_validation, tmp_path):
    from music_recsys.evaluation.screening import group_items, screen_metrics
    from music_recsys.model.factors import read_dense_factors

    spec = TrialSpec(4, 0.1, 5.0, "none", 4, "s1")
    flags = ["--no-nonnegative", "--user-fraction", "0.3", "--score-k", "5"]
    summary = fit_als.run(spark, **_args(with_validation, tmp_path, [spec], tmp_path / "task.json", *flags))
    result = read_json(RunLayout(tmp_path).trial_result(spec.trial_id))
    assert summary["trials"][spec.trial_id]["validation"] == result["validation"]
    assert (result["max_iter"], result["user_fraction"]) == (4, 0.3)  # the point's own iterations
    # Every validation user's 8 rows, and about 30 % of the 50 other users' rows: fewer than all 480.
    assert 10 * 8 < result["n_ratings"] < N_USERS * 8
    # The score is the package's metrics on the factors the fit saved (played items excluded, k = 5).
    validation = spark.read.parquet(with_validation.replace("/train", "/validation")).toPandas()
    train = spark.read.parquet(with_validation).toPandas()
    truth = group_items(*(validation[c].to_numpy() for c in (C.USER_IDX, C.ITEM_IDX, C.COUNT)))
    seen = group_items(train[C.USER_IDX].to_numpy(), train[C.ITEM_IDX].to_numpy())
    users = read_dense_factors(RunLayout(tmp_path).trial_dir(spec.trial_id) / "user_factors", N_USERS, 4)
    items = np.load(RunLayout(tmp_path).trial_dir(spec.trial_id) / "item_factors.npy")
    expected = screen_metrics(truth, seen, np.arange(10), users[:10], items, 5)
    assert result["validation"] == pytest.approx(expected)
    assert result["validation"]["n_users"] == 10 and result["validation"]["n_cold_users"] == 0
