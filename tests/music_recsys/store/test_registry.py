"""The model registry: the promotion gate rule by rule, one champion switched in one transaction, two
runs publishing at once (PostgreSQL), and rollback by hand."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from music_recsys.store import registry
from music_recsys.store.registry import CANDIDATE, CHAMPION, REJECTED, RETIRED, Policy, decide
from music_recsys.store.results import ResultsStore

POLICY = Policy(promote=True, min_lift_over_popularity=1.1, max_regression=0.05)


def _model(version: str, test_map: float, day: int = 12, fingerprint: str = "data-a", **over) -> dict:
    return {
        "model_version": version,
        "run_id": f"run-{version}",
        "trial_id": "r10_reg0.1_a1_log1p",
        "path": f"/models/{version}",
        "validation_map": test_map,
        "test_map": test_map,
        "popularity_test_map": 0.05,
        "logical_date": datetime(2026, 1, day, 3, tzinfo=UTC),
        "data_fingerprint": fingerprint,
        **over,
    }


@pytest.mark.parametrize(
    ("candidate", "champion", "policy", "status", "reason"),
    [
        # Lift over popularity: 1.1 x 0.05 = 0.055 is needed; exactly that passes (ties pass).
        (_model("a", 0.054), None, POLICY, REJECTED, "0.0540 is below min_lift_over_popularity 1.1 x popularity"),
        (_model("a", 0.055), None, POLICY, CHAMPION, "first champion"),
        # Regression on the same data: the floor is 0.95 x 0.10 = 0.095.
        (_model("b", 0.0949), _model("a", 0.10, day=5), POLICY, REJECTED, "regresses more than max_regression"),
        (_model("b", 0.095), _model("a", 0.10, day=5), POLICY, CHAMPION, "champion a had 0.1000"),
        # On other data the champion's MAP is not comparable: no regression rule.
        (_model("b", 0.06, fingerprint="data-b"), _model("a", 0.10, day=5), POLICY, CHAMPION, "= 1.20x popularity"),
        # An older logical date (a backfill) never replaces a newer champion, however good.
        (_model("b", 0.2, day=5), _model("a", 0.10, day=12), POLICY, CANDIDATE, "older than champion a's"),
        # The same date is not older: a re-run of the latest week may replace it.
        (_model("b", 0.10, day=12), _model("a", 0.10, day=12), POLICY, CHAMPION, "champion a had 0.1000"),
        (_model("b", 0.2), None, Policy(promote=False), CANDIDATE, "promote is false"),
        # A drop let through with on_data_drift: warn is never promoted, whatever its MAP.
        (_model("b", 0.2, data_verdict="drift", data_summary="train rows -60%"), None, POLICY, REJECTED, "drift"),
        (_model("b", None), None, POLICY, REJECTED, "no test MAP"),
    ],
)
def test_gate(candidate, champion, policy, status, reason):
    decision = decide(candidate, champion, policy)
    assert decision.status == status and reason in decision.reason, decision


def _rows(store: ResultsStore) -> dict[str, str]:
    return {r["model_version"]: r["status"] for r in registry.all_models(store)}


def _exercise(store: ResultsStore) -> None:
    decision, before = registry.publish(store, _model("w1", 0.10, day=5), POLICY)
    assert decision.promoted and before is None
    decision, before = registry.publish(store, _model("w2", 0.11, day=12), POLICY)
    assert decision.promoted and before["model_version"] == "w1"
    assert _rows(store) == {"w1": RETIRED, "w2": CHAMPION}
    champion = registry.champion(store)
    assert champion["model_version"] == "w2" and champion["promoted_at"] is not None
    decision, _ = registry.publish(store, _model("b1", 0.30, day=8), POLICY)  # a backfill
    assert decision.status == CANDIDATE and _rows(store)["b1"] == CANDIDATE
    decision, _ = registry.publish(store, _model("w3", 0.01, day=19), POLICY)
    assert decision.status == REJECTED and "min_lift" in registry.get(store, "w3")["reason"]
    # A retried publish of the champion keeps it champion.
    decision, _ = registry.publish(store, _model("w2", 0.11, day=12), POLICY)
    assert decision.promoted and _rows(store)["w2"] == CHAMPION
    # Rollback by hand: the retired w1 is champion again, w2 retired, in one switch.
    registry.promote_manually(store, "w1", "rollback after an incident")
    assert _rows(store) == {"w1": CHAMPION, "w2": RETIRED, "b1": CANDIDATE, "w3": REJECTED}
    with pytest.raises(LookupError, match="no model version 'nope'"):
        registry.promote_manually(store, "nope", "typo")


def test_sqlite_registry(tmp_path):
    store = ResultsStore(f"sqlite:///{tmp_path / 'results.sqlite'}")
    _exercise(store)
    store.close()


@pytest.mark.postgres
def test_postgres_registry(postgres_url):
    store = ResultsStore(postgres_url)
    _exercise(store)
    store.close()


@pytest.mark.postgres
def test_the_database_refuses_a_second_champion(postgres_url):
    """Whatever a writer does, the partial unique index keeps at most one champion."""
    store = ResultsStore(postgres_url)
    registry.publish(store, _model("w1", 0.10), POLICY)
    from music_recsys.store.results import models

    with pytest.raises(sa.exc.IntegrityError):
        store.transaction(lambda conn: conn.execute(sa.insert(models).values(**_model("x", 0.2), status=CHAMPION)))
    store.close()


@pytest.mark.postgres
def test_two_runs_publishing_at_once_cannot_both_become_champion(postgres_url):
    """Both beat the old champion; they are decided one after the other, so the second is compared with
    the first (and, being older, held back) instead of both demoting the old champion."""
    setup = ResultsStore(postgres_url)
    registry.publish(setup, _model("old", 0.10, day=1), POLICY)
    setup.close()
    start = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def publish(version: str, day: int) -> None:
        store = ResultsStore(postgres_url)
        start.wait()
        decision, _ = registry.publish(store, _model(version, 0.12, day=day), POLICY)
        outcomes[version] = decision.status
        store.close()

    for _ in range(5):  # repeat: the race must never let both win
        outcomes.clear()
        store = ResultsStore(postgres_url)
        store.transaction(lambda conn: conn.execute(sa.text("DELETE FROM models WHERE model_version <> 'old'")))
        store.transaction(lambda conn: conn.execute(sa.text("UPDATE models SET status = 'champion'")))
        threads = [threading.Thread(target=publish, args=args) for args in (("monday", 12), ("tuesday", 13))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = _rows(store)
        store.close()
        assert list(statuses.values()).count(CHAMPION) == 1, statuses
        assert statuses["tuesday"] == CHAMPION and statuses["old"] == RETIRED
        # Monday either won first and was then retired by Tuesday, or came second and was held back.
        assert (outcomes["monday"], statuses["monday"]) in {(CHAMPION, RETIRED), (CANDIDATE, CANDIDATE)}
