"""Results stores for tests: migrated to the newest revision first, as `music-recsys db upgrade` does."""

from __future__ import annotations

from pathlib import Path

from music_recsys.store import schema
from music_recsys.store.results import ResultsStore


def migrated(url: str) -> str:
    """``url`` after ``schema.upgrade`` (idempotent)."""
    schema.upgrade(url)
    return url


def open_store(url: str, **kwargs) -> ResultsStore:
    """A ``ResultsStore`` on ``url``, its schema upgraded first."""
    return ResultsStore(migrated(url), **kwargs)


def sqlite_url(folder: Path, name: str = "results.sqlite") -> str:
    return f"sqlite:///{Path(folder) / name}"


def reader_url(owner_url: str, role: str, *, promotes: bool = False) -> str:
    """``owner_url``'s database as ``role``: a login role (trust auth here) given ``schema.reader_grants``
    by the owner, as docs/results-store.md tells an operator to. Roles are the server's, so it may exist."""
    import sqlalchemy as sa

    engine = sa.create_engine(owner_url)
    with engine.begin() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
        if not exists:
            conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
        for statement in schema.reader_grants(role, promotes=promotes):
            conn.execute(sa.text(statement))
    engine.dispose()
    url = sa.engine.make_url(owner_url).set(username=role, password=None)
    return url.render_as_string(hide_password=False)


def register(store: ResultsStore, row: dict, promote: bool = True):
    """Publish ``row`` through the registry's gate with a lift of 1 and no comparison (tests that need a
    registry, not a gate). Returns the decision."""
    from music_recsys.store import registry

    def compare(champion):
        return registry.Comparison(champion["model_version"] if champion else None, note="not compared (a test)")

    decision, _, _ = registry.publish_against(store, row, registry.Policy(promote, 1.0, 0.05), compare)
    return decision


def stored_rows(store: ResultsStore, version: str) -> list[dict]:
    """A version's rows of ``user_recommendations``, by user and rank."""
    import sqlalchemy as sa

    from music_recsys.store.results import user_recommendations as t

    query = sa.select(t.c.user_id, t.c.rank, t.c.track_id, t.c.score).where(t.c.model_version == version)
    query = query.order_by(t.c.user_id, t.c.rank)
    return store.transaction(lambda conn: [dict(r._mapping) for r in conn.execute(query)])
