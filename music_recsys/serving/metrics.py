"""What the API tells an operator about each request: Prometheus metrics, an access log, a version header.

``ServingMetrics`` holds the app's metrics in its own ``CollectorRegistry`` (two apps in one process, as in
the tests, do not share counters), served by ``GET /metrics`` in Prometheus' text format. ``Observe`` is
the outermost pure ASGI middleware: it sees every answer, the 401s and 413s of the guards inside it
included, and for each one it counts the request and its latency by route template and status, adds
``X-Model-Version`` (the version that answered; ``none`` before a model is loaded), and writes one JSON
access-log line to stderr: time, method, route template, status, latency, version. Never the path's ids,
the query or the body: a listening history is personal data. The line is written straight to the stream,
not through ``logging``: a log record per request (caller lookup, thread and process names) cost more CPU
than the request's metrics, and what is left is one ``write`` of a line built from parts encoded once.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from starlette.types import ASGIApp, Message, Receive, Scope, Send

VERSION_HEADER = b"x-model-version"
NO_MODEL = "none"
UNMATCHED = "unmatched"  # one label for every path no route serves: scanners cannot grow the label set
# Latency buckets from 1 ms to 10 s: the Annoy endpoint answers in a few ms, an exact scan at 385K tracks
# in tens (bench/RESULTS.md, "Serving").
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServingMetrics:
    """The API's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "recsys_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recsys_http_request_duration_seconds",
            "Time from the request's arrival to the end of its answer, by method, route template and status",
            ["method", "route", "status"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.model = Info("recsys_model", "The model version being served", registry=self.registry)
        self.model_loaded = Gauge(
            "recsys_model_loaded_timestamp_seconds",
            "When the served model was loaded (0: none yet)",
            registry=self.registry,
        )
        self.reloads = Counter(
            "recsys_model_reloads", "Models loaded and swapped in, the first one included", registry=self.registry
        )
        self.failed_loads = Counter(
            "recsys_model_load_failures",
            "Champion bundles that failed to load (the previous model kept serving)",
            registry=self.registry,
        )
        self.registry_errors = Counter(
            "recsys_model_registry_errors",
            "Times the model registry could not be read (the loaded model kept serving)",
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "recsys_popularity_fallbacks",
            "Answers given from popularity because the model had no factor to rank with, by route",
            ["route"],
            registry=self.registry,
        )
        self.foldins = Counter(
            "recsys_foldin_requests",
            "Recommendations for a posted history (fold-in), by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.model.info({"version": NO_MODEL})

    def served(self, version: str, loaded_at: float) -> None:
        self.model.info({"version": version})
        self.model_loaded.set(loaded_at)
        self.reloads.inc()


def route_matcher(routes: Iterable[object]) -> Callable[[str], str]:
    """path -> the template of the route that serves it (``/users/{user_id}/recommendations``), or
    ``unmatched``: the label of a request the guards refused before routing, or that no route serves."""
    patterns: list[tuple[re.Pattern[str], str]] = []
    for route in routes:
        regex, template = getattr(route, "path_regex", None), getattr(route, "path", None)
        if regex is None or template is None:
            continue
        # A mount (the docs' static files) matches every path below it: one label for all of them.
        patterns.append((regex, template if not hasattr(route, "routes") else f"{template}/*"))
    exact = {template: template for regex, template in patterns if "{" not in template}

    def match(path: str) -> str:
        found = exact.get(path)
        if found is not None:
            return found
        for regex, template in patterns:
            if regex.match(path):
                return template
        return UNMATCHED

    return match


class Observe:
    """Metrics, ``X-Model-Version`` and one access-log line for every HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServingMetrics,
        version: Callable[[], str | None],
        routes: Callable[[], Iterable[object]],
        access_log: TextIO | None = None,
    ):
        self.app = app
        self.metrics = metrics
        self.version = version  # the holder's current version: for answers given before a handler ran
        self._routes = routes
        self._match: Callable[[str], str] | None = None
        self._series: dict[tuple[str, str, int], tuple[Any, Any, str]] = {}
        self.access_log = access_log  # None: no access lines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answer: dict[str, Any] = {"status": 500, "version": NO_MODEL, "started": False}

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The handler records the version it answered from (``request.state``): the holder may
                # have swapped models since, and the header must agree with the body.
                version = scope.get("state", {}).get("model_version") or self.version() or NO_MODEL
                answer["status"], answer["version"], answer["started"] = message["status"], version, True
                message["headers"] = [*message.get("headers", ()), (VERSION_HEADER, version.encode())]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except Exception:
            # A bug, not bad input: answer the 500 here so it carries the header like every other answer,
            # then let Starlette's error middleware log the traceback (it sees the response started).
            if not answer["started"]:
                await observed_send(
                    {"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"application/json")]}
                )
                await send({"type": "http.response.body", "body": b'{"detail":"internal server error"}'})
            raise
        finally:
            self._record(scope, answer["status"], answer["version"], time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, version: str, seconds: float) -> None:
        if self._match is None:  # the routes are complete once the app serves: compile them once
            self._match = route_matcher(self._routes())
        route, method = self._match(scope["path"]), scope["method"]
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            # labels() takes a lock and builds the key each call: keep the children, the set is small
            # (methods x route templates x statuses).
            labels = (method, route, str(status))
            series = self._series[key] = (
                self.metrics.requests.labels(*labels),
                self.metrics.latency.labels(*labels),
                f'"method":{_json(method)},"route":{_json(route)},"status":{status}',
            )
        count, latency, fields = series
        count.inc()
        latency.observe(seconds)
        if self.access_log is not None:
            now = time.time()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            self.access_log.write(
                f'{{"time":"{stamp}.{int(now % 1 * 1000):03d}Z",{fields},"latency_ms":{seconds * 1000.0:.3f},'
                f'"model_version":{_json(version)}}}\n'
            )


_json = functools.lru_cache(maxsize=1024)(json.dumps)  # the same few strings (methods, routes, versions)
