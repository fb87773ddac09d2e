"""The DAG's Python tasks as plain functions: plan a run, check the data, search, record, publish,
finish (the report is ``music_recsys.pipeline.report.write_report``). The DAG module only wires these together;
tests call them directly.

A failure that retrying cannot fix (bad params, a data check that fails) raises an ``InputError``;
``fail_fast`` turns it into a task failure without retries.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from music_recsys import constants as C
from music_recsys.pipeline.config import PATH_PARAMS, ParamError, RunConfig
from music_recsys.pipeline.job import InputError
from music_recsys.pipeline.plan import write_plan
from music_recsys.store.layout import RunLayout, read_json, write_json

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


def run_config(plan: dict[str, Any]) -> RunConfig:
    """The validated configuration ``prepare`` saved for this run."""
    return RunConfig(**read_json(RunLayout(plan["run_dir"]).config))


def prepare(
    params: dict[str, Any],
    run_id: str,
    logical_date: str | None = None,
    render: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Render templated paths, validate the params (paths, bounds, enums), write config and plan."""
    values = dict(params)
    if render is not None:
        for name in PATH_PARAMS:
            if isinstance(values.get(name), str) and "{" in values[name]:
                values[name] = render(values[name])
    config = RunConfig.from_params(values)
    for name in PATH_PARAMS:
        if not Path(getattr(config, name)).exists():
            raise ParamError(f"{name}: {getattr(config, name)} does not exist")
    plan = write_plan(config, run_id, logical_date)
    plan["n_trials"] = len(plan["trials"])
    return plan


def _store(url: str | None):
    from music_recsys.store.results import ResultsStore, results_url

    return ResultsStore(url or results_url())


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

    config = run_config(plan)
    current = {split: ingest["splits"][split]["profile"] for split in C.SPLITS}
    store = _store(url)
    try:
        baseline_run = store.latest_good_profile_run(before=plan["logical_date"], exclude_run_id=plan["run_id"])
        baseline = {r["split"]: r for r in store.fetch("data_profiles", baseline_run)} if baseline_run else None
        new_users = new_tracks = None
        if baseline:
            before_ids = baseline["train"]["ids_dir"]
            new_users = drift.new_share(_read_ids(ingest["ids_dir"], "users"), _read_ids(before_ids, "users"))
            new_tracks = drift.new_share(_read_ids(ingest["ids_dir"], "tracks"), _read_ids(before_ids, "tracks"))
        thresholds = drift.Thresholds(
            config.max_volume_change, config.max_new_user_share, config.max_new_track_share, config.max_count_shift
        )
        outcome = drift.compare(current, baseline, thresholds, new_users, new_tracks)
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
                    "on_data_drift": config.on_data_drift,
                    "run_status": "running",
                }
                for split in C.SPLITS
            ],
        )
    finally:
        store.close()
    if outcome["verdict"] == "first_run":
        message = "data check: no earlier successful run to compare with (first run); passed"
    elif outcome["verdict"] == "pass":
        message = f"data check: passed against run {baseline_run}"
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


def _search_queries(layout: RunLayout, trial: dict[str, Any], n_users: int, max_queries: int, seed: int) -> np.ndarray:
    """The trial's validation users' factors, sampled by ``music_recsys.evaluation.search.query_vectors``."""
    from music_recsys.evaluation.search import query_vectors
    from music_recsys.store.bundle import dense_factors

    users = _read_parquet_dir(layout.index_dir / "validation", [C.USER_IDX])[C.USER_IDX].to_numpy()
    factors = dense_factors(Path(trial["out_dir"]) / "user_factors", n_users, trial["rank"])
    return query_vectors(users, factors, max_queries, seed)


def fast_search(plan: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """Annoy vs exact search on the best trial's factors; rows saved for ``record``."""
    from music_recsys.evaluation.search import better_metric, frontier, operating_point, search_rows, sweep

    config = run_config(plan)
    layout = RunLayout(plan["run_dir"])
    best = evaluation.get("best_trial_id")
    if best is None:
        # Deterministic: the DAG's gate keeps evaluate from running without a fit, so this is a bug or a
        # hand-made call, and a retry cannot help.
        raise InputError("no successful ALS trial to search over (see the evaluate task's result)")
    trial = next(t for t in plan["trials"] if t["trial_id"] == best)
    items = np.load(Path(trial["out_dir"]) / "item_factors.npy")
    n_users = read_json(layout.stage_result("index"))["n_users"]
    queries = _search_queries(layout, trial, n_users, config.annoy_max_queries, config.seed)
    ks = sorted({min(config.k, len(items)), min(C.SERVING_K, len(items))})
    layout.search_dir.mkdir(parents=True, exist_ok=True)
    measurements = sweep(
        items, queries, ks, config.annoy_trees, config.annoy_search_k, config.seed, workdir=layout.search_dir
    )
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
    run_id = plan["run_id"]
    store = _store(url)
    try:
        counts = store.upsert_together(
            {
                "als_trials": als_rows(evaluation, run_id),
                "als_segments": [{**row, "run_id": run_id} for row in evaluation["segments"]],
                "ann_trials": [{**row, "run_id": run_id} for row in read_json(search["rows_path"])],
            }
        )
    finally:
        store.close()
    return {**counts, "store": str(store.engine.url.render_as_string(hide_password=True))}


def publish(
    plan: dict[str, Any],
    evaluation: dict[str, Any],
    search: dict[str, Any],
    data_check: dict[str, Any] | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """Write the best point's model bundle, register it and apply the promotion gate."""
    from music_recsys.pipeline.config import data_root
    from music_recsys.store import registry
    from music_recsys.store.bundle import dense_factors, model_version, models_dir, played_csr, write_bundle
    from music_recsys.store.card import CARD_SETTINGS, data_fingerprint, model_card, result_row

    config = run_config(plan)
    layout = RunLayout(plan["run_dir"])
    best = evaluation["best_trial_id"]
    trial = next(t for t in plan["trials"] if t["trial_id"] == best)
    index = read_json(layout.stage_result("index"))
    ingest = read_json(layout.stage_result("ingest"))
    n_users, n_items, rank = index["n_users"], index["n_items"], trial["rank"]
    version = model_version(plan["run_id"], plan["logical_date"])
    indptr, indices = played_csr(layout.index_dir / "train", n_users, n_items)
    popularity = np.load(layout.evaluation_dir / "popularity_factors.npy").ravel()
    arrays = {
        "user_factors": dense_factors(Path(trial["out_dir"]) / "user_factors", n_users, rank),
        "item_factors": np.load(Path(trial["out_dir"]) / "item_factors.npy").astype(np.float32),
        "played_indptr": indptr,
        "played_indices": indices,
        "popularity": popularity.astype(np.float32),
    }
    point = search["operating_points"].get(str(min(C.SERVING_K, n_items)))
    annoy = None
    if point and point["found"]:
        keys = ("metric", "n_trees", "search_k", "candidates", "k", "recall", "qps", "p50_ms", "p99_ms", "exact_qps")
        annoy = {key: point[key] for key in keys}
    fingerprint = data_fingerprint(ingest)
    settings = {name: getattr(config, name) for name in CARD_SETTINGS}
    card = model_card(
        version=version,
        plan=plan,
        trial=trial,
        settings=settings,
        evaluation=evaluation,
        fingerprint=fingerprint,
        n_users=n_users,
        n_items=n_items,
    )
    validation, test = result_row(evaluation, best, "validation"), result_row(evaluation, best, "test")
    pop_test = result_row(evaluation, C.POPULARITY_TRIAL_ID, "test")
    labels = {key: Path(path) for key, path in index["labels"].items()}
    path = write_bundle(models_dir(data_root()) / version, arrays, labels, card, annoy, config.seed)
    candidate = {
        "model_version": version,
        "run_id": plan["run_id"],
        "trial_id": best,
        "path": str(path),
        "validation_map": validation["map"],
        "test_map": test["map"] if test else None,
        "popularity_test_map": pop_test["map"] if pop_test else None,
        "logical_date": datetime.fromisoformat(plan["logical_date"]),
        "data_fingerprint": fingerprint["hash"],
        "data_verdict": (data_check or {}).get("verdict"),
        "data_summary": (data_check or {}).get("message"),
    }
    policy = registry.Policy(config.promote, config.min_lift_over_popularity, config.max_regression)
    store = _store(url)
    try:
        decision, champion_before = registry.publish(store, candidate, policy)
    finally:
        store.close()
    outcome = {
        "version": version,
        "path": str(path),
        "status": decision.status,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "champion_before": champion_before["model_version"] if champion_before else None,
        "serving": annoy,
    }
    log.info("model %s: %s (%s)", version, decision.status, decision.reason)
    write_json(layout.stage_result("publish"), outcome)
    return outcome


def finish(plan: dict[str, Any], url: str | None = None, keep_runs: int | None = None) -> dict[str, Any]:
    """After a successful run: its data profile becomes a baseline, older runs lose their bulky files."""
    from music_recsys.pipeline.config import data_root
    from music_recsys.store import retention

    store = _store(url)
    try:
        store.mark_run_succeeded(plan["run_id"])
        pruned = retention.prune(data_root(), store, keep_runs)
    finally:
        store.close()
    write_json(RunLayout(plan["run_dir"]).stage_result("finish"), {"finished_at": datetime.now(UTC), **pruned})
    return pruned
