"""Ingest: every supported format, every kind of bad row counted, sampling keeps hold-out users."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import ingest
from music_recsys import constants as C
from music_recsys.data.readers import clean, detect_format
from music_recsys.run_folders import read_json

pytestmark = pytest.mark.spark

GOOD_TSV = "u1\tT1\t3\nu1\tT2\t1\nu2\tT1\t7\n"


def _rows(df):
    return sorted((r[C.USER_ID], r[C.TRACK_ID], r[C.COUNT]) for r in df.collect())


def test_msd_tsv(spark, tmp_path):
    path = tmp_path / "train_triplets.txt"
    path.write_text(GOOD_TSV)
    kept, rejected, report = clean(spark, str(path))
    assert _rows(kept) == [("u1", "T1", 3), ("u1", "T2", 1), ("u2", "T1", 7)]
    assert report["rows_read"] == 3 and report["rows_rejected"] == 0 and report["format"] == "tsv"


def test_tsv_with_header_crlf_and_gzip(spark, tmp_path):
    path = tmp_path / "plays.tsv.gz"
    with gzip.open(path, "wt", newline="") as fh:
        fh.write("user\tsong\tcount\r\n" + GOOD_TSV.replace("\n", "\r\n"))
    kept, _, report = clean(spark, str(path))
    assert _rows(kept) == [("u1", "T1", 3), ("u1", "T2", 1), ("u2", "T1", 7)]
    assert report["header_rows"] == 1 and report["rows_read"] == 3


def test_bad_rows_are_quarantined_with_reasons(spark, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(
        b"u1\tT1\t3\n"
        b"u1\tT2\t0\n"  # count 0
        b"u2\tT1\t-4\n"  # negative
        b"u2\tT3\t2.5\n"  # not an integer
        b"\tT3\t2\n"  # empty user
        b"u3\t\t2\n"  # empty track
        b"u3\tT1\n"  # two fields
        b"u4\tT\xff\xfe\t1\n"  # not UTF-8
        b"u\xc3\xa9\tT\xe2\x99\xab\t5\n"  # unicode ids are fine
        b"u1\tT1\t2\n"  # duplicate of the first row: summed
    )
    kept, rejected, report = clean(spark, str(path))
    assert _rows(kept) == [("u1", "T1", 5), ("u\u00e9", "T\u266b", 5)]
    assert report["rows_read"] == 10
    assert report["rows_read"] == report["rows_valid"] + report["rows_rejected"]
    assert report["rows_valid"] - kept.count() == 1  # the duplicate was merged
    assert report["rejected_by_reason"] == {
        "count must be >= 1": 2,
        "count is not an integer": 1,
        "empty user_id": 1,
        "empty track_id": 1,
        "expected 3 tab-separated fields, got 2": 1,
        "id is not valid UTF-8": 1,
    }
    assert rejected.count() == 7


def test_parquet_with_seed_schema_and_extra_columns(spark, tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(
        pa.table({C.USER_ID: ["a", "b"], C.COUNT: [2.0, 2.5], C.TRACK_ID: ["x", "y"], "__index_level_0__": [0, 1]}),
        path,
    )
    kept, _, report = clean(spark, str(path))
    assert _rows(kept) == [("a", "x", 2)]
    assert report["extra_columns"] == ["__index_level_0__"]
    assert report["rejected_by_reason"] == {"count is not an integer": 1}


def test_csv_with_header_in_any_order(spark, tmp_path):
    path = tmp_path / "plays.csv"
    path.write_text("track_id,user_id,count,source\nT1,u1,4,web\nT2,u1,x,app\n")
    kept, _, report = clean(spark, str(path))
    assert _rows(kept) == [("u1", "T1", 4)]
    assert report["extra_columns"] == ["source"]
    assert report["rows_rejected"] == 1


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("missing.parquet", None, "does not exist"),
        ("empty.txt", "", "is empty"),
        ("comma.txt", "u1,T1,3\n", "no tab"),
        ("nocount.csv", "user_id,track_id\nu1,T1\n", r"missing column\(s\) \['count'\]"),
        ("header_only.txt", "user\tsong\tcount\n", "no data rows"),
        ("plays.json", "{}", "unknown file type"),
    ],
)
def test_unreadable_inputs_fail_with_the_file_named(spark, tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as info:
        kept, _, _ = clean(spark, str(path))
        kept.count()
    assert name in str(info.value)


def test_missing_parquet_column(spark, tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({C.USER_ID: ["a"], "plays": [1], C.TRACK_ID: ["x"]}), path)
    with pytest.raises(ValueError, match=r"train.parquet: missing column\(s\) \['count'\]"):
        clean(spark, str(path))


def test_detect_format():
    assert detect_format("/x/train_triplets.txt.gz") == "tsv"
    assert detect_format("/x/a.CSV") == "csv"
    assert detect_format("/x/a.parquet") == "parquet"


def _write_split(path, rows):
    path.write_text("".join(f"{u}\t{t}\t{c}\n" for u, t, c in rows))
    return str(path)


def test_ingest_samples_users_but_keeps_every_holdout_user(spark, tmp_path):
    train_rows = [(f"user{u}", f"T{t}", 1 + (u + t) % 4) for u in range(400) for t in range(3)]
    train = _write_split(tmp_path / "train.txt", train_rows)
    validation = _write_split(tmp_path / "validation.txt", [(f"user{u}", "T9", 2) for u in range(0, 40, 2)])
    test = _write_split(tmp_path / "test.txt", [(f"user{u}", "T8", 1) for u in range(1, 40, 2)])
    out = tmp_path / "out"
    args = dict(
        train=train,
        validation=validation,
        test=test,
        out_dir=str(out),
        sample_fraction=0.25,
        seed=3,
        max_reject_fraction=0.0,
        result=str(out / "r.json"),
    )
    report = ingest.run(spark, **args)
    kept_users = {r[C.USER_ID] for r in spark.read.parquet(str(out / "train")).select(C.USER_ID).distinct().collect()}
    holdout = {f"user{u}" for u in range(40)}
    assert holdout <= kept_users
    others = len(kept_users - holdout)
    assert 0.15 * 360 < others < 0.35 * 360
    assert report["holdout_users"] == 40 and report["train_users_before_sample"] == 400
    assert report["splits"]["train"]["users"] == len(kept_users)
    assert read_json(out / "r.json") == report
    again = ingest.run(spark, **args)  # a rerun overwrites the run-scoped output: same rows
    assert again["splits"]["train"]["rows_written"] == report["splits"]["train"]["rows_written"]


def test_ingest_fails_above_the_reject_threshold(spark, tmp_path):
    train = _write_split(tmp_path / "train.txt", [("u1", "T1", 1), ("u2", "T1", 0), ("u3", "T1", 1)])
    val = _write_split(tmp_path / "validation.txt", [("u1", "T2", 1)])
    test = _write_split(tmp_path / "test.txt", [("u3", "T2", 1)])
    with pytest.raises(ValueError, match=r"train.txt: 1 of 3 rows rejected \(33.33% > max_reject_fraction 10.00%\)"):
        ingest.run(
            spark,
            train=train,
            validation=val,
            test=test,
            out_dir=str(tmp_path / "o"),
            sample_fraction=1.0,
            seed=1,
            max_reject_fraction=0.1,
            result=str(tmp_path / "r.json"),
        )
