"""A person approves a promotion (param ``require_approval``, default false).

With the param on, the run's publish task registers a model that passes the gate with status
``awaiting_approval`` (``publish``), and ``ModelApprovalOperator`` (Airflow's human-in-the-loop
``ApprovalOperator``) asks for a decision with the candidate's figures beside the champion's re-scored on
the same data in its body: approve → champion, reject or no answer within ``approval_timeout_hours`` → it
stays a candidate and the registry's reason says why (``registry.resolve_approval``, under the registry
lock). A model promoted or rolled back by hand (``music-recsys models promote``, the UI) while it waits is
not an error: the answer then changes nothing and the task ends with that reason. With
the param off, ``publish`` is the pipeline's own and the approval task is skipped: scheduled runs keep
promoting without waiting.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator

from music_recsys.evaluation.catalogue import CARD_METRICS, METRIC_BY_NAME, format_value

log = logging.getLogger(__name__)


def approval_body(publication: dict[str, Any], champion: dict[str, Any] | None, data_check: dict | None) -> str:
    """Markdown for the approval form: the candidate's figures beside the champion's re-scored on the same
    data at the same k (what the gate compared), the lift over popularity, the parameters, the data check
    and the gate. Every metric names its k."""
    from music_recsys.store import registry
    from music_recsys.store.card import lift, read_card

    mine = read_card(publication["path"]) or {}
    theirs = (read_card(registry.bundle_path(champion)) or {}) if champion else {}
    comparison = publication.get("comparison") or {}
    rescored = comparison.get("how") == registry.RESCORED
    k = publication.get("k") or mine.get("k")
    if champion is None:
        other_head = "champion"
    elif rescored:
        other_head = f"champion `{champion['model_version']}` re-scored on this run's data (top {k})"
    else:
        other_head = f"champion `{champion['model_version']}` as recorded (top {champion.get('k') or '?'})"
    lines = [
        f"Model `{publication['version']}` passed the promotion gate. Approve to make it the champion the "
        "serving API loads; reject (or let the request time out) to keep it a candidate.",
        "",
        f"| | candidate `{publication['version']}` (top {k}) | {other_head} |",
        "|---|---|---|",
    ]

    def other(split: str, metric: str) -> Any:
        if champion is None:
            return None
        if rescored:
            return (comparison.get("metrics") or {}).get(split, {}).get(metric)
        return ((theirs.get("metrics") or {}).get(split) or {}).get(metric)

    def ours(group: str, split: str, metric: str) -> Any:
        return ((mine.get(group) or {}).get(split) or {}).get(metric)

    for split in ("validation", "test"):
        for metric in CARD_METRICS:
            value = other(split, metric)
            shown = (
                "—" if champion is None else ("not re-scored" if metric == "mpr" and rescored else format_value(value))
            )
            label = METRIC_BY_NAME[metric].label_at(k)
            lines.append(f"| {split} {label} | {format_value(ours('metrics', split, metric))} | {shown} |")
        lines.append(f"| {split} popularity MAP (top {k}) | {format_value(ours('popularity', split, 'map'))} | |")
    lift_ours = lift(ours("metrics", "test", "map"), ours("popularity", "test", "map"))
    lift_theirs = lift(other("test", "map"), ours("popularity", "test", "map")) if rescored else None

    def params(card: dict) -> str:
        return ", ".join(f"{key} {value}" for key, value in (card.get("params") or {}).items()) or "—"

    theirs_lift = f"{format_value(lift_theirs, 2)}x" if lift_theirs else "—"
    lines.append(f"| test lift over popularity | {format_value(lift_ours, 2)}x | {theirs_lift} |")
    lines.append(f"| params | {params(mine)} | {params(theirs) if champion else '—'} |")
    lines.append(
        f"| logical date | {mine.get('logical_date', '—')} | {theirs.get('logical_date', '—') if champion else '—'} |"
    )
    if champion is not None and not rescored:
        lines += ["", f"**Not re-scored:** {comparison.get('note') or 'the champion could not be re-scored'}"]
    serving = publication.get("serving") or {}
    if serving:
        trees = serving.get("n_trees")
        lines.append(
            f"| serving | Annoy {serving.get('metric')}, {trees} tree{'s' if trees != 1 else ''}, recall@"
            f"{serving.get('k')} {format_value(serving.get('recall'), 3)} at "
            f"{format_value(serving.get('qps'), 0)} q/s | |"
        )
    # The check's message names its verdict in words ("passed against run …"): the verdict is said once.
    message = ((data_check or {}).get("message") or "").split("\n")[0].removeprefix("data check: ")
    verdict = message or (data_check or {}).get("verdict", "not recorded")
    lines += ["", f"**Data check:** {verdict}", "", f"**Gate:** {publication['reason']}"]
    return "\n".join(lines)


def publish(
    plan: dict[str, Any], evaluation: dict[str, Any], search: dict[str, Any], data_check: dict[str, Any] | None
) -> dict[str, Any]:
    """The pipeline's publish task (``music_recsys.pipeline.publish``); with ``require_approval`` a model that
    passes the gate waits in status ``awaiting_approval`` and the outcome carries the approval form's body."""
    from music_recsys.pipeline import publish as publishing
    from music_recsys.pipeline.tasks import open_store
    from music_recsys.run_folders import RunLayout, write_json
    from music_recsys.store import registry

    outcome = publishing.publish(plan, evaluation, search, data_check)
    if outcome["status"] != registry.AWAITING:
        return outcome  # promoted, rejected, or held back by the gate for its own reasons: nothing to approve
    with open_store() as store:
        champion = registry.get(store, outcome["champion_before"]) if outcome["champion_before"] else None
    outcome = {**outcome, "approval_body": approval_body(outcome, champion, data_check)}
    write_json(RunLayout(plan["run_dir"]).stage_result("publish"), outcome)
    return outcome


def decide(publication: dict[str, Any], event: dict[str, Any], timeout_hours: float, store) -> dict[str, Any]:
    """Apply a person's answer (or the timeout's) to the registry; the publication as it now stands. A model
    promoted or rolled back by hand while it waited ends the task cleanly too (the reason says so)."""
    from music_recsys.store import registry

    chosen = (event.get("chosen_options") or [None])[0]
    who = (event.get("responded_by_user") or {}).get("name") or (event.get("responded_by_user") or {}).get("id")
    resolution = registry.resolve_approval(
        store,
        publication["version"],
        approved=chosen == ModelApprovalOperator.APPROVE,
        who=who,
        decided_against=publication["champion_before"],
        gate=publication["reason"].split("the gate passed it: ", 1)[-1],
        timeout_hours=timeout_hours,
    )
    return {
        **publication,
        "status": resolution.row["status"],
        "promoted": resolution.promoted,
        "reason": resolution.reason,
        "awaiting_approval": False,
        "decided_by": who,
    }


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
        from music_recsys.pipeline.tasks import open_store

        # HITLOperator's, not ApprovalOperator's: a rejection must not skip the tasks after this one.
        answer = HITLOperator.execute_complete(self, context, event)
        hours = float(context["params"]["approval_timeout_hours"])
        with open_store() as store:
            outcome = decide(self._publication(context), {**event, **answer}, hours, store)
        log.info("model %s: %s (%s)", outcome["version"], outcome["status"], outcome["reason"])
        return outcome
