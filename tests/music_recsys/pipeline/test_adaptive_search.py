"""The adaptive search: round sizes from the budget and measured costs, successive halving, Optuna's
ask/tell with its study in the results store (SQLite and PostgreSQL), seeds from earlier runs, and grid
mode left as it was."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from music_recsys import constants as C
from music_recsys.pipeline import search
from music_recsys.pipeline.config import RunConfig, TrialSpec
from music_recsys.pipeline.plan import planned_trials, write_plan
from music_recsys.run_folders import RunLayout, read_json, write_json
from music_recsys.store.results import models
from tests.stores import open_store, sqlite_url

_runs = itertools.count()


def test_round_size_takes_an_equal_share_and_leaves_a_fit_for_each_later_round():
    # 300 s left over 3 rounds: 100 s this round, 10 s a fit -> 10 fits.
    assert search.round_size(300, 3, 10.0, 60) == 10
    assert search.round_size(300, 1, 10.0, 60) == 30  # the last round takes all that is left
    assert search.round_size(300, 3, 10.0, 6) == 4  # 6 fits left, one kept for each of the 2 later rounds
    assert search.round_size(0, 3, 10.0, 60) == 0  # the budget is spent: no more screening
    assert search.round_size(300, 3, 200.0, 60) == 0  # not one fit affordable


def test_successive_halving_keeps_a_third_and_at_least_one():
    assert [search.promoted_count(n) for n in (0, 1, 2, 3, 4, 9, 10, 30)] == [0, 1, 1, 1, 2, 3, 4, 10]


def test_cost_model_learns_the_slope_and_the_overhead_from_a_round():
    # Three fits whose seconds are exactly 1 + 1e-8 × units; the round took 30 s of wall time.
    trials = []
    for rank in (8, 16, 32):
        units = search.cost_units(rank, 10, 1000)
        trials.append({"rank": rank, "max_iter": 10, "n_ratings": 1000, "fit_seconds": 1 + 1e-8 * units})
    model = search.CostModel.measured([{"trials": trials, "wall_seconds": 30.0}], search.CostModel(1e-12, 5.0))
    assert model.per_unit == pytest.approx(1e-8)
    fitted = sum(1e-8 * search.cost_units(t["rank"], 10, 1000) for t in trials)
    assert model.overhead == pytest.approx((30.0 - fitted) / 3)
    assert model.seconds(16, 10, 1000) == pytest.approx(model.overhead + 1e-8 * search.cost_units(16, 10, 1000))
    # Never faster per unit than the prior (small fits are mostly fixed costs: a flat slope is noise).
    flat = [{**t, "fit_seconds": 2.0} for t in trials]
    assert search.CostModel.measured([{"trials": flat}], search.CostModel(3e-9, 5.0)).per_unit == 3e-9
    assert search.CostModel.measured([], search.CostModel(3e-9, 5.0)) == search.CostModel(3e-9, 5.0)


def test_a_search_point_names_its_round_and_iterations_and_a_grid_point_is_unchanged():
    grid = TrialSpec(10, 0.1, 1.0, "log1p")
    assert (grid.trial_id, str(grid), grid.as_dict()) == (
        "r10_reg0.1_a1_log1p",
        "10,0.1,1.0,log1p",
        {"trial_id": "r10_reg0.1_a1_log1p", "rank": 10, "reg_param": 0.1, "alpha": 1.0, "transform": "log1p"},
    )
    screened = TrialSpec(64, 0.5, 10.0, "log1p", 12, "s1")
    assert screened.trial_id == "s1_r64_reg0.5_a10_log1p_it12"
    assert TrialSpec.parse(str(screened)) == screened
    final = TrialSpec(64, 0.5, 10.0, "log1p", 12)
    assert (final.trial_id, TrialSpec.parse(str(final))) == ("r64_reg0.5_a10_log1p_it12", final)


def test_clip_point_moves_a_grid_champion_into_the_space():
    point = {"rank": 5, "reg_param": 100.0, "alpha": 0.01, "transform": "log1p", "max_iter": None}
    assert search.clip_point(point) == {"rank": 8, "reg_param": 10.0, "alpha": 0.1, "transform": "log1p",
                                        "max_iter": C.DEFAULT_MAX_ITER}  # fmt: skip


def _plan(data_root: Path, **params) -> dict:
    folder = data_root / "search_inputs"
    folder.mkdir(exist_ok=True)
    for split in ("train", "validation", "test"):
        (folder / f"{split}.txt").write_text("u\tt\t1\n")
    config = RunConfig.from_params(
        {**{f"{s}_path": f"search_inputs/{s}.txt" for s in ("train", "validation", "test")}, "k": 20, **params}
    )
    plan = write_plan(config, f"manual__search_{next(_runs)}", "2026-01-05T03:00:00+00:00")
    layout = RunLayout(plan["run_dir"])
    layout.stage_result("ingest").parent.mkdir(parents=True, exist_ok=True)
    write_json(layout.stage_result("ingest"), {"splits": {"train": {"rows_written": 1000}}})
    return plan


def test_grid_mode_proposes_no_screening_and_the_grid_as_the_final_round(data_root):
    plan = _plan(data_root, ranks=[4, 8], alphas=[1.0])
    assert search.propose(plan, 1) == [] and search.propose(plan, 2) == []
    assert search.propose(plan, search.FINAL_ROUND) == plan["fit_kwargs"] and len(plan["fit_kwargs"]) == 12
    assert not (Path(plan["run_dir"]) / "adaptive_search").exists()


def _fitted(round_plan_tasks: list[dict], scores: dict[str, float]) -> None:
    """What the fit job writes for each point of a round's tasks: success, seconds, its validation MAP."""
    for task in round_plan_tasks:
        args = task["application_args"]
        for text in (args[i + 1] for i, a in enumerate(args) if a == "--trial"):
            spec = TrialSpec.parse(text)
            result = Path(args[args.index("--run-dir") + 1]) / "results" / "fit" / f"{spec.trial_id}.json"
            value = scores.get(spec.trial_id)
            payload = {"status": "failed", "error": "lost"} if value is None else {
                "status": "success", "fit_seconds": 0.5, "n_ratings": 250,
                "validation": {"map": value, "map_at_k": value, "precision_at_k": 0.1, "ndcg_at_k": 0.2,
                               "n_users": 10, "n_cold_users": 0}}  # fmt: skip
            write_json(result, payload)


def _search_a_run(plan: dict, url: str) -> dict:
    """Three rounds with made-up scores: higher rank scores higher, one screening fit is lost."""
    clock = 1000.0
    first = search.propose(plan, 1, url=url, now=clock)
    round_1 = read_json(Path(plan["run_dir"]) / "adaptive_search" / "round_1.json")
    ids = [t["trial_id"] for t in round_1["trials"]]
    scores = {t["trial_id"]: t["rank"] / 1000 for t in round_1["trials"]}
    lost = ids[-1]
    del scores[lost]
    _fitted(first, scores)
    second = search.propose(plan, 2, url=url, now=clock + 20)
    assert search.propose(plan, 2, url=url, now=clock + 25) == second  # a retried task plans nothing new
    round_2 = read_json(Path(plan["run_dir"]) / "adaptive_search" / "round_2.json")
    _fitted(second, {t["trial_id"]: t["rank"] / 900 for t in round_2["trials"]})
    final = search.propose(plan, search.FINAL_ROUND, url=url, now=clock + 40)
    return {"round_1": round_1, "round_2": round_2, "final": final, "scores": scores, "lost": lost}


def _check_search(plan: dict, url: str) -> None:
    import optuna

    got = _search_a_run(plan, url)
    round_1, round_2 = got["round_1"], got["round_2"]
    assert round_1["fidelity"] == C.SCREEN_FRACTIONS[0] and round_2["fidelity"] == C.SCREEN_FRACTIONS[1]
    n1 = len(round_1["trials"])
    # The prior's cost before any fit: a third of 2 min at 15 s / fits_per_task 4 (+ ~0 s of ALS) a fit would
    # be 10 fits; a screening round takes at most half of the 16 fits left.
    assert n1 == 8
    # Successive halving: round 2 starts with round 1's best third (the lost fit is not among them).
    best = sorted(got["scores"], key=lambda t: -got["scores"][t])[: search.promoted_count(n1)]
    promoted = [t for t in round_2["trials"] if t["promoted_from"] is not None]
    assert ["s1_" + t["trial_id"][3:] for t in promoted] == best
    assert all(t["trial_id"].startswith("s2_") for t in round_2["trials"])
    # Round 2's size follows the measured costs and what is left of the budget; every task carries the
    # screening options; the fits stay within search_max_fits.
    assert all("--score-k" in t["application_args"] for t in search.read_rounds(plan["run_dir"])[1]["fit_kwargs"])
    final = read_json(Path(plan["run_dir"]) / "adaptive_search" / f"round_{search.FINAL_ROUND}.json")
    assert 1 <= len(final["trials"]) <= len(round_2["trials"])  # as many of round 2's as the budget affords
    assert sum(len(r["trials"]) for r in search.read_rounds(plan["run_dir"])) <= 16
    assert all("--score-k" not in t["application_args"] for t in got["final"])
    # The final round is what evaluate, fast_search and publish read from plan.json.
    assert [t["trial_id"] for t in planned_trials(plan)] == [t["trial_id"] for t in final["trials"]]
    assert planned_trials(plan)[0]["trial_id"] == max(round_2["trials"], key=lambda t: t["rank"])["trial_id"][3:]
    # Optuna's study in the results store: every screening fit told, the lost one as failed.
    study = optuna.load_study(study_name=search.study_name(plan["run_id"]), storage=url)
    by_number = {t.number: t for t in study.trials}
    for t in round_1["trials"]:
        state = by_number[t["number"]].state
        assert state == (
            optuna.trial.TrialState.FAIL if t["trial_id"] == got["lost"] else optuna.trial.TrialState.COMPLETE
        )
    scored = [{"trial_id": t["trial_id"], "split": "validation", "map": 0.5} for t in final["trials"]]
    evaluation = {"selection_metric": "map", "k": 20, "exclude_seen": True, "rows": scored}
    search.tell_final(plan, evaluation, url)
    study = optuna.load_study(study_name=search.study_name(plan["run_id"]), storage=url)
    finals = [t for t in study.trials if t.number in {f["number"] for f in final["trials"]}]
    assert [t.value for t in finals] == [0.5] * len(finals)
    rows = search.screening_rows(plan, evaluation)
    assert len(rows) == len(round_1["trials"]) + len(round_2["trials"])
    lost = next(r for r in rows if r["trial_id"] == got["lost"])
    assert (lost["status"], lost["round"], lost["fidelity"], lost["map"]) == ("failed", 1, C.SCREEN_FRACTIONS[0], None)


def test_the_search_runs_its_rounds_through_optuna_on_sqlite(data_root, tmp_path):
    url = sqlite_url(tmp_path)
    open_store(url).close()
    plan = _plan(data_root, search="adaptive", search_budget_minutes=2.0, search_max_fits=16,
                 fits_per_task=4)  # fmt: skip
    _check_search(plan, url)


@pytest.mark.postgres
def test_the_search_runs_its_rounds_through_optuna_on_postgres(data_root, postgres_url):
    open_store(postgres_url).close()
    plan = _plan(data_root, search="adaptive", search_budget_minutes=2.0, search_max_fits=16,
                 fits_per_task=4)  # fmt: skip
    _check_search(plan, postgres_url)


def test_a_spent_budget_still_ends_with_one_final_point(data_root, tmp_path):
    url = sqlite_url(tmp_path)
    open_store(url).close()
    plan = _plan(data_root, search="adaptive", search_budget_minutes=0.05, search_max_fits=5)
    first = search.propose(plan, 1, url=url, now=0.0)
    _fitted(first, {})  # every fit of round 1 lost (if there was one)
    assert search.propose(plan, 2, url=url, now=600.0) == []  # the budget is spent: round 2 skipped
    final = search.propose(plan, search.FINAL_ROUND, url=url, now=601.0)
    assert len(final) == 1 and len(planned_trials(plan)) == 1


def test_a_retrained_run_starts_from_the_champion_and_earlier_searches(data_root, tmp_path):
    url = sqlite_url(tmp_path)
    with open_store(url) as store:
        champion = {"model_version": "v1", "run_id": "old", "trial_id": "r20_reg0.1_a1_log1p", "status": "champion",
                    "path": "models/v1"}  # fmt: skip
        store.transaction(lambda conn: conn.execute(models.insert().values(champion)))
        store.upsert("als_trials", [
            {"run_id": "old", "trial_id": "r20_reg0.1_a1_log1p", "split": "validation", "model": "als", "rank": 20,
             "reg_param": 0.1, "alpha": 1.0, "transform": "log1p", "status": "success", "map": 0.3},
            {"run_id": "older", "trial_id": "r90_reg0.5_a30_none_it12", "split": "validation", "model": "als",
             "rank": 90, "reg_param": 0.5, "alpha": 30.0, "transform": "none", "max_iter": 12, "round": 3,
             "fidelity": 1.0, "status": "success", "map": 0.33},
        ])  # fmt: skip
    assert search.seed_points(url, "new") == [
        {"rank": 20, "reg_param": 0.1, "alpha": 1.0, "transform": "log1p", "max_iter": C.DEFAULT_MAX_ITER},
        {"rank": 90, "reg_param": 0.5, "alpha": 30.0, "transform": "none", "max_iter": 12},
    ]
    plan = _plan(data_root, search="adaptive", search_budget_minutes=2.0, search_max_fits=16)
    search.propose(plan, 1, url=url, now=0.0)
    first = read_json(Path(plan["run_dir"]) / "adaptive_search" / "round_1.json")["trials"]
    assert [t["trial_id"] for t in first[:2]] == ["s1_r20_reg0.1_a1_log1p_it10", "s1_r90_reg0.5_a30_none_it12"]


def test_the_search_refuses_a_store_that_is_airflows_metadata_database(tmp_path):
    import sqlalchemy as sa

    from music_recsys.errors import InputError

    url = sqlite_url(tmp_path)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE dag_run (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(InputError, match="also Airflow's metadata database.*database of its own"):
        search.load_study(url, "run", 0)
