"""Fit: implicit-feedback ALS for one grid point (or several, in one Spark application); save factors.

For each grid point writes ``<run-dir>/trials/<trial id>/user_factors`` and ``item_factors`` (parquet:
id, features), ``item_factors.npy`` (a dense float32 matrix, row = item index; items the transform
removed from train have zero rows) for evaluation and the search stage, and
``<run-dir>/results/fit/<trial id>.json`` (status, fit seconds, the digest of its inputs, or the error). A
retry keeps a point fitted by an earlier attempt only when that attempt's inputs digest matches (a run
cleared and re-run on changed data fits again).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from music_recsys import constants as C
from music_recsys.data.fingerprint import data_fingerprint, digest
from music_recsys.evaluation.screening import group_items, screen_metrics
from music_recsys.model.als import apply_transform, build_als
from music_recsys.model.factors import dense_factors
from music_recsys.pipeline import job
from music_recsys.pipeline.config import TrialSpec
from music_recsys.pipeline.job import InputError
from music_recsys.pipeline.spark import default_parallelism, set_checkpoint_dir
from music_recsys.run_folders import RunLayout, read_json, save_npy, write_json


def trial_params(spec: TrialSpec, drop_threshold: int, max_iter: int, seed: int, nonnegative: bool) -> dict:
    """Everything that shapes one grid point's factors besides the data."""
    return {**spec.as_dict(), "drop_threshold": drop_threshold, "max_iter": max_iter, "seed": seed,
            "nonnegative": nonnegative}  # fmt: skip


def fit_trial(
    spark,
    indexed,
    shape: tuple[int, int],
    spec: TrialSpec,
    layout: RunLayout,
    drop_threshold: int,
    max_iter: int,
    seed: int,
    num_blocks: int,
    nonnegative: bool,
    data: str,
    screening: Screening | None = None,
) -> dict:
    """Fit one grid point and save its factors; write its result JSON (also when it fails). ``data`` is the
    digest of the training data (``training_data_digest``); with ``screening`` (the adaptive search's cheaper
    rounds) the fit also scores itself on validation."""
    trial_id = spec.trial_id
    max_iter = spec.max_iter or max_iter
    params = trial_params(spec, drop_threshold, max_iter, seed, nonnegative)
    if screening is not None:
        params["user_fraction"] = screening.user_fraction
    params["inputs"] = digest(data, params)
    out_dir = layout.trial_dir(trial_id)
    result = layout.trial_result(trial_id)
    set_checkpoint_dir(spark, str(layout.trial_checkpoints(trial_id)))
    ratings = None
    try:
        ratings = apply_transform(indexed, spec.transform, drop_threshold).cache()
        n_ratings = ratings.count()
        if n_ratings == 0:
            raise InputError(
                f"transform {spec.transform!r} with drop_threshold={drop_threshold} leaves no training rows"
            )
        started = time.perf_counter()
        als = build_als(spec.rank, spec.reg_param, spec.alpha, max_iter, seed, num_blocks, nonnegative=nonnegative)
        model = als.fit(ratings)
        # ALS's final factors are persisted as it ends; collecting the items (all we need here) times it.
        item_rows = model.itemFactors.collect()
        fit_seconds = time.perf_counter() - started
        model.userFactors.write.mode("overwrite").parquet(str(out_dir / "user_factors"))
        model.itemFactors.write.mode("overwrite").parquet(str(out_dir / "item_factors"))
        n_users, n_items = shape
        ids = np.fromiter((row["id"] for row in item_rows), dtype=np.int64, count=len(item_rows))
        features = np.array([row["features"] for row in item_rows], dtype=np.float32).reshape(-1, spec.rank)
        save_npy(out_dir / "item_factors.npy", dense_factors(ids, features, n_items, spec.rank))
        report = {
            **params,
            "status": "success",
            "fit_seconds": fit_seconds,
            "n_ratings": n_ratings,
            "n_users": n_users,
            "n_items": n_items,
            "items_with_factors": len(item_rows),
            "num_blocks": num_blocks,
            "out_dir": str(out_dir),
        }
        if screening is not None:
            from pyspark.sql import functions as F

            # F.col, not model.userFactors.id: on Spark Connect each userFactors call is a new DataFrame.
            user_rows = model.userFactors.where(F.col("id").isin(screening.user_ids)).collect()
            user_ids = np.array([row["id"] for row in user_rows], dtype=np.int64)
            user_features = np.array([row["features"] for row in user_rows], dtype=np.float32).reshape(-1, spec.rank)
            item_dense = dense_factors(ids, features, n_items, spec.rank)
            report["validation"] = screen_metrics(
                screening.truth, screening.seen, user_ids, user_features, item_dense, screening.k,
                screening.exclude_seen,
            )  # fmt: skip
    except Exception as exc:
        # Record why this grid point failed so evaluation can label it.
        report = {**params, **job.failure_result(exc)}
    finally:
        if ratings is not None:
            ratings.unpersist()
    write_json(result, report)
    return report


@dataclass(frozen=True)
class Screening:
    """A screening round's settings and what it scores against: validation truth and train history."""

    user_fraction: float
    k: int
    exclude_seen: bool
    truth: dict
    seen: dict

    @property
    def user_ids(self) -> list[int]:
        return sorted(self.truth)


def screening_inputs(train: str, user_fraction: float, k: int, exclude_seen: bool) -> Screening:
    """Validation truth (``<index dir>/validation``) and every validation user's train items, read on the driver."""
    import pyarrow.dataset as ds

    def columns(path: Path, names: list[str]) -> list[np.ndarray]:
        table = ds.dataset(str(path), format="parquet").to_table(columns=names)
        return [table[name].to_numpy() for name in names]

    users, items, counts = columns(Path(train).parent / "validation", [C.USER_IDX, C.ITEM_IDX, C.COUNT])
    truth = group_items(users, items, counts)
    train_users, train_items = columns(Path(train), [C.USER_IDX, C.ITEM_IDX])
    keep = np.isin(train_users, np.fromiter(truth, dtype=np.int64))
    seen = group_items(train_users[keep], train_items[keep])
    return Screening(user_fraction, k, exclude_seen, truth, seen)


def sample_users(indexed, screening: Screening, seed: int):
    """The validation users' rows and about ``user_fraction`` of the other users' (a seeded hash of the user
    index, so every point of a round fits the same users)."""
    from pyspark.sql import functions as F

    if screening.user_fraction >= 1.0:
        return indexed
    bucket = F.abs(F.hash(F.col(C.USER_IDX), F.lit(seed))) % 10_000
    held_out = F.col(C.USER_IDX).isin(screening.user_ids)
    return indexed.where(held_out | (bucket < int(round(screening.user_fraction * 10_000))))


def index_shape(train: str) -> tuple[int, int]:
    """Users and tracks of the index (``<index dir>/train``'s sibling ``labels/``): the factor matrices' rows."""
    import pyarrow.parquet as pq

    labels = Path(train).parent / "labels"
    return tuple(pq.read_metadata(labels / f"{key}.parquet").num_rows for key in ("users", "tracks"))


def training_data_digest(layout: RunLayout, train: str) -> str:
    """What the fit reads, as a digest: the content fingerprint of the run's ingest (rows and checksums per
    split, ``music_recsys.data.fingerprint``) and the indexed train files as written."""
    ingest = layout.stage_result("ingest")
    content = data_fingerprint(read_json(ingest))["hash"] if ingest.exists() else None
    files = sorted((p.name, p.stat().st_size) for p in Path(train).glob("*.parquet"))
    return digest(content, files)


def earlier_success(layout: RunLayout, spec: TrialSpec, inputs: str) -> dict | None:
    """The result of an earlier attempt of the same run that already fitted this grid point from the same
    inputs (digest ``inputs``), if any."""
    path = layout.trial_result(spec.trial_id)
    if not path.exists() or not (layout.trial_dir(spec.trial_id) / "item_factors.npy").exists():
        return None
    report = read_json(path)
    return report if report.get("status") == "success" and report.get("inputs") == inputs else None


def blas_in_use(spark) -> str | None:
    """The BLAS class Spark's ALS calls in this application's driver JVM (where a local master fits), as
    ``RECSYS_NATIVE_BLAS_MIN_RANK`` chose it; None on Spark Connect, where the server's JVM decides."""
    from music_recsys.pipeline.install_check import spark_blas_classes

    try:
        jvm = spark._jvm
    except Exception:  # a Connect session has no JVM of its own (PySparkAttributeError)
        return None
    return spark_blas_classes(jvm)[0] if jvm is not None else None


def run(
    spark,
    train: str,
    run_dir: str,
    trials: list[str],
    drop_threshold: int,
    max_iter: int,
    seed: int,
    result: str,
    nonnegative: bool,
    num_blocks: int = 0,
    user_fraction: float = 1.0,
    score_k: int = 0,
    keep_seen: bool = False,
) -> dict:
    """Fit every given grid point in this one Spark session, reading the indexed data once.

    A point that fails is recorded and the others still run; the job then fails, and a retry fits only
    the points without factors (finished points of the same run are kept, not refitted)."""
    layout = RunLayout(run_dir)
    specs = [TrialSpec.parse(text) for text in trials]
    indexed = spark.read.parquet(train)
    screening = screening_inputs(train, user_fraction, score_k, not keep_seen) if score_k else None
    if screening is not None:
        indexed = sample_users(indexed, screening, seed)
    if len(specs) > 1 or screening is not None:  # read once for every point of this task
        indexed = indexed.cache()
    shape = index_shape(train)
    # 0 = one ALS block per core Spark gives the job (local: the machine's cores; cluster: executor cores).
    num_blocks = num_blocks or default_parallelism(spark)
    summary: dict = {"trials": {}, "kept_from_earlier_attempt": [], "failed": [], "blas": blas_in_use(spark)}
    data = training_data_digest(layout, train)
    try:
        for spec in specs:
            params = trial_params(spec, drop_threshold, spec.max_iter or max_iter, seed, nonnegative)
            if screening is not None:
                params["user_fraction"] = screening.user_fraction
            if (report := earlier_success(layout, spec, digest(data, params))) is not None:
                summary["kept_from_earlier_attempt"].append(spec.trial_id)
            else:
                report = fit_trial(
                    spark, indexed, shape, spec, layout, drop_threshold, max_iter, seed, num_blocks, nonnegative, data,
                    screening,
                )  # fmt: skip
            summary["trials"][spec.trial_id] = {
                key: report.get(key)
                for key in ("status", "fit_seconds", "n_ratings", "error", "retryable", "validation")
            }
            if report["status"] != "success":
                summary["failed"].append(spec.trial_id)
    finally:
        indexed.unpersist()
    write_json(result, summary)
    if summary["failed"]:
        errors = {t: summary["trials"][t]["error"] for t in summary["failed"]}
        message = f"{len(errors)} of {len(specs)} grid points failed: {errors}"
        if all(summary["trials"][t]["retryable"] is False for t in summary["failed"]):
            raise InputError(message)  # a retry would refit nothing that can succeed
        raise RuntimeError(message)
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True, help="indexed train parquet (user_idx, item_idx, count)")
    p.add_argument("--run-dir", required=True, help="run directory: factors go to trials/<trial id>/")
    p.add_argument(
        "--trial",
        dest="trials",
        action="append",
        required=True,
        metavar="RANK,REG_PARAM,ALPHA,TRANSFORM[,MAX_ITER,STAGE]",
        help="a grid point, e.g. 10,0.1,1.0,log1p (or with its own iterations and search stage, "
        "64,0.5,10.0,log1p,12,s1); repeat to fit several in this one Spark application",
    )
    p.add_argument("--drop-threshold", type=int, required=True, help="drop counts <= this for drop transforms")
    p.add_argument("--max-iter", type=int, required=True, help="ALS iterations")
    p.add_argument("--seed", type=int, required=True, help="ALS seed")
    p.add_argument(
        "--nonnegative",
        action=argparse.BooleanOptionalAction,
        required=True,
        help="non-negative factors (NNLS, as in the study); --no-nonnegative: unconstrained Cholesky solves",
    )
    p.add_argument(
        "--num-blocks",
        type=int,
        default=0,
        help="ALS user and item blocks; 0 = Spark's default parallelism (one per core)",
    )
    p.add_argument(
        "--user-fraction",
        type=float,
        default=1.0,
        help="adaptive search screening: fit on the validation users and about this share of the other users",
    )
    p.add_argument(
        "--score-k",
        type=int,
        default=0,
        help="adaptive search screening: also score each point's validation metrics at this k (0 = do not)",
    )
    p.add_argument("--keep-seen", action="store_true", help="with --score-k: keep train items in the lists")
    p.add_argument("--result", required=True, help="path of this task's JSON summary")
    return p.parse_args(argv)


if __name__ == "__main__":
    job.main(run, parse_args)
