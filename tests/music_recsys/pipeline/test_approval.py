"""Human approval of a promotion: the registry holds a passing model back, the approval form's body shows
its card against the champion's, and a person's answer (or the timeout) lands in the registry."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from music_recsys.pipeline import approval
from music_recsys.store import registry
from tests.music_recsys.ui.ui_rows import BEST_TEST_MAP, POP_MAP, write_card

CHAMPION = "20260112T030000-bbbbbb"


def _held(store, tmp_path, version: str = "20260126T030000-eeeeee") -> dict:
    """Publish a better model inside ``holding_for_approval``; the publication the task would return."""
    candidate = {
        "model_version": version, "run_id": "manual__2026-01-26", "trial_id": "r10_reg0.1_a5_log1p",
        "path": str(tmp_path / "models" / version), "validation_map": 0.2, "test_map": 0.1999,
        "popularity_test_map": POP_MAP, "logical_date": datetime(2026, 1, 26, 3, tzinfo=UTC),
        "data_fingerprint": "g" * 64, "data_verdict": "pass", "data_summary": "data check: passed",
    }  # fmt: skip
    write_card(tmp_path / "models" / version, version, candidate["run_id"])
    with registry.holding_for_approval():
        decision, before = registry.publish(store, candidate, registry.Policy())
    return {"version": version, "path": candidate["path"], "status": decision.status, "reason": decision.reason,
            "promoted": decision.promoted, "champion_before": before["model_version"], "serving": None}  # fmt: skip


def test_a_held_model_waits_as_a_candidate_and_outside_the_block_the_gate_promotes(store, tmp_path):
    publication = _held(store, tmp_path)
    assert publication["status"] == "candidate" and not publication["promoted"]
    assert publication["reason"].startswith(registry.AWAITING_APPROVAL)
    assert "the gate passed it: test MAP 0.1999 = 3.24x popularity" in publication["reason"]
    assert registry.champion(store)["model_version"] == CHAMPION  # nothing changed for the serving API
    decision, _ = registry.publish(
        store, {**registry.get(store, publication["version"]), "data_verdict": "pass"}, registry.Policy()
    )
    assert decision.promoted  # the hold lasts only as long as the block


def test_the_body_shows_the_card_against_the_champions(store, tmp_path):
    publication = _held(store, tmp_path)
    champion = registry.get(store, CHAMPION)
    body = approval.approval_body(publication, champion, {"verdict": "pass", "message": "data check: passed"})
    assert f"| candidate `{publication['version']}` | champion `{CHAMPION}` |" in body
    assert f"| test MAP | {BEST_TEST_MAP:.4f} | {BEST_TEST_MAP:.4f} |" in body  # both cards (the fixture's)
    assert f"| test lift over popularity | {BEST_TEST_MAP / POP_MAP:.2f}x |" in body
    assert (
        "| data | same data as the champion |" in body
    )  # both fixture cards: one hash and "**Data check:** pass — data check: passed" in body
    assert "**Gate:** " + registry.AWAITING_APPROVAL in body
    first = approval.approval_body(publication, None, None)  # the very first model: no champion column
    assert "| test MAP | 0.1188 | — |" in first and "**Data check:** not recorded" in first


@pytest.mark.parametrize(
    ("event", "status", "reason"),
    [
        ({"chosen_options": ["Approve"], "responded_by_user": {"id": "ada", "name": "ada"}}, "champion",
         "approved by ada (require_approval); gate: test MAP 0.1999"),
        ({"chosen_options": ["Reject"], "responded_by_user": {"id": "bob", "name": "bob"}}, "candidate",
         "rejected by bob (require_approval): kept as a candidate; gate: test MAP 0.1999"),
        ({"chosen_options": ["Reject"], "responded_by_user": None, "timedout": True}, "candidate",
         "no decision within approval_timeout_hours 24: kept as a candidate"),
    ],
)  # fmt: skip
def test_the_answer_lands_in_the_registry(store, tmp_path, event, status, reason):
    publication = _held(store, tmp_path)
    outcome = approval.decide(publication, event, 24, store)
    assert outcome["status"] == status and outcome["promoted"] == (status == "champion")
    assert (
        outcome["reason"].startswith(reason)
        and registry.get(store, publication["version"])["reason"] == outcome["reason"]
    )
    expected_champion = publication["version"] if status == "champion" else CHAMPION
    assert registry.champion(store)["model_version"] == expected_champion


def test_an_approval_after_the_champion_changed_keeps_the_model_a_candidate(store, tmp_path):
    publication = _held(store, tmp_path)
    newer = {**registry.get(store, CHAMPION), "model_version": "20260202T030000-ffffff", "run_id": "newer"}
    write_card(tmp_path / "models" / newer["model_version"], newer["model_version"], "newer")
    registry.publish(store, {**newer, "path": str(tmp_path / "models" / newer["model_version"])}, registry.Policy())
    registry.promote_manually(store, newer["model_version"], "promoted by hand meanwhile")
    event = {"chosen_options": ["Approve"], "responded_by_user": {"id": "ada", "name": "ada"}}
    outcome = approval.decide(publication, event, 24, store)
    assert outcome["status"] == "candidate" and not outcome["promoted"]
    assert f"the champion changed from {CHAMPION} to {newer['model_version']}" in outcome["reason"]
    assert registry.champion(store)["model_version"] == newer["model_version"]


class _TI:
    def __init__(self, publication):
        self.publication = publication

    def xcom_pull(self, task_ids):
        assert task_ids == "publish"
        return self.publication


def test_the_operator_is_skipped_when_nothing_waits_and_applies_the_answer(store, tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException

    operator = approval.ModelApprovalOperator(task_id="approve_model")
    assert operator.options == ["Approve", "Reject"] and operator.defaults == ["Reject"]  # timeout = Reject
    promoted = {"version": "v", "status": "champion", "promoted": True}
    with pytest.raises(AirflowSkipException, match="the model is champion"):
        operator.execute({"ti": _TI(promoted), "params": {"approval_timeout_hours": 24}})
    publication = _held(store, tmp_path)
    monkeypatch.setattr("music_recsys.store.results.results_url", lambda: str(store.engine.url))
    event = {"chosen_options": ["Approve"], "params_input": {}, "responded_at": datetime.now(UTC),
             "responded_by_user": {"id": "ada", "name": "ada"}, "timedout": False}  # fmt: skip
    outcome = operator.execute_complete({"ti": _TI(publication), "params": {"approval_timeout_hours": 24}}, event)
    assert outcome["status"] == "champion" and registry.champion(store)["model_version"] == publication["version"]


def test_only_a_candidates_reason_is_rewritten(store):
    with pytest.raises(LookupError, match=f"model {CHAMPION} is champion, not a candidate"):
        registry.set_candidate_reason(store, CHAMPION, "rejected by mallory")
    with pytest.raises(LookupError, match="no model version 'nope'"):
        registry.set_candidate_reason(store, "nope", "typo")
    assert registry.get(store, CHAMPION)["reason"] == "fixture champion"
