"""The layers are a contract (pyproject.toml [tool.importlinter]): an import that points up a layer fails
the suite the day it is written, and so would one that a contract failed to see."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})  # fmt: skip


def test_every_layer_contract_is_kept():
    done = _lint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The same check on a copy of the package with one store module importing the pipeline."""
    import shutil

    for name in ("music_recsys", "jobs", "dags", "plugins"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    registry = tmp_path / "music_recsys" / "store" / "registry.py"
    registry.write_text(registry.read_text() + "\nfrom music_recsys.pipeline.config import RunConfig  # noqa\n")
    done = _lint(tmp_path)
    assert done.returncode == 1
    assert "music_recsys.store.registry -> music_recsys.pipeline.config" in done.stdout


def test_no_module_of_the_package_imports_itself_through_others():
    """No import cycle, not even one hidden inside functions (grimp counts every import statement)."""
    import grimp

    graph = grimp.build_graph("music_recsys")
    cycles = {
        tuple(sorted((module, imported)))
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if graph.find_shortest_chain(importer=imported, imported=module)
    }
    assert cycles == set()
