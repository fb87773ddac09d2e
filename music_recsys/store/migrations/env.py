"""Alembic's environment for the results store: always run through ``music_recsys.store.schema.upgrade``,
which hands over one connection already holding the store's migration lock (see there)."""

from __future__ import annotations

from alembic import context

from music_recsys.store.results import metadata
from music_recsys.store.schema import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the results store's migrations run through `music-recsys db upgrade` (music_recsys.store.schema), "
        "which holds the migration lock; not through the alembic command"
    )
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    # SQLite cannot ALTER most things in place: Alembic's batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
