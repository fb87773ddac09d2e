"""The metric catalogue: each evaluation metric's name, definition, direction and label, stated once.

The results store's columns, the report's tables, the model card, ``selection_metric``'s choices, the
evaluate CLI and docs/metrics.md (``metrics_markdown``) derive from ``METRICS``. No numpy here: the DAG's
params import it at parse time. The metrics are computed in ``music_recsys.evaluation.metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Metric:
    """One evaluation metric: its column name, what it measures, which way is better, how tables label it."""

    name: str  # column in the results store, key in every result row
    label: str  # heading in the report's tables
    definition: str  # the store's column comment and the docs' metric table
    direction: Literal["higher", "lower", "neither"]  # which way is better
    selectable: bool  # may pick the best grid point (``selection_metric``)
    per_segment: bool  # also reported per segment of users by train history length
    spark: bool  # one of Spark RankingMetrics' metrics (held to Spark by the parity tests)
    accuracy: bool = True  # scores lists against held-out plays (False: describes the lists; not on the card)

    def label_at(self, k: int | None) -> str:
        """The label with its k: ``precision@500``; ``MAP (top 500)`` for MAP over the whole top-k list.
        Numbers measured at different k are not comparable, so every table says which."""
        if k is None:
            return self.label
        if "@k" in self.label:
            return self.label.replace("@k", f"@{k}")
        return f"{self.label} (top {k})" if self.accuracy and self.name == "map" else self.label


# The catalogue: every metric a scored row carries, in column order. Result columns, report tables, the
# model card, ``selection_metric``'s choices and docs/metrics.md derive from it.
METRICS: tuple[Metric, ...] = (
    Metric(
        "map",
        "MAP",
        "Spark RankingMetrics.meanAveragePrecision over the full recommendation list (not cut at k)",
        "higher",
        selectable=True,
        per_segment=True,
        spark=True,
    ),
    Metric(
        "map_at_k",
        "MAP@k",
        "Spark RankingMetrics.meanAveragePrecisionAt(k)",
        "higher",
        selectable=False,
        per_segment=True,
        spark=True,
    ),
    Metric(
        "precision_at_k",
        "precision@k",
        "Spark RankingMetrics.precisionAt(k)",
        "higher",
        selectable=False,
        per_segment=True,
        spark=True,
    ),
    Metric(
        "ndcg_at_k",
        "NDCG@k",
        "Spark RankingMetrics.ndcgAt(k), binary relevance",
        "higher",
        selectable=True,
        per_segment=True,
        spark=True,
    ),
    Metric(
        "recall_at_k",
        "recall@k",
        "Spark RankingMetrics.recallAt(k)",
        "higher",
        selectable=False,
        per_segment=True,
        spark=True,
    ),
    Metric(
        "ndcg_graded_at_k",
        "graded NDCG@k",
        "NDCG@k, gain log(1 + held-out count), discount 1/log2(position + 1)",
        "higher",
        selectable=True,
        per_segment=True,
        spark=False,
    ),
    Metric(
        "mpr",
        "MPR",
        "expected percentile rank, weighted by held-out count; 0 perfect, 0.5 random (lower is better)",
        "lower",
        selectable=True,
        per_segment=True,
        spark=False,
    ),
    Metric(
        "coverage_at_k",
        "coverage@k",
        "share of tracks in at least one user's top k",
        "higher",
        selectable=False,
        per_segment=False,  # a property of all lists together, not of a user's
        spark=False,
        accuracy=False,
    ),
    Metric(
        "mean_rec_popularity",
        "rec. popularity",
        "mean train-popularity percentile of recommended tracks (1 = most played)",
        # Describes the lists rather than scoring them: lower is less popularity bias, not more accuracy.
        "neither",
        selectable=False,
        per_segment=True,
        spark=False,
        accuracy=False,
    ),
)
METRIC_BY_NAME = {m.name: m for m in METRICS}
# What a model's card shows, in the approval form and on the UI's champion card.
CARD_METRICS = ("map", "precision_at_k", "ndcg_at_k", "mpr")
ALL_METRIC_NAMES = tuple(m.name for m in METRICS)
# Spark RankingMetrics' five, in Spark's terms (what the reference implementation in the tests returns).
METRIC_NAMES = tuple(m.name for m in METRICS if m.spark)
SEGMENT_METRIC_NAMES = tuple(m.name for m in METRICS if m.per_segment)
ACCURACY_METRIC_NAMES = tuple(m.name for m in METRICS if m.accuracy)
SELECTION_METRICS = tuple(m.name for m in METRICS if m.selectable)
METRIC_DEFINITIONS = {m.name: m.definition for m in METRICS}


def metric(name: str) -> Metric:
    """The catalogue entry of ``name``; a ValueError naming the choices for an unknown one."""
    try:
        return METRIC_BY_NAME[name]
    except KeyError:
        raise ValueError(f"metric {name!r} is not in the catalogue; choose from {list(ALL_METRIC_NAMES)}") from None


def lower_is_better(name: str) -> bool:
    return metric(name).direction == "lower"


def metrics_markdown() -> str:
    """The catalogue as a markdown table (docs/metrics.md holds it between its ``metrics`` markers)."""
    lines = [
        "| metric | label | better | picks the best point | per segment | definition |",
        "|---|---|---|---|---|---|",
    ]
    for m in METRICS:
        definition = m.definition.replace("|", r"\|")  # a pipe would end the cell
        lines.append(
            f"| `{m.name}` | {m.label} | {m.direction} | {'yes' if m.selectable else 'no'} | "
            f"{'yes' if m.per_segment else 'no'} | {definition} |"
        )
    return "\n".join(lines) + "\n"


def selection_choices_text() -> str:
    """The selectable metrics grouped by direction, for help texts: ``a, b (higher is better) or c (lower ...)``."""
    groups = []
    for direction in ("higher", "lower"):
        names = [m.name for m in METRICS if m.selectable and m.direction == direction]
        if names:
            groups.append(f"{', '.join(names)} ({direction} is better)")
    return " or ".join(groups)


def format_value(value: Any, digits: int = 4) -> str:
    """A figure as the report, the approval form and the UI show it: a float to ``digits`` places, "—"
    for a missing one, anything else as it is."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
