"""The one way a benchmark writes down what it measured: a dated section appended to bench/RESULTS.md.

Every ``bench/*.py`` script calls ``append_section`` (unless run with ``--no-write``), so the sections
share one heading form and the file is never rewritten, only extended.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def append_section(title: str, body: str, *, results: Path = RESULTS, now: datetime | None = None) -> str:
    """Append ``### <title> — <UTC time> UTC`` and ``body`` to ``results``; return the text written."""
    if not title.strip() or "\n" in title:
        raise ValueError(f"benchmark section title {title!r}: give one non-empty line")
    if not body.strip():
        raise ValueError(f"benchmark section {title!r}: the body is empty; write the figures measured")
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    text = f"\n### {title.strip()} — {stamp:%Y-%m-%d %H:%M} UTC\n\n{body.strip(chr(10))}\n"
    with results.open("a") as fh:
        fh.write(text)
    return text
