"""Exact and approximate search through one behaviour suite, plus the sweep and operating point."""

from __future__ import annotations

import numpy as np
import pytest

from music_recsys.evaluation.search import (
    AnnoySearcher,
    augment_for_angular,
    augment_query,
    exact_top_k_single,
    frontier,
    meaningful_search_k,
    operating_point,
    recall,
    sweep,
)


@pytest.fixture(scope="module")
def catalogue():
    rng = np.random.default_rng(11)
    # Nonnegative like ALS factors with nonnegative=True, with varied norms (popularity).
    items = np.abs(rng.normal(size=(300, 6))).astype(np.float32) * rng.uniform(0.2, 2.0, size=(300, 1)).astype(
        np.float32
    )
    queries = np.abs(rng.normal(size=(25, 6))).astype(np.float32)
    return items, queries


class ExactSearcher:
    """Adapter so exact search runs through the same behaviour tests as Annoy."""

    def __init__(self, items):
        self.items = items

    def query(self, vector, k, search_k=-1):
        return exact_top_k_single(self.items, vector, k).tolist()

    def close(self):
        pass


def _truth(items, queries, k):
    return [np.argsort(-(items @ q), kind="stable")[:k] for q in queries]


@pytest.fixture(params=["exact", "dot", "angular_ip"])
def searcher(request, catalogue, tmp_path):
    items, _ = catalogue
    if request.param == "exact":
        s = ExactSearcher(items)
    else:
        s = AnnoySearcher(items, request.param, n_trees=3, seed=5, path=tmp_path / "index.ann")
    yield s
    s.close()


def test_exhaustive_search_finds_the_exact_top_k(searcher, catalogue):
    """Known answer: with search_k >= n_items * n_trees every item is visited, so recall must be 1."""
    items, queries = catalogue
    for q, truth in zip(queries, _truth(items, queries, 10), strict=True):
        found = searcher.query(q, 10, search_k=len(items) * 3 * 4)
        assert recall(found, truth) == 1.0


def test_results_are_ranked_best_first(searcher, catalogue):
    items, queries = catalogue
    found = searcher.query(queries[0], 20, search_k=len(items) * 12)
    scores = items[found] @ queries[0]
    assert np.all(np.diff(scores) <= 1e-5)


def test_seeded_builds_are_reproducible_and_survive_reload(catalogue, tmp_path):
    items, queries = catalogue
    a = AnnoySearcher(items, "dot", n_trees=2, seed=9, path=tmp_path / "a.ann")
    b = AnnoySearcher(items, "dot", n_trees=2, seed=9, path=tmp_path / "b.ann")
    assert (tmp_path / "a.ann").read_bytes() == (tmp_path / "b.ann").read_bytes()
    # Small search_k: answers depend on the trees, so equal answers mean equal trees.
    for q in queries:
        assert a.query(q, 10, search_k=30) == b.query(q, 10, search_k=30)
    assert a.index.get_n_items() == len(items)  # what was loaded (mmap) is the whole index
    a.close()
    b.close()


def test_angular_transform_preserves_the_dot_product_order(catalogue):
    items, queries = catalogue
    augmented = augment_for_angular(items)
    norms = np.linalg.norm(augmented, axis=1)
    assert np.allclose(norms, norms.max(), rtol=1e-5)  # every item on one sphere
    for q in queries:
        aq = augment_query(q)
        cosine = (augmented @ aq) / (np.linalg.norm(augmented, axis=1) * np.linalg.norm(aq))
        by_angle = np.argsort(-cosine, kind="stable")[:15]
        by_dot = np.argsort(-(items @ q), kind="stable")[:15]
        # Same ranking up to float32 rounding: the dot products along both lists agree.
        assert np.allclose(items[by_angle] @ q, items[by_dot] @ q, rtol=1e-4)


def test_meaningful_search_k_trims_past_exhaustive():
    assert meaningful_search_k([100, 500, 1000, 5000, -1], n_trees=2, n_items=300) == [-1, 100, 500, 1000]
    assert meaningful_search_k([10, 20], n_trees=5, n_items=1000) == [10, 20]


def test_sweep_rows_and_operating_point(catalogue, tmp_path):
    items, queries = catalogue
    rows = sweep(items, queries, ks=[10, 50], trees=[1, 4], search_ks=[20, 5000], seed=1, workdir=tmp_path)
    metrics = {r.metric for r in rows}
    assert metrics == {"exact", "exact_batched", "dot", "angular_ip"}
    assert len([r for r in rows if r.metric == "exact"]) == 2
    # 2 metrics x 2 trees x 2 search_k (5000 >= 1*300 and >= 4*300: both kept) x 2 ks x 2 re-rank factors.
    assert len([r for r in rows if r.metric in ("dot", "angular_ip")]) == 2 * 2 * 2 * 2 * 2
    reranked = [r for r in rows if r.candidates > r.k]
    assert {r.candidates for r in reranked} == {40, 200}
    # Re-ranking more candidates never loses recall against the plain query with the same index settings.
    for r in reranked:
        plain = next(
            x
            for x in rows
            if (x.metric, x.n_trees, x.search_k, x.k, x.candidates) == (r.metric, r.n_trees, r.search_k, r.k, r.k)
        )
        assert r.recall >= plain.recall - 1e-9
    assert all(r.recall == 1.0 for r in rows if r.metric == "exact_batched")
    exhaustive = [r for r in rows if r.metric == "angular_ip" and r.search_k == 5000]
    assert all(r.recall == pytest.approx(1.0) for r in exhaustive)
    assert all(r.qps > 0 and r.p99_ms >= r.p50_ms for r in rows)
    point = operating_point(rows, 10, 0.9)
    assert point["found"] and point["recall"] >= 0.9
    assert point["speedup_vs_exact"] == pytest.approx(point["qps"] / point["exact_qps"])
    front = frontier(rows, 10)
    assert front[0]["recall"] == max(r.recall for r in rows if r.metric in ("dot", "angular_ip") and r.k == 10)
    assert all(a["recall"] >= b["recall"] and a["qps"] < b["qps"] for a, b in zip(front, front[1:], strict=False))
    impossible = operating_point([r for r in rows if r.search_k != 5000], 50, 1.01)
    assert impossible["found"] is False and "no Annoy configuration" in impossible["message"]
