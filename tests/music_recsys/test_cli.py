"""`music-recsys`: every subcommand has help, `params` prints the README table, `models` reads the
registry, `generate` writes a data set."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from music_recsys.cli import build_parser, main
from music_recsys.pipeline.config import RunConfig, params_markdown
from music_recsys.pipeline.params import SCHEMA_DIALECT
from music_recsys.store import registry, schema
from music_recsys.store.results import ResultsStore
from tests.stores import migrated, register

COMMANDS = ["generate", "serve", "models", "params", "check-install"]


def test_every_subcommand_has_help(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([command, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: music-recsys {command}" in capsys.readouterr().out


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "music-recsys"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert all(command in out for command in COMMANDS)


def test_params_prints_the_generated_table_and_schemas(capsys):
    assert main(["params"]) == 0
    assert capsys.readouterr().out.strip() == params_markdown()
    assert main(["params", "--json"]) == 0
    specs = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in specs] == [s.name for s in RunConfig.param_specs()]
    assert next(s for s in specs if s["name"] == "k") | {"description": ""} == {
        "name": "k", "default": 500, "section": "Evaluation", "description": "", "$schema": SCHEMA_DIALECT,
        "type": "integer", "minimum": 1, "maximum": 10000,
    }  # fmt: skip


def test_db_upgrade_is_the_one_step_that_makes_the_schema(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    assert main(["models", "--results-url", url]) == 1  # a reader never creates it
    assert "no music-recsys schema yet: run `music-recsys db upgrade`" in capsys.readouterr().err
    assert main(["db", "current", "--results-url", url]) == 1
    assert "revision none (run `music-recsys db upgrade` for" in capsys.readouterr().out
    assert main(["db", "upgrade", "--results-url", url]) == 0
    assert f"upgraded from nothing to {schema.head()}" in capsys.readouterr().out
    assert main(["db", "upgrade", "--results-url", url]) == 0
    assert "(the newest); nothing to do" in capsys.readouterr().out
    assert main(["db", "current", "--results-url", url]) == 0


def test_models_lists_and_promotes(tmp_path, capsys):
    url = migrated(f"sqlite:///{tmp_path / 'r.sqlite'}")
    assert main(["models", "--results-url", url]) == 0
    assert "no models registered yet" in capsys.readouterr().out
    store = ResultsStore(url)
    for day, version in ((5, "old"), (12, "new")):
        candidate = {
            "model_version": version, "run_id": version, "trial_id": "r8_reg0.1_a1_none", "path": "models/m",
            "test_map": 0.2, "popularity_test_map": 0.1, "logical_date": datetime(2026, 1, day, tzinfo=UTC),
            "data_fingerprint": version, "k": 100,
        }  # fmt: skip
        register(store, candidate)
    store.close()
    assert main(["models", "list", "--results-url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["version", "status", "k", "test"]
    assert lines[1].split()[:5] == ["new", "champion", "100", "0.2000", "0.1000"]
    assert lines[2].split()[:2] == ["old", "retired"]
    assert main(["models", "promote", "old", "--results-url", url]) == 0
    assert "old is champion" in capsys.readouterr().out
    assert main(["models", "promote", "missing", "--results-url", url]) == 1
    assert "no model version 'missing'" in capsys.readouterr().err


def test_generate_writes_a_data_set(tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", "--out", str(out), "--users", "60", "--items", "40", "--holdout-users", "10"]) == 0
    assert {p.name for p in out.iterdir()} == {"train.parquet", "validation.parquet", "test.parquet", "manifest.json"}
    assert "train:" in capsys.readouterr().out


def test_promoting_a_model_that_awaits_approval_by_hand_says_what_happens_to_the_request(tmp_path, capsys):
    url = migrated(f"sqlite:///{tmp_path / 'r.sqlite'}")
    with ResultsStore(url) as store:
        row = {"model_version": "held", "run_id": "manual__1", "trial_id": "t", "path": "models/held", "test_map": 0.2,
               "popularity_test_map": 0.1, "logical_date": datetime(2026, 1, 5, tzinfo=UTC)}  # fmt: skip
        decision, _, _ = registry.publish_against(
            store,
            row,
            registry.Policy(True, 1.0, 0.05, require_approval=True),
            lambda champion: registry.Comparison(None),
        )
        assert decision.status == registry.AWAITING
    assert main(["models", "promote", "held", "--results-url", url]) == 0
    out = capsys.readouterr().out
    assert "held is champion" in out and "run manual__1 still asks for this model's approval" in out
