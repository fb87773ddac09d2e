"""`airflow backfill create` accepts the DAG with a grid in --dag-run-conf and plans one run per weekly
logical date (dry run: creating runs needs a scheduler to execute them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_backfill_over_a_grid_plans_every_week(tmp_path):
    airflow = str(Path(sys.executable).parent / "airflow")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow")}
    env.pop("RECSYS_SCHEDULE_CRON", None)
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([airflow, "dags", "reserialize"], env=env, check=True, capture_output=True)
    conf = {
        "train_path": "drops/{{ ds }}/train.txt",
        "validation_path": "drops/{{ ds }}/validation.txt",
        "test_path": "drops/{{ ds }}/test.txt",
        "ranks": [10, 20],
        "alphas": [1, 10],
    }
    out = subprocess.run(
        [
            airflow,
            "backfill",
            "create",
            "--dag-id",
            "music_recsys",
            "--from-date",
            "2026-01-05",
            "--to-date",
            "2026-01-27",
            "--max-active-runs",
            "2",
            "--dry-run",
            "--dag-run-conf",
            json.dumps(conf),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    dates = re.findall(r"\| (2026-\d\d-\d\d) 03:00:00\+00:00 \|", out)
    assert dates == ["2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26"]  # Mondays 03:00 UTC
    assert "drops/{{ ds }}/train.txt" in out
