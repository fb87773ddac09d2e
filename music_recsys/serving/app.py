"""The serving API: FastAPI over the champion of the model registry, reloaded when the champion changes.

``create_app(settings)`` builds the app; the champion is loaded in the background when it starts, so
``/healthz`` answers 503 until a model is loaded and 200 with its version after. A watcher thread asks
the registry every ``poll_seconds`` which version is champion and, when it changed, loads the new bundle
and swaps it in with one reference assignment: requests in flight finish on the model they started with,
and a bundle that fails to load is logged while the old model keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from music_recsys.serving.model import Recommendation, ServingModel, UnknownId

log = logging.getLogger("music_recsys.serving")

# Where the champion is: (version, bundle folder), or None while there is none.
Locator = Callable[[], tuple[str, Path] | None]


def registry_locator(url: str | None = None) -> Locator:
    """The champion named by the model registry in the results store (``recsys_results``)."""

    def locate() -> tuple[str, Path] | None:
        from music_recsys.store import registry
        from music_recsys.store.results import ResultsStore, results_url

        store = ResultsStore(url or results_url(), retries=1)
        try:
            row = registry.champion(store)
        finally:
            store.close()
        return (row["model_version"], Path(row["path"])) if row else None

    return locate


def bundle_locator(folder: Path) -> Locator:
    """A fixed bundle, no registry (``music-recsys serve --bundle``)."""
    from music_recsys.store.bundle import verify_bundle

    version = verify_bundle(folder)["version"]
    return lambda: (version, folder)


@dataclass
class Settings:
    locate: Locator
    poll_seconds: float = 10.0


class ModelHolder:
    """The model being served; replaced, never changed."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.model: ServingModel | None = None
        self.loaded_at: datetime | None = None
        self.last_error: str | None = None
        self.reloads = 0
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
                log.error("%s; still serving %s", self.last_error, self.version)
                return False
            self.model, self.loaded_at, self.last_error = model, datetime.now(UTC), None
            self.reloads += 1
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


class PlayedTrack(BaseModel):
    track_id: str = Field(min_length=1)
    count: int = Field(default=1, ge=1)


class HistoryRequest(BaseModel):
    history: list[PlayedTrack] = Field(default_factory=list, max_length=100_000)
    k: int = Field(default=10, ge=1, le=1000)
    exact: bool = False


def _items(ranked: Recommendation) -> list[dict[str, Any]]:
    return [{"track_id": track, "score": score} for track, score in ranked.items]


def create_app(settings: Settings) -> FastAPI:
    holder = ModelHolder(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from threadpoolctl import threadpool_limits

        # Requests run on a thread pool, each with its own matrix-vector products: BLAS threads on top of
        # those only fight over the cores (measured: bench/RESULTS.md, "Serving").
        with threadpool_limits(limits=1, user_api="blas"):
            holder.start()
            yield
            holder.stop()

    app = FastAPI(
        title="music-recsys",
        summary="Recommendations from the champion ALS model: Annoy candidates re-ranked exactly.",
        lifespan=lifespan,
    )
    app.state.holder = holder

    def current() -> ServingModel:
        model = holder.model  # one read: the whole request uses this model
        if model is None:
            raise HTTPException(503, detail=holder.last_error or "no model loaded yet")
        return model

    @app.get("/healthz")
    def healthz():
        model = holder.model
        if model is None:
            return JSONResponse({"status": "loading", "detail": holder.last_error}, status_code=503)
        return {"status": "ok", "model_version": model.version}

    @app.get("/model")
    def model_card():
        model = current()
        return {**model.card, "loaded_at": holder.loaded_at, "path": str(model.folder)}

    @app.get("/users/{user_id}/recommendations")
    def user_recommendations(
        user_id: str,
        k: int = Query(10, ge=1, le=1000, description="list length"),
        exact: bool = Query(False, description="exact search instead of the Annoy index"),
    ):
        model = current()
        try:
            ranked = model.recommend(user_id, k, exact)
        except UnknownId as exc:
            raise HTTPException(404, detail=str(exc)) from None
        return {
            "user_id": user_id,
            "model_version": model.version,
            "exact": ranked.exact,
            "fallback": ranked.fallback,
            "items": _items(ranked),
        }

    @app.post("/recommendations")
    def history_recommendations(request: HistoryRequest):
        model = current()
        answer = model.recommend_for_history(((p.track_id, p.count) for p in request.history), request.k, request.exact)
        return {
            "model_version": model.version,
            "exact": answer["recommendation"].exact,
            "items": _items(answer["recommendation"]),
            "known_tracks": answer["known_tracks"],
            "unknown_tracks": answer["unknown_tracks"],
            "fallback": answer["fallback"],
        }

    @app.get("/tracks/{track_id}/similar")
    def similar_tracks(track_id: str, k: int = Query(10, ge=1, le=1000)):
        model = current()
        try:
            similar = model.similar(track_id, k)
        except UnknownId as exc:
            raise HTTPException(404, detail=str(exc)) from None
        return {
            "track_id": track_id,
            "model_version": model.version,
            "items": [{"track_id": t, "score": s} for t, s in similar],
        }

    return app
