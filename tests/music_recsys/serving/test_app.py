"""The serving API over small hand-made bundles: status codes, JSON shapes, answers, and hot reload.

The locator is a function the test controls (``Switch``), so what the registry would say is set by hand;
``TestClient`` is used as a context manager so the lifespan starts and stops the model watcher.
"""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from music_recsys.serving.app import Settings, bundle_locator, create_app
from tests.music_recsys.serving.bundles import (
    ANNOY,
    N_TRACKS,
    N_USERS,
    PARAMS,
    TRACKS,
    USERS,
    Switch,
    make_arrays,
    wait_for,
    write_test_bundle,
)


def make_bundle(root, version: str, seed: int, annoy: dict | None):
    return write_test_bundle(root, make_arrays(seed), version, annoy)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Two versions, "a" without an index and "b" with one, and "broken": b's copy, item factors cut short."""
    root = tmp_path_factory.mktemp("models")
    a, b = make_bundle(root, "a", seed=1, annoy=None), make_bundle(root, "b", seed=2, annoy=ANNOY)
    broken = shutil.copytree(b, root / "broken")
    factors = broken / "item_factors.npy"
    factors.write_bytes(factors.read_bytes()[:-64])
    return {"a": a, "b": b, "broken": broken}


def expected_top_k(arrays: dict, user: int, k: int) -> list[str]:
    scores = arrays["item_factors"].astype(np.float64) @ arrays["user_factors"][user].astype(np.float64)
    scores[arrays["played_indices"][arrays["played_indptr"][user] : arrays["played_indptr"][user + 1]]] = -np.inf
    return [TRACKS[i] for i in np.argsort(-scores, kind="stable")[:k]]


@pytest.fixture
def serving(bundles):
    """A client whose app serves bundle "a" (loaded before the test starts), and the locator it asks."""
    switch = Switch(("a", bundles["a"]))
    app = create_app(Settings(locate=switch, poll_seconds=0.05))
    with TestClient(app) as client:
        wait_for(lambda: app.state.holder.version == "a")
        yield client, switch, app.state.holder


# --- health and the model card ---------------------------------------------------------------------


def test_healthz_is_503_until_a_model_is_loaded_then_200_with_its_version(bundles):
    switch = Switch(None)
    app = create_app(Settings(locate=switch, poll_seconds=0.05))
    with TestClient(app) as client:
        wait_for(lambda: app.state.holder.last_error is not None)
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {"status": "loading", "detail": "no champion in the model registry yet"}
        assert client.get("/users/u00/recommendations").status_code == 503
        switch.found = ("a", bundles["a"])
        wait_for(lambda: client.get("/healthz").status_code == 200)
        assert client.get("/healthz").json() == {"status": "ok", "model_version": "a"}


def test_model_returns_the_card(serving, bundles):
    client, _, _ = serving
    card = client.get("/model").json()
    assert card["version"] == "a"
    assert card["params"] == PARAMS
    assert (card["n_users"], card["n_items"]) == (N_USERS, N_TRACKS)
    assert card["serving"] is None  # bundle "a" has no Annoy index
    assert card["path"] == str(bundles["a"])
    assert set(card["files"]) == {
        "item_factors.npy",
        "played_indices.npy",
        "played_indptr.npy",
        "popularity.npy",
        "tracks.parquet",
        "user_factors.npy",
        "users.parquet",
    }


def test_bundle_locator_serves_a_fixed_folder(bundles):
    app = create_app(Settings(locate=bundle_locator(bundles["b"]), poll_seconds=0.05))
    with TestClient(app) as client:
        wait_for(lambda: client.get("/healthz").status_code == 200)
        assert client.get("/healthz").json()["model_version"] == "b"
        assert client.get("/model").json()["serving"]["metric"] == "angular_ip"


# --- recommendations for a training user -------------------------------------------------------------


def test_user_recommendations_are_the_exact_top_k_without_played_tracks(serving):
    client, _, _ = serving
    arrays = make_arrays(seed=1)
    response = client.get("/users/u07/recommendations", params={"k": 5})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"user_id", "model_version", "exact", "fallback", "items"} and body["fallback"] is None
    assert (body["user_id"], body["model_version"], body["exact"]) == ("u07", "a", True)
    assert [item["track_id"] for item in body["items"]] == expected_top_k(arrays, 7, 5)
    assert all(set(item) == {"track_id", "score"} for item in body["items"])
    scores = [item["score"] for item in body["items"]]
    want = [arrays["item_factors"][TRACKS.index(i["track_id"])] @ arrays["user_factors"][7] for i in body["items"]]
    assert scores == pytest.approx(want, abs=1e-5)
    assert {"t07", "t08", "t09", "t10", "t11"}.isdisjoint(item["track_id"] for item in body["items"])


def test_annoy_and_exact_endpoints_agree_on_a_small_catalogue(bundles):
    app = create_app(Settings(locate=Switch(("b", bundles["b"])), poll_seconds=0.05))
    arrays = make_arrays(seed=2)
    with TestClient(app) as client:
        wait_for(lambda: app.state.holder.version == "b")
        for user in (0, 12, 29):
            approximate = client.get(f"/users/{USERS[user]}/recommendations", params={"k": 8}).json()
            exact = client.get(f"/users/{USERS[user]}/recommendations", params={"k": 8, "exact": "true"}).json()
            assert (approximate["exact"], exact["exact"]) == (False, True)
            assert [i["track_id"] for i in approximate["items"]] == expected_top_k(arrays, user, 8)
            assert [i["track_id"] for i in exact["items"]] == expected_top_k(arrays, user, 8)


def test_an_unknown_user_is_a_404_naming_the_user(serving):
    client, _, _ = serving
    response = client.get("/users/nobody-42/recommendations")
    assert response.status_code == 404
    assert "user 'nobody-42' is not in model a" in response.json()["detail"]


@pytest.mark.parametrize("k", [0, 1001, -3, "ten"])
def test_k_outside_1_to_1000_is_a_422(serving, k):
    client, _, _ = serving
    response = client.get("/users/u00/recommendations", params={"k": k})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "k"]


def test_k_of_1000_is_accepted_and_capped_by_the_catalogue(serving):
    client, _, _ = serving
    body = client.get("/users/u00/recommendations", params={"k": 1000}).json()
    assert len(body["items"]) == N_TRACKS - 5  # every track but the five played


# --- recommendations for a history -------------------------------------------------------------------


def test_history_recommendations(serving):
    client, _, holder = serving
    response = client.post("/recommendations", json={"history": [{"track_id": "t03", "count": 3}], "k": 5})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"model_version", "exact", "items", "known_tracks", "unknown_tracks", "fallback"}
    assert (body["model_version"], body["known_tracks"], body["unknown_tracks"], body["fallback"]) == ("a", 1, [], None)
    direct = holder.model.recommend_for_history([("t03", 3)], 5)["recommendation"]
    assert [(i["track_id"], i["score"]) for i in body["items"]] == [(t, pytest.approx(s)) for t, s in direct.items]
    assert len(body["items"]) == 5
    assert "t03" not in [i["track_id"] for i in body["items"]]


def test_history_of_unknown_tracks_falls_back_to_popularity(serving):
    client, _, _ = serving
    popularity = make_arrays(seed=1)["popularity"]
    body = client.post("/recommendations", json={"history": [{"track_id": "zzz"}], "k": 3}).json()
    assert (body["fallback"], body["known_tracks"], body["unknown_tracks"]) == ("popularity", 0, ["zzz"])
    assert [(i["track_id"], i["score"]) for i in body["items"]] == [
        (TRACKS[i], float(popularity[i])) for i in np.argsort(-popularity)[:3]
    ]
    assert [i["score"] for i in body["items"]] == [60.0, 59.0, 58.0]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"history": [], "k": 0}, "k"),
        ({"history": [], "k": 1001}, "k"),
        ({"history": [{"track_id": "t01", "count": 0}]}, "count"),
        ({"history": [{"track_id": ""}]}, "track_id"),
    ],
)
def test_a_bad_history_request_is_a_422_naming_the_field(serving, payload, field):
    client, _, _ = serving
    response = client.post("/recommendations", json=payload)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == field


# --- similar tracks ----------------------------------------------------------------------------------


def test_similar_tracks(serving):
    client, _, _ = serving
    items = make_arrays(seed=1)["item_factors"].astype(np.float64)
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    cosine = unit @ unit[10]
    cosine[10] = -np.inf
    response = client.get("/tracks/t10/similar", params={"k": 4})
    assert response.status_code == 200
    body = response.json()
    assert (body["track_id"], body["model_version"]) == ("t10", "a")
    assert [i["track_id"] for i in body["items"]] == [TRACKS[i] for i in np.argsort(-cosine)[:4]]
    assert body["items"][0] == {"track_id": "t11", "score": pytest.approx(1.0, abs=1e-6)}  # t11 = 2 x t10


def test_similar_to_an_unknown_track_is_a_404_naming_it(serving):
    client, _, _ = serving
    response = client.get("/tracks/t999/similar")
    assert response.status_code == 404
    assert "track 't999' is not in model a" in response.json()["detail"]


# --- hot reload ---------------------------------------------------------------------------------------


def test_switching_the_champion_under_load_drops_no_request(serving, bundles):
    client, switch, holder = serving
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            response = client.get("/users/u05/recommendations", params={"k": 5})
            seen.append((response.status_code, response.json().get("model_version")))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_for(lambda: len(seen) >= 20)
        switch.found = ("b", bundles["b"])
        wait_for(lambda: holder.version == "b")
        served_b = len(seen)
        wait_for(lambda: len(seen) >= served_b + 20)
    finally:
        stop.set()
        worker.join(timeout=5)
    statuses, versions = zip(*seen, strict=True)
    assert set(statuses) == {200}
    assert set(versions) == {"a", "b"}
    first_b = versions.index("b")
    assert versions[:first_b] == ("a",) * first_b and versions[first_b:] == ("b",) * (len(versions) - first_b)
    assert versions[-10:] == ("b",) * 10
    assert holder.reloads == 2 and holder.last_error is None


def test_a_broken_bundle_leaves_the_old_model_serving(serving, bundles):
    client, switch, holder = serving
    switch.found = ("c", bundles["broken"])
    wait_for(lambda: holder.last_error is not None)
    assert holder.version == "a"
    assert holder.last_error.startswith(f"model c at {bundles['broken']} failed to load: BundleError")
    assert "item_factors.npy has" in holder.last_error and "(truncated?)" in holder.last_error
    for _ in range(3):
        response = client.get("/users/u01/recommendations", params={"k": 3})
        assert (response.status_code, response.json()["model_version"]) == (200, "a")
    assert client.get("/healthz").json() == {"status": "ok", "model_version": "a"}
    assert holder.reloads == 1


def test_an_unreachable_registry_leaves_the_old_model_serving(serving):
    client, switch, holder = serving
    switch.found = ConnectionError("registry down")
    wait_for(lambda: holder.last_error is not None)
    assert holder.last_error == "registry: ConnectionError: registry down"
    assert client.get("/healthz").json() == {"status": "ok", "model_version": "a"}
    assert client.get("/users/u01/recommendations", params={"k": 3}).status_code == 200


@pytest.mark.postgres
def test_the_api_serves_the_registrys_champion_as_a_select_only_role(bundles, postgres_url, tmp_path, monkeypatch):
    """The serving API needs no right to change the store: as a role with SELECT only (the grants of
    docs/results-store.md) it finds the champion, resolves its bundle path against the data root (a root
    that moved since publishing), loads it and answers; its polls issue no DDL."""
    import sqlalchemy as sa

    from music_recsys.serving.app import registry_locator
    from music_recsys.store import registry
    from tests.stores import open_store, reader_url, register

    root = tmp_path / "moved-data-root"
    shutil.copytree(bundles["b"], root / "models" / "b")
    monkeypatch.setenv("RECSYS_DATA_ROOT", str(root))
    with open_store(postgres_url) as store:
        register(store, {"model_version": "b", "run_id": "r", "trial_id": "t", "path": "models/b", "test_map": 0.2,
                         "popularity_test_map": 0.1})  # fmt: skip
    reader = reader_url(postgres_url, "recsys_reader_api")
    app = create_app(Settings(locate=registry_locator(reader), poll_seconds=0.05))
    with TestClient(app) as client:
        wait_for(lambda: app.state.holder.version == "b")
        assert client.get("/healthz").json() == {"status": "ok", "model_version": "b"}
        answer = client.get(f"/users/{USERS[0]}/recommendations", params={"k": 3}).json()
        assert answer["model_version"] == "b" and len(answer["items"]) == 3
        assert client.get("/model").json()["path"] == str(root / "models" / "b")
    engine = sa.create_engine(reader)
    with engine.connect() as conn, pytest.raises(sa.exc.ProgrammingError):
        conn.execute(sa.text("UPDATE models SET status = 'retired'"))  # the role really is read-only
    engine.dispose()
    with open_store(postgres_url) as store:
        assert registry.champion(store)["model_version"] == "b"
