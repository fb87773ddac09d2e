"""Test session setup: an isolated data root and Airflow home, local Spark, dev connections as env vars."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="music-recsys-tests-"))

# Set before anything imports airflow: configuration is read once, at import.
os.environ["RECSYS_DATA_ROOT"] = str(_SESSION_DIR / "data")
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW_CONN_SPARK_DEFAULT"] = json.dumps({"conn_type": "spark", "host": "local[2]"})
os.environ.pop("AIRFLOW_CONN_RECSYS_RESULTS", None)
os.environ.pop("RECSYS_INPUT_ROOTS", None)
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
Path(os.environ["RECSYS_DATA_ROOT"]).mkdir(parents=True, exist_ok=True)

POSTGRES_ADMIN = os.environ.get("RECSYS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def data_root() -> Path:
    return Path(os.environ["RECSYS_DATA_ROOT"])


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the test session: few shuffle partitions, temp local dir."""
    from music_recsys.spark import get_spark

    os.environ.setdefault("RECSYS_SHUFFLE_PARTITIONS", "4")
    local_dir = _SESSION_DIR / "spark-local"
    local_dir.mkdir(exist_ok=True)
    os.environ["SPARK_LOCAL_DIRS"] = str(local_dir)
    session = get_spark("music_recsys.tests", checkpoint_dir=str(_SESSION_DIR / "checkpoints"))
    yield session
    session.stop()


class _Databases:
    """Creates fresh PostgreSQL databases (127.0.0.1:5432, trust auth) and drops them again."""

    def __init__(self) -> None:
        import psycopg2

        try:
            self.admin = psycopg2.connect(POSTGRES_ADMIN, connect_timeout=5)
        except psycopg2.OperationalError as exc:
            if os.environ.get("CI"):
                raise
            pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN}: {exc}")
        self.admin.autocommit = True
        self.names: list[str] = []

    def create(self) -> str:
        name = f"recsys_test_{uuid.uuid4().hex[:10]}"
        with self.admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return f"{POSTGRES_ADMIN.rsplit('/', 1)[0]}/{name}"

    def drop_all(self) -> None:
        with self.admin.cursor() as cur:
            for name in self.names:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
                cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        self.admin.close()


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    databases = _Databases()
    yield databases.create()
    databases.drop_all()


@pytest.fixture(scope="module")
def module_postgres():
    """A function creating fresh PostgreSQL databases that live until the test module ends."""
    databases = _Databases()
    yield databases.create
    databases.drop_all()


@pytest.fixture(scope="session")
def airflow_db():
    """Airflow's SQLite metadata DB in the session's AIRFLOW_HOME (dag.test needs one)."""
    import subprocess

    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def free_port():
    """A function returning a TCP port free on 127.0.0.1 right now."""
    import socket

    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return pick


@pytest.fixture(scope="session")
def wait_until():
    """A function polling ``check()`` (errors count as "not yet") until true or ``seconds`` pass."""
    import time

    def wait(check, seconds: float, what: str, interval: float = 1.0) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if check():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} within {seconds:.0f} s")
            time.sleep(interval)

    return wait
