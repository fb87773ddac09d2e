"""Count transforms: one definition, and Spark's (the fit) and numpy's (fold-in) results agree for each."""

from __future__ import annotations

import numpy as np
import pytest

from music_recsys import constants as C
from music_recsys.model.foldin import ratings_from_counts
from music_recsys.model.transforms import COUNT_TRANSFORMS, count_transform

COUNTS = [1, 1, 2, 3, 5, 8, 13, 100, 12345]


def test_every_grid_transform_is_defined_once():
    assert tuple(COUNT_TRANSFORMS) == C.TRANSFORMS
    assert [(t.drop, t.log1p) for t in COUNT_TRANSFORMS.values()] == [
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    ]
    with pytest.raises(ValueError, match=r"transform 'sqrt': choose from \['none', 'log1p', 'drop', 'log1p_drop'\]"):
        count_transform("sqrt")
    with pytest.raises(ValueError, match="'sqrt'"):
        ratings_from_counts(np.array([1]), "sqrt", 1)


@pytest.mark.spark
@pytest.mark.parametrize("drop_threshold", [1, 4])
@pytest.mark.parametrize("transform", C.TRANSFORMS)
def test_spark_and_numpy_transforms_agree(spark, transform, drop_threshold):
    from music_recsys.model.als import apply_transform

    rows = [(user, item, count) for user, (item, count) in enumerate(enumerate(COUNTS))]
    frame = spark.createDataFrame(rows, [C.USER_IDX, C.ITEM_IDX, C.COUNT])
    by_spark = {r[C.ITEM_IDX]: r[C.RATING] for r in apply_transform(frame, transform, drop_threshold).collect()}
    keep, ratings = ratings_from_counts(np.array(COUNTS), transform, drop_threshold)
    by_numpy = {item: ratings[item] for item in np.flatnonzero(keep)}
    assert sorted(by_spark) == sorted(by_numpy)
    # Both are float32 ratings: equal to the last bit, not merely close.
    assert all(np.float32(by_spark[i]) == np.float32(by_numpy[i]) for i in by_numpy)
    # The known answer, so both cannot be wrong together.
    dropped = count_transform(transform).drop
    assert len(by_numpy) == (sum(c > drop_threshold for c in COUNTS) if dropped else len(COUNTS))
    if count_transform(transform).log1p:
        assert by_numpy[7] == pytest.approx(np.log1p(100.0), rel=1e-6)
    else:
        assert by_numpy[7] == 100.0
