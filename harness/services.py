"""Local services for tests and benchmarks: free ports, polling, throw-away PostgreSQL databases, a Spark
standalone cluster and a Spark Connect server started from the installed pyspark."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from music_recsys import settings

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], object], seconds: float, what: str, interval: float = 1.0) -> None:
    """Poll ``check()`` (an OSError counts as "not yet") until it is true; fail naming ``what``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {seconds:.0f} s")
        time.sleep(interval)


def get_json(url: str, timeout: float = 30) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def stop(*processes: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM every process at once, then wait for them together (killing any still up after ``timeout``):
    services that each take a while to shut down gracefully stop in the time of the slowest, not the sum."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Databases:
    """Fresh PostgreSQL databases (``RECSYS_TEST_POSTGRES``, default 127.0.0.1:5432 trust auth), dropped
    again by ``drop_all``."""

    def __init__(self, admin_url: str | None = None) -> None:
        import psycopg2

        self.admin_url = admin_url or settings.text("RECSYS_TEST_POSTGRES")
        self.admin = psycopg2.connect(self.admin_url, connect_timeout=5)
        self.admin.autocommit = True
        self.names: list[str] = []

    def create(self) -> str:
        """A new empty database; its ``postgresql://`` URL."""
        name = f"recsys_test_{uuid.uuid4().hex[:10]}"
        with self.admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return f"{self.admin_url.rsplit('/', 1)[0]}/{name}"

    def drop_all(self) -> None:
        if settings.optional("RECSYS_KEEP_TEST_FILES"):  # kept to be looked at, like the session's files
            self.admin.close()
            return
        with self.admin.cursor() as cur:
            for name in self.names:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
                cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        self.admin.close()


def airflow_uri(url: str) -> str:
    """An ``AIRFLOW_CONN_*`` value for a ``postgresql://`` URL."""
    return url.replace("postgresql://", "postgres://", 1)


def _spark_conf_args() -> list[str]:
    """The job settings (``music_recsys.pipeline.spark.spark_conf``) as spark-submit ``--conf`` arguments."""
    from music_recsys.pipeline.spark import spark_conf

    args = []
    for key, value in spark_conf().items():
        args += ["--conf", f"{key}={value}"]
    return args


@contextlib.contextmanager
def standalone_cluster(workdir: Path, cores: int = 2, memory: str = "3g") -> Iterator[dict]:
    """A Spark standalone master and one worker on 127.0.0.1; yields their ports."""
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_WORKER_DIR": str(workdir / "worker"),
        "SPARK_LOG_DIR": str(workdir / "logs"),
    }
    port, ui_port, worker_ui = free_port(), free_port(), free_port()
    spark_class = str(BIN / "spark-class")
    master = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
         "--webui-port", str(ui_port)],
        env=env, stdout=open(workdir / "master.log", "w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    worker = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--cores", str(cores),
         "--memory", memory, "--webui-port", str(worker_ui), "--host", "127.0.0.1"],
        env=env, stdout=open(workdir / "worker.log", "w"), stderr=subprocess.STDOUT,
    )  # fmt: skip

    def worker_alive() -> bool:
        try:
            state = get_json(f"http://127.0.0.1:{ui_port}/json/", 5)
        except json.JSONDecodeError:  # the UI serves its HTML page at /json/ until the master is up (seen here)
            return False
        return any(w["state"] == "ALIVE" for w in state["workers"])

    try:
        wait_until(worker_alive, 90, f"Spark worker registering (logs in {workdir})")
        yield {"port": port, "ui_port": ui_port, "state": lambda: get_json(f"http://127.0.0.1:{ui_port}/json/", 5)}
    finally:
        for process in (worker, master):
            stop(process)


class ConnectServer:
    """A Spark Connect server (``SparkConnectServer`` through spark-submit) on 127.0.0.1, ``local[cores]``,
    with the jobs' settings; its Python workers are this interpreter (numpy, pandas, this package)."""

    def __init__(self, workdir: Path, cores: int = 2, port: int | None = None):
        self.workdir = workdir
        self.cores = cores
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.port}"

    def connection(self, **extra: object) -> str:
        """``AIRFLOW_CONN_SPARK_DEFAULT`` for this server."""
        return json.dumps({"conn_type": "spark_connect", "host": "127.0.0.1", "port": self.port, "extra": extra})

    def start(self, wait_seconds: float = 120) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
        command = [
            str(BIN / "spark-submit"),
            "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
            "--name", "music_recsys Spark Connect server",
            "--master", f"local[{self.cores}]",
            *_spark_conf_args(),
            "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
            "--conf", f"spark.connect.grpc.binding.port={self.port}",
            "--conf", f"spark.checkpoint.dir={self.workdir / 'checkpoints'}",
            "--conf", f"spark.local.dir={self.workdir / 'local'}",
            "spark-internal",
        ]  # fmt: skip
        self.starts += 1
        log = open(self.workdir / f"server-{self.starts}.log", "w")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(
            self.answers, wait_seconds, f"Spark Connect server on port {self.port} (logs in {self.workdir})", 0.5
        )

    def answers(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"Spark Connect server exited (logs in {self.workdir})")
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def kill(self) -> None:
        """As a crash would: SIGKILL, no shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


@contextlib.contextmanager
def connect_server(workdir: Path, cores: int = 2) -> Iterator[ConnectServer]:
    server = ConnectServer(workdir, cores)
    server.start()
    try:
        yield server
    finally:
        server.stop()
