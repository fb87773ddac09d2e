"""Fast top-k search over item factors: exact baselines and Annoy, measured side by side.

Exact baselines: single-query (one matrix-vector product + the exact cut) and batched (a block of
users per matrix product, ``music_recsys.evaluation.topk``). Annoy is measured with two metrics, always named:
``dot`` (Annoy's inner-product index) and ``angular_ip`` (the inner-product-to-angular transform:
items get an extra coordinate sqrt(M^2 - |v|^2), queries a 0, so angular order equals dot order).
Recall@k is measured as the API serves: each query user's train tracks excluded from the exact top-k by
dot product (the truth) and from Annoy's answer, through ``served_top_k`` — the function the serving
model itself calls — so the operating point the gate ships is the one users get.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from music_recsys.evaluation.topk import rerank, top_k, top_k_one

ANNOY_METRICS = ("dot", "angular_ip")


def check_annoy_metric(metric: str) -> str:
    """``metric`` if it is one of ours, else a ValueError naming the choices."""
    if metric not in ANNOY_METRICS:
        raise ValueError(f"Annoy metric {metric!r}: choose from {ANNOY_METRICS}")
    return metric


def annoy_index_metric(metric: str) -> str:
    """The metric Annoy itself is built with: ``angular`` for the transform, else ``dot``."""
    return "angular" if check_annoy_metric(metric) == "angular_ip" else "dot"


def annoy_dim(rank: int, metric: str) -> int:
    """Dimensions of the index: the factors' rank, plus the transform's extra coordinate."""
    return rank + (1 if check_annoy_metric(metric) == "angular_ip" else 0)


def augment_for_angular(item_vectors: np.ndarray) -> np.ndarray:
    """Items with the extra coordinate sqrt(M^2 - |v|^2) that turns inner product into angle."""
    norms_sq = np.einsum("ij,ij->i", item_vectors, item_vectors, dtype=np.float64)
    extra = np.sqrt(np.maximum(norms_sq.max() - norms_sq, 0.0))
    return np.hstack([item_vectors, extra[:, None]]).astype(np.float32)


def augment_query(query: np.ndarray) -> np.ndarray:
    """A query with the transform's 0 coordinate: its angle to an augmented item orders as the dot product."""
    return np.append(query, np.float32(0.0)).astype(np.float32)


def index_vectors(item_vectors: np.ndarray, metric: str) -> np.ndarray:
    """The vectors an index of ``metric`` holds for these item factors."""
    if check_annoy_metric(metric) == "angular_ip":
        return augment_for_angular(item_vectors)
    return np.asarray(item_vectors, dtype=np.float32)


def query_vector(vector: np.ndarray, metric: str) -> np.ndarray:
    """What to ask an index of ``metric`` for a user factor."""
    return augment_query(vector) if check_annoy_metric(metric) == "angular_ip" else vector


def open_index(path: str | os.PathLike, rank: int, metric: str) -> Any:
    """A saved index, mmapped: shared with any other process that loads the same file."""
    from annoy import AnnoyIndex

    index = AnnoyIndex(annoy_dim(rank, metric), annoy_index_metric(metric))
    index.load(str(path))
    return index


class AnnoySearcher:
    """A seeded Annoy index over item factors, saved to disk and reloaded with mmap."""

    def __init__(
        self,
        item_vectors: np.ndarray,
        metric: str,
        n_trees: int,
        seed: int,
        path: str | os.PathLike,
        n_jobs: int = 1,
    ):
        from annoy import AnnoyIndex

        self.metric = check_annoy_metric(metric)
        self.rank = item_vectors.shape[1]
        vectors = index_vectors(item_vectors, metric)
        self.dim = vectors.shape[1]
        started = time.perf_counter()
        index = AnnoyIndex(self.dim, annoy_index_metric(metric))
        index.set_seed(seed)  # before add_item, so the same data gives the same trees
        for i, vector in enumerate(vectors):
            index.add_item(i, vector)
        # Annoy's threaded build (n_jobs != 1) ignores the random seed: seen here, two builds with
        # seed 9 and n_jobs=-1 differed. n_jobs=1 keeps builds reproducible; pass -1 for speed.
        index.build(n_trees, n_jobs=n_jobs)
        index.save(str(path))
        self.build_seconds = time.perf_counter() - started
        index.unload()
        self.path = Path(path)
        self.index_bytes = self.path.stat().st_size
        self.index = open_index(path, self.rank, metric)  # mmap: what a serving process does

    def query(self, vector: np.ndarray, k: int, search_k: int = -1) -> list[int]:
        return self.index.get_nns_by_vector(query_vector(vector, self.metric), k, search_k=search_k)

    def close(self) -> None:
        self.index.unload()


def served_top_k(
    index: Any,
    metric: str,
    item_vectors: np.ndarray,
    vector: np.ndarray,
    k: int,
    exclude: np.ndarray,
    factor: int,
    search_k: int,
    measured_candidates: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """What the API answers from an Annoy index: ``factor`` candidates per track asked for (plus room for
    the excluded tracks), excluded tracks dropped, the rest re-ranked exactly to k; None when too few are
    left (the API then answers exactly). ``search_k`` was measured for ``measured_candidates`` candidates
    and grows in proportion to the candidates asked for, keeping the measured recall per candidate."""
    wanted = k * factor + len(exclude)
    grown = max(search_k, search_k * wanted // max(measured_candidates, 1)) if search_k > 0 else search_k
    found = np.asarray(index.get_nns_by_vector(query_vector(vector, metric), wanted, search_k=grown), dtype=np.int64)
    if len(exclude):
        found = found[~np.isin(found, exclude)]
    if len(found) < min(k, len(item_vectors) - len(exclude)):
        return None
    return rerank(item_vectors, vector, found, k)


def recall(approx: Iterable[int], exact: np.ndarray) -> float:
    if len(exact) == 0:
        return 1.0
    return len(set(approx) & set(exact.tolist())) / len(exact)


@dataclass
class SearchMeasurement:
    metric: str
    n_trees: int
    search_k: int
    k: int
    candidates: int  # items asked of the index; > k means the candidates were re-ranked exactly
    recall: float
    qps: float
    mean_ms: float
    p50_ms: float
    p99_ms: float
    build_seconds: float
    index_bytes: int
    n_items: int
    n_queries: int


def _latency_stats(latencies_s: np.ndarray) -> dict[str, float]:
    ms = latencies_s * 1000.0
    total = latencies_s.sum()
    return {
        "qps": float(len(ms) / total) if total > 0 else float("inf"),
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def meaningful_search_k(values: Iterable[int], n_trees: int, n_items: int) -> list[int]:
    """Drop search_k values past the point where Annoy already visits every item in every tree.

    The first value at or past ``n_trees * n_items`` is kept (it is the exhaustive setting); larger
    ones repeat it. -1 (Annoy's default, n_trees * k) is always kept.
    """
    cap = n_trees * n_items
    kept, reached = [], False
    for value in sorted(set(values)):
        if value == -1:
            kept.append(value)
        elif not reached:
            kept.append(value)
            reached = value >= cap
    return kept


def sweep(
    item_vectors: np.ndarray,
    queries: np.ndarray,
    ks: Iterable[int],
    trees: Iterable[int],
    search_ks: Iterable[int],
    seed: int,
    workdir: str | os.PathLike | None = None,
    metrics: Iterable[str] = ANNOY_METRICS,
    rerank_factors: Iterable[int] = (1, 4),
    exclude: list[np.ndarray] | None = None,
    target_recall: float | None = None,
) -> list[SearchMeasurement]:
    """Measure exact baselines and every Annoy (metric, n_trees, search_k, re-rank) at every k.

    ``exclude[i]`` lists the tracks query i must not get (its train tracks, as served); every answer is
    produced the way the API produces it (``served_top_k``). A re-rank factor f asks Annoy for f * k
    candidates (plus the excluded) and keeps the exact top k of those.

    Once a search_k reaches recall 1 for an index, k and re-rank factor with every answer from the index
    (none fell back to the exact search), the larger search_k values of that combination are not measured: a
    larger search_k visits a superset of the same index's nodes and the answer is the exact top k of the best
    candidates visited, so they could only be slower at the same recall (dominated, never on the frontier).
    With ``target_recall``, a combination also stops at the first search_k that reaches it while slower than
    the exact search: the larger ones do more work still, so they are slower than exact at a recall no higher
    than its 1 (dominated by exact search), and the fastest configuration reaching the target — the operating
    point — is among those measured. -1 (Annoy's own default) is always measured.
    """
    item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n_items, n_queries = len(item_vectors), len(queries)
    if exclude is None:
        exclude = [np.zeros(0, dtype=np.int64)] * n_queries
    if len(exclude) != n_queries:
        raise ValueError(f"exclude has {len(exclude)} rows for {n_queries} queries")
    ks = sorted({min(k, n_items) for k in ks})
    out: list[SearchMeasurement] = []

    def measure(metric, n_trees, search_k, k, candidates, search_fn, truth, build_seconds, index_bytes) -> list:
        """Time ``search_fn`` on every query, score it against ``truth`` (None: it is the truth); return answers."""
        # Warm-up (caches, CPU clock, mmap pages), so the first configuration measured is not penalised.
        for i, q in enumerate(queries[: min(10, n_queries)]):
            search_fn(q, exclude[i])
        latencies, recalls, answers = np.empty(n_queries), np.empty(n_queries), []
        for i, q in enumerate(queries):
            started = time.perf_counter()
            found = search_fn(q, exclude[i])
            latencies[i] = time.perf_counter() - started
            recalls[i] = recall(found, truth[i]) if truth is not None else 1.0
            answers.append(found)
        out.append(
            SearchMeasurement(
                metric,
                n_trees,
                search_k,
                k,
                candidates,
                float(recalls.mean()),
                **_latency_stats(latencies),
                build_seconds=build_seconds,
                index_bytes=index_bytes,
                n_items=n_items,
                n_queries=n_queries,
            )
        )
        return answers

    truth: dict[int, list[np.ndarray]] = {}
    exact_qps: dict[int, float] = {}
    for k in ks:
        # The timed single-query exact search is also the ground truth for every other configuration.
        truth[k] = measure(
            "exact", 0, 0, k, k, lambda q, x, k=k: top_k_one(item_vectors, q, k, x)[0], None, 0.0, item_vectors.nbytes
        )
        exact_qps[k] = out[-1].qps
        top_k(queries[: min(10, n_queries)], item_vectors, k, exclude=exclude[: min(10, n_queries)])  # warm-up
        started = time.perf_counter()
        batched = top_k(queries, item_vectors, k, exclude=exclude)
        per_query = np.full(n_queries, (time.perf_counter() - started) / n_queries)
        batched_recall = float(np.mean([recall(b, e) for b, e in zip(batched, truth[k], strict=True)]))
        out.append(
            SearchMeasurement(
                "exact_batched",
                0,
                0,
                k,
                k,
                batched_recall,
                **_latency_stats(per_query),
                build_seconds=0.0,
                index_bytes=item_vectors.nbytes,
                n_items=n_items,
                n_queries=n_queries,
            )
        )
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for metric in metrics:
            for n_trees in sorted(set(trees)):
                searcher = AnnoySearcher(item_vectors, metric, n_trees, seed, Path(tmp) / f"{metric}_{n_trees}.ann")
                dominated: set[tuple[int, int]] = set()  # (k, candidates) whose larger search_k are dominated
                for search_k in meaningful_search_k(search_ks, n_trees, n_items):
                    for k in ks:
                        for factor in sorted(set(rerank_factors)):
                            n_cand = min(k * factor, n_items)
                            if factor > 1 and n_cand in (k, n_items):
                                # The catalogue is too small for re-ranking to differ, or re-ranking would
                                # take every track: the exact search by a detour (slower, same answer).
                                continue
                            if search_k != -1 and (k, n_cand) in dominated:
                                continue  # dominated: a smaller search_k already found every top-k item
                            fell_back: list[bool] = []
                            fn = functools.partial(
                                _served,
                                searcher,
                                item_vectors,
                                k=k,
                                candidates=n_cand,
                                search_k=search_k,
                                fell_back=fell_back,
                            )
                            measure(
                                metric,
                                n_trees,
                                search_k,
                                k,
                                n_cand,
                                fn,
                                truth[k],
                                searcher.build_seconds,
                                searcher.index_bytes,
                            )
                            done = out[-1].recall == 1.0 and not any(fell_back)
                            if target_recall is not None and out[-1].recall >= target_recall:
                                done = done or out[-1].qps < exact_qps[k]  # from here on, exact search wins
                            if search_k != -1 and done:
                                dominated.add((k, n_cand))
                searcher.close()
    return out


def _served(
    searcher: AnnoySearcher,
    item_vectors: np.ndarray,
    query: np.ndarray,
    exclude: np.ndarray,
    *,
    k,
    candidates,
    search_k,
    fell_back: list[bool] | None = None,
) -> np.ndarray:
    """The API's answer through this index; when Annoy leaves too few, the exact answer it falls back to
    (``fell_back`` gets one entry per call: whether it did)."""
    factor = max(1, candidates // k)
    found = served_top_k(searcher.index, searcher.metric, item_vectors, query, k, exclude, factor, search_k, candidates)
    if fell_back is not None:
        fell_back.append(found is None)
    return found[0] if found is not None else top_k_one(item_vectors, query, k, exclude)[0]


def operating_point(
    measurements: list[SearchMeasurement], k: int, target_recall: float, metrics: Iterable[str] = ANNOY_METRICS
) -> dict:
    """The fastest Annoy configuration reaching ``target_recall`` at k, with its speedup over exact."""
    metrics = tuple(metrics)
    exact = next(m for m in measurements if m.metric == "exact" and m.k == k)
    reaching = [m for m in measurements if m.metric in metrics and m.k == k and m.recall >= target_recall]
    summary = {
        "k": k,
        "target_recall": target_recall,
        "exact_qps": exact.qps,
        "exact_batched_qps": next(m.qps for m in measurements if m.metric == "exact_batched" and m.k == k),
    }
    if not reaching:
        best = max(
            (m for m in measurements if m.metric in metrics and m.k == k),
            key=lambda m: m.recall,
            default=None,
        )
        summary.update(
            {
                "found": False,
                "message": f"no Annoy configuration reaches recall@{k} >= {target_recall}",
                "best_recall": best.recall if best else None,
            }
        )
        return summary
    fastest = max(reaching, key=lambda m: m.qps)
    summary.update({"found": True, **asdict(fastest), "speedup_vs_exact": fastest.qps / exact.qps})
    return summary


def frontier(measurements: list[SearchMeasurement], k: int) -> list[dict]:
    """Annoy configurations at k that no other one beats on both recall and speed (best recall first)."""
    candidates = sorted(
        (m for m in measurements if m.metric in ANNOY_METRICS and m.k == k), key=lambda m: (-m.recall, -m.qps)
    )
    kept, best_qps = [], 0.0
    for m in candidates:
        if m.qps > best_qps:
            kept.append(
                {
                    "metric": m.metric,
                    "n_trees": m.n_trees,
                    "search_k": m.search_k,
                    "candidates": m.candidates,
                    "recall": m.recall,
                    "qps": m.qps,
                    "p99_ms": m.p99_ms,
                }
            )
            best_qps = m.qps
    return kept


def query_users(validation_users: np.ndarray, user_factors: np.ndarray, max_queries: int, seed: int) -> np.ndarray:
    """The search's query users: validation users with factors (a transform can leave a user without), a
    seeded sample of at most ``max_queries`` (ascending)."""
    users = np.unique(validation_users)
    users = users[np.any(user_factors[users] != 0, axis=1)]
    if len(users) > max_queries:
        users = np.sort(users[np.random.default_rng(seed).choice(len(users), max_queries, replace=False)])
    return users


def better_metric(
    measurements: list[SearchMeasurement], k: int, target_recall: float, metrics: Iterable[str] = ANNOY_METRICS
) -> dict[str, Any]:
    """Which Annoy metric serves better at k: the faster one at the target recall, else the one reaching the
    higher recall; with each metric's q/s at the target (None: not reached) and its best recall."""
    metrics = tuple(metrics)
    per_metric = {m: operating_point(measurements, k, target_recall, [m]) for m in metrics}
    max_recall = {m: max(x.recall for x in measurements if x.metric == m and x.k == k) for m in metrics}
    better = max(metrics, key=lambda m: (per_metric[m]["found"], per_metric[m].get("qps", 0.0), max_recall[m]))
    return {
        "better_metric": better,
        "qps_at_target_by_metric": {m: p.get("qps") for m, p in per_metric.items()},
        "max_recall_by_metric": max_recall,
    }


def search_rows(
    measurements: list[SearchMeasurement], points: dict[int, dict[str, Any]], trial_id: str
) -> list[dict[str, Any]]:
    """The ``ann_trials`` rows of a sweep: every measurement, flagged when it is the operating point at its k."""

    def is_operating_point(m: SearchMeasurement) -> bool:
        p = points[m.k]
        return bool(p["found"]) and (m.metric, m.n_trees, m.search_k, m.candidates) == (
            p["metric"],
            p["n_trees"],
            p["search_k"],
            p["candidates"],
        )

    return [{**asdict(m), "trial_id": trial_id, "is_operating_point": is_operating_point(m)} for m in measurements]
