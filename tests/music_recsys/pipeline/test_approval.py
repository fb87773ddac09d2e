"""Human approval of a promotion: the registry holds a passing model in status ``awaiting_approval``, the
approval form's body shows its figures beside the champion's re-scored on the same data at the same k,
and a person's answer (or the timeout, or a promotion by hand meanwhile) lands in the registry cleanly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from music_recsys.pipeline import approval
from music_recsys.store import registry
from tests.music_recsys.ui.ui_rows import BEST_TEST_MAP, POP_MAP, write_card

CHAMPION = "20260112T030000-bbbbbb"
CHAMPION_RUN = "manual__2026-01-12T03:00:00+00:00"
APPROVING = registry.Policy(True, 1.1, 0.05, require_approval=True)
RESCORED = {
    split: {"map": value, "precision_at_k": 0.0512, "ndcg_at_k": 0.2049, "k": 20}
    for split, value in (("validation", 0.1201), ("test", 0.1155))
}


def _held(store, tmp_path, version: str = "20260126T030000-eeeeee") -> dict:
    """Publish a better model with require_approval; the publication the task would return."""
    candidate = {
        "model_version": version, "run_id": "manual__2026-01-26", "trial_id": "r10_reg0.1_a5_log1p",
        "path": str(tmp_path / "models" / version), "validation_map": 0.2, "test_map": 0.1999, "k": 20,
        "popularity_test_map": POP_MAP, "logical_date": datetime(2026, 1, 26, 3, tzinfo=UTC),
        "data_fingerprint": "g" * 64, "data_verdict": "pass", "data_summary": "data check: passed",
    }  # fmt: skip
    write_card(tmp_path / "models" / version, version, candidate["run_id"])

    def compare(champion):
        return registry.Comparison(champion["model_version"], registry.RESCORED, 20, 0.1155, 0.1201, metrics=RESCORED)

    decision, before, comparison = registry.publish_against(store, candidate, APPROVING, compare)
    return {"version": version, "path": candidate["path"], "status": decision.status, "reason": decision.reason,
            "promoted": decision.promoted, "champion_before": before["model_version"], "serving": None, "k": 20,
            "awaiting_approval": decision.status == registry.AWAITING,
            "comparison": {"how": comparison.how, "metrics": comparison.metrics, "note": comparison.note}}  # fmt: skip


def test_a_held_model_waits_in_its_own_status(store, tmp_path):
    publication = _held(store, tmp_path)
    assert publication["status"] == registry.AWAITING and not publication["promoted"]
    assert publication["reason"].startswith(registry.AWAITING_APPROVAL)
    assert "the gate passed it: test MAP 0.1999 at k=20 = 3.24x popularity's 0.0617" in publication["reason"]
    assert f"champion {CHAMPION} re-scored on this run's data at k=20: 0.1155" in publication["reason"]
    assert registry.champion(store)["model_version"] == CHAMPION  # nothing changed for the serving API
    row = registry.get(store, publication["version"])
    assert (row["status"], row["compared_with"], row["compared_test_map"]) == (registry.AWAITING, CHAMPION, 0.1155)


def test_the_body_compares_like_with_like_and_names_k(store, tmp_path):
    publication = _held(store, tmp_path)
    champion = registry.get(store, CHAMPION)
    check = {"verdict": "pass", "message": f"data check: passed against run {CHAMPION_RUN}"}
    body = approval.approval_body(publication, champion, check)
    assert (
        f"| | candidate `{publication['version']}` (top 20) | champion `{CHAMPION}` re-scored on this run's data "
        "(top 20) |" in body
    )
    assert f"| test MAP (top 20) | {BEST_TEST_MAP:.4f} | 0.1155 |" in body  # the champion re-scored, not as recorded
    assert "| test precision@20 | 0.0594 | 0.0512 |" in body and "| validation NDCG@20 | 0.2468 | 0.2049 |" in body
    assert "| test popularity MAP (top 20) | 0.0617 | |" in body
    assert f"| test lift over popularity | {BEST_TEST_MAP / POP_MAP:.2f}x | {0.1155 / POP_MAP:.2f}x |" in body
    assert f"**Data check:** passed against run {CHAMPION_RUN}\n" in body  # said once (#30), not "pass — passed"
    assert "**Gate:** " + registry.AWAITING_APPROVAL in body
    first = approval.approval_body({**publication, "comparison": {"how": "none"}}, None, None)
    assert f"| test MAP (top 20) | {BEST_TEST_MAP:.4f} | — |" in first and "**Data check:** not recorded" in first
    gone = {**publication, "comparison": {"how": "none", "note": "its bundle was removed by retention, ..."}}
    body = approval.approval_body(gone, champion, None)
    assert f"champion `{CHAMPION}` as recorded (top 20)" in body
    assert "**Not re-scored:** its bundle was removed by retention" in body


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
    assert outcome["reason"].startswith(reason)
    assert registry.get(store, publication["version"])["reason"] == outcome["reason"]
    expected_champion = publication["version"] if status == "champion" else CHAMPION
    assert registry.champion(store)["model_version"] == expected_champion


def test_an_approval_after_the_champion_changed_keeps_the_model_a_candidate(store, tmp_path):
    publication = _held(store, tmp_path)
    registry.promote_manually(store, "20260105T030000-aaaaaa", "rolled back by hand meanwhile")
    event = {"chosen_options": ["Approve"], "responded_by_user": {"id": "ada", "name": "ada"}}
    outcome = approval.decide(publication, event, 24, store)
    assert outcome["status"] == "candidate" and not outcome["promoted"]
    assert f"the champion changed from {CHAMPION} to 20260105T030000-aaaaaa" in outcome["reason"]
    assert registry.champion(store)["model_version"] == "20260105T030000-aaaaaa"


def test_a_promotion_by_hand_while_it_waits_ends_the_task_cleanly(store, tmp_path):
    """Promoted from the UI or the CLI while its approval waited: the answer that comes later (or the
    timeout) neither fails the task nor changes the registry."""
    publication = _held(store, tmp_path)
    registry.promote_manually(store, publication["version"], "promoted by bob in the Airflow UI")
    timeout = {"chosen_options": ["Reject"], "responded_by_user": None, "timedout": True}
    outcome = approval.decide(publication, timeout, 24, store)
    assert outcome["promoted"] and outcome["status"] == "champion"
    assert outcome["reason"].startswith("promoted by bob in the Airflow UI (while it awaited approval)")
    assert registry.champion(store)["model_version"] == publication["version"]


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
    monkeypatch.setattr("music_recsys.store.results.results_url", lambda: store.url)
    event = {"chosen_options": ["Approve"], "params_input": {}, "responded_at": datetime.now(UTC),
             "responded_by_user": {"id": "ada", "name": "ada"}, "timedout": False}  # fmt: skip
    outcome = operator.execute_complete({"ti": _TI(publication), "params": {"approval_timeout_hours": 24}}, event)
    assert outcome["status"] == "champion" and registry.champion(store)["model_version"] == publication["version"]
