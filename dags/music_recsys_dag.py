"""
### music_recsys — implicit-feedback ALS grid, evaluation, fast search, and a served champion

Trains Spark MLlib ALS (`implicitPrefs=True`) on play counts (`user_id`, `count`, `track_id`) for every
point of the grid `ranks × reg_params × alphas × transforms`, one mapped Spark task per point (or
`fits_per_task` points); scores each against a popularity baseline (MAP, precision@k, NDCG@k, graded
NDCG, MPR, coverage); picks the best point on validation and scores it on test; measures Annoy against
exact top-k on its factors; publishes it as a model bundle and promotes it to champion when it passes
the gate.

Stages: `prepare` → `ingest` → `check_data` (the drop against the last good run) → `index`, and beside
the index the search's chain `propose_round_1` → `screen_round_1` (after the index) → `propose_round_2` →
`screen_round_2` (`search: adaptive` only: Optuna's proposals screened on a share of the users within
`search_budget_minutes`; skipped in grid mode) → `grid_points` → `fit`
(mapped) → `evaluate` → `fast_search` → `record` → `publish` → `report` → `announce_champion` (emits
`recsys_model` when the champion changed) → `finish` (retention); after `publish`, beside them,
`batch_recommendations` (every train user's top `batch_k` into the bundle, `batch_k` 0 = off) and
`store_recommendations` (into `user_recommendations`, with `batch_to_store`). With `require_approval`,
`approve_model` (human-in-the-loop) decides between `publish` and `settle`; otherwise it is skipped.
Spark stages run through the `spark_default` connection: type `spark` submits each job
(`spark-submit`), type `spark_connect` runs it on a Spark Connect server.
Artifacts go to `$RECSYS_DATA_ROOT/runs/<run_id>/`, bundles to `$RECSYS_DATA_ROOT/models/<version>/`;
input paths must lie under `RECSYS_DATA_ROOT` or a root in `RECSYS_INPUT_ROOTS`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task

from music_recsys import constants as C
from music_recsys import settings
from music_recsys.pipeline.approval import ModelApprovalOperator
from music_recsys.pipeline.config import RunConfig
from music_recsys.pipeline.failure import on_run_failure, record_task_failure
from music_recsys.pipeline.operators import ScreeningJobOperator, SparkJobOperator

JOBS_DIR = settings.jobs_dir(beside=__file__)
# A producer that lands a new play-count drop emits this asset; the DAG then runs with its defaults
# (or the conf of the producing event). Ingest emits the second one when a run has read its inputs, and
# a promotion emits the third, with the new version in its extra, for whatever serves or mirrors models.
PLAY_COUNT_DROP = Asset(name="play_counts_drop", uri="recsys://play-counts/drop")
INGESTED_PLAY_COUNTS = Asset(name="ingested_play_counts", uri="recsys://play-counts/ingested")
RECSYS_MODEL = Asset(name="recsys_model", uri="recsys://model/champion")
# Deployment settings (defaults and meanings: music_recsys/settings.py, docs/environment.md).
SCHEDULE_CRON = settings.text("RECSYS_SCHEDULE_CRON")
# No scheduled run before this date (backfills may still cover earlier dates).
START_DATE = pendulum.parse(settings.text("RECSYS_START_DATE"), tz="UTC")
MAX_PARALLEL_FITS = settings.integer("RECSYS_MAX_PARALLEL_FITS", minimum=1)
SPARK_TIMEOUT = timedelta(hours=settings.number("RECSYS_SPARK_TIMEOUT_HOURS", minimum=0))

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
        "retries": settings.integer("RECSYS_RETRIES", minimum=0),
        "retry_delay": timedelta(seconds=settings.number("RECSYS_RETRY_DELAY_SECONDS", minimum=0)),
        "retry_exponential_backoff": True,
        # Keeps each task's final error for on_run_failure (docs/failures.md).
        "on_failure_callback": record_task_failure,
    },
    # A failed run leaves failure.json (the cause, not its symptoms) and says it in the run's note.
    on_failure_callback=on_run_failure,
)
def music_recsys():
    @task(multiple_outputs=True)
    def prepare() -> dict:
        """Fill date placeholders in paths, validate params (allowed roots, bounds, enums), migrate the
        results store's schema (`music-recsys db upgrade`), plan the run.

        Paths may hold the run's dates ({{ ds }}, {{ ds_nodash }}, {{ data_interval_end | ds }}, ...), so
        each backfill date reads its own partition; they are filled without a template engine, so a param
        can never read a connection or a variable. Bad params fail the run at once, without retries."""
        from music_recsys.pipeline.tasks import fail_fast
        from music_recsys.pipeline.tasks import prepare as plan_run

        context = get_current_context()
        dag_run = context["dag_run"]
        logical_date = dag_run.logical_date or dag_run.run_after
        dates = {
            "data_interval_start": getattr(dag_run, "data_interval_start", None),
            "data_interval_end": getattr(dag_run, "data_interval_end", None),
        }
        with fail_fast():
            return plan_run(context["params"], context["run_id"], logical_date.isoformat(), dates)

    @task
    def propose_round_1(plan: dict) -> list[dict]:
        """Adaptive search: the first screening round's fit tasks (Optuna proposals, seeded with the
        champion's point and earlier searches' best). Skipped in grid mode, and with it the whole search
        chain at once, while the index is still being built."""
        from airflow.sdk.exceptions import AirflowSkipException

        from music_recsys.pipeline.search import propose

        if plan["search"] == "grid":
            raise AirflowSkipException("search: grid, so no screening rounds (grid_points plans the fits)")
        return propose(plan, 1)

    # The later rounds read the plan from prepare's XCom rather than through an XComArg: their upstreams are
    # then the round before only, so a lost screening fit (skipped) is tolerated and a failure before the
    # search stops them (upstream_failed), as it stops the fits.
    @task(trigger_rule="none_failed_min_one_success")
    def propose_round_2() -> list[dict]:
        """Adaptive search: tell Optuna round 1's scores, keep its best (successive halving) and fill the
        round's budget with new proposals at a higher fidelity; skipped in grid mode."""
        from music_recsys.pipeline.search import propose

        return propose(get_current_context()["ti"].xcom_pull(task_ids="prepare"), 2)

    @task(trigger_rule="none_failed_min_one_success")
    def grid_points() -> list[dict]:
        """Arguments of every fit task: one grid point each, or `fits_per_task` points; in adaptive search
        the final round's points (the best screened), fitted on the full data."""
        from music_recsys.pipeline.search import FINAL_ROUND, propose

        return propose(get_current_context()["ti"].xcom_pull(task_ids="prepare"), FINAL_ROUND)

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
        "conn_id": settings.text("RECSYS_SPARK_CONN_ID"),
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
    # Every fit stage (the adaptive search's screening rounds and the final `fit`) maps the same job.
    fit_stage = {
        "application": str(JOBS_DIR / "fit_als.py"),
        "map_index_template": "{{ task.grid_point }}",
        "max_active_tis_per_dag": MAX_PARALLEL_FITS,
        **spark_defaults,
    }
    # Adaptive search's screening rounds: cheaper fits (a share of the users) that score themselves on
    # validation; in grid mode they map over nothing and are skipped.
    round_1 = propose_round_1(plan)
    screen_1 = ScreeningJobOperator.partial(
        task_id="screen_round_1",
        doc_md="Adaptive search, round 1: implicit ALS on the validation users and a share of the others, "
        "scored on validation by the fit itself.",
        **fit_stage,
    ).expand_kwargs(round_1)
    round_2 = propose_round_2()
    screen_2 = ScreeningJobOperator.partial(
        task_id="screen_round_2",
        doc_md="Adaptive search, round 2: round 1's best and new proposals on a larger share of the users.",
        **fit_stage,
    ).expand_kwargs(round_2)
    final_points = grid_points()
    # Round 1 is planned once the data check passed, while the index is built; its fits need the index. In
    # grid mode round 1 skips itself and the chain is skipped behind it without waiting for the index (a
    # skipped upstream skips an all_success task at once), so grid_points, which also follows the data
    # check, is done before the index is.
    data_check >> round_1
    index >> screen_1
    [round_1, screen_1] >> round_2
    [round_2, screen_2, data_check] >> final_points
    fit = SparkJobOperator.partial(
        task_id="fit",
        doc_md="Implicit ALS for one grid point (or `fits_per_task` points in one Spark application); saves "
        "user and item factors per point.",
        **fit_stage,
    ).expand_kwargs(final_points)
    evaluate = SparkJobOperator(
        task_id="evaluate",
        application=str(JOBS_DIR / "evaluate.py"),
        name="music_recsys.evaluate",
        # Its args come from prepare's XCom at run time, not through an XComArg: prepare is then no
        # direct upstream, and the trigger rule counts the fits only. A lost grid point is tolerated;
        # when every fit failed, or a stage before them did, evaluate is upstream_failed (issue #19).
        inputs_from="prepare",
        trigger_rule="all_done_min_one_success",
        doc_md="Top-k inside Spark for every trial and a popularity baseline; best on validation; test.",
        **spark_defaults,
    )

    @task
    def fast_search(plan: dict, evaluation: dict) -> dict:
        """Annoy (dot and inner-product-to-angular) vs exact top-k on the best trial's item factors."""
        from music_recsys.pipeline.tasks import fail_fast
        from music_recsys.pipeline.tasks import fast_search as run_search

        with fail_fast():
            return run_search(plan, evaluation)

    @task(retries=3)
    def record(plan: dict, evaluation: dict, search: dict) -> dict:
        """Upsert als_trials, als_segments and ann_trials rows into the recsys_results store."""
        from music_recsys.pipeline.tasks import record as record_rows

        return record_rows(plan, evaluation, search)

    @task(retries=3)
    def publish(plan: dict, evaluation: dict, search: dict, data_check: dict) -> dict:
        """Model bundle of the best point; registered, and promoted to champion if it passes the gate (with
        `require_approval`, held as a candidate until a person decides in `approve_model`)."""
        from music_recsys.pipeline.approval import publish as publish_model

        return publish_model(plan, evaluation, search, data_check)

    @task(trigger_rule="none_failed")
    def settle(publication: dict, approval: dict | None) -> dict:
        """The publication as it stands: the person's decision when one was asked for, else publish's."""
        return approval or publication

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

    @task(multiple_outputs=True)
    def plan_batch_recommendations(plan: dict, publication: dict) -> dict:
        """Arguments of the batch job for the published bundle; skipped when batch_k is 0 or nothing was published."""
        from airflow.sdk.exceptions import AirflowSkipException

        from music_recsys.pipeline.batch import batch_job

        batch = batch_job(plan, publication)
        if batch["skip"]:
            raise AirflowSkipException(batch["skip"])
        return batch

    @task(retries=3)
    def store_recommendations(plan: dict, batch: dict) -> dict:
        """With batch_to_store: the batch recommendations replace their model version's rows of
        user_recommendations in one transaction (COPY on PostgreSQL); skipped otherwise."""
        from airflow.sdk.exceptions import AirflowSkipException

        from music_recsys.pipeline.batch import store_for_run

        stored = store_for_run(plan, batch)
        if stored["skip"]:
            raise AirflowSkipException(stored["skip"])
        return stored

    search = fast_search(plan, evaluate.output)
    recorded = record(plan, evaluate.output, search)
    publication = publish(plan, evaluate.output, search, data_check)
    # Skipped unless require_approval held the model back; body: its card against the champion's.
    approval = ModelApprovalOperator(task_id=C.APPROVAL_TASK_ID, publish_task_id="publish", retries=0)
    publication >> approval
    decided = settle(publication, approval.output)
    summary = report(plan, evaluate.output, search, recorded, data_check, decided)
    announced = announce_champion(decided)
    batch_args = plan_batch_recommendations(plan, publication)
    batch = SparkJobOperator(
        task_id="batch_recommendations",
        application=str(JOBS_DIR / "batch_recommend.py"),
        name="music_recsys.batch_recommendations",
        application_args=batch_args["application_args"],
        result_path=batch_args["result_path"],
        doc_md="The published model's top-`batch_k` unplayed tracks for every train user, written into its bundle "
        "(`recommendations/` parquet; rows and checksum in model.json).",
        **spark_defaults,
    )
    stored = store_recommendations(plan, batch.output)
    [summary, announced, stored] >> finish(plan)
    ingest >> data_check >> index >> fit >> evaluate
    recorded >> publication


music_recsys()
