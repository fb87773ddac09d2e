"""The settings module: every ``RECSYS_*`` variable the tree mentions is defined there, code reads them
only through it, values are checked with the variable named, and docs/environment.md is its output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from music_recsys import settings
from music_recsys.pipeline import spark
from music_recsys.pipeline.paths import input_roots
from music_recsys.settings import data_root
from music_recsys.store.retention import keep_runs

REPO = Path(__file__).resolve().parents[2]
# Where the project's code, build and deployment files live (tests set variables; they are checked too).
SOURCES = ["music_recsys", "dags", "jobs", "harness", "bench", "plugins", "tests", "docker"]
TOP_FILES = ["Makefile", "docker-compose.yaml", "pyproject.toml", ".ci/run"]
NAME = re.compile(r"(?<![A-Za-z0-9_])RECSYS_[A-Z0-9_]*[A-Z0-9]")
# A direct read of the environment: os.environ.get("RECSYS_A" / os.environ["RECSYS_A"] (not an assignment)
# / os.getenv("RECSYS_A".
DIRECT_READ = re.compile(
    r"""os\.(?:environ\.get|getenv)\(\s*["'](RECSYS_[A-Z0-9_]+)["']"""
    r"""|os\.environ\[\s*["'](RECSYS_[A-Z0-9_]+)["']\](?!\s*=[^=])"""
)
# Variables a test names to show they are refused, not variables the code reads.
NOT_SETTINGS = {"RECSYS_NO_SUCH_SETTING", "RECSYS_A", "RECSYS_B", "RECSYS_C"} | {
    "RECSYS_MODEL",  # the DAG's Asset object, not a variable
    "RECSYS_WRITE_DOCS_IMG",  # a switch of the browser tests (screenshots into docs/img/), not of the project
}


def _files() -> list[Path]:
    files = [REPO / name for name in TOP_FILES if (REPO / name).exists()]
    for folder in SOURCES:
        files += [p for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".yaml", "")]
    return [p for p in files if "__pycache__" not in p.parts]


def test_every_recsys_variable_in_the_tree_is_a_setting():
    mentioned: dict[str, str] = {}
    for path in _files():
        for name in NAME.findall(path.read_text(errors="replace")):
            mentioned.setdefault(name, str(path.relative_to(REPO)))
    missing = {n: where for n, where in mentioned.items() if n not in settings.SETTINGS and n not in NOT_SETTINGS}
    assert not missing, f"add these to music_recsys/settings.py (name: first file naming it): {missing}"
    # The scan does find what the code reads (a broken pattern would make the test above pass vacuously).
    assert {"RECSYS_DATA_ROOT", "RECSYS_SPARK_MASTER", "RECSYS_SPARK_TIMEOUT_HOURS"} <= set(mentioned)


def test_no_setting_is_defined_but_unused():
    text = "".join(p.read_text(errors="replace") for p in _files() if p.name != "settings.py")
    unused = [name for name in settings.SETTINGS if name not in text]
    assert not unused, f"settings nothing reads or sets (remove them or use them): {unused}"


def test_code_reads_the_environment_only_through_settings():
    direct = []
    for folder in ("music_recsys", "dags", "jobs", "harness", "bench", "plugins"):
        for path in (REPO / folder).rglob("*.py"):
            rel = str(path.relative_to(REPO))
            if rel == "music_recsys/settings.py":
                continue
            direct += [f"{rel}: {a or b}" for a, b in DIRECT_READ.findall(path.read_text())]
    assert not direct, f"read these through music_recsys.settings instead: {direct}"
    # The pattern matches a read and not an assignment.
    assert DIRECT_READ.findall('x = os.environ.get("RECSYS_A", "1")') == [("RECSYS_A", "")]
    assert DIRECT_READ.findall('os.environ["RECSYS_B"]') == [("", "RECSYS_B")]
    assert DIRECT_READ.findall('os.environ["RECSYS_C"] = "2"') == []


def test_unset_variables_give_their_defaults(monkeypatch):
    for name in ("RECSYS_KEEP_RUNS", "RECSYS_SHUFFLE_PARTITIONS", "RECSYS_SPARK_DRIVER_HOST", "RECSYS_SPARK_PYTHON",
                 "RECSYS_SPARK_BLAS_THREADS"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert keep_runs() == 5
    conf = spark.spark_conf()
    assert conf["spark.sql.shuffle.partitions"] == "8"
    assert "spark.driver.host" not in conf
    import sys

    assert conf["spark.pyspark.python"] == sys.executable
    # One thread per native BLAS call: Spark runs a task per core already (docs/benchmarks.md#native-blas).
    assert conf["spark.executorEnv.OPENBLAS_NUM_THREADS"] == "1"
    assert spark.spark_env() == {"OPENBLAS_NUM_THREADS": "1"}


def test_values_are_read_when_asked_not_at_import(monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_KEEP_RUNS", "12")
    monkeypatch.setenv("RECSYS_SPARK_DRIVER_HOST", "airflow-scheduler")
    monkeypatch.setenv("RECSYS_SPARK_JAVA_OPTIONS", "-Xss4m")
    monkeypatch.setenv("RECSYS_DATA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("RECSYS_INPUT_ROOTS", f"{tmp_path / 'a'}::{tmp_path / 'b'}")
    assert keep_runs() == 12
    conf = spark.spark_conf()
    assert conf["spark.driver.host"] == "airflow-scheduler"
    assert conf["spark.executor.extraJavaOptions"] == "-Xss4m"
    assert data_root() == (tmp_path / "root").resolve()
    assert input_roots() == [(tmp_path / "root").resolve(), (tmp_path / "a").resolve(), (tmp_path / "b").resolve()]


def test_an_empty_value_is_kept_where_it_means_off(monkeypatch):
    monkeypatch.setenv("RECSYS_SCHEDULE_CRON", "")
    assert settings.text("RECSYS_SCHEDULE_CRON") == ""
    monkeypatch.setenv("RECSYS_PY_FILES", "")
    assert settings.optional("RECSYS_PY_FILES") is None


@pytest.mark.parametrize(
    ("name", "value", "reader", "expected"),
    [
        ("RECSYS_KEEP_RUNS", "five", settings.integer, r"RECSYS_KEEP_RUNS='five' is not a whole number.*default `5`"),
        (
            "RECSYS_RETRIES",
            "-1",
            lambda n: settings.integer(n, minimum=0),
            r"RECSYS_RETRIES='-1' is not a whole number >= 0",
        ),
        ("RECSYS_SPARK_TIMEOUT_HOURS", "2h", settings.number, r"RECSYS_SPARK_TIMEOUT_HOURS='2h' is not a number"),
        (
            "RECSYS_SPARK_BLAS_THREADS",
            "0",
            lambda n: spark.spark_env(),
            r"RECSYS_SPARK_BLAS_THREADS='0' is not a whole number >= 1",
        ),
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_the_fix(monkeypatch, name, value, reader, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(settings.SettingError, match=expected):
        reader(name)


def test_an_unknown_setting_is_refused():
    with pytest.raises(KeyError, match="RECSYS_NO_SUCH_SETTING is not a setting; add it to music_recsys/settings.py"):
        settings.text("RECSYS_NO_SUCH_SETTING")


def test_jobs_dir_is_beside_the_dag_folder_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv("RECSYS_JOBS_DIR", raising=False)
    assert settings.jobs_dir(beside=REPO / "dags" / "music_recsys_dag.py") == REPO / "jobs"
    assert (settings.jobs_dir(beside=REPO / "dags" / "music_recsys_dag.py") / "fit_als.py").is_file()
    monkeypatch.setenv("RECSYS_JOBS_DIR", str(tmp_path))
    assert settings.jobs_dir(beside=REPO / "dags" / "music_recsys_dag.py") == tmp_path


def test_every_setting_has_a_known_group_and_a_meaning():
    for s in settings.SETTINGS.values():
        assert s.group in settings.GROUPS, s.name
        assert len(s.meaning) > 10, s.name
    table = settings.environment_markdown()
    assert all(f"`{name}`" in table for name in settings.SETTINGS)
    assert "| `RECSYS_KEEP_RUNS` | `5` |" in table
    assert "| `RECSYS_SPARK_PYTHON` | the Airflow interpreter |" in table


def test_a_relative_data_root_is_taken_from_where_the_process_started(tmp_path, monkeypatch):
    """A library or task runner that changes directory later must not move the store under a process."""
    from music_recsys import settings

    monkeypatch.setattr(settings, "_START_DIR", tmp_path / "started-here")
    monkeypatch.setenv("RECSYS_DATA_ROOT", "data")
    monkeypatch.chdir(tmp_path)
    assert settings.data_root() == (tmp_path / "started-here" / "data").resolve()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert settings.data_root() == (tmp_path / "started-here" / "data").resolve()
    monkeypatch.setenv("RECSYS_DATA_ROOT", str(tmp_path / "absolute"))
    assert settings.data_root() == tmp_path / "absolute"
    assert settings.in_data_root("models/v1") == tmp_path / "absolute" / "models" / "v1"
    assert settings.in_data_root("/elsewhere/v1") == Path("/elsewhere/v1")


def test_a_runs_tasks_all_use_the_root_its_plan_recorded(tmp_path, monkeypatch):
    from music_recsys.pipeline.config import RunConfig
    from music_recsys.pipeline.plan import build_plan

    monkeypatch.setenv("RECSYS_DATA_ROOT", str(tmp_path))
    plan = build_plan(RunConfig(), "manual__1")
    assert plan["data_root"] == str(tmp_path) and plan["run_dir"] == str(tmp_path / "runs" / "manual__1")
