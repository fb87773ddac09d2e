"""bench/stage_replay.py: a replayed stage reads the original run's outputs and writes only under its
scratch folder; the default run is the newest that read the named data folder."""

from __future__ import annotations

import json
import os

from bench import stage_replay


def _plan(run, data):
    return {
        "ingest_args": ["--train", f"{data}/train.parquet", "--out-dir", f"{run}/ingest", "--result",
                        f"{run}/results/ingest.json"],
        "index_args": ["--ingest-dir", f"{run}/ingest", "--out-dir", f"{run}/index", "--result",
                       f"{run}/results/index.json"],
        "fit_kwargs": [{"application_args": ["--train", f"{run}/index/train", "--run-dir", str(run), "--max-iter",
                                             "10", "--result", f"{run}/results/fit_tasks/r.json"]}],
    }  # fmt: skip


def test_outputs_move_to_the_scratch_folder_and_inputs_stay(tmp_path):
    run, scratch, data = tmp_path / "runs" / "r1", tmp_path / "scratch", tmp_path / "study_1"
    run.mkdir(parents=True)
    (run / "plan.json").write_text(json.dumps(_plan(run, data)))
    assert stage_replay.stage_args("ingest", run, scratch) == [
        "--train", f"{data}/train.parquet", "--out-dir", f"{scratch}/ingest", "--result",
        f"{scratch}/results/ingest.json",
    ]  # fmt: skip
    assert stage_replay.stage_args("index", run, scratch)[:4] == [
        "--ingest-dir", f"{run}/ingest", "--out-dir", f"{scratch}/index",
    ]  # fmt: skip
    assert stage_replay.stage_args("fit", run, scratch) == [
        "--train", f"{run}/index/train", "--run-dir", str(scratch), "--max-iter", "10", "--result",
        f"{scratch}/results/fit_tasks/r.json",
    ]  # fmt: skip


def test_the_default_run_is_the_newest_that_read_the_data_folder(tmp_path):
    for name, folder, mtime in (("old", "study_1", 1000), ("new", "study_1", 2000), ("other", "study_0.2", 3000)):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "plan.json").write_text(json.dumps(_plan(run, tmp_path / folder)))
        os.utime(run, (mtime, mtime))
    assert stage_replay.newest_run(tmp_path, "study_1").name == "new"
    assert stage_replay.newest_run(tmp_path, "study_0.2").name == "other"
