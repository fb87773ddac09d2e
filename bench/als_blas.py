"""Benchmark: Spark's implicit ALS fit with native BLAS (netlib over the system's OpenBLAS) against Spark's
Java BLAS, and against the ``implicit`` library, at several ranks on the same ratings.

A JVM picks its BLAS once, when netlib first loads, so each side is its own Spark session in its own
process: native with the jobs' JVM flags (once with OpenBLAS's default threads, once with one BLAS thread
per call), and Java with netlib's properties that refuse native code added
(``pipeline.spark.JAVA_BLAS_OPTIONS``). Each session reports the BLAS and LAPACK classes and the environment
it got, and the run stops if a side did not get what it is named for. The sessions stay up and fit in
turn, one at a time, their order reversed every other run (A B C, then C B A), so every ratio is measured
side by side. The fit is the project's ``build_als`` (implicit, unconstrained), timed after a warm-up fit,
factors collected inside the time; ``implicit`` (CG and Cholesky) gets the same ratings, rank,
regularisation, alpha, iterations and threads. Quality: validation MAP@k of each, and how far the sides'
factors are from each other.

Data: MovieLens-100K (from the ``recbole`` wheel, as ``bench/movielens.py``) and the project's generator
(defaults: the ~0.9M-row ALS comparison set of ``bench/als_fit.py``).

    .venv/bin/pip install -r requirements-bench.txt -c constraints.txt
    .venv/bin/python bench/als_blas.py
    .venv/bin/python bench/als_blas.py --data generated --users 400 --items 300 --ranks 4 --iters 2 \\
        --repeats 1 --no-write   # a smoke run
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.als_fit import implicit_fit, indexed, validation_map  # noqa: E402
from bench.movielens import fetch_ml100k, ml100k_splits  # noqa: E402
from bench.results import append_section  # noqa: E402
from music_recsys.data.generate import GeneratorConfig, generate  # noqa: E402
from music_recsys.pipeline.install_check import is_native, spark_blas_classes  # noqa: E402
from music_recsys.pipeline.spark import JAVA_BLAS_OPTIONS  # noqa: E402

DATA = ("movielens-100k", "generated")
SOLVERS = ("cg", "cholesky")


@dataclass(frozen=True)
class Side:
    """One Spark session's BLAS: native or Java, and the BLAS threads per call (0: one per core)."""

    label: str
    native: bool
    blas_threads: int = 1

    def threads(self) -> int:
        return self.blas_threads or os.cpu_count() or 1


# Under local[N] the driver JVM runs N tasks, and OpenBLAS's pthread build gives each call as many threads
# as the machine has cores unless told otherwise; the jobs tell it one (RECSYS_SPARK_BLAS_THREADS). The
# first side is what a JVM gets without that setting.
SIDES = {
    "native": Side("native, a BLAS thread per core", True, 0),
    "native1": Side("native, 1 BLAS thread", True, 1),
    "java": Side("Java", False),
}


def load_data(name: str, args: argparse.Namespace) -> dict:
    """Indexed train ratings and validation pairs of one data set (``bench.als_fit.indexed``)."""
    if name == "movielens-100k":
        lines = fetch_ml100k(REPO / "data" / "cache")
        splits = ml100k_splits(lines, holdout_users=200, seed=args.seed)
        label = "MovieLens-100K"
    else:
        cfg = GeneratorConfig(
            users=args.users,
            items=args.items,
            holdout_users=max(2, args.users // 20),
            mean_tracks=args.mean_tracks,
            seed=args.seed,
        )
        splits, _ = generate(cfg)
        label = "generated"
    tu, ti, counts, n_users, n_items, vu, vi = indexed(splits)
    return {"label": label, "tu": tu, "ti": ti, "counts": counts, "n_users": n_users, "n_items": n_items,
            "vu": vu, "vi": vi}  # fmt: skip


def spark_side(
    conn, side: str, java_options: str, blas_threads: int, threads: int, files: dict[str, str], work: str
) -> None:
    """One Spark session with one BLAS, fitting on request: ``(data, rank, reg, alpha, iters, seed)`` in,
    ``(seconds, factors file)`` out; ``None`` ends it. Runs in its own process (spawned)."""
    os.environ["RECSYS_SPARK_BLAS_THREADS"] = str(blas_threads)  # get_spark hands it to the JVM
    os.environ["RECSYS_SPARK_MASTER"] = f"local[{threads}]"
    os.environ["RECSYS_SPARK_JAVA_OPTIONS"] = java_options
    import pandas as pd

    from music_recsys import constants as C
    from music_recsys.model.als import build_als
    from music_recsys.pipeline.spark import get_spark, set_checkpoint_dir

    spark = get_spark(f"bench.als_blas.{side}")
    set_checkpoint_dir(spark, str(Path(work) / f"checkpoints-{side}"))  # as the fit job does
    ratings, shapes = {}, {}
    for name, path in files.items():
        data = np.load(path)
        frame = pd.DataFrame({C.USER_IDX: data["tu"].astype("int32"), C.ITEM_IDX: data["ti"].astype("int32"),
                              C.RATING: data["counts"]})  # fmt: skip
        ratings[name] = spark.createDataFrame(frame).repartition(threads).cache()
        ratings[name].count()
        shapes[name] = (int(data["n_users"]), int(data["n_items"]))
    conn.send((*spark_blas_classes(spark._jvm), spark._jvm.java.lang.System.getenv("OPENBLAS_NUM_THREADS")))
    warmed = False
    while (request := conn.recv()) is not None:
        name, rank, reg, alpha, iters, seed = request
        if not warmed:  # JIT, BLAS loading: once per session, on the first data set asked for
            build_als(rank, reg, alpha, 2, seed, threads, nonnegative=False).fit(ratings[name]).itemFactors.count()
            warmed = True
        started = time.perf_counter()
        model = build_als(rank, reg, alpha, iters, seed, threads, nonnegative=False).fit(ratings[name])
        n_users, n_items = shapes[name]
        users, items = np.zeros((n_users, rank), np.float32), np.zeros((n_items, rank), np.float32)
        for row in model.userFactors.collect():
            users[row["id"]] = row["features"]
        for row in model.itemFactors.collect():
            items[row["id"]] = row["features"]
        seconds = time.perf_counter() - started
        out = Path(work) / f"factors-{side}-{name}-{rank}.npz"
        np.savez(out, users=users, items=items)
        conn.send((seconds, str(out)))
    spark.stop()


def start_sides(args: argparse.Namespace, files: dict[str, str], work: str) -> dict:
    """The Spark sides, each checked to have the BLAS and environment it is named for."""
    from music_recsys.pipeline.spark import executor_java_options

    base = executor_java_options()
    context = mp.get_context("spawn")
    sides = {}
    for side in args.sides:
        spec = SIDES[side]
        options = base if spec.native else f"{base} {JAVA_BLAS_OPTIONS}"
        parent, child = context.Pipe()
        process = context.Process(
            target=spark_side, args=(child, side, options, spec.threads(), args.threads, files, work)
        )
        process.start()
        blas, lapack, blas_threads = parent.recv()
        sides[side] = {"conn": parent, "process": process, "blas": blas, "lapack": lapack, "options": options,
                       "blas_threads": blas_threads}  # fmt: skip
        print(f"{side}: BLAS {blas}, LAPACK {lapack}, OPENBLAS_NUM_THREADS={blas_threads}", flush=True)
        if spec.native != (is_native(blas) and is_native(lapack)) or blas_threads != str(spec.threads()):
            stop_sides(sides)
            fix = "install libopenblas0-pthread (Debian)" if spec.native else f"check {JAVA_BLAS_OPTIONS}"
            raise SystemExit(
                f"the {side} Spark session got BLAS {blas}, LAPACK {lapack}, OPENBLAS_NUM_THREADS={blas_threads}: {fix}"
            )
    return sides


def stop_sides(sides: dict) -> None:
    for side in sides.values():
        side["conn"].send(None)
        side["process"].join(timeout=120)


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖b‖ over the whole factor matrix (0 for the same factors)."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def measure(args: argparse.Namespace) -> tuple[list[dict], dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="als_blas-") as work:
        data, files = {}, {}
        for name in args.data:
            data[name] = load_data(name, args)
            files[name] = str(Path(work) / f"{name}.npz")
            d = data[name]
            np.savez(files[name], tu=d["tu"], ti=d["ti"], counts=d["counts"], n_users=d["n_users"],
                     n_items=d["n_items"])  # fmt: skip
            print(f"{name}: {len(d['tu']):,} train rows, {d['n_users']:,} users × {d['n_items']:,} items", flush=True)
        sides = start_sides(args, files, work)
        try:
            results: dict[tuple, dict] = {}
            for repeat in range(args.repeats):
                order = args.sides if repeat % 2 == 0 else args.sides[::-1]  # A B C, then C B A
                for name in args.data:
                    d = data[name]
                    for rank in args.ranks:
                        cell = results.setdefault((name, rank), {"seconds": {s: [] for s in (*args.sides, *SOLVERS)}})
                        for side in order:
                            sides[side]["conn"].send((name, rank, args.reg, args.alpha, args.iters, args.seed))
                            seconds, path = sides[side]["conn"].recv()
                            cell["seconds"][side].append(seconds)
                            with np.load(path) as f:
                                cell[side] = (f["users"], f["items"])
                            print(f"{name} rank {rank} {side}: {seconds:.2f} s", flush=True)
                        for solver in args.implicit_solvers:
                            # implicit's own advice: its threads, each with a one-thread BLAS.
                            with threadpool_limits(limits=1, user_api="blas"):
                                users, items, seconds = implicit_fit(
                                    d["tu"], d["ti"], d["counts"], d["n_users"], d["n_items"], rank, args.reg,
                                    args.alpha, args.iters, args.threads, args.seed, use_cg=solver == "cg",
                                )  # fmt: skip
                            cell["seconds"][solver].append(seconds)
                            cell[solver] = (users, items)
                            print(f"{name} rank {rank} implicit {solver}: {seconds:.2f} s", flush=True)
        finally:
            stop_sides(sides)
        for (name, rank), cell in results.items():
            d = data[name]
            row = {"data": name, "label": d["label"], "rows": len(d["tu"]), "users": d["n_users"],
                   "items": d["n_items"], "rank": rank, "seconds": cell["seconds"]}  # fmt: skip
            for key in (*args.sides, *args.implicit_solvers):
                row[f"map_{key}"] = validation_map(*cell[key], d["tu"], d["ti"], d["vu"], d["vi"], args.k)
            first = cell[args.sides[0]]
            row["factor_difference"] = max(
                [relative_difference(cell[side][m], first[m]) for side in args.sides[1:] for m in (0, 1)] or [0.0]
            )
            rows.append(row)
    blas = {side: {k: sides[side][k] for k in ("blas", "lapack", "blas_threads")} for side in args.sides}
    return rows, blas


def _runs(values: list[float]) -> str:
    median = statistics.median(values)
    return f"{median:.2f}" if len(values) == 1 else f"{median:.2f} ({', '.join(f'{v:.1f}' for v in values)})"


def table(rows: list[dict], sides: list[str], solvers: list[str]) -> str:
    """The results table: seconds (median, and each run), ratios of medians, MAP per fit."""
    natives = [side for side in sides if SIDES[side].native]
    java = "java" in sides
    head = ["data", "train rows", "users × items", "rank"] + [f"Spark {SIDES[s].label} s" for s in sides]
    head += [f"Java / {SIDES[s].label}" for s in natives] if java else []
    head += [f"implicit {s} s" for s in solvers] + [f"fastest Spark / implicit {s}" for s in solvers]
    head += [f"MAP {SIDES[s].label}" for s in sides] + [f"MAP implicit {s}" for s in solvers]
    head += [f"factors vs {SIDES[sides[0]].label}"] if len(sides) > 1 else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        med = {key: statistics.median(values) for key, values in r["seconds"].items() if values}
        fastest = min(med[s] for s in sides)
        cells = [r["label"], f"{r['rows']:,}", f"{r['users']:,} × {r['items']:,}", str(r["rank"])]
        cells += [_runs(r["seconds"][s]) for s in sides]
        cells += [f"**{med['java'] / med[s]:.2f}x**" for s in natives] if java else []
        cells += [_runs(r["seconds"][s]) for s in solvers]
        cells += [f"{fastest / med[s]:.1f}x" for s in solvers]
        cells += [f"{r[f'map_{s}']:.4f}" for s in (*sides, *solvers)]
        cells += [f"{r['factor_difference']:.1e}"] if len(sides) > 1 else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(rows: list[dict], blas: dict, args: argparse.Namespace, minutes: float, load: tuple[float, float]) -> str:
    import pyspark

    try:
        import implicit

        implicit_version = f"implicit {implicit.__version__}"
    except ImportError:
        implicit_version = "implicit not installed"
    setups = "; ".join(
        f"{SIDES[side].label}: BLAS `{b['blas']}`, LAPACK `{b['lapack']}`"
        + (f" (`{JAVA_BLAS_OPTIONS}`)" if not SIDES[side].native else "")
        + (f", OPENBLAS_NUM_THREADS={b['blas_threads']}" if SIDES[side].native else "")
        for side, b in blas.items()
    )
    return (
        f"{platform.machine()}, {os.cpu_count()} cpus, Java {_java_version()}, pyspark {pyspark.__version__}, "
        f"{implicit_version}, numpy {np.__version__}. Spark `build_als` (implicit, unconstrained), "
        f"local[{args.threads}] with {args.threads} blocks; `implicit` with num_threads={args.threads} "
        f"and numpy's BLAS at one thread (its advice). "
        f"regParam {args.reg:g}, alpha {args.alpha:g}, {args.iters} iterations, seed {args.seed}; "
        f"each Spark side its own session, timed after one warm-up fit, factors collected inside the time; "
        f"{args.repeats} run(s) per fit, the sides' order reversed every other run; seconds are medians (each "
        f"run in brackets); ratios are of medians. Sides: {setups}. MAP@{args.k} on validation, played items "
        f"excluded; factors vs the first side = the largest ‖F_side − F_first‖ / ‖F_first‖ over the other "
        f"sides, users' and items' factors. The whole run took {minutes:.1f} min; 1-min load average "
        f"{load[0]:.1f} at its start, "
        f"{load[1]:.1f} at its end (other processes share the machine).\n\n"
        + table(rows, args.sides, args.implicit_solvers)
        + "\n"
    )


def _java_version() -> str:
    import subprocess

    java = str(Path(os.environ["JAVA_HOME"]) / "bin" / "java") if os.environ.get("JAVA_HOME") else "java"
    done = subprocess.run([java, "-version"], capture_output=True, text=True)
    first = (done.stderr or done.stdout).splitlines()[0] if (done.stderr or done.stdout) else "?"
    return first.split('"')[1] if '"' in first else first


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", choices=DATA, default=list(DATA), help="data sets to fit on")
    p.add_argument(
        "--sides",
        nargs="+",
        choices=list(SIDES),
        default=list(SIDES),
        help="Spark sessions: native BLAS with a thread per core per call, native with one, Java BLAS",
    )
    p.add_argument("--users", type=int, default=25_000, help="generated data: users")
    p.add_argument("--items", type=int, default=20_000, help="generated data: items")
    p.add_argument("--mean-tracks", type=float, default=38.0, help="generated data: mean tracks per user")
    p.add_argument("--ranks", type=int, nargs="+", default=[20, 64, 128], help="ALS ranks")
    p.add_argument("--reg", type=float, default=0.1, help="regParam (Spark) and regularization (implicit)")
    p.add_argument("--alpha", type=float, default=10.0, help="confidence scale")
    p.add_argument("--iters", type=int, default=10, help="ALS iterations")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="Spark cores and implicit threads")
    p.add_argument("--repeats", type=int, default=2, help="fits per configuration, alternating the sides' order")
    p.add_argument(
        "--implicit-solvers", nargs="*", choices=SOLVERS, default=list(SOLVERS), help="implicit's solvers to run"
    )
    p.add_argument("--k", type=int, default=100, help="recommendations per user for MAP")
    p.add_argument("--seed", type=int, default=0, help="split, generator and model seed")
    p.add_argument("--no-write", dest="write", action="store_false", help="do not append to bench/RESULTS.md")
    args = p.parse_args(argv)
    if args.repeats < 1 or min(args.ranks) < 1 or args.iters < 1:
        p.error("--repeats, --ranks and --iters must be at least 1")
    return args


def main(args: argparse.Namespace) -> int:
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    rows, blas = measure(args)
    load = (load_before, os.getloadavg()[0])
    text = report(rows, blas, args, (time.perf_counter() - started) / 60, load)
    print(text)
    if args.write:
        append_section("ALS fit: native BLAS vs Java BLAS vs implicit, by rank", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(parse_args()))
