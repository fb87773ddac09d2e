"""Run configuration: the DAG's params as a validated dataclass, the ALS grid, and safe paths.

Every path a user can pass must resolve inside ``RECSYS_DATA_ROOT`` or one of the colon-separated
roots in ``RECSYS_INPUT_ROOTS``; every number is bounded; transforms come from a fixed enum. The DAG
validates here before any Spark job starts.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from music_recsys import constants as C


def data_root() -> Path:
    """The data root: ``RECSYS_DATA_ROOT`` (default ``./data``), absolute and symlink-resolved."""
    return Path(os.environ.get("RECSYS_DATA_ROOT", "data")).expanduser().resolve()


def input_roots() -> list[Path]:
    """Roots that input paths may lie under: the data root plus ``RECSYS_INPUT_ROOTS``."""
    roots = [data_root()]
    for raw in os.environ.get("RECSYS_INPUT_ROOTS", "").split(":"):
        if raw.strip():
            roots.append(Path(raw.strip()).expanduser().resolve())
    return roots


def resolve_input_path(path: str, *, name: str = "path") -> Path:
    """Resolve a user-given input path and refuse anything outside the allowed roots.

    Relative paths are taken from the data root. Symlinks and ``..`` are resolved before the
    check, so neither can escape a root. URI schemes are refused: inputs are local or mounted paths.
    """
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"{name}: must be a non-empty path string, got {path!r}")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path):
        raise ValueError(
            f"{name}: {path!r} is a URI; only local paths are accepted. "
            f"Allowed roots: {', '.join(map(str, input_roots()))}"
        )
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = data_root() / candidate
    resolved = candidate.resolve()
    roots = input_roots()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise ValueError(
            f"{name}: {path!r} resolves to {resolved}, which is outside the allowed roots "
            f"({', '.join(map(str, roots))}). Move the data under RECSYS_DATA_ROOT or add its "
            f"directory to RECSYS_INPUT_ROOTS (colon-separated)."
        )
    return resolved


def run_dir(run_id: str) -> Path:
    """The run-scoped artifact directory ``<data root>/runs/<run id>``, with the id made path-safe."""
    return data_root() / "runs" / safe_run_id(run_id)


def safe_run_id(run_id: str) -> str:
    """Airflow run ids contain ``:`` and ``+``; keep them readable but filesystem- and URI-safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")
    if not safe:
        raise ValueError(f"run id {run_id!r} has no usable characters")
    return safe


def _fmt_num(value: float) -> str:
    return f"{value:g}".replace("+", "")


@dataclass(frozen=True)
class TrialSpec:
    """One ALS grid point; ``str()`` gives the ``RANK,REG_PARAM,ALPHA,TRANSFORM`` form the fit job takes."""

    rank: int
    reg_param: float
    alpha: float
    transform: str

    @property
    def trial_id(self) -> str:
        return f"r{self.rank}_reg{_fmt_num(self.reg_param)}_a{_fmt_num(self.alpha)}_{self.transform}"

    def as_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, **dataclasses.asdict(self)}

    def __str__(self) -> str:
        return f"{self.rank},{self.reg_param!r},{self.alpha!r},{self.transform}"

    @classmethod
    def parse(cls, text: str) -> TrialSpec:
        """Inverse of ``str()``: ``"10,0.1,1.0,log1p"``."""
        parts = text.split(",")
        if len(parts) != 4:
            raise ValueError(f"trial {text!r}: expected RANK,REG_PARAM,ALPHA,TRANSFORM")
        rank, reg_param, alpha, transform = parts
        if transform not in C.TRANSFORMS:
            raise ValueError(f"trial {text!r}: transform must be one of {list(C.TRANSFORMS)}")
        return cls(int(rank), float(reg_param), float(alpha), transform)


def _bounded_list(name: str, values: Any, kind: type, lo: float, hi: float, *, lo_open: bool = False) -> list:
    if not isinstance(values, list | tuple) or not values:
        raise ValueError(f"{name}: must be a non-empty list, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{name}: {v!r} is not a number")
        if kind is int and float(v) != int(v):
            raise ValueError(f"{name}: {v!r} is not an integer")
        v = kind(v)
        too_low = v <= lo if lo_open else v < lo
        if too_low or v > hi:
            bound = f"> {lo}" if lo_open else f">= {lo}"
            raise ValueError(f"{name}: {v!r} is out of range; values must be {bound} and <= {hi}")
        out.append(v)
    return sorted(set(out))


@dataclass
class RunConfig:
    """Everything one run needs, validated. Field names are the DAG's param names."""

    train_path: str
    validation_path: str
    test_path: str
    ranks: list[int] = field(default_factory=lambda: list(C.DEFAULT_RANKS))
    reg_params: list[float] = field(default_factory=lambda: list(C.DEFAULT_REG_PARAMS))
    alphas: list[float] = field(default_factory=lambda: list(C.DEFAULT_ALPHAS))
    transforms: list[str] = field(default_factory=lambda: list(C.DEFAULT_TRANSFORMS))
    drop_threshold: int = C.DEFAULT_DROP_THRESHOLD
    k: int = C.DEFAULT_K
    sample_fraction: float = 1.0
    max_iter: int = C.DEFAULT_MAX_ITER
    seed: int = C.DEFAULT_SEED
    exclude_seen: bool = True
    max_reject_fraction: float = 0.01
    annoy_trees: list[int] = field(default_factory=lambda: list(C.DEFAULT_ANNOY_TREES))
    annoy_search_k: list[int] = field(default_factory=lambda: list(C.DEFAULT_ANNOY_SEARCH_K))
    annoy_max_queries: int = 2000
    annoy_target_recall: float = 0.9
    fits_per_task: int = 1
    nonnegative: bool = True

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RunConfig:
        """Build from DAG params (extra keys are ignored so the DAG may carry other settings)."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [n for n in ("train_path", "validation_path", "test_path") if not params.get(n)]
        if missing:
            raise ValueError(f"params: {', '.join(missing)} must be set (paths under the data root)")
        config = cls(**{k: v for k, v in params.items() if k in names})
        config.validate()
        return config

    def validate(self) -> None:
        self.train_path = str(resolve_input_path(self.train_path, name="train_path"))
        self.validation_path = str(resolve_input_path(self.validation_path, name="validation_path"))
        self.test_path = str(resolve_input_path(self.test_path, name="test_path"))
        self.ranks = _bounded_list("ranks", self.ranks, int, 1, 1000)
        self.reg_params = _bounded_list("reg_params", self.reg_params, float, 0.0, 1e4, lo_open=True)
        self.alphas = _bounded_list("alphas", self.alphas, float, 0.0, 1e6)
        if not isinstance(self.transforms, list | tuple) or not self.transforms:
            raise ValueError(f"transforms: must be a non-empty list of {C.TRANSFORMS}")
        bad = [t for t in self.transforms if t not in C.TRANSFORMS]
        if bad:
            raise ValueError(f"transforms: {bad} not allowed; choose from {list(C.TRANSFORMS)}")
        self.transforms = [t for t in C.TRANSFORMS if t in self.transforms]
        (self.drop_threshold,) = _bounded_list("drop_threshold", [self.drop_threshold], int, 0, 10**6)
        (self.k,) = _bounded_list("k", [self.k], int, 1, 10_000)
        (self.sample_fraction,) = _bounded_list(
            "sample_fraction", [self.sample_fraction], float, 0.0, 1.0, lo_open=True
        )
        (self.max_iter,) = _bounded_list("max_iter", [self.max_iter], int, 1, 100)
        (self.seed,) = _bounded_list("seed", [self.seed], int, 0, 2**31 - 1)
        (self.max_reject_fraction,) = _bounded_list("max_reject_fraction", [self.max_reject_fraction], float, 0.0, 1.0)
        self.exclude_seen = bool(self.exclude_seen)
        self.nonnegative = bool(self.nonnegative)
        self.annoy_trees = _bounded_list("annoy_trees", self.annoy_trees, int, 1, 1000)
        self.annoy_search_k = _bounded_list("annoy_search_k", self.annoy_search_k, int, -1, 10**8)
        if 0 in self.annoy_search_k:
            raise ValueError("annoy_search_k: 0 is not a valid search_k; use -1 for Annoy's default")
        (self.annoy_max_queries,) = _bounded_list("annoy_max_queries", [self.annoy_max_queries], int, 1, 10**6)
        (self.annoy_target_recall,) = _bounded_list(
            "annoy_target_recall", [self.annoy_target_recall], float, 0.0, 1.0, lo_open=True
        )
        (self.fits_per_task,) = _bounded_list("fits_per_task", [self.fits_per_task], int, 1, 1024)
        n = len(self.trials())
        if n > 1024:
            raise ValueError(f"grid has {n} points; Airflow maps at most 1024 tasks (max_map_length)")

    def trials(self) -> list[TrialSpec]:
        return [
            TrialSpec(rank, reg, alpha, transform)
            for transform, rank, reg, alpha in itertools.product(
                self.transforms, self.ranks, self.reg_params, self.alphas
            )
        ]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)
