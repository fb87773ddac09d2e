"""Run folders: where each stage of a run reads and writes under ``<data root>/runs/<run id>``
(``RunLayout``), and the atomic file writes every stage uses (temp file + rename, so a reader never sees
half a file). It sits at the bottom of the package: jobs, evaluation, store and pipeline all use it."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from music_recsys import settings


def run_dir(run_id: str) -> Path:
    """The run-scoped artifact directory ``<data root>/runs/<run id>``, with the id made path-safe."""
    return settings.data_root() / "runs" / safe_run_id(run_id)


def safe_run_id(run_id: str) -> str:
    """Airflow run ids contain ``:`` and ``+``; keep them readable but filesystem- and URI-safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")
    if not safe:
        raise ValueError(f"run id {run_id!r} has no usable characters")
    return safe


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as JSON so readers never see a half-written file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True, default=str)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def save_npy(path: str | os.PathLike, array) -> Path:
    """``numpy.save`` through a temp file + rename, so readers never load a partial matrix."""
    import numpy as np

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".npy", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def replace_folder(new: Path, target: Path) -> None:
    """Put the folder ``new`` at ``target``, removing what was there (a rerun); the old folder goes only
    after the new one is in place, so a failure in between leaves one of them whole."""
    import shutil

    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


class RunLayout:
    """Where each stage of one run reads and writes, under ``<data root>/runs/<run id>``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def ingest_dir(self) -> Path:
        return self.root / "ingest"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def trials_dir(self) -> Path:
        return self.root / "trials"

    def trial_dir(self, trial_id: str) -> Path:
        return self.trials_dir / trial_id

    def trial_result(self, trial_id: str) -> Path:
        return self.results_dir / "fit" / f"{trial_id}.json"

    def trial_checkpoints(self, trial_id: str) -> Path:
        return self.checkpoint_dir / trial_id

    def fit_task_result(self, first_trial_id: str) -> Path:
        """Summary of one fit task (one or more grid points), named after its first point."""
        return self.results_dir / "fit_tasks" / f"{first_trial_id}.json"

    @property
    def evaluation_dir(self) -> Path:
        """Inputs the evaluation job writes for Spark's Python workers (popularity vectors)."""
        return self.root / "evaluation"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def search_dir(self) -> Path:
        return self.root / "search"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    def stage_result(self, stage: str) -> Path:
        return self.results_dir / f"{stage}.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"
