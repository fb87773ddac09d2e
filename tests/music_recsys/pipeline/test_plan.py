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
