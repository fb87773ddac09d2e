"""Run configuration: every DAG param defined once, validated, and the paths a run may read.

Each field of ``RunConfig`` carries its default, its JSON schema (bounds, enums), a description and a
form section. The DAG builds its ``Param``s from these fields, ``RunConfig.validate`` checks values
with the same schemas (jsonschema, as Airflow does), and the params table of docs/params.md is generated
from them (``music-recsys params``), so the trigger form, the validation and the docs cannot disagree.

Every path a user can pass must resolve inside ``RECSYS_DATA_ROOT`` or one of the colon-separated
roots in ``RECSYS_INPUT_ROOTS`` (``music_recsys.pipeline.paths``); the DAG validates here before any
Spark job starts. The field helpers and the schema check live in ``music_recsys.pipeline.params``.

``RunConfig`` is the one owner of a run's configuration: ``prepare`` validates it and saves it in the run
folder, and every later task reads it back with ``RunConfig.load(run_dir)``; lower layers are handed the
values they need (the registry's ``Policy``, a job's arguments), never this module.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from music_recsys import constants as C
from music_recsys.evaluation.catalogue import SELECTION_METRICS, selection_choices_text
from music_recsys.pipeline.params import ParamError, ParamSpec, canonical, check_param, describe_schema
from music_recsys.pipeline.params import grid as _grid
from music_recsys.pipeline.params import param as _param
from music_recsys.pipeline.params import path_param as _path
from music_recsys.pipeline.paths import resolve_input_path
from music_recsys.run_folders import RunLayout, read_json, write_json

# Airflow's max_map_length: a run maps at most this many fit tasks, and so a task fits at most this many.
MAX_MAPPED_TASKS = 1024


def _fmt_num(value: float) -> str:
    return f"{value:g}".replace("+", "")


@dataclass(frozen=True)
class TrialSpec:
    """One ALS point; ``str()`` gives the ``RANK,REG_PARAM,ALPHA,TRANSFORM`` form the fit job takes.

    The adaptive search's points also carry their own ``max_iter`` and the ``stage`` that fits them
    (``s1``, ``s2``: screening rounds; empty: the final round); ``str()`` then has six fields, and the trial
    id names both, so the same point fitted in two rounds keeps two folders. Grid points leave them None."""

    rank: int
    reg_param: float
    alpha: float
    transform: str
    max_iter: int | None = None
    stage: str | None = None

    @property
    def trial_id(self) -> str:
        base = f"r{self.rank}_reg{_fmt_num(self.reg_param)}_a{_fmt_num(self.alpha)}_{self.transform}"
        if self.max_iter is not None:
            base = f"{base}_it{self.max_iter}"
        return f"{self.stage}_{base}" if self.stage else base

    def as_dict(self) -> dict[str, Any]:
        point = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return {"trial_id": self.trial_id, **point}

    def __str__(self) -> str:
        text = f"{self.rank},{self.reg_param!r},{self.alpha!r},{self.transform}"
        if self.max_iter is None and self.stage is None:
            return text
        return f"{text},{'' if self.max_iter is None else self.max_iter},{self.stage or ''}"

    @classmethod
    def parse(cls, text: str) -> TrialSpec:
        """Inverse of ``str()``: ``"10,0.1,1.0,log1p"`` or ``"64,0.5,10.0,log1p,12,s1"``."""
        parts = text.split(",")
        if len(parts) not in (4, 6):
            raise ValueError(f"trial {text!r}: expected RANK,REG_PARAM,ALPHA,TRANSFORM[,MAX_ITER,STAGE]")
        rank, reg_param, alpha, transform = parts[:4]
        if transform not in C.TRANSFORMS:
            raise ValueError(f"trial {text!r}: transform must be one of {list(C.TRANSFORMS)}")
        max_iter, stage = (parts[4], parts[5]) if len(parts) == 6 else ("", "")
        return cls(
            int(rank), float(reg_param), float(alpha), transform, int(max_iter) if max_iter else None, stage or None
        )


# --- Param definitions (helpers in music_recsys.pipeline.params) ---------------------------------


@dataclass
class RunConfig:
    """Everything one run needs, validated. Field names are the DAG's param names."""

    train_path: str = _path(
        "msd_like/train.parquet",
        "Train play counts: parquet (user_id, count, track_id), MSD triplets TSV or CSV; relative to "
        "RECSYS_DATA_ROOT or absolute under an allowed root. May hold the run's date ({{ ds }}, {{ ds_nodash }}, "
        "{{ data_interval_end | ds }}, ...); nothing else is rendered.",
    )
    validation_path: str = _path(
        "msd_like/validation.parquet", "Validation play counts (the rest of the hold-out users' histories)."
    )
    test_path: str = _path("msd_like/test.parquet", "Test play counts (hold-out users not in validation).")
    sample_fraction: float = _param(
        1.0,
        "Share of non-hold-out train users kept (hold-out users always kept; the study used 0.2).",
        "Data",
        type="number",
        exclusiveMinimum=0,
        maximum=1,
    )
    max_reject_fraction: float = _param(
        0.01,
        "Ingest fails when a file has a larger share of invalid rows (they are quarantined either way).",
        "Data",
        type="number",
        minimum=0,
        maximum=1,
    )
    ranks: list[int] = _grid(
        list(C.DEFAULT_RANKS), "ALS ranks (latent factors).", {"type": "integer", "minimum": 1, "maximum": 1000}
    )
    reg_params: list[float] = _grid(
        list(C.DEFAULT_REG_PARAMS),
        "ALS regParam values (scaled by each user's and track's number of ratings, as in Spark).",
        {"type": "number", "exclusiveMinimum": 0, "maximum": 10000},
    )
    alphas: list[float] = _grid(
        list(C.DEFAULT_ALPHAS),
        "Implicit confidence scaling: confidence = 1 + alpha * rating.",
        {"type": "number", "minimum": 0, "maximum": 1000000},
    )
    transforms: list[str] = _grid(
        list(C.DEFAULT_TRANSFORMS),
        "How play counts become ALS ratings: none, log1p, drop (counts <= drop_threshold removed), log1p_drop.",
        {"type": "string", "enum": list(C.TRANSFORMS)},
    )
    search: str = _param(
        "grid",
        "How points are chosen: grid fits every point of ranks × reg_params × alphas × transforms; adaptive "
        f"proposes points (rank {C.SEARCH_RANK[0]}-{C.SEARCH_RANK[1]}, regParam {C.SEARCH_REG_PARAM[0]:g}-"
        f"{C.SEARCH_REG_PARAM[1]:g}, alpha {C.SEARCH_ALPHA[0]:g}-{C.SEARCH_ALPHA[1]:g} log-uniform, every "
        f"transform, max_iter {C.SEARCH_MAX_ITER[0]}-{C.SEARCH_MAX_ITER[1]}) with Optuna's TPE sampler, screens "
        f"them in {C.SCREEN_ROUNDS} cheaper rounds on a share of the users, and fits the best on the full data "
        "(docs/search.md).",
        "Search",
        type="string",
        enum=list(C.SEARCH_MODES),
    )
    search_budget_minutes: float = _param(
        30.0,
        "Adaptive search: wall time of all its fit rounds; rounds are planned from the fit seconds measured "
        "in the round before, and the final round always fits at least one point.",
        "Search",
        type="number",
        exclusiveMinimum=0,
        maximum=7 * 24 * 60,
    )
    search_max_fits: int = _param(
        60,
        "Adaptive search: most fits over all its rounds (screening and final).",
        "Search",
        type="integer",
        minimum=C.SCREEN_ROUNDS + 1,
        maximum=MAX_MAPPED_TASKS,
    )
    drop_threshold: int = _param(
        C.DEFAULT_DROP_THRESHOLD,
        "Counts <= this are removed by the drop transforms.",
        "Grid",
        type="integer",
        minimum=0,
        maximum=1000000,
    )
    max_iter: int = _param(C.DEFAULT_MAX_ITER, "ALS iterations.", "Grid", type="integer", minimum=1, maximum=100)
    nonnegative: bool = _param(
        C.DEFAULT_NONNEGATIVE,
        "Non-negative factors (NNLS solves, as in the study); false = unconstrained Cholesky solves, Spark's "
        "default, which scored higher and fit faster here (bench/RESULTS.md).",
        "Grid",
        type="boolean",
    )
    seed: int = _param(
        C.DEFAULT_SEED, "Random seed of sampling, ALS and Annoy.", "Grid", type="integer", minimum=0, maximum=2**31 - 1
    )
    k: int = _param(
        C.DEFAULT_K,
        "Recommendations per user (the study used 500).",
        "Evaluation",
        type="integer",
        minimum=1,
        maximum=10000,
    )
    exclude_seen: bool = _param(
        True, "Exclude tracks the user already played in train from recommendations.", "Evaluation", type="boolean"
    )
    selection_metric: str = _param(
        "map",
        f"Validation metric that picks the best grid point: {selection_choices_text()}; ties by ndcg_at_k, "
        "then trial id.",
        "Evaluation",
        type="string",
        enum=list(SELECTION_METRICS),
    )
    on_data_drift: str = _param(
        "fail",
        "When a drop's figures cross a threshold against the last good run: fail (stop before any fit) or "
        "warn (go on, record the verdict, do not promote the model).",
        "Data checks",
        type="string",
        enum=["fail", "warn"],
    )
    max_volume_change: float = _param(
        0.5,
        "Largest relative change of rows, users, tracks or plays of any split against the last good run.",
        "Data checks",
        type="number",
        exclusiveMinimum=0,
        maximum=100,
    )
    max_new_user_share: float = _param(
        0.5,
        "Largest share of train users not seen in the last good run.",
        "Data checks",
        type="number",
        minimum=0,
        maximum=1,
    )
    max_new_track_share: float = _param(
        0.25,
        "Largest share of train tracks not seen in the last good run.",
        "Data checks",
        type="number",
        minimum=0,
        maximum=1,
    )
    max_count_shift: float = _param(
        0.1,
        "Largest shift of a split's play-count distribution (total variation distance over count buckets).",
        "Data checks",
        type="number",
        minimum=0,
        maximum=1,
    )
    annoy_trees: list[int] = _grid(
        list(C.DEFAULT_ANNOY_TREES),
        "Annoy n_trees values.",
        {"type": "integer", "minimum": 1, "maximum": 1000},
        section="Fast search",
    )
    annoy_search_k: list[int] = _grid(
        list(C.DEFAULT_ANNOY_SEARCH_K),
        "Annoy search_k values; -1 = Annoy's default (n_trees * k), 0 is not allowed. Values past an "
        "exhaustive search are trimmed, and so are those above one that already found every top-k track "
        "from the index (slower at the same recall).",
        {"type": "integer", "minimum": -1, "maximum": 100000000, "not": {"const": 0}},
        section="Fast search",
    )
    annoy_max_queries: int = _param(
        2000,
        "At most this many validation users are the search queries.",
        "Fast search",
        type="integer",
        minimum=1,
        maximum=1000000,
    )
    annoy_target_recall: float = _param(
        0.9,
        "Recall@k the Annoy operating point must reach.",
        "Fast search",
        type="number",
        exclusiveMinimum=0,
        maximum=1,
    )
    promote: bool = _param(
        True,
        "Promote the run's best model to champion when it passes the gate; false publishes a candidate only.",
        "Publishing",
        type="boolean",
    )
    min_lift_over_popularity: float = _param(
        1.1,
        "The best point's test MAP must be at least this multiple of the popularity baseline's.",
        "Publishing",
        type="number",
        minimum=0,
        maximum=1000,
    )
    max_regression: float = _param(
        0.05,
        "Largest relative drop of test MAP below the champion's, when both were measured on the same data.",
        "Publishing",
        type="number",
        minimum=0,
        maximum=1,
    )
    require_approval: bool = _param(
        False,
        "A model that passes the gate waits for a person's approval (Airflow's Required Actions) before it "
        "becomes champion; rejected or unanswered, it stays a candidate.",
        "Publishing",
        type="boolean",
    )
    approval_timeout_hours: float = _param(
        24.0,
        "With require_approval: hours to wait for the decision before the model stays a candidate.",
        "Publishing",
        type="number",
        exclusiveMinimum=0,
        maximum=24 * 30,
    )
    batch_k: int = _param(
        50,
        "Tracks precomputed for every train user into the bundle's recommendations/ (played tracks excluded); 0 = off.",
        "Publishing",
        type="integer",
        minimum=0,
        maximum=1000,
    )
    batch_to_store: bool = _param(
        False,
        "Also bulk-load the batch recommendations into the results store's user_recommendations table.",
        "Publishing",
        type="boolean",
    )
    fits_per_task: int = _param(
        1,
        "Grid points fitted in one Spark application (one mapped fit task). 1 = a task per point (own retry, "
        "log and map index); more shares one Spark start and one data read among several points.",
        "Execution",
        type="integer",
        minimum=1,
        maximum=MAX_MAPPED_TASKS,
    )

    @classmethod
    def param_specs(cls) -> list[ParamSpec]:
        """Every param in form order: name, default, schema, description, section."""
        specs = []
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            specs.append(
                ParamSpec(f.name, default, f.metadata["schema"], f.metadata["description"], f.metadata["section"])
            )
        return specs

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RunConfig:
        """Build from DAG params and validate; an unknown key is refused (a typo would silently use a default)."""
        specs = {spec.name: spec for spec in cls.param_specs()}
        unknown = sorted(set(params) - set(specs))
        if unknown:
            hints = {n: difflib.get_close_matches(n, specs, n=1) for n in unknown}
            named = ", ".join(f"{n!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for n, h in hints.items())
            raise ParamError(f"params: unknown {named}; known params: {', '.join(specs)}")
        config = cls(**params)
        config.validate()
        return config

    def validate(self) -> None:
        """Check every param against its schema, resolve paths, put lists in a canonical order."""
        for spec in self.param_specs():
            check_param(spec, getattr(self, spec.name))
            if spec.is_path:
                setattr(self, spec.name, str(resolve_input_path(getattr(self, spec.name), name=spec.name)))
            else:
                setattr(self, spec.name, canonical(spec.schema, getattr(self, spec.name)))
        self.transforms = [t for t in C.TRANSFORMS if t in self.transforms]
        n = len(self.trials())
        if n > MAX_MAPPED_TASKS:
            raise ParamError(
                f"grid has {n} points; Airflow maps at most {MAX_MAPPED_TASKS} tasks (max_map_length): "
                f"shorten ranks, reg_params, alphas or transforms"
            )

    def trials(self) -> list[TrialSpec]:
        return [
            TrialSpec(rank, reg, alpha, transform)
            for transform, rank, reg, alpha in itertools.product(
                self.transforms, self.ranks, self.reg_params, self.alphas
            )
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, run_dir: str | Path) -> Path:
        """Write the validated configuration into the run folder (``config.json``)."""
        return write_json(RunLayout(run_dir).config, self.to_dict())

    @classmethod
    def load(cls, run_dir: str | Path) -> RunConfig:
        """The configuration ``prepare`` validated and saved for the run in ``run_dir``."""
        return cls(**read_json(RunLayout(run_dir).config))


def params_markdown() -> str:
    """The params table of docs/params.md, generated from the RunConfig fields."""
    lines = ["| param | default | allowed | meaning |", "|---|---|---|---|"]
    for spec in RunConfig.param_specs():
        default = json.dumps(spec.default)
        lines.append(f"| `{spec.name}` | `{default}` | {describe_schema(spec.schema)} | {spec.description} |")
    return "\n".join(lines)
