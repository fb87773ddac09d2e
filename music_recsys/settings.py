"""Every environment variable the project reads: its name, default and meaning, written once.

Code reads a variable only through this module (``text``, ``integer``, ``number``, ``optional``), so a
default lives in one place and a bad value fails naming the variable and its allowed form. Values are
read when asked for, not at import, so a test's ``monkeypatch.setenv`` is seen. The environment page
(docs/environment.md) is generated from ``SETTINGS`` (``music-recsys`` does not need to run for it:
``environment_markdown()``), and a test requires every ``RECSYS_*`` name the tree mentions to be here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GROUPS = ("Data", "Schedule and retries", "Spark", "Serving", "Deployment (docker-compose .env)", "Tests")


class SettingError(ValueError):
    """An environment variable holds a value the code cannot use."""


@dataclass(frozen=True)
class Setting:
    """One environment variable: ``default`` is the text used when it is unset (a callable when it
    depends on the interpreter or the checkout), ``shown_default`` what the docs print for it."""

    name: str
    default: str | Callable[[], str]
    meaning: str
    group: str
    shown_default: str | None = None

    def raw(self) -> str:
        """The variable's text, or the default when it is unset (an empty value is kept: it can mean
        "off", as for ``RECSYS_SCHEDULE_CRON``)."""
        value = os.environ.get(self.name)
        if value is not None:
            return value
        return self.default() if callable(self.default) else self.default

    def doc_default(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        return f"`{self.default}`" if self.default else "—"


_ALL = [
    # --- Data
    Setting(
        "RECSYS_DATA_ROOT",
        "data",
        "data, runs, models, SQLite results (relative = from the working directory the process started in; "
        "each run records the absolute root its tasks use)",
        "Data",
        "`./data`",
    ),
    Setting("RECSYS_INPUT_ROOTS", "", "extra roots input paths may lie under, colon-separated", "Data"),
    Setting("RECSYS_KEEP_RUNS", "5", "runs (and bundles) kept whole; older ones are slimmed", "Data"),
    Setting(
        "RECSYS_JOBS_DIR",
        "",
        "folder of the Spark job scripts the DAG submits",
        "Data",
        "`jobs/` beside the DAG folder",
    ),
    # --- Schedule and retries
    Setting(
        "RECSYS_SCHEDULE_CRON",
        "0 3 * * 1",
        "retraining schedule (UTC); empty = only on a new data drop (asset)",
        "Schedule and retries",
    ),
    Setting(
        "RECSYS_START_DATE",
        "2026-01-01",
        "no scheduled run before this date; backfills may cover earlier dates",
        "Schedule and retries",
    ),
    Setting("RECSYS_MAX_PARALLEL_FITS", "1", "concurrent fit tasks (`max_active_tis_per_dag`)", "Schedule and retries"),
    Setting(
        "RECSYS_RETRIES",
        "1",
        "task retries (exponential backoff); input errors are never retried",
        "Schedule and retries",
    ),
    Setting("RECSYS_RETRY_DELAY_SECONDS", "30", "first retry delay of a task", "Schedule and retries"),
    Setting("RECSYS_SPARK_TIMEOUT_HOURS", "2", "`execution_timeout` of each Spark task", "Schedule and retries"),
    # --- Spark
    Setting(
        "RECSYS_SPARK_CONN_ID",
        "spark_default",
        "Airflow connection the Spark tasks run through "
        "(type `spark`: spark-submit; `spark_connect`: a Spark Connect server)",
        "Spark",
    ),
    Setting(
        "RECSYS_SPARK_MASTER",
        "local[*]",
        "master of a local session (tests, benchmarks, debugging); "
        "the override of the connection's master outside spark-submit",
        "Spark",
    ),
    Setting("RECSYS_SHUFFLE_PARTITIONS", "8", "`spark.sql.shuffle.partitions`", "Spark"),
    Setting(
        "RECSYS_DRIVER_MEMORY",
        "2g",
        "Spark driver memory, the heap of every stage under local[*]: 2g carries ~10M train rows, the fit "
        "needs 8g at 48M ([measured](benchmarks.md#driver-memory))",
        "Spark",
    ),
    Setting(
        "RECSYS_SPARK_PYTHON",
        lambda: sys.executable,
        "Python of the Spark executors",
        "Spark",
        "the Airflow interpreter",
    ),
    Setting(
        "RECSYS_PY_FILES", "", "zip of `music_recsys` for clusters whose workers do not have it installed", "Spark"
    ),
    Setting("RECSYS_SPARK_CORES_MAX", "", "`total_executor_cores` per job on a standalone cluster", "Spark"),
    Setting(
        "RECSYS_SPARK_DRIVER_HOST",
        "",
        "`spark.driver.host`: the address executors reach the driver at (client mode in a container)",
        "Spark",
    ),
    Setting(
        "RECSYS_SPARK_EVENT_LOG_DIR",
        "",
        "`spark.eventLog.dir` for the Spark history server; unset = no event log",
        "Spark",
    ),
    Setting("RECSYS_SPARK_UI", "false", "Spark UI of the jobs", "Spark"),
    Setting("RECSYS_SPARK_LOG_LEVEL", "WARN", "log level of the jobs' Spark", "Spark"),
    Setting(
        "RECSYS_SPARK_JAVA_OPTIONS",
        "-XX:+UseParallelGC --add-modules=jdk.incubator.vector",
        "driver/executor JVM flags (measured faster ALS, bench/RESULTS.md)",
        "Spark",
    ),
    Setting(
        "RECSYS_SPARK_BLAS_THREADS",
        "1",
        "threads per native BLAS call (`OPENBLAS_NUM_THREADS`) in the Spark JVMs the jobs start: Spark already "
        "runs a task per core ([measured](benchmarks.md#native-blas))",
        "Spark",
    ),
    Setting(
        "RECSYS_NATIVE_BLAS_MIN_RANK",
        "40",
        "a fit task whose highest rank is below this runs its ALS on netlib's Java BLAS, at or above it on native "
        "BLAS where the machine has it (which is faster depends on the rank: [measured](benchmarks.md#native-blas)); "
        "0 = always native. spark-submit only (a Spark Connect server has its own JVM)",
        "Spark",
    ),
    Setting(
        "RECSYS_SPARK_CDS_ARCHIVE",
        "",
        "class-data-sharing archive of the driver JVM (`make setup` builds it); used only when the file exists",
        "Spark",
        "`<venv>/spark-classes.jsa`",
    ),
    Setting(
        "RECSYS_ALS_STORAGE_LEVEL",
        "MEMORY_ONLY",
        "ALS intermediate/final storage; `MEMORY_AND_DISK` when ratings exceed executor memory",
        "Spark",
    ),
    # --- Serving and the Airflow API
    Setting(
        "RECSYS_API_TOKEN",
        "",
        "bearer token every API request but `GET /healthz` must carry (`music-recsys serve --token-file` "
        "instead); unset = an open API",
        "Serving",
    ),
    Setting(
        "RECSYS_AIRFLOW_API_CONN_ID",
        "recsys_airflow_api",
        "Airflow connection of the Airflow REST API (host = api-server URL, login, password) a failed run's "
        "note is written through when the callback has no metadata DB",
        "Serving",
    ),
    # --- docker-compose reads these from .env; the Python code never does.
    Setting(
        "RECSYS_DATA_DIR",
        "./data",
        "host folder mounted as the data root of every container",
        "Deployment (docker-compose .env)",
    ),
    Setting(
        "RECSYS_SPARK_CONNECTION",
        "spark://spark-master:7077?deploy-mode=client",
        "the `spark_default` connection; `spark-connect://spark-connect:15002` runs the jobs on Spark Connect",
        "Deployment (docker-compose .env)",
    ),
    Setting(
        "RECSYS_RESULTS_PASSWORD", "recsys", "password of the results database", "Deployment (docker-compose .env)"
    ),
    Setting(
        "RECSYS_RESULTS_READER_PASSWORD",
        "reader",
        "password of `recsys_reader`, the serving API's SELECT-only role",
        "Deployment (docker-compose .env)",
    ),
    Setting(
        "RECSYS_RESULTS_UI_PASSWORD",
        "ui",
        "password of `recsys_ui`, the UI plugin's role (SELECT, and UPDATE on `models`)",
        "Deployment (docker-compose .env)",
    ),
    # --- Tests and harness
    Setting(
        "RECSYS_TEST_POSTGRES",
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "PostgreSQL server the tests create throw-away databases on",
        "Tests",
    ),
    Setting(
        "RECSYS_KEEP_TEST_FILES",
        "",
        "non-empty: keep a test session's data, runs, logs and PostgreSQL databases",
        "Tests",
    ),
]

SETTINGS: dict[str, Setting] = {s.name: s for s in _ALL}


def setting(name: str) -> Setting:
    try:
        return SETTINGS[name]
    except KeyError:
        raise KeyError(
            f"{name} is not a setting; add it to music_recsys/settings.py (known: {', '.join(SETTINGS)})"
        ) from None


def text(name: str) -> str:
    """The variable's text, or its default."""
    return setting(name).raw()


def optional(name: str) -> str | None:
    """The variable's text, or ``None`` when it is unset or empty (for settings that are off by default)."""
    return setting(name).raw() or None


def integer(name: str, *, minimum: int | None = None) -> int:
    """The variable as a whole number (at least ``minimum``), failing with the variable named."""
    raw = text(name)
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(_bad(name, raw, "a whole number")) from None
    if minimum is not None and value < minimum:
        raise SettingError(_bad(name, raw, f"a whole number >= {minimum}"))
    return value


def number(name: str, *, minimum: float | None = None) -> float:
    """The variable as a number (at least ``minimum``), failing with the variable named."""
    raw = text(name)
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(_bad(name, raw, "a number")) from None
    if minimum is not None and value < minimum:
        raise SettingError(_bad(name, raw, f"a number >= {minimum:g}"))
    return value


def path(name: str) -> Path:
    """The variable as a path, ``~`` expanded (not resolved: callers decide that)."""
    return Path(text(name)).expanduser()


# The working directory the process started in: a relative RECSYS_DATA_ROOT is taken from here, so a later
# chdir (a library, a task runner) cannot move the store under a running process.
_START_DIR = Path.cwd()


def data_root() -> Path:
    """The data root: ``RECSYS_DATA_ROOT`` (default ``./data``), absolute and symlink-resolved; a relative
    value is taken from the directory the process started in, not from wherever it is now."""
    raw = path("RECSYS_DATA_ROOT")
    return (raw if raw.is_absolute() else _START_DIR / raw).resolve()


def in_data_root(path: str | Path) -> Path:
    """A path the results store or a run records: relative ones lie under the data root (so a moved data
    root keeps working), absolute ones are taken as they are."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else data_root() / path


def jobs_dir(beside: str | Path) -> Path:
    """The Spark job scripts: ``RECSYS_JOBS_DIR``, else ``jobs/`` next to the folder holding ``beside``
    (the DAG file, or a harness module): the checkout and the images keep ``dags/`` and ``jobs/`` side by
    side, while the installed package may live elsewhere (site-packages)."""
    configured = optional("RECSYS_JOBS_DIR")
    return Path(configured).expanduser() if configured else Path(beside).resolve().parents[1] / "jobs"


def _bad(name: str, raw: str, wanted: str) -> str:
    spec = setting(name)
    return (
        f"{name}={raw!r} is not {wanted}; set it to {wanted} ({spec.meaning}) or unset it for the "
        f"default {spec.doc_default()}"
    )


def environment_markdown() -> str:
    """The table of docs/environment.md, one section per group, generated from ``SETTINGS``."""
    lines: list[str] = []
    for group in GROUPS:
        lines += [f"## {group}", "", "| variable | default | meaning |", "|---|---|---|"]
        lines += [f"| `{s.name}` | {s.doc_default()} | {s.meaning} |" for s in _ALL if s.group == group]
        lines.append("")
    return "\n".join(lines).rstrip("\n")
