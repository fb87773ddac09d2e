"""Installation checks: the Python side of pyspark must match the Spark jars it drives.

pyspark-client (pulled in by the Spark provider) writes its Python files into ``pyspark/``; when
its release differs from pyspark's, the Python files and the jars disagree. ``make setup`` runs this.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def spark_jar_version() -> str:
    """The Spark version of the jars shipped inside the installed pyspark package."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    for jar in sorted(jars.glob("spark-core_*.jar")):
        match = re.match(r"spark-core_[\d.]+-(.+)\.jar$", jar.name)
        if match:
            return match.group(1)
    raise RuntimeError(f"no spark-core jar under {jars}; pyspark is installed without its jars")


def check_spark_versions() -> str:
    import pyspark

    jar_version = spark_jar_version()
    if pyspark.__version__ != jar_version:
        raise RuntimeError(
            f"pyspark Python files are {pyspark.__version__} but the jars are {jar_version}: "
            "pin pyspark and pyspark-client to the same release in requirements.txt"
        )
    return jar_version


def main() -> int:
    version = check_spark_versions()
    print(f"ok: pyspark {version} (Python files and jars agree), Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
