"""The generator: the study's count statistics, power laws, split shape, taste signal, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from music_recsys import constants as C
from music_recsys.data.generate import GeneratorConfig, generate, main
from music_recsys.data.sampling import sample_counts
from music_recsys.data.writers import count_statistics
from music_recsys.evaluation.topk import top_k
from tests.music_recsys.evaluation.reference_metrics import mean_metrics


def test_counts_match_the_seed_statistics():
    stats = count_statistics(sample_counts(np.random.default_rng(1), 500_000))
    assert stats["min"] == 1
    assert stats["median"] == 1
    assert stats["p25"] == 1
    assert stats["p75"] == 3
    assert stats["mean"] == pytest.approx(2.8762, rel=0.05)  # the study's mean
    assert 4.0 < stats["std"] < 9.0  # the study's 6.46; the tail makes the sample std noisy
    assert 500 < stats["max"] <= 9667


@pytest.fixture(scope="module", params=["exact", "candidates"])
def small(request):
    """The same config through both samplers: exact for small catalogues, candidates for large ones."""
    import music_recsys.data.sampling as datagen

    cfg = GeneratorConfig(users=1500, items=800, holdout_users=200, seed=7)
    limit = datagen.EXACT_SAMPLING_LIMIT
    datagen.EXACT_SAMPLING_LIMIT = limit if request.param == "exact" else 0
    try:
        splits, model = generate(cfg)
    finally:
        datagen.EXACT_SAMPLING_LIMIT = limit
    return cfg, splits, model


def test_split_shape_follows_the_seed(small):
    cfg, splits, _ = small
    train_users = set(splits["train"][C.USER_ID])
    val_users = set(splits["validation"][C.USER_ID])
    test_users = set(splits["test"][C.USER_ID])
    assert len(train_users) == cfg.users
    assert len(val_users) == cfg.holdout_users // 2
    assert len(test_users) == cfg.holdout_users - cfg.holdout_users // 2
    assert not val_users & test_users
    # Hold-out users keep part of their history in train.
    assert val_users <= train_users and test_users <= train_users
    for name in C.SPLITS:
        pairs = list(zip(splits[name][C.USER_ID], splits[name][C.TRACK_ID], strict=True))
        assert len(pairs) == len(set(pairs)), f"duplicate (user, track) in {name}"
        assert splits[name][C.COUNT].min() >= 1


def test_ids_look_like_msd(small):
    _, splits, _ = small
    user, track = splits["train"][C.USER_ID][0], splits["train"][C.TRACK_ID][0]
    assert len(user) == 40 and int(user, 16) >= 0
    assert len(track) == 18 and track.startswith("TR")


def test_power_law_users_and_tracks(small):
    _, splits, _ = small
    _, per_user = np.unique(splits["train"][C.USER_ID], return_counts=True)
    _, per_track = np.unique(splits["train"][C.TRACK_ID], return_counts=True)
    assert per_user.max() > 5 * np.median(per_user)
    top = np.sort(per_track)[::-1]
    assert top[: len(top) // 10].sum() > 0.25 * top.sum()  # top 10% of tracks: over a quarter of rows


def test_taste_structure_beats_popularity(small):
    """Ranking by the true latent taste must beat ranking by popularity on validation."""
    _, splits, _ = small
    train, val = splits["train"], splits["validation"]
    user_index = {u: i for i, u in enumerate(np.unique(train[C.USER_ID]))}
    tracks = np.unique(np.concatenate([train[C.TRACK_ID], val[C.TRACK_ID]]))
    track_index = {t: i for i, t in enumerate(tracks)}
    tu = np.array([user_index[u] for u in train[C.USER_ID]])
    ti = np.array([track_index[t] for t in train[C.TRACK_ID]])
    vu = np.array([user_index[u] for u in val[C.USER_ID]])
    vi = np.array([track_index[t] for t in val[C.TRACK_ID]])
    users = np.unique(vu)
    seen = [ti[tu == u] for u in users]
    relevant = [vi[vu == u] for u in users]
    popularity = np.bincount(ti, minlength=len(tracks)).astype(float)
    pop_map = mean_metrics(top_k(np.ones((len(users), 1)), popularity[:, None], 50, exclude=seen), relevant, 50)["map"]
    # A simple co-occurrence model (item-item on train) stands in for "any model that uses taste".
    matrix = np.zeros((len(user_index), len(tracks)))
    matrix[tu, ti] = 1.0
    scores_user = matrix[users] @ (matrix.T @ matrix)
    cooc_map = mean_metrics(top_k(scores_user, np.eye(len(tracks)), 50, exclude=seen), relevant, 50)["map"]
    assert cooc_map > 1.3 * pop_map


def test_same_seed_same_data_and_other_seed_differs():
    a, _ = generate(GeneratorConfig(users=200, items=100, holdout_users=20, seed=3))
    b, _ = generate(GeneratorConfig(users=200, items=100, holdout_users=20, seed=3))
    c, _ = generate(GeneratorConfig(users=200, items=100, holdout_users=20, seed=4))
    assert all(np.array_equal(a["train"][col], b["train"][col]) for col in C.RAW_COLUMNS)
    assert not np.array_equal(a["train"][C.USER_ID], c["train"][C.USER_ID])


def test_too_few_users_for_the_holdout_is_refused():
    with pytest.raises(ValueError, match="holdout_users=50 must be between 2 and the number of users"):
        generate(GeneratorConfig(users=20, items=100, holdout_users=50))


@pytest.mark.parametrize("fmt,suffix", [("parquet", ".parquet"), ("tsv", ".txt"), ("csv", ".csv")])
def test_cli_writes_every_format(tmp_path, fmt, suffix):
    manifest = main(out=str(tmp_path), fmt=fmt, users=100, items=60, holdout_users=10)
    for name in C.SPLITS:
        assert manifest["files"][name].endswith(name + suffix)
    assert json.loads((tmp_path / "manifest.json").read_text())["stats"]["train"]["users"] == 100
    if fmt == "tsv":
        first = (tmp_path / "train.txt").read_text().splitlines()[0].split("\t")
        assert len(first) == 3 and first[2].isdigit() and first[1].startswith("TR")


# --- the study's size: the preset's arithmetic and the streaming writes ---------------------------------


def test_the_study_preset_at_full_size_is_the_studys_shape():
    from music_recsys.data.generate import expected_train_rows, study_config

    cfg = study_config(1.0)
    assert (cfg.users, cfg.items, cfg.holdout_users) == (1_100_000, 385_000, 10_000)
    assert expected_train_rows(cfg) == pytest.approx(48_000_000, rel=1e-6)
    # ~44 tracks per user on average: 48M train rows plus the hidden half of 10K hold-out users' rows.
    assert 44.0 < cfg.mean_tracks < 44.7
    assert cfg.users * cfg.items > 500_000_000  # the candidate sampler, the one that streams block by block


@pytest.mark.parametrize("scale", [0.01, 0.001])
def test_expected_tracks_per_user_is_what_user_activity_draws(scale):
    """The closed form (floor and cap included) against 2M draws of the sampler itself."""
    from dataclasses import replace

    from music_recsys.data.generate import expected_tracks_per_user, study_config
    from music_recsys.data.sampling import user_activity

    cfg = study_config(scale)
    expected = expected_tracks_per_user(cfg.mean_tracks, cfg.min_tracks, cfg.items)
    drawn = user_activity(replace(cfg, users=2_000_000), np.random.default_rng(5)).mean()
    assert drawn == pytest.approx(expected, rel=0.01)
    # The study's 48M rows over 1.095M kept users' worth of histories, whatever the scale...
    assert expected == pytest.approx(48_000_000 / 1_095_000, rel=1e-6)
    # ...which at a small catalogue needs a much larger nominal mean: the cap (half the tracks) bites.
    if scale == 0.001:
        assert cfg.items == 385 and cfg.mean_tracks > 55


@pytest.fixture(params=["exact", "candidates"])
def sampler(request, monkeypatch):
    import music_recsys.data.sampling as datagen

    if request.param == "candidates":
        monkeypatch.setattr(datagen, "EXACT_SAMPLING_LIMIT", 0)
    return request.param


def test_a_scaled_down_study_has_the_scaled_size(tmp_path, sampler):
    from music_recsys.data.generate import expected_train_rows, study_config

    manifest = main(out=str(tmp_path), preset="study", scale=0.005)
    stats = manifest["stats"]
    assert manifest["config"]["users"] == 5500 and manifest["config"]["items"] == 1925
    assert manifest["preset"] == {"name": "study", "scale": 0.005, "expected_train_rows": 240_000}
    assert expected_train_rows(study_config(0.005)) == pytest.approx(240_000)
    # The Pareto tail's sample mean falls short of its expectation more often than not: a few % at 5.5K users.
    assert 0.95 * 240_000 < stats["train"]["rows"] < 1.03 * 240_000
    assert stats["train"]["users"] == 5500
    assert stats["validation"]["users"] == 25 and stats["test"]["users"] == 25
    assert all(manifest["bytes"][name] == Path(manifest["files"][name]).stat().st_size for name in C.SPLITS)


def test_the_streamed_files_hold_what_generate_returns(tmp_path, sampler, monkeypatch):
    """Row groups of 1,000 rows, and sampler blocks of ~100 users: the files, read back, are generate()'s
    splits row for row, and the hold-out users drawn before the first block are all there."""
    import pyarrow.parquet as pq

    import music_recsys.data.sampling as datagen
    import music_recsys.data.writers as writers

    monkeypatch.setattr(writers, "ROW_GROUP_ROWS", 1000)
    monkeypatch.setattr(datagen, "CANDIDATES_PER_BLOCK", 40_000)
    cfg = GeneratorConfig(users=1200, items=700, holdout_users=100, seed=11)
    splits, _ = generate(cfg)
    manifest = main(out=str(tmp_path), users=1200, items=700, holdout_users=100, seed=11)
    train = pq.ParquetFile(manifest["files"]["train"])
    assert train.metadata.num_row_groups > 5
    assert manifest["stats"]["validation"]["users"] == 50 and manifest["stats"]["test"]["users"] == 50
    for name in C.SPLITS:
        table = pq.read_table(manifest["files"][name])
        assert table.column_names == list(C.RAW_COLUMNS)
        for column in C.RAW_COLUMNS:
            assert np.array_equal(table[column].to_numpy(), splits[name][column]), (name, column)
        assert manifest["stats"][name]["rows"] == len(splits[name][C.COUNT])
        assert manifest["stats"][name]["users"] == len(np.unique(splits[name][C.USER_ID]))
        assert manifest["stats"][name]["tracks"] == len(np.unique(splits[name][C.TRACK_ID]))


def test_histogram_statistics_are_count_statistics():
    from music_recsys.data.writers import histogram_statistics

    for n in (1, 2, 7, 100_001):
        counts = sample_counts(np.random.default_rng(n), n)
        assert histogram_statistics(np.bincount(counts)) == pytest.approx(count_statistics(counts), rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "study", "users": 10}, "--preset study sets the size itself; drop --users"),
        (
            {"preset": "study", "scale": 1.5},
            r"--scale 1.5: give the fraction of the study's size to generate, in \(0, 1\]",
        ),
        ({"preset": "study", "scale": 0.0001}, "38 tracks cap a user at 19 tracks"),
        ({"scale": 0.1}, "--scale 0.1 applies to a preset; add --preset study"),
        ({"preset": "msd"}, "--preset 'msd': choose one of study"),
    ],
)
def test_preset_misuse_is_refused_with_the_fix(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        main(out=str(tmp_path / "never"), **kwargs)
    assert not (tmp_path / "never").exists()


def test_the_cli_takes_the_preset_and_names_a_bad_flag(tmp_path, capsys):
    from music_recsys.cli import main as cli_main

    out = tmp_path / "study"
    assert cli_main(["generate", "--preset", "study", "--scale", "0.002", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2,200 users" in printed and "written in" in printed
    assert json.loads((out / "manifest.json").read_text())["config"]["holdout_users"] == 20
    assert cli_main(["generate", "--preset", "study", "--items", "5", "--out", str(tmp_path / "x")]) == 2
    assert "drop --items" in capsys.readouterr().err
