"""``plugins/music_recsys_plugin.py`` through Airflow's own plugin manager: it loads without import errors,
its views validate against the response models the api-server serves plugins with, and the api-server's
plugin integration mounts the app at /recsys behind Airflow's login."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def plugins(monkeypatch):
    from airflow import plugins_manager, settings

    cached = [
        plugins_manager._get_plugins,
        plugins_manager._get_ui_plugins,
        plugins_manager.get_fastapi_plugins,
        plugins_manager.get_flask_plugins,
    ]
    monkeypatch.setattr(settings, "PLUGINS_FOLDER", str(REPO / "plugins"))
    monkeypatch.setattr(sys, "argv", ["airflow", "api-server"])  # the app is built in the api-server only
    for function in cached:
        function.cache_clear()
    yield plugins_manager
    for function in cached:
        function.cache_clear()  # the next user of the plugin manager loads from its own folder


def test_the_plugin_loads_without_import_errors(plugins):
    loaded, import_errors = plugins._get_plugins()
    assert import_errors == {}
    ours = [p for p in loaded if p.name == "music_recsys"]
    assert len(ours) == 1 and Path(ours[0].__module__.replace(".", "/")).name == "music_recsys_plugin"


def test_its_views_validate_against_airflows_response_models(plugins):
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse, PluginResponse

    info = next(p for p in plugins.get_plugin_info() if p["name"] == "music_recsys")
    plugin = PluginResponse.model_validate(info)  # what GET /api/v2/plugins returns to the UI
    views = {v.name: v for v in plugin.external_views}
    assert set(views) == {"Recommender", "Recsys results"}
    nav, tab = views["Recommender"], views["Recsys results"]
    assert (nav.destination, nav.href, nav.url_route, nav.nav_top_level) == ("nav", "/recsys/", "recommender", True)
    assert (tab.destination, tab.href) == ("dag_run", "/recsys/dags/{DAG_ID}/runs/{RUN_ID}")
    assert tab.url_route == "recsys_results"
    assert all(isinstance(v, ExternalViewResponse) for v in plugin.external_views)
    ui_views, _ = plugins._get_ui_plugins()  # no url_route clash with another plugin: both kept
    assert {v["url_route"] for v in ui_views} >= {"recommender", "recsys_results"}
    assert [(a.url_prefix, a.app) for a in plugin.fastapi_apps] == [("/recsys", "fastapi.applications.FastAPI")]


def test_other_processes_do_not_build_the_app(plugins, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["airflow", "scheduler"])
    loaded, import_errors = plugins._get_plugins()
    ours = next(p for p in loaded if p.name == "music_recsys")
    assert import_errors == {} and ours.fastapi_apps == [] and len(ours.external_views) == 2


def test_the_api_server_mounts_it_behind_the_login(plugins):
    from airflow.api_fastapi.app import create_auth_manager, init_plugins

    create_auth_manager()  # the api-server's auth manager, which checks a presented token
    app = FastAPI()
    init_plugins(app)
    assert any(getattr(route, "path", None) == "/recsys" for route in app.routes)
    client = TestClient(app)
    assert client.get("/recsys/").status_code == 401  # no session: never a 200 with data
    assert client.get("/recsys/", headers={"authorization": "Bearer not-a-jwt"}).status_code in (401, 403)


def test_its_links_start_with_airflows_base_path(plugins, monkeypatch):
    """Airflow under a sub-path (``[api] base_url = http://host/airflow/``): the views link there, not to
    a hard-coded ``/recsys/`` at the host's root."""
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://host.example/airflow/")
    monkeypatch.setattr(sys, "argv", ["airflow", "scheduler"])  # the views only: no app to build
    loaded, import_errors = plugins._get_plugins()
    ours = next(p for p in loaded if p.name == "music_recsys")
    assert import_errors == {}
    assert {v["name"]: v["href"] for v in ours.external_views} == {
        "Recommender": "/airflow/recsys/",
        "Recsys results": "/airflow/recsys/dags/{DAG_ID}/runs/{RUN_ID}",
    }
