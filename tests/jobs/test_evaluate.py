"""Evaluation bookkeeping: the selection rule and trials without results."""

from __future__ import annotations

import json

from jobs.evaluate import load_trials, pick_best


def _row(trial_id, map_, ndcg, transform="none", status="success", split="validation", model="als"):
    return {
        "trial_id": trial_id,
        "map": map_,
        "ndcg_at_k": ndcg,
        "transform": transform,
        "status": status,
        "split": split,
        "model": model,
    }


def test_best_by_map_then_ndcg_then_id():
    rows = [
        _row("popularity", 0.9, 0.9, model="popularity"),  # never the best ALS point
        _row("a", 0.2, 0.5),
        _row("b", 0.2, 0.6),  # MAP tie: NDCG decides
        _row("c", 0.3, 0.1, status="failed"),  # failures never win
        _row("d", 0.25, 0.1, split="test"),  # only validation counts
        _row("e", 0.1, 0.9, transform="log1p"),
    ]
    assert pick_best(rows)["trial_id"] == "b"
    assert pick_best(rows, "log1p")["trial_id"] == "e"
    assert pick_best(rows, "drop") is None
    assert pick_best([_row("x", 0.1, 0.1, status="failed")]) is None


def test_trials_without_a_result_are_missing(tmp_path):
    done = tmp_path / "done.json"
    done.write_text(json.dumps({"status": "success", "fit_seconds": 1.5}))
    failed = tmp_path / "failed.json"
    failed.write_text(json.dumps({"status": "failed", "error": "ValueError: boom"}))
    plan = {
        "trials": [
            {"trial_id": "a", "result": str(done)},
            {"trial_id": "b", "result": str(failed)},
            {"trial_id": "c", "result": str(tmp_path / "never.json")},
        ]
    }
    by_id = {t["trial_id"]: t for t in load_trials(plan)}
    assert by_id["a"]["status"] == "success" and by_id["a"]["fit_seconds"] == 1.5
    assert by_id["b"]["status"] == "failed" and by_id["b"]["error"] == "ValueError: boom"
    assert by_id["c"]["status"] == "missing" and "no result" in by_id["c"]["error"]
