"""Reading and validating play-count files in Spark: the study's parquet, MSD TSV, and CSV.

Formats, by file name (a directory is read as parquet):
- ``*.parquet`` / directory: columns ``user_id``, ``count``, ``track_id`` (extra columns are dropped
  and reported).
- ``*.txt`` / ``*.tsv`` (optionally ``.gz``): MSD ``train_triplets.txt``, ``user \\t song \\t count``;
  a header line naming those columns is recognised and skipped.
- ``*.csv`` (optionally ``.gz``): a header naming ``user_id``, ``count``, ``track_id`` in any order.

Rows are never dropped silently: a row with an empty id or a count that is not an integer >= 1 is
quarantined with its reason, and rows read = rows kept + rows rejected. Duplicate (user, track) rows
are summed into one, and how many were merged is reported.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from music_recsys import constants as C
from music_recsys.errors import InputError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

REJECT_REASON = "reject_reason"
_TEXT_SUFFIXES = (".txt", ".tsv", ".txt.gz", ".tsv.gz")
_CSV_SUFFIXES = (".csv", ".csv.gz")


def detect_format(path: str) -> str:
    name = Path(path).name.lower()
    if Path(path).is_dir() or name.endswith(".parquet"):
        return "parquet"
    if name.endswith(_TEXT_SUFFIXES):
        return "tsv"
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    raise InputError(
        f"{path}: unknown file type; use .parquet (or a parquet directory), .txt/.tsv (MSD triplets, "
        f"user<TAB>song<TAB>count) or .csv with a header, optionally gzip-compressed"
    )


def read_raw(spark: SparkSession, path: str) -> tuple[DataFrame, dict[str, Any]]:
    """Read a file as string-typed ``user_id``, ``track_id``, ``count_raw`` plus facts about it."""
    from pyspark.sql import functions as F

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{path}: input file does not exist (check the *_path params)")
    if p.is_file() and p.stat().st_size == 0:
        raise InputError(f"{path}: input file is empty")
    fmt = detect_format(path)
    info: dict[str, Any] = {"path": path, "format": fmt, "extra_columns": []}
    if fmt == "parquet":
        df = spark.read.parquet(path)
        missing = [c for c in C.RAW_COLUMNS if c not in df.columns]
        if missing:
            raise InputError(
                f"{path}: missing column(s) {missing}; found {df.columns}. Parquet input needs "
                f"{list(C.RAW_COLUMNS)} (the study's schema)"
            )
        info["extra_columns"] = [c for c in df.columns if c not in C.RAW_COLUMNS]
        count_type = dict(df.dtypes)[C.COUNT]
        if count_type in ("float", "double") or count_type.startswith("decimal"):
            # 2.0 is an integer count; 2.5 is not and must be rejected, not truncated.
            count_raw = F.when(F.col(C.COUNT) == F.floor(F.col(C.COUNT)), F.col(C.COUNT).cast("long").cast("string"))
            count_raw = F.when(F.col(C.COUNT).isNull(), None).otherwise(
                F.coalesce(count_raw, F.concat(F.lit("non-integer:"), F.col(C.COUNT).cast("string")))
            )
        else:
            count_raw = F.col(C.COUNT).cast("string")
        df = df.select(
            F.col(C.USER_ID).cast("string").alias(C.USER_ID),
            F.col(C.TRACK_ID).cast("string").alias(C.TRACK_ID),
            count_raw.alias("count_raw"),
        )
        return df, info

    if fmt == "tsv":
        # Lines are split by hand so a malformed line becomes a rejected row, not a lost one.
        lines = spark.read.text(path)
        parts = F.split(F.regexp_replace(F.col("value"), r"\r$", ""), "\t")
        n_fields = F.size(parts)
        df = lines.select(
            parts.getItem(0).alias(C.USER_ID),
            parts.getItem(1).alias(C.TRACK_ID),
            F.when(n_fields == 3, parts.getItem(2))
            .otherwise(F.concat(F.lit("fields:"), n_fields.cast("string")))
            .alias("count_raw"),
        )
        first = lines.limit(1).collect()
        if first and "\t" not in first[0]["value"]:
            sep = "," if "," in first[0]["value"] else " "
            raise InputError(
                f"{path}: first line has no tab; MSD triplet files are tab-separated (user<TAB>song<TAB>count). "
                f"It looks {sep!r}-separated: use a .csv name with a header, or convert to tabs"
            )
        is_header = F.lower(F.col(C.USER_ID)).isin("user", "user_id") & F.lower(F.col("count_raw")).isin(
            "count", "play_count", "plays"
        )
        info["header_rows"] = df.filter(is_header).count()
        return df.filter(~is_header), info

    df = spark.read.option("header", True).option("mode", "PERMISSIVE").option("encoding", "UTF-8").csv(path)
    df = df.toDF(*[re.sub(r"\s+", "", c).lower() for c in df.columns])
    missing = [c for c in C.RAW_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {missing} in the CSV header {df.columns}; the header must name "
            f"{list(C.RAW_COLUMNS)} (or check the delimiter: CSV input is comma-separated)"
        )
    info["extra_columns"] = [c for c in df.columns if c not in C.RAW_COLUMNS]
    df = df.select(
        F.col(C.USER_ID),
        F.col(C.TRACK_ID),
        F.regexp_replace(F.col(C.COUNT), r"\r$", "").alias("count_raw"),
    )
    return df, info


def validate(df: DataFrame) -> DataFrame:
    """Add ``reject_reason`` (null for good rows) and a typed ``count`` column."""
    from pyspark.sql import functions as F

    user = F.trim(F.col(C.USER_ID))
    track = F.trim(F.col(C.TRACK_ID))
    raw = F.trim(F.col("count_raw"))
    is_int = raw.rlike(r"^[+-]?[0-9]{1,18}$")
    count = F.when(is_int, raw.cast("long"))
    reason = (
        F.when(user.isNull() | (user == ""), F.lit("empty user_id"))
        .when(track.isNull() | (track == ""), F.lit("empty track_id"))
        .when(user.contains("\ufffd") | track.contains("\ufffd"), F.lit("id is not valid UTF-8"))
        .when(raw.isNull() | (raw == ""), F.lit("missing count"))
        .when(
            raw.startswith("fields:"),
            F.concat(F.lit("expected 3 tab-separated fields, got "), F.substring(raw, 8, 10)),
        )
        .when(~is_int, F.lit("count is not an integer"))
        .when(count <= 0, F.lit("count must be >= 1"))
    )
    return df.select(
        user.alias(C.USER_ID),
        track.alias(C.TRACK_ID),
        F.col("count_raw"),
        count.alias(C.COUNT),
        reason.alias(REJECT_REASON),
    )


def clean(spark: SparkSession, path: str) -> tuple[DataFrame, DataFrame, dict[str, Any]]:
    """Read and validate one file: (kept rows with duplicates summed, rejected rows, report).

    The report counts rows read, valid and rejected (by reason); how many valid rows duplicate summing
    merged is known once the kept rows are counted (``rows_valid - rows_kept``), which ingest does on
    the written data rather than here, to read the file once.
    """
    from pyspark.sql import functions as F

    raw, info = read_raw(spark, path)
    checked = validate(raw).cache()
    by_reason = {
        r[REJECT_REASON] or "ok": r["n"] for r in checked.groupBy(REJECT_REASON).agg(F.count("*").alias("n")).collect()
    }
    rows_read = sum(by_reason.values())
    if rows_read == 0:
        raise InputError(f"{path}: no data rows (only a header, or nothing at all)")
    good = checked.filter(F.col(REJECT_REASON).isNull())
    rejected = checked.filter(F.col(REJECT_REASON).isNotNull())
    kept = good.groupBy(C.USER_ID, C.TRACK_ID).agg(F.sum(C.COUNT).alias(C.COUNT))
    rows_ok = by_reason.pop("ok", 0)
    report = {
        **info,
        "rows_read": rows_read,
        "rows_valid": rows_ok,
        "rows_rejected": rows_read - rows_ok,
        "rejected_by_reason": by_reason,
    }
    return kept.select(*C.RAW_COLUMNS), rejected, report
