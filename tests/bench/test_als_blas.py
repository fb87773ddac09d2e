"""bench/als_blas.py: the table gives medians, each run and ratios of medians; a tiny run fits both Spark
sides (native and Java BLAS, each with the classes it is named for) and ``implicit``."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import als_blas

REPO = Path(__file__).resolve().parents[2]


def test_the_table_gives_medians_each_run_and_ratios_of_medians():
    row = {
        "label": "generated", "rows": 894_119, "users": 25_000, "items": 20_000, "rank": 128,
        "seconds": {"native1": [100.0, 120.0, 110.0], "java": [330.0, 300.0, 360.0], "cg": [11.0, 9.0, 10.0]},
        "map_native1": 0.03214, "map_java": 0.03216, "map_cg": 0.02801, "factor_difference": 3.2e-7,
    }  # fmt: skip
    lines = als_blas.table([row], ["native1", "java"], ["cg"]).splitlines()
    assert lines[0] == (
        "| data | train rows | users × items | rank | Spark native, 1 BLAS thread s | Spark Java s "
        "| Java / native, 1 BLAS thread | implicit cg s | fastest Spark / implicit cg | MAP native, 1 BLAS thread "
        "| MAP Java | MAP implicit cg | factors vs native, 1 BLAS thread |"
    )
    assert lines[2] == (
        "| generated | 894,119 | 25,000 × 20,000 | 128 | 110.00 (100.0, 120.0, 110.0) | 330.00 (330.0, 300.0, 360.0) "
        "| **3.00x** | 10.00 (11.0, 9.0, 10.0) | 11.0x | 0.0321 | 0.0322 | 0.0280 | 3.2e-07 |"
    )


def test_java_is_compared_with_every_native_side_and_one_run_has_no_brackets():
    row = {
        "label": "MovieLens-100K", "rows": 89_670, "users": 943, "items": 1_677, "rank": 20,
        "seconds": {"native": [8.0], "native1": [4.0], "java": [5.0]},
        "map_native": 0.2, "map_native1": 0.2, "map_java": 0.2, "factor_difference": 0.0,
    }  # fmt: skip
    head, _, line = als_blas.table([row], ["native", "native1", "java"], []).splitlines()
    assert "| Java / native, a BLAS thread per core | Java / native, 1 BLAS thread |" in head
    assert line == (
        "| MovieLens-100K | 89,670 | 943 × 1,677 | 20 | 8.00 | 4.00 | 5.00 | **0.62x** | **1.25x** "
        "| 0.2000 | 0.2000 | 0.2000 | 0.0e+00 |"
    )


def test_relative_difference_is_zero_for_the_same_factors():
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert als_blas.relative_difference(a, a) == 0.0
    assert als_blas.relative_difference(a * 1.01, a) == pytest.approx(0.01, rel=1e-5)


def test_the_defaults_are_the_measured_configuration_and_nonsense_is_refused(capsys):
    args = als_blas.parse_args([])
    assert (args.ranks, args.iters, args.repeats, args.data) == ([20, 64, 128], 10, 2, ["movielens-100k", "generated"])
    assert args.sides == ["native", "native1", "java"]
    assert args.implicit_solvers == ["cg", "cholesky"] and args.write
    with pytest.raises(SystemExit):
        als_blas.parse_args(["--repeats", "0"])
    assert "--repeats, --ranks and --iters must be at least 1" in capsys.readouterr().err


@pytest.mark.spark
@pytest.mark.slow
def test_a_tiny_run_fits_both_blas_sides_with_the_same_result():
    try:
        ctypes.CDLL("libblas.so.3")
    except OSError:
        if os.environ.get("CI"):
            raise
        pytest.skip("no libblas.so.3: the native side would be refused (apt-get install libopenblas0-pthread)")
    # No implicit solver: the tests do not install requirements-bench.txt.
    done = subprocess.run(
        [sys.executable, "bench/als_blas.py", "--data", "generated", "--users", "200", "--items", "150",
         "--ranks", "4", "--iters", "1", "--repeats", "1", "--sides", "native1", "java", "--implicit-solvers",
         "--no-write"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "java: BLAS dev.ludovic.netlib.blas.VectorBLAS, LAPACK dev.ludovic.netlib.lapack.F2jLAPACK" in out
    assert (
        "native1: BLAS dev.ludovic.netlib.blas.JNIBLAS, LAPACK dev.ludovic.netlib.lapack.JNILAPACK, "
        "OPENBLAS_NUM_THREADS=1" in out
    )
    assert "native: " not in out  # only the sides asked for
    head, row = [line for line in out.splitlines() if line.startswith("| ")]  # the separator is "|---|…"
    cells = dict(zip(head.strip("|").split(" | "), row.strip("|").split(" | "), strict=True))
    cells = {key.strip(): value.strip() for key, value in cells.items()}
    assert cells["data"] == "generated" and cells["rank"] == "4"
    assert cells["Java / native, 1 BLAS thread"].endswith("x**")
    # The same MAP with either BLAS: the same factors up to rounding.
    assert cells["MAP native, 1 BLAS thread"] == cells["MAP Java"]
    assert float(cells["factors vs native, 1 BLAS thread"]) < 1e-4
