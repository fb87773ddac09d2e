"""Run configuration: path confinement, bounds, enums, the grid."""

from __future__ import annotations

import os

import pytest

from music_recsys.config import RunConfig, TrialSpec, resolve_input_path, safe_run_id


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
            "ranks": [20, 5, 5],
            "reg_params": [0.1],
            "alphas": [1, 10],
            "transforms": ["log1p", "none"],
        }
    )
    assert config.ranks == [5, 20]
    assert config.transforms == ["none", "log1p"]
    ids = [t.trial_id for t in config.trials()]
    assert len(ids) == 8 and len(set(ids)) == 8
    assert "r5_reg0.1_a10_log1p" in ids


@pytest.mark.parametrize(
    "override,message",
    [
        ({"ranks": [0]}, "ranks"),
        ({"ranks": [2.5]}, "not an integer"),
        ({"reg_params": [0]}, "reg_params"),
        ({"alphas": [-1]}, "alphas"),
        ({"transforms": ["sqrt"]}, "not allowed"),
        ({"k": 0}, "k"),
        ({"sample_fraction": 0}, "sample_fraction"),
        ({"annoy_search_k": [0]}, "annoy_search_k"),
        ({"ranks": list(range(1, 40)), "alphas": list(range(30))}, "max_map_length"),
    ],
)
def test_bad_params_are_refused(paths, override, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_params({**paths, **override})


def test_missing_paths_are_named():
    with pytest.raises(ValueError, match="train_path, validation_path, test_path must be set"):
        RunConfig.from_params({})


def test_trial_ids_and_run_ids_are_path_safe():
    assert TrialSpec(10, 0.1, 1e-05, "none").trial_id == "r10_reg0.1_a1e-05_none"
    assert safe_run_id("manual__2026-11-27T11:08:37.386226+00:00") == "manual__2026-11-27T11_08_37.386226_00_00"
    assert safe_run_id("../../x") == "x"
