"""DAG integrity: imports cleanly, has every stage, fit is mapped, params and defaults are valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from music_recsys.config import RunConfig

REPO = Path(__file__).resolve().parents[2]

CONTRACT_PARAMS = {
    "train_path",
    "validation_path",
    "test_path",
    "ranks",
    "reg_params",
    "alphas",
    "transforms",
    "k",
    "sample_fraction",
    "annoy_trees",
    "annoy_search_k",
}
SPARK_TASKS = {"ingest", "index", "fit", "evaluate"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags["music_recsys"]


def test_dag_files_do_not_shadow_the_package():
    """Airflow puts dags/ on sys.path: a dags/music_recsys.py would hide the music_recsys package."""
    import music_recsys

    names = {p.stem for p in (REPO / "dags").glob("*.py")}
    assert music_recsys.__name__ not in names
    assert Path(music_recsys.__file__).parent == REPO / "music_recsys"


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "music_recsys" in dagbag.dag_ids


def test_every_stage_is_a_task(dag):
    assert set(dag.task_ids) == {
        "prepare",
        "grid_points",
        "ingest",
        "index",
        "fit",
        "evaluate",
        "fast_search",
        "record",
        "report",
    }
    assert dag.get_task("index").upstream_task_ids >= {"ingest"}
    assert dag.get_task("evaluate").upstream_task_ids >= {"fit"}
    assert dag.get_task("report").upstream_task_ids >= {"record", "fast_search", "evaluate"}


def test_fit_is_mapped_with_readable_names(dag):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    fit = dag.get_task("fit")
    assert isinstance(fit, MappedOperator)
    assert fit.partial_kwargs["map_index_template"] == "{{ task.grid_point }}"
    assert fit.partial_kwargs["max_active_tis_per_dag"] >= 1


def test_spark_tasks_use_spark_submit_with_retries_and_timeouts(dag):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    for task_id in SPARK_TASKS - {"fit"}:
        task = dag.get_task(task_id)
        assert isinstance(task, SparkSubmitOperator)
        assert task.retries >= 1 and task.execution_timeout is not None
        assert task.application.endswith(".py")
    assert dag.get_task("evaluate").trigger_rule == "all_done_min_one_success"


def test_params_contract_and_defaults_validate(dag):
    assert CONTRACT_PARAMS <= set(dag.params.keys())
    defaults = dag.params.validate()
    config = RunConfig.from_params(defaults)  # defaults pass our own validation too
    assert len(config.trials()) == 3 * 3 * 3 * 2
    for name in dag.params.keys():
        assert dag.params.get_param(name).description, f"param {name} has no description"


def test_params_schema_rejects_bad_values(dag):
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    for name, value in [
        ("ranks", [0]),
        ("reg_params", [0]),
        ("alphas", [-1]),
        ("transforms", ["sqrt"]),
        ("k", 0),
    ]:
        params = copy.deepcopy(dag.params)
        with pytest.raises(ParamValidationError, match=name):
            params[name] = value  # ParamsDict validates on assignment
            params.validate()


def test_dag_is_documented_and_scheduled(dag):
    assert dag.doc_md and "music_recsys" in dag.doc_md
    assert dag.catchup is False
    assert dag.max_active_runs >= 1
    assert "recsys" in dag.tags
