"""What each page of the Airflow UI plugin shows, as plain data read from the results store and a run's
``report/`` folder. The HTTP layer (``music_recsys.ui.app``) only renders these; tests call them directly.

A request names a run by its Airflow run id. The id is looked up in the results store first (an id the
store has never seen is a 404), and the run's folder is derived from it with the pipeline's own path-safe
naming and checked to lie under the runs root; a file of that folder is served only when its name is one
of the names the folder actually lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from music_recsys import constants as C
from music_recsys.store import registry
from music_recsys.store.card import lift, read_card
from music_recsys.store.results import ResultsStore, als_trials, ann_trials, data_profiles, models

# Columns a visitor may sort the trials table by (anything else falls back to MAP).
TRIAL_SORT_COLUMNS = (
    "trial_id",
    "rank",
    "reg_param",
    "alpha",
    "transform",
    "map",
    "map_at_k",
    "precision_at_k",
    "ndcg_at_k",
    "ndcg_graded_at_k",
    "mpr",
    "coverage_at_k",
    "fit_seconds",
)
# Files of a run's report/ folder the pages link to or embed; nothing else there is served.
SERVED_SUFFIXES = {".png": "image/png", ".svg": "image/svg+xml", ".md": "text/markdown", ".json": "application/json"}
RECENT_RUNS = 20


class UnknownRun(LookupError):
    """The results store has no row of this run."""


def champion_view(store: ResultsStore) -> dict[str, Any] | None:
    """The champion's registry row, its model card and the figures the overview's card shows."""
    row = registry.champion(store)
    if row is None:
        return None
    card = read_card(row["path"]) or {}
    metrics = card.get("metrics") or {}
    popularity = card.get("popularity") or {}
    files = card.get("files") or {}
    return {
        "row": row,
        "card": card,
        "params": card.get("params") or {},
        "validation": metrics.get("validation") or {},
        "test": metrics.get("test") or {},
        "popularity_validation": popularity.get("validation") or {},
        "popularity_test": popularity.get("test") or {},
        "lift": lift(row["test_map"], row["popularity_test_map"]),
        "why": _why(row["reason"]),
        "serving": card.get("serving"),
        "data": card.get("data") or {},
        "bundle_bytes": sum(files.values()) if files else None,
    }


def _why(reason: str | None) -> str | None:
    """What the champion card adds to its own figures: who or what made the model champion. The gate's
    part of a reason restates the test MAP and lift the card already shows, so it is said once."""
    if not reason or reason.lower().startswith("test map"):
        return None
    return re.split(r"; (?:the )?gate(?: passed it)?: ", reason, maxsplit=1)[0]


def recent_runs(store: ResultsStore, limit: int = RECENT_RUNS) -> list[dict[str, Any]]:
    """The latest runs the store has rows of: data check verdict, best point, published model."""

    def work(conn: sa.Connection) -> list[dict[str, Any]]:
        runs: dict[str, dict[str, Any]] = {}
        for r in conn.execute(
            sa.select(data_profiles.c.run_id, data_profiles.c.logical_date, data_profiles.c.verdict,
                      data_profiles.c.run_status).where(data_profiles.c.split == "train")
        ):  # fmt: skip
            runs[r.run_id] = {"run_id": r.run_id, "logical_date": r.logical_date, "verdict": r.verdict,
                              "run_status": r.run_status}  # fmt: skip
        best = conn.execute(
            sa.select(als_trials.c.run_id, als_trials.c.trial_id, als_trials.c.split, als_trials.c.map,
                      als_trials.c.k, als_trials.c.recorded_at).where(als_trials.c.is_best.is_(True))
        )  # fmt: skip
        for r in best:
            run = runs.setdefault(r.run_id, {"run_id": r.run_id, "logical_date": None, "verdict": None})
            run["best_trial_id"] = r.trial_id
            run[f"best_{r.split}_map"] = r.map
            run["k"] = r.k
            run.setdefault("recorded_at", r.recorded_at)
        for r in conn.execute(sa.select(models.c.run_id, models.c.model_version, models.c.status,
                                        models.c.logical_date)):  # fmt: skip
            run = runs.setdefault(r.run_id, {"run_id": r.run_id, "logical_date": r.logical_date, "verdict": None})
            run.update(model_version=r.model_version, model_status=r.status)
            run["logical_date"] = run["logical_date"] or r.logical_date
        return list(runs.values())

    rows = store.transaction(work)

    def when(run: dict[str, Any]) -> str:
        value = run.get("logical_date") or run.get("recorded_at")
        return value.isoformat() if value is not None else ""

    return sorted(rows, key=when, reverse=True)[:limit]


def common_k(rows: list[dict[str, Any]]) -> int | None:
    """The k every row was measured at, or None when they differ (a table then shows k per row). Rows
    without a k (a run that recorded no trials) have no figures to label."""
    ks = {r["k"] for r in rows if r.get("k") is not None}
    return ks.pop() if len(ks) == 1 else None


def overview(store: ResultsStore) -> dict[str, Any]:
    models_ = registry.all_models(store)
    runs = recent_runs(store)
    return {
        "champion": champion_view(store),
        "models": models_,
        "awaiting": [m for m in models_ if m["status"] == registry.AWAITING],
        "registry_k": common_k(models_),
        "runs": runs,
        "runs_k": common_k(runs),
    }


def run_known(store: ResultsStore, run_id: str) -> bool:
    def work(conn: sa.Connection) -> bool:
        return any(
            conn.execute(sa.select(table.c.run_id).where(table.c.run_id == run_id).limit(1)).first() is not None
            for table in (als_trials, data_profiles, models, ann_trials)
        )

    return store.transaction(work)


def report_dir(runs_root: Path, run_id: str) -> Path:
    """``<runs root>/<path-safe run id>/report``, refused if it would resolve outside the runs root."""
    from music_recsys.run_folders import safe_run_id

    root = runs_root.resolve()
    folder = (root / safe_run_id(run_id) / "report").resolve()
    if not folder.is_relative_to(root):
        raise UnknownRun(f"run {run_id!r}: its folder {folder} lies outside the runs root {root}")
    return folder


def report_files(folder: Path) -> dict[str, Path]:
    """The servable files the folder holds, by name (read from the folder, never from the request)."""
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in SERVED_SUFFIXES}


@dataclass(frozen=True)
class TrialSort:
    column: str = "map"
    descending: bool = True

    @classmethod
    def parse(cls, column: str | None, order: str | None) -> TrialSort:
        if column not in TRIAL_SORT_COLUMNS:
            return cls()
        return cls(column, order != "asc")


def sort_trials(rows: list[dict[str, Any]], sort: TrialSort) -> list[dict[str, Any]]:
    present = [r for r in rows if r.get(sort.column) is not None]
    missing = [r for r in rows if r.get(sort.column) is None]  # failed trials have no metrics: always last
    return sorted(present, key=lambda r: r[sort.column], reverse=sort.descending) + missing


def fast_search_view(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per k: the operating point, the exact baselines and the recall/speed frontier of the Annoy rows."""
    from music_recsys.evaluation.search import frontier

    out = []
    for k in sorted({r["k"] for r in rows}):
        at_k = [r for r in rows if r["k"] == k]
        out.append(
            {
                "k": k,
                "operating_point": next((r for r in at_k if r.get("is_operating_point")), None),
                "exact": {r["metric"]: r for r in at_k if r["metric"] in ("exact", "exact_batched")},
                "frontier": frontier([SimpleNamespace(**r) for r in at_k], k),
                "n_configurations": sum(r["metric"] not in ("exact", "exact_batched") for r in at_k),
            }
        )
    return out


def read_failure(runs_root: Path, run_id: str) -> dict[str, Any] | None:
    """The run's ``failure.json`` (written by the DAG's failure callback), or None when it has none."""
    import json

    from music_recsys.pipeline.failure import FAILURE_FILE

    path = report_dir(runs_root, run_id).parent / FAILURE_FILE
    if not path.is_file():
        return None
    try:
        failure = json.loads(path.read_text())
    except ValueError:
        return None
    return failure if isinstance(failure, dict) else None


def run_view(store: ResultsStore, runs_root: Path, run_id: str, sort: TrialSort | None = None) -> dict[str, Any]:
    """Everything the run page shows. Raises ``UnknownRun`` when the store has no row of ``run_id`` and its
    folder no ``failure.json``; a run that failed before recording anything gets ``{"run_id", "failure"}``
    and ``"recorded": False``."""
    failure = read_failure(runs_root, run_id)
    if not run_known(store, run_id):
        if failure is None:
            raise UnknownRun(f"no run {run_id!r} in the results store")
        return {"run_id": run_id, "failure": failure, "recorded": False}
    sort = sort or TrialSort()
    trials = store.fetch("als_trials", run_id)
    best = next((r for r in trials if r.get("is_best") and r["split"] == "validation"), None)
    best_id = best["trial_id"] if best else None

    def find(trial_id: str | None, split: str) -> dict[str, Any] | None:
        return next((r for r in trials if r["trial_id"] == trial_id and r["split"] == split), None)

    headline = [
        row
        for row in (
            find(best_id, "validation"),
            find(C.POPULARITY_TRIAL_ID, "validation"),
            find(best_id, "test"),
            find(C.POPULARITY_TRIAL_ID, "test"),
        )
        if row is not None
    ]
    segments = sorted(
        (s for s in store.fetch("als_segments", run_id) if s["split"] == "test"),
        key=lambda s: (s["trial_id"] != best_id, s["trial_id"], s["segment"]),
    )
    profiles = {r["split"]: r for r in store.fetch("data_profiles", run_id)}
    publication = next(iter(store.fetch("models", run_id)), None)
    folder = report_dir(runs_root, run_id)
    files = report_files(folder)
    best_test, pop_test = find(best_id, "test"), find(C.POPULARITY_TRIAL_ID, "test")
    return {
        "run_id": run_id,
        "recorded": True,
        "failure": failure,
        "k": next((r["k"] for r in trials if r.get("k")), None),
        "best_trial_id": best_id,
        "best_validation": best,
        "best_test": best_test,
        "test_lift": lift(best_test and best_test["map"], pop_test and pop_test["map"]),
        "headline": headline,
        "trials": sort_trials([r for r in trials if r["split"] == "validation"], sort),
        "sort": sort,
        "segments": segments,
        "data_check": profiles,
        "fast_search": fast_search_view(store.fetch("ann_trials", run_id)),
        "publication": publication,
        "files": files,
        "report_md": files["report.md"].read_text() if "report.md" in files else None,
    }


def plot_rows(store: ResultsStore, run_id: str, kind: str) -> tuple[list[dict], dict[str, Any]]:
    """Rows and arguments the report's figure functions need to draw ``kind`` again from the store
    (a run whose report/ folder is gone still gets its plots)."""
    if kind == "als_grid":
        rows = store.fetch("als_trials", run_id)
        return rows, {"k": next((r["k"] for r in rows if r.get("k")), C.SERVING_K)}
    if kind == "segments":
        best = next((r["trial_id"] for r in store.fetch("als_trials", run_id) if r.get("is_best")), None)
        return store.fetch("als_segments", run_id), {"best_id": best, "split": "test"}
    if kind == "fast_search":
        rows = store.fetch("ann_trials", run_id)
        return rows, {"k": max((r["k"] for r in rows), default=C.SERVING_K)}
    raise KeyError(kind)
