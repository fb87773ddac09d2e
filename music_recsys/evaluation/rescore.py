"""A published model scored again on another run's data: the champion measured like the candidate.

The promotion gate must compare numbers measured the same way. ``rescore`` takes a model's factors and
ids (a bundle's contents) and another run's indexed data (its validation and test play counts, and the
train history of those users, in that run's index space with its id labels) and scores the model the way
that run's evaluation scored its own trials: the same held-out tracks at the same k, the same train
tracks excluded, the same metrics (``music_recsys.evaluation.metrics.ranking_metrics``), means over the
same users. A user the model was not trained on is folded in from their train history in that data, as
the serving API does (``music_recsys.model.foldin``); a held-out track the model does not know can never
be recommended but still counts as relevant; a user without a factor gets an empty list (every metric 0),
as in the evaluation. On the same data and k, the same factors give the same figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from music_recsys.evaluation.metrics import METRIC_NAMES, ranking_metrics
from music_recsys.evaluation.screening import group_items
from music_recsys.evaluation.topk import top_k_blocks
from music_recsys.model.foldin import fold_in

SCORED = (*METRIC_NAMES, "ndcg_graded_at_k")


@dataclass(frozen=True)
class FactorModel:
    """What scoring needs of a model: its factors, the ids of their rows, and the fold-in settings (the
    model card's ``params``: alpha, reg_param, transform, drop_threshold, nonnegative)."""

    user_factors: np.ndarray
    item_factors: np.ndarray
    user_ids: Sequence[str]
    track_ids: Sequence[str]
    params: dict[str, Any]


@dataclass(frozen=True)
class Interactions:
    """Play counts in a run's index space: parallel arrays of user index, track index and count."""

    users: np.ndarray
    tracks: np.ndarray
    counts: np.ndarray

    def by_user(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Each user's (tracks, counts), tracks ascending and unique (a repeated pair's counts summed)."""
        return group_items(self.users, self.tracks, self.counts)


def _index_of(model_ids: Sequence[str], ids: Sequence[str]) -> np.ndarray:
    """For each id, its row in the model (-1: the model does not know it)."""
    import pandas as pd

    return pd.Index(np.asarray(model_ids, dtype=object)).get_indexer(np.asarray(ids, dtype=object))


def rescore(
    model: FactorModel,
    user_ids: Sequence[str],
    track_ids: Sequence[str],
    train: Interactions,
    held_out: dict[str, Interactions],
    k: int,
    exclude_seen: bool,
) -> dict[str, dict[str, Any]]:
    """``model``'s metrics on each split of ``held_out`` (a run's data, whose index labels are ``user_ids``
    and ``track_ids``); ``train`` needs to hold at least the held-out users' rows. Per split: every
    accuracy metric, ``n_users``, ``n_cold_users`` (no factor: empty list), ``n_folded_in`` (users the model
    was not trained on) and ``unknown_track_share`` (held-out plays of tracks the model does not know)."""
    user_row = _index_of(model.user_ids, user_ids)
    track_row = _index_of(model.track_ids, track_ids)
    items = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    gram = items.T.astype(np.float64) @ items.astype(np.float64)
    history = train.by_user()
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
    out = {}
    for split, rows in held_out.items():
        vectors, truths, excludes = [], [], []
        n_users = n_cold = n_folded = 0
        unknown = total = 0.0
        totals = dict.fromkeys(SCORED, 0.0)
        for user, (tracks, counts) in rows.by_user().items():
            n_users += 1
            mapped = track_row[tracks]
            known = mapped >= 0
            unknown += float(counts[~known].sum())
            total += float(counts.sum())
            # Unknown tracks stay relevant under ids no model row has (negative), so they count in every
            # denominator and never as a hit.
            relevant = np.where(known, mapped, -1 - tracks.astype(np.int64))
            order = np.argsort(relevant, kind="stable")
            played, plays = history.get(user, empty)
            played_rows = track_row[played]
            seen = played_rows >= 0
            vector = None
            if user_row[user] >= 0:
                vector = np.asarray(model.user_factors[user_row[user]], dtype=np.float32)
            elif seen.any():
                n_folded += 1
                vector = fold_in(
                    items,
                    gram,
                    played_rows[seen],
                    np.asarray(plays[seen], dtype=np.float64),
                    alpha=model.params["alpha"],
                    reg_param=model.params["reg_param"],
                    transform=model.params["transform"],
                    drop_threshold=model.params["drop_threshold"],
                    nonnegative=model.params["nonnegative"],
                )
            if vector is None or not np.any(vector):
                n_cold += 1  # as in the evaluation: no factor, an empty list, every metric 0
                continue
            vectors.append(vector)
            truths.append((relevant[order], np.asarray(counts, dtype=np.float64)[order]))
            excludes.append(np.unique(played_rows[seen]) if exclude_seen else np.zeros(0, dtype=np.int64))
        if vectors:
            blocks = top_k_blocks(np.vstack(vectors), items, k, exclude=excludes)
            for block in blocks:
                for offset, pred in enumerate(block.top):
                    relevant, counts = truths[block.start + offset]
                    for name, value in ranking_metrics(pred, relevant, counts, k).items():
                        totals[name] += value
        out[split] = {
            **{name: total_ / n_users if n_users else None for name, total_ in totals.items()},
            "k": k,
            "n_users": n_users,
            "n_cold_users": n_cold,
            "n_folded_in": n_folded,
            "unknown_track_share": unknown / total if total else 0.0,
        }
    return out
