"""failure.json and the run's note: the cause is the failed task that comes first in the DAG, a lost
grid point is not a cause, every grid point's error is listed when all failed, the note fits Airflow's
column, and the REST API path sends what the api-server expects."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from music_recsys.pipeline import failure as F


class ToyDag:
    """The DAG's shape in miniature: what ``summarize`` reads (ids, upstreams)."""

    dag_id = "toy"

    def __init__(self, upstream: dict[str, set[str]]):
        self.upstream = upstream
        self.task_ids = list(upstream)

    def get_task(self, task_id: str) -> SimpleNamespace:
        return SimpleNamespace(upstream_task_ids=self.upstream[task_id])


DAG = ToyDag(
    {
        "prepare": set(),
        "ingest": {"prepare"},
        "index": {"ingest"},
        "fit": {"index"},
        "evaluate": {"fit"},
        "publish": {"evaluate"},
        "finish": {"publish"},
    }
)


def _record(task_id: str, map_index: int, message: str, retryable: bool, point: str | None = None) -> dict:
    return {"task_id": task_id, "map_index": map_index, "message": message, "retryable": retryable, "grid_point": point}


def test_the_cause_is_the_first_failed_task_in_the_dag_not_a_later_symptom():
    states = {"prepare": "success", "ingest": "failed", "index": "upstream_failed", "fit": "upstream_failed",
              "evaluate": "failed", "publish": "upstream_failed", "finish": None}  # fmt: skip
    records = {
        ("evaluate", -1): _record("evaluate", -1, "[PATH_NOT_FOUND] Path does not exist: index/train", True),
        ("ingest", -1): _record("ingest", -1, "ingest.py: InputError: train.txt: 4 of 5 rows rejected", False),
    }
    failure = F.summarize(DAG, "run1", states, records)
    assert (failure["stage"], failure["task"], failure["retryable"]) == ("ingest", "ingest", False)
    assert failure["message"] == "ingest.py: InputError: train.txt: 4 of 5 rows rejected"
    assert failure["failed_after"] == ["evaluate"]
    assert failure["not_run"] == ["index", "fit", "publish", "finish"]
    assert failure["states"]["ingest"] == "failed" and failure["lost_grid_points"] == []


def test_every_grid_point_failing_lists_each_points_error():
    states = {"prepare": "success", "ingest": "success", "index": "success", "fit_0": "failed", "fit_1": "failed",
              "evaluate": "upstream_failed", "publish": "upstream_failed", "finish": "upstream_failed"}  # fmt: skip
    records = {
        ("fit", 0): _record("fit", 0, "leaves no training rows\ntraceback…", False, "r8_a1_drop"),
        ("fit", 1): _record("fit", 1, "leaves no training rows", False, "r8_a10_drop"),
    }
    failure = F.summarize(DAG, "run2", states, records)
    assert (failure["stage"], failure["task"], failure["retryable"]) == ("fit", "fit", False)
    assert failure["message"] == (
        "every grid point failed (2 of 2), so nothing was scored: "
        "r8_a1_drop: leaves no training rows; r8_a10_drop: leaves no training rows"
    )
    assert failure["states"]["fit"] == {"failed": 2} and failure["not_run"] == ["evaluate", "publish", "finish"]


def test_a_lost_grid_point_is_not_the_cause_and_is_listed():
    states = {"prepare": "success", "ingest": "success", "index": "success", "fit_0": "success", "fit_1": "failed",
              "evaluate": "success", "publish": "failed", "finish": "upstream_failed"}  # fmt: skip
    records = {
        ("fit", 1): _record("fit", 1, "leaves no training rows", False, "r8_a10_drop"),
        ("publish", -1): _record("publish", -1, "OperationalError: could not connect to server", True),
    }
    failure = F.summarize(DAG, "run3", states, records)
    assert (failure["stage"], failure["task"], failure["retryable"]) == ("publish", "publish", True)
    assert failure["lost_grid_points"] == ["r8_a10_drop"] and failure["not_run"] == ["finish"]


def test_a_failure_without_a_record_says_where_to_look_and_a_run_without_failures_has_none():
    states = {"prepare": "success", "ingest": "failed"}
    failure = F.summarize(ToyDag({"prepare": set(), "ingest": {"prepare"}}), "run4", states, {})
    assert failure["message"] == "no error recorded (see the task log)" and failure["retryable"] is True
    assert F.summarize(DAG, "run5", {"prepare": "success", "fit_0": "success", "fit_1": "failed"}, {}) is None


def test_state_keys_and_order():
    assert F.split_state_key("fit_12", DAG.task_ids) == ("fit", 12)
    assert F.split_state_key("prepare", DAG.task_ids) == ("prepare", -1)
    with pytest.raises(ValueError, match="task state key 'nope_1' names no task of the DAG"):
        F.split_state_key("nope_1", DAG.task_ids)
    assert F.topological_order(DAG) == ["prepare", "ingest", "index", "fit", "evaluate", "publish", "finish"]
    with pytest.raises(ValueError, match=r"tasks \['a', 'b'\] form a cycle"):
        F.topological_order(ToyDag({"a": {"b"}, "b": {"a"}}))


@pytest.mark.parametrize(
    ("exception", "retryable"),
    [(AirflowFailException("ingest.py: bad file (not retried)"), False), (RuntimeError("executor lost"), True)],
)
def test_a_task_failure_is_kept_with_whether_it_was_retryable(tmp_path, monkeypatch, exception, retryable):
    monkeypatch.setattr(F, "_run_dir", lambda run_id: tmp_path / run_id)
    ti = SimpleNamespace(task_id="fit", map_index=3, rendered_map_index="r8_a1_none", try_number=2, max_tries=1)
    F.record_task_failure({"ti": ti, "run_id": "r1", "exception": exception})
    record = json.loads((tmp_path / "r1" / "failures" / "fit.3.json").read_text())
    assert record["message"] == str(exception) and record["retryable"] is retryable
    assert (record["grid_point"], record["try_number"], record["error_type"]) == (
        "r8_a1_none",
        2,
        type(exception).__name__,
    )
    assert F.read_task_records(tmp_path / "r1") == {("fit", 3): record}


def test_a_broken_callback_context_does_not_raise(caplog):
    F.record_task_failure({"run_id": "r1"})  # no ti: logged, not raised over the task's own error
    assert "could not record the failure" in caplog.text


def test_the_note_is_one_line_cause_first_and_fits_the_column():
    failure = {"task": "ingest", "retryable": False, "message": "bad\nfile", "not_run": ["index", "fit"]}
    assert F.note_line(failure) == "Failed at ingest (not retried: fix the input): bad file | did not run: index, fit"
    long = F.note_line({**failure, "message": "x" * 5000, "retryable": True})
    assert len(long) == F.NOTE_MAX_CHARS and long.endswith("…")
    assert long.startswith("Failed at ingest (retried, still failing): xxx")


def test_on_run_failure_writes_failure_json_and_the_note(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "_run_dir", lambda run_id: tmp_path / run_id)
    monkeypatch.setattr(F, "task_states", lambda dag_id, run_id: {"prepare": "failed", "ingest": "upstream_failed"})
    notes = []
    monkeypatch.setattr(F, "set_note", lambda dag_id, run_id, line: notes.append((dag_id, run_id, line)) or "rest_api")
    F.record_task_failure({"ti": SimpleNamespace(task_id="prepare", map_index=-1), "run_id": "r9",
                           "exception": AirflowFailException("k: 0 is below the minimum 1")})  # fmt: skip
    F.on_run_failure({"dag": ToyDag({"prepare": set(), "ingest": {"prepare"}}), "run_id": "r9"})
    failure = json.loads((tmp_path / "r9" / F.FAILURE_FILE).read_text())
    assert (failure["stage"], failure["message"], failure["note"]) == (
        "prepare",
        "k: 0 is below the minimum 1",
        "rest_api",
    )
    assert notes == [("toy", "r9", "Failed at prepare (not retried: fix the input): k: 0 is below the minimum 1 | "
                      "did not run: ingest")]  # fmt: skip


def test_failure_json_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """The UI and a person read failure.json while the callback may be writing it: a write that dies half
    way (a full disk, a killed process) leaves the previous file whole, never a truncated one."""
    monkeypatch.setattr(F, "_run_dir", lambda run_id: tmp_path / run_id)
    monkeypatch.setattr(F, "task_states", lambda dag_id, run_id: {"prepare": "failed", "ingest": "upstream_failed"})
    monkeypatch.setattr(F, "set_note", lambda dag_id, run_id, line: "metadata_db")
    dag = ToyDag({"prepare": set(), "ingest": {"prepare"}})
    F.record_task_failure({"ti": SimpleNamespace(task_id="prepare", map_index=-1), "run_id": "r9",
                           "exception": AirflowFailException("first cause")})  # fmt: skip
    F.on_run_failure({"dag": dag, "run_id": "r9"})
    before = (tmp_path / "r9" / F.FAILURE_FILE).read_bytes()
    F.record_task_failure({"ti": SimpleNamespace(task_id="prepare", map_index=-1), "run_id": "r9",
                           "exception": AirflowFailException("second cause " + "x" * 5000)})  # fmt: skip
    real_dump = json.dump

    def dies_half_way(payload, fh, **kwargs):
        fh.write(json.dumps(payload, **kwargs)[:100])
        raise OSError("No space left on device")

    monkeypatch.setattr(json, "dump", dies_half_way)
    F.on_run_failure({"dag": dag, "run_id": "r9"})  # the callback logs the error and does not raise
    monkeypatch.setattr(json, "dump", real_dump)
    assert (tmp_path / "r9" / F.FAILURE_FILE).read_bytes() == before
    assert json.loads(before)["message"] == "first cause"
    assert [p.name for p in (tmp_path / "r9").iterdir() if p.name.startswith(".")] == []  # no temporary file left


class _FakeApiServer(BaseHTTPRequestHandler):
    """The two api-server endpoints the note needs, recording what they were sent."""

    seen: list[tuple[str, str, dict, str | None]] = []

    def _reply(self, body: dict) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.command, self.path, payload, self.headers.get("Authorization")))
        data = json.dumps(body).encode()
        self.send_response(201 if self.path == "/auth/token" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self._reply({"access_token": "tok123"})

    def do_PATCH(self) -> None:
        self._reply({"note": "ok"})

    def log_message(self, *args) -> None:
        pass


def test_the_note_through_the_rest_api(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _FakeApiServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = {"conn_type": "http", "host": "127.0.0.1", "port": server.server_port, "login": "ops", "password": "pw"}
        monkeypatch.setenv(f"AIRFLOW_CONN_{F.api_conn_id().upper()}", json.dumps(conn))
        assert F._note_through_api("music_recsys", "manual__1", "Failed at ingest") == "rest_api"
    finally:
        server.shutdown()
    assert _FakeApiServer.seen == [
        ("POST", "/auth/token", {"username": "ops", "password": "pw"}, None),
        ("PATCH", "/api/v2/dags/music_recsys/dagRuns/manual__1?update_mask=note", {"note": "Failed at ingest"},
         "Bearer tok123"),
    ]  # fmt: skip


def test_without_the_api_connection_the_note_says_why_not(monkeypatch):
    monkeypatch.delenv(f"AIRFLOW_CONN_{F.api_conn_id().upper()}", raising=False)
    with pytest.raises(RuntimeError, match=f"Airflow connection '{F.api_conn_id()}' is not defined"):
        F._note_through_api("music_recsys", "manual__1", "x")
