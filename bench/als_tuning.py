"""Benchmark: which Spark settings make our ALS fit faster, each measured against ``implicit`` in one run.

Every variant runs in a fresh Spark session (its own JVM, so JVM flags and serializers really change),
fits once to warm up the JIT, then times one fit of the same data with the same rank / regParam /
alpha / iterations / thread count (best of ``--repeats`` fits). Factors are brought back to numpy
inside the timed section, as in the fit job. ``implicit`` is timed in the same run with its default
conjugate-gradient solver and with exact Cholesky solves (Spark's solver). Quality: validation MAP of
every fit, same code.

    .venv/bin/pip install -r requirements-bench.txt
    .venv/bin/python bench/als_tuning.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.als_fit import add_fit_arguments, implicit_fit, indexed, validation_map  # noqa: E402
from bench.results import append_section  # noqa: E402
from music_recsys import constants as C  # noqa: E402
from music_recsys.data.generate import GeneratorConfig, generate  # noqa: E402
from music_recsys.model.als import build_als  # noqa: E402
from music_recsys.pipeline.spark import executor_java_options, spark_conf  # noqa: E402

# name -> (ALS keyword overrides, Spark conf overrides). The first is the fit job as it was before
# this benchmark (Spark's storage levels, JVM defaults); later ones change one thing at a time unless
# the name says otherwise.
VARIANTS: dict[str, tuple[dict, dict]] = {
    "job before tuning": ({}, {}),
    "10 blocks (Spark default)": ({"blocks": 10}, {}),
    "1 block": ({"blocks": 1}, {}),
    "no checkpoints": ({"checkpointInterval": -1}, {}),
    "MEMORY_ONLY storage": ({"intermediateStorageLevel": "MEMORY_ONLY", "finalStorageLevel": "MEMORY_ONLY"}, {}),
    "Kryo serializer": ({}, {"spark.serializer": "org.apache.spark.serializer.KryoSerializer"}),
    "driver memory 6g": ({}, {"spark.driver.memory": "6g"}),
    "Java Vector API BLAS": ({}, {"spark.driver.extraJavaOptions": "--add-modules=jdk.incubator.vector"}),
    "parallel GC": ({}, {"spark.driver.extraJavaOptions": "-XX:+UseParallelGC"}),
    "arrow factors": ({"collect": "arrow"}, {}),
    "Cholesky (nonnegative=False, as implicit)": ({"nonnegative": False}, {}),
    "job after tuning (MEMORY_ONLY, ParallelGC, Vector API)": (
        {"intermediateStorageLevel": "MEMORY_ONLY", "finalStorageLevel": "MEMORY_ONLY"},
        {"spark.driver.extraJavaOptions": executor_java_options()},
    ),
    "job after tuning, nonnegative=False": (
        {"intermediateStorageLevel": "MEMORY_ONLY", "finalStorageLevel": "MEMORY_ONLY", "nonnegative": False},
        {"spark.driver.extraJavaOptions": executor_java_options()},
    ),
}


def spark_variant(
    data: str,
    rank: int,
    reg: float,
    alpha: float,
    iters: int,
    threads: int,
    seed: int,
    als_over: dict,
    conf: dict,
    repeats: int,
) -> dict:
    """Runs in a child process: one Spark session, warm-up fit, timed fit."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    z = np.load(data)
    tu, ti, counts = z["tu"], z["ti"], z["counts"]
    n_users, n_items = int(z["n_users"]), int(z["n_items"])
    builder = SparkSession.builder.master(f"local[{threads}]").appName("bench.als_tuning")
    # The jobs' settings without the tuned JVM flags: the variants add those one at a time.
    before = {k: v for k, v in spark_conf().items() if not k.endswith("extraJavaOptions")}
    for key, value in {**before, **conf}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    spark.sparkContext.setCheckpointDir(str(REPO / "data" / "bench-checkpoints"))
    import pandas as pd

    frame = pd.DataFrame({C.USER_IDX: tu.astype("int32"), C.ITEM_IDX: ti.astype("int32"), C.RATING: counts})
    ratings = spark.createDataFrame(frame).repartition(threads).cache()
    ratings.count()
    over = dict(als_over)
    blocks = over.pop("blocks", threads)
    collect = over.pop("collect", "rows")

    def fit(max_iter: int):
        # The fit job's ALS as it was before tuning (NNLS, Spark's default storage), then the variant.
        als = build_als(rank, reg, alpha, max_iter, seed, blocks, nonnegative=True, storage_level="MEMORY_AND_DISK")
        model = als.setParams(**over).fit(ratings)
        users, items = np.zeros((n_users, rank), np.float32), np.zeros((n_items, rank), np.float32)
        for frame_, out in ((model.userFactors, users), (model.itemFactors, items)):
            if collect == "arrow":
                pdf = frame_.toPandas()
                out[pdf["id"].to_numpy()] = np.stack(pdf["features"].to_numpy())
            else:
                for row in frame_.collect():
                    out[row["id"]] = row["features"]
        return users, items

    fit(2)  # warm-up: JIT, BLAS loading
    times = []
    for _ in range(repeats):  # best of `repeats`: the machine's noise is +-20 % between fits
        started = time.perf_counter()
        users, items = fit(iters)
        times.append(time.perf_counter() - started)
    spark.stop()
    return {"seconds": min(times), "users": users, "items": items}


def main(
    users: int,
    items: int,
    mean_tracks: float,
    rank: int,
    reg: float,
    alpha: float,
    iters: int,
    threads: int,
    k: int,
    seed: int,
    repeats: int,
    only: list[str] | None,
    write: bool,
) -> None:
    cfg = GeneratorConfig(
        users=users, items=items, holdout_users=max(2, users // 20), mean_tracks=mean_tracks, seed=seed
    )
    splits, _ = generate(cfg)
    tu, ti, counts, n_users, n_items, vu, vi = indexed(splits)
    work = REPO / "data" / "bench-als-tuning"
    work.mkdir(parents=True, exist_ok=True)
    data = work / "ratings.npz"
    np.savez(data, tu=tu, ti=ti, counts=counts, n_users=n_users, n_items=n_items)

    rows = []
    for name, (als_over, conf) in VARIANTS.items():
        if only and name not in only:
            continue
        out = work / "variant.npz"
        spec = json.dumps([str(data), rank, reg, alpha, iters, threads, seed, als_over, conf, repeats])
        code = (
            f"import json, sys, numpy as np; sys.path.insert(0, {str(REPO)!r}); "
            "from bench.als_tuning import spark_variant; "
            "r = spark_variant(*json.loads(sys.argv[1])); np.savez(sys.argv[2], **r)"
        )
        subprocess.run([sys.executable, "-c", code, spec, str(out)], check=True, cwd=REPO)
        r = np.load(out)
        rows.append((f"Spark: {name}", float(r["seconds"]), validation_map(r["users"], r["items"], tu, ti, vu, vi, k)))
        print(rows[-1], flush=True)
    for name, use_cg in (("implicit: conjugate gradient (default)", True), ("implicit: Cholesky", False)):
        secs = float("inf")
        for _ in range(repeats):
            iu, ii, s = implicit_fit(
                tu, ti, counts, n_users, n_items, rank, reg, alpha, iters, threads, seed, use_cg=use_cg
            )
            secs = min(secs, s)
        rows.append((name, secs, validation_map(iu, ii, tu, ti, vu, vi, k)))
        print(rows[-1], flush=True)

    reference = next(s for n, s, _ in rows if n == "implicit: conjugate gradient (default)")
    baseline = rows[0][1]
    table = ["| fit | seconds | vs first row | vs implicit (CG) | val MAP |", "|---|---|---|---|---|"]
    for name, secs, map_ in rows:
        table.append(f"| {name} | {secs:.2f} | {secs / baseline:.2f}x | **{secs / reference:.1f}x** | {map_:.4f} |")
    print("\n".join(table))
    if write:
        import implicit
        import pyspark

        append_section(
            "ALS tuning: Spark settings vs implicit",
            f"{platform.machine()}, {os.cpu_count()} cpus, Java {platform.java_ver()[0] or '17'}, pyspark "
            f"{pyspark.__version__}, implicit {implicit.__version__}; {len(tu):,} train rows, "
            f"{n_users:,} users × {n_items:,} items, rank {rank}, regParam {reg:g}, alpha {alpha:g}, "
            f"{iters} iterations, {threads} threads; each Spark row a fresh session, timed after a warm-up "
            f"fit, best of {repeats} fits, factors brought to numpy inside the time; MAP on validation, k={k}.\n\n"
            + "\n".join(table)
            + "\n",
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_fit_arguments(p)
    p.add_argument("--repeats", type=int, default=3, help="timed fits per variant; the best is reported")
    p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    main(**vars(p.parse_args()))
