"""The model card: data fingerprint, library versions, and the card built from a run's evaluation."""

from __future__ import annotations

import copy

import pytest

from music_recsys.store.card import data_fingerprint, library_versions, lift, model_card, read_card

METRICS = ("map", "map_at_k", "precision_at_k", "ndcg_at_k", "recall_at_k", "ndcg_graded_at_k", "mpr")


def _ingest(train_rows=100, root="/d", checksum="c" * 64):
    def split(path, rows, users, tracks):
        profile = {"rows": rows, "users": users, "tracks": tracks, "plays": 999, "checksum": checksum}
        return {"path": f"{root}{path}", "profile": profile}

    return {
        "sample_fraction": 1.0,
        "splits": {
            "train": split("/train", train_rows, 10, 20),
            "validation": split("/validation", 30, 8, 15),
            "test": split("/test", 25, 7, 14),
        },
    }


def test_fingerprint_is_of_the_content_never_of_where_it_lies():
    a = data_fingerprint(_ingest())
    assert a["splits"]["train"] == {"rows": 100, "users": 10, "tracks": 20, "checksum": "c" * 64}
    assert len(a["hash"]) == 64 and a["sample_fraction"] == 1.0
    # The same files read from a moved data root are the same data.
    assert data_fingerprint(_ingest(root="/mnt/moved/data"))["hash"] == a["hash"]
    other_plays = _ingest()
    other_plays["splits"]["train"]["profile"]["plays"] = 1  # implied by the checksum, not hashed twice
    assert data_fingerprint(other_plays)["hash"] == a["hash"]
    assert data_fingerprint(_ingest(train_rows=101))["hash"] != a["hash"]
    assert data_fingerprint(_ingest(checksum="d" * 64))["hash"] != a["hash"]  # same counts, other rows
    sampled = {**_ingest(), "sample_fraction": 0.5, "seed": 1}
    assert data_fingerprint(sampled)["hash"] != data_fingerprint({**sampled, "seed": 2})["hash"]


def test_library_versions_name_missing_packages():
    versions = library_versions(("numpy", "no-such-package-here"))
    assert versions["no-such-package-here"] == "not installed"
    assert versions["numpy"][0].isdigit()


def _row(trial_id, split, value):
    return {"trial_id": trial_id, "split": split, **dict.fromkeys(METRICS, value), "coverage_at_k": 0.5}


EVALUATION = {
    "selection_metric": "map",
    "k": 10,
    "exclude_seen": True,
    "rows": [
        _row("t1", "validation", 0.3),
        _row("t1", "test", 0.2),
        _row("popularity", "validation", 0.1),
        _row("popularity", "test", 0.05),
        _row("t2", "validation", 0.9),
    ],
}
TRIAL = {"trial_id": "t1", "rank": 4, "reg_param": 0.1, "alpha": 5.0, "transform": "log1p"}
SETTINGS = {"nonnegative": False, "drop_threshold": 1, "max_iter": 10, "seed": 42}


def _card(**overrides):
    kwargs = {
        "version": "v1",
        "plan": {"run_id": "r1", "logical_date": "2026-01-01T00:00:00+00:00"},
        "trial": TRIAL,
        "settings": SETTINGS,
        "evaluation": EVALUATION,
        "fingerprint": data_fingerprint(_ingest()),
        "n_users": 10,
        "n_items": 20,
    }
    return model_card(**{**kwargs, **overrides})


def test_card_carries_the_point_its_settings_and_every_accuracy_metric():
    card = _card()
    assert card["params"] == {
        "rank": 4,
        "reg_param": 0.1,
        "alpha": 5.0,
        "transform": "log1p",
        "nonnegative": False,
        "drop_threshold": 1,
        "max_iter": 10,
        "seed": 42,
    }
    assert card["metrics"]["validation"] == dict.fromkeys(METRICS, 0.3)
    assert card["metrics"]["test"] == dict.fromkeys(METRICS, 0.2)
    assert card["popularity"] == {"validation": dict.fromkeys(METRICS, 0.1), "test": dict.fromkeys(METRICS, 0.05)}
    assert (card["trial_id"], card["run_id"], card["k"], card["selection_metric"]) == ("t1", "r1", 10, "map")
    assert card["data"]["hash"] == data_fingerprint(_ingest())["hash"]
    assert set(card["libraries"]) == {"music-recsys", "pyspark", "annoy", "numpy", "apache-airflow"}


def test_card_without_test_rows_says_so_and_bad_inputs_are_named():
    evaluation = copy.deepcopy(EVALUATION)
    evaluation["rows"] = [r for r in evaluation["rows"] if r["split"] == "validation"]
    card = _card(evaluation=evaluation)
    assert card["metrics"]["test"] is None and card["popularity"]["test"] is None
    with pytest.raises(ValueError, match=r"settings lack \['seed'\]"):
        _card(settings={k: v for k, v in SETTINGS.items() if k != "seed"})
    with pytest.raises(ValueError, match="trial 't3' has no validation row"):
        _card(trial={**TRIAL, "trial_id": "t3"})


def test_read_card_of_a_bundle_and_of_one_retention_removed(tmp_path):
    (tmp_path / "model.json").write_text('{"version": "v1", "n_users": 3}')
    assert read_card(str(tmp_path)) == {"version": "v1", "n_users": 3}
    assert read_card(str(tmp_path / "gone")) is None and read_card(None) is None
    (tmp_path / "model.json").write_text("{not json")
    assert read_card(str(tmp_path)) is None


def test_lift_over_popularity():
    assert lift(0.12, 0.04) == pytest.approx(3.0)
    assert lift(None, 0.04) is None and lift(0.12, 0.0) is None and lift(0.12, None) is None
