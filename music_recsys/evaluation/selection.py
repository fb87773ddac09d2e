"""Trial selection and aggregation: which grid point wins, and how per-segment sums become metrics.

The evaluate job (``jobs/evaluate.py``) only wires Spark to these: it scores every trial on validation,
``pick_best`` applies the selection rule, ``trials_for_test`` names the trials scored again on test, and
``summarise`` turns the per-segment sums of ``music_recsys.evaluation.scoring.score_batches`` rows into
overall and per-segment metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from music_recsys import constants as C
from music_recsys.evaluation.catalogue import ALL_METRIC_NAMES, METRIC_NAMES, SELECTION_METRICS, lower_is_better
from music_recsys.evaluation.scoring import COVERAGE_SEGMENT, USER_SUMS
from music_recsys.run_folders import read_json

SEGMENT_NAMES = ("light", "medium", "heavy")
# Metrics that are a mean over users of a per-user value (the rest are ratios of sums or catalogue-wide).
_USER_MEANS = (*METRIC_NAMES, "ndcg_graded_at_k")


def check_selection_metric(metric: str) -> str:
    """``metric`` if it may pick the best grid point, else a ValueError naming the choices."""
    if metric not in SELECTION_METRICS:
        raise ValueError(
            f"selection metric {metric!r} cannot pick the best grid point; choose from {list(SELECTION_METRICS)}"
        )
    return metric


def selection_rule(metric: str) -> str:
    """The rule ``pick_best`` applies, in words (the report and the evaluation result carry it)."""
    direction = "lowest" if lower_is_better(check_selection_metric(metric)) else "highest"
    return f"{direction} validation {metric}; ties by ndcg_at_k, then the last trial_id in sort order"


def pick_best(rows: list[dict[str, Any]], metric: str, transform: str | None = None) -> dict[str, Any] | None:
    """The selection rule (``selection_rule``) over successful ALS validation rows, optionally of one transform."""
    check_selection_metric(metric)
    scored = [
        r
        for r in rows
        if r["split"] == "validation"
        and r["model"] == "als"
        and r["status"] == "success"
        and r[metric] is not None
        and transform in (None, r["transform"])
    ]
    if not scored:
        return None
    sign = -1.0 if lower_is_better(metric) else 1.0
    return max(scored, key=lambda r: (sign * r[metric], r["ndcg_at_k"], r["trial_id"]))


def trials_for_test(rows: list[dict[str, Any]], transforms: Iterable[str], metric: str) -> set[str]:
    """Trials to score on test: the best point of each transform (the study's §5 table), which includes the
    overall best; empty when no trial succeeded."""
    picked = (pick_best(rows, metric, transform) for transform in sorted(set(transforms)))
    return {best["trial_id"] for best in picked if best is not None}


def load_trials(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's trials joined with their fit results; a missing result means the fit never ran."""
    trials = []
    for trial in plan["trials"]:
        result_path = Path(trial["result"])
        fit = (
            read_json(result_path)
            if result_path.exists()
            else {"status": "missing", "error": "fit task produced no result"}
        )
        trials.append(
            {
                **trial,
                "status": fit["status"],
                "fit_seconds": fit.get("fit_seconds"),
                "error": fit.get("error"),
            }
        )
    return trials


def popularity_trial() -> dict[str, Any]:
    """The popularity baseline as a trial: scored on both splits, never the best point."""
    return {
        "trial_id": C.POPULARITY_TRIAL_ID,
        "model": "popularity",
        "rank": None,
        "reg_param": None,
        "alpha": None,
        "transform": "none",
        "status": "success",
        "fit_seconds": 0.0,
        "error": None,
    }


def unscored_row(trial: dict[str, Any], label: dict[str, Any]) -> dict[str, Any]:
    """The validation row of a trial whose fit did not succeed: every metric None."""
    return {
        **trial,
        **label,
        **dict.fromkeys(ALL_METRIC_NAMES),
        "split": "validation",
        "n_users": None,
        "n_cold_users": None,
        "eval_seconds": None,
    }


def segment_labels(boundaries: list[int]) -> list[dict[str, Any]]:
    """Name and train-history range (tracks played) of each segment."""
    names = SEGMENT_NAMES if len(boundaries) == 2 else [f"segment {i + 1}" for i in range(len(boundaries) + 1)]
    lows = [0, *(b + 1 for b in boundaries)]
    highs = [*boundaries, None]
    return [
        {"segment": i, "name": names[i], "min_history": lo, "max_history": hi}
        for i, (lo, hi) in enumerate(zip(lows, highs, strict=True))
    ]


def _means(sums: dict[str, float], n_users: int) -> dict[str, float | None]:
    out: dict[str, float | None] = {name: sums[name] / n_users if n_users else None for name in _USER_MEANS}
    out["mpr"] = sums["mpr_num"] / sums["mpr_den"] if sums["mpr_den"] else None
    out["mean_rec_popularity"] = sums["rec_pop_sum"] / sums["n_recs"] if sums["n_recs"] else None
    return out


def summarise(groups: list[dict[str, Any]], n_items: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Overall metrics and per-segment metrics from the per-segment sums of ``score_batches`` rows."""
    total = dict.fromkeys(USER_SUMS, 0.0)
    n_users = n_cold = 0
    segments = []
    item_counts = np.zeros(n_items, dtype=np.int64)
    for group in groups:
        if group["segment"] == COVERAGE_SEGMENT:
            for counts in group["item_counts"]:
                item_counts += np.asarray(counts, dtype=np.int64)
            continue
        sums = {name: group[name] or 0.0 for name in USER_SUMS}
        for name in USER_SUMS:
            total[name] += sums[name]
        n_users += group["n_users"]
        n_cold += group["n_cold_users"]
        segments.append({"segment": group["segment"], "n_users": group["n_users"], **_means(sums, group["n_users"])})
    overall = {
        **_means(total, n_users),
        "coverage_at_k": float(np.count_nonzero(item_counts)) / n_items if n_items else None,
        "n_users": n_users,
        "n_cold_users": n_cold,
    }
    return overall, sorted(segments, key=lambda s: s["segment"])
