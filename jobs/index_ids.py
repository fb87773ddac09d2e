"""Index: map user and track ids to dense integers with StringIndexer fitted on train only.

Validation and test rows whose user or track never appears in train cannot be scored by a factor
model; they are skipped (``handleInvalid="skip"``) and counted per split. The fitted indexer is saved
so recommendations can be mapped back to the original ids.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from music_recsys import constants as C
from music_recsys.pipeline import job
from music_recsys.run_folders import write_json


def run(spark, ingest_dir: str, out_dir: str, result: str) -> dict:
    from pyspark.ml.feature import StringIndexer
    from pyspark.sql import functions as F

    frames = {split: spark.read.parquet(f"{ingest_dir}/{split}") for split in C.SPLITS}
    # frequencyDesc breaks ties alphabetically, so the same train data gives the same indices.
    indexer = StringIndexer(
        inputCols=[C.USER_ID, C.TRACK_ID],
        outputCols=[C.USER_IDX, C.ITEM_IDX],
        handleInvalid="skip",
        stringOrderType="frequencyDesc",
    ).fit(frames["train"])
    indexer.write().overwrite().save(f"{out_dir}/indexer")
    report: dict = {"splits": {}}
    for split, frame in frames.items():
        indexed = indexer.transform(frame).select(
            F.col(C.USER_IDX).cast("int"), F.col(C.ITEM_IDX).cast("int"), F.col(C.COUNT).cast("long")
        )
        indexed = indexed.repartition(4, C.USER_IDX).sortWithinPartitions(C.USER_IDX, C.ITEM_IDX)
        indexed.write.mode("overwrite").parquet(f"{out_dir}/{split}")
        rows_in = frame.count()
        rows_out = spark.read.parquet(f"{out_dir}/{split}").count()
        report["splits"][split] = {
            "rows_in": rows_in,
            "rows_indexed": rows_out,
            "rows_skipped": rows_in - rows_out,
        }
    users, tracks = indexer.labelsArray
    report["n_users"], report["n_items"] = len(users), len(tracks)
    report["labels"] = {
        "users": write_labels(users, Path(out_dir) / "labels" / "users.parquet"),
        "tracks": write_labels(tracks, Path(out_dir) / "labels" / "tracks.parquet"),
    }
    write_json(result, report)
    return report


def write_labels(labels: list[str], path: Path) -> str:
    """Index -> id as a one-column parquet file (row i is the id of index i), written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.table({"id": pa.array(labels, pa.string())}), tmp)
    tmp.replace(path)
    return str(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ingest-dir", required=True, help="the ingest stage's output directory")
    p.add_argument("--out-dir", required=True, help="run-scoped output directory")
    p.add_argument("--result", required=True, help="path of the JSON result file")
    return p.parse_args(argv)


if __name__ == "__main__":
    job.main(run, parse_args)
