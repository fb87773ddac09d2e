"""The results store: trial results, data profiles and the model registry, in Postgres or SQLite.

Tables: ``als_trials`` (one row per grid point and the popularity baseline per split per run),
``als_segments`` (the same metrics per segment of users by train history length), ``ann_trials`` (one row
per search configuration per k per run), ``data_profiles`` (one row per run and split: what the data
check saw), ``models`` (the registry: ``music_recsys.store.registry``) and ``user_recommendations`` (a
model version's batch recommendations: ``music_recsys.store.recommendations``).

The store is the Airflow connection ``recsys_results``; when it is not defined, a SQLite file under the
data root (the embedded default). The tables below are the code's view of the schema; the schema itself
is created and migrated by ``music_recsys.store.schema`` (Alembic), never by opening a store. Writes are
upserts keyed on the run and the trial / search configuration, so re-running a task rewrites its rows
instead of adding new ones. SQL is built by
SQLAlchemy Core with bound parameters; table names are fixed here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from music_recsys import constants as C
from music_recsys import settings
from music_recsys.evaluation.catalogue import METRICS, Metric
from music_recsys.store.engine import connect_engine

metadata = sa.MetaData()
VERDICT_COMMENT = "first_run, pass, incomplete (a check could not run) or drift (the run's verdict, on every split)"
ROUND_COMMENT = "adaptive search round (1.. screening, the last the full-data round); null in grid mode"
FIDELITY_COMMENT = "share of the non-hold-out train users the fit saw (1 = full data); null in grid mode"
# pg_advisory_xact_lock key of the registry's state changes (ResultsStore.locked).
REGISTRY_LOCK_KEY = 7_310_227_002


def _metric_columns(metrics: Iterable[Metric]) -> list[sa.Column]:
    """One float column per catalogue metric, its definition as the column comment."""
    return [sa.Column(m.name, sa.Float, comment=m.definition) for m in metrics]


als_trials = sa.Table(
    "als_trials",
    metadata,
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("trial_id", sa.String(250), primary_key=True),
    sa.Column("split", sa.String(20), primary_key=True),
    sa.Column("model", sa.String(20), nullable=False),  # "als" or "popularity"
    sa.Column("rank", sa.Integer),
    sa.Column("reg_param", sa.Float),
    sa.Column("alpha", sa.Float),
    sa.Column("transform", sa.String(20)),
    sa.Column("k", sa.Integer),
    sa.Column("exclude_seen", sa.Boolean),
    sa.Column("nonnegative", sa.Boolean, comment="ALS factors constrained to >= 0 (NNLS); null for popularity"),
    *_metric_columns(METRICS),
    sa.Column("selection_metric", sa.String(40), comment="validation metric that picked is_best"),
    sa.Column("n_users", sa.Integer),
    sa.Column("n_cold_users", sa.Integer),
    sa.Column("fit_seconds", sa.Float),
    sa.Column("eval_seconds", sa.Float),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("is_best", sa.Boolean),
    sa.Column("recorded_at", sa.DateTime(timezone=True)),
    sa.Column("round", sa.Integer, comment=ROUND_COMMENT),
    sa.Column("fidelity", sa.Float, comment=FIDELITY_COMMENT),
    sa.Column("max_iter", sa.Integer, comment="ALS iterations of an adaptive search's point; null: the run's max_iter"),
)

ann_trials = sa.Table(
    "ann_trials",
    metadata,
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("metric", sa.String(20), primary_key=True),  # exact, exact_batched, dot, angular_ip
    sa.Column("n_trees", sa.Integer, primary_key=True),
    sa.Column("search_k", sa.Integer, primary_key=True),
    sa.Column("k", sa.Integer, primary_key=True),
    sa.Column("candidates", sa.Integer, primary_key=True, comment="asked of the index; > k: re-ranked exactly"),
    sa.Column("recall", sa.Float),
    sa.Column("qps", sa.Float),
    sa.Column("mean_ms", sa.Float),
    sa.Column("p50_ms", sa.Float),
    sa.Column("p99_ms", sa.Float),
    sa.Column("build_seconds", sa.Float),
    sa.Column("index_bytes", sa.BigInteger),
    sa.Column("n_items", sa.Integer),
    sa.Column("n_queries", sa.Integer),
    sa.Column("trial_id", sa.String(250)),
    sa.Column("is_operating_point", sa.Boolean, comment="fastest configuration reaching the target recall at k"),
    sa.Column("recorded_at", sa.DateTime(timezone=True)),
)


als_segments = sa.Table(
    "als_segments",
    metadata,
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("trial_id", sa.String(250), primary_key=True),
    sa.Column("split", sa.String(20), primary_key=True),
    sa.Column("segment", sa.Integer, primary_key=True, comment="0 = lightest listeners"),
    sa.Column("name", sa.String(40)),
    sa.Column("min_history", sa.Integer, comment="tracks played in train, inclusive"),
    sa.Column("max_history", sa.Integer, comment="inclusive; null = no upper bound"),
    sa.Column("n_users", sa.Integer),
    *_metric_columns(m for m in METRICS if m.per_segment),
    sa.Column("recorded_at", sa.DateTime(timezone=True)),
)

data_profiles = sa.Table(
    "data_profiles",
    metadata,
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("split", sa.String(20), primary_key=True),
    sa.Column("logical_date", sa.DateTime(timezone=True), index=True),
    sa.Column("rows", sa.BigInteger),
    sa.Column("users", sa.BigInteger),
    sa.Column("tracks", sa.BigInteger),
    sa.Column("plays", sa.BigInteger),
    sa.Column("median_count", sa.Float),
    sa.Column("p99_count", sa.Float),
    sa.Column("share_count_1", sa.Float),
    sa.Column("count_histogram", sa.JSON, comment="rows per play-count bucket (datacheck.COUNT_BUCKETS)"),
    sa.Column("ids_dir", sa.Text, comment="hashed train user and track ids of this run"),
    sa.Column("baseline_run_id", sa.String(250), comment="the last good run this one was compared with"),
    sa.Column("changes", sa.JSON, comment="relative change of each figure against the baseline"),
    sa.Column("new_user_share", sa.Float),
    sa.Column("new_track_share", sa.Float),
    sa.Column("verdict", sa.String(20), comment=VERDICT_COMMENT),
    sa.Column("violations", sa.JSON),
    sa.Column("checksum", sa.String(64), comment="order-independent hash of the split's rows (content, not path)"),
    sa.Column("skipped_checks", sa.JSON, comment="data checks that could not run, and why"),
    sa.Column("on_data_drift", sa.String(10)),
    sa.Column("run_status", sa.String(20), comment="running until the run finishes successfully"),
    sa.Column("recorded_at", sa.DateTime(timezone=True)),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("model_version", sa.String(100), primary_key=True),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("trial_id", sa.String(250), nullable=False),
    sa.Column(
        "status", sa.String(20), nullable=False, comment="champion, candidate, awaiting_approval, retired or rejected"
    ),
    sa.Column("path", sa.Text, nullable=False, comment="the bundle folder, relative to the data root"),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("promoted_at", sa.DateTime(timezone=True)),
    sa.Column("retired_at", sa.DateTime(timezone=True)),
    sa.Column("reason", sa.Text),
    sa.Column("validation_map", sa.Float),
    sa.Column("test_map", sa.Float),
    sa.Column("popularity_test_map", sa.Float),
    sa.Column("logical_date", sa.DateTime(timezone=True)),
    sa.Column("data_fingerprint", sa.String(64)),
    sa.Column("bundle_removed_at", sa.DateTime(timezone=True), comment="retention removed the files"),
    sa.Column("k", sa.Integer, comment="recommendations per user the metrics were measured at"),
    sa.Column("compared_with", sa.String(100), comment="the champion this candidate was decided against"),
    sa.Column("compared_test_map", sa.Float, comment="that champion's test MAP on this candidate's data"),
    sa.Column("compared_validation_map", sa.Float),
    sa.Column("comparison", sa.String(20), comment="rescored, recorded (its own numbers) or none"),
    # At most one champion, whatever the writers do (the registry also serialises promotions).
    sa.Index(
        "models_one_champion",
        "status",
        unique=True,
        postgresql_where=sa.text("status = 'champion'"),
        sqlite_where=sa.text("status = 'champion'"),
    ),
)

# Batch recommendations of a model version (batch_to_store), bulk-loaded by
# music_recsys.store.recommendations.load: replaced whole per version, never upserted row by row.
user_recommendations = sa.Table(
    "user_recommendations",
    metadata,
    sa.Column("model_version", sa.String(100), primary_key=True),
    sa.Column("user_id", sa.String(250), primary_key=True),
    sa.Column("rank", sa.Integer, primary_key=True, comment="1 = best"),
    sa.Column("track_id", sa.String(250), nullable=False),
    sa.Column("score", sa.Float, nullable=False, comment="inner product; train listeners for a popularity fallback"),
)

TABLES = {t.name: t for t in (als_trials, als_segments, ann_trials, data_profiles, models, user_recommendations)}


def results_url() -> str:
    """SQLAlchemy URL of the ``recsys_results`` connection, or the SQLite file under the data root."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(C.RESULTS_CONN_ID)
    except AirflowNotFoundException:
        path = settings.data_root() / C.SQLITE_RESULTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return to_sqlalchemy_url(conn.get_uri())


def to_sqlalchemy_url(uri: str) -> str:
    """Airflow connection URIs say ``postgres://``; SQLAlchemy wants a driver name."""
    for prefix in ("postgres://", "postgresql://"):
        if uri.startswith(prefix):
            return "postgresql+psycopg2://" + uri[len(prefix) :]
    return uri


def _dialect_insert(engine: sa.Engine):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ValueError(f"results store {engine.url!r}: only PostgreSQL and SQLite are supported")
    return insert


class ResultsStore:
    """Reads and upserts rows; retries a transaction that fails on a dropped connection. It never changes
    the schema (``music_recsys.store.schema`` does): opening a store that is not at the code's revision
    fails with the command that fixes it. Use it as a context manager, or ``close()`` it."""

    def __init__(self, url: str, retries: int = 5, backoff_seconds: float = 1.0):
        from music_recsys.store.schema import require_current

        self.url = url
        self.engine = connect_engine(url)
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self._insert = _dialect_insert(self.engine)
        try:
            self._with_retry(lambda conn: require_current(conn, url))
        except BaseException:
            self.engine.dispose()
            raise

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _with_retry(self, work, lock: bool = False) -> Any:
        for attempt in range(1, self.retries + 1):
            try:
                with self.engine.connect() as conn:
                    if lock and conn.dialect.name == "sqlite":
                        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
                    with conn.begin():
                        if lock and conn.dialect.name == "postgresql":
                            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": REGISTRY_LOCK_KEY})
                        return work(conn)
            except sa.exc.OperationalError:
                if attempt == self.retries:
                    raise
                self.engine.dispose()
                time.sleep(self.backoff_seconds * attempt)
        return None

    def _upsert_statement(self, table: sa.Table, rows: Iterable[Mapping[str, Any]]) -> tuple[Any, int]:
        """The ``INSERT … ON CONFLICT DO UPDATE`` of ``rows`` (None when there are none), and their count."""
        names = {c.name for c in table.columns}
        now = datetime.now(UTC)
        clean = [{**{k: v for k, v in row.items() if k in names}, "recorded_at": now} for row in rows]
        if not clean:
            return None, 0
        keys = [c.name for c in table.primary_key.columns]
        columns = sorted({k for row in clean for k in row})
        clean = [{c: row.get(c) for c in columns} for row in clean]
        stmt = self._insert(table).values(clean)
        stmt = stmt.on_conflict_do_update(
            index_elements=keys, set_={c: stmt.excluded[c] for c in columns if c not in keys}
        )
        return stmt, len(clean)

    def upsert_together(self, rows_by_table: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, int]:
        """Upsert rows into several tables in one transaction: a store that drops midway leaves all of
        them as they were (the retry starts over), never some tables written and others not."""
        statements = {name: self._upsert_statement(TABLES[name], rows) for name, rows in rows_by_table.items()}

        def work(conn) -> None:
            for stmt, _ in statements.values():
                if stmt is not None:
                    conn.execute(stmt)

        self._with_retry(work)
        return {name: n for name, (_, n) in statements.items()}

    def upsert(self, table: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Upsert ``rows`` into one table (keys: its primary key); returns how many."""
        return self.upsert_together({table: rows})[table]

    def fetch(self, table: str, run_id: str) -> list[dict[str, Any]]:
        target = TABLES[table]
        query = sa.select(target).where(target.c.run_id == run_id)
        return self._with_retry(lambda conn: [dict(r._mapping) for r in conn.execute(query)])

    def latest_good_profile_run(self, before: str | datetime, exclude_run_id: str) -> str | None:
        """The data check's baseline: the latest run with a logical date before ``before`` that finished
        successfully and whose data check passed (or had nothing to compare with, or crossed no threshold
        of the checks it could run)."""
        if isinstance(before, str):
            before = datetime.fromisoformat(before)
        t = data_profiles
        query = (
            sa.select(t.c.run_id)
            .where(
                t.c.split == "train",
                t.c.run_status == "success",
                t.c.verdict.in_(("pass", "first_run", "incomplete")),
                t.c.logical_date < before,
                t.c.run_id != exclude_run_id,
            )
            .order_by(t.c.logical_date.desc())
            .limit(1)
        )
        return self._with_retry(lambda conn: conn.execute(query).scalar())

    def mark_run_succeeded(self, run_id: str) -> None:
        t = data_profiles
        self._with_retry(
            lambda conn: conn.execute(sa.update(t).where(t.c.run_id == run_id).values(run_status="success"))
        )

    def transaction(self, work) -> Any:
        """``work(conn)`` in one transaction, retried from the start when the connection drops."""
        return self._with_retry(work)

    def locked(self, work) -> Any:
        """``work(conn)`` in one transaction that excludes every other ``locked`` one (the registry's
        state changes): SQLite's write lock taken at ``BEGIN IMMEDIATE``, a transaction-scoped advisory
        lock on PostgreSQL (readers are not blocked on either)."""
        return self._with_retry(work, lock=True)

    def close(self) -> None:
        self.engine.dispose()
