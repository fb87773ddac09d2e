"""The UI path in a real browser: Airflow (api-server, scheduler, dag-processor) on loopback, the
trigger form filled in headless Chromium with a small grid, the run followed to success, and a
screenshot of the grid view saved under test-artifacts/."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from music_recsys import datagen
from music_recsys.local_airflow import get_json

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "ui"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.slow]

GRID = {"ranks": [4], "reg_params": [0.1], "alphas": [5.0], "annoy_trees": [2], "annoy_search_k": [100]}
NUMBERS = {"k": "20", "max_iter": "3"}


@pytest.fixture(scope="module")
def airflow_server(airflow_services, data_root):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            raise RuntimeError("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("Debian's chromium is not installed")
    datagen.main(out=str(data_root / "msd_like"), users=600, items=300, holdout_users=80)
    # Unpausing must not start a scheduled run of the default grid: data drops only.
    return airflow_services(RECSYS_SCHEDULE_CRON="").base_url


def test_trigger_form_runs_a_small_grid(airflow_server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=airflow_server)
        page = context.new_page()
        page.goto(f"{airflow_server}/dags/music_recsys", wait_until="networkidle")
        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.locator("[role=dialog][data-state=open]")
        dialog.wait_for()
        # Array params are JSON editors that re-format on every keystroke: paste each value whole.
        for name, value in GRID.items():
            editor = dialog.locator(f"#element_{name}")
            editor.scroll_into_view_if_needed()
            editor.click()
            page.wait_for_timeout(300)
            page.evaluate("text => navigator.clipboard.writeText(text)", json.dumps(value))
            page.keyboard.press("Control+A")
            page.keyboard.press("Control+V")
            page.wait_for_timeout(200)
        dialog.locator("textarea[name=element_transforms]").fill("none")  # enum array: one per line
        for name, value in NUMBERS.items():
            dialog.locator(f"input[name=element_{name}]").fill(value)
        dialog.screenshot(path=str(ARTIFACTS / "trigger_form.png"))
        dialog.get_by_role("button", name="Trigger", exact=True).click()

        deadline = time.monotonic() + 600
        while True:
            try:
                runs = get_json(f"{airflow_server}/api/v2/dags/music_recsys/dagRuns")["dag_runs"]
            except OSError:  # a busy api-server (the run's Spark jobs share two cores) may answer late
                runs = []
            if runs and runs[0]["state"] in ("success", "failed"):
                break
            assert time.monotonic() < deadline, f"run not finished in 10 minutes: {runs}"
            time.sleep(5)
        assert len(runs) == 1
        run = runs[0]
        assert run["conf"]["ranks"] == [4] and run["conf"]["transforms"] == ["none"] and run["conf"]["k"] == 20
        assert run["state"] == "success"
        tasks = get_json(f"{airflow_server}/api/v2/dags/music_recsys/dagRuns/{run['dag_run_id']}/taskInstances")
        fits = [t for t in tasks["task_instances"] if t["task_id"] == "fit"]
        assert [t["rendered_map_index"] for t in fits] == ["r4_reg0.1_a5_none"]
        page.goto(f"{airflow_server}/dags/music_recsys/runs/{run['dag_run_id']}", wait_until="networkidle")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "grid_view.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "grid_view.png").stat().st_size > 20_000
