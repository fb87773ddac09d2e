"""Installation checks: the Python side of pyspark must match the Spark jars it drives, and which BLAS
Spark's ALS gets on this machine.

pyspark-client (pulled in by the Spark provider) writes its Python files into ``pyspark/``; when
its release differs from pyspark's, the Python files and the jars disagree. Spark's implicit ALS spends
its time in BLAS and LAPACK calls, which run natively only when the JVM finds the system's
``libblas.so.3`` / ``liblapack.so.3`` (docs/benchmarks.md, "Native BLAS"). ``make setup`` runs this.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What Spark's ALS calls: ``ml.linalg.BLAS.nativeBLAS()`` for the normal equations (dspr, daxpy) and
# ``mllib.linalg.LAPACK.nativeLAPACK()`` for their Cholesky solve (dppsv). Each is netlib's JNI class when
# the JVM can dlopen the system library, else a pure-Java class (VectorBLAS, F2jLAPACK).
SPARK_BLAS = ("org.apache.spark.ml.linalg.BLAS", "nativeBLAS")
SPARK_LAPACK = ("org.apache.spark.mllib.linalg.LAPACK", "nativeLAPACK")
NATIVE_BLAS_PACKAGE = "libopenblas0-pthread"


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


@dataclass(frozen=True)
class SparkBlas:
    """The BLAS and LAPACK classes Spark's ALS gets in one JVM, and the native libraries that JVM mapped."""

    blas: str
    lapack: str
    libraries: tuple[str, ...] = ()


def is_native(class_name: str) -> bool:
    """netlib's native implementations are its JNI classes (JNIBLAS, JNILAPACK)."""
    return class_name.rsplit(".", 1)[-1].startswith("JNI")


def mapped_libraries(maps: str, prefixes: tuple[str, ...] = ("libblas", "liblapack")) -> tuple[str, ...]:
    """The files in a process's memory map (the text of ``/proc/PID/maps``) whose name starts with one of
    ``prefixes``, each once, in the order of the map (by address)."""
    found: list[str] = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            path = fields[5].strip()
            if Path(path).name.startswith(prefixes) and path not in found:
                found.append(path)
    return tuple(found)


def blas_report(found: SparkBlas) -> str:
    """One line for ``check-install``: native or Java for BLAS and LAPACK, with the library each loaded."""

    def part(class_name: str, prefix: str) -> str:
        if not is_native(class_name):
            return f"Java ({class_name})"
        library = next((p for p in found.libraries if Path(p).name.startswith(prefix)), None)
        return f"native ({class_name} via {library})" if library else f"native ({class_name})"

    line = f"Spark BLAS: {part(found.blas, 'libblas')}; LAPACK: {part(found.lapack, 'liblapack')}"
    if not (is_native(found.blas) and is_native(found.lapack)):
        line += (
            f" — install {NATIVE_BLAS_PACKAGE} (Debian, Ubuntu) for faster ALS fits at high ranks "
            '(docs/benchmarks.md, "Native BLAS")'
        )
    return line


def spark_blas_classes(jvm: Any) -> tuple[str, str]:
    """Class names of the BLAS and LAPACK Spark's ALS calls, asked in a running JVM (a py4j gateway's
    ``jvm``, or a Spark session's ``_jvm``). The accessors are methods of Scala objects, reached
    through their ``MODULE$`` field."""

    def module(name: str) -> Any:
        return jvm.java.lang.Class.forName(name + "$").getField("MODULE$").get(None)

    blas = getattr(module(SPARK_BLAS[0]), SPARK_BLAS[1])()
    lapack = getattr(module(SPARK_LAPACK[0]), SPARK_LAPACK[1])()
    return blas.getClass().getName(), lapack.getClass().getName()


def probe_spark_blas(java_options: str | None = None) -> SparkBlas:
    """Which BLAS Spark's ALS gets here: a bare JVM on pyspark's own jars with the jobs' JVM flags
    (``RECSYS_SPARK_JAVA_OPTIONS``, or ``java_options``) asks Spark's accessors. A bare JVM, not a
    SparkSession: the same classes and flags, in about a second instead of several."""
    import pyspark
    from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway

    from music_recsys.pipeline.spark import executor_java_options

    jars = Path(pyspark.__file__).parent / "jars"
    py4j_jars = sorted(jars.glob("py4j-*.jar"))
    if not py4j_jars:
        raise RuntimeError(f"no py4j jar under {jars}; pyspark is installed without its jars")
    options = executor_java_options() if java_options is None else java_options
    # The java Spark's launcher runs: JAVA_HOME's when it is set, else the one on PATH.
    java = str(Path(os.environ["JAVA_HOME"]) / "bin" / "java") if os.environ.get("JAVA_HOME") else "java"
    try:
        port, proc = launch_gateway(
            jarpath=str(py4j_jars[-1]),
            classpath=str(jars / "*"),
            javaopts=shlex.split(options),
            die_on_exit=True,  # the JVM ends when this process closes its stdin
            java_path=java,
            return_proc=True,
        )
    except Exception as exc:
        raise RuntimeError(f"{java} with JVM flags {options!r} did not start ({type(exc).__name__}: {exc})") from exc
    gateway = JavaGateway(gateway_parameters=GatewayParameters(port=port, auto_convert=False))
    try:
        blas, lapack = spark_blas_classes(gateway.jvm)
        maps = Path(f"/proc/{proc.pid}/maps")
        libraries = mapped_libraries(maps.read_text()) if maps.is_file() else ()
        return SparkBlas(blas, lapack, libraries)
    finally:
        gateway.shutdown()
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except Exception:
            proc.kill()
            proc.wait()


def spark_blas_line(java_options: str | None = None) -> str:
    """The report line; a JVM that cannot start is reported, not raised (the check only informs)."""
    try:
        return blas_report(probe_spark_blas(java_options))
    except Exception as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return f"Spark BLAS: not checked ({first_line})"


def main() -> int:
    version = check_spark_versions()
    print(f"ok: pyspark {version} (Python files and jars agree), Python {sys.version.split()[0]}")
    print(spark_blas_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
