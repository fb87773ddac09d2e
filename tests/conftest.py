"""Test session setup: an isolated data root and Airflow home, local Spark, dev connections as env vars,
and the services tests share (one tiny data set, PostgreSQL databases, a Spark Connect server)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from music_recsys import settings

REPO = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="music-recsys-tests-"))
if not os.environ.get("RECSYS_KEEP_TEST_FILES"):  # set it to look at a session's data, runs and logs
    atexit.register(shutil.rmtree, _SESSION_DIR, ignore_errors=True)

# Set before anything imports airflow: configuration is read once, at import.
os.environ["RECSYS_DATA_ROOT"] = str(_SESSION_DIR / "data")
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW_CONN_SPARK_DEFAULT"] = json.dumps({"conn_type": "spark", "host": "local[2]"})
os.environ["RECSYS_SHUFFLE_PARTITIONS"] = "4"
# The suite's JVMs (Connect servers, spark-submit drivers, executors, local sessions) live seconds on tiny
# data: the C1 compiler alone costs them less CPU than C2's optimising, and on two busy cores the CPU is the
# suite's time (measured: docs/development.md). Long fits want C2 (bench/RESULTS.md, "ALS tuning"), so only
# the tests set it.
_JAVA = settings.setting("RECSYS_SPARK_JAVA_OPTIONS").default
os.environ["RECSYS_SPARK_JAVA_OPTIONS"] = f"{_JAVA} -XX:TieredStopAtLevel=1"
# Tests read earlier runs' files; retention has its own tests (tests/music_recsys/test_retention.py).
os.environ["RECSYS_KEEP_RUNS"] = "1000"
os.environ.pop("AIRFLOW_CONN_RECSYS_RESULTS", None)
os.environ.pop("RECSYS_INPUT_ROOTS", None)
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
Path(os.environ["RECSYS_DATA_ROOT"]).mkdir(parents=True, exist_ok=True)

# `make test` runs the suite on two xdist workers (`-n 2 --dist loadgroup`): much of a DAG test's time is
# waiting (a JVM or a service starting, a scheduler's poll), so two of them overlap well on two cores.
# Tests that share session fixtures must stay on one worker, in order: the embedded DAG runs (the reference
# run, the Connect run and the served API the later drills judge against) and the Airflow stack. The files
# whose tests use the local Spark session (the `spark` fixture) go to one worker too, so one JVM starts and
# warms up, not one per worker.
XDIST_GROUPS = {
    "dags/test_dag_e2e.py": "embedded-runs",
    "dags/test_dag_connect.py": "embedded-runs",
    "dags/test_dag_guardrails.py": "embedded-runs",
    "dags/test_dag_fault_drills.py": "embedded-runs",
    "dags/test_scheduler.py": "airflow-stack",
    **dict.fromkeys(
        [
            "jobs/test_ingest.py",
            "jobs/test_batch_recommend.py",
            "jobs/test_fit_als.py",
            "jobs/test_evaluate.py",
            "jobs/test_index_ids.py",
            "music_recsys/model/test_transforms.py",
            "music_recsys/model/test_foldin.py",
            "music_recsys/data/test_drift.py",
            "music_recsys/evaluation/test_metrics.py",
            "music_recsys/pipeline/test_install_check.py",
        ],
        "local-spark",
    ),
}


def pytest_xdist_make_scheduler(config, log):
    """With ``--dist loadgroup``: each group of XDIST_GROUPS is one unit of work (one worker, file order),
    every other test file one (its module fixtures are built once). xdist's own ``xdist_group`` marks do
    not reach its scheduler under pytest 9, whose node ids xdist 3.8 can no longer suffix. Units go out in
    the order the workers collected them (``pytest_collection_modifyitems``: the longest first)."""
    if config.getoption("dist") != "loadgroup":
        return None
    config.option.loadscopereorder = False  # xdist would sort the units by their number of tests
    from xdist.scheduler import LoadScopeScheduling

    class FileGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return FileGroups(config, log)


# The longest units, longest first (their seconds: docs/development.md). A worker always holds one unit beyond
# the one it runs: a long unit last leaves the other worker idle. The rest go out by number of tests, as
# xdist would send them.
LONGEST_FIRST = (
    "embedded-runs",
    "airflow-stack",
    "local-spark",
    "dags/test_dag_faults.py",
    "bench/test_als_blas.py",
)


def _unit(nodeid: str) -> str:
    path = nodeid.split("::")[0].removeprefix("tests/")
    return XDIST_GROUPS.get(path, path)


def pytest_collection_modifyitems(config, items):
    # A test that starts Spark is marked so, wherever it lives (`make test-fast` leaves them out).
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)
            if _unit(item.nodeid) != "local-spark":  # xdist's scheduler sees node ids only, not fixtures
                raise pytest.UsageError(f"{item.nodeid} uses the local Spark session: list its file in XDIST_GROUPS")
    if hasattr(config, "workerinput"):  # an xdist worker: its collection order is the order units go out
        sizes = Counter(_unit(item.nodeid) for item in items)

        def rank(unit: str) -> tuple[int, int]:
            return (LONGEST_FIRST.index(unit), 0) if unit in LONGEST_FIRST else (len(LONGEST_FIRST), -sizes[unit])

        items.sort(key=lambda item: rank(_unit(item.nodeid)))  # stable: a unit's tests keep their order


# The one generated data set of the DAG tests: small enough that Spark's start-up dominates.
TINY = {"users": 800, "items": 400, "holdout_users": 120, "mean_tracks": 14.0}


@pytest.fixture(scope="session")
def data_root() -> Path:
    return Path(os.environ["RECSYS_DATA_ROOT"])


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def tiny_data(data_root) -> dict:
    """``tiny/`` under the data root: train/validation/test parquet; returns the generator's manifest."""
    from music_recsys.data import generate

    return generate.main(out=str(data_root / "tiny"), **TINY)


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the test session: few shuffle partitions, temp local dir."""
    from music_recsys.pipeline.spark import get_spark, set_checkpoint_dir

    local_dir = _SESSION_DIR / "spark-local"
    local_dir.mkdir(exist_ok=True)
    os.environ["SPARK_LOCAL_DIRS"] = str(local_dir)
    session = get_spark("music_recsys.tests")
    set_checkpoint_dir(session, str(_SESSION_DIR / "checkpoints"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def databases():
    """Creates fresh PostgreSQL databases for the session and drops them at its end."""
    import psycopg2

    from harness.services import Databases

    try:
        dbs = Databases()
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    yield dbs
    dbs.drop_all()


@pytest.fixture
def postgres_url(databases) -> str:
    """A fresh PostgreSQL database (``postgresql://`` URL)."""
    return databases.create()


@pytest.fixture(scope="session")
def airflow_db():
    """Airflow's SQLite metadata DB in the session's AIRFLOW_HOME (dag.test needs one)."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def connect_server():
    """A Spark Connect server (local[2]) shared by every test that runs jobs in Connect mode."""
    from harness.services import ConnectServer

    server = ConnectServer(_SESSION_DIR / "spark-connect")
    server.start()
    yield server
    server.stop()
