"""The serving benchmark's load: ``music-recsys serve`` in a subprocess and a keep-alive HTTP client
driving it from one event loop (``bench/serve.py`` measures with them)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from harness.services import free_port  # noqa: E402

SERVE = Path(sys.executable).with_name("music-recsys")  # the console script next to this interpreter


class Server:
    """``music-recsys serve`` in a subprocess, its log in a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [str(SERVE), "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
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
