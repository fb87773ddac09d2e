"""The DAG's batch-recommendation tasks: plan the batch job for the published bundle, then (with
``batch_to_store``) load its lists into the results store. What the lists are and how they are written,
checked, loaded and exported is ``music_recsys.store.recommendations``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from music_recsys.pipeline.config import RunConfig
from music_recsys.run_folders import RunLayout
from music_recsys.store.bundle import CARD
from music_recsys.store.recommendations import TABLE, RecommendationsError, load


def batch_job(plan: dict[str, Any], publication: dict[str, Any] | None) -> dict[str, Any]:
    """Arguments of the batch job for this run's published bundle, or ``{"skip": reason}``."""
    config = RunConfig.load(plan["run_dir"])
    if config.batch_k == 0:
        return {"skip": "batch_k is 0: batch recommendations are off for this run"}
    if not publication or not publication.get("path"):
        return {"skip": "nothing was published by this run"}
    bundle = Path(publication["path"])
    if not (bundle / CARD).exists():
        raise RecommendationsError(
            f"model {publication.get('version')}: the published bundle {bundle} is gone (retention, or removed by "
            "hand); rerun publish to write it again"
        )
    result = str(RunLayout(plan["run_dir"]).stage_result("batch_recommendations"))
    return {
        "skip": None,
        "version": publication["version"],
        "bundle": str(bundle),
        "result_path": result,
        "application_args": ["--bundle", str(bundle), "--k", str(config.batch_k), "--result", result],
    }


def store_for_run(plan: dict[str, Any], batch: dict[str, Any], url: str | None = None) -> dict[str, Any]:
    """With ``batch_to_store``: load the run's batch recommendations into the results store; else
    ``{"skip": reason}``."""
    from music_recsys.pipeline.tasks import open_store

    if not RunConfig.load(plan["run_dir"]).batch_to_store:
        return {"skip": "batch_to_store is false: the recommendations stay in the bundle only"}
    with open_store(url) as store:
        rows = load(store, batch["bundle"])
    return {"skip": None, "version": batch["version"], "table": TABLE, "rows": rows}
