"""The data check on every drop: a profile of each split, compared with the last good run's.

``profile`` runs in the ingest job (one Spark aggregation per split); ``compare`` is plain Python and
decides the verdict the ``check_data`` task acts on. A baseline is the latest run before this one's
logical date that finished successfully with a passing data check, so a backfill of past dates is
compared with the drop before it, and a drop that was only let through with a warning never becomes
the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from music_recsys import constants as C

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# Play-count buckets (upper bounds, inclusive); the last bucket holds everything above 512.
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
VOLUME_FIGURES = ("rows", "users", "tracks", "plays")
PROFILE_FIGURES = (*VOLUME_FIGURES, "median_count", "p99_count", "share_count_1")


def profile(df: DataFrame) -> dict[str, Any]:
    """Rows, users, tracks, plays, median and p99 count, share of count 1, the count histogram and a content
    checksum of one split, in one aggregation (exact percentiles: play counts have few distinct values).

    The checksum depends on the rows only — not on their order, the file format or where the file lies:
    the XOR and the sum (of the low 32 bits) of a 64-bit hash of every (user, track, count) row."""
    from pyspark.sql import functions as F

    count = F.col(C.COUNT)
    row_hash = F.xxhash64(F.col(C.USER_ID).cast("string"), F.col(C.TRACK_ID).cast("string"), count.cast("long"))
    bucket = F.lit(len(COUNT_BUCKETS))
    for i, high in reversed(list(enumerate(COUNT_BUCKETS))):
        bucket = F.when(count <= high, F.lit(i)).otherwise(bucket)
    aggs = [
        F.count("*").alias("rows"),
        F.countDistinct(C.USER_ID).alias("users"),
        F.countDistinct(C.TRACK_ID).alias("tracks"),
        F.sum(count).alias("plays"),
        F.percentile(count, [0.5, 0.99]).alias("percentiles"),
        F.avg((count == 1).cast("double")).alias("share_count_1"),
        F.bit_xor(row_hash).alias("hash_xor"),
        F.sum(F.pmod(row_hash, F.lit(1 << 32))).alias("hash_sum"),
    ]
    aggs += [F.sum((bucket == i).cast("long")).alias(f"b{i}") for i in range(len(COUNT_BUCKETS) + 1)]
    row = df.agg(*aggs).first()
    histogram = [int(row[f"b{i}"] or 0) for i in range(len(COUNT_BUCKETS) + 1)]
    median, p99 = row["percentiles"] or (None, None)
    return {
        "rows": int(row["rows"]),
        "users": int(row["users"]),
        "tracks": int(row["tracks"]),
        "plays": int(row["plays"] or 0),
        "median_count": median,
        "p99_count": p99,
        "share_count_1": row["share_count_1"],
        "count_histogram": histogram,
        "checksum": content_checksum(int(row["rows"]), row["hash_xor"], row["hash_sum"]),
    }


def content_checksum(rows: int, hash_xor: int | None, hash_sum: int | None) -> str:
    """A split's checksum (64 hex digits) from its row count and the two order-independent hash folds."""
    import hashlib

    text = f"{rows}:{(hash_xor or 0) & ((1 << 64) - 1):016x}:{hash_sum or 0:x}"
    return hashlib.sha256(text.encode()).hexdigest()


def hashed_ids(df: DataFrame, column: str) -> DataFrame:
    """The distinct ids of a column as 64-bit hashes: what the next run needs to count new users/tracks."""
    from pyspark.sql import functions as F

    return df.select(F.xxhash64(F.col(column)).alias("h")).distinct()


@dataclass(frozen=True)
class Thresholds:
    max_volume_change: float
    max_new_user_share: float
    max_new_track_share: float
    max_count_shift: float


def relative_change(now: float | None, before: float | None) -> float | None:
    if now is None or before is None:
        return None
    if before == 0:
        return 0.0 if now == 0 else float("inf")
    return (now - before) / before


def count_shift(now: list[int], before: list[int]) -> float:
    """Total variation distance between two count histograms (0 = same shape, 1 = disjoint)."""
    n, b = sum(now), sum(before)
    if n == 0 or b == 0:
        return 0.0 if n == b else 1.0
    return 0.5 * sum(abs(x / n - y / b) for x, y in zip(now, before, strict=True))


def new_share(now_ids, before_ids) -> float | None:
    """Share of ``now_ids`` (numpy int64 hashes) not in ``before_ids``; None when either is unknown."""
    import numpy as np

    if now_ids is None or before_ids is None:
        return None
    if len(now_ids) == 0:
        return 0.0
    return float(np.mean(~np.isin(now_ids, before_ids)))


def compare(
    current: dict[str, dict[str, Any]],
    baseline: dict[str, dict[str, Any]] | None,
    thresholds: Thresholds,
    new_users: float | None = None,
    new_tracks: float | None = None,
    ids_missing: str | None = None,
) -> dict[str, Any]:
    """Each split's change against the baseline, the figures that crossed a threshold, the checks that
    could not run, and the verdict.

    ``current`` and ``baseline`` map split -> profile; the new-user and new-track shares are of train (None:
    not measured, ``ids_missing`` says why). Verdict ``first_run`` when there is no baseline, else ``drift``
    when a figure crossed its threshold, ``incomplete`` when none did but a check could not run (each one
    named in ``skipped``), else ``pass``.
    """
    if not baseline:
        return {"verdict": "first_run", "baseline_run_id": None, "changes": {}, "violations": [], "skipped": []}
    changes: dict[str, dict[str, Any]] = {}
    violations: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []

    def check(split: str, figure: str, now: Any, before: Any, value: float | None, limit: float) -> None:
        if value is not None and abs(value) > limit:
            violations.append(
                {"split": split, "figure": figure, "now": now, "before": before, "value": value, "limit": limit}
            )

    for split in C.SPLITS:
        now, before = current.get(split), baseline.get(split)
        if not now or not before:
            where = "this drop" if not now else "the baseline run"
            skipped.append(
                {"split": split, "check": "volume and count shift", "reason": f"{where} has no {split} profile"}
            )
            continue
        split_changes = {f: relative_change(now.get(f), before.get(f)) for f in PROFILE_FIGURES}
        split_changes["count_shift"] = count_shift(now["count_histogram"], before["count_histogram"])
        changes[split] = split_changes
        for figure in VOLUME_FIGURES:
            check(split, figure, now[figure], before[figure], split_changes[figure], thresholds.max_volume_change)
        check(
            split,
            "count_shift",
            now["count_histogram"],
            before["count_histogram"],
            split_changes["count_shift"],
            thresholds.max_count_shift,
        )
    changes.setdefault("train", {})
    changes["train"]["new_user_share"] = new_users
    changes["train"]["new_track_share"] = new_tracks
    check("train", "new_user_share", new_users, None, new_users, thresholds.max_new_user_share)
    check("train", "new_track_share", new_tracks, None, new_tracks, thresholds.max_new_track_share)
    for figure, value in (("new_user_share", new_users), ("new_track_share", new_tracks)):
        if value is None:
            reason = ids_missing or "the hashed train ids of this drop or of the baseline run are not available"
            skipped.append({"split": "train", "check": figure, "reason": reason})
    verdict = "drift" if violations else "incomplete" if skipped else "pass"
    return {"verdict": verdict, "changes": changes, "violations": violations, "skipped": skipped}


def skipped_text(skipped: list[dict[str, str]]) -> str:
    """The checks that could not run, in one line."""
    return "; ".join(f"{s['check']} of {s['split']} ({s['reason']})" for s in skipped)


SHARE_FIGURES = ("count_shift", "new_user_share", "new_track_share")


def _fmt_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return f"{value:,}"


def violations_table(violations: list[dict[str, Any]]) -> str:
    """The figures that crossed a threshold, now vs before vs limit, as a small text table."""
    rows = [("split", "figure", "now", "before", "change", "limit")]
    for v in violations:
        share = v["figure"] in SHARE_FIGURES
        rows.append(
            (
                v["split"],
                v["figure"],
                _fmt_value(None if share else v["now"]),
                _fmt_value(None if share else v["before"]),
                f"{v['value']:.3f}" if share else f"{v['value']:+.1%}",
                f"{v['limit']:.3f}" if share else f"±{v['limit']:.0%}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
