"""README.md is a map and docs/ the pages it links: generated blocks are current, links and named files
exist, the stage table names every DAG task, and every command shown runs or at least parses."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from harness import docs
from music_recsys import settings
from music_recsys.cli import build_parser
from music_recsys.cli import main as cli_main
from music_recsys.pipeline.config import params_markdown

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
# Pages the README links that other engineers write; a link to one is allowed before it lands.
WRITTEN_ELSEWHERE = {"docs/serving.md", "docs/failures.md", "docs/airflow-ui.md"}
TOP = {p.name for p in REPO.iterdir()} - {".git", ".venv"}


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize(("path", "marker"), list(docs.BLOCKS), ids=lambda v: str(v))
def test_generated_block_is_current(path, marker):
    current = docs.block(path, marker).strip("\n")
    assert current == docs.BLOCKS[(path, marker)]().strip("\n"), f"{path} ({marker}) is stale: python -m harness.docs"


def test_the_params_page_is_music_recsys_params_output(capsys):
    assert cli_main(["params"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == params_markdown() == docs.block("docs/params.md", "params").strip("\n")
    assert "| `ranks` |" in printed


def test_the_layout_block_is_the_directory_tree(tmp_path):
    tree = docs.layout_tree()
    for folder in ("dags/", "jobs/", "music_recsys/", "  store/", "  pipeline/", "harness/", "bench/", "tests/"):
        assert f"\n{folder}" in tree, folder
    # Modules are listed under their folder, as the filesystem has them.
    pipeline = tree.split("\n  pipeline/")[1].split("\n")[1].split()
    assert pipeline == sorted(
        p.name for p in (REPO / "music_recsys" / "pipeline").glob("*.py") if p.name != "__init__.py"
    )
    # A folder the map does not describe fails generation (so the README cannot silently lag the tree).
    (tmp_path / "dags").mkdir()
    (tmp_path / "newstage").mkdir()
    with pytest.raises(KeyError, match="folder newstage/ has no line in harness/docs.py FOLDERS"):
        docs.layout_tree(tmp_path)


def test_stale_blocks_are_found_and_rewritten(tmp_path, monkeypatch):
    (tmp_path / "page.md").write_text("intro\n<!-- x:start -->\nold\n<!-- x:end -->\nrest\n")
    monkeypatch.setattr(docs, "BLOCKS", {("page.md", "x"): lambda: "| new |"})
    assert docs.stale_blocks(tmp_path) == ["page.md (x)"]
    assert docs.write_blocks(tmp_path) == ["page.md (x)"]
    assert (tmp_path / "page.md").read_text() == "intro\n<!-- x:start -->\n| new |\n<!-- x:end -->\nrest\n"
    assert docs.stale_blocks(tmp_path) == []


def test_readme_is_a_map():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail to a docs/ page"
    headings = [line[3:] for line in lines if line.startswith("## ")]
    assert headings == [
        "Two commands",
        "Stages, tasks and their code",
        "When a stage fails",
        "Scale",  # issue 23: measured figures at 1M, 10M and the full size
        "Layout",
        "Command line",
        "Docs",
    ]
    first = "\n".join(lines[:30])
    assert "make demo" in first and "make test" in first and "Java 17" in first


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_links_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            if _rel(path) not in WRITTEN_ELSEWHERE:
                broken.append(target)
            continue
        if anchor and path.suffix == ".md":
            slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}
            if anchor not in slugs:
                broken.append(f"{target} (no such heading)")
    assert not broken, f"{_rel(page)}: broken links {broken}"


# `dags/music_recsys_dag.py`, `tests/dags/test_scheduler.py::test_x`, `docker-compose.yaml`: repository paths.
PATH = re.compile(r"`([\w.-]+(?:/[\w.-]+)*/?)(?:::\w+)?`")


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_named_repository_files_exist(page):
    missing = []
    for token in PATH.findall(page.read_text()):
        first = token.split("/")[0]
        if first in TOP and ("/" in token or "." in token) and first not in ("data",):
            if not (REPO / token).exists():
                missing.append(token)
    assert not missing, f"{_rel(page)} names files that do not exist: {missing}"


def _dag_tasks() -> set[str]:
    tree = ast.parse((REPO / "dags" / "music_recsys_dag.py").read_text())
    tasks = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(
            (isinstance(d, ast.Call) and getattr(d.func, "id", "") == "task") or getattr(d, "id", "") == "task"
            for d in node.decorator_list
        ):
            tasks.add(node.name)
        if isinstance(node, ast.keyword) and node.arg == "task_id" and isinstance(node.value, ast.Constant):
            tasks.add(node.value.value)
        elif isinstance(node, ast.keyword) and node.arg == "task_id" and isinstance(node.value, ast.Attribute):
            from music_recsys import constants  # task_id=C.APPROVAL_TASK_ID: a task id the package names

            tasks.add(getattr(constants, node.value.attr))
    return tasks


def test_the_stage_table_names_every_dag_task_and_existing_files():
    text = README.read_text()
    table = text[text.index("| stage | task | code |") : text.index("What each task does")]
    named = set(re.findall(r"`([a-z_0-9]+)`", table))
    tasks = _dag_tasks()
    assert {"prepare", "ingest", "fit", "evaluate", "publish", "finish"} <= tasks  # the scan works
    assert not tasks - named, f"README stage table lacks DAG tasks {sorted(tasks - named)}"
    for path in re.findall(r"`((?:jobs|music_recsys|dags)/[\w/]+\.py)`", table):
        assert (REPO / path).is_file(), path


def _help_in_process(script: str) -> str:
    """``python SCRIPT --help`` run in this process (as ``__main__``, from the checkout): its usage text."""
    import contextlib
    import io
    import runpy

    out, argv, path = io.StringIO(), sys.argv, list(sys.path)
    sys.argv = [str(REPO / script), "--help"]
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
            runpy.run_path(str(REPO / script), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = argv, path
    assert done.value.code in (0, None), f"{script} --help exited {done.value.code}"
    return out.getvalue()


def test_readme_fast_commands_run(capsys):
    done = subprocess.run([sys.executable, "-m", "music_recsys.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "check-install" in done.stdout, done.stderr
    for sub in ("generate", "serve", "models", "params", "recommendations", "check-install"):
        with pytest.raises(SystemExit) as exit_:
            cli_main([sub, "--help"])
        assert exit_.value.code == 0, sub
    capsys.readouterr()
    assert cli_main(["params"]) == 0
    assert capsys.readouterr().out.strip() == params_markdown()
    # The inline ones: `python jobs/fit_als.py --help`, `python bench/serve.py --help`.
    inline = re.findall(r"`python ([\w/.]+\.py) --help`", README.read_text())
    assert len(inline) >= 2
    for script in inline:
        assert _help_in_process(script).startswith("usage:"), script


def _commands(page: Path) -> list[list[str]]:
    """Every command in the page's bash blocks, as argv (continuations joined, comments dropped)."""
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", page.read_text(), re.S):
        pending = ""
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            pending = f"{pending}\n{line}" if pending else line
            try:
                argv = shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on on the next line
                continue
            pending = ""
            if argv:
                commands.append(argv)
        assert not pending, f"{_rel(page)}: unterminated command {pending!r}"
    return commands


def _airflow_parser():
    from airflow.cli import cli_parser

    return cli_parser.get_parser()


# Commands that need what a test cannot start here (a Docker engine, a running API server); an installed
# tool among them must at least be installed.
NOT_RUN = {"docker", "curl", "schemathesis"}
INSTALLED_TOOLS = {"schemathesis"}


def _check(argv: list[str], page: str) -> None:
    program = Path(argv[0]).name
    if program == "make":
        done = subprocess.run(["make", "-n", *argv[1:]], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, f"{page}: {argv}: {done.stderr}"
    elif program == "music-recsys":
        try:
            build_parser().parse_args(argv[1:])
        except SystemExit as exit_:  # --help
            assert exit_.code == 0, f"{page}: {argv} does not parse"
    elif program == "airflow":
        _airflow_parser().parse_args(argv[1:])
    elif program in ("python", "python3"):
        script = [a for a in argv[1:] if not a.startswith("-")][0]
        if script.endswith(".py"):
            assert _help_in_process(script).startswith("usage:"), f"{page}: {argv}"
        else:  # a module (`python -m harness.docs`): its own process, as written
            done = subprocess.run([sys.executable, *argv[1:3], "--help"], cwd=REPO, capture_output=True, text=True)
            assert done.returncode == 0, f"{page}: {argv}: {done.stderr[-500:]}"
    elif program == "spark-submit":
        assert (REPO / ".venv" / "bin" / "spark-submit").exists() or Path(sys.executable).with_name(
            "spark-submit"
        ).exists()
        assert "--class" in argv and argv[argv.index("--class") + 1].startswith("org.apache.spark.sql.connect.")
    elif program == "cp":
        assert (REPO / argv[1]).exists(), f"{page}: {argv}: {argv[1]} does not exist"
    elif program == "export" or re.match(r"^[A-Z_]+=", argv[0]):
        for assignment in argv[1:] if program == "export" else argv:
            name = assignment.split("=", 1)[0]
            assert name.startswith(("AIRFLOW", "PATH")) or name in settings.SETTINGS, f"{page}: unknown {name}"
    else:
        assert program in NOT_RUN, f"{page}: add a check for {argv[0]!r} to tests/harness/test_docs.py"
        if program in INSTALLED_TOOLS:
            assert Path(sys.executable).with_name(program).exists(), f"{page}: {program} is not installed in .venv"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_command_shown_parses(page):
    commands = _commands(page)
    for argv in commands:
        _check(argv, _rel(page))
    if page == README:
        assert ["make", "demo"] in commands and ["make", "test"] in commands
