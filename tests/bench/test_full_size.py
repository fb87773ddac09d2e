"""bench/full_size.py's own arithmetic: per-task peaks from the RSS samples, the driver-memory rule, the
indexing of a generated split (the ALS comparison's input) and the report's table."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from bench.full_size import Samples, driver_memory, indexed_splits, parse_args, report
from music_recsys.data.generate import main as generate_main


def test_a_task_peak_is_the_highest_sample_inside_its_window():
    samples = Samples(
        times=[10.0, 11.0, 12.0, 13.0, 14.0],
        own=[100, 300, 200, 900, 50],
        children=[0, 5000, 7000, 0, 0],
        largest_java=[0, 4000, 6000, 0, 0],
    )
    assert samples.peak(10.5, 12.5) == {"own": 300, "children": 7000, "java": 6000}
    assert samples.peak(13.0, 14.0) == {"own": 900, "children": 0, "java": 0}  # the window's ends count
    assert samples.peak(20.0, 30.0) == {"own": None, "children": None, "java": None}  # shorter than the interval


def test_driver_memory_follows_the_measured_heaps():
    # bench/stage_replay.py at 47.8M rows: the fit died at 2g and 4g, ran at 8g; 2g carried 10M rows.
    assert driver_memory(0) == driver_memory(9_600_000) == driver_memory(10_000_000) == "2g"
    assert driver_memory(48_000_000) == "8g"
    assert driver_memory(29_000_000) == "5g"  # on the line between, rounded up


def test_scale_outside_the_study_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--scale", "2"])
    assert "--scale 2.0: give a fraction of the study's size in (0, 1]" in capsys.readouterr().err
    assert parse_args(["--scale", "0.001", "--als-scales"]).als_scales == []


def test_indexed_splits_are_the_generated_rows_as_indices(tmp_path):
    manifest = generate_main(out=str(tmp_path), users=300, items=120, holdout_users=40, seed=2)
    tu, ti, counts, n_users, n_items, vu, vi = indexed_splits(tmp_path)
    train = manifest["stats"]["train"]
    assert (len(tu), n_users, n_items) == (train["rows"], train["users"], train["tracks"])
    assert tu.min() == 0 and tu.max() == n_users - 1 and ti.max() == n_items - 1
    assert counts.sum() == pytest.approx(train["mean"] * train["rows"])
    # Each (user, track) pair once in train; validation rows are hidden plays, so never in train.
    pairs = tu.astype(np.int64) * n_items + ti
    assert len(np.unique(pairs)) == len(pairs)
    assert not np.isin(vu.astype(np.int64) * n_items + vi, pairs).any()
    assert 0 < len(vu) <= manifest["stats"]["validation"]["rows"]
    assert 15 <= len(np.unique(vu)) <= 20  # the 20 validation users, less any whose hidden tracks train lacks


def test_the_report_has_a_row_per_task_with_cost_per_train_row():
    args = argparse.Namespace(
        scale=0.5, driver_memory="7g", k=500, annoy_trees=[10], annoy_search_k=[10000], annoy_max_queries=500,
        batch_k=50, sample_seconds=0.5, clients=16, serve_seconds=30, serve_k=10,
    )  # fmt: skip
    data = {
        "config": {"users": 550_000, "items": 192_500, "holdout_users": 5000},
        "stats": {"train": {"rows": 2_000_000}},
        "bytes": {"train": 300 * 10**6, "validation": 10**6, "test": 10**6},
        "generated_now": True,
        "wall_seconds": 120.4,
        "peak_rss": 1.5e9,
    }
    als = [{"rows": 2_000_000, "users": 550_000, "items": 192_500, "threads": 2, "spark_s": 40.0, "cg_s": 10.0,
            "cholesky_s": 20.0, "spark_map": 0.01, "cg_map": 0.011, "cholesky_map": 0.012}]  # fmt: skip
    text = report(args, data, None, None, als)
    assert "550,000 users, 192,500 tracks, 2,000,000 train rows, 5,000 hold-out users, 302.0 MB" in text
    assert "generated in 120 s at a peak RSS of 1,500 MB" in text
    assert "| 2,000,000 | 550,000 × 192,500 | 40.0 | 10.0 | 20.0 | **4.0x** | **2.0x** |" in text


def test_the_report_of_a_run_gives_cost_per_row_and_marks_unsampled_tasks(tmp_path):
    (tmp_path / "recommendations").mkdir()
    (tmp_path / "factors.npy").write_bytes(b"x" * 1_500_000)
    (tmp_path / "recommendations" / "part-0.parquet").write_bytes(b"x" * 500_000)
    args = parse_args(["--scale", "0.5", "--driver-memory", "7g"])
    data = {
        "config": {"users": 550_000, "items": 192_500, "holdout_users": 5000},
        "stats": {"train": {"rows": 2_000_000}},
        "bytes": {"train": 10**6},
        "generated_now": False,
    }
    run = {
        "train_rows": 2_000_000,
        "total_seconds": 100.0,
        "samples": 200,
        "stages": [
            {"task": "fit", "seconds": 20.0, "own": 300e6, "children": 2e9, "java": 1.5e9},
            {"task": "record", "seconds": 0.1, "own": None, "children": None, "java": None},
        ],
        "summary": {
            "model": {"path": str(tmp_path), "version": "v1"},
            "best_validation": {"map": 0.1},
            "popularity_validation": {"map": 0.05},
        },
        "batch": {"rows": 27_500_000},
    }
    text = report(args, data, run, None, [])
    assert "| fit | 20.0 | 10.00 | 300 | 2,000 (1,500) |" in text
    assert "| record | 0.1 | 0.05 | — | — (—) |" in text
    assert "Bundle v1: 2.0 MB, of which batch recommendations 0.5 MB (27,500,000 rows)." in text
    assert "(generated earlier)" in text and "driver memory 7g" in text
