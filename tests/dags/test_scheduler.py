"""Airflow as a deployment runs it — api-server, scheduler (LocalExecutor, PostgreSQL metadata) and
dag-processor on loopback, every Spark stage on the session's Spark Connect server (a task process is
then a thin client, so the four full runs stay quick):

- the trigger form, filled in headless Chromium with a small grid, runs to success (screenshots under
  test-artifacts/ui/);
- the recommender plugin's pages in the UI (simple auth manager, users admin and viewer) at 1280 px: the
  champion on "Recommender" with every metric's k, a run's "Recsys results" tab with its best MAP and its
  load time, nothing wider than the frame, a rollback by the admin, no action and a 403 page for the
  viewer; and a `require_approval` run that waits, listed on "Recommender" with a link to its Required
  Action (opened, with the model card) and no Promote, until it is approved through the REST API;
- a run that fails gets failure.json and its note from the dag-processor's callback (through the REST API),
  and its "Recsys results" tab says why;

The browser tests' screenshots go to test-artifacts/ui/; with ``RECSYS_WRITE_DOCS_IMG=1`` the ones
docs/airflow-ui.md shows are written into docs/img/ as well.
- `airflow backfill create` plans one run per weekly date, and executes two dates at once, each on its
  own data partition (`drops/{{ ds }}/…`), with rows for both in the results store; no scheduled run
  starts when the DAG is unpaused.

All in one stack, on the weekly schedule: its start date is the moment the stack starts, so a manual run
(dated later) gets its tasks, a backfill may still cover earlier dates, and unpausing starts nothing (the
first weekly tick is after the start date; with a start date in the past, Airflow would start the last
tick's run when it is less than a tenth of the week old).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

import harness.airflow
from harness import screenshots as ui
from harness.airflow import local_airflow
from harness.services import airflow_uri, free_port, get_json, wait_until
from music_recsys import constants as C
from music_recsys.data import generate
from music_recsys.pipeline import failure as F
from music_recsys.run_folders import run_dir
from music_recsys.store import registry
from music_recsys.store.results import ResultsStore

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "ui"
DOCS_IMG = REPO / "docs" / "img"
VIEWPORT = {"width": 1280, "height": 900}  # issue #30: the pages fit a 1280 px screen
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.postgres, pytest.mark.slow]

DATES = ["2026-01-05", "2026-01-12"]  # two Mondays: the weekly schedule's logical dates (03:00 UTC)
GRID = {"ranks": [4], "reg_params": [0.1], "alphas": [5.0], "annoy_trees": [2], "annoy_search_k": [100]}
CONF = {
    "train_path": "drops/{{ ds }}/train.parquet",
    "validation_path": "drops/{{ ds }}/validation.parquet",
    "test_path": "drops/{{ ds }}/test.parquet",
    **GRID,
    "transforms": ["none"],
    "k": 20,
    "max_iter": 3,
    "batch_k": 0,  # the batch stage has its own runs (test_dag_e2e.py)
}


def _shot(page, name: str, **kwargs) -> None:
    """A screenshot into test-artifacts/ui/; with ``RECSYS_WRITE_DOCS_IMG=1`` also into docs/img/ (the docs'
    pictures are these)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), **kwargs)
    if os.environ.get("RECSYS_WRITE_DOCS_IMG") == "1":
        shutil.copy(ARTIFACTS / name, DOCS_IMG / name)


def _chromium():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            raise RuntimeError("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def _as_admin(base_url: str):
    """``get_json`` with an admin's JWT for ``base_url``: the stack has real logins, so the harness's
    REST calls log in too (a refused token request counts as "not up yet" while the server starts)."""
    tokens: list[str] = []

    def get(url: str, timeout: float = 30) -> dict:
        if not url.startswith(base_url):
            return get_json(url, timeout)
        if not tokens:
            tokens.append(ui.token(base_url, "admin"))
        request = urllib.request.Request(url, headers={"authorization": f"Bearer {tokens[0]}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)

    return get


@pytest.fixture(scope="module")
def airflow_stack(databases, connect_server, tiny_data, tmp_path_factory):
    # The recommender plugin from plugins/, and Airflow's simple auth manager with two real users; the
    # admin is also the user a failed run's note is written as (the recsys_airflow_api connection).
    port = free_port()
    api = {"conn_type": "http", "host": "127.0.0.1", "port": port, "login": "admin", "password": ui.USERS["admin"]}
    results_url = databases.create()
    env = {
        **ui.ui_env(tmp_path_factory.mktemp("ui-auth")),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": databases.create().replace("postgresql://", "postgresql+psycopg2://"),
        "AIRFLOW_CONN_RECSYS_RESULTS": airflow_uri(results_url),
        "AIRFLOW_CONN_SPARK_DEFAULT": connect_server.connection(),
        f"AIRFLOW_CONN_{F.api_conn_id().upper()}": json.dumps(api),
        "RECSYS_RETRIES": "0",
        # The weekly schedule (the default cron) from now on: unpausing starts nothing (module docstring).
        "RECSYS_START_DATE": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harness.airflow, "get_json", _as_admin(f"http://127.0.0.1:{port}"))
        with local_airflow(tmp_path_factory.mktemp("airflow-services"), port, env) as airflow:
            airflow.unpause()
            yield {"airflow": airflow, "results_url": results_url}


@pytest.fixture(scope="module")
def backfill_stack(airflow_stack, tiny_data, data_root):
    """The same stack, with two weekly drops of the tiny data set's population (same listeners and tracks,
    plays sampled anew) for the backfill."""
    population = tiny_data["config"]
    manifests = {
        ds: generate.main(out=str(data_root / "drops" / ds), **{**population, "drop": week})
        for week, ds in enumerate(DATES, start=1)
    }
    return {**airflow_stack, "manifests": manifests}


@pytest.fixture(scope="module")
def form_run(airflow_stack) -> dict:
    """A small grid triggered through the trigger form in Chromium, run to its end; its model is the first
    champion (the rollback target of the pages test). Returns the finished run."""
    airflow = airflow_stack["airflow"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with _chromium() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        context, page = ui.login(browser, airflow.base_url, "admin")  # the stack has real logins
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=airflow.base_url)
        page.goto(f"{airflow.base_url}/dags/music_recsys", wait_until="networkidle")
        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.locator("[role=dialog][data-state=open]")
        dialog.wait_for()
        # The params come in sections (RunConfig's form sections), one open at a time: fill each in turn.
        # Array params are JSON editors that re-format on every keystroke: paste each value whole.
        sections = {
            "Data": {f"{s}_path": f"tiny/{s}.parquet" for s in ("train", "validation", "test")},
            "Grid": {"ranks": [4], "reg_params": [0.1], "alphas": [5.0], "transforms": "none", "max_iter": "3"},
            "Evaluation": {"k": "20"},
            "Fast search": {"annoy_trees": [2], "annoy_search_k": [100]},
            # No lift required: this first model becomes champion, the plugin tests roll back to it.
            "Publishing": {"min_lift_over_popularity": "0"},
        }
        for section, fields in sections.items():
            dialog.get_by_role("button", name=section, exact=True).click()
            page.wait_for_timeout(300)
            for name, value in fields.items():
                if isinstance(value, list):
                    editor = dialog.locator(f"#element_{name}")
                    editor.scroll_into_view_if_needed()
                    editor.click()
                    page.wait_for_timeout(300)
                    page.evaluate("text => navigator.clipboard.writeText(text)", json.dumps(value))
                    page.keyboard.press("Control+A")
                    page.keyboard.press("Control+V")
                    page.wait_for_timeout(200)
                elif name == "transforms":
                    dialog.locator(f"textarea[name=element_{name}]").fill(value)  # enum array: one per line
                else:
                    dialog.locator(f"input[name=element_{name}]").fill(value)
        dialog.screenshot(path=str(ARTIFACTS / "trigger_form.png"))
        before = {r["dag_run_id"] for r in airflow.runs()}
        dialog.get_by_role("button", name="Trigger", exact=True).click()
        wait_until(lambda: {r["dag_run_id"] for r in airflow.runs()} - before, 60, "the form's run", 1)
        (run_id,) = {r["dag_run_id"] for r in airflow.runs()} - before
        # Airflow's pages poll the API and re-render every few seconds: left open for the run, Chromium spends
        # CPU the suite's two cores need (measured: docs/development.md).
        page.goto("about:blank")
        wait_until(lambda: _run(airflow, run_id)["state"] in ("success", "failed"), 600, f"run {run_id} ended", 3)
        page.goto(f"{airflow.base_url}/dags/music_recsys/runs/{run_id}", wait_until="networkidle")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "grid_view.png"), full_page=True)
        browser.close()
    return _run(airflow, run_id)


def _run(airflow, run_id: str) -> dict:
    return airflow.get(f"dags/music_recsys/dagRuns/{urllib.parse.quote(run_id, safe='')}")


def test_trigger_form_runs_a_small_grid(airflow_stack, form_run):
    airflow, run = airflow_stack["airflow"], form_run
    assert run["conf"]["ranks"] == [4] and run["conf"]["transforms"] == ["none"] and run["conf"]["k"] == 20
    assert run["conf"]["train_path"] == "tiny/train.parquet"
    assert run["state"] == "success"
    tis = airflow.task_instances(run["dag_run_id"])
    fits = [t for t in tis if t["task_id"] == "fit"]
    assert [t["rendered_map_index"] for t in fits] == ["r4_reg0.1_a5_none"], [(t["task_id"], t["state"]) for t in tis]
    assert (ARTIFACTS / "grid_view.png").stat().st_size > 20_000


# The same small grid as the form's, on the same data: the gate is opened wide (no lift, any regression)
# so the model reaches the approval step whatever its MAP.
APPROVAL_CONF = {
    **{f"{split}_path": f"tiny/{split}.parquet" for split in ("train", "validation", "test")},
    **GRID,
    "transforms": ["none"],
    "k": 20,
    "max_iter": 3,
    "min_lift_over_popularity": 0,
    "max_regression": 1,
    "require_approval": True,
    "batch_k": 0,
}


def _api(airflow, path: str, method: str = "GET", body: dict | None = None, user: str = "admin") -> dict:
    request = urllib.request.Request(
        f"{airflow.base_url}/api/v2/{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"authorization": f"Bearer {ui.token(airflow.base_url, user)}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def approval(airflow_stack, form_run) -> dict:
    """A `require_approval` run after the form's (so a champion exists to compare with): what the registry,
    the Required Action and the pages showed while it waited, then its approval through the REST API and
    what followed. The approval test judges it; the pages test needs its champion and the form's model."""
    airflow = airflow_stack["airflow"]
    run_id = airflow.trigger(APPROVAL_CONF, "manual__require_approval")

    def state(task_id: str) -> str | None:
        return next((t["state"] for t in airflow.task_instances(run_id) if t["task_id"] == task_id), None)

    wait_until(lambda: state("approve_model") == "awaiting_input", 900, f"run {run_id} asking for approval", 3)
    publication = json.loads((run_dir(run_id) / "results" / "publish.json").read_text())
    version = publication["version"]
    quoted = urllib.parse.quote(run_id, safe="")
    hitl = f"dags/music_recsys/dagRuns/{quoted}/taskInstances/approve_model/-1/hitlDetails"
    with contextlib.closing(ResultsStore(airflow_stack["results_url"])) as store:
        waiting = {
            "status": registry.get(store, version)["status"],
            "champion": (registry.champion(store) or {}).get("model_version"),
            "detail": _api(airflow, hitl),
            "finish": state("finish"),
        }
        _see_the_pending_decision(airflow, run_id, version)
        try:  # a viewer may not answer
            _api(airflow, hitl, "PATCH", {"chosen_options": ["Approve"]}, user="viewer")
            waiting["viewer_answer"] = 200
        except urllib.error.HTTPError as refused:
            waiting["viewer_answer"] = refused.code
        _api(airflow, hitl, "PATCH", {"chosen_options": ["Approve"]})
        wait_until(lambda: state("finish") == "success", 600, f"run {run_id} finished after the approval", 3)
        return {
            "version": version,
            "publication": publication,
            "waiting": waiting,
            "champion": registry.champion(store),
            "announce_champion": state("announce_champion"),
        }


def test_a_run_that_requires_approval_waits_until_approved_through_the_api(approval):
    version, waiting = approval["version"], approval["waiting"]
    assert approval["publication"]["awaiting_approval"] and waiting["status"] == registry.AWAITING
    assert waiting["champion"] != version  # nothing served while it waits
    detail = waiting["detail"]
    assert detail["subject"] == f"Promote model {version} to champion?"
    assert f"| candidate `{version}` (top 20) |" in detail["body"] and "**Data check:**" in detail["body"]
    assert "re-scored on this run's data (top 20)" in detail["body"]  # the champion, measured like the candidate
    assert waiting["finish"] not in ("success", "skipped")  # the run waits
    assert waiting["viewer_answer"] == 403
    champion = approval["champion"]
    assert champion["model_version"] == version and champion["reason"].startswith("approved by admin")
    assert approval["announce_champion"] == "success"


def _see_the_pending_decision(airflow, run_id: str, version: str) -> None:
    """The waiting model on "Recommender": listed with a link to its Required Action and no Promote; the
    link opens Airflow's Required Action page with the model card."""
    base = airflow.base_url
    with _chromium() as p:
        browser = ui.launch(p)
        context, page = ui.login(browser, base, "admin", VIEWPORT)
        page.goto(f"{base}/plugin/recommender", wait_until="networkidle")
        frame = ui.plugin_frame(page)
        pending = frame.locator(f'#awaiting li[data-version="{version}"]')
        assert pending.is_visible()
        row = frame.locator(f'#registry tr[data-version="{version}"]')
        assert row.locator("a", has_text="Promote").count() == 0
        link = row.locator("a.required-action")
        quoted = urllib.parse.quote(run_id, safe="")
        assert link.get_attribute("href") == f"/dags/music_recsys/runs/{quoted}/tasks/approve_model/required_actions"
        _shot(page, "recommender-pending.png", full_page=True)
        pending.locator("a.required-action").click()  # target=_top: the Airflow UI itself navigates
        page.wait_for_url(lambda url: url.endswith("/tasks/approve_model/required_actions"), timeout=30_000)
        page.get_by_text(f"Promote model {version} to champion?").first.wait_for(timeout=30_000)
        page.get_by_text("test lift over popularity").first.wait_for(timeout=30_000)  # the model card
        page.get_by_role("button", name="Approve").first.wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        _shot(page, "required-action.png", full_page=True)
        browser.close()


def test_the_recommender_pages_in_the_browser(airflow_stack, approval):
    airflow = airflow_stack["airflow"]
    base = airflow.base_url
    store = ResultsStore(airflow_stack["results_url"])
    try:
        champion = registry.champion(store)
        earlier = [m for m in registry.all_models(store) if m["status"] == "retired" and not m["bundle_removed_at"]]
        assert champion and earlier, "the form run's model, retired by the approved one"
        target = earlier[0]
        trials = store.fetch("als_trials", target["run_id"])
        best = next(r for r in trials if r["is_best"] and r["split"] == "validation")
        k = best["k"]
        with _chromium() as p:
            browser = ui.launch(p)
            context, page = ui.login(browser, base, "admin", VIEWPORT)
            page.goto(f"{base}/dags/music_recsys", wait_until="networkidle")
            page.get_by_role("link", name="Recommender").first.click()
            frame = ui.plugin_frame(page)
            assert frame.locator("#champion-version").inner_text() == champion["model_version"]
            # Every metric says its k; nothing is wider than the frame at 1280 px.
            assert f"test MAP (top {k})" in frame.locator("#registry th").all_inner_texts()
            assert f"precision@{k}" in frame.locator("#champion th").all_inner_texts()
            assert ui.overflow_px(ui.plugin_document(page)) <= 0
            _shot(page, "recommender.png", full_page=True)
            # The finished run's tab: its best trial's MAP as als_trials holds it.
            run_url = f"{base}/dags/music_recsys/runs/{urllib.parse.quote(target['run_id'], safe='')}"
            page.goto(run_url, wait_until="networkidle")
            tab = page.get_by_role("tab", name="Recsys results").or_(page.get_by_role("link", name="Recsys results"))
            tab.first.click()
            frame = ui.plugin_frame(page)
            assert frame.locator("#best-trial").inner_text() == best["trial_id"]
            assert frame.locator("#best-map").inner_text() == f"{best['map']:.4f}"
            assert f"precision@{k}" in frame.locator("#trials th").all_inner_texts()
            assert ui.overflow_px(ui.plugin_document(page)) <= 0
            _shot(page, "run-tab.png", full_page=True)
            # How long the tab and the overview take to show in Chromium (issue #30: 2.6 s measured before).
            timings = {
                "Recommender": ui.browser_load_ms(page, f"{base}/plugin/recommender"),
                "Recsys results tab": ui.browser_load_ms(page, f"{run_url}/plugin/recsys_results"),
            }
            (ARTIFACTS / "load_times.json").write_text(json.dumps(timings, indent=2))
            print(f"Chromium load times (ms, 5 loads each): {json.dumps(timings)}")
            assert all(t["median_ms"] < 30_000 for t in timings.values())
            page.goto(f"{base}/recsys/dags/music_recsys/runs/{urllib.parse.quote(target['run_id'], safe='')}")
            page.locator("#best-trial").wait_for()
            _shot(page, "run-page.png", full_page=True)
            # The admin rolls back to the earlier model, after the confirmation.
            page.goto(f"{base}/plugin/recommender", wait_until="networkidle")
            frame = ui.plugin_frame(page)
            frame.locator(f'tr[data-version="{target["model_version"]}"] a.button').click()
            frame.locator("#confirm").wait_for()
            assert frame.locator("#confirm").inner_text() == "Roll back"
            _shot(page, "rollback-confirm.png")
            frame.locator("#confirm").click()
            frame.locator("#flash").wait_for(timeout=30_000)
            rolled_back = registry.champion(store)
            assert rolled_back["model_version"] == target["model_version"], rolled_back
            assert rolled_back["reason"] == "rolled back to by admin in the Airflow UI"
            assert frame.locator("#champion-version").inner_text() == target["model_version"]
            context.close()
            # The viewer reads the same page without any action, and a POST from its session is refused.
            context, page = ui.login(browser, base, "viewer", VIEWPORT)
            page.goto(f"{base}/plugin/recommender", wait_until="networkidle")
            frame = ui.plugin_frame(page)
            assert frame.locator("#read-only").is_visible() and frame.locator("a.button").count() == 0
            _shot(page, "recommender-viewer.png", full_page=True)
            refused = context.request.post(f"{base}/recsys/models/{champion['model_version']}/promote", form={})
            assert refused.status == 403
            # A viewer who opens an action's page gets a page saying so, not raw JSON.
            response = page.goto(f"{base}/recsys/models/{champion['model_version']}/promote")
            assert response.status == 403 and page.locator("h1").inner_text() == "Not allowed"
            assert "edit access to DAG music_recsys" in page.locator("body").inner_text()
            _shot(page, "forbidden.png")
            browser.close()
        assert registry.champion(store)["model_version"] == target["model_version"]
    finally:
        store.close()


def test_the_dag_processor_writes_failure_json_and_the_runs_note(airflow_stack):
    """A failed run under a real deployment: the DAG's on_failure_callback runs in the dag-processor, where
    there is no metadata DB, reads the task states through the supervisor, writes failure.json and sets the
    run's note through the REST API with the ``recsys_airflow_api`` connection."""
    airflow = airflow_stack["airflow"]
    run_id = airflow.trigger({"train_path": "missing/train.parquet"}, "manual__failure_note")
    path = run_dir(run_id) / F.FAILURE_FILE
    quoted = urllib.parse.quote(run_id, safe="")
    wait_until(lambda: airflow.get(f"dags/music_recsys/dagRuns/{quoted}")["state"] == "failed", 240, "the run failed")

    def written() -> bool:  # the callback runs after the run is marked failed
        return path.exists() and "note" in json.loads(path.read_text())

    wait_until(written, 120, f"{path} with the note's outcome")
    failure = json.loads(path.read_text())
    wait_until(lambda: airflow.get(f"dags/music_recsys/dagRuns/{quoted}")["note"], 30, "the run's note")
    note = airflow.get(f"dags/music_recsys/dagRuns/{quoted}")["note"]
    assert (failure["stage"], failure["task"], failure["retryable"], failure["note"]) == (
        "prepare",
        "prepare",
        False,
        "rest_api",
    )
    assert failure["message"].startswith("train_path: ") and failure["message"].endswith("does not exist")
    assert failure["not_run"][:3] == ["ingest", "check_data", "index"] and "finish" in failure["not_run"]
    assert failure["states"]["prepare"] == "failed" and failure["states"]["publish"] == "upstream_failed"
    assert note == F.note_line(failure) and note.startswith("Failed at prepare (not retried: fix the input): ")
    # The run's "Recsys results" tab says why, from failure.json (it recorded nothing in the results store).
    with _chromium() as p:
        browser = ui.launch(p)
        _, page = ui.login(browser, airflow.base_url, "viewer", VIEWPORT)
        page.goto(f"{airflow.base_url}/dags/music_recsys/runs/{quoted}/plugin/recsys_results", wait_until="networkidle")
        frame = ui.plugin_frame(page)
        assert frame.locator("#failure-stage").inner_text() == "prepare"
        assert frame.locator("#failure-message").inner_text() == failure["message"]
        assert "grid_points" in frame.locator("#failure-not-run").inner_text()
        _shot(page, "failed-run-tab.png", full_page=True)
        browser.close()


def test_backfill_over_a_grid_plans_every_week(backfill_stack):
    out = backfill_stack["airflow"].cli(
        "backfill", "create", "--dag-id", "music_recsys", "--from-date", "2026-01-05", "--to-date", "2026-01-27",
        "--max-active-runs", "2", "--dry-run", "--dag-run-conf", json.dumps(CONF),
    )  # fmt: skip
    dates = re.findall(r"\| (2026-\d\d-\d\d) 03:00:00\+00:00 \|", out)
    assert dates == ["2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26"]  # Mondays 03:00 UTC
    assert "drops/{{ ds }}/train.parquet" in out


def test_backfill_runs_each_date_on_its_partition_concurrently(backfill_stack, data_root):
    airflow, manifests = backfill_stack["airflow"], backfill_stack["manifests"]
    airflow.cli(
        "backfill", "create", "--dag-id", "music_recsys", "--from-date", DATES[0], "--to-date", "2026-01-13",
        "--max-active-runs", "2", "--dag-run-conf", json.dumps(CONF),
    )  # fmt: skip
    runs = airflow.wait_for_runs(2, timeout=900, run_type="backfill")
    # The schedule started nothing: every other run of the stack was triggered by hand.
    assert {r["run_type"] for r in airflow.runs()} == {"manual", "backfill"}
    assert [r["state"] for r in runs] == ["success", "success"]
    assert [r["logical_date"][:10] for r in runs] == DATES
    assert all(r["conf"]["ranks"] == [4] for r in runs)
    # Both runs were active at the same time (the backfill allows 2; the fits still queue one at a time).
    spans = [(datetime.fromisoformat(r["start_date"]), datetime.fromisoformat(r["end_date"])) for r in runs]
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans

    store = ResultsStore(backfill_stack["results_url"])
    try:
        for run, ds in zip(runs, DATES, strict=True):
            directory = run_dir(run["dag_run_id"])
            plan = json.loads((directory / "plan.json").read_text())
            train = plan["ingest_args"][plan["ingest_args"].index("--train") + 1]
            assert train == str(data_root / "drops" / ds / "train.parquet")
            ingest = json.loads((directory / "results" / "ingest.json").read_text())
            assert ingest["splits"]["train"]["rows_read"] == manifests[ds]["stats"]["train"]["rows"]
            rows = store.fetch("als_trials", run["dag_run_id"])
            assert {(r["trial_id"], r["split"]) for r in rows} >= {
                (C.POPULARITY_TRIAL_ID, "validation"),
                ("r4_reg0.1_a5_none", "validation"),
                ("r4_reg0.1_a5_none", "test"),
            }
            assert all(r["status"] == "success" for r in rows)
            assert store.fetch("ann_trials", run["dag_run_id"])
            # Published and judged by the gate (a rank-4, 3-iteration model may well lose to popularity).
            model = json.loads((directory / "results" / "publish.json").read_text())
            assert registry.get(store, model["version"])["status"] == model["status"] and model["reason"]
        assert run_dir(runs[0]["dag_run_id"]) != run_dir(runs[1]["dag_run_id"])
        assert manifests[DATES[0]]["stats"]["train"]["rows"] != manifests[DATES[1]]["stats"]["train"]["rows"]
    finally:
        store.close()
