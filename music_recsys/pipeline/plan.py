"""The run plan: every stage's ``application_args`` and result path, derived from one RunConfig.

Built by the DAG's first task (mapped templated fields are not rendered, so the mapped fit tasks get
their arguments as plain values from here) and saved as ``plan.json`` in the run directory, where the
evaluation job reads the list of trials.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from music_recsys.pipeline.config import RunConfig, TrialSpec
from music_recsys.pipeline.spark import fit_conf
from music_recsys.run_folders import RunLayout, read_json, run_dir, write_json
from music_recsys.settings import data_root


def trial_entry(config: RunConfig, layout: RunLayout, spec: TrialSpec) -> dict[str, Any]:
    """A trial as ``plan.json`` lists it: the point, where its factors and its fit result go."""
    return {
        **spec.as_dict(),
        "out_dir": str(layout.trial_dir(spec.trial_id)),
        "result": str(layout.trial_result(spec.trial_id)),
        "nonnegative": config.nonnegative,
    }


def fit_kwargs(
    config: RunConfig, layout: RunLayout, specs: list[TrialSpec], extra_args: list[str] | None = None
) -> list[dict[str, Any]]:
    """The mapped fit tasks' kwargs: one task per ``fits_per_task`` points (default 1: a task per point).
    ``extra_args`` go to every task (the adaptive search's screening options)."""
    tasks = []
    for first in range(0, len(specs), config.fits_per_task):
        chunk = specs[first : first + config.fits_per_task]
        ids = [spec.trial_id for spec in chunk]
        label = ids[0] if len(ids) == 1 else f"{ids[0]}..{ids[-1]}"
        args = [
            "--train",
            str(layout.index_dir / "train"),
            "--run-dir",
            str(layout.root),
            "--drop-threshold",
            str(config.drop_threshold),
            "--max-iter",
            str(config.max_iter),
            "--seed",
            str(config.seed),
            "--nonnegative" if config.nonnegative else "--no-nonnegative",
            "--result",
            str(layout.fit_task_result(ids[0])),
            *(extra_args or []),
        ]
        for spec in chunk:
            args += ["--trial", str(spec)]
        task = {
            "grid_point": label,
            "result_path": str(layout.fit_task_result(ids[0])),
            "name": f"music_recsys.fit.{label}",
            "application_args": args,
        }
        if conf := fit_conf(max(spec.rank for spec in chunk)):  # Java BLAS for low ranks (spark-submit)
            task["conf"] = conf
        tasks.append(task)
    return tasks


def planned_trials(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's trials as ``plan.json`` lists them now: the adaptive search writes its final round's points
    there (after ``prepare``), the grid's are there from the start."""
    path = Path(plan.get("plan_path") or "")
    return read_json(path)["trials"] if path.is_file() else plan["trials"]


def build_plan(config: RunConfig, run_id: str, logical_date: str | None = None) -> dict[str, Any]:
    """Every stage's arguments; ``logical_date`` (ISO, default now) orders runs for the data check and
    the model registry. In adaptive search the trials and fit tasks are left empty: the search's
    rounds choose them (``music_recsys.pipeline.search``)."""
    layout = RunLayout(run_dir(run_id))
    specs = config.trials() if config.search == "grid" else []
    trials = [trial_entry(config, layout, spec) for spec in specs]
    plan_path = layout.plan
    evaluate_args = [
        "--index-dir",
        str(layout.index_dir),
        "--plan",
        str(plan_path),
        "--k",
        str(config.k),
        "--selection-metric",
        config.selection_metric,
        "--result",
        str(layout.stage_result("evaluate")),
    ]
    if not config.exclude_seen:
        evaluate_args.append("--keep-seen")
    now = datetime.now(UTC).isoformat()
    return {
        "run_id": run_id,
        # Every task of the run uses this root, whatever directory its process started in.
        "data_root": str(data_root()),
        "logical_date": logical_date or now,
        "created_at": now,
        "run_dir": str(layout.root),
        "plan_path": str(plan_path),
        "trials": trials,
        "ingest_args": [
            "--train",
            config.train_path,
            "--validation",
            config.validation_path,
            "--test",
            config.test_path,
            "--out-dir",
            str(layout.ingest_dir),
            "--sample-fraction",
            repr(config.sample_fraction),
            "--seed",
            str(config.seed),
            "--max-reject-fraction",
            repr(config.max_reject_fraction),
            "--result",
            str(layout.stage_result("ingest")),
        ],
        "ingest_result": str(layout.stage_result("ingest")),
        "index_args": [
            "--ingest-dir",
            str(layout.ingest_dir),
            "--out-dir",
            str(layout.index_dir),
            "--result",
            str(layout.stage_result("index")),
        ],
        "index_result": str(layout.stage_result("index")),
        "search": config.search,
        "fit_kwargs": fit_kwargs(config, layout, specs),
        "evaluate_args": evaluate_args,
        "evaluate_result": str(layout.stage_result("evaluate")),
    }


def write_plan(config: RunConfig, run_id: str, logical_date: str | None = None) -> dict[str, Any]:
    """Build the plan, create the run directory, save ``config.json`` and ``plan.json``."""
    plan = build_plan(config, run_id, logical_date)
    layout = RunLayout(plan["run_dir"])
    layout.root.mkdir(parents=True, exist_ok=True)
    config.save(layout.root)
    write_json(layout.plan, plan)
    return plan
