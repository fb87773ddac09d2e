"""The DAG's batch-recommendation tasks: skipped when off or when nothing was published, the job's
arguments for the published bundle, a bundle gone before the job refused, the load into the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from music_recsys.pipeline.batch import batch_job, store_for_run
from music_recsys.store.recommendations import RecommendationsError
from tests.music_recsys.serving.bundles import N_USERS, precompute, varied_arrays, write_test_bundle
from tests.stores import migrated

K = 7


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return precompute(write_test_bundle(tmp_path_factory.mktemp("models"), varied_arrays(1), "va", None), K)


def run_plan(tmp_path: Path, **params) -> dict:
    """A plan whose run directory holds a config.json like ``prepare`` writes, with ``params`` set."""
    from music_recsys.pipeline.config import RunConfig
    from music_recsys.run_folders import RunLayout, write_json

    layout = RunLayout(tmp_path / "runs" / "r1")
    write_json(layout.config, {**RunConfig().to_dict(), **params})
    return {"run_id": "r1", "run_dir": str(layout.root)}


def test_the_dag_tasks_skip_when_off_and_load_when_asked(bundle, tmp_path):
    publication = {"version": "va", "path": str(bundle)}
    off = run_plan(tmp_path / "off", batch_k=0)
    assert batch_job(off, publication) == {"skip": "batch_k is 0: batch recommendations are off for this run"}
    on = run_plan(tmp_path / "on", batch_k=25, batch_to_store=True)
    assert batch_job(on, None)["skip"] == "nothing was published by this run"
    batch = batch_job(on, publication)
    result = str(Path(on["run_dir"]) / "results" / "batch_recommendations.json")
    assert batch["application_args"] == ["--bundle", str(bundle), "--k", "25", "--result", result]
    assert batch["result_path"] == result and batch["skip"] is None
    with pytest.raises(RecommendationsError, match="the published bundle .* is gone"):
        batch_job(on, {"version": "gone", "path": str(tmp_path / "gone")})

    url = migrated(f"sqlite:///{tmp_path / 'results.sqlite'}")
    job_result = {"version": "va", "bundle": str(bundle)}
    assert store_for_run(run_plan(tmp_path / "keep", batch_to_store=False), job_result, url)["skip"]
    stored = store_for_run(on, job_result, url)
    assert stored == {"skip": None, "version": "va", "table": "user_recommendations", "rows": N_USERS * K}
