"""Batch recommendations of a published model: the kernel the batch job's Spark workers run, where the
lists live in the bundle, what its card says about them, the results-store table they are bulk-loaded
into, and the export other teams read.

``jobs/batch_recommend.py`` writes ``models/<version>/recommendations/`` (parquet: ``user_id``, ``rank``
from 1, ``track_id``, ``score``; original string ids, users in index order, each user's list best first)
and records its row count and a SHA-256 over its files in the bundle's ``model.json``
(``"recommendations"``). Everything that reads the parquet afterwards (the store load, the export)
verifies that checksum first, so a truncated or half-replaced folder is refused instead of copied.

With ``batch_to_store`` the rows also go to the results store's ``user_recommendations`` table, one set
per model version: deleted and loaded again in one transaction (PostgreSQL ``COPY``, SQLite a batched
``executemany``), so re-running the task leaves the same rows. The view ``champion_recommendations``
(made by the store's migrations, ``music_recsys.store.schema``) holds the rows of whichever version the
registry calls champion.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from music_recsys.evaluation import batch as kernel
from music_recsys.run_folders import read_json, write_json
from music_recsys.store.bundle import CARD, load_arrays, verify_bundle

RECOMMENDATIONS_DIR = "recommendations"
COLUMNS = ("user_id", "rank", "track_id", "score")
TABLE = "user_recommendations"
CHAMPION_VIEW = "champion_recommendations"
# Rows per Arrow batch read from the parquet: one COPY / executemany per batch bounds the memory a load
# takes whatever the number of users.
LOAD_BATCH_ROWS = 200_000
# Which recommendation rows are the champion's: the registry's one champion joined to the table.
CHAMPION_QUERY = (
    f"SELECT r.model_version, r.user_id, r.rank, r.track_id, r.score FROM {TABLE} r "
    "JOIN models m ON m.model_version = r.model_version WHERE m.status = 'champion'"
)
EXPORT_FORMATS = (".csv", ".csv.gz", ".parquet")


class RecommendationsError(ValueError):
    """Batch recommendations that are missing, or do not match what the bundle's card says."""


def arrow_schema():
    """The parquet schema of the batch recommendations (and of a parquet export, plus model_version)."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("track_id", pa.string(), nullable=False),
            pa.field("score", pa.float32(), nullable=False),
        ]
    )


def recommendations_dir(bundle: str | os.PathLike) -> Path:
    return Path(bundle) / RECOMMENDATIONS_DIR


def data_files(folder: Path) -> list[Path]:
    """The parquet part files of a folder Spark wrote, in name (= partition = user index) order."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(".parquet"))


def checksum(folder: Path) -> dict[str, Any]:
    """SHA-256 over the part files' names and bytes in name order, with each file's size."""
    digest = hashlib.sha256()
    files = {}
    for path in data_files(folder):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
        files[path.name] = path.stat().st_size
    return {"algorithm": "sha256", "digest": digest.hexdigest(), "files": files}


def parquet_rows(folder: Path) -> int:
    """Rows of a parquet folder, from the files' footers (nothing is decoded)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in data_files(folder))


def record_in_card(bundle: str | os.PathLike, entry: dict[str, Any]) -> dict[str, Any]:
    """Add ``entry`` as the card's ``recommendations`` (replacing an earlier one); the card is rewritten
    atomically, so the serving API never reads half a card. Returns the new card."""
    card_path = Path(bundle) / CARD
    card = read_json(card_path)
    card["recommendations"] = entry
    write_json(card_path, card)
    return card


def verify(bundle: str | os.PathLike) -> dict[str, Any]:
    """The card's ``recommendations`` entry, after checking the folder against its checksum and row count."""
    bundle = Path(bundle)
    card = verify_bundle(bundle)
    entry = card.get("recommendations")
    fix = "run the DAG's batch_recommendations task (or jobs/batch_recommend.py --bundle) for this bundle"
    if not entry:
        raise RecommendationsError(f"model {card['version']} ({bundle}): no batch recommendations; {fix}")
    folder = recommendations_dir(bundle)
    if not folder.is_dir():
        raise RecommendationsError(f"model {card['version']}: {folder} is missing although the card lists it; {fix}")
    found = checksum(folder)
    if found["digest"] != entry["checksum"]["digest"]:
        changed = sorted(set(found["files"].items()) ^ set(entry["checksum"]["files"].items()))
        raise RecommendationsError(
            f"model {card['version']}: {folder} does not match the checksum in {CARD} "
            f"(files that differ: {[name for name, _ in changed] or 'same names and sizes, other bytes'}); {fix}"
        )
    return entry


def iter_batches(bundle: str | os.PathLike, batch_rows: int = LOAD_BATCH_ROWS) -> Iterator:
    """The verified recommendations as Arrow record batches, in file order (users in index order)."""
    import pyarrow.dataset as ds

    verify(bundle)
    dataset = ds.dataset([str(p) for p in data_files(recommendations_dir(bundle))], format="parquet")
    yield from dataset.to_batches(columns=list(COLUMNS), batch_size=batch_rows)


# --- the batch job's Spark workers ---------------------------------------------------------------
# These live in the package, not in ``jobs/batch_recommend.py``: the workers must import them by name
# (cloudpickle sends an lru_cache wrapper as a reference, and a spark-submitted script is ``__main__``).


@functools.lru_cache(maxsize=2)
def _bundle(path: str) -> dict:
    """A worker's view of the bundle, loaded once per Python worker: arrays memory-mapped, ids as Arrow."""
    import pyarrow.parquet as pq

    arrays = load_arrays(Path(path), mmap=True)
    labels = {
        key: pq.read_table(Path(path) / name, columns=["id"])["id"].combine_chunks()
        for key, name in (("users", "users.parquet"), ("tracks", "tracks.parquet"))
    }
    return {
        **arrays,
        "item_vectors": np.asarray(arrays["item_factors"], dtype=np.float32),
        "by_popularity": kernel.popularity_order(arrays["popularity"]),
        **labels,
    }


def recommend_batches(batches: Iterator, bundle: str, k: int) -> Iterator:
    """``mapInPandas`` body: batches of user indices (column ``id``) to rows user_id, rank, track_id, score."""
    import pandas as pd
    import pyarrow as pa

    b = _bundle(bundle)
    indptr, indices = b["played_indptr"], b["played_indices"]
    for frame in batches:
        users = frame["id"].to_numpy(dtype=np.int64)
        played = [np.asarray(indices[indptr[u] : indptr[u + 1]], dtype=np.int64) for u in users]
        vectors = b["user_factors"][users]
        lists = kernel.recommend_users(vectors, b["item_vectors"], played, b["popularity"], b["by_popularity"], k)
        lengths = np.fromiter((len(t) for t, _ in lists), dtype=np.int64, count=len(lists))
        tracks = np.concatenate([t for t, _ in lists]) if len(lists) else np.zeros(0, dtype=np.int64)
        scores = np.concatenate([s for _, s in lists]) if len(lists) else np.zeros(0, dtype=np.float32)
        ranks = np.arange(1, lengths.sum() + 1) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        yield pd.DataFrame(
            {
                "user_id": b["users"].take(pa.array(np.repeat(users, lengths))).to_pandas(),
                "rank": ranks.astype(np.int32),
                "track_id": b["tracks"].take(pa.array(tracks)).to_pandas(),
                "score": scores.astype(np.float32),
            }
        )


def expected_lengths(bundle: Path, k: int) -> np.ndarray:
    """Each user's list length: k, or every track they have not played when fewer are left."""
    arrays = load_arrays(bundle, mmap=True)
    n_items = len(arrays["popularity"])
    return np.minimum(k, n_items - np.diff(arrays["played_indptr"]))


def read_table(bundle: str | os.PathLike):
    """All of a bundle's verified recommendations as one Arrow table (tests, small models)."""
    import pyarrow as pa

    return pa.Table.from_batches(list(iter_batches(bundle)), schema=arrow_schema())


# --- the results store -----------------------------------------------------------------------------


def load(store, bundle: str | os.PathLike, batch_rows: int = LOAD_BATCH_ROWS) -> int:
    """Replace the bundle's model version's rows of ``user_recommendations`` with its batch recommendations,
    in one transaction (a failure leaves the previous rows); returns the rows loaded."""
    from music_recsys.store.results import user_recommendations

    bundle = Path(bundle)
    entry = verify(bundle)
    version = read_json(bundle / CARD)["version"]
    table = user_recommendations

    def work(conn: sa.Connection) -> int:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            # Loads of the same version would collide on the key: one load at a time (they run once per
            # published model).
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": TABLE})
        conn.execute(sa.delete(table).where(table.c.model_version == version))
        loaded = 0
        for batch in iter_batches(bundle, batch_rows):
            loaded += _copy(conn, version, batch) if postgres else _insert(conn, table, version, batch)
        if loaded != entry["rows"]:
            raise RecommendationsError(f"model {version}: loaded {loaded} rows, the card says {entry['rows']}")
        return loaded

    return store.transaction(work)


def forget(store, versions: list[str]) -> int:
    """Delete the ``user_recommendations`` rows of model versions whose bundle is gone (retention);
    returns the rows deleted."""
    from music_recsys.store.results import user_recommendations as table

    if not versions:
        return 0
    return store.transaction(
        lambda conn: conn.execute(sa.delete(table).where(table.c.model_version.in_(versions))).rowcount
    )


def _copy(conn: sa.Connection, version: str, batch) -> int:
    """One Arrow batch through PostgreSQL ``COPY ... FROM STDIN`` (CSV written by Arrow, not row by row)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    framed = pa.Table.from_batches([batch]).add_column(0, "model_version", pa.array([version] * batch.num_rows))
    buffer = io.BytesIO()
    pacsv.write_csv(framed, buffer, pacsv.WriteOptions(include_header=False))
    buffer.seek(0)
    columns = ", ".join(("model_version", *COLUMNS))
    sql = f"COPY {TABLE} ({columns}) FROM STDIN WITH (FORMAT csv)"
    with conn.connection.dbapi_connection.cursor() as cursor:
        if hasattr(cursor, "copy_expert"):  # psycopg2, the store's driver (results.to_sqlalchemy_url)
            cursor.copy_expert(sql, buffer)
        else:  # psycopg 3, SQLAlchemy 2.1's default for a bare postgresql:// URL
            with cursor.copy(sql) as copy:
                copy.write(buffer.getbuffer())
    return batch.num_rows


def _insert(conn: sa.Connection, table: sa.Table, version: str, batch) -> int:
    """One Arrow batch as one executemany (SQLite has no COPY)."""
    rows = batch.to_pylist()
    for row in rows:
        row["model_version"] = version
    if rows:
        conn.execute(sa.insert(table), rows)
    return len(rows)


# --- export ----------------------------------------------------------------------------------------


def locate_bundle(version: str, store=None) -> Path:
    """The bundle of ``version`` (or of the registry's champion for ``"champion"``): its registry path, or
    ``models/<version>`` under the data root for a version the registry does not know."""
    from music_recsys.settings import data_root
    from music_recsys.store import registry
    from music_recsys.store.bundle import models_dir

    row = None
    if store is not None:
        row = registry.champion(store) if version == "champion" else registry.get(store, version)
        if version == "champion" and row is None:
            raise RecommendationsError("the registry has no champion yet; name a --version")
    if row is not None:
        if row.get("bundle_removed_at") is not None:
            raise RecommendationsError(f"model {row['model_version']}'s bundle was removed by retention")
        return registry.bundle_path(row)
    folder = models_dir(data_root()) / version
    if not (folder / CARD).exists():
        raise RecommendationsError(
            f"model version {version!r}: not in the registry and no bundle at {folder}; "
            "`music-recsys models` lists the versions"
        )
    return folder


def export_format(out: str | os.PathLike) -> str:
    name = Path(out).name.lower()
    for suffix in sorted(EXPORT_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise RecommendationsError(f"export file {out}: unknown format; the name must end in {', '.join(EXPORT_FORMATS)}")


def export(bundle: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write the bundle's verified recommendations to ``out`` (CSV, gzipped CSV or parquet, by its name),
    with a ``model_version`` column first; streamed batch by batch and renamed into place when complete."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    bundle, out = Path(bundle), Path(out)
    fmt = export_format(out)
    version = read_json(bundle / CARD)["version"]
    schema = pa.schema([pa.field("model_version", pa.string(), nullable=False), *arrow_schema()])
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    rows = 0
    try:
        if fmt == ".parquet":
            writer = pq.ParquetWriter(tmp, schema)
        else:
            sink = pa.CompressedOutputStream(tmp, "gzip") if fmt == ".csv.gz" else pa.OSFile(tmp, "wb")
            writer = pacsv.CSVWriter(sink, schema)
        try:
            for batch in iter_batches(bundle):
                columns = [pa.array([version] * batch.num_rows, pa.string()), *batch.columns]
                writer.write_table(pa.Table.from_arrays(columns, schema=schema))
                rows += batch.num_rows
        finally:
            writer.close()
            if fmt != ".parquet":
                sink.close()
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"version": version, "rows": rows, "path": str(out), "format": fmt.lstrip("."), "bytes": out.stat().st_size}


def card_entry(
    bundle: Path, k: int, rows: int, n_users: int, short_lists: int, popularity_fallback: int, seconds: float
) -> dict[str, Any]:
    """What ``model.json`` records about the written recommendations."""
    return {
        "path": RECOMMENDATIONS_DIR,
        "k": k,
        "rows": rows,
        "users": n_users,
        "short_lists": short_lists,
        "popularity_fallback_users": popularity_fallback,
        "columns": list(COLUMNS),
        "checksum": checksum(recommendations_dir(bundle)),
        "created_at": datetime.now(UTC).isoformat(),
        "seconds": round(seconds, 3),
    }


def export_version(version: str, out: str | os.PathLike, url: str | None = None) -> dict[str, Any]:
    """``music-recsys recommendations export``: the bundle of ``version`` (or ``"champion"``) located
    through the registry, its recommendations written to ``out``."""
    from music_recsys.store.results import ResultsStore, results_url

    export_format(out)  # a wrong file name fails before the store is asked
    with ResultsStore(url or results_url()) as store:
        bundle = locate_bundle(version, store)
    return export(bundle, out)
