"""Fingerprints of what a run read: the same rows give the same fingerprint wherever the files lie.

``data_fingerprint`` summarises the ingest result's per-split profiles (row, user and track counts and the
content checksum ``music_recsys.data.drift.profile`` computes from the rows themselves) plus the sampling
that shaped train; two models with the same hash were trained and tested on the same data. ``digest``
hashes any JSON-able description of a stage's inputs, so a re-run can tell whether an output on disk was
made from the same inputs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from music_recsys import constants as C

FINGERPRINT_FIGURES = ("rows", "users", "tracks", "checksum")


def digest(*parts: Any) -> str:
    """SHA-256 of the parts as canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def data_fingerprint(ingest: dict[str, Any]) -> dict[str, Any]:
    """Per split its row, user and track counts and content checksum, the sampling, and their hash."""
    splits = {
        split: {key: ingest["splits"][split]["profile"].get(key) for key in FINGERPRINT_FIGURES} for split in C.SPLITS
    }
    sampling = {"sample_fraction": ingest["sample_fraction"]}
    if ingest["sample_fraction"] < 1.0:
        sampling["seed"] = ingest.get("seed")  # the seed only shapes train when users are sampled
    return {"splits": splits, **sampling, "hash": digest(splits, sampling)}


def array_digest(array) -> str:
    """SHA-256 of an array's bytes, dtype and shape."""
    import numpy as np

    array = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.data)
    return h.hexdigest()
