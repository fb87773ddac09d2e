"""Run configuration: path confinement, bounds, enums, the grid (the params table: tests/harness/test_docs.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from music_recsys.pipeline.config import RunConfig, TrialSpec
from music_recsys.pipeline.params import ParamError, describe_schema
from music_recsys.pipeline.paths import resolve_input_path
from music_recsys.run_folders import safe_run_id

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def paths(data_root):
    for name in ("train", "validation", "test"):
        (data_root / "cfg").mkdir(exist_ok=True)
        (data_root / "cfg" / f"{name}.parquet").write_bytes(b"")
    return {
        "train_path": "cfg/train.parquet",
        "validation_path": "cfg/validation.parquet",
        "test_path": "cfg/test.parquet",
    }


def test_relative_paths_resolve_under_the_data_root(paths, data_root):
    assert resolve_input_path(paths["train_path"]) == data_root / "cfg" / "train.parquet"


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "/etc/passwd", "s3://bucket/train.parquet", "file:///etc/passwd", ""]
)
def test_paths_outside_the_allowed_roots_are_refused(bad):
    with pytest.raises(ValueError, match="allowed roots|URI|non-empty"):
        resolve_input_path(bad, name="train_path")


def test_symlink_escape_is_refused(data_root, tmp_path):
    outside = tmp_path / "secret.parquet"
    outside.write_bytes(b"")
    link = data_root / "escape.parquet"
    if link.is_symlink():
        link.unlink()
    os.symlink(outside, link)
    with pytest.raises(ValueError, match="outside the allowed roots"):
        resolve_input_path("escape.parquet", name="train_path")


def test_extra_input_roots(monkeypatch, tmp_path):
    target = tmp_path / "dump" / "train.txt"
    target.parent.mkdir()
    target.write_text("u\tt\t1\n")
    with pytest.raises(ValueError, match="RECSYS_INPUT_ROOTS"):
        resolve_input_path(str(target))
    monkeypatch.setenv("RECSYS_INPUT_ROOTS", f"/nonexistent:{tmp_path / 'dump'}")
    assert resolve_input_path(str(target)) == target


def test_grid_and_validation(paths):
    config = RunConfig.from_params(
        {
            **paths,
            "ranks": [20, 5],
            "reg_params": [0.1],
            "alphas": [1, 10],
            "transforms": ["log1p", "none"],
            "k": 50.0,  # JSON's 50.0 is an integer
        }
    )
    assert config.ranks == [5, 20]
    assert config.alphas == [1.0, 10.0] and all(isinstance(a, float) for a in config.alphas)
    assert config.k == 50 and isinstance(config.k, int)
    assert config.transforms == ["none", "log1p"]
    ids = [t.trial_id for t in config.trials()]
    assert len(ids) == 8 and len(set(ids)) == 8
    assert "r5_reg0.1_a10_log1p" in ids


@pytest.mark.parametrize(
    "override,message",
    [
        ({"ranks": [0]}, r"ranks\[0\]: 0 is less than the minimum of 1"),
        ({"ranks": [2.5]}, r"ranks\[0\]: 2.5 is not of type 'integer'"),
        ({"ranks": [5, 5]}, "ranks: .* non-unique"),
        ({"reg_params": [0]}, "reg_params.*less than or equal to the minimum of 0"),
        ({"alphas": [-1]}, "alphas"),
        ({"transforms": ["sqrt"]}, r"transforms\[0\]: 'sqrt' is not one of"),
        ({"k": 0}, "k: 0 is less than the minimum of 1"),
        ({"k": True}, "k: True is not of type 'integer'"),
        ({"sample_fraction": 0}, "sample_fraction"),
        ({"annoy_search_k": [0]}, r"annoy_search_k\[0\]: 0 is not allowed"),
        ({"selection_metric": "auc"}, "selection_metric: 'auc' is not one of"),
        ({"on_data_drift": "ignore"}, "on_data_drift"),
        ({"ranks": list(range(1, 40)), "alphas": list(range(30))}, "max_map_length"),
    ],
)
def test_bad_params_are_refused(paths, override, message):
    with pytest.raises(ParamError, match=message):
        RunConfig.from_params({**paths, **override})


def test_unknown_params_are_refused_with_a_suggestion(paths):
    with pytest.raises(ParamError, match="unknown 'rank' \\(did you mean 'ranks'\\?\\)"):
        RunConfig.from_params({**paths, "rank": [5]})


def test_defaults_are_the_study_grid(paths):
    config = RunConfig.from_params(paths)
    assert len(config.trials()) == 3 * 3 * 3 * 2
    assert config.selection_metric == "map" and config.on_data_drift == "fail" and config.promote is True


def test_every_param_has_a_schema_description_and_section():
    names = set()
    for spec in RunConfig.param_specs():
        assert spec.description and spec.section and spec.schema.get("type"), spec.name
        assert describe_schema(spec.schema), spec.name
        names.add(spec.name)
    assert {"train_path", "ranks", "k", "sample_fraction", "annoy_trees", "annoy_search_k"} <= names


def test_trial_ids_and_run_ids_are_path_safe():
    assert TrialSpec(10, 0.1, 1e-05, "none").trial_id == "r10_reg0.1_a1e-05_none"
    assert safe_run_id("manual__2026-11-27T11:08:37.386226+00:00") == "manual__2026-11-27T11_08_37.386226_00_00"
    assert safe_run_id("../../x") == "x"


def test_every_param_schema_is_checked_in_the_cheap_dialect():
    """Airflow checks a param's schema against its dialect's metaschema at every resolve (per task and param
    at each serialization): draft-07, the same validator for the run's checks and for Airflow's."""
    import jsonschema
    from airflow.sdk import Param

    for spec in RunConfig.param_specs():
        assert jsonschema.validators.validator_for(spec.schema) is jsonschema.Draft7Validator, spec.name
        assert Param(spec.default, **spec.schema).resolve() == spec.default, spec.name  # Airflow takes it too
