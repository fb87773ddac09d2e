"""End to end, the default mode: the real DAG on the tiny data set, each Spark stage a spark-submit to a Spark
standalone cluster on 127.0.0.1 (client mode), results and the model registry in PostgreSQL. In the same
run: a grid point that cannot fit (the drop transform with a threshold above every count) fails once and is
not retried, a fit killed mid-run is retried, and the run still publishes its best point as the first
champion, which the served API then answers from."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harness.airflow import run_summary
from harness.services import wait_until
from music_recsys import constants as C
from music_recsys.evaluation.search import meaningful_search_k
from music_recsys.pipeline.batch import store_for_run
from music_recsys.pipeline.tasks import record
from music_recsys.run_folders import read_json, run_dir
from music_recsys.store import registry
from music_recsys.store.results import ResultsStore
from tests.dags.dagruns import GRID, VICTIM, task_instances
from tests.stores import stored_rows

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.postgres, pytest.mark.slow]

WORKING = {"r8_reg0.1_a1_none", VICTIM.trial_id}
FAILING = {"r8_reg0.1_a1_drop", "r8_reg0.1_a10_drop"}


def test_reference_run_records_trials_segments_and_search(reference_run, embedded):
    dagrun = reference_run["dagrun"]
    assert str(dagrun.state).endswith("success")
    store = ResultsStore(embedded.results_url)
    als = {(r["trial_id"], r["split"]): r for r in store.fetch("als_trials", dagrun.run_id)}
    segments = store.fetch("als_segments", dagrun.run_id)
    ann = store.fetch("ann_trials", dagrun.run_id)
    profiles = {r["split"]: r for r in store.fetch("data_profiles", dagrun.run_id)}
    store.close()

    validation = {t: r for (t, s), r in als.items() if s == "validation"}
    assert set(validation) == {C.POPULARITY_TRIAL_ID} | WORKING | FAILING
    for trial_id in FAILING:
        failed = validation[trial_id]
        assert failed["status"] == "failed" and "leaves no training rows" in failed["error"] and failed["map"] is None
    ok = [r for r in validation.values() if r["status"] == "success"]
    for row in ok:
        assert 0.0 < row["map"] <= 1.0 and 0.0 < row["ndcg_at_k"] <= 1.0 and 0.0 < row["ndcg_graded_at_k"] <= 1.0
        assert 0.0 < row["precision_at_k"] <= 1.0 and row["map_at_k"] <= 1.0
        assert 0.0 < row["mpr"] < 0.5  # better than a random order
        assert 0.0 < row["coverage_at_k"] <= 1.0 and 0.0 < row["mean_rec_popularity"] < 1.0
        assert row["n_users"] == 60 and row["k"] == 50 and row["exclude_seen"] is True
    best = [r for r in validation.values() if r["is_best"]]
    assert len(best) == 1 and best[0]["map"] == max(r["map"] for r in ok if r["model"] == "als")
    assert best[0]["selection_metric"] == "map" and best[0]["fit_seconds"] > 0
    popularity = validation[C.POPULARITY_TRIAL_ID]
    assert best[0]["map"] > popularity["map"] and best[0]["mpr"] < popularity["mpr"]  # taste is learnable
    assert best[0]["coverage_at_k"] > popularity["coverage_at_k"]  # popularity recommends the same charts
    assert {t for (t, s) in als if s == "test"} == {C.POPULARITY_TRIAL_ID, best[0]["trial_id"]}

    for trial_id in (best[0]["trial_id"], C.POPULARITY_TRIAL_ID):
        parts = sorted((s for s in segments if s["trial_id"] == trial_id and s["split"] == "test"),
                       key=lambda s: s["segment"])  # fmt: skip
        assert [s["name"] for s in parts] == ["light", "medium", "heavy"]
        assert sum(s["n_users"] for s in parts) == 60 and all(s["n_users"] >= 10 for s in parts)

    assert {r["metric"] for r in ann} == {"exact", "exact_batched", "dot", "angular_ip"} and {r["k"] for r in ann} == {
        50
    }
    for row in ann:
        assert 0.0 <= row["recall"] <= 1.0 and row["qps"] > 0 and row["p99_ms"] >= row["p50_ms"]
    operating = [r for r in ann if r["is_operating_point"]]
    assert len(operating) == 1 and operating[0]["recall"] >= 0.9
    # Each Annoy series (metric, n_trees, candidates) runs up its search_k values until the rest are dominated:
    # to the last meaningful one, or to one perfect from the index, or at the target while slower than exact.
    exact_qps = next(r["qps"] for r in ann if r["metric"] == "exact")
    series: dict[tuple, list[dict]] = {}
    for r in ann:
        if r["metric"] in ("dot", "angular_ip"):
            series.setdefault((r["metric"], r["n_trees"], r["candidates"]), []).append(r)
    assert len(series) == 2 * 2 * 2  # metrics x trees x re-rank factors
    for (_, n_trees, _), rows in series.items():
        values = meaningful_search_k(GRID["annoy_search_k"], n_trees, rows[0]["n_items"])
        last = max(rows, key=lambda r: r["search_k"])
        assert [r["search_k"] for r in sorted(rows, key=lambda r: r["search_k"])] == values[: len(rows)]
        dominated_after = last["recall"] == 1.0 or (last["recall"] >= 0.9 and last["qps"] < exact_qps)
        assert last["search_k"] == values[-1] or dominated_after
    assert max(r["recall"] for r in ann if r["metric"] == "angular_ip") > 0.99

    assert set(profiles) == {"train", "validation", "test"}
    assert all(p["verdict"] == "first_run" and p["run_status"] == "success" for p in profiles.values())
    ingest = read_json(run_dir(dagrun.run_id) / "results" / "ingest.json")
    assert profiles["train"]["rows"] == ingest["splits"]["train"]["rows_kept"]

    report_dir = run_dir(dagrun.run_id) / "report"
    for png in ("als_grid.png", "segments.png", "fast_search.png"):
        assert (report_dir / png).stat().st_size > 10_000
    report = (report_dir / "report.md").read_text()
    assert best[0]["trial_id"] in report and "## Data check" in report and "## By listener history" in report


def test_a_killed_fit_is_retried_and_a_point_that_cannot_fit_is_not(reference_run):
    """Two points per fit task: the task fitting both working points is killed once and retried; the one
    whose two points cannot fit fails once, not retried (the input's fault)."""
    assert reference_run["killed"], "the drill never found the fit process to kill"
    run = run_dir(reference_run["dagrun"].run_id)
    fits = {ti.rendered_map_index: ti for ti in task_instances(reference_run["dagrun"])["fit"]}
    working, failing = "r8_reg0.1_a1_none..r8_reg0.1_a10_none", "r8_reg0.1_a1_drop..r8_reg0.1_a10_drop"
    assert set(fits) == {working, failing}
    assert (fits[working].state, fits[working].try_number) == ("success", 2)
    assert (fits[failing].state, fits[failing].try_number) == ("failed", 1)  # retries=1, not used
    for trial_id in WORKING:
        assert read_json(run / "results" / "fit" / f"{trial_id}.json")["status"] == "success"
    for trial_id in FAILING:
        assert "leaves no training rows" in read_json(run / "results" / "fit" / f"{trial_id}.json")["error"]
    # The retry's summary: a point the killed attempt had finished was kept, the rest fitted again.
    summary = read_json(run / "results" / "fit_tasks" / "r8_reg0.1_a1_none.json")
    assert set(summary["trials"]) == WORKING and summary["failed"] == []
    assert set(summary["kept_from_earlier_attempt"]) <= {"r8_reg0.1_a1_none"}
    # Rank 8 is below RECSYS_NATIVE_BLAS_MIN_RANK (40): the task's JVM fitted on netlib's Java BLAS, which the
    # machine's native OpenBLAS would otherwise have replaced (docs/benchmarks.md, "Native BLAS").
    assert summary["blas"] == "dev.ludovic.netlib.blas.VectorBLAS"


def test_every_stage_ran_as_an_application_on_the_standalone_cluster(reference_run):
    """The master lists each Spark stage as an application (the killed fit's and its retry's included),
    every one ended (the master marks an application whose driver vanished finished), none left running."""
    apps = reference_run["cluster"]["completedapps"]
    names = sorted(app["name"] for app in apps)
    assert names == sorted([
        "music_recsys.ingest",
        "music_recsys.index",
        "music_recsys.fit.r8_reg0.1_a1_none..r8_reg0.1_a10_none",  # the attempt killed mid-fit
        "music_recsys.fit.r8_reg0.1_a1_none..r8_reg0.1_a10_none",  # its retry
        "music_recsys.fit.r8_reg0.1_a1_drop..r8_reg0.1_a10_drop",
        "music_recsys.evaluate",
        "music_recsys.batch_recommendations",
    ]), names  # fmt: skip
    assert {app["state"] for app in apps} == {"FINISHED"}
    assert not reference_run["cluster"]["activeapps"]


def test_rerecording_the_same_run_rewrites_identical_rows(reference_run, embedded):
    run_id = reference_run["dagrun"].run_id
    store = ResultsStore(embedded.results_url)
    first = {t: store.fetch(t, run_id) for t in ("als_trials", "als_segments", "ann_trials")}
    results = run_dir(run_id) / "results"
    plan = read_json(run_dir(run_id) / "plan.json")
    record(plan, read_json(results / "evaluate.json"), read_json(results / "fast_search.json"), embedded.results_url)
    second = {t: store.fetch(t, run_id) for t in first}
    store.close()

    def strip(rows):
        return sorted(json.dumps({k: v for k, v in r.items() if k != "recorded_at"}, sort_keys=True, default=str)
                      for r in rows)  # fmt: skip

    for table in first:
        assert first[table] and strip(first[table]) == strip(second[table]), table
    keys = [(r["trial_id"], r["split"]) for r in first["als_trials"]]
    assert len(keys) == len(set(keys))


def test_the_run_publishes_the_first_champion(reference_run, embedded):
    summary = run_summary(reference_run["dagrun"].run_id)
    model = summary["model"]
    assert model["status"] == "champion" and model["reason"].endswith("first champion")
    store = ResultsStore(embedded.results_url)
    champion = registry.get(store, model["version"])
    store.close()
    assert champion["trial_id"] == summary["best_trial_id"] and registry.bundle_path(champion) == Path(model["path"])
    assert champion["path"] == f"models/{model['version']}"  # relative to the data root: it may move
    assert champion["test_map"] == pytest.approx(summary["best_test"]["map"])
    assert champion["popularity_test_map"] == pytest.approx(summary["popularity_test"]["map"])
    assert {ti.state for ti in task_instances(reference_run["dagrun"])["announce_champion"]} == {"success"}


def _call(url: str, data: dict | None = None) -> tuple[int, dict]:
    body = json.dumps(data).encode() if data else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _exact_top(bundle: str, user: str, k: int) -> list[str]:
    """The exact top k of a training user, from the bundle's files with numpy, played tracks excluded."""
    import numpy as np

    from music_recsys.store.bundle import load_arrays, read_labels

    arrays, folder = load_arrays(Path(bundle)), Path(bundle)
    users, tracks = read_labels(folder, "users"), read_labels(folder, "tracks")
    u = users.index(user)
    scores = arrays["item_factors"].astype(np.float64) @ arrays["user_factors"][u].astype(np.float64)
    scores[arrays["played_indices"][arrays["played_indptr"][u] : arrays["played_indptr"][u + 1]]] = -np.inf
    return [tracks[i] for i in np.argsort(-scores, kind="stable")[:k]]


def test_the_served_api_answers_from_the_champion(served, reference_run, embedded):
    # The reference run's model, or the Connect run's if that test ran first: whichever is champion now.
    store = ResultsStore(embedded.results_url)
    champion = registry.champion(store)
    store.close()
    version, run_id = champion["model_version"], champion["run_id"]
    wait_until(lambda: served.get("/healthz")["model_version"] == version, 10, f"the API serving {version}", 0.2)
    assert served.get("/healthz") == {"status": "ok", "model_version": version}
    card = served.get("/model")
    assert card["version"] == version and card["run_id"] == run_id
    assert card["serving"]["metric"] in ("dot", "angular_ip") and card["serving"]["recall"] >= 0.9

    train = pq.read_table(run_dir(run_id) / "ingest" / "train", columns=["user_id", "track_id"]).to_pylist()
    user = pq.read_table(run_dir(run_id) / "ingest" / "validation", columns=["user_id"])["user_id"][0].as_py()
    played = {r["track_id"] for r in train if r["user_id"] == user}
    status, answer = _call(f"{served.base_url}/users/{user}/recommendations?k=10")
    assert status == 200 and answer["user_id"] == user and answer["model_version"] == version
    tracks = [item["track_id"] for item in answer["items"]]
    assert len(tracks) == 10 and played and not set(tracks) & played
    scores = [item["score"] for item in answer["items"]]
    assert scores == sorted(scores, reverse=True)
    _, exact = _call(f"{served.base_url}/users/{user}/recommendations?k=10&exact=true")
    assert exact["exact"] is True and [i["track_id"] for i in exact["items"]] == _exact_top(card["path"], user, 10)
    # Annoy at the operating point: a mean recall@50 >= 0.9 as served (played tracks excluded); one user's
    # top 10 may miss a track or two of the exact list.
    assert len(set(tracks) & {i["track_id"] for i in exact["items"]}) >= 8

    status, missing = _call(f"{served.base_url}/users/nobody/recommendations")
    assert status == 404 and "user 'nobody' is not in model" in missing["detail"]
    assert _call(f"{served.base_url}/users/{user}/recommendations?k=0")[0] == 422

    history = [{"track_id": t, "count": 3} for t in sorted(played)[:5]] + [{"track_id": "TRNOTATRACK", "count": 1}]
    status, folded = _call(f"{served.base_url}/recommendations", {"history": history, "k": 10})
    assert status == 200 and folded["unknown_tracks"] == ["TRNOTATRACK"] and folded["fallback"] is None
    assert folded["known_tracks"] == min(5, len(played)) and len(folded["items"]) == 10
    assert not {i["track_id"] for i in folded["items"]} & {h["track_id"] for h in history}

    track = tracks[0]
    status, similar = _call(f"{served.base_url}/tracks/{track}/similar?k=5")
    assert status == 200 and len(similar["items"]) == 5 and track not in {i["track_id"] for i in similar["items"]}
    assert all(-1.0 <= i["score"] <= 1.0 for i in similar["items"])


def test_the_run_precomputes_every_train_users_recommendations(reference_run, embedded):
    from pathlib import Path

    from music_recsys.store import recommendations as recs

    dagrun = reference_run["dagrun"]
    tis = task_instances(dagrun)
    for task_id in ("plan_batch_recommendations", "batch_recommendations", "store_recommendations"):
        assert {ti.state for ti in tis[task_id]} == {"success"}, task_id
    bundle = Path(run_summary(dagrun.run_id)["model"]["path"])
    entry = recs.verify(bundle)  # rows and checksum in model.json match the files
    card = read_json(bundle / "model.json")
    lists: dict[str, list[dict]] = {}
    for row in recs.read_table(bundle).to_pylist():
        lists.setdefault(row["user_id"], []).append(row)
    train = pq.read_table(run_dir(dagrun.run_id) / "ingest" / "train", columns=["user_id", "track_id"]).to_pylist()
    played: dict[str, set[str]] = {}
    for row in train:
        played.setdefault(row["user_id"], set()).add(row["track_id"])
    assert set(lists) == set(played) and entry["users"] == card["n_users"] == len(played)  # every train user
    assert entry["k"] == 50 and entry["rows"] == sum(map(len, lists.values()))
    for user, rows in lists.items():
        assert [r["rank"] for r in rows] == list(range(1, min(50, card["n_items"] - len(played[user])) + 1))
        assert not {r["track_id"] for r in rows} & played[user], user
        scores = [r["score"] for r in rows]
        assert scores == sorted(scores, reverse=True)

    # batch_to_store: the same rows in PostgreSQL, and a rerun of the task leaves them as they are.
    store = ResultsStore(embedded.results_url)
    try:
        stored = stored_rows(store, card["version"])
        results = run_dir(dagrun.run_id) / "results"
        plan, batch = read_json(run_dir(dagrun.run_id) / "plan.json"), read_json(results / "batch_recommendations.json")
        again = store_for_run(plan, batch, embedded.results_url)
        assert again["rows"] == entry["rows"] == len(stored)
        assert stored_rows(store, card["version"]) == stored
    finally:
        store.close()
    first = lists[stored[0]["user_id"]][0]
    assert (stored[0]["rank"], stored[0]["track_id"]) == (1, first["track_id"])
    assert stored[0]["score"] == pytest.approx(first["score"], rel=1e-6)


def test_the_served_api_answers_the_precomputed_lists(served, reference_run, embedded):
    from music_recsys.store import recommendations as recs

    store = ResultsStore(embedded.results_url)
    champion = registry.champion(store)
    store.close()
    version = champion["model_version"]
    wait_until(lambda: served.get("/healthz")["model_version"] == version, 10, f"the API serving {version}", 0.2)
    lists: dict[str, list[dict]] = {}
    for row in recs.read_table(registry.bundle_path(champion)).to_pylist():
        lists.setdefault(row["user_id"], []).append(row)
    for user in sorted(lists)[:: max(1, len(lists) // 20)]:  # 20 users spread over the id range
        status, answer = _call(f"{served.base_url}/users/{user}/recommendations?k=50&exact=true")
        assert status == 200 and answer["model_version"] == version
        assert [i["track_id"] for i in answer["items"]] == [r["track_id"] for r in lists[user]], user
        assert [i["score"] for i in answer["items"]] == pytest.approx([r["score"] for r in lists[user]], rel=1e-5)
