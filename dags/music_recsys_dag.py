"""
### music_recsys — implicit-feedback ALS grid, evaluation, fast search, and a served champion

Trains Spark MLlib ALS (`implicitPrefs=True`) on play counts (`user_id`, `count`, `track_id`) for every
point of the grid `ranks × reg_params × alphas × transforms`, one mapped Spark task per point (or
`fits_per_task` points); scores each against a popularity baseline (MAP, precision@k, NDCG@k, graded
NDCG, MPR, coverage); picks the best point on validation and scores it on test; measures Annoy against
exact top-k on its factors; publishes it as a model bundle and promotes it to champion when it passes
the gate.

Stages: `prepare` → `ingest` → `check_data` (the drop against the last good run) → `index` → `fit`
(mapped) → `evaluate` → `fast_search` → `record` → `publish` → `report` → `announce_champion` (emits
`recsys_model` when the champion changed) → `finish` (retention).
Spark stages run through the `spark_default` connection: type `spark` submits each job
(`spark-submit`), type `spark_connect` runs it on a Spark Connect server.
Artifacts go to `$RECSYS_DATA_ROOT/runs/<run_id>/`, bundles to `$RECSYS_DATA_ROOT/models/<version>/`;
input paths must lie under `RECSYS_DATA_ROOT` or a root in `RECSYS_INPUT_ROOTS`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task

from music_recsys.pipeline.config import RunConfig
from music_recsys.pipeline.operators import SparkJobOperator

JOBS_DIR = Path(os.environ.get("RECSYS_JOBS_DIR", Path(__file__).resolve().parents[1] / "jobs"))
# A producer that lands a new play-count drop emits this asset; the DAG then runs with its defaults
# (or the conf of the producing event). Ingest emits the second one when a run has read its inputs, and
# a promotion emits the third, with the new version in its extra, for whatever serves or mirrors models.
PLAY_COUNT_DROP = Asset(name="play_counts_drop", uri="recsys://play-counts/drop")
INGESTED_PLAY_COUNTS = Asset(name="ingested_play_counts", uri="recsys://play-counts/ingested")
RECSYS_MODEL = Asset(name="recsys_model", uri="recsys://model/champion")
SCHEDULE_CRON = os.environ.get("RECSYS_SCHEDULE_CRON", "0 3 * * 1")
# No scheduled run before this date (backfills may still cover earlier dates).
START_DATE = pendulum.parse(os.environ.get("RECSYS_START_DATE", "2026-01-01"), tz="UTC")
MAX_PARALLEL_FITS = int(os.environ.get("RECSYS_MAX_PARALLEL_FITS", "1"))
SPARK_TIMEOUT = timedelta(hours=float(os.environ.get("RECSYS_SPARK_TIMEOUT_HOURS", "2")))

# Every param's default, schema, description and form section is defined once, on RunConfig.
PARAMS = {
    spec.name: Param(spec.default, description=spec.description, section=spec.section, **spec.schema)
    for spec in RunConfig.param_specs()
}


@dag(
    dag_id="music_recsys",
    # Weekly retraining (RECSYS_SCHEDULE_CRON; empty = data drops only), or as soon as a new data drop lands.
    schedule=(
        AssetOrTimeSchedule(timetable=CronTriggerTimetable(SCHEDULE_CRON, timezone="UTC"), assets=[PLAY_COUNT_DROP])
        if SCHEDULE_CRON
        else [PLAY_COUNT_DROP]
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=2,
    params=PARAMS,
    doc_md=__doc__,
    tags=["recsys", "spark", "als", "annoy"],
    default_args={
        "retries": int(os.environ.get("RECSYS_RETRIES", "1")),
        "retry_delay": timedelta(seconds=float(os.environ.get("RECSYS_RETRY_DELAY_SECONDS", "30"))),
        "retry_exponential_backoff": True,
    },
)
def music_recsys():
    @task(multiple_outputs=True)
    def prepare() -> dict:
        """Render date templates in paths, validate params (allowed roots, bounds, enums), plan the run.

        Paths may hold Jinja templates ({{ ds }}, {{ ds_nodash }}, ...), so each backfill date reads
        its own partition. Bad params fail the run at once, without retries."""
        from music_recsys.pipeline.tasks import fail_fast
        from music_recsys.pipeline.tasks import prepare as plan_run

        context = get_current_context()
        dag_run = context["dag_run"]
        logical_date = (dag_run.logical_date or dag_run.run_after).isoformat()
        with fail_fast():
            return plan_run(
                context["params"],
                context["run_id"],
                logical_date,
                render=lambda text: context["task"].render_template(text, context),
            )

    @task
    def grid_points(plan: dict) -> list[dict]:
        """Arguments of every fit task: one grid point each, or `fits_per_task` points."""
        return plan["fit_kwargs"]

    @task(retries=3)
    def check_data(plan: dict, ingest_result: dict) -> dict:
        """This drop's profile against the last good run's; drift fails the run (or warns, per params)."""
        from music_recsys.pipeline.tasks import check_data as check
        from music_recsys.pipeline.tasks import fail_fast

        with fail_fast():
            return check(plan, ingest_result)

    plan = prepare()
    spark_defaults = {
        "execution_timeout": SPARK_TIMEOUT,
        "conn_id": os.environ.get("RECSYS_SPARK_CONN_ID", "spark_default"),
    }
    ingest = SparkJobOperator(
        task_id="ingest",
        application=str(JOBS_DIR / "ingest.py"),
        name="music_recsys.ingest",
        application_args=plan["ingest_args"],
        result_path=plan["ingest_result"],
        outlets=[INGESTED_PLAY_COUNTS],
        doc_md="Read and validate train/validation/test, profile each split, downsample non-hold-out users.",
        **spark_defaults,
    )
    data_check = check_data(plan, ingest.output)
    index = SparkJobOperator(
        task_id="index",
        application=str(JOBS_DIR / "index_ids.py"),
        name="music_recsys.index",
        application_args=plan["index_args"],
        result_path=plan["index_result"],
        doc_md="StringIndexer fitted on train; validation/test rows with unseen ids skipped and counted.",
        **spark_defaults,
    )
    fit = SparkJobOperator.partial(
        task_id="fit",
        application=str(JOBS_DIR / "fit_als.py"),
        map_index_template="{{ task.grid_point }}",
        max_active_tis_per_dag=MAX_PARALLEL_FITS,
        doc_md="Implicit ALS for one grid point (or `fits_per_task` points in one Spark application); saves "
        "user and item factors per point.",
        **spark_defaults,
    ).expand_kwargs(grid_points(plan))
    evaluate = SparkJobOperator(
        task_id="evaluate",
        application=str(JOBS_DIR / "evaluate.py"),
        name="music_recsys.evaluate",
        application_args=plan["evaluate_args"],
        result_path=plan["evaluate_result"],
        trigger_rule="all_done_min_one_success",
        doc_md="Top-k inside Spark for every trial and a popularity baseline; best on validation; test.",
        **spark_defaults,
    )

    @task
    def fast_search(plan: dict, evaluation: dict) -> dict:
        """Annoy (dot and inner-product-to-angular) vs exact top-k on the best trial's item factors."""
        from music_recsys.pipeline.tasks import fast_search as run_search

        return run_search(plan, evaluation)

    @task(retries=3)
    def record(plan: dict, evaluation: dict, search: dict) -> dict:
        """Upsert als_trials, als_segments and ann_trials rows into the recsys_results store."""
        from music_recsys.pipeline.tasks import record as record_rows

        return record_rows(plan, evaluation, search)

    @task(retries=3)
    def publish(plan: dict, evaluation: dict, search: dict, data_check: dict) -> dict:
        """Model bundle of the best point; registered, and promoted to champion if it passes the gate."""
        from music_recsys.pipeline.tasks import publish as publish_model

        return publish_model(plan, evaluation, search, data_check)

    @task
    def report(plan: dict, evaluation: dict, search: dict, recorded: dict, data_check: dict, publication: dict):
        """Grid, segment and recall-vs-QPS plots plus a markdown report under the run directory."""
        from music_recsys.pipeline.report import write_report

        return write_report(plan, evaluation, search, recorded, data_check, publication)

    @task(outlets=[RECSYS_MODEL])
    def announce_champion(publication: dict) -> str:
        """Emits `recsys_model` with the new version when this run's model became champion; skipped otherwise."""
        from airflow.sdk.exceptions import AirflowSkipException

        if not publication["promoted"]:
            raise AirflowSkipException(f"model {publication['version']} not promoted: {publication['reason']}")
        get_current_context()["outlet_events"][RECSYS_MODEL].extra = {
            "version": publication["version"],
            "path": publication["path"],
        }
        return publication["version"]

    @task(trigger_rule="none_failed")
    def finish(plan: dict) -> dict:
        """The run's data profile becomes the next baseline; runs beyond RECSYS_KEEP_RUNS are slimmed."""
        from music_recsys.pipeline.tasks import finish as finish_run

        return finish_run(plan)

    search = fast_search(plan, evaluate.output)
    recorded = record(plan, evaluate.output, search)
    publication = publish(plan, evaluate.output, search, data_check)
    summary = report(plan, evaluate.output, search, recorded, data_check, publication)
    announced = announce_champion(publication)
    [summary, announced] >> finish(plan)
    ingest >> data_check >> index >> fit >> evaluate
    recorded >> publication


music_recsys()
