"""Batch recommendations in the results store and as exports: the same load code on SQLite and PostgreSQL
(COPY there, executemany here), one set of rows per model version whatever the reruns, a failed load
leaving the previous rows, the champion's rows through the view, and the export CLI round-trip."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from music_recsys.cli import main as cli
from music_recsys.store import recommendations as recs
from music_recsys.store.results import ResultsStore, to_sqlalchemy_url
from tests.music_recsys.serving.bundles import N_USERS, precompute, varied_arrays, write_test_bundle
from tests.stores import migrated, open_store, stored_rows
from tests.stores import register as register_row

K = 7


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        v: precompute(write_test_bundle(root, varied_arrays(seed), v, None), K) for v, seed in (("va", 1), ("vb", 2))
    }


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),  # psycopg2, as the recsys_results connection
        pytest.param("postgres-psycopg3", marks=pytest.mark.postgres),  # SQLAlchemy 2.1's default driver
    ]
)
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return migrated(f"sqlite:///{tmp_path / 'results.sqlite'}")
    url = migrated(request.getfixturevalue("postgres_url"))
    return (
        to_sqlalchemy_url(url) if request.param == "postgres" else url.replace("postgresql://", "postgresql+psycopg://")
    )


def as_rows(bundle: Path) -> list[dict]:
    rows = recs.read_table(bundle).to_pylist()
    return sorted(rows, key=lambda r: (r["user_id"], r["rank"]))


def register(store: ResultsStore, version: str, bundle: Path, test_map: float, day: int) -> None:
    candidate = {
        "model_version": version,
        "run_id": f"run-{version}",
        "trial_id": "r4_reg0.1_a2_none",
        "path": str(bundle),
        "validation_map": test_map,
        "test_map": test_map,
        "popularity_test_map": 0.05,
        "logical_date": datetime(2026, 11, day, 3, tzinfo=UTC),
        "data_fingerprint": "data-a",
    }
    register_row(store, candidate)


def test_load_is_one_set_per_version_and_reruns_rewrite_it(store_url, bundles, monkeypatch):
    store = ResultsStore(store_url)
    # The bulk path of each database, and only it: COPY on PostgreSQL, executemany on SQLite.
    unused = "_insert" if store.engine.dialect.name == "postgresql" else "_copy"
    monkeypatch.setattr(recs, unused, lambda *a: pytest.fail(f"{unused} used on {store.engine.dialect.name}"))
    try:
        expected = as_rows(bundles["va"])
        assert len(expected) == N_USERS * K
        assert recs.load(store, bundles["va"], batch_rows=50) == N_USERS * K
        first = stored_rows(store, "va")
        assert [{**r, "score": pytest.approx(r["score"], rel=1e-6)} for r in expected] == first
        assert recs.load(store, bundles["va"]) == N_USERS * K  # a rerun of the task
        assert stored_rows(store, "va") == first
        assert recs.load(store, bundles["vb"]) == N_USERS * K  # another version has its own rows
        assert stored_rows(store, "va") == first
        count = sa.text("SELECT model_version, COUNT(*) FROM user_recommendations GROUP BY model_version")
        counts = store.transaction(lambda conn: dict(conn.execute(count).all()))
        assert counts == {"va": N_USERS * K, "vb": N_USERS * K}
    finally:
        store.close()


def test_a_failed_load_keeps_the_previous_rows(store_url, bundles, monkeypatch):
    store = ResultsStore(store_url)
    try:
        recs.load(store, bundles["va"])
        before = stored_rows(store, "va")
        loader = "_copy" if store.engine.dialect.name == "postgresql" else "_insert"
        real, calls = getattr(recs, loader), []

        def fail_on_second_batch(*args):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("the database went away mid-load")
            return real(*args)

        monkeypatch.setattr(recs, loader, fail_on_second_batch)
        with pytest.raises(RuntimeError, match="mid-load"):
            recs.load(store, bundles["va"], batch_rows=40)
        assert stored_rows(store, "va") == before  # the delete and the first batch were rolled back
    finally:
        store.close()


def test_the_champion_view_holds_the_champions_rows(store_url, bundles):
    store = ResultsStore(store_url)
    view = sa.text(f"SELECT model_version, COUNT(*) FROM {recs.CHAMPION_VIEW} GROUP BY model_version")
    try:
        for version in ("va", "vb"):
            recs.load(store, bundles[version])
        assert store.transaction(lambda conn: conn.execute(view).all()) == []  # no champion yet
        register(store, "va", bundles["va"], 0.2, day=1)
        assert store.transaction(lambda conn: conn.execute(view).all()) == [("va", N_USERS * K)]
        register(store, "vb", bundles["vb"], 0.3, day=2)  # the newer, better model takes over
        assert store.transaction(lambda conn: conn.execute(view).all()) == [("vb", N_USERS * K)]
        query = store.transaction(lambda conn: conn.execute(sa.text(recs.CHAMPION_QUERY)).all())
        assert {r.model_version for r in query} == {"vb"} and len(query) == N_USERS * K
    finally:
        store.close()


def test_a_bundle_without_or_with_tampered_recommendations_is_refused(bundles, tmp_path):
    import shutil

    bare = write_test_bundle(tmp_path, varied_arrays(3), "bare", None)
    with pytest.raises(recs.RecommendationsError, match="no batch recommendations; run the DAG's"):
        recs.verify(bare)
    tampered = shutil.copytree(bundles["va"], tmp_path / "tampered")
    part = recs.data_files(recs.recommendations_dir(tampered))[1]
    part.write_bytes(part.read_bytes()[:-5] + b"xxxxx")
    store = open_store(f"sqlite:///{tmp_path / 'r.sqlite'}")
    try:
        with pytest.raises(recs.RecommendationsError, match="does not match the checksum"):
            recs.load(store, tampered)
    finally:
        store.close()


@pytest.mark.parametrize("name", ["recs.csv", "recs.csv.gz", "recs.parquet"])
def test_export_cli_round_trip(name, bundles, tmp_path, capsys):
    url = migrated(f"sqlite:///{tmp_path / 'results.sqlite'}")
    store = ResultsStore(url)
    register(store, "vb", bundles["vb"], 0.3, day=2)
    store.close()
    out = tmp_path / "exports" / name
    assert cli(["recommendations", "export", "--version", "vb", "--out", str(out), "--results-url", url]) == 0
    assert f"{N_USERS * K:,} recommendations of model vb written to {out}" in capsys.readouterr().out
    if name.endswith(".parquet"):
        table = pq.read_table(out)
    elif name.endswith(".gz"):
        with gzip.open(out, "rb") as fh:
            table = pacsv.read_csv(fh)
    else:
        table = pacsv.read_csv(out)
    assert table.column_names == ["model_version", "user_id", "rank", "track_id", "score"]
    rows = table.to_pylist()
    assert {r.pop("model_version") for r in rows} == {"vb"}
    expected = recs.read_table(bundles["vb"]).to_pylist()
    assert [(r["user_id"], r["rank"], r["track_id"]) for r in rows] == [
        (r["user_id"], r["rank"], r["track_id"]) for r in expected
    ]
    assert [r["score"] for r in rows] == pytest.approx([r["score"] for r in expected], rel=1e-6)
    # The champion by name, too.
    again = tmp_path / f"champion-{name}"
    assert cli(["recommendations", "export", "--version", "champion", "--out", str(again), "--results-url", url]) == 0
    assert again.stat().st_size > 0 and not [p for p in again.parent.iterdir() if p.name.startswith(".")]


def test_export_errors_name_the_problem(bundles, tmp_path, capsys):
    url = migrated(f"sqlite:///{tmp_path / 'results.sqlite'}")
    assert (
        cli(["recommendations", "export", "--version", "vb", "--out", str(tmp_path / "x.json"), "--results-url", url])
        == 1
    )
    assert "x.json: unknown format; the name must end in .csv, .csv.gz, .parquet" in capsys.readouterr().err
    assert (
        cli(["recommendations", "export", "--version", "nope", "--out", str(tmp_path / "x.csv"), "--results-url", url])
        == 1
    )
    assert "model version 'nope': not in the registry and no bundle at" in capsys.readouterr().err
    assert (
        cli(
            [
                "recommendations",
                "export",
                "--version",
                "champion",
                "--out",
                str(tmp_path / "x.csv"),
                "--results-url",
                url,
            ]
        )
        == 1
    )
    assert "the registry has no champion yet" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
