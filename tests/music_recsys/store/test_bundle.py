"""Model bundles: written whole or not at all, and a truncated or inconsistent bundle is refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from music_recsys.store.bundle import BundleError, model_version, played_csr, verify_bundle, write_bundle


def _inputs(tmp_path, n_users=5, n_items=7, rank=3):
    rng = np.random.default_rng(1)
    labels = {}
    for key, n in (("users", n_users), ("tracks", n_items)):
        labels[key] = tmp_path / f"{key}.parquet"
        pq.write_table(pa.table({"id": [f"{key[0]}{i}" for i in range(n)]}), labels[key])
    arrays = {
        "user_factors": rng.random((n_users, rank), dtype=np.float32),
        "item_factors": rng.random((n_items, rank), dtype=np.float32),
        "played_indptr": np.array([0, 2, 2, 3, 5, 6], dtype=np.int64),
        "played_indices": np.array([0, 3, 1, 2, 6, 4], dtype=np.int32),
        "popularity": np.arange(n_items, dtype=np.float32),
    }
    card = {"version": "v1", "params": {"rank": rank}, "n_users": n_users, "n_items": n_items}
    return arrays, labels, card


def test_written_bundle_verifies_and_records_its_files(tmp_path):
    arrays, labels, card = _inputs(tmp_path)
    target = write_bundle(tmp_path / "models" / "v1", arrays, labels, card, None, seed=1)
    written = verify_bundle(target)
    assert written["serving"] is None
    assert set(written["files"]) == {
        "user_factors.npy", "item_factors.npy", "played_indptr.npy", "played_indices.npy", "popularity.npy",
        "users.parquet", "tracks.parquet",
    }  # fmt: skip
    assert written["files"]["item_factors.npy"] == (target / "item_factors.npy").stat().st_size
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["v1"]  # no temporary folder left


def test_an_annoy_index_is_built_at_the_operating_point(tmp_path):
    arrays, labels, card = _inputs(tmp_path)
    point = {"metric": "angular_ip", "n_trees": 3, "search_k": 100, "candidates": 8, "k": 2}
    written = verify_bundle(write_bundle(tmp_path / "v1", arrays, labels, card, point, seed=1))
    assert written["serving"]["index"] == "items.ann" and written["serving"]["n_trees"] == 3
    assert written["files"]["items.ann"] > 0


def test_truncated_missing_or_inconsistent_bundles_are_refused(tmp_path):
    arrays, labels, card = _inputs(tmp_path)
    good = write_bundle(tmp_path / "good", arrays, labels, card, None, seed=1)

    truncated = tmp_path / "truncated"
    shutil.copytree(good, truncated)
    data = (truncated / "item_factors.npy").read_bytes()
    (truncated / "item_factors.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="item_factors.npy has .* bytes, the card says .* \\(truncated\\?\\)"):
        verify_bundle(truncated)

    missing = tmp_path / "missing"
    shutil.copytree(good, missing)
    (missing / "tracks.parquet").unlink()
    with pytest.raises(BundleError, match="tracks.parquet is missing"):
        verify_bundle(missing)

    inconsistent = tmp_path / "inconsistent"
    shutil.copytree(good, inconsistent)
    card_path = inconsistent / "model.json"
    card_path.write_text(json.dumps({**json.loads(card_path.read_text()), "n_users": 6}))
    with pytest.raises(BundleError, match="inconsistent with its card"):
        verify_bundle(inconsistent)

    with pytest.raises(BundleError, match="no model.json"):
        verify_bundle(tmp_path)


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    arrays, labels, card = _inputs(tmp_path)
    arrays["popularity"] = np.zeros(3, dtype=np.float32)  # does not match the 7 tracks
    with pytest.raises(BundleError, match="popularity"):
        write_bundle(tmp_path / "models" / "v1", arrays, labels, card, None, seed=1)
    assert list((tmp_path / "models").iterdir()) == []


def test_played_tracks_become_csr_sorted_per_user(tmp_path):
    pq.write_table(
        pa.table({"user_idx": [2, 0, 2, 0, 3], "item_idx": [5, 4, 1, 0, 2], "count": [1, 1, 1, 1, 1]}),
        tmp_path / "part.parquet",
    )
    indptr, indices = played_csr(tmp_path, n_users=4, n_items=6)
    assert indptr.tolist() == [0, 2, 2, 4, 5] and indices.tolist() == [0, 4, 1, 5, 2]


def test_versions_sort_by_logical_date_and_are_stable_per_run():
    a = model_version("manual__x", "2026-01-05T03:00:00+00:00")
    assert a.startswith("20260105T030000-") and a == model_version("manual__x", "2026-01-05T03:00:00+00:00")
    assert a != model_version("manual__y", "2026-01-05T03:00:00+00:00")
    assert a < model_version("manual__x", "2026-01-12T03:00:00+00:00")


def test_a_bundle_in_place_is_kept_only_when_made_from_the_same_inputs(tmp_path):
    """A retried publish keeps the bundle; a cleared run re-published on changed inputs writes it again."""
    arrays, labels, card = _inputs(tmp_path)
    target = write_bundle(tmp_path / "models" / "v1", arrays, labels, {**card, "inputs": "a"}, None, seed=1)
    stamp = (target / "model.json").stat().st_mtime_ns
    assert write_bundle(target, arrays, labels, {**card, "inputs": "a"}, None, seed=1) == target
    assert (target / "model.json").stat().st_mtime_ns == stamp  # kept as it was
    changed = {**arrays, "item_factors": arrays["item_factors"] * 2}
    write_bundle(target, changed, labels, {**card, "inputs": "b"}, None, seed=1)
    assert verify_bundle(target)["inputs"] == "b"
    np.testing.assert_array_equal(np.load(target / "item_factors.npy"), changed["item_factors"])
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["v1"]  # no old or temporary folder left
