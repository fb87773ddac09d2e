"""The run plan: every stage's argument list parses with its own job's parser into the run's config."""

from __future__ import annotations

import pytest

from jobs import evaluate, fit_als, index_ids, ingest
from music_recsys.pipeline.config import RunConfig, TrialSpec
from music_recsys.pipeline.plan import build_plan


@pytest.fixture
def config(data_root) -> RunConfig:
    folder = data_root / "plan"
    folder.mkdir(exist_ok=True)
    for split in ("train", "validation", "test"):
        (folder / f"{split}.txt").write_text("u\tt\t1\n")
    return RunConfig.from_params(
        {
            **{f"{s}_path": f"plan/{s}.txt" for s in ("train", "validation", "test")},
            "ranks": [4, 8],
            "reg_params": [0.5],
            "alphas": [2.0],
            "transforms": ["none", "log1p_drop"],
            "drop_threshold": 3,
            "k": 77,
            "sample_fraction": 0.25,
            "seed": 9,
            "max_iter": 6,
            "exclude_seen": False,
            "nonnegative": False,
            "selection_metric": "mpr",
            "fits_per_task": 3,
        }
    )


def test_every_argument_list_parses_with_its_job(config):
    plan = build_plan(config, "manual__parse", "2026-01-05T03:00:00+00:00")
    got = vars(ingest.parse_args(plan["ingest_args"]))
    assert got["train"] == config.train_path and got["sample_fraction"] == 0.25 and got["seed"] == 9
    assert got["result"] == plan["ingest_result"]
    got = vars(index_ids.parse_args(plan["index_args"]))
    assert got["result"] == plan["index_result"] and got["ingest_dir"].endswith("/ingest")
    fitted = []
    for task in plan["fit_kwargs"]:
        got = vars(fit_als.parse_args(task["application_args"]))
        assert (got["drop_threshold"], got["max_iter"], got["seed"], got["nonnegative"]) == (3, 6, 9, False)
        assert got["result"] == task["result_path"] and got["run_dir"] == plan["run_dir"]
        fitted += [TrialSpec.parse(t) for t in got["trials"]]
    assert fitted == config.trials() and [t["application_args"].count("--trial") for t in plan["fit_kwargs"]] == [3, 1]
    got = vars(evaluate.parse_args(plan["evaluate_args"]))
    assert got == {
        "index_dir": f"{plan['run_dir']}/index",
        "plan": plan["plan_path"],
        "k": 77,
        "keep_seen": True,
        "selection_metric": "mpr",
        "result": plan["evaluate_result"],
    }
    assert plan["logical_date"] == "2026-01-05T03:00:00+00:00"


@pytest.mark.parametrize(("min_rank", "java"), [("40", {4: True, 8: True}), ("8", {4: True, 8: False}), ("0", {})])
def test_a_fit_task_below_the_native_blas_rank_runs_on_java_blas(config, monkeypatch, min_rank, java):
    from music_recsys.pipeline.spark import JAVA_BLAS_OPTIONS, executor_java_options, java_options

    monkeypatch.setenv("RECSYS_NATIVE_BLAS_MIN_RANK", min_rank)
    one_per_task = RunConfig.from_params({**config.to_dict(), "fits_per_task": 1})
    tasks = build_plan(one_per_task, "manual__blas", "2026-01-05T03:00:00+00:00")["fit_kwargs"]
    by_rank = {TrialSpec.parse(t["application_args"][-1]).rank: t for t in tasks}
    assert set(by_rank) == {4, 8}
    for rank, task in by_rank.items():
        if java.get(rank):
            assert task["conf"] == {
                "spark.driver.extraJavaOptions": f"{java_options()} {JAVA_BLAS_OPTIONS}",
                "spark.executor.extraJavaOptions": f"{executor_java_options()} {JAVA_BLAS_OPTIONS}",
            }
        else:
            assert "conf" not in task
    # A task fitting several points is judged by its highest rank.
    packed = build_plan(config, "manual__blas_packed", "2026-01-05T03:00:00+00:00")["fit_kwargs"]
    assert all(("conf" in t) is bool(java.get(8)) for t in packed)
