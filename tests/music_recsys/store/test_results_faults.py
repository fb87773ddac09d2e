"""Fault drill: the results PostgreSQL goes away mid-run (restart) and comes back; writes retry and
leave exactly one row per key."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlparse

import pytest

from music_recsys.store.results import ResultsStore
from tests.stores import migrated

pytestmark = pytest.mark.postgres


class FlakyProxy:
    """TCP proxy to PostgreSQL that can drop every connection and refuse new ones for a while."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.down_until = 0.0
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if time.monotonic() < self.down_until:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def restart(self, down_seconds: float):
        """Like a server restart: every open connection dies, new ones fail until it is back."""
        self.down_until = time.monotonic() + down_seconds
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()

    def close(self):
        self.server.close()


def test_writes_survive_a_database_restart(postgres_url):
    migrated(postgres_url)
    parsed = urlparse(postgres_url)
    proxy = FlakyProxy(parsed.hostname, parsed.port or 5432)
    via_proxy = postgres_url.replace(f"{parsed.hostname}:{parsed.port}", f"127.0.0.1:{proxy.port}")
    store = ResultsStore(via_proxy, retries=6, backoff_seconds=0.5)
    row = {"run_id": "r", "trial_id": "t", "split": "validation", "model": "als", "status": "success", "map": 0.1}
    assert store.upsert("als_trials", [row]) == 1
    proxy.restart(down_seconds=1.5)  # the pooled connection is dead and reconnects fail for a while
    started = time.monotonic()
    assert store.upsert("als_trials", [{**row, "map": 0.2}]) == 1
    assert time.monotonic() - started >= 1.0  # it really waited for the database to come back
    rows = store.fetch("als_trials", "r")
    assert len(rows) == 1 and rows[0]["map"] == pytest.approx(0.2)
    store.close()
    proxy.close()
