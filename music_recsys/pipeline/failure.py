"""Why a run failed, said where a person looks first: ``failure.json`` in the run folder and the run's note.

Two callbacks, both wired in the DAG:

- ``record_task_failure`` (every task's ``on_failure_callback``) runs in the task's process once the task
  has failed for good and keeps its error under ``<run_dir>/failures/`` (Airflow keeps only the log);
- ``on_run_failure`` (the DAG's ``on_failure_callback``) runs when the run has failed. It reads the run's
  task states, takes as the cause the failed task that comes first in the DAG (later failures are its
  symptoms), and writes ``failure.json``: failing stage and task, message, retryable or not, and the
  tasks that did not run. When every grid point failed, the message lists each point's error.

The run's note (the text the UI shows on the run) gets the same one line where Airflow 3.3 lets a
callback write it: the execution API that task and dag-processor callbacks talk to has no call that
changes a run's note (notes are set only when a run is triggered), and their processes may not use the
metadata DB. So the note is written through the metadata DB when the callback runs in a process that
has it (``dag.test``, ``airflow dags test``), or through the public REST API (``PATCH
/api/v2/dags/{dag_id}/dagRuns/{run_id}``) when the Airflow connection ``RECSYS_AIRFLOW_API_CONN_ID``
(default ``recsys_airflow_api``: host = the api-server's base URL, login and password of a user allowed
to edit runs) is defined. Otherwise ``failure.json`` alone says it, and the callback logs why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from music_recsys import settings
from music_recsys.run_folders import write_json

log = logging.getLogger(__name__)

FAILURE_FILE = "failure.json"
TASK_FAILURES_DIR = "failures"


def api_conn_id() -> str:
    """The Airflow connection of the api-server that failure notes are written through."""
    return settings.text("RECSYS_AIRFLOW_API_CONN_ID")


NOTE_MAX_CHARS = 1000  # the dag_run_note column and the REST API's DAGRunPatchBody.note both stop here
# States of a task instance that never started its work in this run.
NOT_RUN_STATES = {"upstream_failed", "none", "scheduled", "queued", "removed", None}
FAILED = "failed"
# Mapped stages whose failed instances the DAG tolerates while one instance succeeds (issue #19).
TOLERATED_PARTIAL = {"fit"}


def _run_dir(run_id: str) -> Path:
    from music_recsys.run_folders import run_dir

    return run_dir(run_id)


def task_record_path(run_dir: Path, task_id: str, map_index: int = -1) -> Path:
    """Where ``record_task_failure`` keeps one task instance's error."""
    name = task_id if map_index is None or map_index < 0 else f"{task_id}.{map_index}"
    return run_dir / TASK_FAILURES_DIR / f"{name}.json"


def task_failure(task_id: str, map_index: int, exception: BaseException | str | None, **extra: Any) -> dict:
    """The record of one failed task instance. ``retryable`` is False for the failures the project marks
    as the input's (``AirflowFailException``: bad params, a bad file, drift, a grid point that cannot fit),
    which end in one attempt; anything else is transient and had the task's retries."""
    from airflow.sdk.exceptions import AirflowFailException

    if isinstance(exception, BaseException):
        message, error_type = str(exception) or type(exception).__name__, type(exception).__name__
        retryable = not isinstance(exception, AirflowFailException)
    else:
        message, error_type, retryable = exception or "no error recorded (see the task log)", None, True
    return {
        "task_id": task_id,
        "map_index": map_index,
        "error_type": error_type,
        "message": message,
        "retryable": retryable,
        "failed_at": datetime.now(UTC).isoformat(),
        **extra,
    }


def record_task_failure(context: Mapping[str, Any]) -> None:
    """Task ``on_failure_callback``: keep this task instance's final error for ``on_run_failure``."""
    try:
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        record = task_failure(
            ti.task_id,
            map_index,
            context.get("exception"),
            grid_point=getattr(ti, "rendered_map_index", None) if map_index >= 0 else None,
            try_number=getattr(ti, "try_number", None),
            max_tries=getattr(ti, "max_tries", None),
        )
        path = task_record_path(_run_dir(context["run_id"]), ti.task_id, map_index)
        write_json(path, record)
    except Exception:  # a callback that raises only adds noise to the log of the real failure
        log.exception("could not record the failure of %s", context.get("ti"))


def read_task_records(run_dir: Path) -> dict[tuple[str, int], dict]:
    """Every failure record of a run, by (task id, map index)."""
    out = {}
    for path in sorted((run_dir / TASK_FAILURES_DIR).glob("*.json")):
        record = json.loads(path.read_text())
        out[(record["task_id"], int(record.get("map_index", -1)))] = record
    return out


def topological_order(dag: Any) -> list[str]:
    """Task ids, every task after all of its upstreams (ties by id, so the order is stable)."""
    upstream = {task_id: set(dag.get_task(task_id).upstream_task_ids) for task_id in dag.task_ids}
    order: list[str] = []
    while upstream:
        ready = sorted(t for t, ups in upstream.items() if not ups - set(order))
        if not ready:
            raise ValueError(f"DAG {dag.dag_id}: tasks {sorted(upstream)} form a cycle")
        order.extend(ready)
        for task_id in ready:
            del upstream[task_id]
    return order


def split_state_key(key: str, task_ids: Iterable[str]) -> tuple[str, int]:
    """The execution API names a mapped instance ``<task_id>_<map_index>``; back to (task id, map index)."""
    if key in task_ids:
        return key, -1
    task_id, _, index = key.rpartition("_")
    if task_id in task_ids and index.isdigit():
        return task_id, int(index)
    raise ValueError(f"task state key {key!r} names no task of the DAG (tasks: {sorted(task_ids)})")


def summarize(
    dag: Any, run_id: str, states: Mapping[str, str | None], records: Mapping[tuple[str, int], dict]
) -> dict[str, Any] | None:
    """What ``failure.json`` says of a run with these task states (keys as ``RuntimeTaskInstance.
    get_task_states`` gives them) and failure records; None when no task failed."""
    order = topological_order(dag)
    by_task: dict[str, dict[int, str | None]] = {}
    for key, state in states.items():
        task_id, map_index = split_state_key(key, order)
        by_task.setdefault(task_id, {})[map_index] = None if state is None else str(state)
    failed = [t for t in order if FAILED in by_task.get(t, {}).values()]
    # A lost grid point is tolerated (the others are still scored): the cause is a later failure, if any.
    lost = [t for t in failed if t in TOLERATED_PARTIAL and "success" in by_task[t].values()]
    causes = [t for t in failed if t not in lost]
    if not causes:
        return None
    stage = causes[0]
    instances = by_task[stage]
    failed_indexes = sorted(i for i, s in instances.items() if s == FAILED)
    stage_records = [records.get((stage, i)) or task_failure(stage, i, None) for i in failed_indexes]
    if failed_indexes != [-1]:  # a mapped stage: name each failed instance (grid point)
        points = [r.get("grid_point") or f"map index {r['map_index']}" for r in stage_records]
        succeeded = sum(1 for s in instances.values() if s == "success")
        lines = [f"{p}: {_first_line(r['message'])}" for p, r in zip(points, stage_records, strict=True)]
        if succeeded == 0:
            head = f"every grid point failed ({len(failed_indexes)} of {len(instances)}), so nothing was scored"
        else:
            head = f"{len(failed_indexes)} of {len(instances)} {stage} instances failed"
        message = f"{head}: " + "; ".join(lines)
        task = stage if len(failed_indexes) > 1 else f"{stage}[{points[0]}]"
    else:
        message, task = stage_records[0]["message"], stage
    not_run = [t for t in order if by_task.get(t) and all(s in NOT_RUN_STATES for s in by_task[t].values())]
    return {
        "run_id": run_id,
        "dag_id": dag.dag_id,
        "stage": stage,
        "task": task,
        "message": message,
        "retryable": all(r["retryable"] for r in stage_records),
        "not_run": not_run,
        "failed_after": causes[1:],
        "lost_grid_points": [
            records.get(("fit", i), {}).get("grid_point") or f"map index {i}"
            for i, s in sorted(by_task.get("fit", {}).items())
            if s == FAILED and "fit" in lost
        ],
        "skipped": [t for t in order if by_task.get(t) and set(by_task[t].values()) == {"skipped"}],
        "states": {t: _collapse(by_task[t]) for t in order if t in by_task},
        "written_at": datetime.now(UTC).isoformat(),
    }


def note_line(failure: Mapping[str, Any]) -> str:
    """The run's note: one line, the cause first."""
    kind = "retried, still failing" if failure["retryable"] else "not retried: fix the input"
    line = f"Failed at {failure['task']} ({kind}): {' '.join(str(failure['message']).split())}"
    if failure["not_run"]:
        line += f" | did not run: {', '.join(failure['not_run'])}"
    return line if len(line) <= NOTE_MAX_CHARS else line[: NOTE_MAX_CHARS - 1] + "…"


def on_run_failure(context: Mapping[str, Any]) -> None:
    """DAG ``on_failure_callback``: ``failure.json`` under the run folder, and the run's note."""
    dag, run_id = context["dag"], context["run_id"]
    try:
        run_dir = _run_dir(run_id)
        failure = summarize(dag, run_id, task_states(dag.dag_id, run_id), read_task_records(run_dir))
        if failure is None:
            log.warning("run %s failed without a failed task (timed out or marked failed?)", run_id)
            failure = {"run_id": run_id, "dag_id": dag.dag_id, "stage": None, "task": None, "retryable": True,
                       "message": f"the run failed without a failed task (reason: {context.get('reason')})",
                       "not_run": [], "failed_after": [], "skipped": [], "states": {}}  # fmt: skip
        # Atomic (temp file + rename): the UI and a person may read it while the callback writes it.
        write_json(run_dir / FAILURE_FILE, failure)
        line = note_line(failure)
        log.error("run %s: %s", run_id, line)
        failure["note"] = set_note(dag.dag_id, run_id, line)
        write_json(run_dir / FAILURE_FILE, failure)
    except Exception:  # the callback must not hide the run's own failure behind its own
        log.exception("could not write %s for run %s", FAILURE_FILE, run_id)


def task_states(dag_id: str, run_id: str) -> dict[str, str | None]:
    """The run's task states: through the supervisor (task and dag-processor processes), else the
    metadata DB (``dag.test``, which runs callbacks in its own process after each task's supervisor is gone)."""
    from airflow.sdk.execution_time import task_runner

    if hasattr(task_runner, "SUPERVISOR_COMMS"):
        states = task_runner.RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=[run_id])
        return dict(states.get(run_id, {}))
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id).all()
        return {
            (ti.task_id if ti.map_index < 0 else f"{ti.task_id}_{ti.map_index}"): (
                None if ti.state is None else str(ti.state.value if hasattr(ti.state, "value") else ti.state)
            )
            for ti in rows
        }


def set_note(dag_id: str, run_id: str, line: str) -> str:
    """Write ``line`` as the run's note; says how (``metadata_db``, ``rest_api``) or why not."""
    from airflow.sdk.execution_time import task_runner

    if not hasattr(task_runner, "SUPERVISOR_COMMS"):
        try:
            return _note_through_db(dag_id, run_id, line)
        except Exception as exc:  # e.g. no metadata DB configured in this process
            log.info("run note not written through the metadata DB: %s", exc)
    try:
        return _note_through_api(dag_id, run_id, line)
    except Exception as exc:
        log.warning("run note not written for %s: %s; %s has the cause", run_id, exc, FAILURE_FILE)
        return f"not written: {exc}"


def _note_through_db(dag_id: str, run_id: str, line: str) -> str:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        dagrun = session.query(DagRun).filter_by(dag_id=dag_id, run_id=run_id).one()
        dagrun.note = line
    return "metadata_db"


def _note_through_api(dag_id: str, run_id: str, line: str) -> str:
    """``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}`` with a token from ``POST /auth/token``."""
    import httpx
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(api_conn_id())
    except AirflowNotFoundException as exc:
        raise RuntimeError(
            f"Airflow connection {api_conn_id()!r} is not defined (host: the api-server URL, login/password of a "
            "user allowed to edit runs); define it to have failures written as the run's note"
        ) from exc
    base = conn.host if "://" in (conn.host or "") else f"{conn.schema or 'http'}://{conn.host}"
    base = f"{base.rstrip('/')}{f':{conn.port}' if conn.port else ''}"
    with httpx.Client(base_url=base, timeout=10) as client:
        token = client.post("/auth/token", json={"username": conn.login, "password": conn.password})
        token.raise_for_status()
        response = client.patch(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}",
            params={"update_mask": "note"},
            json={"note": line},
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )
        response.raise_for_status()
    return "rest_api"


def _first_line(text: str) -> str:
    return str(text).strip().splitlines()[0] if str(text).strip() else str(text)


def _collapse(instances: Mapping[int, str | None]) -> str | dict[str, int]:
    """One state, or for a mapped task the count of each state."""
    if list(instances) == [-1]:
        return str(instances[-1])
    counts: dict[str, int] = {}
    for state in instances.values():
        counts[str(state)] = counts.get(str(state), 0) + 1
    return counts
