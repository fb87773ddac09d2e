"""The run plan: every stage's ``application_args`` and result path, derived from one RunConfig.

Built by the DAG's first task (mapped templated fields are not rendered, so the mapped fit tasks get
their arguments as plain values from here) and saved as ``plan.json`` in the run directory, where the
evaluation job reads the list of trials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from music_recsys.artifacts import RunLayout, write_json
from music_recsys.config import RunConfig, run_dir


def build_plan(config: RunConfig, run_id: str) -> dict[str, Any]:
    layout = RunLayout(run_dir(run_id))
    trials = []
    for spec in config.trials():
        trials.append(
            {
                **spec.as_dict(),
                "out_dir": str(layout.trial_dir(spec.trial_id)),
                "result": str(layout.trial_result(spec.trial_id)),
            }
        )
    fit_kwargs = [
        {
            "grid_point": t["trial_id"],
            "result_path": t["result"],
            "name": f"music_recsys.fit.{t['trial_id']}",
            "application_args": [
                "--train",
                str(layout.index_dir / "train"),
                "--out-dir",
                t["out_dir"],
                "--trial-id",
                t["trial_id"],
                "--rank",
                str(t["rank"]),
                "--reg-param",
                repr(t["reg_param"]),
                "--alpha",
                repr(t["alpha"]),
                "--transform",
                t["transform"],
                "--drop-threshold",
                str(config.drop_threshold),
                "--max-iter",
                str(config.max_iter),
                "--seed",
                str(config.seed),
                "--checkpoint-dir",
                str(layout.checkpoint_dir / t["trial_id"]),
                "--result",
                t["result"],
            ],
        }
        for t in trials
    ]
    plan_path = layout.root / "plan.json"
    evaluate_args = [
        "--index-dir",
        str(layout.index_dir),
        "--plan",
        str(plan_path),
        "--k",
        str(config.k),
        "--result",
        str(layout.stage_result("evaluate")),
    ]
    if not config.exclude_seen:
        evaluate_args.append("--keep-seen")
    return {
        "run_id": run_id,
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
        "fit_kwargs": fit_kwargs,
        "evaluate_args": evaluate_args,
        "evaluate_result": str(layout.stage_result("evaluate")),
    }


def write_plan(config: RunConfig, run_id: str) -> dict[str, Any]:
    """Build the plan, create the run directory, save ``config.json`` and ``plan.json``."""
    plan = build_plan(config, run_id)
    root = Path(plan["run_dir"])
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(config.to_json())
    write_json(plan["plan_path"], plan)
    return plan
