"""What the DAG tests share: the grid of the embedded runs, drills that kill processes at the right
moment, a client that queries the served API without pause, and task-instance lookups."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import psutil
import pytest

from harness.airflow import run_dag
from harness.services import airflow_uri
from music_recsys.pipeline.config import TrialSpec

# The grid of the embedded runs: two working points and two that cannot fit (the drop transform with a
# threshold above every count), so one run shows success, a deterministic failure and, with the kill
# drill, a transient one.
GRID = {
    "ranks": [8],
    "reg_params": [0.1],
    "alphas": [1.0, 10.0],
    "transforms": ["none", "drop"],
    "drop_threshold": 100000,
    "k": 50,
    "max_iter": 5,
    "annoy_trees": [1, 4],
    "annoy_search_k": [50, 500, 100000],
}
VICTIM = TrialSpec(8, 0.1, 10.0, "none")  # the fit the kill drills interrupt


def paths(folder: str) -> dict[str, str]:
    return {f"{split}_path": f"{folder}/{split}.parquet" for split in ("train", "validation", "test")}


def task_instances(dagrun) -> dict[str, list]:
    """Task instances by task id (mapped tasks have several)."""
    out: dict[str, list] = {}
    for ti in dagrun.get_task_instances():
        out.setdefault(ti.task_id, []).append(ti)
    return out


def fit_processes(spec: TrialSpec) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "fit_als.py" in cmdline and f"--trial {spec}" in cmdline:
            found.append(proc)
    return found


@contextlib.contextmanager
def kill_when(find, act, settle_seconds: float = 4.0):
    """In a thread: once ``find()`` has returned something for ``settle_seconds`` (the work is under way),
    ``act(found)`` once. Yields a list that holds what was acted on."""
    acted: list = []
    done = threading.Event()

    def watch() -> None:
        seen_at = None
        while not done.is_set():
            found = find()
            if found:
                seen_at = seen_at or time.monotonic()
                if time.monotonic() - seen_at > settle_seconds:
                    acted.append(act(found))
                    return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield acted
    finally:
        done.set()
        thread.join(timeout=120)


def sigkill(processes: list[psutil.Process]) -> list[int]:
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    return [p.pid for p in processes]


class Hammer:
    """Requests against the served API in a loop, in a thread; every status and model version kept."""

    def __init__(self, base_url: str, user_id: str):
        self.url = f"{base_url}/users/{user_id}/recommendations?k=5"
        self.seen: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import urllib.error
        import urllib.request

        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    self.seen.append((response.status, json.load(response)["model_version"]))
            except urllib.error.HTTPError as exc:
                self.seen.append((exc.code, None))
            except OSError:
                self.seen.append((0, None))
            time.sleep(0.05)

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def statuses(self) -> Counter:
        return Counter(status for status, _ in self.seen)


@dataclass
class Embedded:
    """The results store of the embedded runs, and how to make one."""

    results_url: str

    def run(self, conf: dict, logical_date: datetime | None = None, **env: str):
        """One ``dag.test`` run with these environment variables (the DAG file is parsed under them)."""
        settings = {
            "AIRFLOW_CONN_RECSYS_RESULTS": airflow_uri(self.results_url),
            "RECSYS_RETRIES": "1",
            "RECSYS_RETRY_DELAY_SECONDS": "1",
            **env,
        }
        with pytest.MonkeyPatch.context() as mp:
            for key, value in settings.items():
                mp.setenv(key, value)
            return run_dag(conf, logical_date)
