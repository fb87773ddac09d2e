"""The adaptive search (param ``search: adaptive``): rounds of mapped fits chosen by Optuna, within a budget.

The DAG runs ``C.SCREEN_ROUNDS`` screening rounds and then the final round, each an ordinary mapped stage:
``propose_round_1`` → ``screen_round_1`` → ``propose_round_2`` → ``screen_round_2`` → ``grid_points`` →
``fit`` → ``evaluate``. A screening fit trains on the validation users and a share of the other users
(``C.SCREEN_FRACTIONS``) and scores its own validation metrics (``jobs/fit_als.py --score-k``); the final
round fits on the full data and ``evaluate`` selects on validation as in grid mode.

Proposals come from Optuna's ask/tell interface (TPE sampler), the study stored in the results store (one
study per run, ``study_name``), so the orchestrator decides where fits run and the study survives a
restart. Each (point, round) is one Optuna trial, told its validation score when its round ends; a round
keeps the best ``1/C.SEARCH_ETA`` of the round before (successive halving) and fills the rest of its
share of the budget with new TPE proposals. Rounds are sized from the remaining budget and the measured
cost of the rounds before (``CostModel``: seconds ≈ overhead + c × ratings × iterations × rank²-ish); the
final round always fits at least one point. A retrained run first enqueues the champion's point and the
best points of earlier searches (``seed_points``).

In grid mode every propose task returns no proposals (the screening stages are skipped) and ``grid_points``
returns the grid's fit tasks, as before.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from music_recsys import constants as C
from music_recsys.errors import InputError
from music_recsys.pipeline.config import RunConfig, TrialSpec
from music_recsys.pipeline.plan import fit_kwargs, trial_entry
from music_recsys.run_folders import RunLayout, read_json, write_json

log = logging.getLogger(__name__)

FINAL_ROUND = C.SCREEN_ROUNDS + 1
# Before any fit was measured: seconds per cost unit (``cost_units``) and per task start. From
# bench/RESULTS.md (rank 128, 918K ratings, 10 iterations, native BLAS: ~120 s) and spark-submit's start.
PRIOR_SECONDS_PER_UNIT = 6.5e-10
PRIOR_TASK_OVERHEAD_SECONDS = 15.0
# Screening metrics the rounds can rank by; other selection metrics rank screening fits by MAP.
SCREEN_RANKED = ("map", "map_at_k", "precision_at_k", "ndcg_at_k")


def study_name(run_id: str) -> str:
    return f"music_recsys.search.{run_id}"


def stage_of(round_no: int) -> str | None:
    """Trial-id prefix of a round's points: ``s1``, ``s2``; the final round has none."""
    return None if round_no == FINAL_ROUND else f"s{round_no}"


def user_fraction(round_no: int) -> float:
    return 1.0 if round_no == FINAL_ROUND else C.SCREEN_FRACTIONS[round_no - 1]


def cost_units(rank: int, max_iter: int, n_ratings: float) -> float:
    """Relative cost of a fit: Spark's implicit ALS builds each normal equation from rank-1 updates
    (nnz × rank²) and solves one rank × rank system per user and item; the linear term keeps small ranks
    from looking free."""
    return n_ratings * max_iter * (rank * rank + 32 * rank)


@dataclass(frozen=True)
class CostModel:
    """Wall seconds one more fit adds to a round: ``overhead + per_unit × cost_units``."""

    per_unit: float
    overhead: float

    def seconds(self, rank: int, max_iter: int, n_ratings: float) -> float:
        return self.overhead + self.per_unit * cost_units(rank, max_iter, n_ratings)

    @classmethod
    def prior(cls, fits_per_task: int) -> CostModel:
        return cls(PRIOR_SECONDS_PER_UNIT, PRIOR_TASK_OVERHEAD_SECONDS / fits_per_task)

    @classmethod
    def measured(cls, rounds: list[dict[str, Any]], fallback: CostModel) -> CostModel:
        """From the fits of finished rounds. ``per_unit``: the slope of fit seconds against cost units
        (least squares with an intercept, since small fits are mostly fixed costs), never below the
        prior's (measured on a large fit, where the units dominate). ``overhead``: what each round's wall
        time per fit had beyond ``per_unit × units`` (task starts, data reads, scoring, the fixed part of
        a fit; parallel tasks make it smaller), the largest over the rounds."""
        fits = [t for r in rounds for t in r["trials"] if t.get("fit_seconds") and t.get("n_ratings")]
        if not fits:
            return fallback
        units = [cost_units(t["rank"], t["max_iter"], t["n_ratings"]) for t in fits]
        seconds = [t["fit_seconds"] for t in fits]
        per_unit = fallback.per_unit
        if len(fits) >= 3:
            mean_u, mean_s = sum(units) / len(units), sum(seconds) / len(seconds)
            var = sum((u - mean_u) ** 2 for u in units)
            if var > 0:
                slope = sum((u - mean_u) * (s - mean_s) for u, s in zip(units, seconds, strict=True)) / var
                per_unit = max(per_unit, slope)
        overheads = []
        for r in rounds:
            done = [t for t in r["trials"] if t.get("fit_seconds") and t.get("n_ratings")]
            if r.get("wall_seconds") and done:
                fitted = sum(per_unit * cost_units(t["rank"], t["max_iter"], t["n_ratings"]) for t in done)
                overheads.append(max(0.0, (r["wall_seconds"] - fitted) / len(r["trials"])))
        return cls(per_unit, max(overheads) if overheads else fallback.overhead)


def round_size(remaining_seconds: float, rounds_left: int, seconds_per_fit: float, fits_left: int) -> int:
    """Fits this round can afford: an equal share of the remaining budget over the rounds left (the last
    round takes all of it), at most the fits left after one for each later round; 0 when none fits."""
    if remaining_seconds <= 0 or fits_left <= 0:
        return 0
    share = remaining_seconds / rounds_left
    affordable = int(share // max(seconds_per_fit, 1e-9))
    return max(0, min(affordable, fits_left - (rounds_left - 1)))


def promoted_count(previous: int) -> int:
    """Successive halving: the points of a round that go on to the next, higher-fidelity one."""
    return max(1, math.ceil(previous / C.SEARCH_ETA)) if previous else 0


# --- Optuna --------------------------------------------------------------------------------------


def load_study(url: str, run_id: str, seed: int):
    """The run's study in the results store (created on first use; Optuna's tables live beside ours).

    Optuna versions its tables in ``alembic_version``, the table Airflow's metadata uses too, so the
    search refuses a results store that shares Airflow's database instead of corrupting either."""
    import optuna
    import sqlalchemy as sa

    from music_recsys.store.engine import connect_engine

    engine = connect_engine(url)
    try:
        with engine.connect() as conn:
            shared = "dag_run" in sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()
    if shared:
        where = sa.engine.make_url(url).render_as_string(hide_password=True)
        raise InputError(
            f"results store {where} is also Airflow's metadata database (it has dag_run): the adaptive search "
            "keeps its Optuna study there, and Optuna's alembic_version table would clash with Airflow's; give "
            "the recsys_results connection a database of its own, or run with search: grid"
        )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # multivariate TPE is "experimental" in Optuna 5, and the advised setting
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True, group=True)
    return optuna.create_study(
        storage=url, study_name=study_name(run_id), direction="maximize", sampler=sampler, load_if_exists=True
    )


def suggest_point(trial) -> dict[str, Any]:
    """The search space: rank, regParam and alpha log-uniform, every transform, iterations."""
    return {
        "rank": trial.suggest_int("rank", *C.SEARCH_RANK, log=True),
        "reg_param": trial.suggest_float("reg_param", *C.SEARCH_REG_PARAM, log=True),
        "alpha": trial.suggest_float("alpha", *C.SEARCH_ALPHA, log=True),
        "transform": trial.suggest_categorical("transform", list(C.TRANSFORMS)),
        "max_iter": trial.suggest_int("max_iter", *C.SEARCH_MAX_ITER),
    }


def clip_point(point: dict[str, Any]) -> dict[str, Any]:
    """A point moved inside the search space (a grid champion may have rank 5)."""

    def clip(value, bounds):
        return min(max(value, bounds[0]), bounds[1])

    return {
        "rank": int(clip(int(point["rank"]), C.SEARCH_RANK)),
        "reg_param": float(clip(float(point["reg_param"]), C.SEARCH_REG_PARAM)),
        "alpha": float(clip(float(point["alpha"]), C.SEARCH_ALPHA)),
        "transform": point["transform"] if point["transform"] in C.TRANSFORMS else "none",
        "max_iter": int(clip(int(point.get("max_iter") or C.DEFAULT_MAX_ITER), C.SEARCH_MAX_ITER)),
    }


def seed_points(url: str, run_id: str, limit: int = 3) -> list[dict[str, Any]]:
    """Where a retrained run starts: the champion's point, then the best final-round points of earlier
    adaptive searches in this results store (by validation MAP)."""
    import sqlalchemy as sa

    from music_recsys.store.engine import connect_engine
    from music_recsys.store.results import als_trials, models

    t = als_trials
    point_columns = (t.c.rank, t.c.reg_param, t.c.alpha, t.c.transform, t.c.max_iter)
    engine = connect_engine(url)
    try:
        with engine.connect() as conn:
            champion = conn.execute(
                sa.select(*point_columns)
                .join(models, sa.and_(models.c.run_id == t.c.run_id, models.c.trial_id == t.c.trial_id))
                .where(models.c.status == "champion", t.c.split == "validation", t.c.model == "als")
            ).first()
            earlier = conn.execute(
                sa.select(*point_columns)
                .where(
                    t.c.round == FINAL_ROUND,
                    t.c.split == "validation",
                    t.c.status == "success",
                    t.c.run_id != run_id,
                    t.c.map.is_not(None),
                )
                .order_by(t.c.map.desc())
                .limit(limit)
            ).all()
    finally:
        engine.dispose()
    points = []
    for row in ([champion] if champion else []) + list(earlier):
        point = clip_point(dict(row._mapping))
        if point not in points:
            points.append(point)
    return points


# --- Rounds --------------------------------------------------------------------------------------


def _round_path(layout: RunLayout, round_no: int) -> Path:
    return layout.root / "adaptive_search" / f"round_{round_no}.json"


def read_rounds(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every round the search planned so far, with each trial's fit result merged in."""
    layout = RunLayout(run_dir)
    rounds = []
    for round_no in range(1, FINAL_ROUND + 1):
        path = _round_path(layout, round_no)
        if path.exists():
            rounds.append(with_results(read_json(path)))
    return rounds


def with_results(round_plan: dict[str, Any]) -> dict[str, Any]:
    """A round with each trial's fit status, fit seconds, training rows and validation scores (if fitted)."""
    trials = []
    for trial in round_plan["trials"]:
        path = Path(trial["result"])
        fit = read_json(path) if path.exists() else {"status": "missing", "error": "fit task produced no result"}
        trials.append(
            {
                **trial,
                "status": fit.get("status"),
                "error": fit.get("error"),
                "fit_seconds": fit.get("fit_seconds"),
                "n_ratings": fit.get("n_ratings"),
                "validation": fit.get("validation"),
            }
        )
    return {**round_plan, "trials": trials}


def screen_metric(config: RunConfig) -> str:
    return config.selection_metric if config.selection_metric in SCREEN_RANKED else "map"


def ranked(trials: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Scored trials, best first (ties by trial id, so the order is the same on every retry)."""
    scored = [t for t in trials if t.get("status") == "success" and (t.get("validation") or {}).get(metric) is not None]
    return sorted(scored, key=lambda t: (-t["validation"][metric], t["trial_id"]))


def _point(trial: dict[str, Any]) -> dict[str, Any]:
    return {k: trial[k] for k in ("rank", "reg_param", "alpha", "transform", "max_iter")}


def _train_rows(layout: RunLayout) -> int:
    """Train rows as ingest wrote them (the index keeps every one): round 1 is planned beside the index."""
    return int(read_json(layout.stage_result("ingest"))["splits"]["train"]["rows_written"])


def _tell(study, round_plan: dict[str, Any], metric: str) -> None:
    """Tell Optuna each of a round's results (a lost fit as failed); a retried task tells nothing twice."""
    from optuna.trial import TrialState

    for trial in round_plan["trials"]:
        value = (trial.get("validation") or {}).get(metric)
        if trial.get("status") == "success" and value is not None:
            study.tell(trial["number"], value, skip_if_finished=True)
        else:
            study.tell(trial["number"], state=TrialState.FAIL, skip_if_finished=True)


def propose(plan: dict[str, Any], round_no: int, url: str | None = None, now: float | None = None) -> list[dict]:
    """The fit tasks of round ``round_no`` (1..``FINAL_ROUND``); [] for screening rounds in grid mode, the
    grid's tasks for the final round. Idempotent: a retried task returns the round it planned before."""
    config = RunConfig.load(plan["run_dir"])
    if config.search == "grid":
        return plan["fit_kwargs"] if round_no == FINAL_ROUND else []
    layout = RunLayout(plan["run_dir"])
    path = _round_path(layout, round_no)
    if path.exists():
        return read_json(path)["fit_kwargs"]
    from music_recsys.store.results import results_url

    url = url or results_url()
    now = time.time() if now is None else now
    study = load_study(url, plan["run_id"], config.seed)
    metric = screen_metric(config)
    previous = read_rounds(plan["run_dir"])
    if previous:
        previous[-1]["wall_seconds"] = now - previous[-1]["planned_at"]
        _tell(study, previous[-1], metric)
        write_json(_round_path(layout, previous[-1]["round"]), {**previous[-1], "trials": [
            {k: v for k, v in t.items() if k not in ("status", "error", "fit_seconds", "n_ratings", "validation")}
            for t in previous[-1]["trials"]]})  # fmt: skip
        started = previous[0]["planned_at"]
    else:
        started = now
        for point in seed_points(url, plan["run_id"]):
            study.enqueue_trial(point, skip_if_exists=True)
    budget = config.search_budget_minutes * 60.0
    remaining = budget - (now - started)
    fits_done = sum(len(r["trials"]) for r in previous)
    fits_left = config.search_max_fits - fits_done
    rounds_left = FINAL_ROUND - round_no + 1
    cost = CostModel.measured(previous, CostModel.prior(config.fits_per_task))
    fraction = user_fraction(round_no)
    full_rows = _train_rows(layout)
    rows = full_rows * fraction  # hold-out users are always kept, so a screening round reads a little more
    scored = ranked(previous[-1]["trials"], metric) if previous else []

    # The points of the round before (or the enqueued seeds) as the cost of a typical fit here.
    typical = [_point(t) for t in scored] or [clip_point({"rank": 32, "reg_param": 1, "alpha": 10,
                                                          "transform": "log1p", "max_iter": 10})]  # fmt: skip
    per_fit = sum(cost.seconds(p["rank"], p["max_iter"], rows) for p in typical) / len(typical)
    n = round_size(remaining, rounds_left, per_fit, fits_left)
    if round_no < FINAL_ROUND:
        # A screening round takes at most half of the fits left: round 1 is sized from the prior alone,
        # and a machine slower than the prior must not let it spend the whole search.
        n = min(n, math.ceil(fits_left / 2))
    points: list[tuple[dict[str, Any], int | None]] = []  # (point, promoted from Optuna trial number)
    if round_no == FINAL_ROUND:
        # The last rung: the best of the round before, as many as the rest of the budget affords (measured
        # here, a third of round 2 left a fifth of the budget unspent: bench/RESULTS.md).
        keep = max(1, n)
        points = [(_point(t), t["number"]) for t in scored[:keep]]
        if not points:  # nothing was screened (no budget, or every screening fit was lost)
            best_earlier = [t for r in previous for t in ranked(r["trials"], metric)]
            points = [(_point(best_earlier[0]), best_earlier[0]["number"])] if best_earlier else []
    elif n:
        promote = min(n, promoted_count(len(previous[-1]["trials"]))) if previous else 0
        points = [(_point(t), t["number"]) for t in scored[:promote]]
    # Promoted points are re-asked with their params fixed; new TPE proposals fill the rest of the round.
    trials = _ask_points(study, [p for p, _ in points], [parent for _, parent in points])
    if round_no < FINAL_ROUND:
        trials += _ask_points(study, [None] * max(0, n - len(trials)), [None] * max(0, n - len(trials)))
    elif not trials:
        trials = _ask_points(study, [None], [None])
    specs, entries = [], []
    for number, point, parent in trials:
        spec = TrialSpec(point["rank"], point["reg_param"], point["alpha"], point["transform"], point["max_iter"],
                         stage_of(round_no))  # fmt: skip
        if any(s == spec for s in specs):  # TPE can propose a point twice; fit it once
            from optuna.trial import TrialState

            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            continue
        specs.append(spec)
        entry = trial_entry(config, layout, spec)
        entries.append({**entry, "number": number, "promoted_from": parent, "round": round_no, "fidelity": fraction})
    if round_no == FINAL_ROUND:
        extra: list[str] = []
    else:
        extra = ["--user-fraction", repr(fraction), "--score-k", str(config.k)]
        if not config.exclude_seen:
            extra.append("--keep-seen")
    tasks = fit_kwargs(config, layout, specs, extra)
    round_plan = {
        "round": round_no,
        "stage": stage_of(round_no),
        "fidelity": fraction,
        "planned_at": now,
        "search_started_at": started,
        "budget_seconds": budget,
        "remaining_seconds": remaining,
        "cost_model": {"per_unit": cost.per_unit, "overhead": cost.overhead, "seconds_per_fit": per_fit},
        "metric": metric,
        "trials": entries,
        "fit_kwargs": tasks,
    }
    write_json(path, round_plan)
    if round_no == FINAL_ROUND:
        # evaluate, fast_search and publish read the final round's trials from plan.json.
        run_plan = read_json(layout.plan)
        write_json(layout.plan, {**run_plan, "trials": entries, "fit_kwargs": tasks})
    log.info(
        "search round %d: %d fits at fidelity %.2f (%.0f s of %.0f s left, ~%.1f s per fit)",
        round_no, len(entries), fraction, remaining, budget, per_fit,
    )  # fmt: skip
    return tasks


def _ask_points(study, points: list[dict | None], parents: list[int | None]) -> list[tuple[int, dict, int | None]]:
    """Ask Optuna for one trial per entry: a fixed point (promoted) or a new TPE proposal (None)."""
    out = []
    for point, parent in zip(points, parents, strict=True):
        if point is not None:
            study.enqueue_trial(point)
        trial = study.ask()
        out.append((trial.number, suggest_point(trial), parent))
    return out


def tell_final(plan: dict[str, Any], evaluation: dict[str, Any], url: str | None = None) -> None:
    """Tell Optuna the final round's full-data validation scores (``record`` calls it)."""
    config = RunConfig.load(plan["run_dir"])
    if config.search == "grid":
        return
    from music_recsys.store.results import results_url

    rounds = read_rounds(plan["run_dir"])
    final = next((r for r in rounds if r["round"] == FINAL_ROUND), None)
    if final is None:
        return
    study = load_study(url or results_url(), plan["run_id"], config.seed)
    metric = evaluation["selection_metric"]
    by_id = {r["trial_id"]: r for r in evaluation["rows"] if r["split"] == "validation"}
    from optuna.trial import TrialState

    for trial in final["trials"]:
        value = (by_id.get(trial["trial_id"]) or {}).get(metric)
        if value is None:
            study.tell(trial["number"], state=TrialState.FAIL, skip_if_finished=True)
        else:
            study.tell(trial["number"], -value if metric == "mpr" else value, skip_if_finished=True)


def screening_rows(plan: dict[str, Any], evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """``als_trials`` rows of the screening rounds' fits (validation only, their own fidelity)."""
    config = RunConfig.load(plan["run_dir"])
    if config.search == "grid":
        return []
    rows = []
    for r in read_rounds(plan["run_dir"]):
        if r["round"] == FINAL_ROUND:
            continue
        for t in r["trials"]:
            scores = t.get("validation") or {}
            rows.append(
                {
                    **_point(t),
                    "trial_id": t["trial_id"],
                    "model": "als",
                    "split": "validation",
                    "round": r["round"],
                    "fidelity": r["fidelity"],
                    "k": evaluation["k"],
                    "exclude_seen": evaluation["exclude_seen"],
                    "nonnegative": t.get("nonnegative"),
                    **{m: scores.get(m) for m in SCREEN_RANKED},
                    "n_users": scores.get("n_users"),
                    "n_cold_users": scores.get("n_cold_users"),
                    "fit_seconds": t.get("fit_seconds"),
                    "status": "success" if t.get("status") == "success" and scores else (t.get("status") or "missing"),
                    "error": t.get("error"),
                }
            )
    return rows


def search_summary(run_dir: str | Path, evaluation: dict[str, Any]) -> dict[str, Any] | None:
    """What the report shows of an adaptive search: every trial in fit order with its round, fidelity,
    fit seconds and validation score, the rounds, and the chosen point; None in grid mode."""
    rounds = read_rounds(run_dir)
    if not rounds:
        return None
    metric = evaluation["selection_metric"]
    final_rows = {r["trial_id"]: r for r in evaluation["rows"] if r["split"] == "validation"}
    trials, summary_rounds = [], []
    for r in rounds:
        for t in r["trials"]:
            if r["round"] == FINAL_ROUND:
                value = (final_rows.get(t["trial_id"]) or {}).get(metric)
            else:
                value = (t.get("validation") or {}).get(r.get("metric", "map"))
            trials.append({**_point(t), "trial_id": t["trial_id"], "round": r["round"], "fidelity": r["fidelity"],
                           "fit_seconds": t.get("fit_seconds"), "value": value, "status": t.get("status")})  # fmt: skip
        values = [t["value"] for t in trials if t["round"] == r["round"] and t["value"] is not None]
        summary_rounds.append(
            {
                "round": r["round"],
                "fidelity": r["fidelity"],
                "fits": len(r["trials"]),
                "fit_seconds": sum(t.get("fit_seconds") or 0.0 for t in r["trials"]),
                "best": max(values) if values else None,
                "remaining_seconds": r["remaining_seconds"],
                "seconds_per_fit_planned": r["cost_model"]["seconds_per_fit"],
            }
        )
    return {
        "metric": metric,
        "budget_seconds": rounds[0]["budget_seconds"],
        "trials": trials,
        "rounds": summary_rounds,
        "chosen": evaluation.get("best_trial_id"),
    }
