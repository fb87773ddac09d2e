"""The pages' figures read with one model and with fifty (issue #30): the test-MAP history's x-axis spans
the models' dates, not years around a single one; legends sit beside the axes, never over the lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from music_recsys.pipeline.report import search_figure
from music_recsys.ui.plots import map_history_figure, map_history_svg


def _model(i: int, status: str = "retired") -> dict:
    return {
        "model_version": f"v{i}", "status": status, "k": 500, "test_map": 0.1 + 0.001 * i,
        "popularity_test_map": 0.05, "logical_date": datetime(2026, 1, 5, 3, tzinfo=UTC) + timedelta(weeks=i),
    }  # fmt: skip


def _apart(fig, ax) -> bool:
    """Whether the legend lies outside the axes and inside the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend, axes, whole = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer), fig.bbox
    return not legend.overlaps(axes) and whole.x0 <= legend.x0 and legend.x1 <= whole.x1 + 1


def test_one_model_gets_days_around_its_date_not_years():
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig = map_history_figure([_model(0, "champion")])
    ax = fig.axes[0]
    low, high = (mdates.num2date(x) for x in ax.get_xlim())
    assert timedelta(days=1) <= high - low <= timedelta(days=14), (low, high)
    assert _apart(fig, ax) and ax.get_ylabel() == "test MAP (top 500)"
    plt.close(fig)
    svg = map_history_svg([_model(0, "champion")])
    assert "2026" in svg and not any(str(year) in svg for year in (2025, 2027, 2028, 2029))


def test_fifty_models_keep_a_readable_axis_and_legend():
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    models = [_model(i) for i in range(49)] + [_model(49, "champion")]
    fig = map_history_figure(models)
    ax = fig.axes[0]
    low, high = (mdates.num2date(x) for x in ax.get_xlim())
    assert low < models[0]["logical_date"] and models[-1]["logical_date"] < high < models[-1][
        "logical_date"
    ] + timedelta(weeks=5)
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert 3 <= len(ticks) <= 9
    assert _apart(fig, ax)
    plt.close(fig)


@pytest.mark.parametrize("trees", [(1, 5, 10, 30, 50, 100)])
def test_the_fast_search_legend_does_not_cover_its_lines(trees):
    import matplotlib.pyplot as plt

    exact = {"k": 50, "n_trees": 0, "candidates": 50, "recall": 1.0}
    rows = [{**exact, "metric": "exact", "qps": 2000.0}, {**exact, "metric": "exact_batched", "qps": 20000.0}]
    for metric in ("dot", "angular_ip"):
        for n in trees:
            for candidates in (50, 200):
                rows += [{"k": 50, "metric": metric, "n_trees": n, "candidates": candidates,
                          "recall": r, "qps": 10_000 * (1.1 - r)} for r in (0.5, 0.8, 0.95)]  # fmt: skip
    fig = search_figure(rows, 50)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == 2 * len(trees) * 2 + 2 and "annoy dot, 1 tree" in labels  # 26 entries; "1 tree"
    assert _apart(fig, ax)
    plt.close(fig)
