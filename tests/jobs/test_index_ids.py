"""Index: ids fitted on train only; validation/test rows with unseen users or tracks skipped and counted."""

from __future__ import annotations

import pytest

from jobs import index_ids
from music_recsys import constants as C

pytestmark = pytest.mark.spark


def test_unseen_ids_are_skipped_and_counted(spark, tmp_path):
    ingest = tmp_path / "ingest"
    frames = {
        "train": [("u1", "T1", 3), ("u1", "T2", 1), ("u2", "T1", 2), ("u3", "T3", 1)],
        "validation": [("u1", "T3", 1), ("u9", "T1", 4), ("u2", "T9", 1)],  # unseen user, unseen track
        "test": [("u3", "T1", 2)],
    }
    for split, rows in frames.items():
        spark.createDataFrame(rows, f"{C.USER_ID} string, {C.TRACK_ID} string, {C.COUNT} long").write.parquet(
            str(ingest / split)
        )
    report = index_ids.run(
        spark, ingest_dir=str(ingest), out_dir=str(tmp_path / "index"), result=str(tmp_path / "index.json")
    )
    assert report["n_users"] == 3 and report["n_items"] == 3
    assert report["splits"]["validation"] == {"rows_in": 3, "rows_indexed": 1, "rows_skipped": 2}
    assert report["splits"]["test"]["rows_skipped"] == 0
    train = spark.read.parquet(str(tmp_path / "index" / "train")).collect()
    # frequencyDesc: T1 (2 users) is item 0; u1 (2 rows) is user 0; ties broken alphabetically.
    by_pair = {(r[C.USER_IDX], r[C.ITEM_IDX]): r[C.COUNT] for r in train}
    assert by_pair[(0, 0)] == 3 and by_pair[(1, 0)] == 2
    assert sorted(by_pair) == [(0, 0), (0, 1), (1, 0), (2, 2)]
