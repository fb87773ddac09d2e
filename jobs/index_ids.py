"""Index: map user and track ids to dense integers with StringIndexer fitted on train only.

Validation and test rows whose user or track never appears in train cannot be scored by a factor
model; they are skipped (``handleInvalid="skip"``) and counted per split. The fitted indexer is saved
so recommendations can be mapped back to the original ids.
"""

from __future__ import annotations

import argparse

from music_recsys import constants as C
from music_recsys.artifacts import write_json
from music_recsys.spark import get_spark


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
    report["n_users"] = len(indexer.labelsArray[0])
    report["n_items"] = len(indexer.labelsArray[1])
    write_json(result, report)
    return report


def main(**kwargs) -> dict:
    spark = get_spark("music_recsys.index")
    try:
        return run(spark, **kwargs)
    finally:
        spark.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ingest-dir", required=True, help="the ingest stage's output directory")
    p.add_argument("--out-dir", required=True, help="run-scoped output directory")
    p.add_argument("--result", required=True, help="path of the JSON result file")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(**vars(parse_args()))
