"""A model re-scored on another run's data: on the same data and k it gives what the evaluation gave, in
any index order; users it never saw are folded in; tracks it never saw stay relevant."""

from __future__ import annotations

import numpy as np
import pytest

from music_recsys.evaluation.rescore import FactorModel, Interactions, rescore
from music_recsys.evaluation.scoring import Truth, cold_user_row, score_block
from music_recsys.model.foldin import fold_in

PARAMS = {"alpha": 2.0, "reg_param": 0.1, "transform": "log1p", "drop_threshold": 1, "nonnegative": False}


@pytest.fixture(scope="module")
def world():
    """40 users x 60 tracks with factors; users 0..29 have train history, 30..39 none (cold); users 0..19
    are held out (validation 0..9, test 10..19) with 3 tracks each."""
    rng = np.random.default_rng(5)
    n_users, n_items, rank = 40, 60, 4
    users = rng.normal(size=(n_users, rank)).astype(np.float32)
    items = rng.normal(size=(n_items, rank)).astype(np.float32)
    train = [(u, int(i), int(rng.integers(1, 20))) for u in range(30) for i in rng.choice(n_items, 8, replace=False)]
    held = {
        split: [(u, int(i), int(rng.integers(1, 9))) for u in us for i in rng.choice(n_items, 3, replace=False)]
        for split, us in (("validation", range(10)), ("test", range(10, 20)))
    }
    return {
        "users": users,
        "items": items,
        "user_ids": [f"u{u}" for u in range(n_users)],
        "track_ids": [f"t{i}" for i in range(n_items)],
        "train": train,
        "held": held,
    }


def _interactions(rows) -> Interactions:
    a = np.array(rows, dtype=np.int64).reshape(-1, 3)
    return Interactions(a[:, 0], a[:, 1], a[:, 2])


def _evaluation(world, split: str, k: int, vectors=None) -> dict[str, float]:
    """What the evaluation job computes: score_block for users with factors, cold rows for the others,
    means over every held-out user."""
    vectors = world["users"] if vectors is None else vectors
    by_user: dict[int, list] = {}
    for u, i, c in world["held"][split]:
        by_user.setdefault(u, []).append((i, c))
    seen = {u: np.array(sorted({i for uu, i, _ in world["train"] if uu == u}), dtype=np.int64) for u in by_user}
    rows = []
    for u, pairs in sorted(by_user.items()):
        rel = np.array([i for i, _ in pairs]), np.array([c for _, c in pairs], dtype=np.float64)
        if not np.any(vectors[u]):
            rows.append(cold_user_row(rel[1]))
            continue
        scored, _ = score_block(vectors[[u]], world["items"], Truth([rel[0]], [rel[1]], [seen[u]]), k, True,
                                np.zeros(len(world["items"])))  # fmt: skip
        rows.append(scored[0])
    return {name: np.mean([r[name] for r in rows]) for name in ("map", "map_at_k", "precision_at_k", "ndcg_at_k")}


def _model(world, keep_users=None, keep_tracks=None, user_factors=None) -> FactorModel:
    keep_users = range(len(world["user_ids"])) if keep_users is None else keep_users
    keep_tracks = range(len(world["track_ids"])) if keep_tracks is None else keep_tracks
    factors = world["users"] if user_factors is None else user_factors
    return FactorModel(
        user_factors=factors[list(keep_users)],
        item_factors=world["items"][list(keep_tracks)],
        user_ids=[world["user_ids"][u] for u in keep_users],
        track_ids=[world["track_ids"][i] for i in keep_tracks],
        params=PARAMS,
    )


def _rescore(world, model, k=7):
    held = {split: _interactions(rows) for split, rows in world["held"].items()}
    return rescore(model, world["user_ids"], world["track_ids"], _interactions(world["train"]), held, k, True)


@pytest.mark.parametrize("k", [3, 7, 50])
def test_same_model_and_data_give_the_evaluations_figures(world, k):
    out = _rescore(world, _model(world), k)
    for split in ("validation", "test"):
        expected = _evaluation(world, split, k)
        for name, value in expected.items():
            assert out[split][name] == pytest.approx(value, abs=1e-12), (split, name)
        assert (out[split]["n_users"], out[split]["n_cold_users"], out[split]["k"]) == (10, 0, k)


def test_another_index_order_gives_the_same_figures(world):
    """The model's rows are in its own index order (another run's StringIndexer): ids, not indices, match."""
    users = np.random.default_rng(1).permutation(len(world["user_ids"]))
    tracks = np.random.default_rng(2).permutation(len(world["track_ids"]))
    shuffled = _rescore(world, _model(world, keep_users=users, keep_tracks=tracks))
    assert shuffled["test"]["map"] == pytest.approx(_rescore(world, _model(world))["test"]["map"], abs=1e-12)


def test_users_the_model_never_saw_are_folded_in_from_their_train_history(world):
    # A model whose users' factors are exactly their fold-in against its item factors ...
    items = world["items"].astype(np.float64)
    gram = items.T @ items
    folded = np.zeros_like(world["users"])
    for u in range(30):
        rows = [(i, c) for uu, i, c in world["train"] if uu == u]
        folded[u] = fold_in(world["items"], gram, np.array([i for i, _ in rows]), np.array([c for _, c in rows],
                            dtype=np.float64), **PARAMS)  # fmt: skip
    full = _rescore(world, _model(world, user_factors=folded))
    # ... scores the same when the held-out users are missing from it: they are folded in.
    without = _rescore(world, _model(world, keep_users=range(20, 40), user_factors=folded))
    for split in ("validation", "test"):
        assert without[split]["map"] == pytest.approx(full[split]["map"], abs=1e-6)
        assert without[split]["n_folded_in"] == 10 and full[split]["n_folded_in"] == 0


def test_tracks_the_model_never_saw_stay_relevant(world):
    """A held-out track outside the model's catalogue can never be a hit, but it counts in every
    denominator: dropping it from the truth instead would flatter the model."""
    held_tracks = sorted({i for _, i, _ in world["held"]["test"]})
    missing = held_tracks[:5]
    model = _model(world, keep_tracks=[i for i in range(len(world["track_ids"])) if i not in missing])
    out = _rescore(world, model, k=60)
    test_plays = [(i, c) for _, i, c in world["held"]["test"]]
    share = sum(c for i, c in test_plays if i in missing) / sum(c for _, c in test_plays)
    assert out["test"]["unknown_track_share"] == pytest.approx(share)
    # k = the whole catalogue: recall@k is exactly the share of held-out tracks the model knows.
    by_user: dict[int, list[int]] = {}
    for u, i, _ in world["held"]["test"]:
        by_user.setdefault(u, []).append(i)
    played = {u: {i for uu, i, _ in world["train"] if uu == u} for u in by_user}
    expected = np.mean(
        [sum(i not in missing and i not in played[u] for i in tracks) / len(tracks) for u, tracks in by_user.items()]
    )
    assert out["test"]["recall_at_k"] == pytest.approx(expected)


def test_a_user_without_a_factor_gets_an_empty_list(world):
    zeroed = world["users"].copy()
    zeroed[[0, 1, 2]] = 0.0  # the transform left them without factors
    out = _rescore(world, _model(world, user_factors=zeroed))
    assert out["validation"]["n_cold_users"] == 3
    assert out["validation"]["map"] == pytest.approx(_evaluation(world, "validation", 7, zeroed)["map"], abs=1e-12)
