"""DAG integrity: imports cleanly, has every stage, fit is mapped, params come from RunConfig and the
trigger form gives the same verdict as RunConfig on every param's boundary values."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from music_recsys.pipeline.config import RunConfig
from music_recsys.pipeline.params import ParamError, check_param

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
        "propose_round_1",
        "screen_round_1",
        "propose_round_2",
        "screen_round_2",
        "ingest",
        "check_data",
        "index",
        "fit",
        "evaluate",
        "fast_search",
        "record",
        "publish",
        "approve_model",
        "settle",
        "report",
        "announce_champion",
        "plan_batch_recommendations",
        "batch_recommendations",
        "store_recommendations",
        "finish",
    }
    assert dag.get_task("check_data").upstream_task_ids == {"prepare", "ingest"}
    assert dag.get_task("index").upstream_task_ids >= {"check_data"}  # no fit before the data check
    assert dag.get_task("evaluate").upstream_task_ids >= {"fit"}
    # The adaptive search's rounds, one after the other before the final fits: round 1 is planned once the data
    # check passed, beside the index (in grid mode the chain is then done when the index is); its fits need it.
    assert dag.get_task("propose_round_1").upstream_task_ids == {"prepare", "check_data"}
    assert dag.get_task("screen_round_1").upstream_task_ids == {"propose_round_1", "index"}
    assert dag.get_task("propose_round_2").upstream_task_ids == {"propose_round_1", "screen_round_1"}
    # In grid mode the chain is skipped, and grid_points runs after the data check, beside the index.
    assert dag.get_task("grid_points").upstream_task_ids == {"propose_round_2", "screen_round_2", "check_data"}
    assert dag.get_task("fit").upstream_task_ids >= {"grid_points", "index"}
    assert dag.get_task("publish").upstream_task_ids >= {"record", "fast_search", "evaluate", "check_data"}
    # With require_approval the model waits in approve_model; settle reads the decision (skipped = none asked).
    assert dag.get_task("approve_model").upstream_task_ids == {"publish"}
    assert dag.get_task("settle").upstream_task_ids == {"publish", "approve_model"}
    assert dag.get_task("settle").trigger_rule == "none_failed"
    assert dag.get_task("report").upstream_task_ids >= {"settle", "record"}
    assert dag.get_task("announce_champion").upstream_task_ids == {"settle"}
    finish_after = {"report", "announce_champion", "prepare", "store_recommendations"}
    assert dag.get_task("finish").upstream_task_ids == finish_after
    assert dag.get_task("batch_recommendations").upstream_task_ids == {"plan_batch_recommendations"}
    assert dag.get_task("plan_batch_recommendations").upstream_task_ids == {"prepare", "publish"}
    assert dag.get_task("finish").trigger_rule == "none_failed"  # a skipped announcement is not a failure


def test_champion_and_ingest_emit_assets(dag):
    uris = {task_id: {a.uri for a in dag.get_task(task_id).outlets} for task_id in ("ingest", "announce_champion")}
    assert uris == {"ingest": {"recsys://play-counts/ingested"}, "announce_champion": {"recsys://model/champion"}}


def test_fit_is_mapped_with_readable_names(dag):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    fit = dag.get_task("fit")
    assert isinstance(fit, MappedOperator)
    assert fit.partial_kwargs["map_index_template"] == "{{ task.grid_point }}"
    assert fit.partial_kwargs["max_active_tis_per_dag"] == 1  # RECSYS_MAX_PARALLEL_FITS default


def test_spark_tasks_use_spark_submit_with_retries_and_timeouts(dag):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    for task_id in SPARK_TASKS - {"fit"}:
        task = dag.get_task(task_id)
        assert isinstance(task, SparkSubmitOperator)
        assert task.retries == 1 and task.execution_timeout is not None
        assert task.application.endswith(".py")
    assert dag.get_task("evaluate").trigger_rule == "all_done_min_one_success"


def test_params_are_the_run_config_fields(dag):
    specs = RunConfig.param_specs()
    assert CONTRACT_PARAMS <= set(dag.params.keys())
    assert list(dag.params.keys()) == [s.name for s in specs]
    for spec in specs:
        param = dag.params.get_param(spec.name)
        assert param.value == spec.default and param.description == spec.description
        assert param.schema["section"] == spec.section
        assert {k: v for k, v in param.schema.items() if k not in ("section", "description")} == spec.schema
    RunConfig(**dag.params.validate())  # the form's defaults build a config


# Values at and across every param's bounds, of the wrong type and of the wrong shape.
BOUNDARIES = {
    "integer": [-1, 0, 1, 2, 10, 100, 101, 1000, 1001, 10000, 10001, 10**6, 10**6 + 1, 2**31 - 1, 2**31, 2.5, 3.0, True,
                "3", None],
    "number": [-1, -0.001, 0, 0.001, 0.05, 0.5, 1, 1.0001, 2, 100, 100.5, 1000, 1001, 10000, 10001, 10**6, 10**6 + 1,
               True, "1", None],
    "boolean": [True, False, 0, 1, "true", None],
    "string": ["", "map", "mpr", "auc", "fail", "warn", "ignore", "grid", "adaptive", "random", 3, None],
}  # fmt: skip


def _values(spec) -> list:
    schema = spec.schema
    if schema["type"] != "array":
        return BOUNDARIES[schema["type"]]
    items = BOUNDARIES[schema["items"]["type"]]
    if "enum" in schema["items"]:
        items = [*schema["items"]["enum"], "nope", 1]
    singles = [[v] for v in items]
    return [*singles, [], [items[2], items[2]], [items[2], items[3]], items[2], None]


def _form_accepts(dag, name, value) -> bool:
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dag.params)
    try:
        params[name] = value  # ParamsDict validates on assignment, as the trigger form and `-c` conf do
        params.validate()
    except ParamValidationError:
        return False
    return True


@pytest.fixture(scope="module")
def input_paths(data_root) -> dict[str, str]:
    folder = data_root / "integrity"
    folder.mkdir(exist_ok=True)
    for split in ("train", "validation", "test"):
        (folder / f"{split}.parquet").write_bytes(b"")
    return {f"{split}_path": f"integrity/{split}.parquet" for split in ("train", "validation", "test")}


def _config_accepts(input_paths, name, value) -> bool:
    """The whole RunConfig validation (schema, canonical form, cross-checks), as ``prepare`` runs it."""
    try:
        RunConfig.from_params({**input_paths, name: value})
    except ParamError:
        return False
    return True


@pytest.mark.parametrize("spec", [s for s in RunConfig.param_specs() if not s.is_path], ids=lambda s: s.name)
def test_form_and_run_config_agree_on_every_boundary(dag, input_paths, spec):
    verdicts = {
        repr(v): (_form_accepts(dag, spec.name, v), _config_accepts(input_paths, spec.name, v)) for v in _values(spec)
    }
    disagree = {v: d for v, d in verdicts.items() if d[0] != d[1]}
    assert not disagree, f"{spec.name}: (form, RunConfig) verdicts differ: {disagree}"
    assert any(form for form, _ in verdicts.values()) and not all(form for form, _ in verdicts.values())


def test_path_params_are_checked_for_roots_by_run_config_only(dag, data_root):
    # The form cannot know the worker's allowed roots: it checks the type, RunConfig the place.
    assert _form_accepts(dag, "train_path", "/etc/passwd")
    spec = next(s for s in RunConfig.param_specs() if s.name == "train_path")
    assert not _form_accepts(dag, "train_path", "")
    with pytest.raises(ParamError, match="train_path: '' should be non-empty"):
        check_param(spec, "")
    with pytest.raises(ParamError, match="outside the allowed roots"):
        RunConfig.from_params({"train_path": "/etc/passwd"})


def test_dag_is_documented_and_scheduled(dag):
    assert dag.doc_md and "music_recsys" in dag.doc_md
    assert dag.catchup is False
    assert dag.max_active_runs == 2
    assert "recsys" in dag.tags
