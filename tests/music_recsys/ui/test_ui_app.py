"""The UI app without Airflow running: mounted at /recsys like the plugin does, Airflow's simple auth
manager deciding access, ``get_user`` overridden for the logged-in paths and left in place for the
anonymous ones. Pages must show the numbers the results store holds (``ui_rows``)."""

from __future__ import annotations

import json
import re
import time
from html import unescape
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from music_recsys.store import registry
from music_recsys.ui.app import CSRF_TTL_SECONDS, UISettings, create_app, csrf_token
from tests.music_recsys.ui.ui_rows import BEST, BEST_MAP, BEST_TEST_MAP, POP_MAP, RUN_A, RUN_B

CHAMPION, RETIRED, CANDIDATE = "20260112T030000-bbbbbb", "20260105T030000-aaaaaa", "20260108T030000-cccccc"
SECRET = "test-secret"


@pytest.fixture(autouse=True)
def auth_manager(monkeypatch):
    """Airflow's simple auth manager, as the api-server initialises it; the DAG's team lookup (a metadata
    DB query) answers "no team"."""
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.models.dag import DagModel

    monkeypatch.setattr(DagModel, "get_team_name", staticmethod(lambda dag_id, session=None: None))
    return create_auth_manager()


def _client(
    store, tmp_path, role: str | None = "admin", name: str = "ada", airflow_root: str = ""
) -> tuple[TestClient, FastAPI]:
    """The app mounted at /recsys in an app served under ``airflow_root`` (Airflow's ``[api] base_url``
    path, which the api-server passes as its FastAPI ``root_path``)."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user

    app = create_app(UISettings(store=store, runs_root=tmp_path / "runs", secret_key=SECRET))
    if role is not None:
        app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username=name, role=role)
    root = FastAPI(root_path=airflow_root)
    root.mount("/recsys", app)
    return TestClient(root, base_url="http://127.0.0.1:8080", follow_redirects=False), app


def _text(page: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def _trials(page: str) -> list[str]:
    table = page.split('id="trials"')[1].split("</table>")[0]
    return re.findall(r"<tr[^>]*>\s*<td[^>]*><code>([^<]+)</code>", table)


def test_overview_shows_the_champion_registry_and_runs_from_the_store(store, tmp_path):
    client, _ = _client(store, tmp_path)
    response = client.get("/recsys/")
    assert response.status_code == 200, response.text
    assert response.headers["x-frame-options"] == "SAMEORIGIN"  # only the Airflow UI may frame it
    html, text = response.text, _text(response.text)
    assert f'<span id="champion-version">{CHAMPION}</span>' in html
    assert f'id="champion-test-map">{BEST_TEST_MAP:.4f}<' in html
    assert f"= {BEST_TEST_MAP / POP_MAP:.2f}x popularity's {POP_MAP:.4f}" in text  # the lift, 1.93x
    assert "recall@20 0.953, 8,765 q/s (exact 2,345 q/s)" in text  # the serving operating point
    assert "bundle 1.4 MB" in text and "train 4321 rows, 800 users" in text
    # Every registry version with its status; actions only where they make sense.
    for version, status in ((CHAMPION, "champion"), (RETIRED, "retired"), (CANDIDATE, "candidate")):
        assert re.search(rf'data-version="{version}">.*?status-{status}', html, re.S), version
    assert f'href="/recsys/models/{RETIRED}/promote">Roll back<' in html
    assert f'href="/recsys/models/{CANDIDATE}/promote">Promote<' in html
    assert f"/recsys/models/{CHAMPION}/promote" not in html and "/recsys/models/20260119T030000-dddddd/" not in html
    # The history plot is inline SVG; recent runs link to their pages, newest first, with verdicts.
    assert '<div class="plot" id="map-history"><svg' in html
    runs = re.findall(r'href="/recsys/dags/music_recsys/runs/([^"]+)"', html.split('id="runs"')[1])
    assert runs[:2] == ["scheduled__2026-01-19T03%3A00%3A00%2B00%3A00", "manual__2026-01-12T03%3A00%3A00%2B00%3A00"]
    assert "pass" in text and "first_run" in text and "0.0555" in text


def test_run_page_shows_trials_segments_search_and_verdict(store, tmp_path):
    client, _ = _client(store, tmp_path, role="viewer")
    response = client.get(f"/recsys/dags/music_recsys/runs/{RUN_A}")
    assert response.status_code == 200, response.text
    html, text = response.text, _text(response.text)
    assert f'id="best-trial">{BEST}<' in html and f'id="best-map">{BEST_MAP:.4f}<' in html
    assert f'id="best-test-map">{BEST_TEST_MAP:.4f}<' in html
    assert "Model 20260112T030000-bbbbbb : champion — fixture champion" in text
    assert "Verdict first_run" in text
    # Trials sorted by MAP descending by default; the failed trial last with its error.
    assert _trials(html) == [BEST, "r4_reg0.1_a1_none", "popularity", "r4_reg0.1_a5_none"]
    assert "executor lost" in text
    # Segments of both models, and the fast-search operating point and frontier (dot 4/400 is dominated).
    assert "light (1-9 tracks) 40 0.1111" in text and "heavy (>=30 tracks) 40 0.0644" in text
    assert "Operating point: angular_ip, 4 trees, search_k 400 — recall 0.953, 8,765 q/s" in text
    frontier = html.split("frontier: metric")[1].split("</table>")[0]
    assert "angular_ip" in frontier and "dot" not in frontier
    assert "exact 2,345 q/s, exact_batched 23,456 q/s" in text
    # report.md as HTML: its table rendered, its raw HTML escaped, only its own images linked.
    assert f"<td>{BEST}</td>" in html and "<script>alert" not in html and "&lt;script&gt;" in html
    run = "manual__2026-01-12T03%3A00%3A00%2B00%3A00"
    assert f'src="/recsys/dags/music_recsys/runs/{run}/files/als_grid.png"' in html
    assert '<img src="" alt="elsewhere"' in html and "etc/passwd" not in html


def test_trials_sort_by_a_whitelisted_column_only(store, tmp_path):
    client, _ = _client(store, tmp_path)
    page = client.get(f"/recsys/dags/music_recsys/runs/{RUN_A}", params={"sort": "map", "order": "asc"}).text
    assert _trials(page) == ["popularity", "r4_reg0.1_a1_none", BEST, "r4_reg0.1_a5_none"]
    page = client.get(f"/recsys/dags/music_recsys/runs/{RUN_A}", params={"sort": "status; drop table"}).text
    assert _trials(page)[0] == BEST  # an unknown column falls back to MAP, descending


def test_unknown_run_is_404_and_another_dag_gets_a_short_page(store, tmp_path):
    client, _ = _client(store, tmp_path)
    response = client.get("/recsys/dags/music_recsys/runs/manual__1999-01-01", headers={"accept": "text/html"})
    assert response.status_code == 404 and "no run 'manual__1999-01-01' in the results store" in _text(response.text)
    assert client.get("/recsys/dags/music_recsys/runs/nope").json()["detail"].startswith("no run 'nope'")
    response = client.get(f"/recsys/dags/example_bash/runs/{RUN_A}")
    assert response.status_code == 200
    assert "belongs to DAG example_bash" in _text(response.text) and "Best grid point" not in response.text


def test_only_files_of_the_runs_report_folder_are_served(store, tmp_path):
    client, _ = _client(store, tmp_path)
    base = f"/recsys/dags/music_recsys/runs/{RUN_A}"
    png = client.get(f"{base}/files/als_grid.png")
    assert (
        png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content.endswith(b"fixture-png")
    )
    assert "sandbox" in png.headers["content-security-policy"] and png.headers["x-content-type-options"] == "nosniff"
    assert client.get(f"{base}/files/summary.json").json() == {"best_trial_id": BEST}
    for name in ("config.json", "..%2Fconfig.json", "%2E%2E%2F%2E%2E%2Fresults.sqlite", "nope.png"):
        assert client.get(f"{base}/files/{name}").status_code == 404, name
    assert client.get(f"{base}/../config.json").status_code == 404
    # A run without a report folder: the plots are drawn again from the store by the report's functions.
    segments = client.get(f"/recsys/dags/music_recsys/runs/{RUN_B}/plots/als_grid.png")
    assert segments.status_code == 200 and segments.content.startswith(b"\x89PNG") and len(segments.content) > 10_000
    assert client.get(f"{base}/plots/segments.png").content.startswith(b"\x89PNG")
    assert client.get(f"{base}/plots/passwd.png").status_code == 404


def test_anonymous_requests_get_401_or_the_login_redirect(store, tmp_path):
    client, _ = _client(store, tmp_path, role=None)
    assert client.get("/recsys/").status_code == 401
    page = client.get(f"/recsys/dags/music_recsys/runs/{RUN_A}", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"].startswith("/auth/login")
    assert "next=" in page.headers["location"] and BEST not in page.text
    assert client.post(f"/recsys/models/{RETIRED}/promote", data={"csrf_token": "x"}).status_code == 401
    assert client.get(f"/recsys/dags/music_recsys/runs/{RUN_A}/files/als_grid.png").status_code == 401
    assert registry.champion(store)["model_version"] == CHAMPION


def test_a_viewer_sees_no_action_and_is_refused_one(store, tmp_path):
    client, _ = _client(store, tmp_path, role="viewer", name="vic")
    page = client.get("/recsys/")
    assert page.status_code == 200 and "/promote" not in page.text and 'id="read-only"' in page.text
    assert client.get(f"/recsys/models/{RETIRED}/promote").status_code == 403
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = csrf_token(SECRET.encode(), SimpleAuthManagerUser(username="vic", role="viewer"))
    response = client.post(f"/recsys/models/{RETIRED}/promote", data={"csrf_token": token})
    assert response.status_code == 403
    assert registry.champion(store)["model_version"] == CHAMPION


def test_rollback_through_the_page_changes_the_registry(store, tmp_path):
    client, _ = _client(store, tmp_path, role="admin", name="ada")
    confirm = client.get(f"/recsys/models/{RETIRED}/promote")
    assert confirm.status_code == 200 and "Roll back to model" in _text(confirm.text)
    token = re.search(r'name="csrf_token" value="([0-9]+\.[0-9a-f]+)"', confirm.text).group(1)
    done = client.post(f"/recsys/models/{RETIRED}/promote", data={"csrf_token": token, "note": "incident 42"})
    assert done.status_code == 303 and done.headers["location"] == f"/recsys/?done={RETIRED}"
    champion = registry.champion(store)
    assert champion["model_version"] == RETIRED
    assert champion["reason"] == "rolled back to by ada in the Airflow UI: incident 42"
    assert registry.get(store, CHAMPION)["status"] == "retired"
    flash = client.get(done.headers["location"]).text
    assert f"Model {RETIRED} is champion: rolled back to by ada" in _text(flash)
    # A kept candidate is promoted through the same function.
    client.post(f"/recsys/models/{CANDIDATE}/promote", data={"csrf_token": token})
    assert registry.champion(store)["reason"] == "promoted by ada in the Airflow UI"


def test_state_changes_cannot_be_forged_cross_site(store, tmp_path):
    client, _ = _client(store, tmp_path, role="admin", name="ada")
    url = f"/recsys/models/{RETIRED}/promote"
    assert client.post(url, data={}).status_code == 403  # no token: what a cross-site form sends
    assert client.post(url, data={"csrf_token": "0" * 64}).status_code == 403
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    someone_else = csrf_token(SECRET.encode(), SimpleAuthManagerUser(username="mallory", role="admin"))
    assert client.post(url, data={"csrf_token": someone_else}).status_code == 403
    ada = SimpleAuthManagerUser(username="ada", role="admin")
    good = csrf_token(SECRET.encode(), ada)
    assert client.post(url, data={"csrf_token": good}, headers={"origin": "https://evil.example"}).status_code == 403
    # A token expires: one issued longer ago than CSRF_TTL_SECONDS is refused, as is a forged date on a
    # token issued now (the date is inside the HMAC).
    stale = csrf_token(SECRET.encode(), ada, issued=int(time.time()) - CSRF_TTL_SECONDS - 5)
    assert client.post(url, data={"csrf_token": stale}).status_code == 403
    forged = f"{int(time.time())}.{stale.split('.')[1]}"
    assert client.post(url, data={"csrf_token": forged}).status_code == 403
    assert client.post(url, content=b"csrf_token=" + b"a" * 5000,
                       headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413  # fmt: skip
    assert client.post(url, json={"csrf_token": good}).status_code == 415
    assert registry.champion(store)["model_version"] == CHAMPION
    # An API client with the JWT in its Authorization header needs no form token (a form cannot set it).
    done = client.post(url, data={}, headers={"authorization": "Bearer header-jwt"})
    assert done.status_code == 303 and registry.champion(store)["model_version"] == RETIRED


@pytest.mark.postgres
def test_the_pages_and_a_rollback_work_as_a_role_that_cannot_change_the_schema(postgres_url, tmp_path):
    """The UI plugin runs as recsys_ui (SELECT, and UPDATE on models): every page renders, a rollback goes
    through, and it never needed DDL rights."""
    from music_recsys.store.results import ResultsStore
    from tests.music_recsys.ui.ui_rows import build_store
    from tests.stores import reader_url

    build_store(postgres_url, tmp_path).close()
    ui_role = reader_url(postgres_url, "recsys_ui_t", promotes=True)
    with ResultsStore(ui_role) as store:
        client, _ = _client(store, tmp_path)
        assert client.get("/recsys/").status_code == 200
        assert client.get(f"/recsys/dags/music_recsys/runs/{RUN_A}").status_code == 200
        confirm = client.get(f"/recsys/models/{RETIRED}/promote")
        token = re.search(r'name="csrf_token" value="([0-9]+\.[0-9a-f]+)"', confirm.text).group(1)
        done = client.post(f"/recsys/models/{RETIRED}/promote", data={"csrf_token": token})
        assert done.status_code == 303 and registry.champion(store)["model_version"] == RETIRED


def _set_model(store, version: str, **values) -> None:
    import sqlalchemy as sa

    from music_recsys.store.results import models

    query = sa.update(models).where(models.c.model_version == version).values(**values)
    store.transaction(lambda conn: conn.execute(query))


def _headers(page: str, table_id: str) -> list[str]:
    table = page.split(f'id="{table_id}"')[1].split("</tr>")[0]
    return [_text(h).strip() for h in re.findall(r"<th[^>]*>(.*?)</th>", table, re.S)]


def test_every_metric_states_its_k(store, tmp_path):
    """Issue #30: a number without its k reads like another model's. The fixture's models and trials are
    measured at k 20."""
    client, _ = _client(store, tmp_path)
    page = client.get("/recsys/").text
    card = page.split('id="champion"')[1].split("<h2>")[0]
    assert [_text(h).strip() for h in re.findall(r"<th>(.*?)</th>", card.split("</tr>")[0])][1:] == [
        "MAP (top 20)", "precision@20", "NDCG@20", "MPR",
    ]  # fmt: skip
    assert f"Test MAP (top 20) {BEST_TEST_MAP:.4f} =" in _text(card)
    assert _headers(page, "registry")[3:6] == ["validation MAP (top 20)", "test MAP (top 20)",
                                               "popularity test MAP (top 20)"]  # fmt: skip
    assert _headers(page, "runs")[4:6] == ["validation MAP (top 20)", "test MAP (top 20)"]
    run = client.get(f"/recsys/dags/music_recsys/runs/{RUN_A}").text
    assert _headers(run, "headline")[2:9] == [
        "MAP (top 20)", "MAP@20", "precision@20", "NDCG@20", "graded NDCG@20", "MPR", "coverage@20",
    ]  # fmt: skip
    trials = _headers(run, "trials")
    assert trials[5:8] == ["MAP (top 20) ▼", "MAP@20", "precision@20"] and "coverage@20" in trials
    assert "validation MAP (top 20) 0.1234" in _text(run) and "NDCG@20" in run.split("By listener history")[1]
    confirm = client.get(f"/recsys/models/{RETIRED}/promote").text
    assert "test MAP (top 20)" in _text(confirm)
    # Models measured at different k: the registry gives each row its k instead of one in the header.
    _set_model(store, RETIRED, k=500)
    page = client.get("/recsys/").text
    assert _headers(page, "registry")[3:5] == ["k", "validation MAP"]
    assert re.search(rf'data-version="{RETIRED}">.*?<td class="num">500</td>', page, re.S)


def test_a_model_awaiting_approval_links_its_required_action_and_offers_no_promote(store, tmp_path):
    _set_model(store, CANDIDATE, status=registry.AWAITING, reason=registry.AWAITING_APPROVAL)
    run = "backfill__2026-01-08T03:00:00+00:00"
    action = f"/dags/music_recsys/runs/{quote(run, safe='')}/tasks/approve_model/required_actions"
    client, _ = _client(store, tmp_path)
    page = client.get("/recsys/").text
    pending = page.split('id="awaiting"')[1].split("</div>")[0]
    assert CANDIDATE in pending and f'href="{action}"' in pending and 'target="_top"' in pending
    # Inside Airflow's sandboxed frame the link goes through Airflow's router (see the base template's script).
    assert "data-airflow-page" in pending and "window.top.history.pushState" in page
    row = re.search(rf'<tr data-version="{CANDIDATE}">.*?</tr>', page, re.S).group(0)
    assert f'href="{action}"' in row and "/promote" not in row and "status-awaiting_approval" in row
    # The confirmation page has no form for it, and a POST is refused: the decision is Airflow's form's.
    confirm = client.get(f"/recsys/models/{CANDIDATE}/promote")
    assert confirm.status_code == 200 and 'id="confirm"' not in confirm.text and f'href="{action}"' in confirm.text
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = csrf_token(SECRET.encode(), SimpleAuthManagerUser(username="ada", role="admin"))
    refused = client.post(f"/recsys/models/{CANDIDATE}/promote", data={"csrf_token": token})
    assert refused.status_code == 409 and "Required Actions" in refused.json()["detail"]
    assert registry.get(store, CANDIDATE)["status"] == registry.AWAITING
    # A viewer sees the link too (it may look; Airflow decides whether it may answer).
    viewer, _ = _client(store, tmp_path, role="viewer", name="vic")
    assert f'href="{action}"' in viewer.get("/recsys/").text


def _failure(tmp_path, run_id: str) -> dict:
    from music_recsys.run_folders import safe_run_id

    failure = {
        "run_id": run_id, "dag_id": "music_recsys", "stage": "prepare", "task": "prepare", "retryable": False,
        "message": "train_path: /data/missing/train.parquet does not exist",
        "not_run": ["grid_points", "ingest", "check_data", "finish"], "failed_after": [], "skipped": [],
        "states": {"prepare": "failed"}, "note": "rest_api",
    }  # fmt: skip
    folder = tmp_path / "runs" / safe_run_id(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "failure.json").write_text(json.dumps(failure))
    return failure


def test_a_failed_runs_tab_shows_its_failure_json(store, tmp_path):
    run = "manual__failure_note"
    _failure(tmp_path, run)
    client, _ = _client(store, tmp_path, role="viewer")
    page = client.get(f"/recsys/dags/music_recsys/runs/{run}", headers={"accept": "text/html"})
    assert page.status_code == 200, page.text
    text = _text(page.text)
    assert "Not found" not in text and "This run failed" in text
    assert re.search(r'id="failure-stage">prepare<', page.text) and re.search(r'id="failure-task">prepare ', page.text)
    assert "train_path: /data/missing/train.parquet does not exist" in text
    assert "Did not run grid_points, ingest, check_data, finish" in text
    assert f'href="/dags/music_recsys/runs/{run}"' in page.text  # its logs, in Airflow
    # A run that failed after recording rows keeps its page and shows the failure on top.
    _failure(tmp_path, RUN_A)
    page = client.get(f"/recsys/dags/music_recsys/runs/{RUN_A}").text
    assert 'id="failure"' in page and 'id="best-trial"' in page
    assert client.get(f"/recsys/dags/music_recsys/runs/{run}/plots/als_grid.png").status_code == 404


def test_a_viewer_opening_an_action_gets_an_html_403_page(store, tmp_path):
    client, _ = _client(store, tmp_path, role="viewer", name="vic")
    page = client.get(f"/recsys/models/{RETIRED}/promote", headers={"accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 403 and page.headers["content-type"].startswith("text/html")
    assert "Not allowed" in page.text and "edit access to DAG music_recsys" in _text(page.text)
    assert '{"detail"' not in page.text and 'href="/recsys/"' in page.text
    assert client.get(f"/recsys/models/{RETIRED}/promote").json() == {"detail": "Forbidden"}  # API clients: JSON


def test_links_follow_airflows_base_path(store, tmp_path):
    """Airflow served under /airflow ([api] base_url http://host/airflow): the api-server's root path."""
    _set_model(store, CANDIDATE, status=registry.AWAITING)
    client, _ = _client(store, tmp_path, airflow_root="/airflow")
    page = client.get("/airflow/recsys/")
    assert page.status_code == 200, page.text
    links = [link for link in re.findall(r'href="([^"]+)"', page.text) if not link.startswith("#")]  # not the SVG's
    assert links and all(link.startswith("/airflow/") for link in links), links
    assert "/airflow/recsys/dags/music_recsys/runs/" in page.text
    assert "/airflow/dags/music_recsys/runs/backfill__" in page.text  # the Required Action, in Airflow's UI
    run = client.get(f"/airflow/recsys/dags/music_recsys/runs/{RUN_A}").text
    assert f'href="/airflow/dags/music_recsys/runs/{quote(RUN_A, safe="")}"' in run
    assert 'src="/airflow/recsys/dags/music_recsys/runs/' in run


def test_pages_fit_and_read_plainly(store, tmp_path):
    """Issue #30's small defects: tables scroll in their own box, buttons do not wrap, the champion's
    figures are said once, one tree is "1 tree", the confirm button names its action, a champion shows no
    retired date."""
    import sqlalchemy as sa

    from music_recsys.store.results import models

    client, _ = _client(store, tmp_path)
    card = json.loads((tmp_path / "models" / CHAMPION / "model.json").read_text())
    card["serving"]["n_trees"] = 1
    (tmp_path / "models" / CHAMPION / "model.json").write_text(json.dumps(card))
    _set_model(store, CHAMPION, reason="test MAP 0.1188 = 1.93x popularity; first champion",
               retired_at=registry.champion(store)["promoted_at"])  # fmt: skip
    page = client.get("/recsys/").text
    for html in (page, client.get(f"/recsys/dags/music_recsys/runs/{RUN_A}").text):
        assert html.count("<table") == html.count('<div class="table-wrap"><table') > 0
    assert ".table-wrap { max-width: 100%; overflow-x: auto;" in page and "white-space: nowrap" in page
    text = _text(page)
    assert text.lower().count("test map (top 20) 0.1188") == 1 and "1 tree," in text and "1 trees" not in text
    row = re.search(rf'<tr data-version="{CHAMPION}">.*?</tr>', page, re.S).group(0)
    dates = re.findall(r'<td class="nowrap">([^<]*)</td>', row)  # logical date, created, promoted, retired
    assert dates[2] == "2026-01-12 04:00" and dates[3] == "—"  # no "retired" date on the serving model
    confirm = client.get(f"/recsys/models/{RETIRED}/promote").text
    assert re.search(r'id="confirm">Roll back</button>', confirm)
    # An approved champion's card says who approved it, not the gate's figures a second time.
    _set_model(store, CHAMPION, reason="approved by ada (require_approval); gate: test MAP 0.1188 at k=20 = 1.93x")
    card = client.get("/recsys/").text.split('id="champion"')[1].split("<h2>")[0]
    assert 'id="champion-reason">approved by ada (require_approval)<' in card and _text(card).count("0.1188") == 2
    assert store.transaction(lambda conn: conn.execute(sa.select(sa.func.count()).select_from(models)).scalar()) == 4
