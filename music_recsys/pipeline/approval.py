"""A person approves a promotion (param ``require_approval``, default false).

With the param on, the run's publish task registers a model that passes the gate as a candidate awaiting
approval (``publish``), and ``ModelApprovalOperator`` (Airflow's human-in-the-loop ``ApprovalOperator``)
asks for a decision with the model card against the champion's in its body: approve → champion through
the registry's ``promote_manually`` (what ``music-recsys models promote`` and the UI use), reject or no
answer within ``approval_timeout_hours`` → it stays a candidate and the registry's reason says why. With
the param off, ``publish`` is the pipeline's own and the approval task is skipped: scheduled runs keep
promoting without waiting.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator

log = logging.getLogger(__name__)
CARD_METRICS = (("map", "MAP"), ("precision_at_k", "precision@k"), ("ndcg_at_k", "NDCG@k"), ("mpr", "MPR"))


def _num(value: Any, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def approval_body(publication: dict[str, Any], champion: dict[str, Any] | None, data_check: dict | None) -> str:
    """Markdown for the approval form: the candidate's card beside the champion's (metrics on validation
    and test against popularity, the lift, the parameters, the data), the data check and the gate."""
    from music_recsys.store.card import lift, read_card

    mine = read_card(publication["path"]) or {}
    theirs = (read_card(champion["path"]) or {}) if champion else {}
    head = f"| | candidate `{publication['version']}` |" + (
        f" champion `{champion['model_version']}` |" if champion else " champion |"
    )
    lines = [
        f"Model `{publication['version']}` passed the promotion gate. Approve to make it the champion the "
        "serving API loads; reject (or let the request time out) to keep it a candidate.",
        "",
        head,
        "|---|---|---|",
    ]

    def both(ours: str, other: str) -> str:
        return f"| {ours} | {other if champion else '—'} |"

    def card_value(card: dict, group: str, split: str, metric: str) -> Any:
        return ((card.get(group) or {}).get(split) or {}).get(metric)

    for split in ("validation", "test"):
        for metric, label in CARD_METRICS:
            ours, other = card_value(mine, "metrics", split, metric), card_value(theirs, "metrics", split, metric)
            lines.append(f"| {split} {label} " + both(_num(ours), _num(other)))
        pop_ours = card_value(mine, "popularity", split, "map")
        pop_theirs = card_value(theirs, "popularity", split, "map")
        lines.append(f"| {split} popularity MAP " + both(_num(pop_ours), _num(pop_theirs)))
    lift_ours = lift(card_value(mine, "metrics", "test", "map"), card_value(mine, "popularity", "test", "map"))
    lift_theirs = lift(card_value(theirs, "metrics", "test", "map"), card_value(theirs, "popularity", "test", "map"))

    def params(card: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in (card.get("params") or {}).items()) or "—"

    lines.append("| test lift over popularity " + both(f"{_num(lift_ours, 2)}x", f"{_num(lift_theirs, 2)}x"))
    lines.append("| params " + both(params(mine), params(theirs)))
    lines.append("| logical date " + both(str(mine.get("logical_date", "—")), str(theirs.get("logical_date", "—"))))
    same = champion is not None and (mine.get("data") or {}).get("hash") == (theirs.get("data") or {}).get("hash")
    lines.append(f"| data | {'same data as the champion' if same else 'new data'} | |")
    serving = publication.get("serving") or {}
    if serving:
        lines.append(
            f"| serving | Annoy {serving.get('metric')}, {serving.get('n_trees')} trees, recall "
            f"{_num(serving.get('recall'), 3)} at {_num(serving.get('qps'), 0)} q/s | |"
        )
    verdict = (data_check or {}).get("verdict", "not recorded")
    message = ((data_check or {}).get("message") or "").split("\n")[0]
    lines += ["", f"**Data check:** {verdict} — {message}", "", f"**Gate:** {publication['reason']}"]
    return "\n".join(lines)


def publish(
    plan: dict[str, Any], evaluation: dict[str, Any], search: dict[str, Any], data_check: dict[str, Any] | None
) -> dict[str, Any]:
    """The pipeline's publish task; with ``require_approval`` a passing model waits as a candidate and the
    outcome carries ``awaiting_approval`` and the approval form's body."""
    from music_recsys.pipeline import tasks
    from music_recsys.store import registry
    from music_recsys.store.layout import RunLayout, write_json
    from music_recsys.store.results import ResultsStore, results_url

    if not tasks.run_config(plan).require_approval:
        return tasks.publish(plan, evaluation, search, data_check)
    with registry.holding_for_approval():
        outcome = tasks.publish(plan, evaluation, search, data_check)
    if outcome["status"] != registry.CANDIDATE or not outcome["reason"].startswith(registry.AWAITING_APPROVAL):
        return outcome  # rejected, or held back by the gate for its own reasons: nothing to approve
    store = ResultsStore(results_url())
    try:
        champion = registry.get(store, outcome["champion_before"]) if outcome["champion_before"] else None
    finally:
        store.close()
    outcome = {**outcome, "awaiting_approval": True, "approval_body": approval_body(outcome, champion, data_check)}
    write_json(RunLayout(plan["run_dir"]).stage_result("publish"), outcome)
    return outcome


def decide(publication: dict[str, Any], event: dict[str, Any], timeout_hours: float, store) -> dict[str, Any]:
    """Apply a person's answer (or the timeout's) to the registry; the publication as it now stands."""
    from music_recsys.store import registry

    version = publication["version"]
    gate = publication["reason"].split("the gate passed it: ", 1)[-1]
    chosen = (event.get("chosen_options") or [None])[0]
    who = (event.get("responded_by_user") or {}).get("name") or (event.get("responded_by_user") or {}).get("id")
    current = registry.champion(store)
    current_version = current["model_version"] if current else None
    if chosen == ModelApprovalOperator.APPROVE and who and current_version != publication["champion_before"]:
        # The gate compared this model with a champion that is no longer the champion: an approval of
        # that comparison must not replace a newer one unseen (promote it by hand after a look).
        reason = (
            f"approved by {who}, but the champion changed from {publication['champion_before']} to "
            f"{current_version} while it waited: kept as a candidate (promote it from the registry if it "
            f"should replace {current_version}); gate: {gate}"
        )
        row = registry.set_candidate_reason(store, version, reason)
        return {**publication, "status": row["status"], "promoted": False, "reason": reason,
                "awaiting_approval": False, "decided_by": who}  # fmt: skip
    if chosen == ModelApprovalOperator.APPROVE and who:
        row = registry.promote_manually(store, version, f"approved by {who} (require_approval); gate: {gate}")
        return {**publication, "status": row["status"], "promoted": True, "reason": row["reason"],
                "awaiting_approval": False, "decided_by": who}  # fmt: skip
    if event.get("timedout") or not who:
        reason = f"no decision within approval_timeout_hours {timeout_hours:g}: kept as a candidate; gate: {gate}"
    else:
        reason = f"rejected by {who} (require_approval): kept as a candidate; gate: {gate}"
    row = registry.set_candidate_reason(store, version, reason)
    return {**publication, "status": row["status"], "promoted": False, "reason": reason,
            "awaiting_approval": False, "decided_by": who}  # fmt: skip


class ModelApprovalOperator(ApprovalOperator):
    """Asks a person to approve the model the publish task holds back; skipped when nothing waits.

    The subject, body and response timeout come from the run (the publication and the params), so they are
    set when the task runs, not when the DAG is parsed. No answer within the timeout chooses Reject."""

    def __init__(self, *, publish_task_id: str = "publish", **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Promote the run's model to champion?")
        super().__init__(defaults=self.REJECT, **kwargs)
        self.publish_task_id = publish_task_id

    def _publication(self, context) -> dict[str, Any] | None:
        return context["ti"].xcom_pull(task_ids=self.publish_task_id)

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowSkipException

        publication = self._publication(context)
        if not publication or not publication.get("awaiting_approval"):
            status = (publication or {}).get("status", "not published")
            raise AirflowSkipException(f"nothing awaits approval (require_approval off, or the model is {status})")
        hours = float(context["params"]["approval_timeout_hours"])
        self.subject = f"Promote model {publication['version']} to champion?"
        self.body = publication["approval_body"]
        self.response_timeout = timedelta(hours=hours)
        return super().execute(context)

    def execute_complete(self, context, event: dict[str, Any]) -> Any:
        from music_recsys.store.results import ResultsStore, results_url

        # HITLOperator's, not ApprovalOperator's: a rejection must not skip the tasks after this one.
        answer = HITLOperator.execute_complete(self, context, event)
        hours = float(context["params"]["approval_timeout_hours"])
        store = ResultsStore(results_url())
        try:
            outcome = decide(self._publication(context), {**event, **answer}, hours, store)
        finally:
            store.close()
        log.info("model %s: %s (%s)", outcome["version"], outcome["status"], outcome["reason"])
        return outcome
