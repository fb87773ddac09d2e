"""The model registry: the promotion gate rule by rule against the comparison it is given, one champion
switched under one lock, concurrent publishers on both stores, approval as a status, rollback by hand, and
bundle paths relative to the data root."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from music_recsys.store import registry
from music_recsys.store.registry import (
    AWAITING,
    CANDIDATE,
    CHAMPION,
    RECORDED,
    REJECTED,
    RESCORED,
    RETIRED,
    Comparison,
    Policy,
    decide,
)
from music_recsys.store.results import ResultsStore
from tests.stores import open_store, sqlite_url

POLICY = Policy(promote=True, min_lift_over_popularity=1.1, max_regression=0.05)
FIRST = Comparison(None)


def _model(version: str, test_map: float | None, day: int = 12, fingerprint: str = "data-a", **over) -> dict:
    return {
        "model_version": version,
        "run_id": f"run-{version}",
        "trial_id": "r10_reg0.1_a1_log1p",
        "path": f"models/{version}",
        "k": 500,
        "validation_map": test_map,
        "test_map": test_map,
        "popularity_test_map": 0.05,
        "logical_date": datetime(2026, 1, day, 3, tzinfo=UTC),
        "data_fingerprint": fingerprint,
        **over,
    }


def rescored(test_map: float, version: str = "a") -> Comparison:
    return Comparison(version, RESCORED, 500, test_map=test_map, validation_map=test_map)


@pytest.mark.parametrize(
    ("candidate", "comparison", "policy", "status", "reason"),
    [
        # Lift over popularity: 1.1 x 0.05 = 0.055 is needed; exactly that passes (ties pass).
        (_model("a", 0.054), FIRST, POLICY, REJECTED, "0.0540 at k=500 is below min_lift_over_popularity 1.1 x"),
        (_model("a", 0.055), FIRST, POLICY, CHAMPION, "first champion"),
        # The champion re-scored on the candidate's data: the floor is 0.95 x 0.10 = 0.095.
        (_model("b", 0.0949), rescored(0.10), POLICY, REJECTED, "regresses more than max_regression"),
        (_model("b", 0.095), rescored(0.10), POLICY, CHAMPION, "champion a re-scored on this run's data at k=500"),
        # Re-scored, so the rule holds whatever data the champion was trained on (a new drop included).
        (_model("b", 0.06, fingerprint="data-b"), rescored(0.10), POLICY, REJECTED, "re-scored on this run's data"),
        # Its bundle gone: its recorded figures, when they are comparable (same data and k).
        (
            _model("b", 0.09),
            Comparison("a", RECORDED, 500, 0.10, 0.10, "bundle removed"),
            POLICY,
            REJECTED,
            "champion a had 0.1000 on the same data at k=500",
        ),  # fmt: skip
        # Nothing comparable: no regression rule, and the reason says why.
        (
            _model("b", 0.06),
            Comparison("a", note="measured at k=100"),
            POLICY,
            CHAMPION,
            "not compared with champion a: measured at k=100",
        ),  # fmt: skip
        (_model("b", 0.2), FIRST, Policy(False, 1.1, 0.05), CANDIDATE, "promote is false"),
        (_model("b", 0.2), rescored(0.1), Policy(True, 1.1, 0.05, True), AWAITING, "the gate passed it: test MAP"),
        # A drop let through with on_data_drift: warn is never promoted, whatever its MAP.
        (_model("b", 0.2, data_verdict="drift", data_summary="train rows -60%"), FIRST, POLICY, REJECTED, "drift"),
        (_model("b", None), FIRST, POLICY, REJECTED, "no test MAP"),
    ],
)
def test_gate(candidate, comparison, policy, status, reason):
    decision = decide(candidate, comparison, policy)
    assert decision.status == status and reason in decision.reason, decision


def test_gate_never_lets_an_older_backfill_replace_a_newer_champion():
    older = {**_model("b", 0.2, day=5), "champion_logical_date": datetime(2026, 1, 12, 3, tzinfo=UTC)}
    assert decide(older, rescored(0.10), POLICY).status == CANDIDATE
    same_day = {**_model("b", 0.10, day=12), "champion_logical_date": datetime(2026, 1, 12, 3, tzinfo=UTC)}
    assert decide(same_day, rescored(0.10), POLICY).status == CHAMPION  # a re-run of the latest week may


def _rows(store: ResultsStore) -> dict[str, str]:
    return {r["model_version"]: r["status"] for r in registry.all_models(store)}


def _publish(store, model, policy=POLICY, test_map=None):
    """Publish against whatever is champion, re-scored at ``test_map`` (the champion's own MAP if None)."""

    def compare(champion):
        if champion is None:
            return FIRST
        return rescored(champion["test_map"] if test_map is None else test_map, champion["model_version"])

    decision, before, comparison = registry.publish_against(store, model, policy, compare)
    return decision, before


def _exercise(store: ResultsStore) -> None:
    decision, before = _publish(store, _model("w1", 0.10, day=5))
    assert decision.promoted and before is None
    decision, before = _publish(store, _model("w2", 0.11, day=12))
    assert decision.promoted and before["model_version"] == "w1"
    assert _rows(store) == {"w1": RETIRED, "w2": CHAMPION}
    champion = registry.champion(store)
    assert champion["model_version"] == "w2" and champion["promoted_at"] is not None
    w2 = registry.get(store, "w2")
    assert (w2["compared_with"], w2["compared_test_map"], w2["comparison"], w2["k"]) == ("w1", 0.10, RESCORED, 500)
    decision, _ = _publish(store, _model("b1", 0.30, day=8))  # a backfill
    assert decision.status == CANDIDATE and _rows(store)["b1"] == CANDIDATE
    decision, _ = _publish(store, _model("w3", 0.01, day=19))
    assert decision.status == REJECTED and "min_lift" in registry.get(store, "w3")["reason"]
    # A retried publish of the champion keeps it champion.
    decision, _ = _publish(store, _model("w2", 0.11, day=12))
    assert decision.promoted and _rows(store)["w2"] == CHAMPION
    # Rollback by hand: the retired w1 is champion again, w2 retired, in one switch.
    registry.promote_manually(store, "w1", "rollback after an incident")
    assert _rows(store) == {"w1": CHAMPION, "w2": RETIRED, "b1": CANDIDATE, "w3": REJECTED}
    assert registry.get(store, "w1")["retired_at"] is None  # a re-promoted champion is no longer retired
    with pytest.raises(LookupError, match="no model version 'nope'"):
        registry.promote_manually(store, "nope", "typo")


def test_sqlite_registry(tmp_path):
    with open_store(sqlite_url(tmp_path)) as store:
        _exercise(store)


@pytest.mark.postgres
def test_postgres_registry(postgres_url):
    with open_store(postgres_url) as store:
        _exercise(store)


APPROVING = Policy(True, 1.1, 0.05, require_approval=True)


def _approval(store, version, approved=True, who="ana", against="w1"):
    return registry.resolve_approval(
        store, version, approved=approved, who=who, decided_against=against, gate="test MAP …", timeout_hours=24
    )


def test_approval_is_a_status_and_every_answer_ends_cleanly(tmp_path):
    with open_store(sqlite_url(tmp_path)) as store:
        _publish(store, _model("w1", 0.10, day=5))
        for version in ("a1", "a2", "a3", "a4", "a5"):
            decision, _ = _publish(store, _model(version, 0.11, day=12), APPROVING)
            assert decision.status == AWAITING and _rows(store)[version] == AWAITING
            assert registry.champion(store)["model_version"] == "w1"
        assert [r["model_version"] for r in registry.awaiting(store)] == ["a5", "a4", "a3", "a2", "a1"]

        rejected = _approval(store, "a1", approved=False)
        assert not rejected.promoted and rejected.row["status"] == CANDIDATE and "rejected by ana" in rejected.reason
        timed_out = _approval(store, "a2", approved=False, who=None)
        assert (
            timed_out.row["status"] == CANDIDATE and "no decision within approval_timeout_hours 24" in timed_out.reason
        )
        # Promoted from the UI or the CLI while it waited: the answer that arrives later changes nothing.
        registry.promote_manually(store, "a3", "promoted by bob in the Airflow UI")
        by_hand = _approval(store, "a3")
        assert by_hand.promoted and by_hand.row["status"] == CHAMPION and "changes nothing" in by_hand.reason
        # The champion changed while a4 waited: an approval of the old comparison keeps it a candidate.
        stale = _approval(store, "a4", against="w1")
        assert not stale.promoted and "champion changed from w1 to a3" in stale.reason
        approved = _approval(store, "a5", against="a3")
        assert approved.promoted and _rows(store)["a5"] == CHAMPION and _rows(store)["a3"] == RETIRED
        again = _approval(store, "a1")  # decided long ago: still no error
        assert not again.promoted and "decided elsewhere" in again.reason


@pytest.mark.postgres
def test_the_database_refuses_a_second_champion(postgres_url):
    """Whatever a writer does, the partial unique index keeps at most one champion."""
    with open_store(postgres_url) as store:
        _publish(store, _model("w1", 0.10))
        from music_recsys.store.results import models

        row = {k: v for k, v in _model("x", 0.2).items()}
        with pytest.raises(sa.exc.IntegrityError):
            store.transaction(lambda conn: conn.execute(sa.insert(models).values(**row, status=CHAMPION)))


def _race(url: str) -> tuple[dict[str, list[str]], dict[str, dict]]:
    """Monday's and Tuesday's runs both compare with the champion "old" before either publishes."""
    with ResultsStore(url) as store:
        store.transaction(lambda conn: conn.execute(sa.text("DELETE FROM models WHERE model_version <> 'old'")))
        store.transaction(lambda conn: conn.execute(sa.text("UPDATE models SET status = 'champion'")))
    compared_at = threading.Barrier(2)
    compared: dict[str, list[str]] = {"monday": [], "tuesday": []}
    errors: list[BaseException] = []

    def publish(version: str, day: int) -> None:
        def compare(champion):
            compared[version].append(champion["model_version"])
            if len(compared[version]) == 1:
                compared_at.wait(timeout=20)  # both have compared with "old" before either publishes
                time.sleep(0.05)
            return rescored(0.10, champion["model_version"])

        try:
            with ResultsStore(url) as store:
                registry.publish_against(store, _model(version, 0.12, day=day), POLICY, compare)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=args) for args in (("monday", 12), ("tuesday", 13))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    with ResultsStore(url) as store:
        return compared, {r["model_version"]: r for r in registry.all_models(store)}


def _concurrent_publishers(url: str) -> None:
    """Two runs compare with the same champion at the same moment and publish: the registry serialises
    them, and the one that comes second is compared again with the first instead of replacing it unseen
    (Monday's backfill, older, must never replace Tuesday's model)."""
    with open_store(url) as setup:
        _publish(setup, _model("old", 0.10, day=1))
    for _ in range(4):  # repeat: the race must never let the last writer win unseen
        compared, rows = _race(url)
        statuses = {v: r["status"] for v, r in rows.items()}
        assert list(statuses.values()).count(CHAMPION) == 1, statuses
        assert statuses["tuesday"] == CHAMPION and statuses["old"] == RETIRED, statuses
        # The second to publish was compared again, with the first: its row says so.
        second = "monday" if len(compared["monday"]) == 2 else "tuesday"
        first = "tuesday" if second == "monday" else "monday"
        assert compared[second] == ["old", first] and compared[first] == ["old"], compared
        assert rows[second]["compared_with"] == first
        assert (statuses["monday"], rows["monday"]["compared_with"]) in {(RETIRED, "old"), (CANDIDATE, "tuesday")}


def test_concurrent_publishers_are_serialised_on_sqlite(tmp_path):
    _concurrent_publishers(sqlite_url(tmp_path))


@pytest.mark.postgres
def test_concurrent_publishers_are_serialised_on_postgres(postgres_url):
    _concurrent_publishers(postgres_url)


def test_the_registry_lock_excludes_a_second_writer_on_sqlite(tmp_path):
    """pysqlite starts no transaction on a SELECT: without BEGIN IMMEDIATE two writers could read the same
    champion. Under ``locked`` the second waits until the first commits and then sees its write."""
    url = sqlite_url(tmp_path)
    with open_store(url) as first, ResultsStore(url) as second:
        inside, seen = threading.Event(), []

        def hold(conn):
            inside.set()
            time.sleep(0.5)
            conn.execute(sa.text("UPDATE models SET reason = 'x'"))  # nothing to update: still a write lock
            conn.execute(sa.insert(registry.models).values(**_model("held", 0.1), status=CANDIDATE))

        thread = threading.Thread(target=first.locked, args=(hold,))
        thread.start()
        inside.wait(5)
        started = time.monotonic()
        second.locked(
            lambda conn: seen.append([r[0] for r in conn.execute(sa.text("SELECT model_version FROM models"))])
        )
        waited = time.monotonic() - started
        thread.join()
        assert seen == [["held"]] and waited > 0.3, (seen, waited)


def test_bundle_paths_are_relative_to_the_data_root(tmp_path, monkeypatch):
    """A moved data root keeps every registry row pointing at its bundle."""
    old, new = tmp_path / "old", tmp_path / "new"
    monkeypatch.setenv("RECSYS_DATA_ROOT", str(old))
    assert registry.registry_path(old / "models" / "v1") == "models/v1"
    assert registry.registry_path(tmp_path / "elsewhere" / "v1") == str(tmp_path / "elsewhere" / "v1")
    monkeypatch.setenv("RECSYS_DATA_ROOT", str(new))
    assert registry.bundle_path({"path": "models/v1"}) == new.resolve() / "models" / "v1"
    assert registry.bundle_path({"path": str(tmp_path / "x")}) == tmp_path / "x"
