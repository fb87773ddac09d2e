"""The serving API: FastAPI over the champion of the model registry, reloaded when the champion changes.

``create_app(settings)`` builds the app; the champion is loaded in the background when it starts, so
``/healthz`` answers 503 until a model is loaded and 200 with its version after. A watcher thread asks
the registry every ``poll_seconds`` which version is champion and, when it changed, loads the new bundle
and swaps it in with one reference assignment: requests in flight finish on the model they started with,
and a bundle that fails to load is logged while the old model keeps serving.

Around the routes, three pure ASGI layers (outermost first): ``Observe`` (metrics, ``X-Model-Version``,
the access log), ``BearerAuth`` when a token is set, ``BodyLimit`` (413 while reading, before parsing).
The docs (``/docs``, ``/redoc``) are served with their Swagger UI and ReDoc assets from the
``fastapi-offline`` package: they work without network.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from music_recsys.serving.auth import BearerAuth
from music_recsys.serving.limits import DEFAULT_BODY_TIMEOUT_SECONDS, DEFAULT_MAX_BODY_BYTES, BodyLimit
from music_recsys.serving.metrics import NO_MODEL, Observe, ServingMetrics
from music_recsys.serving.model import Recommendation, ServingModel, UnknownId
from music_recsys.serving.schemas import (
    K_MAX,
    HealthLoading,
    HealthOk,
    HistoryRecommendations,
    ModelCard,
    SimilarTracks,
    UserRecommendations,
    errors,
    history_limit,
    history_request_model,
)

log = logging.getLogger("music_recsys.serving")

# Where the champion is: (version, bundle folder), or None while there is none.
Locator = Callable[[], tuple[str, Path] | None]


def registry_locator(url: str | None = None) -> Locator:
    """The champion named by the model registry in the results store (``recsys_results``). One store is
    opened and kept across polls (opened again after an error); it only reads, so the API can run with a
    role that may only SELECT (docs/results-store.md)."""
    opened: list = []

    def locate() -> tuple[str, Path] | None:
        from music_recsys.store import registry
        from music_recsys.store.results import ResultsStore, results_url

        if not opened:
            opened.append(ResultsStore(url or results_url(), retries=1))
        try:
            row = registry.champion(opened[0])
        except Exception:
            opened.pop().close()  # a new engine on the next poll (the store moved, or its schema changed)
            raise
        return (row["model_version"], registry.bundle_path(row)) if row else None

    return locate


def bundle_locator(folder: Path) -> Locator:
    """A fixed bundle, no registry (``music-recsys serve --bundle``)."""
    from music_recsys.store.bundle import verify_bundle

    version = verify_bundle(folder)["version"]
    return lambda: (version, folder)


@dataclass
class Settings:
    """How the API serves: where the champion is, how often to ask, the body limit, the token."""

    locate: Locator
    poll_seconds: float = 10.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS  # a body not in by then: 408
    token: str | None = None  # None: the API is open (the server says so at start)
    access_log: bool = True  # one JSON line per request (music_recsys.serving.metrics.Observe)
    access_stream: TextIO | None = None  # where those lines go; None: stderr

    def validate(self) -> Settings:
        if not self.poll_seconds > 0:
            raise ValueError(f"poll seconds {self.poll_seconds!r}: must be > 0 (e.g. 10)")
        if not isinstance(self.max_body_bytes, int) or self.max_body_bytes < 1024:
            raise ValueError(
                f"max body bytes {self.max_body_bytes!r}: must be an integer >= 1024 (default {DEFAULT_MAX_BODY_BYTES})"
            )
        if not self.body_timeout_seconds > 0:
            raise ValueError(f"body timeout {self.body_timeout_seconds!r} s: must be > 0 (e.g. 30)")
        if self.token is not None and not self.token.strip():
            raise ValueError("token: empty; give the token, or None to serve open")
        return self


class ModelHolder:
    """The model being served; replaced, never changed."""

    def __init__(self, settings: Settings, metrics: ServingMetrics | None = None):
        self.settings = settings
        self.metrics = metrics or ServingMetrics()
        self.model: ServingModel | None = None
        self.loaded_at: datetime | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self.failed_loads = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one load at a time

    def refresh(self) -> bool:
        """Load the registry's champion if it is not the one being served; True when it swapped."""
        with self._lock:
            try:
                found = self.settings.locate()
            except Exception as exc:  # the registry away: keep serving what is loaded
                self.last_error = f"registry: {type(exc).__name__}: {exc}"
                self.metrics.registry_errors.inc()
                log.warning("cannot read the model registry (%s); serving %s", exc, self.version)
                return False
            if found is None:
                self.last_error = "no champion in the model registry yet"
                return False
            version, folder = found
            if self.model is not None and self.model.version == version:
                self.last_error = None
                return False
            try:
                model = ServingModel(folder)
            except Exception as exc:
                self.last_error = f"model {version} at {folder} failed to load: {type(exc).__name__}: {exc}"
                self.failed_loads += 1
                self.metrics.failed_loads.inc()
                log.error("%s; still serving %s", self.last_error, self.version)
                return False
            self.model, self.loaded_at, self.last_error = model, datetime.now(UTC), None
            self.reloads += 1
            self.metrics.served(version, time.time())
            log.info("serving model %s (loaded in %.2f s)", version, model.load_seconds)
            return True

    @property
    def version(self) -> str | None:
        return self.model.version if self.model else None

    def start(self) -> None:
        def watch() -> None:
            while not self._stop.is_set():
                self.refresh()
                self._stop.wait(self.settings.poll_seconds)

        self._thread = threading.Thread(target=watch, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _items(ranked: Recommendation) -> list[dict[str, Any]]:
    return [{"track_id": track, "score": score} for track, score in ranked.items]


MODEL_ERRORS = (503,)  # every endpoint that needs a model


def create_app(settings: Settings) -> FastAPI:
    settings.validate()
    metrics = ServingMetrics()
    holder = ModelHolder(settings, metrics)
    HistoryRequest = history_request_model(settings.max_body_bytes)  # noqa: N806 - a model class

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from threadpoolctl import threadpool_limits

        if settings.token is None:
            log.warning(
                "no API token set (RECSYS_API_TOKEN or --token-file): every endpoint is open to anyone who "
                "can reach this port"
            )
        else:
            log.info("a bearer token is required on every endpoint but /healthz")
        log.info(
            "request bodies over %s bytes are refused with 413 (a history holds at most %s entries)",
            f"{settings.max_body_bytes:,}",
            f"{history_limit(settings.max_body_bytes):,}",
        )
        # Requests run on a thread pool, each with its own matrix-vector products: BLAS threads on top of
        # those only fight over the cores (measured: bench/RESULTS.md, "Serving").
        with threadpool_limits(limits=1, user_api="blas"):
            holder.start()
            yield
            holder.stop()

    app = FastAPIOffline(
        title="music-recsys",
        summary="Recommendations from the champion ALS model: Annoy candidates re-ranked exactly.",
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.metrics = metrics

    @app.exception_handler(RequestValidationError)
    async def unparseable_body(request: Request, exc: RequestValidationError):
        """400 when the body is not JSON text at all, 422 (FastAPI's answer) when it is JSON of the wrong shape."""
        for error in exc.errors():
            if error.get("type") == "json_invalid":
                reason = error.get("ctx", {}).get("error", "not JSON")
                return JSONResponse({"detail": f"the request body is not valid JSON ({reason})"}, status_code=400)
        return await request_validation_exception_handler(request, exc)

    # The handlers are async and hand the ranking to the thread pool themselves: FastAPI then validates and
    # serialises the response model on the event loop in one step (pydantic's JSON dump) instead of a second
    # trip to the thread pool, which is what a sync handler with a response model costs.
    def current(request: Request) -> ServingModel:
        model = holder.model  # one read: the whole request uses this model
        if model is None:
            raise HTTPException(503, detail=holder.last_error or "no model loaded yet")
        request.state.model_version = model.version  # X-Model-Version names the model that answered
        return model

    @app.get(
        "/healthz",
        response_model=HealthOk,
        responses={503: {"model": HealthLoading, "description": "no model loaded yet"}},
        summary="200 once a model is loaded (never needs the token)",
    )
    async def healthz(request: Request):
        model = holder.model
        if model is None:
            return JSONResponse({"status": "loading", "detail": holder.last_error}, status_code=503)
        request.state.model_version = model.version
        return {"status": "ok", "model_version": model.version}

    @app.get("/model", response_model=ModelCard, responses=errors(*MODEL_ERRORS), summary="the model card")
    async def model_card(request: Request):
        model = current(request)
        return {**model.card, "loaded_at": holder.loaded_at, "path": str(model.folder)}

    @app.get(
        "/users/{user_id}/recommendations",
        response_model=UserRecommendations,
        responses=errors(404, *MODEL_ERRORS),
        summary="top k for a training user, their played tracks excluded",
    )
    async def user_recommendations(
        request: Request,
        user_id: str,
        k: int = Query(10, ge=1, le=K_MAX, description="list length"),
        exact: bool = Query(False, description="exact search instead of the Annoy index"),
    ):
        model = current(request)
        try:
            ranked = await run_in_threadpool(model.recommend, user_id, k, exact)
        except UnknownId as exc:
            raise HTTPException(404, detail=str(exc)) from None
        if ranked.fallback:
            metrics.fallbacks.labels("/users/{user_id}/recommendations").inc()
        return {
            "user_id": user_id,
            "model_version": model.version,
            "exact": ranked.exact,
            "fallback": ranked.fallback,
            "items": _items(ranked),
        }

    async def history_recommendations(request: Request, body: HistoryRequest):
        model = current(request)
        history = [(p.track_id, p.count) for p in body.history]
        answer = await run_in_threadpool(model.recommend_for_history, history, body.k, body.exact)
        metrics.foldins.labels("popularity" if answer["fallback"] else "folded_in").inc()
        if answer["fallback"]:
            metrics.fallbacks.labels("/recommendations").inc()
        return {
            "model_version": model.version,
            "exact": answer["recommendation"].exact,
            "items": _items(answer["recommendation"]),
            "known_tracks": answer["known_tracks"],
            "unknown_tracks": answer["unknown_tracks"],
            "fallback": answer["fallback"],
        }

    # The body model is built for this app (its history cap follows the body limit): annotations are strings
    # under ``from __future__ import annotations``, so the class is given to FastAPI directly.
    history_recommendations.__annotations__["body"] = HistoryRequest
    app.post(
        "/recommendations",
        response_model=HistoryRecommendations,
        responses=errors(400, 408, 413, *MODEL_ERRORS),
        summary="top k for a listener not in the training data (fold-in of their history)",
    )(history_recommendations)

    @app.get(
        "/tracks/{track_id}/similar",
        response_model=SimilarTracks,
        responses=errors(404, *MODEL_ERRORS),
        summary="nearest tracks by cosine of the item factors",
    )
    async def similar_tracks(request: Request, track_id: str, k: int = Query(10, ge=1, le=K_MAX)):
        model = current(request)
        try:
            similar = await run_in_threadpool(model.similar, track_id, k)
        except UnknownId as exc:
            raise HTTPException(404, detail=str(exc)) from None
        return {
            "track_id": track_id,
            "model_version": model.version,
            "items": [{"track_id": t, "score": s} for t, s in similar],
        }

    @app.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {
                "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                "description": "Prometheus text format",
            }
        },
        summary="Prometheus metrics",
    )
    async def prometheus_metrics():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.openapi = lambda: _openapi(app, settings)
    # add_middleware wraps: the last added is the outermost.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout_seconds=settings.body_timeout_seconds)
    if settings.token is not None:
        app.add_middleware(BearerAuth, token=settings.token)
    app.add_middleware(
        Observe,
        metrics=metrics,
        version=lambda: holder.version,
        routes=lambda: app.routes,
        access_log=(settings.access_stream or sys.stderr) if settings.access_log else None,
    )
    return app


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's document, plus what the ASGI layers add: the token, the 401 and 413 they answer, and
    ``X-Model-Version`` on every response."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    detail_ref = {"$ref": "#/components/schemas/Detail"}
    header = {
        "X-Model-Version": {
            "description": f"the model version that answered ('{NO_MODEL}' before one is loaded)",
            "required": True,
            "schema": {"type": "string"},
        }
    }
    if settings.token is not None:
        schema["components"].setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "the server's RECSYS_API_TOKEN (or --token-file)",
        }
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            responses = operation["responses"]
            if settings.token is not None and path != "/healthz":
                operation["security"] = [{"bearer": []}]
                responses["401"] = {
                    "description": "no valid 'Authorization: Bearer <token>'",
                    "content": {"application/json": {"schema": detail_ref}},
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
                }
            for response in responses.values():
                response.setdefault("headers", {}).update(header)
    app.openapi_schema = schema
    return schema
