"""The metric catalogue: one entry per metric, and every place that lists metrics derives from it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from music_recsys.evaluation.catalogue import (
    ACCURACY_METRIC_NAMES,
    ALL_METRIC_NAMES,
    METRIC_NAMES,
    METRICS,
    SEGMENT_METRIC_NAMES,
    SELECTION_METRICS,
    lower_is_better,
    metric,
    metrics_markdown,
    selection_choices_text,
)


def test_catalogue_entries_and_the_views_of_it():
    assert ALL_METRIC_NAMES == (
        "map",
        "map_at_k",
        "precision_at_k",
        "ndcg_at_k",
        "recall_at_k",
        "ndcg_graded_at_k",
        "mpr",
        "coverage_at_k",
        "mean_rec_popularity",
    )
    assert METRIC_NAMES == ("map", "map_at_k", "precision_at_k", "ndcg_at_k", "recall_at_k")
    assert SELECTION_METRICS == ("map", "ndcg_at_k", "ndcg_graded_at_k", "mpr")
    assert SEGMENT_METRIC_NAMES == tuple(n for n in ALL_METRIC_NAMES if n != "coverage_at_k")
    assert ACCURACY_METRIC_NAMES == ALL_METRIC_NAMES[:7]
    assert [m.name for m in METRICS if m.direction == "lower"] == ["mpr"]
    assert lower_is_better("mpr") and not lower_is_better("map")
    assert len({m.label for m in METRICS}) == len(METRICS)  # labels tell the columns apart
    with pytest.raises(ValueError, match=r"metric 'auc' is not in the catalogue; choose from \['map', "):
        metric("auc")


def test_metrics_markdown_renders_one_row_per_metric():
    lines = metrics_markdown().splitlines()
    assert lines[0] == "| metric | label | better | picks the best point | per segment | definition |"
    assert lines[1] == "|---|---|---|---|---|---|"
    assert len(lines) == 2 + len(METRICS)
    assert lines[2] == (
        "| `map` | MAP | higher | yes | yes | Spark RankingMetrics.meanAveragePrecision over the full "
        "recommendation list (not cut at k) |"
    )
    mpr = next(line for line in lines if line.startswith("| `mpr`"))
    assert "| MPR | lower | yes | yes |" in mpr
    coverage = next(line for line in lines if line.startswith("| `coverage_at_k`"))
    assert "| coverage@k | higher | no | no |" in coverage
    assert all(line.count("|") == 7 for line in lines)  # no definition breaks the table


def test_selection_choices_text_groups_by_direction():
    assert selection_choices_text() == "map, ndcg_at_k, ndcg_graded_at_k (higher is better) or mpr (lower is better)"


def test_param_enum_and_help_come_from_the_catalogue():
    from music_recsys.pipeline.config import RunConfig

    spec = next(s for s in RunConfig.param_specs() if s.name == "selection_metric")
    assert spec.schema["enum"] == list(SELECTION_METRICS)
    assert selection_choices_text() in spec.description
    assert spec.default in SELECTION_METRICS


def test_result_tables_have_a_column_per_catalogue_metric():
    from music_recsys.store.results import TABLES

    trials = TABLES["als_trials"].columns
    for m in METRICS:
        assert trials[m.name].comment == m.definition
    segments = TABLES["als_segments"].columns
    assert [n for n in ALL_METRIC_NAMES if n in segments] == list(SEGMENT_METRIC_NAMES)


def test_catalogue_imports_without_numpy():
    # The DAG's params read the catalogue at parse time, where numpy must not be imported.
    code = "import sys, music_recsys.evaluation.catalogue; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
