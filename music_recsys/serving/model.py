"""A loaded model bundle and the answers the API gives from it: plain Python, no web framework.

``ServingModel`` is immutable once loaded: the API swaps models by replacing one reference, so a request
finishes on the model it started with. Recommendations come from the Annoy index at the bundle's
measured operating point, its candidates re-ranked exactly by inner product (``exact=True``, or a bundle
without an index: a full matrix-vector product and a partial sort).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from music_recsys.evaluation.search import open_index, served_top_k
from music_recsys.evaluation.topk import top_k_one
from music_recsys.model.foldin import fold_in
from music_recsys.store.bundle import ANNOY_FILE, load_arrays, read_labels, verify_bundle


class UnknownId(LookupError):
    """A user or track the model does not know."""


@dataclass(frozen=True)
class Recommendation:
    items: list[tuple[str, float]]
    exact: bool
    fallback: str | None = None  # "popularity" when the model has no factor to rank with


class ServingModel:
    def __init__(self, folder: str | Path):
        started = time.perf_counter()
        self.folder = Path(folder)
        self.card: dict[str, Any] = verify_bundle(self.folder)
        self.version: str = self.card["version"]
        arrays = load_arrays(self.folder)
        self.user_factors = arrays["user_factors"]
        self.item_factors = np.ascontiguousarray(arrays["item_factors"], dtype=np.float32)
        self.played_indptr = arrays["played_indptr"]
        self.played_indices = arrays["played_indices"]
        self.popularity = arrays["popularity"]
        self.track_ids = np.array(read_labels(self.folder, "tracks"), dtype=object)
        self.user_index = {user: i for i, user in enumerate(read_labels(self.folder, "users"))}
        self.track_index = {track: i for i, track in enumerate(self.track_ids)}
        self.gram = self.item_factors.T.astype(np.float64) @ self.item_factors.astype(np.float64)
        norms = np.linalg.norm(self.item_factors, axis=1)
        self.unit_items = self.item_factors / np.where(norms > 0, norms, 1.0)[:, None]
        self.has_factors = norms > 0
        self.no_factors = np.flatnonzero(~self.has_factors)
        self.by_popularity = np.argsort(-self.popularity, kind="stable")
        self.serving = self.card.get("serving")
        self.annoy = None
        if self.serving:
            rank = self.item_factors.shape[1]
            self.annoy = open_index(self.folder / ANNOY_FILE, rank, self.serving["metric"])  # mmap: shared
            self.candidate_factor = max(1, self.serving["candidates"] // self.serving["k"])
        self.load_seconds = time.perf_counter() - started

    # --- lookups ---------------------------------------------------------------------------------

    def user(self, user_id: str) -> int:
        try:
            return self.user_index[user_id]
        except KeyError:
            raise UnknownId(
                f"user {user_id!r} is not in model {self.version}'s training data; "
                "POST their listening history to /recommendations instead"
            ) from None

    def played(self, user: int) -> np.ndarray:
        return self.played_indices[self.played_indptr[user] : self.played_indptr[user + 1]]

    # --- ranking ---------------------------------------------------------------------------------

    def exact_top_k(self, vector: np.ndarray, k: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return top_k_one(self.item_factors, vector, k, exclude)

    def approximate_top_k(
        self, vector: np.ndarray, k: int, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Annoy candidates (as many more as the operating point re-ranks, plus room for the excluded),
        re-ranked exactly; None when too few are left after exclusion. The fast-search stage measured the
        operating point through this same function (``served_top_k``)."""
        return served_top_k(
            self.annoy,
            self.serving["metric"],
            self.item_factors,
            vector,
            k,
            exclude,
            self.candidate_factor,
            self.serving["search_k"],
            self.serving["candidates"],
        )

    def popular(self, k: int, exclude: np.ndarray) -> Recommendation:
        """The most played tracks in train, without ``exclude``: for a listener the model cannot place."""
        top = self.by_popularity[~np.isin(self.by_popularity, exclude)][:k]
        return Recommendation([(self.track_ids[i], float(self.popularity[i])) for i in top], True, "popularity")

    def rank(self, vector: np.ndarray | None, k: int, exclude: np.ndarray, exact: bool) -> Recommendation:
        if vector is None or not np.any(vector):
            return self.popular(k, exclude)
        found = None if exact or self.annoy is None else self.approximate_top_k(vector, k, exclude)
        used_exact = found is None
        items, scores = self.exact_top_k(vector, k, exclude) if used_exact else found
        return Recommendation([(self.track_ids[i], float(s)) for i, s in zip(items, scores, strict=True)], used_exact)

    # --- the API's answers -----------------------------------------------------------------------

    def recommend(self, user_id: str, k: int, exact: bool = False) -> Recommendation:
        """Top k for a training user, tracks they played in train excluded; the popular tracks for a user the
        transform left without factors."""
        user = self.user(user_id)
        return self.rank(self.user_factors[user], k, self.played(user), exact)

    def recommend_for_history(self, history: Iterable[tuple[str, int]], k: int, exact: bool = False) -> dict:
        """Top k for a listener who is not in the training data: fold-in of their history."""
        counts: dict[int, int] = {}
        unknown = []
        for track_id, count in history:
            if track_id in self.track_index:
                index = self.track_index[track_id]
                counts[index] = counts.get(index, 0) + count  # duplicates summed, as ingest does
            else:
                unknown.append(track_id)
        items = np.fromiter(counts, dtype=np.int64, count=len(counts))
        params = self.card["params"]
        vector = None
        if len(items):
            vector = fold_in(
                self.item_factors,
                self.gram,
                items,
                np.fromiter(counts.values(), dtype=np.float64, count=len(counts)),
                alpha=params["alpha"],
                reg_param=params["reg_param"],
                transform=params["transform"],
                drop_threshold=params["drop_threshold"],
                nonnegative=params["nonnegative"],
            )
        ranked = self.rank(vector, k, np.sort(items), exact)
        return {
            "recommendation": ranked,
            "unknown_tracks": unknown,
            "known_tracks": len(counts),
            "fallback": ranked.fallback,
        }

    def similar(self, track_id: str, k: int) -> list[tuple[str, float]]:
        """Nearest tracks by cosine of the item factors (exact), the track itself left out."""
        if track_id not in self.track_index:
            raise UnknownId(f"track {track_id!r} is not in model {self.version}'s catalogue")
        index = self.track_index[track_id]
        if not self.has_factors[index]:
            raise UnknownId(f"track {track_id!r} has no factors in model {self.version} (its transform dropped it)")
        # Itself and tracks without factors (cosine undefined) are never similar.
        top, scores = top_k_one(self.unit_items, self.unit_items[index], k, np.append(self.no_factors, index))
        return [(self.track_ids[i], float(s)) for i, s in zip(top, scores, strict=True)]
