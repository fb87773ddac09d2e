"""Trial selection and aggregation: the selection rule, trials without results, summing segments, segment labels."""

from __future__ import annotations

import json

import pytest

from music_recsys.evaluation.catalogue import ALL_METRIC_NAMES
from music_recsys.evaluation.scoring import COVERAGE_SEGMENT, USER_SUMS
from music_recsys.evaluation.selection import (
    load_trials,
    pick_best,
    segment_labels,
    selection_rule,
    summarise,
    trials_for_test,
    unscored_row,
)


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
    assert pick_best(rows, "map")["trial_id"] == "b"
    assert pick_best(rows, "map", transform="log1p")["trial_id"] == "e"
    assert pick_best(rows, "map", transform="drop") is None
    assert pick_best([_row("x", 0.1, 0.1, status="failed")], "map") is None


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


def _mpr_row(trial_id, mpr, ndcg, map_=0.0, status="success", split="validation", model="als"):
    return {**_row(trial_id, map_, ndcg, status=status, split=split, model=model), "mpr": mpr}


def test_best_by_mpr_is_the_lowest_then_ndcg_then_id():
    rows = [
        _mpr_row("popularity", 0.01, 0.9, model="popularity"),  # never the best ALS point
        _mpr_row("a", 0.20, 0.5, map_=0.9),  # best MAP, worse MPR
        _mpr_row("b", 0.10, 0.1),
        _mpr_row("c", 0.05, 0.9, status="failed"),  # failures never win
        _mpr_row("d", 0.02, 0.9, split="test"),  # only validation counts
        _mpr_row("e", None, 0.9),  # no metric: not a candidate
    ]
    assert pick_best(rows, "mpr")["trial_id"] == "b"
    assert pick_best(rows, "map")["trial_id"] == "a"
    # MPR tie: the higher NDCG@k wins.
    tied = [*rows, _mpr_row("f", 0.10, 0.3)]
    assert pick_best(tied, "mpr")["trial_id"] == "f"
    # MPR and NDCG tie: trial id decides; the rule takes the maximum of the key, so the larger id wins.
    full_tie = [*tied, _mpr_row("g", 0.10, 0.3), _mpr_row("ab", 0.10, 0.3)]
    assert pick_best(full_tie, "mpr")["trial_id"] == "g"
    assert pick_best(list(reversed(full_tie)), "mpr")["trial_id"] == "g"


def _sums(**values):
    return {**dict.fromkeys(USER_SUMS, 0.0), **values}


def test_summarise_forms_means_and_ratios_from_segment_sums():
    groups = [
        # Given out of order: segments come back sorted.
        {
            "segment": 1,
            "n_users": 4,
            "n_cold_users": 0,
            "item_counts": [],
            **_sums(map=1.2, ndcg_at_k=2.0, ndcg_graded_at_k=1.0, mpr_num=1.0, mpr_den=10.0, rec_pop_sum=0.5, n_recs=4),
        },
        {
            "segment": COVERAGE_SEGMENT,
            "n_users": 2,  # the per-batch coverage rows: never users
            "n_cold_users": 0,
            "item_counts": [[1, 0, 0, 2, 0], [0, 0, 0, 1, 0]],
            **_sums(),
        },
        {
            "segment": 0,
            "n_users": 2,
            "n_cold_users": 1,
            "item_counts": [],
            **_sums(
                map=0.6, ndcg_at_k=0.4, ndcg_graded_at_k=None, mpr_num=3.0, mpr_den=10.0, rec_pop_sum=1.5, n_recs=4
            ),
        },
    ]
    overall, segments = summarise(groups, n_items=5)
    # Users 4 + 2 = 6: map (1.2 + 0.6) / 6 = 0.3; ndcg (2.0 + 0.4) / 6 = 0.4; graded (1.0 + None -> 0) / 6.
    assert overall["n_users"] == 6 and overall["n_cold_users"] == 1
    assert overall["map"] == pytest.approx(0.3)
    assert overall["ndcg_at_k"] == pytest.approx(0.4)
    assert overall["ndcg_graded_at_k"] == pytest.approx(1 / 6)
    assert overall["precision_at_k"] == 0.0
    # mpr = sum num / sum den = (1 + 3) / (10 + 10) = 0.2, not the mean of 0.1 and 0.3 per user count.
    assert overall["mpr"] == pytest.approx(0.2)
    # mean_rec_popularity = (0.5 + 1.5) / (4 + 4) = 0.25.
    assert overall["mean_rec_popularity"] == pytest.approx(0.25)
    # item counts [1, 0, 0, 3, 0]: 2 of 5 items recommended -> 0.4.
    assert overall["coverage_at_k"] == pytest.approx(0.4)

    assert [s["segment"] for s in segments] == [0, 1]
    light, medium = segments
    assert light["n_users"] == 2 and medium["n_users"] == 4
    assert light["map"] == pytest.approx(0.3) and medium["map"] == pytest.approx(0.3)
    assert light["ndcg_at_k"] == pytest.approx(0.2) and medium["ndcg_at_k"] == pytest.approx(0.5)
    assert light["mpr"] == pytest.approx(0.3) and medium["mpr"] == pytest.approx(0.1)
    assert light["mean_rec_popularity"] == pytest.approx(0.375) and medium["mean_rec_popularity"] == pytest.approx(
        0.125
    )


def test_summarise_without_held_out_plays_or_recommendations_gives_none():
    group = {"segment": 0, "n_users": 1, "n_cold_users": 1, "item_counts": [], **_sums()}
    overall, _ = summarise([group], n_items=3)
    assert overall["mpr"] is None and overall["mean_rec_popularity"] is None
    assert overall["coverage_at_k"] == 0.0
    assert overall["map"] == 0.0


def test_segment_labels_names_and_ranges():
    assert segment_labels([3, 6]) == [
        {"segment": 0, "name": "light", "min_history": 0, "max_history": 3},
        {"segment": 1, "name": "medium", "min_history": 4, "max_history": 6},
        {"segment": 2, "name": "heavy", "min_history": 7, "max_history": None},
    ]
    assert segment_labels([1]) == [
        {"segment": 0, "name": "segment 1", "min_history": 0, "max_history": 1},
        {"segment": 1, "name": "segment 2", "min_history": 2, "max_history": None},
    ]
    assert segment_labels([]) == [{"segment": 0, "name": "segment 1", "min_history": 0, "max_history": None}]


def test_trials_for_test_are_the_best_of_each_transform():
    rows = [
        _row("a", 0.2, 0.5),
        _row("b", 0.3, 0.5),  # best overall, transform none
        _row("c", 0.1, 0.5, transform="log1p"),  # best (only) log1p point
        _row("d", 0.9, 0.9, transform="drop", status="failed"),  # drop has no successful point
    ]
    assert trials_for_test(rows, ["none", "log1p", "drop", "none"], "map") == {"b", "c"}
    assert trials_for_test([_row("x", 0.1, 0.1, status="failed")], ["none"], "map") == set()


def test_selection_rule_names_the_direction_and_refuses_other_metrics():
    assert selection_rule("mpr").startswith("lowest validation mpr;")
    assert selection_rule("map").startswith("highest validation map;")
    # coverage_at_k is in the catalogue but may not pick the best point.
    with pytest.raises(
        ValueError, match=r"'coverage_at_k' cannot pick .*\['map', 'ndcg_at_k', 'ndcg_graded_at_k', 'mpr'\]"
    ):
        selection_rule("coverage_at_k")
    with pytest.raises(ValueError, match="'auc' cannot pick"):
        pick_best([_row("a", 0.2, 0.5)], "auc")


def test_unscored_row_has_every_catalogue_metric_as_none():
    row = unscored_row({"trial_id": "a", "status": "failed"}, {"k": 10, "exclude_seen": True})
    for name in ALL_METRIC_NAMES:
        assert name in row and row[name] is None
    assert row["split"] == "validation" and row["k"] == 10 and row["status"] == "failed"
