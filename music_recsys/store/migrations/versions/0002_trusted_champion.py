"""A champion you can trust (issue #27): what a candidate was compared with, approval as a status,
content checksums of each split, bundle paths relative to the data root.

- ``models``: ``k`` (the list length its metrics were measured at), ``compared_with`` /
  ``compared_test_map`` / ``compared_validation_map`` (the champion re-scored on the candidate's data at
  its k) and ``comparison`` (how: ``rescored``, ``recorded`` or ``none``).
- ``models.status`` gains ``awaiting_approval``: candidates that were held for a person's decision
  (until now only words in ``reason``) get it.
- ``data_profiles``: ``checksum`` (order-independent hash of a split's rows) and ``skipped_checks``
  (data checks that could not run).
- ``models.path`` of bundles under the data root becomes relative to it, so a moved data root keeps
  working; paths elsewhere stay absolute.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

AWAITING_REASON = "awaiting a person's approval (require_approval)"
STATUS_COMMENT = "champion, candidate, awaiting_approval, retired or rejected"


def upgrade() -> None:
    from music_recsys import settings

    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("k", sa.Integer(), comment="recommendations per user the metrics were measured at"))
        batch.add_column(
            sa.Column("compared_with", sa.String(100), comment="the champion this candidate was decided against")
        )
        batch.add_column(
            sa.Column("compared_test_map", sa.Float(), comment="that champion's test MAP on this candidate's data")
        )
        batch.add_column(sa.Column("compared_validation_map", sa.Float()))
        batch.add_column(sa.Column("comparison", sa.String(20), comment="rescored, recorded (its own numbers) or none"))
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "models", "status", existing_type=sa.String(20), existing_nullable=False, comment=STATUS_COMMENT
        )
        op.alter_column(
            "models", "path", existing_type=sa.Text(), existing_nullable=False,
            comment="the bundle folder, relative to the data root",
        )  # fmt: skip
        op.alter_column(
            "data_profiles", "verdict", existing_type=sa.String(20),
            comment="first_run, pass, incomplete (a check could not run) or drift (the run's verdict, on every split)",
        )  # fmt: skip
    with op.batch_alter_table("data_profiles") as batch:
        batch.add_column(
            sa.Column(
                "checksum", sa.String(64), comment="order-independent hash of the split's rows (content, not path)"
            )
        )
        batch.add_column(sa.Column("skipped_checks", sa.JSON(), comment="data checks that could not run, and why"))

    models = sa.table(
        "models", sa.column("model_version", sa.String), sa.column("status", sa.String), sa.column("reason", sa.Text),
        sa.column("path", sa.Text),
    )  # fmt: skip
    bind = op.get_bind()
    bind.execute(
        sa.update(models)
        .where(models.c.status == "candidate", models.c.reason.like(AWAITING_REASON.replace("%", "") + "%"))
        .values(status="awaiting_approval")
    )
    root = settings.data_root()
    for version, path in bind.execute(sa.select(models.c.model_version, models.c.path)).all():
        if path and path.startswith(f"{root}/"):
            bind.execute(
                sa.update(models).where(models.c.model_version == version).values(path=path[len(str(root)) + 1 :])
            )


def downgrade() -> None:
    from music_recsys import settings

    models = sa.table("models", sa.column("model_version", sa.String), sa.column("status", sa.String),
                      sa.column("path", sa.Text))  # fmt: skip
    bind = op.get_bind()
    bind.execute(sa.update(models).where(models.c.status == "awaiting_approval").values(status="candidate"))
    root = settings.data_root()
    for version, path in bind.execute(sa.select(models.c.model_version, models.c.path)).all():
        if path and not path.startswith("/"):
            bind.execute(sa.update(models).where(models.c.model_version == version).values(path=f"{root}/{path}"))
    with op.batch_alter_table("data_profiles") as batch:
        batch.drop_column("skipped_checks")
        batch.drop_column("checksum")
    with op.batch_alter_table("models") as batch:
        for name in ("comparison", "compared_validation_map", "compared_test_map", "compared_with", "k"):
            batch.drop_column(name)
