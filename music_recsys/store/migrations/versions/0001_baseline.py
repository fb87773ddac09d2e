"""The results store as music-recsys made it before migrations (``metadata.create_all`` at every open).

It creates each table that is missing and, for a store an older music-recsys made, adds the plain
columns its tables lack (what the old in-place check did), so every existing store can adopt Alembic
without being rebuilt. A missing key column cannot be added in place: that store has to be renamed.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

METRIC_COMMENTS = {
    "map": "Spark RankingMetrics.meanAveragePrecision over the full recommendation list (not cut at k)",
    "map_at_k": "Spark RankingMetrics.meanAveragePrecisionAt(k)",
    "precision_at_k": "Spark RankingMetrics.precisionAt(k)",
    "ndcg_at_k": "Spark RankingMetrics.ndcgAt(k), binary relevance",
    "recall_at_k": "Spark RankingMetrics.recallAt(k)",
    "ndcg_graded_at_k": "NDCG@k, gain log(1 + held-out count), discount 1/log2(position + 1)",
    "mpr": "expected percentile rank, weighted by held-out count; 0 perfect, 0.5 random (lower is better)",
    "coverage_at_k": "share of tracks in at least one user's top k",
    "mean_rec_popularity": "mean train-popularity percentile of recommended tracks (1 = most played)",
}
SEGMENT_METRICS = [m for m in METRIC_COMMENTS if m != "coverage_at_k"]


def _metrics(names) -> list[sa.Column]:
    return [sa.Column(name, sa.Float(), comment=METRIC_COMMENTS[name]) for name in names]


def tables() -> dict[str, list]:
    """Each table's columns and constraints at this revision."""
    return {
        "als_trials": [
            sa.Column("run_id", sa.String(250), nullable=False),
            sa.Column("trial_id", sa.String(250), nullable=False),
            sa.Column("split", sa.String(20), nullable=False),
            sa.Column("model", sa.String(20), nullable=False),
            sa.Column("rank", sa.Integer()),
            sa.Column("reg_param", sa.Float()),
            sa.Column("alpha", sa.Float()),
            sa.Column("transform", sa.String(20)),
            sa.Column("k", sa.Integer()),
            sa.Column("exclude_seen", sa.Boolean()),
            sa.Column(
                "nonnegative", sa.Boolean(), comment="ALS factors constrained to >= 0 (NNLS); null for popularity"
            ),
            *_metrics(METRIC_COMMENTS),
            sa.Column("selection_metric", sa.String(40), comment="validation metric that picked is_best"),
            sa.Column("n_users", sa.Integer()),
            sa.Column("n_cold_users", sa.Integer()),
            sa.Column("fit_seconds", sa.Float()),
            sa.Column("eval_seconds", sa.Float()),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("error", sa.Text()),
            sa.Column("is_best", sa.Boolean()),
            sa.Column("recorded_at", sa.DateTime(timezone=True)),
            sa.PrimaryKeyConstraint("run_id", "trial_id", "split"),
        ],
        "als_segments": [
            sa.Column("run_id", sa.String(250), nullable=False),
            sa.Column("trial_id", sa.String(250), nullable=False),
            sa.Column("split", sa.String(20), nullable=False),
            sa.Column("segment", sa.Integer(), nullable=False, comment="0 = lightest listeners"),
            sa.Column("name", sa.String(40)),
            sa.Column("min_history", sa.Integer(), comment="tracks played in train, inclusive"),
            sa.Column("max_history", sa.Integer(), comment="inclusive; null = no upper bound"),
            sa.Column("n_users", sa.Integer()),
            *_metrics(SEGMENT_METRICS),
            sa.Column("recorded_at", sa.DateTime(timezone=True)),
            sa.PrimaryKeyConstraint("run_id", "trial_id", "split", "segment"),
        ],
        "ann_trials": [
            sa.Column("run_id", sa.String(250), nullable=False),
            sa.Column("metric", sa.String(20), nullable=False),
            sa.Column("n_trees", sa.Integer(), nullable=False),
            sa.Column("search_k", sa.Integer(), nullable=False),
            sa.Column("k", sa.Integer(), nullable=False),
            sa.Column("candidates", sa.Integer(), nullable=False, comment="asked of the index; > k: re-ranked exactly"),
            sa.Column("recall", sa.Float()),
            sa.Column("qps", sa.Float()),
            sa.Column("mean_ms", sa.Float()),
            sa.Column("p50_ms", sa.Float()),
            sa.Column("p99_ms", sa.Float()),
            sa.Column("build_seconds", sa.Float()),
            sa.Column("index_bytes", sa.BigInteger()),
            sa.Column("n_items", sa.Integer()),
            sa.Column("n_queries", sa.Integer()),
            sa.Column("trial_id", sa.String(250)),
            sa.Column(
                "is_operating_point", sa.Boolean(), comment="fastest configuration reaching the target recall at k"
            ),
            sa.Column("recorded_at", sa.DateTime(timezone=True)),
            sa.PrimaryKeyConstraint("run_id", "metric", "n_trees", "search_k", "k", "candidates"),
        ],
        "data_profiles": [
            sa.Column("run_id", sa.String(250), nullable=False),
            sa.Column("split", sa.String(20), nullable=False),
            sa.Column("logical_date", sa.DateTime(timezone=True)),
            sa.Column("rows", sa.BigInteger()),
            sa.Column("users", sa.BigInteger()),
            sa.Column("tracks", sa.BigInteger()),
            sa.Column("plays", sa.BigInteger()),
            sa.Column("median_count", sa.Float()),
            sa.Column("p99_count", sa.Float()),
            sa.Column("share_count_1", sa.Float()),
            sa.Column("count_histogram", sa.JSON(), comment="rows per play-count bucket (datacheck.COUNT_BUCKETS)"),
            sa.Column("ids_dir", sa.Text(), comment="hashed train user and track ids of this run"),
            sa.Column("baseline_run_id", sa.String(250), comment="the last good run this one was compared with"),
            sa.Column("changes", sa.JSON(), comment="relative change of each figure against the baseline"),
            sa.Column("new_user_share", sa.Float()),
            sa.Column("new_track_share", sa.Float()),
            sa.Column("verdict", sa.String(20), comment="first_run, pass or drift (the run's verdict, on every split)"),
            sa.Column("violations", sa.JSON()),
            sa.Column("on_data_drift", sa.String(10)),
            sa.Column("run_status", sa.String(20), comment="running until the run finishes successfully"),
            sa.Column("recorded_at", sa.DateTime(timezone=True)),
            sa.PrimaryKeyConstraint("run_id", "split"),
        ],
        "models": [
            sa.Column("model_version", sa.String(100), nullable=False),
            sa.Column("run_id", sa.String(250), nullable=False),
            sa.Column("trial_id", sa.String(250), nullable=False),
            sa.Column("status", sa.String(20), nullable=False, comment="champion, candidate, retired or rejected"),
            sa.Column("path", sa.Text(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True)),
            sa.Column("promoted_at", sa.DateTime(timezone=True)),
            sa.Column("retired_at", sa.DateTime(timezone=True)),
            sa.Column("reason", sa.Text()),
            sa.Column("validation_map", sa.Float()),
            sa.Column("test_map", sa.Float()),
            sa.Column("popularity_test_map", sa.Float()),
            sa.Column("logical_date", sa.DateTime(timezone=True)),
            sa.Column("data_fingerprint", sa.String(64)),
            sa.Column("bundle_removed_at", sa.DateTime(timezone=True), comment="retention removed the files"),
            sa.PrimaryKeyConstraint("model_version"),
        ],
        "user_recommendations": [
            sa.Column("model_version", sa.String(100), nullable=False),
            sa.Column("user_id", sa.String(250), nullable=False),
            sa.Column("rank", sa.Integer(), nullable=False, comment="1 = best"),
            sa.Column("track_id", sa.String(250), nullable=False),
            sa.Column(
                "score", sa.Float(), nullable=False, comment="inner product; train listeners for a popularity fallback"
            ),
            sa.PrimaryKeyConstraint("model_version", "user_id", "rank"),
        ],
    }


CHAMPION_VIEW_SQL = (
    "CREATE VIEW champion_recommendations AS SELECT r.model_version, r.user_id, r.rank, r.track_id, r.score "
    "FROM user_recommendations r JOIN models m ON m.model_version = r.model_version WHERE m.status = 'champion'"
)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    existing = set(inspector.get_table_names())
    for name, items in tables().items():
        if name not in existing:
            op.create_table(name, *items)
            continue
        present = {c["name"] for c in inspector.get_columns(name)}
        columns = [c for c in items if isinstance(c, sa.Column) and c.name not in present]
        keys = sorted(c.name for c in columns if not c.nullable)
        if keys:
            raise RuntimeError(
                f"results store table {name} (made by an older music-recsys) lacks required columns {keys}; "
                "they cannot be added in place: rename or drop the table and run `music-recsys db upgrade` again"
            )
        for column in columns:
            op.add_column(name, column)
    indexes = {i["name"] for i in inspector.get_indexes("data_profiles")} if "data_profiles" in existing else set()
    if "ix_data_profiles_logical_date" not in indexes:
        op.create_index("ix_data_profiles_logical_date", "data_profiles", ["logical_date"])
    indexes = {i["name"] for i in inspector.get_indexes("models")} if "models" in existing else set()
    if "models_one_champion" not in indexes:
        op.create_index(
            "models_one_champion",
            "models",
            ["status"],
            unique=True,
            postgresql_where=sa.text("status = 'champion'"),
            sqlite_where=sa.text("status = 'champion'"),
        )
    if "champion_recommendations" not in inspector.get_view_names():
        op.execute(CHAMPION_VIEW_SQL)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS champion_recommendations")
    for name in reversed(list(tables())):
        op.drop_table(name)
