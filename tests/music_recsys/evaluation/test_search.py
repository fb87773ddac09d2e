"""Exact and approximate search through one behaviour suite, plus the sweep and operating point."""

from __future__ import annotations

import numpy as np
import pytest

from music_recsys.evaluation.search import (
    AnnoySearcher,
    SearchMeasurement,
    annoy_dim,
    annoy_index_metric,
    augment_for_angular,
    augment_query,
    better_metric,
    frontier,
    index_vectors,
    meaningful_search_k,
    open_index,
    operating_point,
    query_users,
    query_vector,
    recall,
    search_rows,
    served_top_k,
    sweep,
)
from music_recsys.evaluation.topk import top_k_one


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
        return top_k_one(self.items, vector, k)[0].tolist()

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


def test_a_search_k_past_perfect_recall_is_not_measured(catalogue, tmp_path):
    items, queries = catalogue
    values = [12, 40, 200, 1000]
    rows = sweep(items, queries, ks=[10], trees=[1], search_ks=values, seed=1, workdir=tmp_path)
    cut = 0
    for metric in ("dot", "angular_ip"):
        for candidates in (10, 40):
            measured = [r for r in rows if (r.metric, r.candidates) == (metric, candidates)]
            got = [r.search_k for r in measured]
            assert got == values[: len(got)]  # in order, and only the tail is left out
            assert all(r.recall < 1.0 for r in measured[:-1])  # measured on until the first perfect one
            if len(got) < len(values):
                cut += 1
                assert measured[-1].recall == 1.0
                # What was left out would have been perfect too: each measured on its own.
                for value in values[len(got) :]:
                    alone = sweep(items, queries, [10], [1], [value], seed=1, workdir=tmp_path, metrics=[metric])
                    assert next(r for r in alone if r.candidates == candidates).recall == 1.0
    assert cut  # the catalogue is small enough for some combination to be exact before 1,000
    # A perfect recall that came from the exact fallback (too few candidates from the index) stops nothing.
    few = sweep(items, queries, ks=[50], trees=[1], search_ks=[2, 5000], seed=1, workdir=tmp_path, metrics=["dot"])
    fallback = [r for r in few if (r.metric, r.candidates) == ("dot", 50)]
    assert [r.search_k for r in fallback] == [2, 5000] and fallback[0].recall == 1.0
    # Re-ranking 4 x 100 candidates of a 300-track catalogue would re-rank every track: the exact search.
    whole = sweep(items, queries, ks=[100], trees=[1], search_ks=[50], seed=1, workdir=tmp_path, metrics=["dot"])
    assert {r.candidates for r in whole if r.metric == "dot"} == {100} and len(items) == 300


def test_a_search_k_past_the_target_while_slower_than_exact_is_not_measured(catalogue, tmp_path):
    items, queries = catalogue
    values = [12, 40, 200, 1000]
    rows = sweep(items, queries, [10], [1, 4], values, seed=1, workdir=tmp_path, target_recall=0.5)
    exact_qps = next(r.qps for r in rows if r.metric == "exact")
    cut = 0
    for metric in ("dot", "angular_ip"):
        for n_trees in (1, 4):
            for candidates in (10, 40):
                key = (metric, n_trees, candidates)
                measured = [r for r in rows if (r.metric, r.n_trees, r.candidates) == key]
                assert [r.search_k for r in measured] == values[: len(measured)], key
                # Measured on while nothing so far made the rest dominated ...
                for r in measured[:-1]:
                    assert r.recall < 0.5 or (r.qps >= exact_qps and r.recall < 1.0), key
                # ... and cut only after a point that did: at the target and slower than exact, or perfect.
                if len(measured) < len(values):
                    cut += 1
                    last = measured[-1]
                    assert (last.recall >= 0.5 and last.qps < exact_qps) or last.recall == 1.0, key
    assert cut
    # The operating point is the fastest configuration at the target, which is always among those measured.
    point = operating_point(rows, 10, 0.5)
    assert point["found"] and point["recall"] >= 0.5


@pytest.mark.parametrize(("metric", "annoy_metric", "dim"), [("dot", "dot", 6), ("angular_ip", "angular", 7)])
def test_one_metric_mapping_for_building_querying_and_loading(catalogue, tmp_path, metric, annoy_metric, dim):
    items, queries = catalogue
    assert annoy_index_metric(metric) == annoy_metric and annoy_dim(6, metric) == dim
    assert index_vectors(items, metric).shape == (len(items), dim)
    assert query_vector(queries[0], metric).shape == (dim,)
    built = AnnoySearcher(items, metric, n_trees=2, seed=3, path=tmp_path / "i.ann")
    # What serving loads (open_index) answers as what was built.
    loaded = open_index(tmp_path / "i.ann", 6, metric)
    q = query_vector(queries[0], metric)
    assert loaded.get_nns_by_vector(q, 10, search_k=50) == built.query(queries[0], 10, search_k=50)
    loaded.unload()
    built.close()


def test_unknown_annoy_metric_is_refused_with_the_choices(catalogue, tmp_path):
    with pytest.raises(ValueError, match=r"Annoy metric 'euclidean': choose from \('dot', 'angular_ip'\)"):
        annoy_index_metric("euclidean")
    with pytest.raises(ValueError, match="'cosine'"):
        AnnoySearcher(catalogue[0], "cosine", n_trees=1, seed=1, path=tmp_path / "x.ann")


def test_query_users_skip_users_without_factors_and_sample_with_the_seed():
    factors = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [4.0, 0.0]], dtype=np.float32)
    # Validation rows repeat users; user 0 has no factors; user 4 is not in validation.
    users = np.array([2, 0, 1, 2, 3, 3])
    np.testing.assert_array_equal(query_users(users, factors, 10, seed=1), [1, 2, 3])
    sample = query_users(users, factors, 2, seed=1)
    assert len(sample) == 2 and set(sample) <= {1, 2, 3}
    np.testing.assert_array_equal(sample, query_users(users, factors, 2, seed=1))


def test_recall_is_measured_as_served_with_played_tracks_excluded(catalogue, tmp_path):
    """Each query's played tracks leave the truth and the index's answer alike, through the function the
    serving model calls: a configuration's recall is what the API's users get."""
    items, queries = catalogue
    # Played: the 15 best tracks of every query but one in three, so the served top 10 differ from the raw.
    played = [top_k_one(items, q, 15)[0][i % 3 :: 3].copy() for i, q in enumerate(queries)]
    rows = sweep(items, queries, ks=[10], trees=[4], search_ks=[60], seed=1, workdir=tmp_path, exclude=played)
    truth = [top_k_one(items, q, 10, p)[0] for q, p in zip(queries, played, strict=True)]
    assert all(not np.isin(t, p).any() for t, p in zip(truth, played, strict=True))
    searcher = AnnoySearcher(items, "dot", 4, 1, tmp_path / "again.ann")
    for factor in (1, 4):
        served = []
        for q, p in zip(queries, played, strict=True):
            found = served_top_k(searcher.index, "dot", items, q, 10, p, factor, 60, 10 * factor)
            served.append(found[0] if found is not None else top_k_one(items, q, 10, p)[0])
        expected = np.mean([recall(s, t) for s, t in zip(served, truth, strict=True)])
        row = next(r for r in rows if (r.metric, r.candidates) == ("dot", 10 * factor))
        assert row.recall == pytest.approx(expected)
        assert all(not np.isin(s, p).any() for s, p in zip(served, played, strict=True))
    searcher.close()
    exact = next(r for r in rows if r.metric == "exact_batched")
    assert exact.recall == 1.0


def _m(metric, recall, qps, k=10, n_trees=1, search_k=100, candidates=10):
    return SearchMeasurement(metric, n_trees, search_k, k, candidates, recall, qps, 1.0, 1.0, 2.0, 0.1, 10, 100, 5)


def test_better_metric_is_the_faster_at_target_else_the_higher_recall():
    exact = [_m("exact", 1.0, 100.0), _m("exact_batched", 1.0, 1000.0)]
    both_reach = [*exact, _m("dot", 0.95, 500.0), _m("angular_ip", 0.99, 800.0), _m("dot", 0.5, 9000.0)]
    chosen = better_metric(both_reach, 10, 0.9)
    assert chosen["better_metric"] == "angular_ip"
    assert chosen["qps_at_target_by_metric"] == {"dot": 500.0, "angular_ip": 800.0}
    assert chosen["max_recall_by_metric"] == {"dot": 0.95, "angular_ip": 0.99}
    # Only dot reaches the target: dot, however fast angular is.
    one_reaches = [*exact, _m("dot", 0.92, 10.0), _m("angular_ip", 0.8, 5000.0)]
    assert better_metric(one_reaches, 10, 0.9)["better_metric"] == "dot"
    assert better_metric(one_reaches, 10, 0.9)["qps_at_target_by_metric"]["angular_ip"] is None
    # Neither reaches it: the higher recall wins.
    neither = [*exact, _m("dot", 0.6, 10.0), _m("angular_ip", 0.7, 1.0)]
    assert better_metric(neither, 10, 0.9)["better_metric"] == "angular_ip"


def test_search_rows_flag_only_the_operating_point():
    rows = [
        _m("exact", 1.0, 100.0),
        _m("exact_batched", 1.0, 1000.0),
        _m("dot", 0.95, 500.0),
        _m("dot", 0.99, 50.0, search_k=500),
    ]
    points = {10: operating_point(rows, 10, 0.9)}
    flagged = search_rows(rows, points, "t1")
    assert [r["is_operating_point"] for r in flagged] == [False, False, True, False]
    assert all(r["trial_id"] == "t1" for r in flagged) and flagged[2]["qps"] == 500.0
    unreachable = {10: operating_point(rows, 10, 1.5)}
    assert not any(r["is_operating_point"] for r in search_rows(rows, unreachable, "t1"))
