"""The model registry: table ``models`` in the results store, with exactly one champion.

``decide`` is the promotion gate, a pure function of the candidate, the champion and the run's policy.
``publish`` records a candidate and applies the gate inside one transaction that first locks the table
(PostgreSQL; SQLite's single writer serialises it likewise), so two runs publishing at once are decided
one after the other: the second sees the first's outcome, and a partial unique index refuses a second
champion whatever a writer does. Statuses: ``champion`` (served), ``candidate`` (passed the quality
gate, held back by policy), ``rejected`` (failed the gate), ``retired`` (a former champion).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from music_recsys.pipeline.config import RunConfig
from music_recsys.store.results import ResultsStore, models

CHAMPION, CANDIDATE, REJECTED, RETIRED = "champion", "candidate", "rejected", "retired"
# A MAP equal to a bound passes; floating-point rounding of the bound must not turn a tie into a loss.
TIE = 1e-9


# The publishing params' defaults are RunConfig's: the gate a caller gets without params is the run's.
_RUN_DEFAULTS = {spec.name: spec.default for spec in RunConfig.param_specs()}


@dataclass(frozen=True)
class Policy:
    """The run's publishing params (defaults: the ``RunConfig`` params of the same names)."""

    promote: bool = _RUN_DEFAULTS["promote"]
    min_lift_over_popularity: float = _RUN_DEFAULTS["min_lift_over_popularity"]
    max_regression: float = _RUN_DEFAULTS["max_regression"]


@dataclass(frozen=True)
class Decision:
    status: str
    reason: str

    @property
    def promoted(self) -> bool:
        return self.status == CHAMPION


def _as_utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite hands datetimes back naive
        return value.replace(tzinfo=UTC)
    return value


def decide(candidate: dict[str, Any], champion: dict[str, Any] | None, policy: Policy) -> Decision:
    """The promotion gate. ``candidate`` and ``champion`` are ``models`` rows; the candidate may carry a
    ``data_verdict`` and ``data_summary`` (the run's data check)."""
    if candidate.get("data_verdict") == "drift":
        return Decision(REJECTED, f"the data check found drift (on_data_drift: warn): {candidate.get('data_summary')}")
    test_map, popularity = candidate["test_map"], candidate["popularity_test_map"]
    if test_map is None:
        return Decision(REJECTED, "the best grid point has no test MAP")
    needed = policy.min_lift_over_popularity * (popularity or 0.0)
    if test_map < needed * (1 - TIE):
        return Decision(
            REJECTED,
            f"test MAP {test_map:.4f} is below min_lift_over_popularity {policy.min_lift_over_popularity:g} x "
            f"popularity's {popularity:.4f} = {needed:.4f}",
        )
    if champion is not None and champion["data_fingerprint"] == candidate["data_fingerprint"]:
        floor = (1.0 - policy.max_regression) * champion["test_map"]
        if test_map < floor * (1 - TIE):
            return Decision(
                REJECTED,
                f"test MAP {test_map:.4f} regresses more than max_regression {policy.max_regression:g} below "
                f"champion {champion['model_version']}'s {champion['test_map']:.4f} on the same data "
                f"(floor {floor:.4f})",
            )
    if not policy.promote:
        return Decision(CANDIDATE, "promote is false: published as a candidate only")
    if champion is not None:
        mine, theirs = _as_utc(candidate["logical_date"]), _as_utc(champion["logical_date"])
        if mine is not None and theirs is not None and mine < theirs:
            return Decision(
                CANDIDATE,
                f"logical date {mine:%Y-%m-%d %H:%M} is older than champion {champion['model_version']}'s "
                f"({theirs:%Y-%m-%d %H:%M}): a backfill never replaces a newer model",
            )
    lift = test_map / popularity if popularity else float("inf")
    against = (
        f"; champion {champion['model_version']} had {champion['test_map']:.4f}"
        if champion is not None
        else "; first champion"
    )
    return Decision(CHAMPION, f"test MAP {test_map:.4f} = {lift:.2f}x popularity{against}")


def _lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        # Conflicts with itself, not with readers: promotions queue, the serving API keeps reading.
        conn.execute(sa.text("LOCK TABLE models IN SHARE ROW EXCLUSIVE MODE"))


def champion(store: ResultsStore) -> dict[str, Any] | None:
    query = sa.select(models).where(models.c.status == CHAMPION)
    return store.transaction(lambda conn: next((dict(r._mapping) for r in conn.execute(query)), None))


def get(store: ResultsStore, version: str) -> dict[str, Any] | None:
    query = sa.select(models).where(models.c.model_version == version)
    return store.transaction(lambda conn: next((dict(r._mapping) for r in conn.execute(query)), None))


def all_models(store: ResultsStore) -> list[dict[str, Any]]:
    query = sa.select(models).order_by(models.c.created_at.desc())
    return store.transaction(lambda conn: [dict(r._mapping) for r in conn.execute(query)])


def _set_champion(conn: sa.Connection, version: str, now: datetime) -> None:
    conn.execute(sa.update(models).where(models.c.status == CHAMPION).values(status=RETIRED, retired_at=now))
    conn.execute(sa.update(models).where(models.c.model_version == version).values(status=CHAMPION, promoted_at=now))


def publish(store: ResultsStore, candidate: dict[str, Any], policy: Policy) -> tuple[Decision, dict | None]:
    """Record ``candidate`` (a ``models`` row plus the gate's inputs) and apply the gate in one transaction.

    Returns the decision and the champion it was compared with. Re-publishing a version (a retried task)
    decides again against the champion of the moment, so a retry never demotes a model it already
    promoted."""
    columns = {c.name for c in models.columns}

    def work(conn: sa.Connection) -> tuple[Decision, dict | None]:
        _lock(conn)
        now = datetime.now(UTC)
        current = next(
            (dict(r._mapping) for r in conn.execute(sa.select(models).where(models.c.status == CHAMPION))), None
        )
        if current is not None and current["model_version"] == candidate["model_version"]:
            return Decision(CHAMPION, current["reason"]), current
        decision = decide(candidate, current, policy)
        if decision.promoted and _held_for_approval.get():
            decision = Decision(CANDIDATE, f"{AWAITING_APPROVAL}; the gate passed it: {decision.reason}")
        row = {k: v for k, v in candidate.items() if k in columns}
        row.update(status=REJECTED if decision.status == REJECTED else CANDIDATE, reason=decision.reason)
        row.setdefault("created_at", now)
        existing = conn.execute(
            sa.select(models.c.model_version).where(models.c.model_version == row["model_version"])
        ).first()
        if existing:
            conn.execute(sa.update(models).where(models.c.model_version == row["model_version"]).values(**row))
        else:
            conn.execute(sa.insert(models).values(**row))
        if decision.promoted:
            _set_champion(conn, row["model_version"], now)
        return decision, current

    return store.transaction(work)


# require_approval: a model that passes the gate waits as a candidate until a person decides
# (music_recsys.pipeline.approval); the run's publish task registers it inside ``holding_for_approval()``.
AWAITING_APPROVAL = "awaiting a person's approval (require_approval)"
_held_for_approval: ContextVar[bool] = ContextVar("held_for_approval", default=False)


@contextlib.contextmanager
def holding_for_approval() -> Iterator[None]:
    """Within the block, ``publish`` registers a model that would be promoted as a candidate awaiting
    approval instead; the gate's other outcomes are unchanged."""
    token = _held_for_approval.set(True)
    try:
        yield
    finally:
        _held_for_approval.reset(token)


def set_candidate_reason(store: ResultsStore, version: str, reason: str) -> dict[str, Any]:
    """Record why a candidate stays one (a person rejected it, or nobody decided in time)."""

    def work(conn: sa.Connection) -> dict[str, Any]:
        row = conn.execute(sa.select(models).where(models.c.model_version == version)).first()
        if row is None:
            raise LookupError(f"no model version {version!r} in the registry")
        if row._mapping["status"] != CANDIDATE:
            raise LookupError(f"model {version} is {row._mapping['status']}, not a candidate; its reason stays")
        conn.execute(sa.update(models).where(models.c.model_version == version).values(reason=reason))
        return {**dict(row._mapping), "reason": reason}

    return store.transaction(work)


def promote_manually(store: ResultsStore, version: str, reason: str) -> dict[str, Any]:
    """Make ``version`` the champion by hand (a rollback, say); the gate is not applied."""

    def work(conn: sa.Connection) -> dict[str, Any]:
        _lock(conn)
        row = conn.execute(sa.select(models).where(models.c.model_version == version)).first()
        if row is None:
            raise LookupError(f"no model version {version!r} in the registry")
        if row._mapping["bundle_removed_at"] is not None:
            raise LookupError(f"model {version}'s bundle was removed by retention; it cannot be served")
        now = datetime.now(UTC)
        _set_champion(conn, version, now)
        conn.execute(sa.update(models).where(models.c.model_version == version).values(reason=reason))
        return dict(conn.execute(sa.select(models).where(models.c.model_version == version)).first()._mapping)

    return store.transaction(work)


def mark_bundle_removed(store: ResultsStore, versions: list[str]) -> None:
    if versions:
        now = datetime.now(UTC)
        store.transaction(
            lambda conn: conn.execute(
                sa.update(models).where(models.c.model_version.in_(versions)).values(bundle_removed_at=now)
            )
        )
