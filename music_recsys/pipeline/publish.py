"""The publish task: the run's best point as a model bundle, registered and judged like for like.

The champion is compared with the candidate on the candidate's own data: its bundle's factors are scored
on this run's validation and test splits at this run's k, with this run's train tracks excluded and users
it never saw folded in (``music_recsys.evaluation.rescore``), so the gate and the approval card compare
numbers measured the same way. Only when the champion's bundle is gone does the gate fall back to its
recorded figures, and only when they were measured on the same data at the same k; otherwise it skips the
regression check and says so. The registry records what the candidate was compared with
(``compared_with``, ``compared_test_map``) and the comparison is kept in ``results/compare.json``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from music_recsys import constants as C
from music_recsys import settings
from music_recsys.run_folders import RunLayout, read_json, write_json

log = logging.getLogger(__name__)


def _read(path: Path, columns: list[str]):
    import pyarrow.dataset as ds

    return ds.dataset(str(path), format="parquet").to_table(columns=columns)


def run_data(index_dir: Path):
    """This run's held-out splits and their users' train history (index space), with the id labels."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from music_recsys.evaluation.rescore import Interactions
    from music_recsys.store.bundle import read_labels

    columns = [C.USER_IDX, C.ITEM_IDX, C.COUNT]

    def interactions(table) -> Interactions:
        return Interactions(*(table[c].to_numpy().astype(np.int64) for c in columns))

    held_out = {split: _read(index_dir / split, columns) for split in C.EVAL_SPLITS}
    users = np.unique(np.concatenate([t[C.USER_IDX].to_numpy() for t in held_out.values()]))
    train = _read(index_dir / "train", columns)
    train = train.filter(pc.is_in(train[C.USER_IDX], value_set=pa.array(users)))
    labels = index_dir / "labels"
    return {
        "user_ids": read_labels(labels, "users"),
        "track_ids": read_labels(labels, "tracks"),
        "train": interactions(train),
        "held_out": {split: interactions(t) for split, t in held_out.items()},
    }


def compare_with(champion: dict[str, Any] | None, data, k: int, exclude_seen: bool, fingerprint: str):
    """The ``Comparison`` of the gate: ``champion`` re-scored on this run's data (``data()`` loads it),
    else its recorded figures when comparable, else none (with the reason)."""
    from music_recsys.evaluation.rescore import rescore
    from music_recsys.store import registry
    from music_recsys.store.bundle import BundleError, factor_model

    if champion is None:
        return registry.Comparison(None)
    version = champion["model_version"]
    folder = registry.bundle_path(champion)
    if champion["bundle_removed_at"] is not None:
        why = "its bundle was removed by retention"
    else:
        try:
            model = factor_model(folder)
        except BundleError as exc:
            why = f"its bundle cannot be read ({exc})"
        else:
            loaded = data()
            metrics = rescore(model, loaded["user_ids"], loaded["track_ids"], loaded["train"], loaded["held_out"],
                              k, exclude_seen)  # fmt: skip
            return registry.Comparison(
                version,
                registry.RESCORED,
                k,
                test_map=metrics["test"]["map"],
                validation_map=metrics["validation"]["map"],
                metrics=metrics,
            )
    same_data, same_k = champion["data_fingerprint"] == fingerprint, champion.get("k") == k
    if same_data and same_k:
        return registry.Comparison(
            version, registry.RECORDED, k, champion["test_map"], champion["validation_map"],
            note=f"{why}, so it was not re-scored",
        )  # fmt: skip
    measured = [part for part, same in (("on other data", same_data), (f"at k={champion.get('k') or '?'}", same_k))
                if not same]  # fmt: skip
    return registry.Comparison(
        version, note=f"{why}, and its own figures were measured {' and '.join(measured)}: no regression check"
    )


def publish(
    plan: dict[str, Any],
    evaluation: dict[str, Any],
    search: dict[str, Any],
    data_check: dict[str, Any] | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """Write the best point's model bundle, register it and apply the promotion gate against the champion
    re-scored on this run's data."""
    from music_recsys.data.fingerprint import array_digest, digest
    from music_recsys.model.factors import read_dense_factors
    from music_recsys.pipeline.config import RunConfig
    from music_recsys.pipeline.plan import planned_trials
    from music_recsys.pipeline.tasks import open_store
    from music_recsys.store import registry
    from music_recsys.store.bundle import model_version, models_dir, played_csr, write_bundle
    from music_recsys.store.card import CARD_SETTINGS, data_fingerprint, model_card, result_row

    config = RunConfig.load(plan["run_dir"])
    layout = RunLayout(plan["run_dir"])
    root = Path(plan.get("data_root") or settings.data_root())
    best = evaluation["best_trial_id"]
    trial = next(t for t in planned_trials(plan) if t["trial_id"] == best)
    index = read_json(layout.stage_result("index"))
    ingest = read_json(layout.stage_result("ingest"))
    n_users, n_items, rank = index["n_users"], index["n_items"], trial["rank"]
    version = model_version(plan["run_id"], plan["logical_date"])
    indptr, indices = played_csr(layout.index_dir / "train", n_users, n_items)
    popularity = np.load(layout.evaluation_dir / "popularity_factors.npy").ravel()
    arrays = {
        "user_factors": read_dense_factors(Path(trial["out_dir"]) / "user_factors", n_users, rank),
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
    card_settings = {name: getattr(config, name) for name in CARD_SETTINGS}
    if trial.get("max_iter"):  # an adaptive search's point carries its own iterations
        card_settings["max_iter"] = trial["max_iter"]
    inputs = digest(
        fingerprint["hash"], trial["trial_id"], card_settings, annoy, {n: array_digest(a) for n, a in arrays.items()}
    )
    card = model_card(
        version=version,
        plan=plan,
        trial=trial,
        settings=card_settings,
        evaluation=evaluation,
        fingerprint=fingerprint,
        n_users=n_users,
        n_items=n_items,
        inputs=inputs,
    )
    validation, test = result_row(evaluation, best, "validation"), result_row(evaluation, best, "test")
    pop_test = result_row(evaluation, C.POPULARITY_TRIAL_ID, "test")
    labels = {key: Path(path) for key, path in index["labels"].items()}
    path = write_bundle(models_dir(root) / version, arrays, labels, card, annoy, config.seed)
    candidate = {
        "model_version": version,
        "run_id": plan["run_id"],
        "trial_id": best,
        "path": registry.registry_path(path, root),
        "k": config.k,
        "validation_map": validation["map"],
        "test_map": test["map"] if test else None,
        "popularity_test_map": pop_test["map"] if pop_test else None,
        "logical_date": datetime.fromisoformat(plan["logical_date"]),
        "data_fingerprint": fingerprint["hash"],
        "data_verdict": (data_check or {}).get("verdict"),
        "data_summary": (data_check or {}).get("message"),
    }
    policy = registry.Policy(
        config.promote, config.min_lift_over_popularity, config.max_regression, config.require_approval
    )
    data = functools.cache(lambda: run_data(layout.index_dir))

    def compare(champion: dict[str, Any] | None) -> registry.Comparison:
        return compare_with(champion, data, config.k, config.exclude_seen, fingerprint["hash"])

    with open_store(url) as store:
        decision, champion_before, comparison = registry.publish_against(store, candidate, policy, compare)
    write_json(layout.stage_result("compare"), asdict(comparison))
    outcome = {
        "version": version,
        "path": str(path),
        "status": decision.status,
        "promoted": decision.promoted,
        "awaiting_approval": decision.status == registry.AWAITING,
        "reason": decision.reason,
        "champion_before": champion_before["model_version"] if champion_before else None,
        "k": config.k,
        "comparison": asdict(comparison),
        "serving": annoy,
    }
    log.info("model %s: %s (%s)", version, decision.status, decision.reason)
    write_json(layout.stage_result("publish"), outcome)
    return outcome
