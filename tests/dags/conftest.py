"""Airflow as users run it, for the tests that need a real scheduler (music_recsys.local_airflow)."""

from __future__ import annotations

import contextlib

import pytest

from music_recsys.local_airflow import local_airflow


@pytest.fixture(scope="module")
def airflow_services(tmp_path_factory, free_port):
    """``start(**env)`` starts api-server, scheduler (LocalExecutor) and dag-processor on loopback with these
    extra environment variables and returns a ``LocalAirflow``; all are stopped when the module ends."""
    with contextlib.ExitStack() as stack:

        def start(**extra_env: str):
            home = tmp_path_factory.mktemp("airflow-services")
            return stack.enter_context(local_airflow(home, free_port(), {"RECSYS_RETRIES": "0", **extra_env}))

        yield start
