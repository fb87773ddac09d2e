"""The fault matrix (issue #19), without Spark: the real DAG run by ``dag.test`` — Airflow's own scheduling
loop, trigger rules, mapped-task expansion and retry handling — with each task's work replaced by the
outcome a scenario injects (success, a deterministic failure, a transient one). For every stage it checks
what ran after the fault, what did not, how many attempts the failing task had, the run's state, and
what ``failure.json`` and the run's note say; and that docs/failures.md's table is the matrix's.

What a fake runner cannot show — the real tasks raising the right kind of error, the first error in the
log, the registry and the result rows — is drilled end to end in test_dag_fault_drills.py.
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.airflow import quick_polls, remembered_param_checks
from music_recsys.pipeline import failure as F

# The whole fault matrix is about 20 `dag.test` runs of the real DAG: tens of seconds.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
POINTS = ["r8_reg0.1_a1_none", "r8_reg0.1_a10_none", "r8_reg0.1_a1_drop"]  # three grid points
DETERMINISTIC, TRANSIENT = "deterministic", "transient"
# Tasks that skip themselves in a plain run (no require_approval: nothing waits for a person).
# Grid mode: the adaptive search's round 1 skips itself, and the rest of its chain is skipped behind it.
SKIPS_ITSELF = {"approve_model", "propose_round_1"}
NEVER_IN_GRID_MODE = {"screen_round_1", "propose_round_2", "screen_round_2"}


@dataclass
class Scenario:
    """Which task instances fail and how; ``fit`` faults by map index. Everything else succeeds."""

    faults: dict[str, str] = field(default_factory=dict)
    fit_faults: dict[int, str] = field(default_factory=dict)
    promoted: bool = True  # announce_champion skips when the model was not promoted
    ran: list[str] = field(default_factory=list)  # task ids the runner was called for, in order


def message(task_id: str, kind: str, map_index: int = -1) -> str:
    where = task_id if map_index < 0 else f"{task_id}[{POINTS[map_index]}]"
    return f"injected {kind} failure in {where}"


@pytest.fixture(scope="module")
def dag(airflow_db):
    """The DAG parsed with no retry delay, so the transient faults' retries do not wait."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_RETRIES", "1")
        mp.setenv("RECSYS_RETRY_DELAY_SECONDS", "0")
        bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags["music_recsys"]


def run(dag, scenario: Scenario):
    """One ``dag.test`` run of the real DAG whose task instances end as ``scenario`` says."""
    import airflow.sdk.definitions.dag as sdk_dag
    from airflow.models.taskmap import TaskMap
    from airflow.sdk.exceptions import AirflowFailException
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy.orm import object_session

    def fake_run_task(*, ti, task, run_triggerer=True):
        try:
            outcome_of(ti, task)
        except Exception as exc:  # dag.test would log it and wait for the instance forever
            errors.append(f"{ti.task_id}[{ti.map_index}]: {exc!r}")
            ti.state = TaskInstanceState.FAILED
            object_session(ti).commit()

    def outcome_of(ti, task) -> None:
        session = object_session(ti)
        scenario.ran.append(ti.task_id)
        kind = scenario.fit_faults.get(ti.map_index) if ti.task_id == "fit" else scenario.faults.get(ti.task_id)
        if ti.task_id == "fit" and ti.map_index >= 0:
            ti._rendered_map_index = POINTS[ti.map_index]  # what map_index_template renders at run time
        if kind is None:
            if ti.task_id == "grid_points":  # what the execution API records when a mappable XCom is pushed
                session.merge(TaskMap(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, len(POINTS), None))
            done = TaskInstanceState.SUCCESS
            if ti.task_id in SKIPS_ITSELF or (ti.task_id == "announce_champion" and not scenario.promoted):
                done = TaskInstanceState.SKIPPED
            ti.state = done
            session.commit()
            return
        error = message(ti.task_id, kind, ti.map_index)
        exception = AirflowFailException(error) if kind == DETERMINISTIC else RuntimeError(error)
        ti.state = TaskInstanceState.RUNNING
        session.flush()
        if kind == DETERMINISTIC:
            ti.state = TaskInstanceState.FAILED  # what the task runner does on AirflowFailException
        else:
            ti.handle_failure(str(exception), session=session)  # Airflow decides: up_for_retry or failed
        session.commit()
        if ti.state == TaskInstanceState.FAILED:  # the task runner calls on_failure_callback on a final failure
            callbacks = task.on_failure_callback or []
            for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
                callback({"ti": ti, "run_id": ti.run_id, "exception": exception})

    scenario.ran.clear()
    errors: list[str] = []
    # dag.test's idle waits (near a second a run) and its repeated param checks: docs/development.md
    with pytest.MonkeyPatch.context() as mp, quick_polls(0.05), remembered_param_checks():
        mp.setattr(sdk_dag, "_run_task", fake_run_task)
        dagrun = dag.test()
    assert not errors, f"the fake task runner failed: {errors}"
    return dagrun


def outcome(dagrun, scenario: Scenario) -> dict:
    """Per task: its states (one per map index) and attempts; the tasks that ran; the run's failure.json
    (None when there is none) and note."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from music_recsys.run_folders import run_dir

    tis: dict[str, list] = {}
    for ti in sorted(dagrun.get_task_instances(), key=lambda t: (t.task_id, t.map_index)):
        tis.setdefault(ti.task_id, []).append((_name(ti.state), ti.try_number))
    path = run_dir(dagrun.run_id) / F.FAILURE_FILE
    with create_session() as session:
        return {
            "state": _name(dagrun.state),
            "tis": tis,
            "failure": json.loads(path.read_text()) if path.exists() else None,
            "note": session.query(DagRun).filter_by(run_id=dagrun.run_id).one().note,
            "ran": set(scenario.ran),
        }


def _name(state) -> str:
    """A state enum or string as its plain name (``None`` for no state)."""
    return str(getattr(state, "value", state))


def downstream_of(dag, task_id: str) -> set[str]:
    """What a failure of ``task_id`` reaches in grid mode: its downstream tasks. A stage before the search
    chain fails the chain too; from a stage beside it (the index) the failure does not pass through the chain,
    which grid mode skips at once (grid_points then still runs; the fits wait for the index)."""
    before_chain = task_id in upstream_of(dag, "propose_round_1")
    blocked = set() if before_chain else NEVER_IN_GRID_MODE
    reached, todo = set(), [task_id]
    while todo:
        for t in dag.get_task(todo.pop()).downstream_task_ids - reached - blocked:
            reached.add(t)
            todo.append(t)
    return reached


def upstream_of(dag, task_id: str) -> set[str]:
    return {t.task_id for t in dag.get_task(task_id).get_flat_relatives(upstream=True)}


@dataclass
class Row:
    """One line of the matrix: the fault, and how many attempts the failing task (each failing fit) has."""

    stage: str
    scenario: Scenario
    attempts: int


MATRIX = {
    "prepare: bad params": Row("prepare", Scenario({"prepare": DETERMINISTIC}), 1),
    "ingest: bad file": Row("ingest", Scenario({"ingest": DETERMINISTIC}), 1),
    "check_data: drift, fail": Row("check_data", Scenario({"check_data": DETERMINISTIC}), 1),
    "index: Spark lost": Row("index", Scenario({"index": TRANSIENT}), 2),
    "every fit fails": Row("fit", Scenario(fit_faults=dict.fromkeys(range(len(POINTS)), DETERMINISTIC)), 1),
    "evaluate: Spark lost": Row("evaluate", Scenario({"evaluate": TRANSIENT}), 2),
    "fast_search: crash": Row("fast_search", Scenario({"fast_search": TRANSIENT}), 2),
    "record: store away": Row("record", Scenario({"record": TRANSIENT}), 4),
    "publish: store away": Row("publish", Scenario({"publish": TRANSIENT}), 4),
    "approve_model: crash": Row("approve_model", Scenario({"approve_model": DETERMINISTIC}), 1),
    "settle: crash": Row("settle", Scenario({"settle": TRANSIENT}), 2),
    "report: crash": Row("report", Scenario({"report": TRANSIENT}), 2),
    "announce_champion: crash": Row("announce_champion", Scenario({"announce_champion": TRANSIENT}), 2),
    "plan_batch_recommendations: crash": Row(
        "plan_batch_recommendations", Scenario({"plan_batch_recommendations": TRANSIENT}), 2
    ),
    "batch_recommendations: Spark lost": Row(
        "batch_recommendations", Scenario({"batch_recommendations": TRANSIENT}), 2
    ),
    "store_recommendations: store away": Row(
        "store_recommendations", Scenario({"store_recommendations": TRANSIENT}), 4
    ),
    "finish: crash": Row("finish", Scenario({"finish": TRANSIENT}), 2),
}


@pytest.fixture(scope="module")
def results(dag) -> dict[str, dict]:
    """Every matrix row run once (about a second each)."""
    return {name: outcome(run(dag, row.scenario), row.scenario) for name, row in MATRIX.items()}


@pytest.mark.parametrize("name", list(MATRIX))
def test_a_failed_stage_ends_the_run_and_nothing_downstream_starts(dag, results, name):
    row, result = MATRIX[name], results[name]
    assert result["state"] == "failed"
    # Every task that does not depend on the failed stage still runs; none that does.
    assert result["ran"] == set(dag.task_ids) - downstream_of(dag, row.stage) - NEVER_IN_GRID_MODE
    never = {t for t, states in result["tis"].items() if {s for s, _ in states} == {"upstream_failed"}}
    assert never == downstream_of(dag, row.stage)
    attempts = {try_number for state, try_number in result["tis"][row.stage] if state == "failed"}
    assert attempts == {row.attempts}  # deterministic: one attempt; transient: every retry used
    # No model reaches the registry unless the run got as far as publish (publish's own drill is e2e).
    assert ("publish" in result["ran"]) is (row.stage in {"publish"} | downstream_of(dag, "publish"))

    failure = result["failure"]
    order = F.topological_order(dag)
    assert failure["stage"] == row.stage and failure["not_run"] == [t for t in order if t in never]
    assert failure["retryable"] is (row.attempts > 1) and failure["failed_after"] == []
    if row.stage == "fit":
        assert failure["task"] == "fit"
        assert failure["message"].startswith(f"every grid point failed (3 of 3), so nothing was scored: {POINTS[0]}: ")
        for i, point in enumerate(POINTS):  # each grid point's own error
            assert f"{point}: {message('fit', DETERMINISTIC, i)}" in failure["message"]
    else:
        kind = TRANSIENT if row.attempts > 1 else DETERMINISTIC
        assert (failure["task"], failure["message"]) == (row.stage, message(row.stage, kind))
    # The note is the same line, cause first, within Airflow's 1000-character note column.
    assert result["note"] == F.note_line(failure) and len(result["note"]) <= F.NOTE_MAX_CHARS
    assert result["note"].startswith(f"Failed at {failure['task']} (")


def test_one_lost_grid_point_is_tolerated(dag):
    scenario = Scenario(fit_faults={1: DETERMINISTIC})
    result = outcome(run(dag, scenario), scenario)
    assert result["state"] == "success" and result["failure"] is None and result["note"] is None
    assert [s for s, _ in result["tis"]["fit"]] == ["success", "failed", "success"]
    # evaluate scores the two points that fit; the run publishes
    assert result["ran"] == set(dag.task_ids) - NEVER_IN_GRID_MODE


def test_a_transient_fit_failure_is_retried_and_the_run_goes_on(dag):
    scenario = Scenario(fit_faults={0: TRANSIENT, 2: DETERMINISTIC})
    result = outcome(run(dag, scenario), scenario)
    assert result["tis"]["fit"] == [("failed", 2), ("success", 1), ("failed", 1)]
    assert result["state"] == "success" and result["ran"] == set(dag.task_ids) - NEVER_IN_GRID_MODE


def test_a_lost_grid_point_is_not_named_as_the_cause_of_a_later_failure(dag):
    scenario = Scenario({"publish": TRANSIENT}, fit_faults={2: DETERMINISTIC})
    failure = outcome(run(dag, scenario), scenario)["failure"]
    assert (failure["stage"], failure["task"], failure["retryable"]) == ("publish", "publish", True)
    assert failure["lost_grid_points"] == [POINTS[2]]
    assert failure["message"] == message("publish", TRANSIENT)


def test_an_unpromoted_model_skips_the_announcement_and_the_run_succeeds(dag):
    scenario = Scenario(promoted=False)
    result = outcome(run(dag, scenario), scenario)
    assert result["state"] == "success" and result["tis"]["announce_champion"] == [("skipped", 1)]
    assert result["tis"]["finish"] == [("success", 1)]


# ---- docs/failures.md: its table is this matrix's --------------------------------------------------------


def stage_table(dag, results: dict[str, dict]) -> list[tuple[str, str, str]]:
    """(stage, what still runs after it fails, retried or not), from the DAG and the matrix runs."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    order = F.topological_order(dag)
    rows = []
    for name, row in MATRIX.items():
        task = dag.get_task(row.stage)
        after = sorted(results[name]["ran"] - upstream_of(dag, row.stage) - {row.stage}, key=order.index)
        runs_after = ", ".join(f"`{t}`" for t in after) or "nothing"
        times = f"{task.retries} retr{'y' if task.retries == 1 else 'ies'}"
        # Spark jobs say when their input made them fail; Python tasks that run their work under
        # fail_fast() end in one attempt on an InputError.
        callable_ = getattr(task, "python_callable", None)
        checks_input = issubclass(getattr(task, "operator_class", type(task)), SparkSubmitOperator) or (
            callable_ is not None and "with fail_fast():" in inspect.getsource(callable_)
        )
        if not task.retries:
            retried = "no (a person's answer is not retried)" if row.stage == "approve_model" else "no"
        else:
            retried = f"input error: no; any other: {times}" if checks_input else f"yes, {times}"
        stage = "`fit` (every grid point)" if row.stage == "fit" else f"`{row.stage}`"
        rows.append((stage, runs_after, retried))
    return rows


def test_the_docs_table_is_the_fault_matrix(dag, results):
    page = "docs/failures.md"  # the README links it
    text = (REPO / page).read_text()
    documented = [
        tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
        for line in text.splitlines()
        if re.match(r"^\| `\w+`", line)
    ]
    expected = stage_table(dag, results)
    table = "\n".join(f"| {' | '.join(r)} |" for r in expected)
    assert documented == expected, f"{page}'s stage table should read:\n{table}"
