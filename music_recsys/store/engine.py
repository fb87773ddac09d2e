"""How the store connects: SQLAlchemy engines whose transactions are real on SQLite as on PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

# How long a SQLite writer waits for another's lock before "database is locked".
SQLITE_BUSY_SECONDS = 60


def connect_engine(url: str) -> sa.Engine:
    """An engine whose transactions are real on both stores.

    pysqlite starts no transaction on a SELECT and commits on its own before DDL, so a read-then-write
    would not be serialised: here the driver's own transaction handling is off and every transaction
    begins with ``BEGIN``, or ``BEGIN IMMEDIATE`` (the write lock taken at once) on a connection with the
    execution option ``sqlite_begin="IMMEDIATE"`` (``ResultsStore.locked``, ``schema.upgrade``).
    """
    if url.startswith("sqlite"):
        # A writer waits for another's lock instead of failing at once ("database is locked").
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})

        @sa.event.listens_for(engine, "connect")
        def _no_driver_transactions(dbapi_connection, _record) -> None:
            dbapi_connection.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin(connection: sa.Connection) -> None:
            mode = connection.get_execution_options().get("sqlite_begin")
            connection.exec_driver_sql(f"BEGIN {mode}" if mode else "BEGIN")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)
