"""The recommender inside the Airflow UI: mounts ``music_recsys.ui`` at ``/recsys`` in the api-server and
adds a top-level "Recommender" page and a "Recsys results" tab on every DAG run.

Only declarations live here; the app, its pages and its access checks are in the installed package
(``music_recsys.ui.app.create_app``), where they are tested without Airflow running. The app asks Airflow
for a logged-in user on every route and for DAG ``music_recsys`` access per page and action: a plugin's
FastAPI app is not behind Airflow's login by itself.
"""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/recsys"
# Airflow loads plugins in every process, each task's too (for macros); only the api-server (`airflow
# api-server`, also what `airflow standalone` starts) serves the app, so only it imports and builds it.
ON_API_SERVER = sys.argv[1:2] == ["api-server"]


def base_path() -> str:
    """The path part of ``[api] base_url`` (``/airflow`` for ``http://host/airflow/``; empty at the root):
    Airflow serves everything under it, so the views' links start with it, as Airflow's own plugins do."""
    return urlsplit(conf.get("api", "base_url", fallback="") or "/").path.rstrip("/")


def _apps() -> list[dict]:
    from music_recsys.ui.app import UISettings, create_app

    return [
        {
            # [api] secret_key is shared by every api-server worker, so a form token one worker issued is
            # accepted by the others.
            "app": create_app(UISettings(secret_key=conf.get("api", "secret_key", fallback=None))),
            "url_prefix": URL_PREFIX,
            "name": "music-recsys results and models",
        }
    ]


class MusicRecsysPlugin(AirflowPlugin):
    name = "music_recsys"
    fastapi_apps = _apps() if ON_API_SERVER else []
    external_views = [
        {
            "name": "Recommender",
            "href": f"{base_path()}{URL_PREFIX}/",
            "destination": "nav",
            "nav_top_level": True,
            "url_route": "recommender",
        },
        {
            "name": "Recsys results",
            "href": f"{base_path()}{URL_PREFIX}/dags/{{DAG_ID}}/runs/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "recsys_results",
        },
    ]
