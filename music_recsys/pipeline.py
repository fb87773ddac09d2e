"""The DAG's Python tasks as plain functions: plan a run, fast search, record results, report.

The DAG module only wires these together; tests call them directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from music_recsys import constants as C
from music_recsys.artifacts import RunLayout, read_json, write_json
from music_recsys.config import RunConfig
from music_recsys.plan import write_plan

PATH_PARAMS = ("train_path", "validation_path", "test_path")


def prepare(params: dict[str, Any], run_id: str, render: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Render templated paths, validate the params (paths, bounds, enums), write config and plan."""
    values = dict(params)
    if render is not None:
        for name in PATH_PARAMS:
            if isinstance(values.get(name), str) and "{" in values[name]:
                values[name] = render(values[name])
    config = RunConfig.from_params(values)
    plan = write_plan(config, run_id)
    plan["n_trials"] = len(plan["trials"])
    return plan


def _read_parquet_dir(path: Path, columns: list[str]):
    import pyarrow.dataset as ds

    return ds.dataset(str(path), format="parquet").to_table(columns=columns)


def query_vectors(layout: RunLayout, trial_dir: Path, max_queries: int, seed: int) -> np.ndarray:
    """Factors of the validation users (a seeded sample of at most ``max_queries``)."""
    users = np.unique(_read_parquet_dir(layout.index_dir / "validation", [C.USER_IDX])[C.USER_IDX].to_numpy())
    table = _read_parquet_dir(trial_dir / "user_factors", ["id", "features"])
    ids = table["id"].to_numpy()
    keep = np.isin(ids, users)
    features = table["features"].to_pylist()
    vectors = np.array([features[i] for i in np.flatnonzero(keep)], dtype=np.float32)
    if len(vectors) > max_queries:
        vectors = vectors[np.random.default_rng(seed).choice(len(vectors), max_queries, replace=False)]
    return vectors


def fast_search(plan: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """Annoy vs exact search on the best trial's factors; rows saved for ``record``."""
    from music_recsys.search import ANNOY_METRICS, frontier, operating_point, sweep

    config = RunConfig(**read_json(Path(plan["run_dir"]) / "config.json"))
    layout = RunLayout(plan["run_dir"])
    best = evaluation.get("best_trial_id")
    if best is None:
        raise ValueError("no successful ALS trial to search over (see the evaluate task's result)")
    trial = next(t for t in plan["trials"] if t["trial_id"] == best)
    items = np.load(Path(trial["out_dir"]) / "item_factors.npy")
    queries = query_vectors(layout, Path(trial["out_dir"]), config.annoy_max_queries, config.seed)
    ks = sorted({min(config.k, len(items)), min(C.SERVING_K, len(items))})
    layout.search_dir.mkdir(parents=True, exist_ok=True)
    measurements = sweep(
        items, queries, ks, config.annoy_trees, config.annoy_search_k, config.seed, workdir=layout.search_dir
    )
    points = {k: operating_point(measurements, k, config.annoy_target_recall) for k in ks}

    def is_operating_point(m) -> bool:
        p = points[m.k]
        return bool(p["found"]) and (m.metric, m.n_trees, m.search_k, m.candidates) == (
            p["metric"],
            p["n_trees"],
            p["search_k"],
            p["candidates"],
        )

    rows = [{**asdict(m), "trial_id": best, "is_operating_point": is_operating_point(m)} for m in measurements]
    write_json(layout.search_dir / "ann_trials.json", rows)
    # Which metric serves better: the faster one at the target recall, else the one reaching higher recall.
    per_metric = {m: operating_point(measurements, ks[-1], config.annoy_target_recall, [m]) for m in ANNOY_METRICS}
    max_recall = {m: max(x.recall for x in measurements if x.metric == m and x.k == ks[-1]) for m in ANNOY_METRICS}
    better = max(ANNOY_METRICS, key=lambda m: (per_metric[m]["found"], per_metric[m].get("qps", 0.0), max_recall[m]))
    summary = {
        "trial_id": best,
        "n_items": int(len(items)),
        "n_queries": int(len(queries)),
        "operating_points": {str(k): p for k, p in points.items()},
        "frontier": {str(k): frontier(measurements, k) for k in ks},
        "max_recall_by_metric": max_recall,
        "qps_at_target_by_metric": {m: p.get("qps") for m, p in per_metric.items()},
        "better_metric": better,
        "rows_path": str(layout.search_dir / "ann_trials.json"),
    }
    write_json(layout.stage_result("fast_search"), summary)
    return summary


def als_rows(evaluation: dict[str, Any], run_id: str) -> list[dict[str, Any]]:
    best = evaluation.get("best_trial_id")
    return [{**row, "run_id": run_id, "is_best": row["trial_id"] == best} for row in evaluation["rows"]]


def record(plan: dict[str, Any], evaluation: dict[str, Any], search: dict[str, Any], url: str | None = None) -> dict:
    """Upsert every trial and search row of this run into the results store."""
    from music_recsys.results import ResultsStore, results_url

    store = ResultsStore(url or results_url())
    try:
        n_als = store.upsert_als_trials(als_rows(evaluation, plan["run_id"]))
        ann = [{**row, "run_id": plan["run_id"]} for row in read_json(search["rows_path"])]
        n_ann = store.upsert_ann_trials(ann)
    finally:
        store.close()
    return {
        "als_trials": n_als,
        "ann_trials": n_ann,
        "store": str(store.engine.url.render_as_string(hide_password=True)),
    }


def report(
    plan: dict[str, Any],
    evaluation: dict[str, Any],
    search: dict[str, Any],
    recorded: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Plots, a markdown report and ``summary.json`` in ``<run>/report``."""
    from music_recsys.report import write_report

    return write_report(plan, evaluation, search, recorded)
