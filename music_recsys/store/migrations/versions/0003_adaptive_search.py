"""The adaptive search (issue #28): each trial's round and fidelity in ``als_trials``.

- ``als_trials.round``: the search round that fitted it (1..n screening rounds, the last one on the full
  data); null for grid runs.
- ``als_trials.fidelity``: the share of the non-hold-out train users the fit saw (1 = all); null for grid
  runs.
- ``als_trials.max_iter``: the point's own ALS iterations (the search proposes them); null when the run's
  ``max_iter`` applied.

Only columns are added: every existing column and row stays as it was. Optuna keeps its study in its own
tables (created by Optuna in the same store on first use).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ROUND_COMMENT = "adaptive search round (1.. screening, the last the full-data round); null in grid mode"
FIDELITY_COMMENT = "share of the non-hold-out train users the fit saw (1 = full data); null in grid mode"
MAX_ITER_COMMENT = "ALS iterations of an adaptive search's point; null: the run's max_iter"


def upgrade() -> None:
    with op.batch_alter_table("als_trials") as batch:
        batch.add_column(sa.Column("round", sa.Integer(), comment=ROUND_COMMENT))
        batch.add_column(sa.Column("fidelity", sa.Float(), comment=FIDELITY_COMMENT))
        batch.add_column(sa.Column("max_iter", sa.Integer(), comment=MAX_ITER_COMMENT))


def downgrade() -> None:
    with op.batch_alter_table("als_trials") as batch:
        for name in ("max_iter", "fidelity", "round"):
            batch.drop_column(name)
