"""Retention: old runs lose their bulky intermediates but keep reports and results; bundles beyond the
kept number go, never the champion's, the previous champion's or one awaiting approval (nor its run)."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from music_recsys.store import registry
from music_recsys.store.results import user_recommendations
from music_recsys.store.retention import PRUNED_MARKER, prune
from tests.stores import open_store, register, sqlite_url

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
    store = open_store(sqlite_url(tmp_path))
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
    store = open_store(sqlite_url(tmp_path))
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
        register(store, candidate)
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


def test_a_model_awaiting_approval_keeps_its_bundle_and_its_run(tmp_path):
    """A decision may take up to 30 days: neither the bundle a person is asked about nor its run's files go
    while it waits (approving it later must not fail with "bundle removed")."""
    store = open_store(sqlite_url(tmp_path))
    old = datetime.now(UTC) - timedelta(days=20)
    for day, version in enumerate(["a", "b", "c", "d"], start=1):
        _run(tmp_path, f"run-{version}", old + timedelta(days=day), finished=False)
        when = datetime(2026, 1, day, tzinfo=UTC)
        row = {"model_version": version, "run_id": f"run-{version}", "trial_id": "t",
               "path": _bundle(tmp_path, version), "test_map": 0.2, "popularity_test_map": 0.1,
               "logical_date": when, "created_at": when}  # fmt: skip
        register(store, row)
    store.transaction(lambda conn: conn.execute(
        sa.update(registry.models).where(registry.models.c.model_version == "a").values(status=registry.AWAITING)
    ))  # fmt: skip
    stale = time.time() - 2 * 24 * 3600
    for run in (tmp_path / "runs").iterdir():
        os.utime(run, (stale, stale))
    out = prune(tmp_path, store, keep=1)
    assert "a" not in out["bundles_removed"] and (tmp_path / "models" / "a" / "model.json").exists()
    assert "run-a" not in out["runs_pruned"] and all((tmp_path / "runs" / "run-a" / rel).exists() for rel in BULKY)
    assert {"run-b", "run-c"} <= set(out["runs_pruned"])  # their models were decided: slimmed as before
    registry.resolve_approval(store, "a", approved=True, who="ana", decided_against="d", gate="…", timeout_hours=24)
    assert registry.champion(store)["model_version"] == "a"
    store.close()
