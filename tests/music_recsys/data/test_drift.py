"""Data check (music_recsys.data.drift): split profiles, drift figures, the verdict and its violations table."""

from __future__ import annotations

import numpy as np
import pytest

from music_recsys.data.drift import (
    Thresholds,
    compare,
    count_shift,
    new_share,
    relative_change,
    skipped_text,
    violations_table,
)

LIMITS = Thresholds(max_volume_change=0.5, max_new_user_share=0.2, max_new_track_share=0.1, max_count_shift=0.25)
# Both new-id shares measured (their checks ran), well within the limits.
SHARES = {"new_users": 0.0, "new_tracks": 0.0}
# 1,000 rows over the 11 buckets (1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, 65-128, ...).
HISTOGRAM = [300, 200, 200, 100, 100, 50, 50, 0, 0, 0, 0]


def _profile(rows=1000, users=100, tracks=200, plays=5000, histogram=None, **extra):
    return {
        "rows": rows,
        "users": users,
        "tracks": tracks,
        "plays": plays,
        "median_count": 2.0,
        "p99_count": 40.0,
        "share_count_1": 0.3,
        "count_histogram": list(HISTOGRAM if histogram is None else histogram),
        **extra,
    }


def _splits(**overrides):
    """Profiles of train, validation and test; ``overrides`` replaces one split's profile."""
    return {"train": _profile(), "validation": _profile(rows=100, plays=500), "test": _profile(), **overrides}


def test_relative_change_known_answers():
    assert relative_change(400, 1000) == -0.6
    assert relative_change(150, 100) == 0.5
    assert relative_change(0, 0) == 0.0  # nothing before, nothing now: no change
    assert relative_change(5, 0) == float("inf")  # something from nothing: always past any limit
    assert relative_change(None, 3) is None and relative_change(3, None) is None


def test_count_shift_is_total_variation_distance():
    # now [3, 1, 0] / 4 vs before [1, 1, 2] / 4: 0.5 * (|0.75 - 0.25| + 0 + |0 - 0.5|) = 0.5.
    assert count_shift([3, 1, 0], [1, 1, 2]) == pytest.approx(0.5)
    # Same shape at another volume: 0.
    assert count_shift([30, 20], [3, 2]) == pytest.approx(0.0)
    # Disjoint: 1. Both empty: 0. One empty: 1.
    assert count_shift([5, 0], [0, 7]) == pytest.approx(1.0)
    assert count_shift([0, 0], [0, 0]) == 0.0
    assert count_shift([1, 0], [0, 0]) == 1.0


def test_new_share_known_answers():
    # Now 1, 2, 3, 4; before 2, 4, 6 -> 1 and 3 are new: 2 / 4.
    assert new_share(np.array([1, 2, 3, 4], dtype=np.int64), np.array([2, 4, 6], dtype=np.int64)) == 0.5
    assert new_share(np.array([], dtype=np.int64), np.array([1], dtype=np.int64)) == 0.0
    assert new_share(None, np.array([1])) is None and new_share(np.array([1]), None) is None


def test_first_run_has_no_baseline_and_no_violations():
    outcome = compare(_splits(), None, LIMITS, new_users=0.9, new_tracks=0.9)
    assert outcome == {"verdict": "first_run", "baseline_run_id": None, "changes": {}, "violations": [], "skipped": []}
    assert compare(_splits(), {}, LIMITS)["verdict"] == "first_run"


def test_identical_profiles_pass_with_no_change():
    outcome = compare(_splits(), _splits(), LIMITS, new_users=0.0, new_tracks=0.0)
    assert outcome["verdict"] == "pass"
    assert outcome["violations"] == []
    assert set(outcome["changes"]) == {"train", "validation", "test"}
    for split, changes in outcome["changes"].items():
        figures = {k: v for k, v in changes.items() if k not in ("new_user_share", "new_track_share")}
        assert set(figures) == {
            "rows",
            "users",
            "tracks",
            "plays",
            "median_count",
            "p99_count",
            "share_count_1",
            "count_shift",
        }, split
        assert all(v == 0.0 for v in figures.values()), split
    assert outcome["changes"]["train"]["new_user_share"] == 0.0
    assert outcome["changes"]["train"]["new_track_share"] == 0.0


def _train_down_60_percent():
    # Train: 1,000 -> 400 rows (-60 %), 5,000 -> 2,000 plays (-60 %), 100 -> 70 users (-30 %),
    # 200 -> 150 tracks (-25 %), every histogram bucket x 0.4 (same shape: count shift 0).
    small = _profile(rows=400, users=70, tracks=150, plays=2000, histogram=[int(n * 0.4) for n in HISTOGRAM])
    return compare(_splits(train=small), _splits(), LIMITS, new_users=0.05, new_tracks=0.02)


def test_train_with_60_percent_fewer_rows_is_drift():
    outcome = _train_down_60_percent()
    assert outcome["verdict"] == "drift"
    # Rows and plays cross the ±50 % limit; users (-30 %), tracks (-25 %), the shape and new shares do not.
    assert outcome["violations"] == [
        {"split": "train", "figure": "rows", "now": 400, "before": 1000, "value": -0.6, "limit": 0.5},
        {"split": "train", "figure": "plays", "now": 2000, "before": 5000, "value": -0.6, "limit": 0.5},
    ]
    train = outcome["changes"]["train"]
    assert train["users"] == pytest.approx(-0.3)
    assert train["tracks"] == pytest.approx(-0.25)
    assert train["count_shift"] == pytest.approx(0.0)
    assert train["new_user_share"] == 0.05 and train["new_track_share"] == 0.02


def test_violations_table_renders_volume_figures():
    assert violations_table(_train_down_60_percent()["violations"]) == (
        "split  figure  now    before  change  limit\n"
        "train  rows    400    1,000   -60.0%  ±50%\n"
        "train  plays   2,000  5,000   -60.0%  ±50%"
    )


def test_violations_table_renders_share_figures():
    violations = [
        {"split": "test", "figure": "count_shift", "now": [1, 2], "before": [2, 1], "value": 0.3, "limit": 0.25},
        {"split": "train", "figure": "new_user_share", "now": 0.21, "before": None, "value": 0.21, "limit": 0.2},
    ]
    assert violations_table(violations) == (
        "split  figure          now  before  change  limit\n"
        "test   count_shift     —    —       0.300   0.250\n"
        "train  new_user_share  —    —       0.210   0.200"
    )
    assert violations_table([]) == "split  figure  now  before  change  limit"


@pytest.mark.parametrize(
    ("split", "figure", "before", "above", "at", "below"),
    [
        # Limit ±50 %: 151 / 100 - 1 = +0.51 crosses, +0.50 and +0.49 do not.
        ("train", "users", 100, 151, 150, 149),
        # 99 / 200 - 1 = -0.505 crosses, -0.5 and -0.495 do not.
        ("train", "tracks", 200, 99, 100, 101),
        # 7,501 / 5,000 - 1 = +0.5002 crosses, +0.5 and +0.4998 do not.
        ("train", "plays", 5000, 7501, 7500, 7499),
        # Every split is checked: validation rows 1,000 -> 1,501 / 1,500 / 1,499.
        ("validation", "rows", 1000, 1501, 1500, 1499),
    ],
)
def test_volume_limit_on_each_figure(split, figure, before, above, at, below):
    baseline = _splits(**{split: _profile(**{figure: before})})

    def violations(now_value):
        current = _splits(**{split: _profile(**{figure: now_value})})
        return compare(current, baseline, LIMITS, **SHARES)["violations"]

    (v,) = violations(above)
    assert (v["split"], v["figure"], v["now"], v["before"], v["limit"]) == (split, figure, above, before, 0.5)
    assert v["value"] == pytest.approx(above / before - 1)
    assert violations(at) == []  # exactly on the limit is not past it
    assert violations(below) == []


@pytest.mark.parametrize(
    ("keyword", "figure", "above", "below", "limit"),
    [("new_users", "new_user_share", 0.21, 0.19, 0.2), ("new_tracks", "new_track_share", 0.11, 0.09, 0.1)],
)
def test_new_id_share_limits(keyword, figure, above, below, limit):
    crossed = compare(_splits(), _splits(), LIMITS, **{**SHARES, keyword: above})
    assert crossed["verdict"] == "drift"
    assert crossed["violations"] == [
        {"split": "train", "figure": figure, "now": above, "before": None, "value": above, "limit": limit}
    ]
    assert compare(_splits(), _splits(), LIMITS, **{**SHARES, keyword: below})["verdict"] == "pass"
    # Unknown (no hashed ids from the baseline run): recorded as None, never a violation, and never a plain
    # pass either: the verdict says the check did not run, and why.
    unknown = compare(_splits(), _splits(), LIMITS, **{**SHARES, keyword: None}, ids_missing="run r1's ids are gone")
    assert unknown["verdict"] == "incomplete" and unknown["changes"]["train"][figure] is None
    assert unknown["skipped"] == [{"split": "train", "check": figure, "reason": "run r1's ids are gone"}]
    assert skipped_text(unknown["skipped"]) == f"{figure} of train (run r1's ids are gone)"


def test_count_shift_limit():
    # Test split, 200 rows before in buckets 1 and 2 (100 each). Moving m rows from bucket "1" to "3-4"
    # keeps the volume and shifts the shape by m / 200: m = 51 -> 0.255 > 0.25; m = 49 -> 0.245.
    before = [100, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    baseline = _splits(test=_profile(rows=200, histogram=before))

    def outcome(m):
        now = [100 - m, 100, m, 0, 0, 0, 0, 0, 0, 0, 0]
        return compare(_splits(test=_profile(rows=200, histogram=now)), baseline, LIMITS, **SHARES)

    crossed = outcome(51)
    assert crossed["verdict"] == "drift"
    (v,) = crossed["violations"]
    assert (v["split"], v["figure"], v["limit"]) == ("test", "count_shift", 0.25)
    assert v["value"] == pytest.approx(0.255)
    assert v["now"] == [49, 100, 51, 0, 0, 0, 0, 0, 0, 0, 0] and v["before"] == before
    below = outcome(49)
    assert below["verdict"] == "pass"
    assert below["changes"]["test"]["count_shift"] == pytest.approx(0.245)


def test_baseline_with_zero_volume():
    # Baseline test split empty: something now is an infinite change, past any limit; still empty is no change.
    empty = _profile(rows=0, users=0, tracks=0, plays=0, histogram=[0] * 11)
    grown = compare(_splits(test=_profile(rows=10, users=0, tracks=0, plays=0)), _splits(test=empty), LIMITS, **SHARES)
    assert grown["verdict"] == "drift"
    assert [(v["split"], v["figure"], v["value"]) for v in grown["violations"]] == [
        ("test", "rows", float("inf")),
        ("test", "count_shift", 1.0),  # 1,000 rows in the histogram against none
    ]
    still_empty = compare(_splits(test=empty), _splits(test=empty), LIMITS, **SHARES)
    assert still_empty["verdict"] == "pass"
    assert still_empty["changes"]["test"]["rows"] == 0.0 and still_empty["changes"]["test"]["count_shift"] == 0.0


def test_split_missing_from_the_baseline_is_not_compared_and_said():
    baseline = {"train": _profile()}
    outcome = compare(_splits(), baseline, LIMITS, **SHARES)
    assert outcome["verdict"] == "incomplete"
    assert set(outcome["changes"]) == {"train"}
    assert [(s["split"], s["reason"]) for s in outcome["skipped"]] == [
        ("validation", "the baseline run has no validation profile"),
        ("test", "the baseline run has no test profile"),
    ]


# Rows of the Spark profile fixture: 3 users, 4 tracks, counts 1 1 2 3 4 5 8 9 512 513.
PROFILE_ROWS = [
    ("u1", "t1", 1),
    ("u1", "t2", 1),
    ("u1", "t3", 2),
    ("u1", "t4", 3),
    ("u2", "t1", 4),
    ("u2", "t2", 5),
    ("u2", "t3", 8),
    ("u3", "t1", 9),
    ("u3", "t2", 512),
    ("u3", "t4", 513),
]
SCHEMA = "user_id string, track_id string, count int"


@pytest.mark.spark
def test_profile_known_answers(spark):
    from music_recsys.data.drift import profile

    result = profile(spark.createDataFrame(PROFILE_ROWS, SCHEMA))
    assert result["rows"] == 10
    assert result["users"] == 3
    assert result["tracks"] == 4
    # 1 + 1 + 2 + 3 + 4 + 5 + 8 + 9 + 512 + 513 = 1,058.
    assert result["plays"] == 1058
    # Exact percentiles, linear between order statistics at (n - 1) * p:
    # median at 4.5 -> between 4 and 5 = 4.5; p99 at 8.91 -> 512 + 0.91 * (513 - 512) = 512.91.
    assert result["median_count"] == pytest.approx(4.5)
    assert result["p99_count"] == pytest.approx(512.91)
    # Two of ten rows have count 1.
    assert result["share_count_1"] == pytest.approx(0.2)
    # Buckets (inclusive upper bounds): 1 -> {1, 1}; 2 -> {2}; 3-4 -> {3, 4}; 5-8 -> {5, 8}; 9-16 -> {9};
    # 257-512 -> {512}; >512 -> {513}.
    assert result["count_histogram"] == [2, 1, 2, 2, 1, 0, 0, 0, 0, 1, 1]


@pytest.mark.spark
def test_the_checksum_is_of_the_rows_not_their_order_type_or_place(spark):
    from music_recsys.data.drift import profile

    checksum = profile(spark.createDataFrame(PROFILE_ROWS, SCHEMA))["checksum"]
    assert len(checksum) == 64
    shuffled = spark.createDataFrame(list(reversed(PROFILE_ROWS)), "user_id string, track_id string, count long")
    assert profile(shuffled.repartition(3))["checksum"] == checksum  # order, partitions and int width
    changed = [("u1", "t1", 2), *PROFILE_ROWS[1:]]
    assert profile(spark.createDataFrame(changed, SCHEMA))["checksum"] != checksum
    swapped = [("u2", "t1", 1), ("u1", "t1", 4), *PROFILE_ROWS[1:4], *PROFILE_ROWS[5:]]  # same counts, moved
    assert profile(spark.createDataFrame(swapped, SCHEMA))["checksum"] != checksum


@pytest.mark.spark
def test_profile_of_an_empty_split(spark):
    from music_recsys.data.drift import profile

    result = profile(spark.createDataFrame([], SCHEMA))
    assert (result["rows"], result["users"], result["tracks"], result["plays"]) == (0, 0, 0, 0)
    assert result["median_count"] is None and result["p99_count"] is None and result["share_count_1"] is None
    assert result["count_histogram"] == [0] * 11


@pytest.mark.spark
def test_hashed_ids_are_distinct_64_bit_hashes(spark):
    from pyspark.sql.types import LongType

    from music_recsys.data.drift import hashed_ids

    df = spark.createDataFrame(PROFILE_ROWS, SCHEMA)
    users = hashed_ids(df, "user_id")
    assert users.schema["h"].dataType == LongType()
    hashes = np.array([r["h"] for r in users.collect()], dtype=np.int64)
    assert len(hashes) == 3 == len(np.unique(hashes))
    assert hashed_ids(df, "track_id").count() == 4
    # The same ids hash the same way in another DataFrame: u3 is the one new user of three -> 1/3.
    before = np.array(
        [r["h"] for r in hashed_ids(spark.createDataFrame(PROFILE_ROWS[:7], SCHEMA), "user_id").collect()],
        dtype=np.int64,
    )
    assert len(before) == 2
    assert new_share(hashes, before) == pytest.approx(1 / 3)
