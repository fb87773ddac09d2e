"""The model card a bundle carries (``model.json``): what was trained, on which data, how well it scored.

``model_card`` builds it from the run's plan, configuration and evaluation result; ``data_fingerprint``
(``music_recsys.data.fingerprint``) summarises what was read — never where it lay — so the registry can
tell two models trained on the same data apart from a new drop; ``library_versions`` records the versions
that produced it. The publish task only wires these to the
bundle writer (``music_recsys.store.bundle.write_bundle``) and the registry.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from music_recsys import constants as C
from music_recsys import settings
from music_recsys.data.fingerprint import data_fingerprint
from music_recsys.evaluation.catalogue import ACCURACY_METRIC_NAMES

__all__ = ["CARD_SETTINGS", "data_fingerprint", "lift", "model_card", "read_card", "result_row"]

# Packages whose versions decide what a bundle holds and how it is served.
CARD_LIBRARIES = ("music-recsys", "pyspark", "annoy", "numpy", "apache-airflow")
# Run settings that shape the factors beyond the grid point's own (rank, reg_param, alpha, transform).
CARD_SETTINGS = ("nonnegative", "drop_threshold", "max_iter", "seed")


def read_card(path: str | Path | None) -> dict[str, Any] | None:
    """A bundle's model card (``model.json``; a relative ``path`` is under the data root, as the registry
    records it), or None when retention removed the files (or it is unreadable)."""
    from music_recsys.store.bundle import CARD

    if not path:
        return None
    card = settings.in_data_root(path) / CARD
    if not card.is_file():
        return None
    try:
        return json.loads(card.read_text())
    except ValueError:
        return None


def lift(test_map: float | None, popularity: float | None) -> float | None:
    """Test MAP over popularity's, or None when either is missing."""
    if test_map is None or not popularity:
        return None
    return test_map / popularity


def library_versions(names: tuple[str, ...] = CARD_LIBRARIES) -> dict[str, str]:
    """Installed version of each package, ``not installed`` for a missing one."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def result_row(evaluation: dict[str, Any], trial_id: str | None, split: str) -> dict[str, Any] | None:
    """The evaluation's row of one trial on one split (None when it was not scored there)."""
    return next((r for r in evaluation["rows"] if r["trial_id"] == trial_id and r["split"] == split), None)


def _accuracy(row: dict[str, Any] | None) -> dict[str, Any] | None:
    return {name: row[name] for name in ACCURACY_METRIC_NAMES} if row else None


def model_card(
    *,
    version: str,
    plan: dict[str, Any],
    trial: dict[str, Any],
    settings: dict[str, Any],
    evaluation: dict[str, Any],
    fingerprint: dict[str, Any],
    n_users: int,
    n_items: int,
    inputs: str | None = None,
) -> dict[str, Any]:
    """The card of the grid point ``trial`` of run ``plan``; ``settings`` holds the run's ``CARD_SETTINGS``;
    ``inputs`` is the digest of everything the bundle is made from (a re-run keeps a bundle only when it
    matches).

    The best point and the popularity baseline carry every accuracy metric of the catalogue on validation
    and, when they were scored there, on test.
    """
    missing = [name for name in CARD_SETTINGS if name not in settings]
    if missing:
        raise ValueError(f"model card of {version}: settings lack {missing}; pass the run's config values")
    best = trial["trial_id"]
    validation = result_row(evaluation, best, "validation")
    if validation is None:
        raise ValueError(f"model card of {version}: trial {best!r} has no validation row in the evaluation result")
    return {
        "version": version,
        "run_id": plan["run_id"],
        "trial_id": best,
        "logical_date": plan["logical_date"],
        "created_at": datetime.now(UTC).isoformat(),
        "params": {
            "rank": trial["rank"],
            "reg_param": trial["reg_param"],
            "alpha": trial["alpha"],
            "transform": trial["transform"],
            **{name: settings[name] for name in CARD_SETTINGS},
        },
        "selection_metric": evaluation["selection_metric"],
        "k": evaluation["k"],
        "exclude_seen": evaluation["exclude_seen"],
        "metrics": {
            "validation": _accuracy(validation),
            "test": _accuracy(result_row(evaluation, best, "test")),
        },
        "popularity": {
            "validation": _accuracy(result_row(evaluation, C.POPULARITY_TRIAL_ID, "validation")),
            "test": _accuracy(result_row(evaluation, C.POPULARITY_TRIAL_ID, "test")),
        },
        "data": fingerprint,
        "inputs": inputs,
        "n_users": n_users,
        "n_items": n_items,
        "libraries": library_versions(),
    }
