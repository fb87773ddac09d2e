"""Retention: old runs lose their bulky intermediates but keep reports and results; bundles beyond the
kept number go, never the champion's or the previous champion's."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from music_recsys.store import registry
from music_recsys.store.registry import Policy
from music_recsys.store.results import ResultsStore, user_recommendations
from music_recsys.store.retention import PRUNED_MARKER, prune

KEPT = ["report/report.md", "results/evaluate.json", "plan.json", "search/ann_trials.json", "ingest/ids/train_users/p"]
BULKY = ["checkpoints/t/c", "ingest/train/p", "ingest/validation/p", "index/train/p", "index/indexer/m",
         "trials/other/item_factors.npy"]  # fmt: skip


def _run(root: Path, name: str, started: datetime, finished: bool = True) -> Path:
    run = root / "runs" / name
    for rel in KEPT + BULKY + ["trials/best/item_factors.npy"]:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(b"x" * 1000)
    (run / "plan.json").write_text(json.dumps({"created_at": started.isoformat()}))
    (run / "results" / "evaluate.json").write_text(json.dumps({"best_trial_id": "best"}))
    if finished:
        (run / "results" / "finish.json").write_text("{}")
    return run


def test_old_runs_are_slimmed_recent_and_unfinished_ones_left_alone(tmp_path):
    store = ResultsStore(f"sqlite:///{tmp_path / 'results.sqlite'}")
    now = datetime.now(UTC)
    runs = [_run(tmp_path, f"run{i}", now - timedelta(days=10 - i)) for i in range(4)]
    running = _run(tmp_path, "running_old", now - timedelta(days=20), finished=False)  # started early, still busy
    out = prune(tmp_path, store, keep=2)
    assert set(out["runs_pruned"]) == {"run0", "run1"}
    assert out["runs_pruned"]["run0"] == 1000 * len(BULKY)
    for run in runs[:2]:
        assert all((run / rel).exists() for rel in KEPT + ["trials/best/item_factors.npy"])
        assert not any((run / rel).exists() for rel in BULKY)
        assert json.loads((run / PRUNED_MARKER).read_text())["bytes_freed"] == 1000 * len(BULKY)
    for run in [*runs[2:], running]:
        assert all((run / rel).exists() for rel in BULKY)
    # A run nobody finished for more than a day (it failed) is slimmed too.
    old = time.time() - 2 * 24 * 3600
    os.utime(running, (old, old))
    assert set(prune(tmp_path, store, keep=2)["runs_pruned"]) == {"running_old"}
    assert prune(tmp_path, store, keep=2)["runs_pruned"] == {}  # idempotent
    store.close()


def _bundle(root: Path, version: str) -> str:
    path = root / "models" / version
    path.mkdir(parents=True)
    (path / "model.json").write_text("{}")
    return str(path)


def test_bundles_beyond_the_kept_number_go_but_never_the_champion_or_the_previous_one(tmp_path):
    store = ResultsStore(f"sqlite:///{tmp_path / 'results.sqlite'}")
    policy = Policy()
    for day, version in enumerate(["a", "b", "c", "d", "e"], start=1):
        candidate = {
            "model_version": version,
            "run_id": version,
            "trial_id": "t",
            "path": _bundle(tmp_path, version),
            "test_map": 0.2,
            "popularity_test_map": 0.1,
            "logical_date": datetime(2026, 1, day, tzinfo=UTC),
            "data_fingerprint": version,
            "created_at": datetime(2026, 1, day, tzinfo=UTC),
        }
        registry.publish(store, candidate, policy)
    rows = [{"model_version": v, "user_id": "u1", "rank": 1, "track_id": "t1", "score": 1.0} for v in "abcde"]
    store.transaction(lambda conn: conn.execute(sa.insert(user_recommendations), rows))
    registry.promote_manually(store, "a", "rollback")  # a champion again, e retired last: the previous one
    out = prune(tmp_path, store, keep=2)
    assert set(out["bundles_removed"]) == {"b", "c"}
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["a", "d", "e"]
    removed = {r["model_version"] for r in registry.all_models(store) if r["bundle_removed_at"] is not None}
    assert removed == {"b", "c"}
    # The removed bundles' precomputed lists go with them; the kept ones' stay.
    left = store.transaction(lambda conn: conn.execute(sa.select(user_recommendations.c.model_version)).scalars())
    assert sorted(left) == ["a", "d", "e"]
    store.close()
