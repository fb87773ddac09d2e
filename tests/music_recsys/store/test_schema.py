"""One owner of the schema: Alembic migrations give exactly the tables the code reads and writes, on both
stores; upgrading is one idempotent step that serialises concurrent upgraders and adopts a store an older
music-recsys made; opening a store never changes its schema, so a role that may only SELECT can read it."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from music_recsys.store import registry, schema
from music_recsys.store.results import ResultsStore, metadata
from tests.stores import open_store, sqlite_url


def _diff(url: str) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": schema.VERSION_TABLE}
            )
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def test_migrations_make_exactly_the_codes_tables_on_sqlite(tmp_path):
    url = sqlite_url(tmp_path)
    assert schema.upgrade(url) == {"before": None, "after": schema.head()}
    assert _diff(url) == []
    assert schema.upgrade(url) == {"before": schema.head(), "after": schema.head()}  # idempotent


@pytest.mark.postgres
def test_migrations_make_exactly_the_codes_tables_on_postgres(postgres_url):
    schema.upgrade(postgres_url)
    assert _diff(postgres_url) == []  # column comments included


def _migration_0003_keeps_rows_and_adds_round_and_fidelity(url: str) -> None:
    schema.upgrade(url, "0002")
    engine = sa.create_engine(url)
    row = {"run_id": "r", "trial_id": "r20_reg0.1_a1_log1p", "split": "validation", "model": "als", "rank": 20,
           "reg_param": 0.1, "alpha": 1.0, "transform": "log1p", "map": 0.3, "map_at_k": 0.31,
           "precision_at_k": 0.05, "ndcg_at_k": 0.4, "fit_seconds": 2.5, "status": "success",
           "is_best": True}  # fmt: skip
    columns = ", ".join(row)
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO als_trials ({columns}) VALUES ({', '.join(':' + c for c in row)})"), row)
    assert schema.upgrade(url) == {"before": "0002", "after": "0003"}
    assert _diff(url) == []
    with engine.connect() as conn:
        after = dict(conn.execute(sa.text("SELECT * FROM als_trials")).one()._mapping)
    assert {k: after[k] for k in row} == row  # every contract column kept, values untouched
    assert (after["round"], after["fidelity"], after["max_iter"]) == (None, None, None)
    with ResultsStore(url) as store:
        store.upsert("als_trials", [{**row, "trial_id": "s1_r64_reg0.5_a10_log1p_it12", "round": 1,
                                     "fidelity": 0.25, "max_iter": 12, "is_best": False}])  # fmt: skip
        screened = next(r for r in store.fetch("als_trials", "r") if r["round"] == 1)
    assert (screened["fidelity"], screened["max_iter"]) == (0.25, 12)
    from alembic import command

    with engine.begin() as conn:
        command.downgrade(schema._config(conn), "0002")
    with engine.connect() as conn:
        names = {c["name"] for c in sa.inspect(conn).get_columns("als_trials")}
    engine.dispose()
    assert not {"round", "fidelity", "max_iter"} & names and set(row) <= names


def test_migration_0003_keeps_rows_and_adds_round_and_fidelity_on_sqlite(tmp_path):
    _migration_0003_keeps_rows_and_adds_round_and_fidelity(sqlite_url(tmp_path))


@pytest.mark.postgres
def test_migration_0003_keeps_rows_and_adds_round_and_fidelity_on_postgres(postgres_url):
    _migration_0003_keeps_rows_and_adds_round_and_fidelity(postgres_url)


def test_opening_a_store_never_changes_its_schema(tmp_path):
    path = tmp_path / "results.sqlite"
    with pytest.raises(schema.SchemaError, match="no music-recsys schema yet: run `music-recsys db upgrade`"):
        ResultsStore(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []  # no table made by a reader


def test_a_store_behind_the_code_names_the_upgrade(tmp_path):
    url = sqlite_url(tmp_path)
    schema.upgrade(url, "0001")
    with pytest.raises(schema.SchemaError, match="at schema revision 0001; this music-recsys needs .*db upgrade"):
        ResultsStore(url)
    schema.upgrade(url)
    ResultsStore(url).close()


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_concurrent_upgrades_are_serialised(store, tmp_path, request):
    url = sqlite_url(tmp_path) if store == "sqlite" else request.getfixturevalue("postgres_url")
    start, outcomes, errors = threading.Barrier(3), [], []

    def upgrade() -> None:
        start.wait()
        try:
            outcomes.append(schema.upgrade(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    # Exactly one did the work; the others waited for its lock and found the store current.
    assert sorted(o["before"] or "" for o in outcomes) == ["", schema.head(), schema.head()]


def test_a_store_an_older_music_recsys_made_is_adopted(tmp_path, monkeypatch):
    """Made by ``create_all`` before migrations: missing plain columns are added, a bundle path under the
    data root becomes relative, a candidate held for approval gets its status."""
    root = tmp_path / "data"
    monkeypatch.setenv("RECSYS_DATA_ROOT", str(root))
    path = tmp_path / "old.sqlite"
    legacy = sa.MetaData()
    new = {  # what revisions 0002 and 0003 added, and one column an even older music-recsys lacked
        "models": {"k", "compared_with", "compared_test_map", "compared_validation_map", "comparison"},
        "data_profiles": {"checksum", "skipped_checks"},
        "als_trials": {"is_best", "round", "fidelity", "max_iter"},
    }
    for table in metadata.tables.values():  # the old schema: today's tables without those columns
        sa.Table(table.name, legacy, *[c._copy() for c in table.columns if c.name not in new.get(table.name, ())])
    engine = sa.create_engine(f"sqlite:///{path}")
    legacy.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO models (model_version, run_id, trial_id, status, path, reason, created_at) VALUES "
                f"('v1', 'r1', 't', 'champion', '{root}/models/v1', 'first champion', :now), "
                "('v2', 'r2', 't', 'candidate', '/elsewhere/v2', "
                "'awaiting a person''s approval (require_approval); the gate passed it: …', :now)"
            ),
            {"now": datetime(2026, 1, 1, tzinfo=UTC)},
        )
    engine.dispose()
    assert schema.upgrade(f"sqlite:///{path}")["after"] == schema.head()
    assert _diff(f"sqlite:///{path}") == []
    with ResultsStore(f"sqlite:///{path}") as store:
        rows = {r["model_version"]: r for r in registry.all_models(store)}
        assert store.upsert("als_trials", [{"run_id": "r", "trial_id": "t", "split": "test", "model": "als",
                                            "status": "success", "is_best": True}]) == 1  # fmt: skip
    assert (rows["v1"]["path"], rows["v1"]["status"]) == ("models/v1", "champion")
    assert (rows["v2"]["path"], rows["v2"]["status"]) == ("/elsewhere/v2", registry.AWAITING)


def test_a_store_lacking_a_key_column_is_reported_not_half_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE ann_trials (run_id TEXT, metric TEXT, n_trees INT, search_k INT, k INT)")
    with pytest.raises(RuntimeError, match=r"table ann_trials .* lacks required columns \['candidates'\]"):
        schema.upgrade(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:  # the failed upgrade left nothing behind (DDL in the transaction)
        names = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert names == {"ann_trials"}


@pytest.mark.postgres
def test_a_select_only_role_reads_the_registry_and_cannot_change_the_schema(databases, postgres_url):
    import psycopg2

    from tests.stores import reader_url

    with open_store(postgres_url) as store:
        registry.publish(store, {"model_version": "v1", "run_id": "r1", "trial_id": "t", "path": "models/v1",
                                 "test_map": 0.2, "popularity_test_map": 0.1},
                         registry.Policy(True, 1.0, 0.05), registry.Comparison(None))  # fmt: skip
    reader = reader_url(postgres_url, "recsys_reader_t")
    with ResultsStore(reader) as store:
        assert registry.champion(store)["model_version"] == "v1"
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            store.transaction(lambda conn: conn.execute(sa.text("UPDATE models SET reason = 'x'")))
    with psycopg2.connect(reader.replace("+psycopg2", "")) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("CREATE TABLE sneaky (x int)")
    with pytest.raises(sa.exc.ProgrammingError, match="must be owner"):  # nor may it migrate
        schema.upgrade(migrated_behind(postgres_url, reader))


def migrated_behind(owner_url: str, reader: str) -> str:
    """Put the store one revision back (as its owner), so an upgrade has DDL to run; the reader's URL."""
    from alembic import command

    engine = sa.create_engine(owner_url)
    with engine.begin() as conn:
        command.downgrade(schema._config(conn), "0001")
    engine.dispose()
    return reader
