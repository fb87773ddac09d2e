"""The DAG's Python tasks as plain functions: plan a run, check the data, search, record, finish (publish
is ``music_recsys.pipeline.publish``, the report ``music_recsys.pipeline.report.write_report``). The DAG
module only wires these together; tests call them directly.

A failure that retrying cannot fix (bad params, a data check that fails) raises an ``InputError``;
``fail_fast`` turns it into a task failure without retries.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from music_recsys import constants as C
from music_recsys import settings
from music_recsys.errors import InputError
from music_recsys.pipeline.config import RunConfig
from music_recsys.pipeline.params import PATH_PARAMS, ParamError, fill_date_placeholders
from music_recsys.pipeline.plan import planned_trials, write_plan
from music_recsys.run_folders import RunLayout, read_json, write_json

log = logging.getLogger(__name__)


class DataDriftError(InputError):
    """The drop differs from the last good one by more than the data-check thresholds."""


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
    """End the task without retries on a failure its inputs cause; anything else keeps its retries."""
    try:
        yield
    except InputError as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc


def prepare(
    params: dict[str, Any],
    run_id: str,
    logical_date: str | None = None,
    dates: dict[str, datetime | None] | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """Fill the date placeholders of path params, validate the params (paths, bounds, enums), bring the
    results store's schema up to date, write config and plan.

    ``dates`` holds the run's ``logical_date``, ``data_interval_start`` and ``data_interval_end`` (default:
    ``logical_date`` for all three): nothing else of the run reaches a path (no template engine)."""
    from music_recsys.store import schema
    from music_recsys.store.results import results_url

    when = datetime.fromisoformat(logical_date) if logical_date else datetime.now(UTC)
    dates = {"logical_date": when, **{k: v for k, v in (dates or {}).items() if v is not None}}
    values = dict(params)
    for name in PATH_PARAMS:
        if isinstance(values.get(name), str):
            values[name] = fill_date_placeholders(name, values[name], dates)
    config = RunConfig.from_params(values)
    for name in PATH_PARAMS:
        if not Path(getattr(config, name)).exists():
            raise ParamError(f"{name}: {getattr(config, name)} does not exist")
    schema.upgrade(url or results_url())  # the run's one explicit migration step; a no-op when current
    plan = write_plan(config, run_id, logical_date)
    plan["n_trials"] = len(plan["trials"])
    return plan


@contextlib.contextmanager
def open_store(url: str | None = None):
    """The results store (``url``, or the ``recsys_results`` connection), closed on the way out."""
    from music_recsys.store.results import ResultsStore, results_url

    with ResultsStore(url or results_url()) as store:
        yield store


def _read_ids(ids_dir: str | None, name: str) -> np.ndarray | None:
    """Hashed train ids the ingest job wrote (None when that run's folder is gone)."""
    import pyarrow.dataset as ds

    path = Path(ids_dir or "") / f"train_{name}"
    if not ids_dir or not path.exists():
        return None
    return ds.dataset(str(path), format="parquet").to_table(columns=["h"])["h"].to_numpy()


def check_data(plan: dict[str, Any], ingest: dict[str, Any], url: str | None = None) -> dict[str, Any]:
    """Profile of every split against the last good run's; records ``data_profiles`` rows, returns the
    verdict, and with ``on_data_drift: fail`` stops the run on drift (``DataDriftError``)."""
    from music_recsys.data import drift

    config = RunConfig.load(plan["run_dir"])
    current = {split: ingest["splits"][split]["profile"] for split in C.SPLITS}
    with open_store(url) as store:
        baseline_run = store.latest_good_profile_run(before=plan["logical_date"], exclude_run_id=plan["run_id"])
        baseline = {r["split"]: r for r in store.fetch("data_profiles", baseline_run)} if baseline_run else None
        new_users = new_tracks = ids_missing = None
        if baseline:
            before_ids = (baseline.get("train") or {}).get("ids_dir")
            now = {name: _read_ids(ingest["ids_dir"], name) for name in ("users", "tracks")}
            before = {name: _read_ids(before_ids, name) for name in ("users", "tracks")}
            new_users = drift.new_share(now["users"], before["users"])
            new_tracks = drift.new_share(now["tracks"], before["tracks"])
            if before["users"] is None or before["tracks"] is None:
                ids_missing = f"the hashed train ids of baseline run {baseline_run} are gone ({before_ids})"
            elif now["users"] is None or now["tracks"] is None:
                ids_missing = f"this drop's hashed train ids are missing ({ingest['ids_dir']})"
        thresholds = drift.Thresholds(
            config.max_volume_change, config.max_new_user_share, config.max_new_track_share, config.max_count_shift
        )
        outcome = drift.compare(current, baseline, thresholds, new_users, new_tracks, ids_missing)
        outcome.update(baseline_run_id=baseline_run, on_data_drift=config.on_data_drift, profiles=current)
        if baseline:
            outcome["baseline_profiles"] = {s: {f: baseline[s][f] for f in drift.PROFILE_FIGURES} for s in baseline}
        store.upsert(
            "data_profiles",
            [
                {
                    "run_id": plan["run_id"],
                    "split": split,
                    "logical_date": datetime.fromisoformat(plan["logical_date"]),
                    **current[split],
                    "ids_dir": ingest["ids_dir"] if split == "train" else None,
                    "baseline_run_id": baseline_run,
                    "changes": outcome["changes"].get(split),
                    "new_user_share": new_users if split == "train" else None,
                    "new_track_share": new_tracks if split == "train" else None,
                    "verdict": outcome["verdict"],
                    "violations": [v for v in outcome["violations"] if v["split"] == split],
                    "skipped_checks": [c for c in outcome["skipped"] if c["split"] == split],
                    "on_data_drift": config.on_data_drift,
                    "run_status": "running",
                }
                for split in C.SPLITS
            ],
        )
    if outcome["verdict"] == "first_run":
        message = "data check: no earlier successful run to compare with (first run); passed"
    elif outcome["verdict"] == "pass":
        message = f"data check: passed against run {baseline_run}"
    elif outcome["verdict"] == "incomplete":
        message = (
            f"data check: incomplete against run {baseline_run}: no figure crossed a threshold, but these checks "
            f"could not run: {drift.skipped_text(outcome['skipped'])}"
        )
    else:
        message = (
            f"data check: this drop differs from run {baseline_run} beyond the thresholds:\n"
            f"{drift.violations_table(outcome['violations'])}"
        )
    outcome["message"] = message
    write_json(RunLayout(plan["run_dir"]).stage_result("check_data"), outcome)
    if outcome["verdict"] == "drift" and config.on_data_drift == "fail":
        raise DataDriftError(
            f"{message}\nThe run stops before any fit (on_data_drift: fail). If the drop is right, rerun with "
            "on_data_drift: warn or wider thresholds."
        )
    log.log(logging.WARNING if outcome["verdict"] == "drift" else logging.INFO, message)
    return outcome


def _read_parquet_dir(path: Path, columns: list[str]):
    import pyarrow.dataset as ds

    return ds.dataset(str(path), format="parquet").to_table(columns=columns)


def _search_queries(
    layout: RunLayout, trial: dict[str, Any], n_users: int, n_items: int, max_queries: int, seed: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The query users' factors (``music_recsys.evaluation.search.query_users``) and each one's train
    tracks, which the API excludes from what it serves them."""
    from music_recsys.evaluation.search import query_users
    from music_recsys.model.factors import read_dense_factors
    from music_recsys.store.bundle import played_csr

    users = _read_parquet_dir(layout.index_dir / "validation", [C.USER_IDX])[C.USER_IDX].to_numpy()
    factors = read_dense_factors(Path(trial["out_dir"]) / "user_factors", n_users, trial["rank"])
    chosen = query_users(users, factors, max_queries, seed)
    indptr, indices = played_csr(layout.index_dir / "train", n_users, n_items)
    return factors[chosen], [indices[indptr[u] : indptr[u + 1]] for u in chosen]


def fast_search(plan: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """Annoy vs exact search on the best trial's factors; rows saved for ``record``."""
    from music_recsys.evaluation.search import better_metric, frontier, operating_point, search_rows, sweep

    config = RunConfig.load(plan["run_dir"])
    layout = RunLayout(plan["run_dir"])
    best = evaluation.get("best_trial_id")
    if best is None:
        # Deterministic: the DAG's gate keeps evaluate from running without a fit, so this is a bug or a
        # hand-made call, and a retry cannot help.
        raise InputError("no successful ALS trial to search over (see the evaluate task's result)")
    trial = next(t for t in planned_trials(plan) if t["trial_id"] == best)
    items = np.load(Path(trial["out_dir"]) / "item_factors.npy")
    n_users = read_json(layout.stage_result("index"))["n_users"]
    queries, played = _search_queries(layout, trial, n_users, len(items), config.annoy_max_queries, config.seed)
    ks = sorted({min(config.k, len(items)), min(C.SERVING_K, len(items))})
    layout.search_dir.mkdir(parents=True, exist_ok=True)
    # Measured as served: each query user's train tracks excluded (when the run excludes them).
    measurements = sweep(
        items, queries, ks, config.annoy_trees, config.annoy_search_k, config.seed, workdir=layout.search_dir,
        exclude=played if config.exclude_seen else None, target_recall=config.annoy_target_recall,
    )  # fmt: skip
    points = {k: operating_point(measurements, k, config.annoy_target_recall) for k in ks}
    write_json(layout.search_dir / "ann_trials.json", search_rows(measurements, points, best))
    summary = {
        "trial_id": best,
        "n_items": int(len(items)),
        "n_queries": int(len(queries)),
        "operating_points": {str(k): p for k, p in points.items()},
        "frontier": {str(k): frontier(measurements, k) for k in ks},
        **better_metric(measurements, ks[-1], config.annoy_target_recall),
        "rows_path": str(layout.search_dir / "ann_trials.json"),
    }
    write_json(layout.stage_result("fast_search"), summary)
    return summary


def als_rows(evaluation: dict[str, Any], run_id: str) -> list[dict[str, Any]]:
    best = evaluation.get("best_trial_id")
    return [
        {
            **row,
            "run_id": run_id,
            "is_best": row["trial_id"] == best,
            "selection_metric": evaluation["selection_metric"],
        }
        for row in evaluation["rows"]
    ]


def record(plan: dict[str, Any], evaluation: dict[str, Any], search: dict[str, Any], url: str | None = None) -> dict:
    """Upsert every trial, segment and search row of this run into the results store, in one transaction."""
    from music_recsys.pipeline import search as adaptive

    run_id = plan["run_id"]
    # The adaptive search's screening fits are trials too, recorded with their round and fidelity.
    screened = [
        {**row, "run_id": run_id, "is_best": False, "selection_metric": evaluation["selection_metric"]}
        for row in adaptive.screening_rows(plan, evaluation)
    ]
    with open_store(url) as store:
        adaptive.tell_final(plan, evaluation, store.url)
        counts = store.upsert_together(
            {
                "als_trials": als_rows(evaluation, run_id) + screened,
                "als_segments": [{**row, "run_id": run_id} for row in evaluation["segments"]],
                "ann_trials": [{**row, "run_id": run_id} for row in read_json(search["rows_path"])],
            }
        )
    return {**counts, "store": str(store.engine.url.render_as_string(hide_password=True))}


def finish(plan: dict[str, Any], url: str | None = None, keep_runs: int | None = None) -> dict[str, Any]:
    """After a successful run: its data profile becomes a baseline, older runs lose their bulky files."""
    from music_recsys.store import retention

    with open_store(url) as store:
        store.mark_run_succeeded(plan["run_id"])
        pruned = retention.prune(Path(plan.get("data_root") or settings.data_root()), store, keep_runs)
    write_json(RunLayout(plan["run_dir"]).stage_result("finish"), {"finished_at": datetime.now(UTC), **pruned})
    return pruned
