"""
### music_recsys — implicit-feedback ALS grid, evaluation, and Annoy fast search

Trains Spark MLlib ALS (`implicitPrefs=True`) on play counts (`user_id`, `count`, `track_id`) for every
point of the grid `ranks × reg_params × alphas × transforms`, one mapped Spark task per point; scores
each against a popularity baseline with MAP, precision@k and NDCG@k; picks the best point by validation
MAP and scores it on test; then measures Annoy against exact top-k search on the best item factors.

Stages: `prepare` (validate params, plan the run) → `grid_points` → `ingest` → `index` → `fit` (mapped) → `evaluate`
→ `fast_search` → `record` (`als_trials`, `ann_trials` in the `recsys_results` store) → `report`.
Artifacts go to `$RECSYS_DATA_ROOT/runs/<run_id>/`; input paths must lie under `RECSYS_DATA_ROOT`
or a root in `RECSYS_INPUT_ROOTS`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task

from music_recsys import constants as C
from music_recsys.operators import SparkJobOperator

JOBS_DIR = Path(os.environ.get("RECSYS_JOBS_DIR", Path(__file__).resolve().parents[1] / "jobs"))
# A producer that lands a new play-count drop emits this asset; the DAG then runs with its defaults
# (or the conf of the producing event). Ingest emits the second one when a run has read its inputs.
PLAY_COUNT_DROP = Asset(name="play_counts_drop", uri="recsys://play-counts/drop")
INGESTED_PLAY_COUNTS = Asset(name="ingested_play_counts", uri="recsys://play-counts/ingested")
SCHEDULE_CRON = os.environ.get("RECSYS_SCHEDULE_CRON", "0 3 * * 1")
# No scheduled run before this date (backfills may still cover earlier dates).
START_DATE = pendulum.parse(os.environ.get("RECSYS_START_DATE", "2026-01-01"), tz="UTC")
MAX_PARALLEL_FITS = int(os.environ.get("RECSYS_MAX_PARALLEL_FITS", "1"))
SPARK_TIMEOUT = timedelta(hours=float(os.environ.get("RECSYS_SPARK_TIMEOUT_HOURS", "2")))


def _numbers(
    default: list,
    description: str,
    *,
    integer: bool = False,
    minimum: float | None = None,
    exclusive_minimum: float | None = None,
    maximum: float | None = None,
) -> Param:
    items: dict = {"type": "integer" if integer else "number"}
    if minimum is not None:
        items["minimum"] = minimum
    if exclusive_minimum is not None:
        items["exclusiveMinimum"] = exclusive_minimum
    if maximum is not None:
        items["maximum"] = maximum
    return Param(default, type="array", items=items, minItems=1, uniqueItems=True, description=description)


PARAMS = {
    "train_path": Param(
        "msd_like/train.parquet",
        type="string",
        minLength=1,
        description="Train play counts: parquet (user_id, count, track_id), MSD TSV or CSV; "
        "relative to RECSYS_DATA_ROOT or absolute under an allowed root.",
    ),
    "validation_path": Param(
        "msd_like/validation.parquet",
        type="string",
        minLength=1,
        description="Validation play counts (the rest of the hold-out users' histories).",
    ),
    "test_path": Param("msd_like/test.parquet", type="string", minLength=1, description="Test play counts."),
    "ranks": _numbers(
        list(C.DEFAULT_RANKS), "ALS ranks (latent factors), 1..1000.", integer=True, minimum=1, maximum=1000
    ),
    "reg_params": _numbers(list(C.DEFAULT_REG_PARAMS), "ALS regParam values, > 0.", exclusive_minimum=0, maximum=10000),
    "alphas": _numbers(list(C.DEFAULT_ALPHAS), "Implicit confidence scaling alpha, >= 0.", minimum=0, maximum=1e6),
    "transforms": Param(
        list(C.DEFAULT_TRANSFORMS),
        type="array",
        minItems=1,
        uniqueItems=True,
        items={"type": "string", "enum": list(C.TRANSFORMS)},
        description="Count transforms in the grid: none, log1p, drop (count <= drop_threshold removed), log1p_drop.",
    ),
    "drop_threshold": Param(
        C.DEFAULT_DROP_THRESHOLD,
        type="integer",
        minimum=0,
        description="Counts <= this are dropped by the drop transforms.",
    ),
    "k": Param(
        C.DEFAULT_K,
        type="integer",
        minimum=1,
        maximum=10000,
        description="Recommendations per user (the seed used 500).",
    ),
    "sample_fraction": Param(
        1.0,
        type="number",
        exclusiveMinimum=0,
        maximum=1,
        description="Share of non-hold-out train users kept (the seed used 0.2).",
    ),
    "max_iter": Param(C.DEFAULT_MAX_ITER, type="integer", minimum=1, maximum=100, description="ALS iterations."),
    "seed": Param(C.DEFAULT_SEED, type="integer", minimum=0, description="Seed for sampling, ALS and Annoy."),
    "nonnegative": Param(
        True,
        type="boolean",
        description="Non-negative factors (NNLS solves, as in the seed). false = unconstrained Cholesky solves: "
        "measured faster, with equal or better MAP (bench/RESULTS.md, ALS tuning).",
    ),
    "exclude_seen": Param(
        True,
        type="boolean",
        description="Exclude tracks the user already played in train from recommendations.",
    ),
    "max_reject_fraction": Param(
        0.01,
        type="number",
        minimum=0,
        maximum=1,
        description="Fail ingest when a file has a larger share of invalid rows.",
    ),
    "annoy_trees": _numbers(
        list(C.DEFAULT_ANNOY_TREES), "Annoy n_trees values.", integer=True, minimum=1, maximum=1000
    ),
    "annoy_search_k": _numbers(
        list(C.DEFAULT_ANNOY_SEARCH_K),
        "Annoy search_k values (-1 = Annoy default).",
        integer=True,
        minimum=-1,
    ),
    "annoy_max_queries": Param(
        2000,
        type="integer",
        minimum=1,
        description="At most this many validation users are used as search queries.",
    ),
    "annoy_target_recall": Param(
        0.9,
        type="number",
        exclusiveMinimum=0,
        maximum=1,
        description="Recall the Annoy operating point must reach.",
    ),
    "fits_per_task": Param(
        1,
        type="integer",
        minimum=1,
        maximum=1024,
        description="Grid points fitted in one Spark application (one mapped fit task). 1 = a task per point "
        "(own retry, logs, map index); more shares one JVM start and one data read among several points, "
        "which pays off when fits are short (small data, few cores).",
    ),
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
        its own partition."""
        from music_recsys.pipeline import prepare as prepare_run

        context = get_current_context()
        return prepare_run(
            context["params"], context["run_id"], render=lambda text: context["task"].render_template(text, context)
        )

    @task
    def grid_points(plan: dict) -> list[dict]:
        """spark-submit arguments of every fit task: one grid point each, or `fits_per_task` points."""
        return plan["fit_kwargs"]

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
        doc_md="Read and validate train/validation/test, downsample non-hold-out users, write parquet.",
        **spark_defaults,
    )
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
        doc_md="Top-k inside Spark for every trial and a popularity baseline; best by validation MAP; test.",
        **spark_defaults,
    )

    @task
    def fast_search(plan: dict, evaluation: dict) -> dict:
        """Annoy (dot and inner-product-to-angular) vs exact top-k on the best trial's item factors."""
        from music_recsys.pipeline import fast_search as run_search

        return run_search(plan, evaluation)

    @task(retries=3)
    def record(plan: dict, evaluation: dict, search: dict) -> dict:
        """Upsert als_trials and ann_trials rows into the recsys_results store."""
        from music_recsys.pipeline import record as record_rows

        return record_rows(plan, evaluation, search)

    @task
    def report(plan: dict, evaluation: dict, search: dict, recorded: dict) -> dict:
        """Grid and recall-vs-QPS plots plus a markdown report under the run directory."""
        from music_recsys.pipeline import report as write_report

        return write_report(plan, evaluation, search, recorded)

    search = fast_search(plan, evaluate.output)
    recorded = record(plan, evaluate.output, search)
    report(plan, evaluate.output, search, recorded)
    ingest >> index >> fit >> evaluate


music_recsys()
