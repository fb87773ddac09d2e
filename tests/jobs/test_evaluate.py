"""The evaluate job: its CLI (choices from the metric catalogue, no hidden default) and its metric path held to
Spark RankingMetrics and RankingEvaluator."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.evaluate import parse_args

REQUIRED = ["--index-dir", "idx", "--plan", "plan.json", "--k", "10", "--result", "out.json"]


def test_selection_metric_is_required():
    with pytest.raises(SystemExit):
        parse_args(REQUIRED)


@pytest.mark.parametrize("metric", ["map", "ndcg_at_k", "ndcg_graded_at_k", "mpr"])
def test_selection_metric_choices_are_the_catalogue_s(metric):
    assert parse_args([*REQUIRED, "--selection-metric", metric]).selection_metric == metric


def test_a_metric_that_cannot_select_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args([*REQUIRED, "--selection-metric", "coverage_at_k"])
    assert "invalid choice: 'coverage_at_k'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def held_out(spark, tmp_path_factory):
    """Users with factors, played (train) and held-out tracks; two users without factors (cold)."""
    from music_recsys import constants as C
    from music_recsys.evaluation.scoring import popularity_percentiles, segment_boundaries

    rng = np.random.default_rng(20)
    n_users, n_items, rank = 70, 60, 4
    users = np.abs(rng.normal(size=(n_users, rank))).astype(np.float32)
    items = np.abs(rng.normal(size=(n_items, rank))).astype(np.float32)
    seen = [np.sort(rng.choice(n_items, size=int(rng.integers(0, 15)), replace=False)) for _ in range(n_users)]
    # Held-out tracks overlap the played ones for some users, as a re-listen does.
    relevant = [np.sort(rng.choice(n_items, size=int(rng.integers(1, 12)), replace=False)) for _ in range(n_users)]
    counts = [rng.integers(1, 9, size=len(r)) for r in relevant]
    cold = {3, 40}
    work = tmp_path_factory.mktemp("parity")
    np.save(work / "items.npy", items)
    np.save(work / "popularity.npy", popularity_percentiles(rng.integers(0, 50, n_items).astype(np.float64)))
    # The columns the job's truth frame has (held-out tracks and counts, train plays, train history length).
    schema = f"{C.USER_IDX} int, relevant array<int>, counts array<bigint>, seen array<int>, n_train int"
    rows = [
        (u, relevant[u].tolist(), counts[u].tolist(), seen[u].tolist() or None, len(seen[u])) for u in range(n_users)
    ]
    truth = spark.createDataFrame(rows, schema)
    factors = spark.createDataFrame(
        [(u, users[u].tolist()) for u in range(n_users) if u not in cold], "id int, features array<float>"
    )
    return {
        "truth": truth,
        "factors": factors,
        "users": users,
        "items": items,
        "seen": seen,
        "relevant": relevant,
        "cold": cold,
        "boundaries": segment_boundaries(np.array([len(s) for s in seen])),
        "items_path": str(work / "items.npy"),
        "popularity_path": str(work / "popularity.npy"),
    }


@pytest.mark.spark
@pytest.mark.parametrize(("k", "exclude_seen"), [(10, True), (5, False), (80, True)])
def test_production_metrics_match_spark_ranking_metrics(spark, held_out, k, exclude_seen):
    """The evaluation's own path (mapInPandas -> score_block -> ranking_metrics -> summarise) against Spark's
    RankingMetrics and RankingEvaluator on the same recommendation lists; k=80 is past the catalogue."""
    from pyspark.ml.evaluation import RankingEvaluator
    from pyspark.mllib.evaluation import RankingMetrics

    from jobs.evaluate import score_split
    from music_recsys.evaluation.topk import top_k

    d = held_out
    overall, _ = score_split(
        spark,
        d["truth"],
        d["boundaries"],
        d["factors"],
        d["items_path"],
        d["popularity_path"],
        k,
        exclude_seen,
        len(d["items"]),
    )
    assert overall["n_users"] == len(d["users"]) and overall["n_cold_users"] == len(d["cold"])
    lists = top_k(d["users"], d["items"], k, exclude=d["seen"] if exclude_seen else None)
    # A cold user gets an empty list: every Spark metric 0 for them, as in our rows.
    pairs = [([] if u in d["cold"] else lists[u].tolist(), d["relevant"][u].tolist()) for u in range(len(d["users"]))]
    spark_metrics = RankingMetrics(spark.sparkContext.parallelize(pairs, 3))
    assert overall["map"] == pytest.approx(spark_metrics.meanAveragePrecision, abs=1e-9)
    assert overall["map_at_k"] == pytest.approx(spark_metrics.meanAveragePrecisionAt(k), abs=1e-9)
    assert overall["precision_at_k"] == pytest.approx(spark_metrics.precisionAt(k), abs=1e-9)
    assert overall["ndcg_at_k"] == pytest.approx(spark_metrics.ndcgAt(k), abs=1e-9)
    assert overall["recall_at_k"] == pytest.approx(spark_metrics.recallAt(k), abs=1e-9)
    assert 0.0 < overall["map"] < 1.0  # a case where the comparison means something

    frame = spark.createDataFrame(
        [([float(i) for i in p], [float(i) for i in r]) for p, r in pairs],
        "prediction array<double>, label array<double>",
    )
    evaluator = RankingEvaluator(k=k)
    for ours, name in (
        ("map", "meanAveragePrecision"),
        ("map_at_k", "meanAveragePrecisionAtK"),
        ("precision_at_k", "precisionAtK"),
        ("ndcg_at_k", "ndcgAtK"),
        ("recall_at_k", "recallAtK"),
    ):
        assert overall[ours] == pytest.approx(evaluator.setMetricName(name).evaluate(frame), abs=1e-9), name
