"""Retention: scheduled retraining must not fill the disk.

After a successful run, runs older than the ``RECSYS_KEEP_RUNS`` most recent (default 5) lose their
bulky intermediates — Spark checkpoints, the ingest and index parquet, the factors of every grid point
but the best — and keep ``report/``, the result JSON, the plan, the search rows and the hashed ids the
data check compares with. A run that has not finished is left alone unless it is more than a day old
(a failed run never finishes, and its files are bulky too) — except a run whose model awaits a person's
approval, which may wait up to 30 days and is kept whole until it is decided. Model bundles beyond the
same number are removed too, never the champion's, the previous champion's (what a rollback needs) or
one awaiting approval, with their rows of ``user_recommendations``.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from music_recsys import settings
from music_recsys.run_folders import RunLayout, read_json, safe_run_id, write_json

STALE_SECONDS = 24 * 3600
PRUNED_MARKER = "pruned.json"


def keep_runs() -> int:
    """How many recent runs (and bundles) stay whole: ``RECSYS_KEEP_RUNS``, at least 1."""
    return max(1, settings.integer("RECSYS_KEEP_RUNS"))


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _created(run: Path) -> float:
    """When the run started (its plan's ``created_at``), else the folder's modification time."""
    try:
        return datetime.fromisoformat(read_json(RunLayout(run).plan)["created_at"]).timestamp()
    except (OSError, KeyError, ValueError):
        return run.stat().st_mtime


def bulky_paths(layout: RunLayout) -> list[Path]:
    """What a pruned run loses: checkpoints, ingest and index data, factors of points that were not best."""
    best = None
    evaluation = layout.stage_result("evaluate")
    if evaluation.exists():
        best = read_json(evaluation).get("best_trial_id")
    paths = [layout.checkpoint_dir]
    paths += [layout.ingest_dir / name for name in ("train", "train_full", "validation", "test", "quarantine")]
    paths += [layout.index_dir / name for name in ("train", "validation", "test", "indexer")]
    if layout.trials_dir.exists():
        paths += [p for p in layout.trials_dir.iterdir() if p.name != best]
    return [p for p in paths if p.exists()]


def prune_run(run: Path) -> int:
    """Remove a run's bulky intermediates; returns the bytes freed. Idempotent."""
    layout = RunLayout(run)
    freed = 0
    removed = []
    for path in bulky_paths(layout):
        freed += folder_bytes(path)
        removed.append(str(path.relative_to(run)))
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if removed:
        write_json(run / PRUNED_MARKER, {"removed": removed, "bytes_freed": freed, "at": time.time()})
    return freed


def prune_runs(root: Path, keep: int, waiting: set[str] = frozenset()) -> dict[str, int]:
    """Slim runs beyond the ``keep`` newest; ``waiting`` names run folders still waiting for a decision."""
    runs_dir = root / "runs"
    if not runs_dir.exists():
        return {}
    runs = sorted((p for p in runs_dir.iterdir() if p.is_dir()), key=_created)
    out = {}
    now = time.time()
    for run in runs[: max(0, len(runs) - keep)]:
        if run.name in waiting:
            continue
        finished = (run / "results" / "finish.json").exists() or (run / "report" / "summary.json").exists()
        if finished or now - run.stat().st_mtime > STALE_SECONDS:
            freed = prune_run(run)
            if freed:
                out[run.name] = freed
    return out


def prune_bundles(root: Path, store: Any, keep: int) -> dict[str, int]:
    """Remove bundles beyond the ``keep`` most recent, never the champion's or the previous champion's."""
    from music_recsys.store import recommendations, registry

    rows = [r for r in registry.all_models(store) if r["bundle_removed_at"] is None]  # newest first
    retired = sorted(
        (r for r in rows if r["status"] == registry.RETIRED and r["retired_at"] is not None),
        key=lambda r: r["retired_at"],
        reverse=True,
    )
    protected = {r["model_version"] for r in rows if r["status"] in (registry.CHAMPION, registry.AWAITING)}
    protected |= {r["model_version"] for r in retired[:1]}
    removed = {}
    for row in rows[keep:]:
        if row["model_version"] in protected:
            continue
        path = registry.bundle_path(row)
        if path.exists() and path.parent == root / "models":
            removed[row["model_version"]] = folder_bytes(path)
            shutil.rmtree(path)
    registry.mark_bundle_removed(store, list(removed))
    # Precomputed lists of a removed bundle can no longer be re-exported or verified: they go too.
    recommendations.forget(store, list(removed))
    return removed


def prune(root: Path, store: Any, keep: int | None = None) -> dict[str, Any]:
    from music_recsys.store import registry

    keep = keep or keep_runs()
    waiting = {safe_run_id(row["run_id"]) for row in registry.awaiting(store)}
    runs = prune_runs(root, keep, waiting)
    bundles = prune_bundles(root, store, keep)
    return {
        "keep": keep,
        "runs_pruned": runs,
        "bundles_removed": bundles,
        "bytes_freed": sum(runs.values()) + sum(bundles.values()),
    }
