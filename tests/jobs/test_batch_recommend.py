"""The batch recommendation job: a hand-checked answer on a six-track model (ties by track index, a user
without factors on the popularity fallback, a user with fewer unplayed tracks than k), the kernel against
a brute-force sort, a rerun that replaces the folder, and the served path giving the precomputed lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import batch_recommend
from music_recsys.evaluation import batch
from music_recsys.pipeline.job import InputError
from music_recsys.run_folders import read_json
from music_recsys.serving.model import ServingModel
from music_recsys.store import recommendations as recs
from music_recsys.store.bundle import verify_bundle, write_bundle
from tests.music_recsys.serving.bundles import ANNOY, N_TRACKS, N_USERS, RANK, write_test_bundle

pytestmark = pytest.mark.spark

K = 4
# Rank 2. t1 and t2 tie for every user; t5 has no factors (its transform dropped it).
ITEMS = np.array([[1, 0], [0.5, 0], [0.5, 0], [0, 1], [0.25, 0.25], [0, 0]], dtype=np.float32)
USER_VECTORS = np.array([[1, 0.1], [0.1, 2], [0, 0], [1, 1]], dtype=np.float32)  # u2: no factors
PLAYED = [[0], [3], [1], [0, 1, 2]]  # u3 has 3 unplayed tracks left, fewer than K
POPULARITY = np.array([2, 2, 1, 1, 0, 0], dtype=np.float32)  # train listeners per track, from PLAYED
# Worked out by hand: score = user . track; played tracks never; ties by track index.
EXPECTED = {
    "u0": [("t1", 0.5), ("t2", 0.5), ("t4", 0.275), ("t3", 0.1)],
    "u1": [("t4", 0.525), ("t0", 0.1), ("t1", 0.05), ("t2", 0.05)],
    "u2": [("t0", 2.0), ("t2", 1.0), ("t3", 1.0), ("t4", 0.0)],  # popularity, t1 played
    "u3": [("t3", 1.0), ("t4", 0.5), ("t5", 0.0)],  # every unplayed track
}


def hand_bundle(root):
    labels = {}
    for key, ids in (("users", [f"u{i}" for i in range(4)]), ("tracks", [f"t{i}" for i in range(6)])):
        labels[key] = root / f"{key}.parquet"
        pq.write_table(pa.table({"id": ids}), labels[key])
    arrays = {
        "user_factors": USER_VECTORS,
        "item_factors": ITEMS,
        "played_indptr": np.cumsum([0, *map(len, PLAYED)]).astype(np.int64),
        "played_indices": np.concatenate(PLAYED).astype(np.int32),
        "popularity": POPULARITY,
    }
    card = {
        "version": "hand",
        "params": {"rank": 2},
        "n_users": 4,
        "n_items": 6,
    }
    return write_bundle(root / "models" / "hand", arrays, labels, card, None, seed=1)


@pytest.fixture(scope="module")
def hand(spark, tmp_path_factory):
    bundle = hand_bundle(tmp_path_factory.mktemp("hand"))
    result = bundle.parent / "result.json"
    report = batch_recommend.run(spark, str(bundle), K, str(result), partitions=2)
    return {"bundle": bundle, "report": report, "result": result}


def by_user(table) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = {}
    for row in table.to_pylist():
        assert row["rank"] == len(out.setdefault(row["user_id"], [])) + 1  # ranks 1.. in file order
        out[row["user_id"]].append((row["track_id"], row["score"]))
    return out


def test_known_answer_on_a_hand_made_model(hand):
    table = recs.read_table(hand["bundle"])
    assert table.column_names == ["user_id", "rank", "track_id", "score"]
    got = by_user(table)
    assert list(got) == ["u0", "u1", "u2", "u3"]  # users in index order
    for user, expected in EXPECTED.items():
        assert [t for t, _ in got[user]] == [t for t, _ in expected], user
        assert [s for _, s in got[user]] == pytest.approx([s for _, s in expected], rel=1e-6), user
    report = hand["report"]
    assert (report["rows"], report["users"], report["short_lists"], report["popularity_fallback_users"]) == (
        15,
        4,
        1,
        1,
    )
    assert read_json(hand["result"]) == pytest.approx(report)


def test_the_card_records_rows_and_checksum(hand):
    card = verify_bundle(hand["bundle"])  # the bundle still verifies with the new card
    entry = card["recommendations"]
    assert entry["rows"] == 15 and entry["k"] == K and entry["path"] == "recommendations"
    assert entry["checksum"]["algorithm"] == "sha256" and len(entry["checksum"]["digest"]) == 64
    assert len(entry["checksum"]["files"]) == 2  # one parquet file per partition
    assert entry["checksum"] == recs.checksum(recs.recommendations_dir(hand["bundle"]))
    assert recs.verify(hand["bundle"]) == entry


def test_a_rerun_replaces_the_folder_with_the_same_rows(spark, hand, tmp_path):
    before = recs.read_table(hand["bundle"])
    again = batch_recommend.run(spark, str(hand["bundle"]), K, str(tmp_path / "again.json"), partitions=3)
    assert again["rows"] == 15 and again["partitions"] == 3
    assert recs.read_table(hand["bundle"]).equals(before)
    leftovers = [p.name for p in hand["bundle"].iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no staging or old folder left
    assert read_json(hand["bundle"] / "model.json")["recommendations"]["checksum"]["digest"] == again["checksum"]


def test_a_tampered_folder_is_refused(hand, tmp_path):
    import shutil

    copy = shutil.copytree(hand["bundle"], tmp_path / "copy")
    part = recs.data_files(recs.recommendations_dir(copy))[0]
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(recs.RecommendationsError, match="does not match the checksum"):
        recs.verify(copy)


def test_k_below_one_and_a_broken_bundle_are_input_errors(spark, hand, tmp_path):
    with pytest.raises(InputError, match="at least 1"):
        batch_recommend.run(spark, str(hand["bundle"]), 0, str(tmp_path / "r.json"))
    with pytest.raises(InputError, match="not a model bundle"):
        batch_recommend.run(spark, str(tmp_path), 3, str(tmp_path / "r.json"))


def test_the_kernel_matches_a_full_sort():
    rng = np.random.default_rng(5)
    n_users, n_items, k = 300, 250, 20
    users = rng.normal(size=(n_users, 6)).astype(np.float32)
    users[:7] = 0  # no factors: popularity
    items = np.round(rng.normal(size=(n_items, 6)), 1).astype(np.float32)  # rounding makes ties
    items[40:45] = items[30]  # identical tracks: exact ties
    played = [np.sort(rng.choice(n_items, size=int(rng.integers(0, 240)), replace=False)) for _ in range(n_users)]
    popularity = rng.integers(0, 9, size=n_items).astype(np.float32)
    lists = batch.recommend_users(users, items, played, popularity, batch.popularity_order(popularity), k)
    for u, (top, scores) in enumerate(lists):
        full = popularity if u < 7 else items @ users[u]
        free = np.setdiff1d(np.arange(n_items), played[u])
        ranked = free[np.lexsort((free, -full[free]))]  # score descending, then index
        assert len(top) == min(k, len(free))
        cut = full[ranked[len(top) - 1]]
        # Above the k-th score the list is exactly the full sort; at it, any of the tied tracks may fill it.
        above = ranked[full[ranked] > cut]
        assert list(top[: len(above)]) == list(above)
        assert np.all(full[top[len(above) :]] == cut) and not set(top) & set(played[u])
        assert scores == pytest.approx(full[top], rel=1e-5, abs=1e-6)
        assert np.all(np.diff(scores) <= 0)
        ties = np.flatnonzero(np.diff(scores) == 0)
        assert np.all(top[ties] < top[ties + 1])  # equal scores by track index


def make_served_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(N_USERS, RANK)).astype(np.float32)
    factors[3] = 0  # a user the transform left without factors
    played = [np.sort(rng.choice(N_TRACKS, size=int(rng.integers(1, 12)), replace=False)) for _ in range(N_USERS)]
    return {
        "user_factors": factors,
        "item_factors": rng.normal(size=(N_TRACKS, RANK)).astype(np.float32),
        "played_indptr": np.cumsum([0, *map(len, played)]).astype(np.int64),
        "played_indices": np.concatenate(played).astype(np.int32),
        "popularity": (rng.permutation(N_TRACKS) + 1).astype(np.float32),
    }


@pytest.mark.parametrize("annoy", [None, ANNOY], ids=["exact", "annoy"])
def test_the_served_answer_is_the_precomputed_list(spark, tmp_path, annoy):
    bundle = write_test_bundle(tmp_path, make_served_arrays(11), "served", annoy)
    k = 10
    batch_recommend.run(spark, str(bundle), k, str(tmp_path / "result.json"))
    precomputed = by_user(recs.read_table(bundle))
    model = ServingModel(bundle)  # what GET /users/{id}/recommendations answers from
    assert len(precomputed) == N_USERS
    for user, expected in precomputed.items():
        for exact in (True, False):
            served = model.recommend(user, k, exact=exact)
            assert [t for t, _ in served.items] == [t for t, _ in expected], (user, exact)
            assert [s for _, s in served.items] == pytest.approx([s for _, s in expected], rel=1e-5)
    assert model.recommend("u03", k).fallback == "popularity"


@pytest.mark.slow
def test_on_spark_connect_the_same_rows(connect_server, hand, tmp_path):
    """As ``SparkJobOperator`` runs it on a ``spark_connect`` connection: the job file loaded as a module, its
    ``run`` against a Connect session; the server's Python workers import the kernel from the package."""
    import shutil

    from music_recsys.pipeline import job
    from music_recsys.pipeline.spark import connect_session

    bundle = shutil.copytree(hand["bundle"], tmp_path / "hand")
    shutil.rmtree(recs.recommendations_dir(bundle))
    module = job.load_job(Path(batch_recommend.__file__))
    kwargs = vars(module.parse_args(["--bundle", str(bundle), "--k", str(K), "--result", str(tmp_path / "r.json")]))
    with connect_session(connect_server.url, retry_seconds=30) as session:
        report = job.execute(module.run, session, kwargs)
    assert report["rows"] == 15 and report["popularity_fallback_users"] == 1
    assert recs.read_table(bundle).equals(recs.read_table(hand["bundle"]))
