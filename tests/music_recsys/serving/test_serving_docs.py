"""docs/serving.md against the code it describes: the serve flags, the metrics, the limits' numbers."""

from __future__ import annotations

import re
from pathlib import Path

from music_recsys.cli import build_parser
from music_recsys.serving.limits import DEFAULT_MAX_BODY_BYTES
from music_recsys.serving.metrics import ServingMetrics
from music_recsys.serving.schemas import history_limit

DOC = (Path(__file__).resolve().parents[3] / "docs" / "serving.md").read_text()


def serve_flags() -> dict[str, object]:
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    serve = commands.choices["serve"]
    return {flag: action.default for action in serve._actions for flag in action.option_strings if flag != "-h"}


def test_every_serve_flag_is_in_the_table_with_its_default():
    rows = dict(re.findall(r"^\| `(--[a-z-]+)` \| ([^|]+) \|", DOC, flags=re.M))
    flags = serve_flags()
    del flags["--help"]
    assert set(rows) == set(flags)
    for flag, default in flags.items():
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            assert f"`{default:.15g}`" in rows[flag], (flag, default, rows[flag])
        elif isinstance(default, str):
            assert f"`{default}`" in rows[flag], (flag, default, rows[flag])


def test_every_metric_is_documented_and_nothing_else():
    families = {metric.name for metric in ServingMetrics().registry.collect()}
    documented = set(re.findall(r"^\| `(recsys_[a-z_]+)` \|", DOC, flags=re.M))
    # prometheus-client names a counter's family without its _total suffix, an info's without _info.
    assert {re.sub(r"_(total|info)$", "", name) for name in documented} == families


def test_the_limits_quoted_are_the_code_s():
    assert DEFAULT_MAX_BODY_BYTES == 1_048_576 and "`1048576` (1 MiB)" in DOC
    assert f"{history_limit(DEFAULT_MAX_BODY_BYTES):,} entries for 1 MiB" in DOC
    assert "request body over the limit of 1,048,576 bytes (music-recsys serve --max-body-bytes)" in DOC
