"""The grid's count transforms, defined once: which plays a transform keeps and what rating it gives them.

Spark (``music_recsys.model.als.apply_transform``, the fit) and numpy (``music_recsys.model.foldin``,
a new listener at serving time) both read ``count_transform``; a test holds their results equal for every
transform.
"""

from __future__ import annotations

from dataclasses import dataclass

from music_recsys import constants as C


@dataclass(frozen=True)
class CountTransform:
    """``drop``: keep only plays with count > the run's drop threshold; ``log1p``: rating log(1 + count),
    else the count itself. Ratings are float32, Spark's rating column type."""

    name: str
    drop: bool
    log1p: bool


COUNT_TRANSFORMS = {
    t.name: t
    for t in (
        CountTransform("none", drop=False, log1p=False),
        CountTransform("log1p", drop=False, log1p=True),
        CountTransform("drop", drop=True, log1p=False),
        CountTransform("log1p_drop", drop=True, log1p=True),
    )
}


def count_transform(name: str) -> CountTransform:
    """The definition of transform ``name``; a ValueError naming the choices for an unknown one."""
    if name not in COUNT_TRANSFORMS:
        raise ValueError(f"transform {name!r}: choose from {list(C.TRANSFORMS)}")
    return COUNT_TRANSFORMS[name]
