"""Benchmark scripts cannot rot unnoticed: each imports and answers ``--help``, every call it makes into
the package matches the function's signature today, and each writes RESULTS.md only via ``append_section``."""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = sorted((REPO / "bench").glob("*.py"))
# A script runs as ``python bench/X.py``; the other files are helpers the scripts import.
SCRIPTS = [p for p in FILES if 'if __name__ == "__main__":' in p.read_text()]
HELPERS = [p for p in FILES if p not in SCRIPTS]
PACKAGES = ("music_recsys", "harness", "bench", "jobs")


def test_the_benchmark_scripts_are_found():
    names = {p.stem for p in SCRIPTS}
    assert {"als_fit", "als_tuning", "cold_start", "serve", "orchestration"} <= names
    assert {"results", "serve_load", "serve_bundle"} <= {p.stem for p in HELPERS}


@pytest.mark.parametrize("helper", HELPERS, ids=lambda p: p.name)
def test_helper_imports(helper):
    importlib.import_module(f"bench.{helper.stem}")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_imports_and_answers_help(script, capsys, monkeypatch):
    """``python bench/X.py --help``, in this process: the script runs as ``__main__`` up to argparse, which
    prints the usage and exits 0 before any work (a subprocess per script would re-import the world)."""
    import runpy

    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the scripts put the checkout first; undone after
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert done.value.code in (0, None), f"{script.name} --help failed"
    assert out.startswith("usage:"), out[:200]
    assert "--no-write" in out, f"{script.name}: no --no-write flag (every script can skip RESULTS.md)"


def _imported_names(tree: ast.AST) -> dict[str, tuple[str, str]]:
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            for alias in node.names:
                names[alias.asname or alias.name] = (node.module, alias.name)
    return names


def _call_mismatches(script: Path) -> list[str]:
    """Calls of package functions (by their imported name) whose arguments the function no longer takes."""
    tree = ast.parse(script.read_text())
    imported = _imported_names(tree)
    problems = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported):
            continue
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            continue  # *args / **kwargs: not checkable statically
        module, name = imported[node.func.id]
        target = getattr(importlib.import_module(module), name)
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            continue
        try:
            signature.bind(*node.args, **{k.arg: None for k in node.keywords})
        except TypeError as exc:
            problems.append(f"{script.name}:{node.lineno}: {module}.{name}(...): {exc}")
    return problems


@pytest.mark.parametrize("script", FILES, ids=lambda p: p.name)
def test_script_calls_into_the_package_match_todays_signatures(script):
    assert not _call_mismatches(script)


def test_the_signature_check_catches_a_removed_keyword(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text(
        "from music_recsys.pipeline.spark import get_spark\n"
        "def f():\n    return get_spark('bench', checkpoint_dir='/tmp/x')\n"
    )
    (problem,) = _call_mismatches(broken)
    assert "get_spark" in problem and "checkpoint_dir" in problem


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_writes_results_only_through_append_section(script):
    text = script.read_text()
    assert "append_section(" in text, f"{script.name}: write its figures with bench.results.append_section"
    assert 'open("a")' not in text and 'RESULTS.md").open' not in text, f"{script.name} appends by hand"


def test_append_section_adds_a_dated_section_and_keeps_what_was_there(tmp_path):
    from bench.results import append_section

    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmarks\n")
    when = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    append_section("ALS fit: Spark vs implicit", "| a | b |\n|---|---|\n| 1 | 2 |\n\n", results=results, now=when)
    append_section("Second", "body", results=results, now=when)
    assert results.read_text() == (
        "# Benchmarks\n"
        "\n### ALS fit: Spark vs implicit — 2026-12-01 09:30 UTC\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
        "\n### Second — 2026-12-01 09:30 UTC\n\nbody\n"
    )


@pytest.mark.parametrize(("title", "body"), [("", "x"), ("two\nlines", "x"), ("Title", "  \n")])
def test_append_section_refuses_an_empty_title_or_body(tmp_path, title, body):
    from bench.results import append_section

    results = tmp_path / "RESULTS.md"
    with pytest.raises(ValueError, match="benchmark section"):
        append_section(title, body, results=results)
    assert not results.exists()
