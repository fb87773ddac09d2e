"""Benchmark: the whole DAG at the study's full size (issue 23) — per-stage wall time and peak memory, the
bundle, the server, and Spark's ALS fit against ``implicit``.

The data set is ``music-recsys generate --preset study --scale S`` (1.1M users, 385K tracks, ~48M train
plays, 10K hold-out users at S = 1; S scales all four). The DAG runs in this process (``dag.test``) with
one grid point (rank 20, regParam 0.1, alpha 10, 10 iterations), k = 500, a trimmed Annoy sweep and batch
recommendations on, while a sampler thread reads the RSS of this process (where the Python tasks run) and
of its children (spark-submit's driver JVM and its Python processes) every ``--sample-seconds``; each
task's peak is the highest sample inside its start..end window from the metadata DB. Then the published
bundle is served (``music-recsys serve --bundle``): time to ready, RSS, q/s and latency at 16 clients,
recall@10 against the exact top 10. Last, the ALS fit on the same train matrix and threads: Spark (as
``bench/als_fit.py`` times it) against ``implicit`` with CG (its default) and Cholesky (Spark's solver),
at ~10M rows (scale 0.2) and at the run's scale.

    .venv/bin/python bench/full_size.py                          # the full size: hours on 2 cores
    .venv/bin/python bench/full_size.py --scale 0.001 --k 100 --serve-seconds 3 --no-write   # a smoke run
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.als_fit import implicit_fit, spark_fit, validation_map  # noqa: E402
from bench.results import append_section  # noqa: E402
from bench.scaling import one_point_conf, task_seconds  # noqa: E402
from bench.serve_load import Server, run_load  # noqa: E402
from harness.airflow import DAG_ID, run_dag_summary  # noqa: E402
from harness.demo import demo_env  # noqa: E402
from music_recsys import constants as C  # noqa: E402
from music_recsys.data.generate import STUDY_TRAIN_ROWS  # noqa: E402

TEN_MILLION_SCALE = 0.2  # 0.2 of the study: ~9.6M train rows, the size the 10M scaling figures were measured at
MB = 1e6
KEYS = ("own", "children", "java")  # the sampled series: this process, its descendants, the largest JVM


def megabytes(value: int | None) -> str:
    return "—" if value is None else f"{value / MB:,.0f}"


# --- memory: a sampler of this process and its children ---------------------------------------------------


@dataclass
class Samples:
    """RSS over time: this process (Airflow and the Python tasks), all its descendants (Spark), the largest JVM."""

    times: list[float] = field(default_factory=list)
    own: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    largest_java: list[int] = field(default_factory=list)

    def peak(self, start: float, end: float) -> dict[str, int | None]:
        """Highest sample of each series in [start, end] (seconds since the epoch); None when no sample fell
        inside (a task shorter than the interval)."""
        inside = [i for i, t in enumerate(self.times) if start <= t <= end]
        if not inside:
            return {"own": None, "children": None, "java": None}
        return {
            "own": max(self.own[i] for i in inside),
            "children": max(self.children[i] for i in inside),
            "java": max(self.largest_java[i] for i in inside),
        }


class RssSampler(threading.Thread):
    """Samples RSS every ``interval`` seconds until ``stop``; psutil comes with Airflow."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples = Samples()
        self._done = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._done.is_set():
            children, java = 0, 0
            for child in me.children(recursive=True):
                try:
                    rss = child.memory_info().rss
                    name = child.name()
                except psutil.Error:  # it ended between the listing and the read
                    continue
                children += rss
                if name == "java":
                    java = max(java, rss)
            self.samples.times.append(time.time())
            self.samples.own.append(me.memory_info().rss)
            self.samples.children.append(children)
            self.samples.largest_java.append(java)
            self._done.wait(self.interval)

    def stop(self) -> Samples:
        self._done.set()
        self.join()
        return self.samples


def task_windows(dag_id: str, run_id: str) -> dict[str, list[tuple[float, float]]]:
    """(start, end) in seconds since the epoch of every finished task instance, by task id."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    windows: dict[str, list[tuple[float, float]]] = {}
    with create_session() as session:
        for ti in session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id):
            if ti.start_date and ti.end_date:
                windows.setdefault(ti.task_id, []).append((ti.start_date.timestamp(), ti.end_date.timestamp()))
    return windows


def tree_rss(pid: int) -> int:
    """RSS of a process and its descendants, bytes."""
    import psutil

    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


# --- the data set ---------------------------------------------------------------------------------------


def driver_memory(train_rows: float) -> str:
    """The bench's driver heap: the default 2g up to 10M train rows, 8g at the study's 48M, the line between
    (the heaps ``bench/stage_replay.py`` measured; docs/benchmarks.md#driver-memory)."""
    extra = max(0.0, train_rows - 10_000_000) * 6 / (STUDY_TRAIN_ROWS - 10_000_000)
    return f"{math.ceil(2 + extra)}g"


def ensure_data(root: Path, scale: float) -> tuple[Path, dict]:
    """``study_<scale>`` under the data root, generated (in a child, its peak RSS from ``wait4``) unless
    there already; the manifest, with the generation's wall time and peak RSS when it ran now."""
    import json

    folder = root / f"study_{scale:g}"
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        return folder, {**json.loads(manifest_path.read_text()), "generated_now": False}
    command = [sys.executable, "-m", "music_recsys.data.generate", "--preset", "study", "--scale", f"{scale:g}"]
    print(f"generating {folder} ({' '.join(command[1:])})", flush=True)
    started = time.perf_counter()
    child = subprocess.Popen([*command, "--out", str(folder)])
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"generating {folder} failed with exit code {child.returncode}; see the output above")
    manifest = json.loads(manifest_path.read_text())
    manifest.update(
        generated_now=True,
        wall_seconds=time.perf_counter() - started,
        peak_rss=usage.ru_maxrss * 1024,  # Linux reports KiB
        disk_bytes=sum(manifest["bytes"].values()),
    )
    return folder, manifest


# --- the DAG --------------------------------------------------------------------------------------------


def dag_conf(folder: str, args: argparse.Namespace) -> dict:
    return one_point_conf(
        folder,
        max_iter=10,
        k=args.k,
        annoy_trees=args.annoy_trees,
        annoy_search_k=args.annoy_search_k,
        annoy_max_queries=args.annoy_max_queries,
        batch_k=args.batch_k,
    )


def run_stages(conf: dict, interval: float) -> dict:
    """The DAG once, sampled; per task: wall seconds, peak RSS of this process and of the Spark children."""
    from music_recsys.run_folders import RunLayout, read_json, run_dir

    sampler = RssSampler(interval)
    sampler.start()
    started = time.perf_counter()
    try:
        summary = run_dag_summary(conf)
    finally:
        samples = sampler.stop()
    total = time.perf_counter() - started
    run_id = summary["run_id"]
    seconds = task_seconds(DAG_ID, run_id)
    stages = []
    for task_id, windows in sorted(task_windows(DAG_ID, run_id).items(), key=lambda item: min(w[0] for w in item[1])):
        peaks = [samples.peak(start, end) for start, end in windows]
        stages.append(
            {
                "task": task_id,
                "seconds": seconds.get(task_id, 0.0),
                **{key: max((p[key] for p in peaks if p[key] is not None), default=None) for key in KEYS},
            }
        )
    layout = RunLayout(run_dir(run_id))
    ingest = read_json(layout.stage_result("ingest"))
    batch_path = layout.stage_result("batch_recommendations")
    return {
        "summary": summary,
        "total_seconds": total,
        "stages": stages,
        "train_rows": ingest["splits"]["train"]["rows_written"],
        "batch": read_json(batch_path) if batch_path.exists() else None,
        "samples": len(samples.times),
    }


# --- the server -----------------------------------------------------------------------------------------


def measure_server(bundle: Path, args: argparse.Namespace, log_dir: Path) -> dict:
    """Serve ``bundle``: seconds to /healthz 200, RSS when ready and after the load, the load at ``--clients``."""
    from urllib.parse import quote

    import numpy as np

    from bench.serve_bundle import Truth

    truth = Truth(bundle)
    users = np.flatnonzero(np.any(np.asarray(truth.arrays["user_factors"]) != 0, axis=1))
    paths = [f"/users/{quote(str(u), safe='')}/recommendations?k={args.serve_k}" for u in truth.user_ids]
    started = time.perf_counter()
    server = Server(["--bundle", str(bundle)], log_dir / "full_size_serve.log")
    try:
        server.wait_ready(timeout=args.ready_timeout)
        ready_seconds = time.perf_counter() - started
        ready_rss = tree_rss(server.process.pid)
        load_args = SimpleNamespace(
            clients=args.clients,
            recall_users=args.recall_users,
            timeout=args.timeout,
            warmup_seconds=args.warmup_seconds,
            seconds=args.serve_seconds,
        )
        load = run_load(server.url, paths, users, load_args, seed=args.seed)
        loaded_rss = tree_rss(server.process.pid)
    finally:
        server.stop()
    return {
        "ready_seconds": ready_seconds,
        "ready_rss": ready_rss,
        "loaded_rss": loaded_rss,
        "qps": load.qps,
        "p50_ms": load.percentile_ms(50),
        "p99_ms": load.percentile_ms(99),
        "requests": load.requests,
        "errors": load.errors,
        "error_examples": load.error_examples,
        "recall": truth.recall(load.samples, args.serve_k),
    }


# --- ALS: Spark against implicit on the same matrix -------------------------------------------------------


def indexed_splits(folder: Path):
    """Train as 0-based user and track indices (pyarrow, chunk by chunk: no 48M Python strings), and the
    validation rows whose user and track occur in train: ``bench.als_fit.indexed``'s result."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    train = pq.read_table(folder / "train.parquet")
    users, tracks = pc.unique(train[C.USER_ID]), pc.unique(train[C.TRACK_ID])
    tu = pc.index_in(train[C.USER_ID], value_set=users).to_numpy().astype(np.int32)
    ti = pc.index_in(train[C.TRACK_ID], value_set=tracks).to_numpy().astype(np.int32)
    counts = train[C.COUNT].to_numpy().astype(np.float32)
    del train
    validation = pq.read_table(folder / "validation.parquet")
    vu = pc.index_in(validation[C.USER_ID], value_set=users)
    vi = pc.index_in(validation[C.TRACK_ID], value_set=tracks)
    known = pc.and_(pc.is_valid(vu), pc.is_valid(vi))
    vu, vi = pc.filter(vu, known).to_numpy(), pc.filter(vi, known).to_numpy()
    return tu, ti, counts, len(users), len(tracks), vu.astype(np.int64), vi.astype(np.int64)


def compare_als(folder: Path, args: argparse.Namespace) -> dict:
    """One matrix, three fits with the DAG's grid point: Spark, implicit CG, implicit Cholesky; MAP@k each."""
    tu, ti, counts, n_users, n_items, vu, vi = indexed_splits(folder)
    rank, reg, alpha, iters, threads = 20, 0.1, 10.0, 10, os.cpu_count() or 2
    shape = (tu, ti, counts, n_users, n_items, rank, reg, alpha, iters, threads, args.seed)
    row = {"rows": len(tu), "users": n_users, "items": n_items, "threads": threads}
    su, si, row["spark_s"] = spark_fit(*shape, threads)
    row["spark_map"] = validation_map(su, si, tu, ti, vu, vi, args.k)
    for label, use_cg in (("cg", True), ("cholesky", False)):
        iu, ii, row[f"{label}_s"] = implicit_fit(*shape, use_cg=use_cg)
        row[f"{label}_map"] = validation_map(iu, ii, tu, ti, vu, vi, args.k)
    print(f"ALS at {len(tu):,} rows: {row}", flush=True)
    return row


# --- the report -----------------------------------------------------------------------------------------


def report(args: argparse.Namespace, data: dict, run: dict | None, served: dict | None, als: list[dict]) -> str:
    cfg = data["config"]
    lines = [
        f"{platform.machine()}, {os.cpu_count()} cpus, Spark local[*], driver memory {args.driver_memory}; "
        f"`music-recsys generate --preset study --scale {args.scale:g}`: {cfg['users']:,} users, "
        f"{cfg['items']:,} tracks, {data['stats']['train']['rows']:,} train rows, {cfg['holdout_users']:,} hold-out "
        f"users, {sum(data['bytes'].values()) / MB:,.1f} MB of parquet"
        + (
            f", generated in {data['wall_seconds']:.0f} s at a peak RSS of {data['peak_rss'] / MB:,.0f} MB."
            if data.get("generated_now")
            else " (generated earlier)."
        ),
    ]
    if run:
        rows = run["train_rows"]
        lines += [
            "",
            f"DAG: one grid point (rank 20, regParam 0.1, alpha 10, 10 iterations), k = {args.k}, Annoy trees "
            f"{args.annoy_trees} × search_k {args.annoy_search_k} ({args.annoy_max_queries} queries), batch_k "
            f"{args.batch_k}; {run['total_seconds']:.0f} s in all (dag.test, tasks in sequence). Peak RSS sampled "
            f"every {args.sample_seconds:g} s ({run['samples']} samples): the Airflow process, where the Python "
            "tasks run (it keeps what earlier tasks freed, so its figure is an upper bound), and its children "
            "(spark-submit's driver JVM with its Python driver and workers; the JVM alone in brackets); — = the "
            "task was shorter than the interval.",
            "",
            "| task | wall s | µs per train row | Airflow process MB | Spark children MB (JVM) |",
            "|---|---|---|---|---|",
        ]
        for stage in run["stages"]:
            lines.append(
                f"| {stage['task']} | {stage['seconds']:.1f} | {stage['seconds'] / rows * 1e6:.2f} | "
                f"{megabytes(stage['own'])} | {megabytes(stage['children'])} ({megabytes(stage['java'])}) |"
            )
        model = run["summary"]["model"]
        bundle = Path(model["path"])
        from music_recsys.store.retention import folder_bytes

        recommendations = bundle / "recommendations"
        lines += [
            "",
            f"Validation MAP {run['summary']['best_validation']['map']:.4f} (popularity "
            f"{run['summary']['popularity_validation']['map']:.4f}). Bundle {model['version']}: "
            f"{folder_bytes(bundle) / MB:,.1f} MB, of which batch recommendations "
            f"{(folder_bytes(recommendations) if recommendations.exists() else 0) / MB:,.1f} MB"
            + (f" ({run['batch'].get('rows', 0):,} rows)" if run["batch"] else "")
            + ".",
        ]
    if served:
        lines += [
            "",
            f"Server on that bundle: ready in {served['ready_seconds']:.1f} s, RSS {served['ready_rss'] / MB:,.0f} MB "
            f"ready, {served['loaded_rss'] / MB:,.0f} MB after the load; {args.clients} clients for "
            f"{args.serve_seconds:g} s, k = {args.serve_k}: **{served['qps']:.0f} q/s**, "
            f"p50 {served['p50_ms']:.1f} ms, p99 {served['p99_ms']:.1f} ms, {served['errors']} errors of "
            f"{served['requests']:,}, recall@{args.serve_k} {served['recall']:.3f} against exact.",
        ]
    if als:
        lines += [
            "",
            f"ALS fit, the same train matrix and {als[0]['threads']} threads (rank 20, reg 0.1, alpha 10, 10 "
            "iterations; Spark as `bench/als_fit.py` times it: after a warm-up fit, factors collected inside the "
            f"time); MAP@{args.k} on validation, played tracks excluded.",
            "",
            "| train rows | users × tracks | Spark s | implicit CG s | implicit Cholesky s | Spark / CG | "
            "Spark / Cholesky | MAP Spark / CG / Cholesky |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in als:
            lines.append(
                f"| {row['rows']:,} | {row['users']:,} × {row['items']:,} | {row['spark_s']:.1f} | {row['cg_s']:.1f} | "
                f"{row['cholesky_s']:.1f} | **{row['spark_s'] / row['cg_s']:.1f}x** | "
                f"**{row['spark_s'] / row['cholesky_s']:.1f}x** | {row['spark_map']:.4f} / {row['cg_map']:.4f} / "
                f"{row['cholesky_map']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    env = demo_env()
    scales = sorted({*(args.als_scales if args.als_scales is not None else [TEN_MILLION_SCALE]), args.scale})
    if args.no_als:
        scales = []
    if args.driver_memory == "auto":
        args.driver_memory = driver_memory(STUDY_TRAIN_ROWS * max([args.scale, *scales]))
    env["RECSYS_DRIVER_MEMORY"] = args.driver_memory
    os.environ.update(env)
    root = Path(env["RECSYS_DATA_ROOT"])
    if not (args.no_dag or args.no_serve):
        import aiohttp  # noqa: F401  the load's client: fail now, not after an hour of DAG (requirements-bench.txt)
    folder, data = ensure_data(root, args.scale)
    print(f"data: {data['stats']['train']['rows']:,} train rows in {folder}", flush=True)
    run = served = None
    if not args.no_dag:
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], check=True, env=env, stdout=subprocess.DEVNULL
        )
        run = run_stages(dag_conf(folder.name, args), args.sample_seconds)
        for stage in run["stages"]:
            print(f"  {stage['task']:<28} {stage['seconds']:8.1f} s", flush=True)
        print(report(args, data, run, None, []), flush=True)  # the DAG's table, whatever happens next
        if not args.no_serve:
            served = measure_server(Path(run["summary"]["model"]["path"]), args, root)
            print(f"served: {served}", flush=True)
    als = [compare_als(ensure_data(root, scale)[0], args) for scale in scales]
    text = report(args, data, run, served, als)
    print(text)
    if args.write:
        append_section(f"Full size: the whole DAG at {args.scale:g} of the study's size", text)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the study's size (1 = 48M train rows)")
    p.add_argument("--k", type=int, default=500, help="the DAG's k (evaluation, fast search) and MAP@k of the ALS fits")
    p.add_argument("--batch-k", type=int, default=50, help="batch recommendations per user (0 = off)")
    p.add_argument("--annoy-trees", type=int, nargs="+", default=[10, 30], help="the trimmed Annoy sweep's n_trees")
    p.add_argument(
        "--annoy-search-k", type=int, nargs="+", default=[10_000, 50_000], help="the trimmed sweep's search_k"
    )
    p.add_argument("--annoy-max-queries", type=int, default=500, help="validation users the sweep queries")
    p.add_argument(
        "--driver-memory",
        default="auto",
        help="RECSYS_DRIVER_MEMORY of every Spark stage; auto = 2g to 10M train rows, 8g at 48M (measured)",
    )
    p.add_argument("--sample-seconds", type=float, default=0.5, help="RSS sampling interval")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients of the server")
    p.add_argument("--serve-seconds", type=float, default=30.0, help="length of the load run")
    p.add_argument("--warmup-seconds", type=float, default=2.0, help="load before the measured run, not counted")
    p.add_argument("--serve-k", type=int, default=10, help="list length the clients ask for")
    p.add_argument("--timeout", type=float, default=10.0, help="a request slower than this counts as an error")
    p.add_argument("--recall-users", type=int, default=500, help="served lists checked against exact")
    p.add_argument("--ready-timeout", type=float, default=1800.0, help="seconds the server may take to load")
    p.add_argument(
        "--als-scales",
        type=float,
        nargs="*",
        default=None,
        help=f"scales of the Spark vs implicit fits besides --scale (default {TEN_MILLION_SCALE}: ~10M rows)",
    )
    p.add_argument("--no-als", action="store_true", help="skip the Spark vs implicit fits")
    p.add_argument("--no-dag", action="store_true", help="skip the DAG run (and the server)")
    p.add_argument("--no-serve", action="store_true", help="skip the server")
    p.add_argument("--seed", type=int, default=0, help="seed of the load and the ALS fits")
    p.add_argument("--no-write", dest="write", action="store_false", help="do not append to bench/RESULTS.md")
    args = p.parse_args(argv)
    if not 0 < args.scale <= 1:
        p.error(f"--scale {args.scale}: give a fraction of the study's size in (0, 1]")
    return args


if __name__ == "__main__":
    raise SystemExit(main(parse_args()))
