"""``python -m harness.screenshots``: PNGs of the recommender's pages in the Airflow UI, made with Chromium
from the real pages, into ``docs/img/``; rerun it after ``make demo`` whenever the pages change.

It starts Airflow's api-server alone on loopback (the pages read the metadata DB and the results store;
nothing needs a scheduler) with the plugins folder, Airflow's simple auth manager and two users,
``admin`` and ``viewer``, logs in as each in headless Chromium and photographs the "Recommender" page,
a run's "Recsys results" tab, the rollback confirmation and the viewer's read-only overview. With
``--measure`` it also times the pages in the app itself at the demo's size and with 50 runs in the
registry (a copy of the demo's store with 49 synthetic earlier runs).

The helpers ``ui_env``, ``launch`` and ``login`` are shared with the browser test
(``tests/dags/test_scheduler.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.services import BIN, free_port, get_json, stop, wait_until

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
USERS = {"admin": "admin", "viewer": "viewer"}  # simple auth manager: name -> password (role = name)
DAG_ID = "music_recsys"


def ui_env(home: Path) -> dict[str, str]:
    """Airflow settings for the UI with the plugin: real logins for ``USERS`` (not everyone an admin)."""
    passwords = home / "simple_auth_manager_passwords.json"
    home.mkdir(parents=True, exist_ok=True)
    passwords.write_text(json.dumps(USERS))
    return {
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{name}:{name}" for name in USERS),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }


def token(base_url: str, user: str = "admin") -> str:
    """A JWT for ``user`` from the simple auth manager (what ``POST /auth/token`` answers)."""
    import urllib.request

    request = urllib.request.Request(
        f"{base_url}/auth/token",
        data=json.dumps({"username": user, "password": USERS[user]}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["access_token"]


def launch(playwright):
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"no Chromium at {CHROMIUM}: install Debian's chromium (apt-get install chromium)")
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    )  # fmt: skip


def login(browser, base_url: str, user: str, viewport: dict | None = None):
    """A browser context logged in to Airflow as ``user`` through the simple auth manager's form."""
    context = browser.new_context(viewport=viewport or {"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{base_url}/auth/login", wait_until="networkidle")
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(USERS[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)
    return context, page


def plugin_frame(page, timeout: float = 30_000):
    """The iframe the Airflow UI shows a plugin page in, once the page inside has loaded."""
    frame = page.frame_locator("iframe").first
    frame.locator("body h1").first.wait_for(timeout=timeout)
    return frame


def plugin_document(page, mount: str = "/recsys/"):
    """The plugin page's frame as a Playwright ``Frame`` (to run scripts in it), once ``plugin_frame`` has
    seen it load."""
    return next(f for f in page.frames if mount in f.url)


def overflow_px(frame) -> int:
    """How far the page in ``frame`` is wider than its frame (0: nothing scrolls sideways but the tables'
    own boxes)."""
    return frame.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")


@contextlib.contextmanager
def api_server(home: Path, port: int, env: dict[str, str]) -> Iterator[str]:
    """Airflow's api-server alone (``AIRFLOW_HOME=home``); its base URL."""
    base_url = f"http://127.0.0.1:{port}"
    full_env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        **env,
    }
    log_path = home / "screenshots-api-server.log"
    with open(log_path, "w") as log:
        command = [str(BIN / "airflow"), "api-server", "--port", str(port)]
        process = subprocess.Popen(command, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(
                lambda: get_json(f"{base_url}/api/v2/monitor/health")["metadatabase"]["status"] == "healthy",
                120,
                f"the api-server on {base_url} (log {log_path})",
                interval=1,
            )
            yield base_url
        finally:
            stop(process)


def _champion_and_target(data_root: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    from music_recsys.store import registry
    from music_recsys.store.results import ResultsStore

    store = ResultsStore(f"sqlite:///{data_root / 'results.sqlite'}")
    try:
        models = registry.all_models(store)
    finally:
        store.close()
    champion = next((m for m in models if m["status"] == "champion"), None)
    target = next((m for m in models if m["status"] in ("retired", "candidate") and not m["bundle_removed_at"]), None)
    return champion, target


# From the browser's own clocks: when the Airflow UI asked for the frame (after the navigation began), and
# how long the plugin's page took from request to its last byte.
_FRAME_TIMING = """() => {
  const n = performance.getEntriesByType("navigation")[0];
  return [performance.timeOrigin - window.top.performance.timeOrigin, n.responseEnd - n.requestStart];
}"""


def browser_load_ms(page, url: str, repeats: int = 5) -> dict[str, float]:
    """Time from navigating to ``url`` in the UI until the plugin page inside it has rendered: median, min
    and max of ``repeats`` loads, in ms; and the medians of when the UI requested the frame
    (``frame_requested_ms``) and of the plugin page's own request-to-response time (``plugin_html_ms``)."""
    samples, requested, served = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        page.goto(url, wait_until="domcontentloaded")
        plugin_frame(page)
        samples.append((time.perf_counter() - start) * 1000)
        frame_start, html = plugin_document(page).evaluate(_FRAME_TIMING)
        requested.append(frame_start)
        served.append(html)
    return {
        "median_ms": statistics.median(samples), "min_ms": min(samples), "max_ms": max(samples),
        "frame_requested_ms": statistics.median(requested), "plugin_html_ms": statistics.median(served),
    }  # fmt: skip


def screenshots(home: Path, data_root: Path, out: Path, timings: dict[str, float] | None = None) -> list[Path]:
    """Log in, photograph each page; the PNGs written. ``timings`` receives the pages' load times in the
    browser (navigation to rendered plugin page, median of 5)."""
    from playwright.sync_api import sync_playwright

    champion, target = _champion_and_target(data_root)
    if champion is None:
        raise RuntimeError(f"no champion in {data_root / 'results.sqlite'}: run `make demo` first")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    env = {**ui_env(home), "RECSYS_DATA_ROOT": str(data_root)}
    with api_server(home, free_port(), env) as base_url, sync_playwright() as p:
        browser = launch(p)
        context, page = login(browser, base_url, "admin")
        page.goto(f"{base_url}/plugin/recommender", wait_until="networkidle")
        plugin_frame(page)
        page.wait_for_timeout(500)
        written.append(out / "recommender.png")
        page.screenshot(path=str(written[-1]), full_page=True)
        run_tab = f"{base_url}/dags/{DAG_ID}/runs/{champion['run_id']}/plugin/recsys_results"
        if timings is not None:
            timings["Recommender in the UI"] = browser_load_ms(page, f"{base_url}/plugin/recommender")["median_ms"]
            timings["Recsys results tab in the UI"] = browser_load_ms(page, run_tab)["median_ms"]
        page.goto(run_tab, wait_until="networkidle")
        plugin_frame(page)
        page.wait_for_timeout(500)
        written.append(out / "run-tab.png")
        page.screenshot(path=str(written[-1]), full_page=True)
        # The app's own pages at full length (inside the UI the frame scrolls on its own).
        page.goto(f"{base_url}/recsys/dags/{DAG_ID}/runs/{champion['run_id']}", wait_until="networkidle")
        written.append(out / "run-page.png")
        page.screenshot(path=str(written[-1]), full_page=True)
        if target is not None:
            page.goto(f"{base_url}/recsys/models/{target['model_version']}/promote", wait_until="networkidle")
            written.append(out / "rollback-confirm.png")
            page.screenshot(path=str(written[-1]), full_page=True)
        context.close()
        context, page = login(browser, base_url, "viewer")
        page.goto(f"{base_url}/recsys/", wait_until="networkidle")
        written.append(out / "recommender-viewer.png")
        page.screenshot(path=str(written[-1]), full_page=False)
        context.close()
        browser.close()
    return written


def _time(client, url: str, repeats: int) -> dict[str, float]:
    start = time.perf_counter()
    client.get(url)  # the first request also opens the store and draws the overview's figure
    first_ms = (time.perf_counter() - start) * 1000
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
    return {
        "first_ms": first_ms,
        "median_ms": statistics.median(samples),
        "max_ms": max(samples),
        "bytes": len(response.content),
    }


def _with_synthetic_runs(source: Path, target: Path, total: int) -> None:
    """A copy of the store with ``total`` registered models: the demo's, plus weekly earlier copies of its
    champion's run (trials, segments, search rows, profiles and a retired model each)."""
    from datetime import timedelta

    import sqlalchemy as sa

    from music_recsys.store import registry
    from music_recsys.store.results import ResultsStore, models

    shutil.copy(source, target)
    store = ResultsStore(f"sqlite:///{target}")
    try:
        champion = registry.champion(store)
        tables = ("als_trials", "als_segments", "ann_trials", "data_profiles")
        rows = {name: store.fetch(name, champion["run_id"]) for name in tables}
        for i in range(1, total - len(registry.all_models(store)) + 1):
            when = champion["logical_date"] - timedelta(weeks=i)
            run_id = f"scheduled__{when:%Y-%m-%dT%H:%M:%S}+00:00"
            for name, table_rows in rows.items():
                dated = {"logical_date": when} if name == "data_profiles" else {}
                store.upsert(name, [{**r, "run_id": run_id, **dated} for r in table_rows])
            row = {
                **champion,
                "model_version": f"{when:%Y%m%dT%H%M%S}-s{i:04d}",
                "run_id": run_id,
                "status": "retired",
                "logical_date": when,
                "created_at": when,
                "promoted_at": when,
                "retired_at": when + timedelta(weeks=1),
                "test_map": champion["test_map"] * (1 - 0.002 * i),
            }
            store.transaction(lambda conn, row=row: conn.execute(sa.insert(models).values(**row)))
    finally:
        store.close()


def measure(data_root: Path, repeats: int = 20) -> dict[str, Any]:
    """Server-side time of each page (median of ``repeats``) in the app, auth answered as an admin: on the
    demo's store, and on a copy with 50 registered models and runs."""
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from airflow.models.dag import DagModel
    from fastapi.testclient import TestClient

    from music_recsys.store.results import ResultsStore
    from music_recsys.ui.app import UISettings, create_app

    create_auth_manager()
    DagModel.get_team_name = staticmethod(lambda dag_id, session=None: None)  # no metadata DB needed here
    champion, _ = _champion_and_target(data_root)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fifty = Path(tmp) / "results-50.sqlite"
        _with_synthetic_runs(data_root / "results.sqlite", fifty, 50)
        for label, path in (("demo", data_root / "results.sqlite"), ("50 runs", fifty)):
            store = ResultsStore(f"sqlite:///{path}")
            app = create_app(UISettings(store=store, runs_root=data_root / "runs", secret_key="measure"))
            app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="admin", role="admin")
            client = TestClient(app)
            results[label] = {
                "overview": _time(client, "/", repeats),
                "run page": _time(client, f"/dags/{DAG_ID}/runs/{champion['run_id']}", repeats),
                "grid plot": _time(client, f"/dags/{DAG_ID}/runs/{champion['run_id']}/plots/als_grid.png", repeats),
            }
            store.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.screenshots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--airflow-home", default=str(REPO / ".airflow"), help="AIRFLOW_HOME of the demo's run")
    parser.add_argument("--data-root", default=str(REPO / "data"), help="RECSYS_DATA_ROOT of the demo's run")
    parser.add_argument("--out", default=str(REPO / "docs" / "img"), help="folder for the PNGs")
    parser.add_argument("--measure", action="store_true", help="also time the pages (demo size, 50 runs)")
    parser.add_argument("--no-screenshots", action="store_true", help="only --measure")
    args = parser.parse_args(argv)
    home, data_root = Path(args.airflow_home).resolve(), Path(args.data_root).resolve()
    timings: dict[str, float] = {}
    if not args.no_screenshots:
        for path in screenshots(home, data_root, Path(args.out), timings if args.measure else None):
            print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    if args.measure:
        print(json.dumps({"browser_median_ms": timings, "app": measure(data_root)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
