"""Benchmark: the serving API under load over loopback — Annoy vs exact, and a champion switch under load.

Builds a bundle at the study's scale (385K tracks × rank 20: the fast-search benchmark's synthetic
clustered nonnegative factors, synthetic users drawn the same way with ~30 played tracks each) and its
Annoy index at an operating point measured here (recall@50 vs exact, angular_ip, 4 x k candidates
re-ranked), starts the real server (``music-recsys serve --bundle``) as a subprocess and drives it with
16 concurrent keep-alive clients (aiohttp, one event loop) asking ``/users/{id}/recommendations?k=10`` for
random known users: q/s, p50/p99 latency, errors, and recall@10 of the served lists against the exact top
10 computed here from the bundle's own arrays (played tracks excluded). Then the same with
``exact=true``, in the same run and on the same server. Last, a hot reload: the server follows a SQLite
model registry (``--results-url --poll-seconds 0.5``) and the champion is switched half-way through a
load run; every request must still succeed.

    .venv/bin/python bench/serve.py                                          # 385K tracks, 30 s a run
    .venv/bin/python bench/serve.py --items 20000 --seconds 3 --no-write     # a quick check
    .venv/bin/python bench/serve.py --model-bundle data/models/<version>     # also a real bundle
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from urllib.parse import quote

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.fast_search import clustered_factors  # noqa: E402
from music_recsys.evaluation.search import operating_point, sweep  # noqa: E402
from music_recsys.evaluation.topk import top_k  # noqa: E402
from music_recsys.store.bundle import load_arrays, read_labels, verify_bundle, write_bundle  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
SERVE = Path(sys.executable).with_name("music-recsys")  # the console script next to this interpreter
TARGET_RECALL, TARGET_SPEEDUP, TARGET_P99_MS = 0.95, 2.0, 25.0


# --- the synthetic bundles ---------------------------------------------------------------------------


def synthetic_arrays(n_items: int, n_users: int, rank: int, played: int, seed: int) -> dict[str, np.ndarray]:
    """Item and user factors from the fast-search generator; each user's played tracks drawn with
    probability proportional to the track's factor norm (its popularity), ~``played`` distinct each."""
    items, users = clustered_factors(n_items, n_users, rank, seed)
    rng = np.random.default_rng(seed + 1)
    norms = np.linalg.norm(items, axis=1).astype(np.float64)
    draws = np.sort(rng.choice(n_items, size=(n_users, played), p=norms / norms.sum()), axis=1)
    distinct = np.ones_like(draws, dtype=bool)
    distinct[:, 1:] = draws[:, 1:] != draws[:, :-1]
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(distinct.sum(axis=1), out=indptr[1:])
    indices = draws[distinct].astype(np.int32)
    return {
        "user_factors": users,
        "item_factors": items,
        "played_indptr": indptr,
        "played_indices": indices,
        "popularity": np.bincount(indices, minlength=n_items).astype(np.float32),
    }


def tune_annoy(
    items: np.ndarray, queries: np.ndarray, k: int, trees: list[int], search_ks: list[int], seed: int, workdir: Path
) -> tuple[dict, list]:
    """The fastest angular_ip (n_trees, search_k) with 4 x k candidates re-ranked reaching recall@k >=
    0.95 against exact, as the DAG's fast_search stage picks it; the best recall when none does."""
    rows = sweep(
        items, queries, [k], trees, search_ks, seed, workdir=workdir, metrics=("angular_ip",), rerank_factors=(4,)
    )
    point = operating_point(rows, k, TARGET_RECALL, ("angular_ip",))
    if not point["found"]:
        best = max((r for r in rows if r.metric == "angular_ip"), key=lambda r: (r.recall, r.qps))
        exact = next(r for r in rows if r.metric == "exact")
        point = {**point, **vars(best), "exact_qps": exact.qps}
        print(f"warning: {point['message']}; serving the best one measured (recall {best.recall:.3f})")
    keys = ("metric", "n_trees", "search_k", "candidates", "k", "recall", "qps", "p50_ms", "p99_ms", "exact_qps")
    return {key: point[key] for key in keys}, rows


def write_synthetic_bundle(
    target: Path, arrays: dict[str, np.ndarray], annoy: dict, version: str, rank: int, seed: int
) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n_users, n_items = len(arrays["user_factors"]), len(arrays["item_factors"])
    labels = {}
    for key, prefix, n in (("users", "u", n_users), ("tracks", "t", n_items)):
        labels[key] = target.parent / f"{target.name}-{key}.parquet"
        pq.write_table(pa.table({"id": [f"{prefix}{i:07d}" for i in range(n)]}), labels[key])
    card = {
        "version": version,
        "run_id": f"bench__{version}",
        "trial_id": f"r{rank}_synthetic",
        "logical_date": datetime.now(UTC).isoformat(),
        "created_at": datetime.now(UTC).isoformat(),
        "params": {
            "rank": rank,
            "reg_param": 0.1,
            "alpha": 1.0,
            "transform": "none",
            "nonnegative": True,
            "drop_threshold": 0,
            "max_iter": 0,
            "seed": seed,
        },
        "selection_metric": "map",
        "k": annoy["k"],
        "exclude_seen": True,
        "metrics": {"validation": None, "test": None},
        "popularity": {"validation": None, "test": None},
        "data": {"synthetic": "bench.fast_search.clustered_factors", "seed": seed},
        "n_users": n_users,
        "n_items": n_items,
        "libraries": versions("annoy", "numpy"),
    }
    return write_bundle(target, arrays, labels, card, annoy, seed)


# --- the server ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``music-recsys serve`` in a subprocess, its log in a file."""

    def __init__(self, args: list[str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [str(SERVE), "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 600.0) -> str:
        """The served model version, once /healthz says 200."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; log:\n{self.log_tail()}")
            try:
                response = httpx.get(f"{self.url}/healthz", timeout=2.0)
                if response.status_code == 200:
                    return response.json()["model_version"]
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout:.0f} s; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


# --- the load ------------------------------------------------------------------------------------------


@dataclass
class Load:
    """One load run's observations."""

    started_at: float = 0.0  # time.perf_counter() when the measured run began
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    parsed: int = 0  # responses whose JSON was read
    exact_answers: int = 0  # of those, the ones saying exact search answered
    samples: list[tuple[int, list[str]]] = field(default_factory=list)  # (user index, served track ids)
    seen: int = 0  # responses offered to the sample
    # (sent, answered) in seconds since the start, and the model version that answered
    versions: list[tuple[float, float, str]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    @property
    def qps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies) * 1000.0, q)) if self.latencies else float("nan")


async def drive(
    base_url: str,
    paths: list[str],
    users: np.ndarray,
    seconds: float,
    clients: int,
    seed: int,
    sample_size: int,
    timeout: float,
    track_versions: bool = False,
    halfway=None,
) -> Load:
    """``clients`` coroutines sharing one keep-alive connection pool, each asking for a random user's
    list as soon as its previous answer arrived, for ``seconds``. ``halfway`` (a blocking callable) runs
    in a thread at half time. Served lists are kept for a uniform sample of responses (reservoir)."""
    # aiohttp, not httpx: measured here, httpx's client spent ~0.9 ms of CPU per request (a whole core at
    # ~900 q/s, more than the server), aiohttp ~0.07 ms, so the figures are the server's, not the client's.
    import aiohttp

    load = Load()
    rng = np.random.default_rng(seed)
    session = aiohttp.ClientSession(
        base_url,
        connector=aiohttp.TCPConnector(limit=clients),
        timeout=aiohttp.ClientTimeout(total=timeout),
    )
    async with session:
        started = load.started_at = time.perf_counter()
        deadline = started + seconds

        async def worker(worker_seed: int) -> None:
            local = np.random.default_rng(worker_seed)
            while time.perf_counter() < deadline:
                user = int(users[local.integers(len(users))])
                sent = time.perf_counter()
                try:
                    async with session.get(paths[user]) as response:
                        status, payload = response.status, await response.read()
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    load.errors += 1
                    if len(load.error_examples) < 3:
                        load.error_examples.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = time.perf_counter() - sent
                if status != 200:
                    load.errors += 1
                    if len(load.error_examples) < 3:
                        load.error_examples.append(f"HTTP {status}: {payload[:200].decode(errors='replace')}")
                    continue
                load.latencies.append(elapsed)
                # Parse only what is kept: JSON decoding costs the client the CPU the server needs.
                load.seen += 1
                slot = len(load.samples) if len(load.samples) < sample_size else int(local.integers(load.seen))
                if track_versions or slot < sample_size:
                    body = json.loads(payload)
                    load.parsed += 1
                    load.exact_answers += body["exact"]
                    if track_versions:
                        load.versions.append((sent - started, sent - started + elapsed, body["model_version"]))
                    if slot < sample_size:
                        entry = (user, [item["track_id"] for item in body["items"]])
                        if slot == len(load.samples):
                            load.samples.append(entry)
                        else:
                            load.samples[slot] = entry

        async def at_half_time() -> None:
            await asyncio.sleep(seconds / 2)
            await asyncio.to_thread(halfway)

        tasks = [worker(int(s)) for s in rng.integers(2**31, size=clients)]
        if halfway is not None:
            tasks.append(at_half_time())
        await asyncio.gather(*tasks)
        load.seconds = time.perf_counter() - started
    return load


def run_load(base_url: str, paths: list[str], users: np.ndarray, args, seed: int, **kwargs) -> Load:
    try:
        import uvloop  # uvicorn's loop; cheaper for the client too

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None

    def go(seconds: float, **extra) -> Load:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(
                drive(base_url, paths, users, seconds, args.clients, seed, args.recall_users, args.timeout, **extra)
            )

    if args.warmup_seconds > 0:
        go(args.warmup_seconds)  # connections, caches, the server's thread pool
    return go(args.seconds, **kwargs)


# --- measuring one bundle ---------------------------------------------------------------------------


class Truth:
    """The exact top 10 by inner product from a bundle's own arrays, played tracks excluded."""

    def __init__(self, folder: Path):
        self.arrays = load_arrays(folder, mmap=True)
        self.track_ids = read_labels(folder, "tracks")
        self.user_ids = read_labels(folder, "users")
        self.items = np.ascontiguousarray(self.arrays["item_factors"], dtype=np.float32)

    def played(self, user: int) -> np.ndarray:
        indptr = self.arrays["played_indptr"]
        return np.asarray(self.arrays["played_indices"][indptr[user] : indptr[user + 1]])

    def recall(self, samples: list[tuple[int, list[str]]], k: int) -> float:
        if not samples:
            return float("nan")
        users = np.array([u for u, _ in samples])
        vectors = np.asarray(self.arrays["user_factors"][users], dtype=np.float32)
        exact = top_k(vectors, self.items, k, exclude=[self.played(u) for u in users])
        hits = [
            len({self.track_ids[i] for i in want} & set(served)) / max(1, len(want))
            for want, (_, served) in zip(exact, samples, strict=True)
        ]
        return float(np.mean(hits))


def measure_bundle(name: str, folder: Path, args, log_dir: Path) -> dict:
    """ANN and exact endpoints of one bundle, side by side on one server."""
    card = verify_bundle(folder)
    truth = Truth(folder)
    # Users with all-zero factors (every play dropped by the transform) have no meaningful ranking.
    users = np.flatnonzero(np.any(np.asarray(truth.arrays["user_factors"]) != 0, axis=1))
    rows = []
    server = Server(["--bundle", str(folder)], log_dir / f"{name}.log")
    try:
        started = time.perf_counter()
        served = server.wait_ready()
        ready_seconds = time.perf_counter() - started
        for endpoint, exact in (("annoy", "false"), ("exact", "true")):
            paths = [
                f"/users/{quote(str(u), safe='')}/recommendations?k={args.k}&exact={exact}" for u in truth.user_ids
            ]
            load = run_load(server.url, paths, users, args, seed=args.seed)
            rows.append({"endpoint": endpoint, "load": load, "recall": truth.recall(load.samples, args.k)})
    finally:
        server.stop()
    return {
        "name": name,
        "card": card,
        "version": served,
        "ready_seconds": ready_seconds,
        "n_users": card["n_users"],
        "n_items": card["n_items"],
        "rank": card["params"]["rank"],
        "rows": rows,
    }


def measure_reload(folders: dict[str, Path], args, workdir: Path) -> dict:
    """Serve from a SQLite registry, switch the champion half-way through a load run."""
    import httpx
    import sqlalchemy as sa

    from music_recsys.store import registry
    from music_recsys.store.results import ResultsStore, models

    url = f"sqlite:///{workdir / 'registry.sqlite'}"
    store = ResultsStore(url)
    now = datetime.now(UTC)
    cards = {label: verify_bundle(folder) for label, folder in folders.items()}
    rows = [
        {
            "model_version": cards[label]["version"],
            "run_id": cards[label]["run_id"],
            "trial_id": cards[label]["trial_id"],
            "status": status,
            "path": str(folders[label]),
            "created_at": now,
            "reason": "bench/serve.py",
        }
        for label, status in (("a", registry.CHAMPION), ("b", registry.CANDIDATE))
    ]
    store.transaction(lambda conn: conn.execute(sa.insert(models), rows))
    old, new = cards["a"]["version"], cards["b"]["version"]
    truth = Truth(folders["a"])
    users = np.arange(len(truth.user_ids))
    paths = [f"/users/{quote(str(u), safe='')}/recommendations?k={args.k}" for u in truth.user_ids]
    switched: dict[str, float] = {}

    def switch() -> None:
        registry.promote_manually(store, new, "bench/serve.py: hot reload under load")
        switched["at"] = time.perf_counter()

    server = Server(["--results-url", url, "--poll-seconds", str(args.poll_seconds)], workdir / "reload.log")
    try:
        first = server.wait_ready()
        if first != old:
            raise RuntimeError(f"the reload server serves {first}, not the champion {old}")
        load = run_load(server.url, paths, users, args, seed=args.seed + 1, track_versions=True, halfway=switch)
        final = httpx.get(f"{server.url}/healthz", timeout=args.timeout).json()["model_version"]
    finally:
        server.stop()
        store.close()
    order = [v for _, _, v in sorted(load.versions, key=lambda row: row[1])]
    first_new = min((answered for _, answered, v in load.versions if v == new), default=None)
    switch_at = switched.get("at", float("nan")) - load.started_at
    # Requests in flight at the swap may finish on the old model after others finished on the new one;
    # but a request sent after a new-model answer arrived must never be answered by the old model.
    never_back = first_new is not None and all(v == new for sent, _, v in load.versions if sent > first_new)
    return {
        "load": load,
        "old": old,
        "new": new,
        "final": final,
        "versions_seen": list(dict.fromkeys(order)),
        "never_back": never_back,
        "last_is_new": bool(order) and order[-1] == new,
        "switch_at": switch_at,
        "seen_after": (first_new - switch_at) if first_new is not None else float("nan"),
    }


# --- reporting -------------------------------------------------------------------------------------------


def versions(*names: str) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = package_version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def yes(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def report(results: list[dict], reload: dict | None, tuning: dict | None, args) -> tuple[str, str]:
    """(markdown table of the runs, target lines)."""
    header = (
        "| bundle | tracks × rank | users | endpoint | clients | requests | q/s | p50 ms | p99 ms | errors | "
        "recall@10 | exact answers |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines, targets = [header], []
    for r in results:
        for row in r["rows"]:
            load = row["load"]
            exact_share = load.exact_answers / max(1, load.parsed)
            lines.append(
                f"| {r['name']} | {r['n_items']:,} × {r['rank']} | {r['n_users']:,} | {row['endpoint']} | "
                f"{args.clients} | {load.requests:,} | {load.qps:.0f} | {load.percentile_ms(50):.2f} | "
                f"{load.percentile_ms(99):.2f} | {load.errors} | {row['recall']:.3f} | {exact_share:.0%} |"
            )
        ann, exact = r["rows"]
        speedup = ann["load"].qps / exact["load"].qps if exact["load"].qps else float("nan")
        serving = r["card"].get("serving")
        where = (
            f"{serving['metric']} {serving['n_trees']} trees, search_k {serving['search_k']}, "
            f"{serving['candidates']} candidates for k={serving['k']}"
            if serving
            else "no Annoy index in this bundle: both endpoints are exact"
        )
        targets.append(
            f"- {r['name']} ({where}; server ready in {r['ready_seconds']:.1f} s): "
            f"ANN / exact = **{speedup:.2f}x** q/s (target >= {TARGET_SPEEDUP:g}x: {yes(speedup >= TARGET_SPEEDUP)}); "
            f"recall@{args.k} {ann['recall']:.3f} (target >= {TARGET_RECALL}: {yes(ann['recall'] >= TARGET_RECALL)}); "
            f"ANN p99 {ann['load'].percentile_ms(99):.1f} ms at {args.clients} clients "
            f"(target <= {TARGET_P99_MS:g} ms: {yes(ann['load'].percentile_ms(99) <= TARGET_P99_MS)}); "
            f"errors {ann['load'].errors + exact['load'].errors} (target 0: "
            f"{yes(ann['load'].errors + exact['load'].errors == 0)})"
        )
    if reload is not None:
        load = reload["load"]
        changed = reload["versions_seen"] == [reload["old"], reload["new"]] and reload["final"] == reload["new"]
        lines.append(
            f"| hot reload | {results[0]['n_items']:,} × {results[0]['rank']} | {results[0]['n_users']:,} | "
            f"annoy, champion switched at {reload['switch_at']:.1f} s | {args.clients} | {load.requests:,} | "
            f"{load.qps:.0f} | {load.percentile_ms(50):.2f} | {load.percentile_ms(99):.2f} | {load.errors} | — | "
            f"{load.exact_answers / max(1, load.parsed):.0%} |"
        )
        targets.append(
            f"- hot reload (registry in SQLite, poll every {args.poll_seconds:g} s): failed requests {load.errors} "
            f"(target 0: {yes(load.errors == 0)}); versions served in order {' → '.join(reload['versions_seen'])}, "
            f"the last answers and /healthz after the run from {reload['final']} (served version changed: "
            f"{yes(changed and reload['last_is_new'])}); no request sent after the first new-model answer got the "
            f"old model ({yes(reload['never_back'])}); first new-model answer {reload['seen_after']:.2f} s after "
            "the switch"
        )
    if results[0]["n_items"] < 385_000:
        targets.append(
            f"- note: the targets are set for 385,000 tracks; at {results[0]['n_items']:,} an exact scan is cheap "
            "and both endpoints are bound by the HTTP stack, so the ANN / exact ratio says little here"
        )
    if tuning is not None:
        point, rows = tuning
        table = [
            "| n_trees | search_k | candidates | recall@50 | q/s (in process) | chosen |",
            "|---|---|---|---|---|---|",
        ]
        for m in sorted((m for m in rows if m.metric == "angular_ip"), key=lambda m: (m.n_trees, m.search_k)):
            chosen = "**yes**" if (m.n_trees, m.search_k) == (point["n_trees"], point["search_k"]) else ""
            table.append(f"| {m.n_trees} | {m.search_k} | {m.candidates} | {m.recall:.3f} | {m.qps:.0f} | {chosen} |")
        exact_qps = next(m.qps for m in rows if m.metric == "exact")
        targets.insert(
            0,
            f"- operating point (angular_ip, k=50, fastest reaching recall@50 >= {TARGET_RECALL} on "
            f"{args.tune_queries} users, exact single-query {exact_qps:.0f} q/s in process):\n\n"
            + "\n".join(table)
            + "\n",
        )
    return "\n".join(lines), "\n".join(targets)


def main(**args) -> int:
    args = argparse.Namespace(**args)
    workdir = Path(tempfile.mkdtemp(prefix="serve-bench-", dir=args.workdir))
    started = time.perf_counter()
    try:
        print(f"synthetic catalogue: {args.items:,} tracks × {args.users:,} users, rank {args.rank} ({workdir})")
        arrays = synthetic_arrays(args.items, args.users, args.rank, args.played, args.seed)
        rng = np.random.default_rng(args.seed)
        queries = arrays["user_factors"][rng.choice(args.users, size=min(args.tune_queries, args.users), replace=False)]
        point, rows = tune_annoy(arrays["item_factors"], queries, 50, args.trees, args.search_ks, args.seed, workdir)
        print(
            f"operating point: angular_ip {point['n_trees']} trees, search_k {point['search_k']}, "
            f"{point['candidates']} candidates: recall@50 {point['recall']:.3f}"
        )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        folders = {
            "a": write_synthetic_bundle(workdir / f"{stamp}-a", arrays, point, f"{stamp}-a", args.rank, args.seed)
        }
        results = [measure_bundle("synthetic", folders["a"], args, workdir)]
        if args.model_bundle:
            results.append(measure_bundle(Path(args.model_bundle).name, Path(args.model_bundle), args, workdir))
        reload = None
        if args.reload:
            # The next model: the same users and tracks, refitted (here: the generator with another seed).
            retrained = synthetic_arrays(args.items, args.users, args.rank, args.played, args.seed + 100)
            retrained.update({key: arrays[key] for key in ("played_indptr", "played_indices", "popularity")})
            folders["b"] = write_synthetic_bundle(
                workdir / f"{stamp}-b", retrained, point, f"{stamp}-b", args.rank, args.seed + 100
            )
            reload = measure_reload(folders, args, workdir)
        table, targets = report(results, reload, (point, rows), args)
        elapsed = time.perf_counter() - started
        print()
        print(table)
        print()
        print(targets)
        for r in results:
            for row in r["rows"]:
                for example in row["load"].error_examples:
                    print(f"error ({r['name']}, {row['endpoint']}): {example}")
        if reload is not None:
            for example in reload["load"].error_examples:
                print(f"error (hot reload): {example}")
        if args.write:
            libs = versions("numpy", "annoy", "fastapi", "starlette", "uvicorn", "uvloop", "aiohttp")
            with RESULTS.open("a") as fh:
                fh.write(
                    f"\n### Serving API under load at {args.items:,} tracks × rank {args.rank} — "
                    f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
                    f"Machine: {platform.machine()}, {os.cpu_count()} cpus shared by the server (one uvicorn "
                    f"worker) and the load client (one event loop, {args.clients} concurrent keep-alive "
                    f"clients), Python {platform.python_version()}, "
                    + ", ".join(f"{k} {v}" for k, v in libs.items())
                    + f". {args.seconds:g} s per run after {args.warmup_seconds:g} s warm-up, k={args.k}, random "
                    f"known users (~{args.played} played tracks each, excluded); latency measured by the client. "
                    f"Recall@{args.k} on {args.recall_users} served lists per run against exact top {args.k} from "
                    f"the bundle's arrays. Took {elapsed:.0f} s.\n\n" + targets + "\n\n" + table + "\n"
                )
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    failed = any(row["load"].errors for r in results for row in r["rows"])
    if reload is not None:
        failed = failed or reload["load"].errors or not (reload["last_is_new"] and reload["never_back"])
    return 1 if failed else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=385_000, help="tracks in the synthetic catalogue")
    p.add_argument("--users", type=int, default=20_000, help="users in the synthetic bundle")
    p.add_argument("--rank", type=int, default=20, help="factor dimension")
    p.add_argument("--played", type=int, default=30, help="tracks drawn per user as played (duplicates dropped)")
    p.add_argument("--k", type=int, default=10, help="list length requested")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (one connection each)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each load run")
    p.add_argument("--warmup-seconds", type=float, default=2.0, help="load before each measured run, not counted")
    p.add_argument("--timeout", type=float, default=10.0, help="a request slower than this counts as an error")
    p.add_argument("--recall-users", type=int, default=500, help="served lists per run checked against exact")
    p.add_argument("--tune-queries", type=int, default=300, help="users measuring recall@50 for the operating point")
    p.add_argument("--trees", type=int, nargs="+", default=[10, 20], help="Annoy n_trees values tried")
    p.add_argument(
        "--search-ks", type=int, nargs="+", default=[1000, 2000, 5000, 10000], help="Annoy search_k values tried"
    )
    p.add_argument("--model-bundle", help="also measure this existing bundle folder")
    p.add_argument("--no-reload", dest="reload", action="store_false", help="skip the hot-reload run")
    p.add_argument("--poll-seconds", type=float, default=0.5, help="the server's registry poll in the reload run")
    p.add_argument("--workdir", help="where bundles are written (default: the system temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the bundles and server logs")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--no-write", dest="write", action="store_false", help="do not append to bench/RESULTS.md")
    raise SystemExit(main(**vars(p.parse_args())))
