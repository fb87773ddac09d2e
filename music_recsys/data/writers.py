"""Writers of generated play counts: one split's file streamed a row group at a time (parquet, MSD TSV
or CSV) with the running statistics its manifest reports, so no split is ever held whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from music_recsys import constants as C


@dataclass
class Block:
    """Rows of one block of users, as indices: user, track, plays, split code (0 train, 1 validation, 2 test)."""

    users: np.ndarray
    items: np.ndarray
    counts: np.ndarray
    split: np.ndarray


# Rows per parquet row group (and per CSV/TSV write): the unit of the streaming writes.
ROW_GROUP_ROWS = 1 << 20

SUFFIX = {"parquet": ".parquet", "tsv": ".txt", "csv": ".csv"}


class SplitWriter:
    """One split's file, written ``ROW_GROUP_ROWS`` rows at a time, with running statistics (a count
    histogram and which users and tracks occur) so no split is ever held whole."""

    def __init__(self, path: Path, fmt: str, user_ids: object, track_ids: object):
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        if fmt not in SUFFIX:
            raise ValueError(f"format {fmt!r}: choose parquet, tsv or csv")
        self.target = path.with_suffix(SUFFIX[fmt])
        self.fmt = fmt
        self.user_ids, self.track_ids = user_ids, track_ids  # pyarrow string arrays, taken from by index
        types = {C.USER_ID: pa.string(), C.COUNT: pa.int64(), C.TRACK_ID: pa.string()}
        if fmt == "parquet":
            self.columns = list(C.RAW_COLUMNS)
            self.schema = pa.schema([(c, types[c]) for c in self.columns])
            self.writer = pq.ParquetWriter(self.target, self.schema)
        elif fmt == "tsv":
            # MSD train_triplets.txt: user \t song \t count, no header, nothing quoted.
            self.columns = [C.USER_ID, C.TRACK_ID, C.COUNT]
            self.schema = pa.schema([(c, types[c]) for c in self.columns])
            options = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
            self.writer = pacsv.CSVWriter(self.target, self.schema, write_options=options)
        else:
            self.columns = list(C.RAW_COLUMNS)
            self.schema = pa.schema([(c, types[c]) for c in self.columns])
            self.writer = pacsv.CSVWriter(self.target, self.schema)
        self.pending: list[Block] = []
        self.pending_rows = 0
        self.histogram = np.zeros(0, dtype=np.int64)  # grows to the largest count seen
        self.users_seen = np.zeros(len(user_ids), dtype=bool)
        self.tracks_seen = np.zeros(len(track_ids), dtype=bool)

    def add(self, block: Block) -> None:
        self.pending.append(block)
        self.pending_rows += len(block.users)
        counts = np.bincount(block.counts, minlength=len(self.histogram))
        if len(counts) > len(self.histogram):  # a larger count than any before: the histogram grows
            counts[: len(self.histogram)] += self.histogram
            self.histogram = counts
        else:
            self.histogram += counts
        self.users_seen[block.users] = True
        self.tracks_seen[block.items] = True
        if self.pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self.pending:
            return
        users = pa.array(np.concatenate([b.users for b in self.pending]))
        items = pa.array(np.concatenate([b.items for b in self.pending]))
        values = {
            C.USER_ID: self.user_ids.take(users),
            C.COUNT: pa.array(np.concatenate([b.counts for b in self.pending]).astype(np.int64)),
            C.TRACK_ID: self.track_ids.take(items),
        }
        table = pa.table([values[c] for c in self.columns], schema=self.schema)
        if self.fmt == "parquet":
            self.writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        else:
            self.writer.write_table(table)
        self.pending, self.pending_rows = [], 0

    def close(self) -> dict:
        """Flush, close; the split's statistics (as ``count_statistics`` plus users and tracks)."""
        self._flush()
        self.writer.close()
        if not self.histogram.any():
            raise ValueError(f"split file {self.target}: no rows were generated; give more users or hold-out users")
        return {
            **histogram_statistics(self.histogram),
            "users": int(self.users_seen.sum()),
            "tracks": int(self.tracks_seen.sum()),
        }


def write_split(columns: dict[str, np.ndarray], path: Path, fmt: str) -> Path:
    """Write one in-memory split (``generate``'s form) as ``fmt``; the file's path."""
    import pyarrow as pa

    user_ids, user_of_row = np.unique(columns[C.USER_ID], return_inverse=True)
    track_ids, track_of_row = np.unique(columns[C.TRACK_ID], return_inverse=True)
    writer = SplitWriter(path, fmt, pa.array(user_ids), pa.array(track_ids))
    counts = np.asarray(columns[C.COUNT])
    writer.add(Block(user_of_row, track_of_row, counts, np.zeros(len(counts), dtype=np.int8)))
    writer.close()
    return writer.target


def count_statistics(counts: np.ndarray) -> dict[str, float]:
    q25, q50, q75 = np.percentile(counts, [25, 50, 75])
    return {
        "rows": int(len(counts)),
        "mean": float(counts.mean()),
        "std": float(counts.std()),
        "min": int(counts.min()),
        "p25": float(q25),
        "median": float(q50),
        "p75": float(q75),
        "max": int(counts.max()),
    }


def histogram_statistics(histogram: np.ndarray) -> dict[str, float]:
    """``count_statistics`` from ``histogram[v]`` = rows with count v, percentiles interpolated as numpy's."""
    values = np.arange(len(histogram), dtype=np.float64)
    n = int(histogram.sum())
    mean = float((values * histogram).sum() / n)
    cumulative = np.cumsum(histogram)

    def sorted_value(i: int) -> float:  # the i-th smallest count (0-based)
        return float(np.searchsorted(cumulative, i, side="right"))

    def percentile(q: float) -> float:
        position = q / 100.0 * (n - 1)
        lo = int(np.floor(position))
        below, above = sorted_value(lo), sorted_value(min(lo + 1, n - 1))
        return below + (position - lo) * (above - below)

    present = np.flatnonzero(histogram)
    return {
        "rows": n,
        "mean": mean,
        "std": float(np.sqrt(((values - mean) ** 2 * histogram).sum() / n)),
        "min": int(present[0]),
        "p25": percentile(25),
        "median": percentile(50),
        "p75": percentile(75),
        "max": int(present[-1]),
    }
