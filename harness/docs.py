"""The generated parts of README.md and docs/: each is the output of one function, kept between markers.

``python -m harness.docs`` rewrites every block from its source (the params on ``RunConfig``, the settings
module, the metric catalogue, the results store's SQLAlchemy tables, the directory tree);
``python -m harness.docs --check`` lists the stale ones and exits 1. ``tests/harness/test_docs.py`` runs
the same check, so a doc that no longer says what the code does fails the suite.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# One line per folder of the layout tree; a folder that is not here fails the tree's generation.
FOLDERS = {
    "dags": "wiring only: the DAG `music_recsys`",
    "jobs": "one PySpark application (a CLI with `run(spark, ...)`) per Spark stage",
    "music_recsys": "the shipped package",
    "music_recsys/data": "play counts in: readers, drift check, MSD-like generator",
    "music_recsys/model": "ALS, the count transforms, fold-in of new listeners",
    "music_recsys/evaluation": "metrics and their catalogue, scoring, selection, exact top-k, Annoy search",
    "music_recsys/store": "results store and its migrations, model registry, bundles, batch lists, retention",
    "music_recsys/pipeline": "params and config, plan, tasks, publish, approval, batch tasks, Spark, report",
    "music_recsys/serving": "the FastAPI recommendation API",
    "music_recsys/ui": "the Airflow UI plugin's pages",
    "harness": "local Airflow, Spark and PostgreSQL for tests, benchmarks, the demo (not shipped)",
    "plugins": "Airflow's plugins folder",
    "docker": "images of the compose stack",
    "bench": "benchmarks run by hand; figures in `bench/RESULTS.md`",
    "tests": "mirrors the tree",
    "docs": "one page per topic",
}
# Not part of the map: caches, and the checkout's data root (``make demo`` writes it; never committed).
SKIP = {"__pycache__", "node_modules"}
SKIP_AT_TOP = {"data"}


def _git_ignored(paths: list[Path]) -> set[Path]:
    """Those of ``paths`` git ignores (test artifacts, Spark's warehouse): never part of the map."""
    if not paths:
        return set()
    done = subprocess.run(
        ["git", "check-ignore", *map(str, paths)], cwd=paths[0].parent, capture_output=True, text=True
    )
    return {Path(line) for line in done.stdout.splitlines()}


def _folders(root: Path, *, top: bool = False) -> list[Path]:
    skip = SKIP | (SKIP_AT_TOP if top else set())
    candidates = [
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in skip and not p.name.endswith(".egg-info")
    ]
    ignored = _git_ignored(candidates)
    return sorted(p for p in candidates if p not in ignored)


def layout_tree(repo: Path = REPO) -> str:
    """The README's layout: every folder of the checkout (the package's sub-packages too), what it holds,
    and for code folders the modules in it."""
    lines = ["```"]

    def line(path: Path, depth: int) -> None:
        rel = str(path.relative_to(repo))
        if rel not in FOLDERS:
            raise KeyError(f"folder {rel}/ has no line in harness/docs.py FOLDERS; add what it holds")
        indent = "  " * depth
        lines.append(f"{indent + path.name + '/':<26}{FOLDERS[rel]}")
        modules = sorted(p.name for p in path.glob("*.py") if p.name != "__init__.py")
        if modules and rel != "tests":
            lines.append(f"{indent}  {' '.join(modules)}")

    for top in _folders(repo, top=True):
        line(top, 0)
        if top.name == "music_recsys":
            for sub in _folders(top):
                line(sub, 1)
        elif top.name == "tests":
            subs = [p.name for p in _folders(top)]
            stages = [p.name for p in _folders(top / "music_recsys")] if (top / "music_recsys").is_dir() else []
            lines[-1] += f" ({', '.join(subs)}; music_recsys/{{{','.join(stages)}}})"
    lines.append("```")
    return "\n".join(lines)


def schema_markdown() -> str:
    """The results store's tables as they are declared in ``music_recsys.store.results``."""
    from music_recsys.store.results import TABLES

    out: list[str] = []
    for name, table in TABLES.items():
        out += [f"#### `{name}`", "", "| column | type | key | null | meaning |", "|---|---|---|---|---|"]
        for column in table.columns:
            key = "primary" if column.primary_key else ("index" if column.index else "")
            null = "yes" if column.nullable and not column.primary_key else "no"
            comment = (column.comment or "").replace("|", r"\|")
            out.append(f"| `{column.name}` | {column.type} | {key} | {null} | {comment} |")
        out.append("")
    return "\n".join(out).rstrip("\n")


def _params() -> str:
    from music_recsys.pipeline.config import params_markdown

    return params_markdown()


def _environment() -> str:
    from music_recsys.settings import environment_markdown

    return environment_markdown()


def _metrics() -> str:
    from music_recsys.evaluation.catalogue import metrics_markdown

    return metrics_markdown()


# (file, marker) -> the function whose output sits between <!-- marker:start --> and <!-- marker:end -->.
BLOCKS: dict[tuple[str, str], Callable[[], str]] = {
    ("README.md", "layout"): layout_tree,
    ("docs/params.md", "params"): _params,
    ("docs/environment.md", "environment"): _environment,
    ("docs/metrics.md", "metrics"): _metrics,
    ("docs/results-store.md", "schema"): schema_markdown,
}


def _span(text: str, marker: str, where: str) -> tuple[int, int]:
    start, end = f"<!-- {marker}:start -->\n", f"\n<!-- {marker}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"{where}: the markers <!-- {marker}:start --> / <!-- {marker}:end --> are missing")
    return text.index(start) + len(start), text.index(end)


def block(path: str, marker: str, repo: Path = REPO) -> str:
    """What ``path`` holds between its ``marker`` markers now."""
    text = (repo / path).read_text()
    a, b = _span(text, marker, path)
    return text[a:b]


def stale_blocks(repo: Path = REPO) -> list[str]:
    """The blocks whose text differs from their generator's output."""
    return [
        f"{path} ({marker})"
        for (path, marker), generate in BLOCKS.items()
        if block(path, marker, repo).strip("\n") != generate().strip("\n")
    ]


def write_blocks(repo: Path = REPO) -> list[str]:
    """Rewrite every stale block in place; return the ones rewritten."""
    rewritten = []
    for (path, marker), generate in BLOCKS.items():
        text = (repo / path).read_text()
        a, b = _span(text, marker, path)
        fresh = generate().strip("\n")
        if text[a:b].strip("\n") != fresh:
            (repo / path).write_text(text[:a] + fresh + text[b:])
            rewritten.append(f"{path} ({marker})")
    return rewritten


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only list stale blocks; exit 1 if there are any")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_blocks()
        for name in stale:
            print(f"stale: {name} (run: python -m harness.docs)")
        return 1 if stale else 0
    for name in write_blocks():
        print(f"rewrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
