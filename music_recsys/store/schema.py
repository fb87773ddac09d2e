"""One owner of the results store's schema: Alembic migrations, run by one explicit step.

``upgrade(url)`` (``music-recsys db upgrade``; the DAG's ``prepare`` task, ``make setup`` and the compose
stack's init call it) brings the store to the newest revision under a lock that excludes every other
upgrader: ``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on PostgreSQL. Both stores run
DDL inside the transaction, so a failed migration leaves the store as it was. Readers (the serving API,
the UI, ``music-recsys models``) never issue DDL: ``ResultsStore`` only checks the revision and says how to
upgrade, so they can run with a role that may only SELECT (docs/results-store.md).

The migrations live in ``music_recsys/store/migrations/versions``; revision ``0001`` adopts a store an
older music-recsys made with ``create_all``. Alembic's version table is ``recsys_alembic_version``, so the
store may share a database with Airflow's own metadata (which has ``alembic_version``).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

VERSION_TABLE = "recsys_alembic_version"
MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock key of the upgrade (any fixed number; hashtext would differ by server version).
UPGRADE_LOCK_KEY = 7_310_227_001


class SchemaError(RuntimeError):
    """The store's schema is not the one this music-recsys needs."""


def _config(connection: sa.Connection | None = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision the code knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def current(connection: sa.Connection) -> str | None:
    """The store's revision (None: never upgraded, or not a results store)."""
    if VERSION_TABLE not in sa.inspect(connection).get_table_names():
        return None
    return connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(url: str, revision: str = "head") -> dict[str, str | None]:
    """Migrate the store at ``url`` to ``revision``; returns the revisions before and after. Idempotent."""
    from alembic import command

    from music_recsys.store.engine import connect_engine

    engine = connect_engine(url)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                connection = connection.execution_options(sqlite_begin="IMMEDIATE")
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK_KEY})
                before = current(connection)
                command.upgrade(_config(connection), revision)
                after = current(connection)
    finally:
        engine.dispose()
    return {"before": before, "after": after}


def require_current(connection: sa.Connection, url: str) -> None:
    """Raise ``SchemaError`` naming the fix unless the store is at the code's newest revision."""
    found, needed = current(connection), head()
    if found == needed:
        return
    where = sa.engine.make_url(url).render_as_string(hide_password=True)
    if found is None:
        raise SchemaError(
            f"results store {where} has no music-recsys schema yet: run `music-recsys db upgrade` (the DAG's "
            "first task does it too)"
        )
    raise SchemaError(
        f"results store {where} is at schema revision {found}; this music-recsys needs {needed}: run "
        "`music-recsys db upgrade`"
    )


def reader_grants(role: str, *, promotes: bool = False) -> list[str]:
    """The PostgreSQL grants of a role that reads the store and never changes its schema: the serving API's
    (SELECT only) or, with ``promotes``, the UI's (also UPDATE on ``models``: promotions and roll-backs).
    Run them as the role that owns the tables (the one ``music-recsys db upgrade`` runs as); the default
    privileges cover tables later migrations add. On PostgreSQL 15+ no role but the owner may create
    tables in ``public``, so neither can issue DDL."""
    if not role.replace("_", "").isalnum():
        raise ValueError(f"role {role!r}: letters, digits and _ only")
    grants = [
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}",
        f"REVOKE CREATE ON SCHEMA public FROM {role}",
    ]
    if promotes:
        grants.append(f"GRANT UPDATE ON models TO {role}")
    return grants
