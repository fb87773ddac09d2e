"""`make setup` installs the Spark side first and builds the class-data-sharing archive while the rest
installs: the packages it installs first must carry every module the archive's build imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]

# The build's application: what harness/cds.py's training run imports and every job it runs (cds.JOBS).
BUILD_IMPORTS = """
import json, sys
from pathlib import Path
from harness import cds
from music_recsys.data import generate
from music_recsys.pipeline.config import RunConfig
from music_recsys.pipeline.job import load_job
from music_recsys.pipeline.plan import write_plan
from music_recsys.pipeline.spark import get_spark, spark_conf, executor_java_options
import pyspark.sql, pyspark.ml.recommendation
for name in cds.JOBS:
    load_job(cds.JOBS_DIR / f"{name}.py")
RunConfig.from_params({"train_path": "t.parquet", "validation_path": "v.parquet", "test_path": "s.parquet"})
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names))))
"""


def spark_side() -> list[str]:
    line = re.search(r"^SPARK_SIDE := (.+)$", (REPO / "Makefile").read_text(), re.M)
    assert line, "the Makefile names no SPARK_SIDE"
    return line.group(1).split()


def reachable(names: list[str], *, extras: bool) -> set[str]:
    """The distributions pip installs for ``names``, recursively; with ``extras``, also what their optional
    extras would add."""
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            specs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:  # an extra that is not installed here: nothing below it loads
            continue
        for spec in specs:
            requirement = Requirement(spec)
            if extras or requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def missing_from(names: list[str]) -> dict[str, str]:
    """Distributions whose modules the build imports but ``names`` do not install. A module of an optional
    extra (jsonschema's format checkers, say) loads when it is there and is skipped when it is not."""
    done = subprocess.run([sys.executable, "-c", BUILD_IMPORTS], cwd=REPO, capture_output=True, text=True, check=True)
    modules = set(json.loads(done.stdout.strip().splitlines()[-1]))
    owners = metadata.packages_distributions()
    needed = {
        canonicalize_name(dist): module
        for module in modules - {"harness", "music_recsys"}
        if not module.startswith(("_", "music_recsys_jobs_"))
        for dist in owners.get(module, [])
    }
    assert {"pyspark", "numpy", "pandas", "jsonschema"} <= needed.keys()  # the check sees real imports
    required, optional = reachable(names, extras=False), reachable(names, extras=True)
    return {dist: module for dist, module in needed.items() if dist not in required and dist not in optional}


def test_the_spark_side_carries_every_module_the_archive_build_imports():
    assert not missing_from(spark_side()), "add these to the Makefile's SPARK_SIDE"


def test_a_list_without_a_needed_package_is_caught():
    missing = missing_from([name for name in spark_side() if name != "jsonschema"])
    assert {"jsonschema", "referencing", "rpds-py"} <= missing.keys() and "pyspark" not in missing, missing
