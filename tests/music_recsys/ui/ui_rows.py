"""A hand-made results store for the UI tests: two runs, four registered models, a report folder.

Numbers are chosen to be recognisable on a page (0.1234, 0.0617, ...), so a test can look for exactly the
figure the store holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from music_recsys.run_folders import safe_run_id
from music_recsys.store.results import ResultsStore, models
from tests.stores import migrated

RUN_A = "manual__2026-01-12T03:00:00+00:00"  # the champion's run, with a report folder
RUN_B = "scheduled__2026-01-19T03:00:00+00:00"  # a later run whose model was rejected
BEST = "r10_reg0.1_a5_log1p"
BEST_MAP = 0.1234
BEST_TEST_MAP = 0.1188
POP_MAP = 0.0617


def _trial(run_id: str, trial_id: str, split: str, map_: float | None, **over) -> dict:
    map_ = map_ or 0.0  # a failed trial's metrics are set to None through ``over``
    model = "popularity" if trial_id == "popularity" else "als"
    return {
        "run_id": run_id,
        "trial_id": trial_id,
        "split": split,
        "model": model,
        "rank": None if model == "popularity" else int(trial_id.split("_")[0][1:]),
        "reg_param": None if model == "popularity" else 0.1,
        "alpha": None if model == "popularity" else float(trial_id.split("_")[2][1:]),
        "transform": None if model == "popularity" else trial_id.split("_")[3],
        "k": 20,
        "map": map_,
        "map_at_k": map_ * 0.9,
        "precision_at_k": map_ / 2,
        "ndcg_at_k": map_ * 2,
        "ndcg_graded_at_k": map_ * 2.1,
        "recall_at_k": map_ * 3,
        "mpr": 0.2 if model == "als" else 0.34,
        "coverage_at_k": 0.5,
        "mean_rec_popularity": 0.7,
        "selection_metric": "map",
        "n_users": 120,
        "fit_seconds": 3.5,
        "status": "success",
        "is_best": trial_id == BEST,
        **over,
    }


def _ann(run_id: str, metric: str, n_trees: int, search_k: int, recall: float, qps: float, **over) -> dict:
    return {
        "run_id": run_id, "metric": metric, "n_trees": n_trees, "search_k": search_k, "k": 20, "candidates": 20,
        "recall": recall, "qps": qps, "mean_ms": 1000 / qps, "p50_ms": 900 / qps, "p99_ms": 2000 / qps,
        "build_seconds": 0.1, "index_bytes": 1000, "n_items": 400, "n_queries": 100, "trial_id": BEST,
        "is_operating_point": False, **over,
    }  # fmt: skip


def _profile(run_id: str, split: str, day: int, verdict: str, baseline: str | None) -> dict:
    return {
        "run_id": run_id, "split": split, "logical_date": datetime(2026, 1, day, 3, tzinfo=UTC), "rows": 4321,
        "users": 800, "tracks": 400, "plays": 12000, "median_count": 1.0, "p99_count": 20.0, "share_count_1": 0.55,
        "baseline_run_id": baseline, "changes": {"rows": 0.012} if baseline else None,
        "new_user_share": 0.031 if baseline and split == "train" else None,
        "new_track_share": 0.0 if baseline and split == "train" else None, "verdict": verdict,
        "violations": [], "on_data_drift": "fail", "run_status": "success",
    }  # fmt: skip


def _model(version: str, run_id: str, status: str, test_map: float, day: int, path: Path, **over) -> dict:
    return {
        "model_version": version, "run_id": run_id, "trial_id": BEST, "status": status, "path": str(path),
        "created_at": datetime(2026, 1, day, 4, tzinfo=UTC), "reason": f"fixture {status}",
        "validation_map": test_map + 0.004, "test_map": test_map, "popularity_test_map": POP_MAP,
        "logical_date": datetime(2026, 1, day, 3, tzinfo=UTC), "data_fingerprint": "f" * 64, "promoted_at": None,
        "retired_at": None, "k": 20, **over,
    }  # fmt: skip


def write_card(folder: Path, version: str, run_id: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    card = {
        "version": version,
        "run_id": run_id,
        "trial_id": BEST,
        "k": 20,
        "params": {"rank": 10, "reg_param": 0.1, "alpha": 5.0, "transform": "log1p"},
        "metrics": {
            "validation": {"map": BEST_MAP, "precision_at_k": 0.0617, "ndcg_at_k": 0.2468, "mpr": 0.2},
            "test": {"map": BEST_TEST_MAP, "precision_at_k": 0.0594, "ndcg_at_k": 0.2376, "mpr": 0.21},
        },
        "popularity": {
            "validation": {"map": POP_MAP, "precision_at_k": 0.03, "ndcg_at_k": 0.12, "mpr": 0.34},
            "test": {"map": POP_MAP, "precision_at_k": 0.03, "ndcg_at_k": 0.12, "mpr": 0.35},
        },
        "serving": {
            "metric": "angular_ip",
            "n_trees": 4,
            "search_k": 400,
            "candidates": 20,
            "k": 20,
            "recall": 0.953,
            "qps": 8765.0,
            "exact_qps": 2345.0,
        },  # fmt: skip
        "data": {"splits": {"train": {"rows": 4321, "users": 800, "tracks": 400}}, "hash": "f" * 64},
        "files": {"user_factors.npy": 1_000_000, "item_factors.npy": 500_000},
    }
    (folder / "model.json").write_text(json.dumps(card))


def build_store(url: str, data_root: Path, n_extra_models: int = 0) -> ResultsStore:
    """The fixture rows in the store at ``url``; model bundles and run A's report folder under
    ``data_root``. ``n_extra_models`` adds that many older retired models (for load measurements)."""
    store = ResultsStore(migrated(url))
    trials = [
        _trial(RUN_A, BEST, "validation", BEST_MAP),
        _trial(RUN_A, "r4_reg0.1_a1_none", "validation", 0.0999),
        _trial(
            RUN_A,
            "r4_reg0.1_a5_none",
            "validation",
            None,
            status="failed",
            error="executor lost",
            is_best=False,
            map=None,
            map_at_k=None,
            precision_at_k=None,
            ndcg_at_k=None,
            ndcg_graded_at_k=None,
            recall_at_k=None,
            mpr=None,
            coverage_at_k=None,
            fit_seconds=None,
        ),  # fmt: skip
        _trial(RUN_A, "popularity", "validation", POP_MAP),
        _trial(RUN_A, BEST, "test", BEST_TEST_MAP),
        _trial(RUN_A, "popularity", "test", POP_MAP),
        _trial(RUN_B, BEST, "validation", 0.0555),
        _trial(RUN_B, BEST, "test", 0.0501),
        _trial(RUN_B, "popularity", "test", POP_MAP),
    ]
    store.upsert("als_trials", trials)
    store.upsert(
        "als_segments",
        [
            {"run_id": RUN_A, "trial_id": trial, "split": "test", "segment": seg, "name": name,
             "min_history": low, "max_history": high, "n_users": 40, "map": value, "ndcg_at_k": value * 2,
             "ndcg_graded_at_k": value * 2, "mpr": 0.2, "mean_rec_popularity": 0.6}
            for trial, base in ((BEST, 0.1111), ("popularity", 0.0444))
            for seg, (name, low, high, value) in enumerate(
                (("light", 1, 9, base), ("medium", 10, 29, base + 0.01), ("heavy", 30, None, base + 0.02))
            )
        ],
    )  # fmt: skip
    store.upsert(
        "ann_trials",
        [
            _ann(RUN_A, "exact", 0, 0, 1.0, 2345.0),
            _ann(RUN_A, "exact_batched", 0, 0, 1.0, 23456.0),
            _ann(RUN_A, "angular_ip", 4, 400, 0.953, 8765.0, is_operating_point=True),
            _ann(RUN_A, "angular_ip", 4, 100, 0.712, 15000.0),
            _ann(RUN_A, "dot", 4, 400, 0.612, 7000.0),  # dominated: slower and worse than angular_ip 4/400
        ],
    )
    store.upsert(
        "data_profiles",
        [_profile(RUN_A, s, 12, "first_run", None) for s in ("train", "validation", "test")]
        + [_profile(RUN_B, s, 19, "pass", RUN_A) for s in ("train", "validation", "test")],
    )
    bundles = data_root / "models"
    rows = [
        _model("20260105T030000-aaaaaa", "manual__2026-01-05T03:00:00+00:00", "retired", 0.1012, 5,
               bundles / "20260105T030000-aaaaaa", promoted_at=datetime(2026, 1, 5, 4, tzinfo=UTC),
               retired_at=datetime(2026, 1, 12, 4, tzinfo=UTC)),
        _model("20260112T030000-bbbbbb", RUN_A, "champion", BEST_TEST_MAP, 12, bundles / "20260112T030000-bbbbbb",
               promoted_at=datetime(2026, 1, 12, 4, tzinfo=UTC)),
        _model("20260108T030000-cccccc", "backfill__2026-01-08T03:00:00+00:00", "candidate", 0.1150, 8,
               bundles / "20260108T030000-cccccc"),
        _model("20260119T030000-dddddd", RUN_B, "rejected", 0.0501, 19, bundles / "20260119T030000-dddddd"),
    ]  # fmt: skip
    for i in range(n_extra_models):
        day = datetime(2025, 1, 6, 3, tzinfo=UTC).toordinal() + 7 * i
        when = datetime.fromordinal(day).replace(hour=3, tzinfo=UTC)
        version = f"{when:%Y%m%dT%H%M%S}-x{i:05d}"
        rows.append(_model(version, f"scheduled__{when.isoformat()}", "retired", 0.09 + 0.0001 * i, 1,
                           bundles / version, logical_date=when, created_at=when))  # fmt: skip
    store.transaction(lambda conn: conn.execute(sa.insert(models), rows))
    write_card(bundles / "20260112T030000-bbbbbb", "20260112T030000-bbbbbb", RUN_A)
    for row in rows:
        if row["status"] in ("retired", "candidate"):
            Path(row["path"]).mkdir(parents=True, exist_ok=True)
    report = data_root / "runs" / safe_run_id(RUN_A) / "report"
    report.mkdir(parents=True, exist_ok=True)
    (report / "report.md").write_text(
        f"# music-recsys run `{RUN_A}`\n\n## All trials (validation)\n\n| trial | MAP |\n|---|---|\n"
        f"| {BEST} | {BEST_MAP:.4f} |\n\n<script>alert('x')</script>\n\n## Figures\n\n![als_grid](als_grid.png)\n"
        "![elsewhere](../../../etc/passwd)\n"
    )
    (report / "als_grid.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"fixture-png")
    (report / "summary.json").write_text(json.dumps({"best_trial_id": BEST}))
    (data_root / "runs" / safe_run_id(RUN_A) / "config.json").write_text("{}")  # not under report/: never served
    return store
