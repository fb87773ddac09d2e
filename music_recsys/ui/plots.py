"""Figures of the UI pages: the registry's test MAP over time as inline SVG, and a run's report figures
drawn again as PNG from the results store by the report's own figure functions
(``music_recsys.pipeline.report``) when the run's report/ folder no longer holds them."""

from __future__ import annotations

import io
import threading
from datetime import datetime, timedelta
from typing import Any

from music_recsys.store.registry import AWAITING, CANDIDATE, CHAMPION, REJECTED, RETIRED

STATUS_STYLE = {
    CHAMPION: ("tab:green", "*", 14),
    RETIRED: ("tab:blue", "o", 7),
    CANDIDATE: ("tab:orange", "D", 7),
    AWAITING: ("tab:purple", "P", 9),
    REJECTED: ("tab:red", "x", 8),
}
# pyplot keeps global state and the app answers requests from a thread pool: one figure at a time.
FIGURE_LOCK = threading.Lock()


def date_limits(dates: list[datetime]) -> tuple[datetime, datetime]:
    """The x-axis span for ``dates``: a few days either side of a single date (matplotlib's own choice for
    one point spans years, 2025 to 2029), a twentieth of the span either side otherwise."""
    first, last = min(dates), max(dates)
    pad = max((last - first) / 20, timedelta(days=3) if last - first < timedelta(days=1) else timedelta(hours=6))
    return first - pad, last + pad


def map_history_figure(models: list[dict[str, Any]]):
    """The figure of ``map_history_svg`` (None when no model has a date and a test MAP)."""
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
    ks = sorted({m["k"] for m in dated if m.get("k")})
    fig, ax = plt.subplots(figsize=(9.5, 3.4))
    # Fifty weekly models: small markers and a thin line keep every point apart.
    scale = 1.0 if len(dated) <= 12 else 0.6
    ax.plot([m["logical_date"] for m in dated], [m["test_map"] for m in dated], color="lightgrey", lw=1, zorder=1)
    for status, (color, marker, size) in STATUS_STYLE.items():
        pts = [m for m in dated if m["status"] == status]
        if pts:
            ax.scatter(
                [m["logical_date"] for m in pts], [m["test_map"] for m in pts], color=color, marker=marker,
                s=(size * scale) ** 2, label=status, zorder=3,
            )  # fmt: skip
    popular = [m for m in dated if m.get("popularity_test_map") is not None]
    if popular:
        ax.plot(
            [m["logical_date"] for m in popular], [m["popularity_test_map"] for m in popular], color="grey",
            ls="--", marker="." if len(popular) <= 12 else None, label="popularity", zorder=2,
        )  # fmt: skip
    ax.set_ylabel("test MAP" + (f" (top {ks[0]})" if len(ks) == 1 else ""))
    ax.set_title("Test MAP per run (registry)")
    ax.set_xlim(*date_limits([m["logical_date"] for m in dated]))
    # Weekly runs and a morning's manual runs both get readable ticks (dates, or times within a day).
    locator = mdates.AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(alpha=0.3)
    # Beside the axes, never over the points.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def map_history_svg(models: list[dict[str, Any]]) -> str | None:
    """Test MAP of every registered model by logical date, marked by status, with popularity's test MAP:
    a falling quality shows as a falling line. None when no model has a date and a test MAP."""
    import matplotlib.pyplot as plt

    fig = map_history_figure(models)
    if fig is None:
        return None
    buffer = io.StringIO()
    # Text stays text (smaller, selectable, and what the tests read), not glyph outlines.
    with plt.rc_context({"svg.fonttype": "none"}):
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
