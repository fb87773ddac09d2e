"""The installed pyspark's Python files and jars are the same Spark release (pyspark-client trap), and
``check-install`` says which BLAS Spark's ALS gets: native where the machine has libblas.so.3, else Java."""

from __future__ import annotations

import ctypes
import os

import pyspark
import pytest

from music_recsys.pipeline.install_check import (
    SparkBlas,
    blas_report,
    check_spark_versions,
    is_native,
    main,
    mapped_libraries,
    probe_spark_blas,
    spark_blas_classes,
    spark_blas_line,
    spark_jar_version,
)
from music_recsys.pipeline.spark import JAVA_BLAS_OPTIONS, executor_java_options

OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread"


def test_pyspark_python_matches_the_jars():
    assert pyspark.__version__ == spark_jar_version()
    assert check_spark_versions().startswith("4.")


def test_pandas_is_below_3_for_pyspark():
    import pandas

    assert int(pandas.__version__.split(".")[0]) < 3


def test_native_blas_is_reported_with_the_files_it_loaded():
    found = SparkBlas(
        "dev.ludovic.netlib.blas.JNIBLAS",
        "dev.ludovic.netlib.lapack.JNILAPACK",
        (f"{OPENBLAS}/libblas.so.3", f"{OPENBLAS}/liblapack.so.3"),
    )
    assert blas_report(found) == (
        f"Spark BLAS: native (dev.ludovic.netlib.blas.JNIBLAS via {OPENBLAS}/libblas.so.3); "
        f"LAPACK: native (dev.ludovic.netlib.lapack.JNILAPACK via {OPENBLAS}/liblapack.so.3)"
    )


def test_java_blas_is_reported_with_the_package_to_install():
    found = SparkBlas("dev.ludovic.netlib.blas.VectorBLAS", "dev.ludovic.netlib.lapack.F2jLAPACK")
    assert blas_report(found) == (
        "Spark BLAS: Java (dev.ludovic.netlib.blas.VectorBLAS); LAPACK: Java (dev.ludovic.netlib.lapack.F2jLAPACK)"
        " — install libopenblas0-pthread (Debian, Ubuntu) for faster ALS fits at high ranks "
        '(docs/benchmarks.md, "Native BLAS")'
    )


def test_half_native_is_reported_per_library_and_still_advises():
    found = SparkBlas("dev.ludovic.netlib.blas.Java11BLAS", "dev.ludovic.netlib.lapack.JNILAPACK")
    line = blas_report(found)
    assert line.startswith(
        "Spark BLAS: Java (dev.ludovic.netlib.blas.Java11BLAS); LAPACK: native (dev.ludovic.netlib.lapack.JNILAPACK)"
    )
    assert "install libopenblas0-pthread" in line


def test_is_native_means_netlibs_jni_classes():
    assert is_native("dev.ludovic.netlib.blas.JNIBLAS") and is_native("dev.ludovic.netlib.lapack.JNILAPACK")
    assert not is_native("dev.ludovic.netlib.blas.VectorBLAS")
    assert not is_native("dev.ludovic.netlib.blas.F2jBLAS")


def test_mapped_libraries_reads_blas_and_lapack_files_from_a_memory_map():
    maps = "\n".join(
        [
            "7f0000000000-7f0000001000 r--p 00000000 08:01 1 /tmp/libnetlibblasjni123.so",
            f"7f0000001000-7f0000002000 r--p 00000000 08:01 2 {OPENBLAS}/libblas.so.3",
            f"7f0000002000-7f0000003000 r-xp 00001000 08:01 2 {OPENBLAS}/libblas.so.3",
            f"7f0000003000-7f0000004000 r--p 00000000 08:01 3 {OPENBLAS}/libopenblasp-r0.3.21.so",
            "7f0000004000-7f0000005000 rw-p 00000000 00:00 0 ",
            "7f0000005000-7f0000006000 rw-p 00000000 00:00 0 [heap]",
            f"7f0000006000-7f0000007000 r--p 00000000 08:01 4 {OPENBLAS}/liblapack.so.3",
        ]
    )
    assert mapped_libraries(maps) == (f"{OPENBLAS}/libblas.so.3", f"{OPENBLAS}/liblapack.so.3")
    assert mapped_libraries("7f0000004000-7f0000005000 rw-p 00000000 00:00 0\n") == ()


def _loads(library: str) -> bool:
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


@pytest.mark.spark
def test_this_machine_reports_the_blas_it_has():
    has_native = _loads("libblas.so.3") and _loads("liblapack.so.3")
    if not has_native and os.environ.get("CI"):
        raise RuntimeError("libblas.so.3 / liblapack.so.3 do not load (.ci/run installs libopenblas0-pthread)")
    found = probe_spark_blas()
    line = blas_report(found)
    if has_native:
        assert (found.blas, found.lapack) == ("dev.ludovic.netlib.blas.JNIBLAS", "dev.ludovic.netlib.lapack.JNILAPACK")
        assert sorted(p.rsplit("/", 1)[-1] for p in found.libraries) == ["libblas.so.3", "liblapack.so.3"]
        assert line.startswith("Spark BLAS: native (dev.ludovic.netlib.blas.JNIBLAS via /")
        assert "install" not in line
    else:
        assert not is_native(found.blas) and found.libraries == ()
        assert "install libopenblas0-pthread" in line


@pytest.mark.spark
def test_netlibs_properties_give_the_java_blas_a_machine_without_native_gets():
    # The jobs' flags add the Java Vector API module, so the Java BLAS is netlib's vectorised one.
    found = probe_spark_blas(f"{executor_java_options()} {JAVA_BLAS_OPTIONS}")
    assert found == SparkBlas("dev.ludovic.netlib.blas.VectorBLAS", "dev.ludovic.netlib.lapack.F2jLAPACK", ())


@pytest.mark.spark
def test_the_jobs_session_gets_the_probed_blas_and_one_blas_thread_per_call(spark):
    assert spark._jvm.java.lang.System.getenv("OPENBLAS_NUM_THREADS") == "1"  # RECSYS_SPARK_BLAS_THREADS
    found = probe_spark_blas()
    assert spark_blas_classes(spark._jvm) == (found.blas, found.lapack)


def test_a_jvm_that_does_not_start_is_reported_not_raised():
    line = spark_blas_line("-XX:+NoSuchFlagAnywhere")
    assert line.startswith("Spark BLAS: not checked (")
    assert "java with JVM flags '-XX:+NoSuchFlagAnywhere' did not start" in line


@pytest.mark.spark
def test_check_install_prints_the_versions_and_the_blas(capsys):
    assert main() == 0
    versions, blas = capsys.readouterr().out.splitlines()
    assert versions.startswith(f"ok: pyspark {pyspark.__version__} (Python files and jars agree)")
    assert blas.startswith("Spark BLAS: native (") or blas.startswith("Spark BLAS: Java (")
