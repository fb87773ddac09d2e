"""Figures of the UI pages: the registry's test MAP over time as inline SVG, and a run's report figures
drawn again as PNG from the results store by the report's own figure functions
(``music_recsys.pipeline.report``) when the run's report/ folder no longer holds them."""

from __future__ import annotations

import io
import threading
from typing import Any

from music_recsys.store.registry import CANDIDATE, CHAMPION, REJECTED, RETIRED

STATUS_STYLE = {
    CHAMPION: ("tab:green", "*", 14),
    RETIRED: ("tab:blue", "o", 7),
    CANDIDATE: ("tab:orange", "D", 7),
    REJECTED: ("tab:red", "x", 8),
}
# pyplot keeps global state and the app answers requests from a thread pool: one figure at a time.
FIGURE_LOCK = threading.Lock()


def map_history_svg(models: list[dict[str, Any]]) -> str | None:
    """Test MAP of every registered model by logical date, marked by status, with popularity's test MAP:
    a falling quality shows as a falling line. None when no model has a date and a test MAP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    dated = sorted(
        (m for m in models if m.get("logical_date") is not None and m.get("test_map") is not None),
        key=lambda m: m["logical_date"],
    )
    if not dated:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 3.4))
    ax.plot([m["logical_date"] for m in dated], [m["test_map"] for m in dated], color="lightgrey", lw=1, zorder=1)
    for status, (color, marker, size) in STATUS_STYLE.items():
        pts = [m for m in dated if m["status"] == status]
        if pts:
            ax.scatter(
                [m["logical_date"] for m in pts], [m["test_map"] for m in pts], color=color, marker=marker,
                s=size**2, label=status, zorder=3,
            )  # fmt: skip
    popular = [m for m in dated if m.get("popularity_test_map") is not None]
    if popular:
        ax.plot(
            [m["logical_date"] for m in popular], [m["popularity_test_map"] for m in popular], color="grey",
            ls="--", marker=".", label="popularity", zorder=2,
        )  # fmt: skip
    ax.set_ylabel("test MAP")
    ax.set_title("Test MAP per run (registry)")
    # Weekly runs and a morning's manual runs both get readable ticks (dates, or times within a day).
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prologue and DOCTYPE: the figure goes inline


def report_png(kind: str, rows: list[dict], arguments: dict[str, Any]) -> bytes | None:
    """One of the report's figures as PNG bytes, drawn by the report's figure function for ``kind``."""
    from music_recsys.pipeline import report

    buffer = io.BytesIO()
    if kind == "als_grid":
        drawn = report.grid_plot(rows, arguments["k"], buffer)
    elif kind == "segments":
        drawn = report.segment_plot(rows, arguments["best_id"], arguments["split"], buffer)
    elif kind == "fast_search":
        drawn = report.search_plot(rows, arguments["k"], buffer)
    else:
        raise KeyError(kind)
    return buffer.getvalue() if drawn is not None else None
