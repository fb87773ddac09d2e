"""ServingModel on small hand-made bundles (no Spark): every answer checked against numpy done here.

The catalogue: 30 users x 60 tracks, rank 4. Each user's factor is the implicit-ALS user step of their
own play counts against the item factors (solved here, independently of ``music_recsys.model.foldin``), so
folding a training user's history in must give back their stored recommendations. Track t59 has
all-zero factors (a track the transform dropped), t11 is 2 x t10 (cosine 1), and user u29 played every
track but three.
"""

from __future__ import annotations

import numpy as np
import pytest

from music_recsys.serving.model import ServingModel, UnknownId
from tests.music_recsys.serving.bundles import (
    ANNOY,
    N_TRACKS,
    N_USERS,
    PARAMS,
    RANK,
    TRACKS,
    USERS,
    write_test_bundle,
)

ZERO_TRACK = 59  # all-zero factors
PARALLEL = (10, 11)  # t11 = 2 * t10
HEAVY_USER = 29
HEAVY_LEFT = [5, 17, 42]  # the only tracks u29 did not play


def als_user_step(items: np.ndarray, tracks: np.ndarray, counts: np.ndarray, alpha: float, reg: float) -> np.ndarray:
    """(YᵀY + Σ c y yᵀ + λ n I) x = Σ (1 + c) y with c = alpha * count: Hu, Koren, Volinsky with ALS-WR."""
    y = items.astype(np.float64)
    chosen = y[tracks]
    confidence = alpha * counts.astype(np.float64)
    a = y.T @ y + (chosen * confidence[:, None]).T @ chosen + reg * len(tracks) * np.eye(y.shape[1])
    b = ((1.0 + confidence)[:, None] * chosen).sum(axis=0)
    return np.linalg.solve(a, b)


def make_catalogue(seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(N_TRACKS, RANK)).astype(np.float32)
    items[PARALLEL[1]] = 2.0 * items[PARALLEL[0]]
    items[ZERO_TRACK] = 0.0
    history = {}  # user index -> (sorted track indices, play counts)
    for u in range(N_USERS):
        if u == HEAVY_USER:
            tracks = np.setdiff1d(np.arange(N_TRACKS), HEAVY_LEFT)
        else:
            tracks = np.sort(rng.choice(N_TRACKS, size=4 + u % 6, replace=False))
        history[u] = (tracks.astype(np.int32), rng.integers(1, 6, size=len(tracks)))
    users = np.stack(
        [als_user_step(items, t, c, PARAMS["alpha"], PARAMS["reg_param"]) for t, c in history.values()]
    ).astype(np.float32)
    indptr = np.zeros(N_USERS + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(history[u][0]) for u in range(N_USERS)])
    indices = np.concatenate([history[u][0] for u in range(N_USERS)])
    popularity = (rng.permutation(N_TRACKS) + 1).astype(np.float32)  # distinct: no ties to break
    return {
        "arrays": {
            "user_factors": users,
            "item_factors": items,
            "played_indptr": indptr,
            "played_indices": indices,
            "popularity": popularity,
        },
        "history": history,
    }


@pytest.fixture(scope="module")
def catalogue():
    return make_catalogue()


@pytest.fixture(scope="module")
def models(catalogue, tmp_path_factory):
    """The same factors served exactly (no index) and through an Annoy index."""
    root = tmp_path_factory.mktemp("bundles")
    return {
        "exact": ServingModel(write_test_bundle(root, catalogue["arrays"], "plain", None)),
        "annoy": ServingModel(write_test_bundle(root, catalogue["arrays"], "indexed", ANNOY)),
    }


@pytest.fixture(params=["exact", "annoy"])
def model(request, models):
    return models[request.param]


def expected_top_k(catalogue, vector: np.ndarray, k: int, exclude) -> list[str]:
    scores = catalogue["arrays"]["item_factors"].astype(np.float64) @ np.asarray(vector, dtype=np.float64)
    scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
    order = [i for i in np.argsort(-scores, kind="stable") if np.isfinite(scores[i])]
    return [TRACKS[i] for i in order[:k]]


def ids(recommendation) -> list[str]:
    return [track for track, _ in recommendation.items]


# --- training users --------------------------------------------------------------------------------


@pytest.mark.parametrize("user", [0, 3, 14, 22])
def test_recommendations_are_the_exact_top_k_without_played_tracks(model, catalogue, user):
    played = catalogue["history"][user][0]
    want = expected_top_k(catalogue, catalogue["arrays"]["user_factors"][user], 10, played)
    got = model.recommend(USERS[user], 10)
    assert ids(got) == want
    factors = catalogue["arrays"]["item_factors"].astype(np.float64)
    user_factor = catalogue["arrays"]["user_factors"][user].astype(np.float64)
    assert [s for _, s in got.items] == pytest.approx([factors[TRACKS.index(t)] @ user_factor for t in want], abs=1e-5)
    assert not set(ids(got)) & {TRACKS[i] for i in played}


def test_the_exact_flag_says_which_search_answered(models):
    assert models["annoy"].recommend("u03", 10).exact is False
    assert models["annoy"].recommend("u03", 10, exact=True).exact is True
    assert models["exact"].recommend("u03", 10, exact=False).exact is True  # no index: always exact


def test_annoy_and_exact_search_agree_for_every_user_on_a_small_catalogue(models):
    # 60 tracks, 5 trees, search_k >= 1000: Annoy visits every item, so only the re-ranking decides.
    for user in USERS:
        approximate, exact = models["annoy"].recommend(user, 10), models["annoy"].recommend(user, 10, exact=True)
        assert ids(approximate) == ids(exact), user
        assert [s for _, s in approximate.items] == pytest.approx([s for _, s in exact.items], abs=1e-5)


def test_no_played_track_is_ever_recommended(model, catalogue):
    for u, user in enumerate(USERS):
        played = {TRACKS[i] for i in catalogue["history"][u][0]}
        got = ids(model.recommend(user, N_TRACKS))
        assert not set(got) & played, user
        assert sorted(got) == sorted(set(TRACKS) - played), user  # every unplayed track, once


def test_a_user_who_played_almost_everything_gets_the_remaining_tracks_only(model, catalogue):
    got = model.recommend(USERS[HEAVY_USER], 10)
    want = expected_top_k(catalogue, catalogue["arrays"]["user_factors"][HEAVY_USER], 10, catalogue["history"][29][0])
    assert sorted(want) == ["t05", "t17", "t42"]
    assert ids(got) == want


def test_k_larger_than_the_catalogue_returns_every_unplayed_track_in_score_order(model, catalogue):
    played = catalogue["history"][3][0]
    want = expected_top_k(catalogue, catalogue["arrays"]["user_factors"][3], 1000, played)
    assert len(want) == N_TRACKS - len(played)
    assert ids(model.recommend("u03", 1000)) == want


def test_an_unknown_user_is_an_unknown_id_naming_the_user(model):
    with pytest.raises(UnknownId, match=r"user 'nobody' is not in model (plain|indexed)"):
        model.recommend("nobody", 10)


# --- similar tracks --------------------------------------------------------------------------------


@pytest.mark.parametrize("track", [0, 10, 33])
def test_similar_tracks_are_in_cosine_order_without_the_track_itself(model, catalogue, track):
    items = catalogue["arrays"]["item_factors"].astype(np.float64)
    norms = np.linalg.norm(items, axis=1)
    cosine = items @ items[track] / np.where(norms > 0, norms, 1.0) / norms[track]
    cosine[[track, ZERO_TRACK]] = -np.inf  # itself, and the track without factors
    order = np.argsort(-cosine, kind="stable")[:8]
    got = model.similar(TRACKS[track], 8)
    assert [t for t, _ in got] == [TRACKS[i] for i in order]
    assert [s for _, s in got] == pytest.approx(cosine[order], abs=1e-5)
    assert TRACKS[track] not in [t for t, _ in got]


def test_a_parallel_track_is_the_most_similar_with_cosine_one(model):
    (top, score), *_ = model.similar("t10", 5)
    assert (top, score) == ("t11", pytest.approx(1.0, abs=1e-6))
    assert model.similar("t11", 1)[0][0] == "t10"


def test_similar_never_returns_a_track_without_factors(model):
    got = model.similar("t00", 100)
    assert len(got) == N_TRACKS - 2  # all but itself and t59
    assert "t59" not in [t for t, _ in got]


def test_similar_to_an_unknown_track_is_an_unknown_id(model):
    with pytest.raises(UnknownId, match=r"track 'nope' is not in model"):
        model.similar("nope", 5)


def test_similar_to_a_track_with_all_zero_factors_is_an_unknown_id(model):
    with pytest.raises(UnknownId, match=r"track 't59' has no factors"):
        model.similar("t59", 5)


# --- history fold-in --------------------------------------------------------------------------------


@pytest.mark.parametrize("user", [1, 8, 20])
def test_folding_in_a_training_users_history_gives_their_recommendations(model, catalogue, user):
    tracks, counts = catalogue["history"][user]
    answer = model.recommend_for_history([(TRACKS[t], int(c)) for t, c in zip(tracks, counts, strict=True)], 10)
    stored = model.recommend(USERS[user], 10)
    assert answer["fallback"] is None
    assert answer["known_tracks"] == len(tracks)
    assert answer["unknown_tracks"] == []
    assert ids(answer["recommendation"]) == ids(stored)
    assert [s for _, s in answer["recommendation"].items] == pytest.approx([s for _, s in stored.items], rel=1e-4)


def test_history_fold_in_lists_unknown_tracks_and_never_recommends_the_history(model, catalogue):
    history = [("t01", 3), ("zzz", 2), ("t07", 1), ("t01-remix", 1)]
    answer = model.recommend_for_history(history, N_TRACKS)
    vector = als_user_step(
        catalogue["arrays"]["item_factors"], np.array([1, 7]), np.array([3, 1]), PARAMS["alpha"], PARAMS["reg_param"]
    )
    assert answer["unknown_tracks"] == ["zzz", "t01-remix"]
    assert answer["known_tracks"] == 2
    assert answer["fallback"] is None
    assert ids(answer["recommendation"]) == expected_top_k(catalogue, vector, N_TRACKS, [1, 7])
    assert {"t01", "t07"}.isdisjoint(ids(answer["recommendation"]))


@pytest.mark.parametrize("history", [[], [("zzz", 4), ("yyy", 1)]], ids=["empty", "all_unknown"])
def test_a_history_with_no_known_track_falls_back_to_the_most_popular(model, catalogue, history):
    answer = model.recommend_for_history(history, 5)
    popularity = catalogue["arrays"]["popularity"]
    top = np.argsort(-popularity)[:5]
    assert answer["fallback"] == "popularity"
    assert answer["known_tracks"] == 0
    assert answer["unknown_tracks"] == [t for t, _ in history]
    assert answer["recommendation"].items == [(TRACKS[i], float(popularity[i])) for i in top]
    assert [s for _, s in answer["recommendation"].items] == [60.0, 59.0, 58.0, 57.0, 56.0]


def test_duplicate_history_entries_are_summed(model):
    duplicated = model.recommend_for_history([("t01", 2), ("t04", 1), ("t01", 3)], 10)
    summed = model.recommend_for_history([("t01", 5), ("t04", 1)], 10)
    first_only = model.recommend_for_history([("t01", 2), ("t04", 1)], 10)
    assert duplicated["known_tracks"] == 2
    assert duplicated["recommendation"].items == summed["recommendation"].items
    # and the sum matters: with the first entry's count alone the scores are different
    assert [s for _, s in first_only["recommendation"].items] != pytest.approx(
        [s for _, s in summed["recommendation"].items], rel=1e-3
    )


def test_a_history_the_transform_drops_entirely_falls_back_to_popularity_without_its_tracks(catalogue, tmp_path):
    params = {**PARAMS, "transform": "drop", "drop_threshold": 1}  # plays of 1 are dropped
    model = ServingModel(write_test_bundle(tmp_path, catalogue["arrays"], "dropping", None, params))
    popularity = catalogue["arrays"]["popularity"]
    most_popular = [TRACKS[i] for i in np.argsort(-popularity)]
    answer = model.recommend_for_history([(most_popular[0], 1), (most_popular[2], 1)], 4)
    assert answer["fallback"] == "popularity"
    assert answer["known_tracks"] == 2
    assert ids(answer["recommendation"]) == [most_popular[i] for i in (1, 3, 4, 5)]


def test_a_training_user_without_factors_gets_the_popular_tracks_they_did_not_play(catalogue, tmp_path):
    # With transform "drop", a user whose every play is <= drop_threshold has no ALS factors: the bundle
    # keeps them with a zero row (model.factors.read_dense_factors). Their inner products are all 0, so the ranking
    # means nothing; fold-in treats a zero vector as "fall back to popularity", a training user must too.
    arrays = {**catalogue["arrays"], "user_factors": catalogue["arrays"]["user_factors"].copy()}
    arrays["user_factors"][4] = 0.0
    played = set(catalogue["history"][4][0].tolist())
    popularity = catalogue["arrays"]["popularity"]
    want = [TRACKS[i] for i in np.argsort(-popularity) if i not in played][:5]
    for name, annoy in (("zero-plain", None), ("zero-indexed", ANNOY)):
        model = ServingModel(write_test_bundle(tmp_path, arrays, name, annoy))
        assert ids(model.recommend("u04", 5)) == want, name
