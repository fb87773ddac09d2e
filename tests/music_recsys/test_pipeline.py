"""Planning a run: templated paths per logical date, run-scoped outputs that never collide."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from music_recsys.config import TrialSpec
from music_recsys.pipeline import prepare


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
        plans[day] = prepare(
            _params(), f"backfill__{day}T03:00:00+00:00", render=lambda text, day=day: text.replace("{{ ds }}", day)
        )
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


def test_template_escaping_the_root_is_still_refused(dated_drops):
    with pytest.raises(ValueError, match="outside the allowed roots"):
        prepare(_params(), "manual__y", render=lambda text: text.replace("{{ ds }}", "../../.."))


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
        _params(alphas=[1.0, 10.0], fits_per_task=fits_per_task),
        "manual__pack",
        render=lambda text: text.replace("{{ ds }}", "2026-01-05"),
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
