"""The run report's tables: columns from the metric catalogue, trials ordered by the run's selection metric."""

from __future__ import annotations

import json

from music_recsys.evaluation.catalogue import ALL_METRIC_NAMES, SEGMENT_METRIC_NAMES
from music_recsys.pipeline.report import write_report


def _row(trial_id, split, mpr, model="als", status="success"):
    metrics = dict.fromkeys(ALL_METRIC_NAMES, 0.25)
    return {
        "trial_id": trial_id,
        "split": split,
        "model": model,
        "status": status,
        "rank": 4 if model == "als" else None,
        "reg_param": 0.1 if model == "als" else None,
        "alpha": 1.0 if model == "als" else None,
        "transform": "none",
        "fit_seconds": 1.0,
        "n_users": 10,
        **metrics,
        "mpr": mpr,
        "coverage_at_k": 0.123456,
    }


def test_tables_follow_the_catalogue_and_the_selection_metric(tmp_path):
    rows = [
        _row("popularity", "validation", 0.30, model="popularity"),
        _row("worse", "validation", 0.20),
        _row("best", "validation", 0.10),
        _row("failed", "validation", None, status="failed"),
        _row("best", "test", 0.12),
        _row("popularity", "test", 0.31, model="popularity"),
    ]
    segments = [
        {
            "trial_id": t,
            "split": "test",
            "segment": 0,
            "name": "light",
            "min_history": 0,
            "max_history": None,
            "n_users": 10,
            **dict.fromkeys(SEGMENT_METRIC_NAMES, 0.5),
        }
        for t in ("best", "popularity")
    ]
    evaluation = {
        "rows": rows,
        "segments": segments,
        "k": 10,
        "exclude_seen": True,
        "selection_metric": "mpr",
        "selection_rule": "lowest validation mpr; ties by ndcg_at_k, then the last trial_id in sort order",
        "best_trial_id": "best",
    }
    ann = [{"k": 10, "metric": "exact", "n_trees": 0, "candidates": 10, "recall": 1.0, "qps": 100.0}]
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    point = {
        "found": False,
        "message": "no Annoy configuration reaches recall@10 >= 0.9",
        "best_recall": None,
        "exact_qps": 100.0,
        "exact_batched_qps": 900.0,
    }
    search = {
        "rows_path": str(tmp_path / "ann.json"),
        "operating_points": {"10": point},
        "n_items": 50,
        "n_queries": 5,
        "better_metric": "dot",
        "qps_at_target_by_metric": {"dot": None, "angular_ip": None},
        "max_recall_by_metric": {"dot": 0.5, "angular_ip": 0.4},
    }
    summary = write_report({"run_id": "r1", "run_dir": str(tmp_path / "run")}, evaluation, search)
    report = (tmp_path / "run" / "report" / "report.md").read_text().splitlines()

    best_point = report.index("## Best point and generalization")
    assert report[best_point + 2] == (
        "| model | split | MAP (top 10) | MAP@10 | precision@10 | NDCG@10 | recall@10 | graded NDCG@10 | MPR "
        "| coverage@10 | rec. popularity | users |"
    )
    assert report[best_point + 3] == "|---" * 12 + "|"
    # Accuracy to 4 places, the shares that describe the lists to 3.
    assert (
        "| best | test | 0.2500 | 0.2500 | 0.2500 | 0.2500 | 0.2500 | 0.2500 | 0.1200 | 0.123 | 0.250 | 10 |" in report
    )

    by_segment = report.index("## By listener history (test)")
    assert report[by_segment + 4] == (
        "| model | segment | users | MAP (top 10) | MAP@10 | precision@10 | NDCG@10 | recall@10 | graded NDCG@10 "
        "| MPR | rec. popularity |"
    )

    trials = report.index("## All trials (validation)")
    assert report[trials + 2] == "Best first by mpr, the run's selection metric."
    assert report[trials + 4] == (
        "| trial | rank | regParam | alpha | transform | status | MAP (top 10) | NDCG@10 | graded NDCG@10 | MPR "
        "| fit s |"
    )
    order = [line.split(" | ")[0].lstrip("| ") for line in report[trials + 6 : trials + 10]]
    assert order == ["best", "worse", "popularity", "failed"]  # lowest MPR first, no value last
    assert summary["best_test"] == {**dict.fromkeys(ALL_METRIC_NAMES, 0.25), "mpr": 0.12, "coverage_at_k": 0.123456}
