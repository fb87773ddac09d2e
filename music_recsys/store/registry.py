"""The model registry: table ``models`` in the results store, with exactly one champion.

``decide`` is the promotion gate, a pure function of the candidate, the ``Comparison`` it is judged
against (the champion re-scored on the candidate's own data at its k: ``music_recsys.evaluation.rescore``)
and the run's ``Policy``. Every state change (publish, a promotion or roll-back by hand, an approval, a
retirement, retention's removal of a bundle) runs in ``ResultsStore.locked``: one transaction that excludes
the others on both stores (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock). ``publish`` checks
inside it that the champion is still the one the comparison was made against; when another run promoted a
model meanwhile it raises ``ChampionChanged`` and ``publish_against`` compares again with the new champion,
so the last writer never wins unseen. A partial unique index refuses a second champion whatever a writer
does.

Statuses: ``champion`` (served), ``awaiting_approval`` (passed the gate, waits for a person:
``require_approval``), ``candidate`` (passed the quality gate, held back by policy or by a person),
``rejected`` (failed the gate), ``retired`` (a former champion). ``path`` is the bundle folder relative to
the data root (``bundle_path`` resolves it), so a moved data root keeps working.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from music_recsys import settings
from music_recsys.store.results import ResultsStore, models

CHAMPION, CANDIDATE, AWAITING, REJECTED, RETIRED = "champion", "candidate", "awaiting_approval", "rejected", "retired"
STATUSES = (CHAMPION, AWAITING, CANDIDATE, REJECTED, RETIRED)
# A MAP equal to a bound passes; floating-point rounding of the bound must not turn a tie into a loss.
TIE = 1e-9
# How the champion was compared: re-scored on the candidate's data, its own recorded numbers (its bundle is
# gone, but it was measured on the same data at the same k), or not at all.
RESCORED, RECORDED, NOT_COMPARED = "rescored", "recorded", "none"
AWAITING_APPROVAL = "awaiting a person's approval (require_approval)"


class ChampionChanged(RuntimeError):
    """The champion changed after the candidate was compared with it: compare again."""

    def __init__(self, expected: str | None, found: dict[str, Any] | None):
        self.expected, self.found = expected, found
        super().__init__(
            f"the champion is {found['model_version'] if found else 'none'} now, not {expected or 'none'} as compared"
        )


@dataclass(frozen=True)
class Policy:
    """The run's publishing params (the caller hands over the run's values: ``RunConfig`` owns them)."""

    promote: bool
    min_lift_over_popularity: float
    max_regression: float
    require_approval: bool = False


@dataclass(frozen=True)
class Comparison:
    """What a candidate is judged against. ``how``: ``rescored`` (the champion's factors scored on the
    candidate's validation and test data at the candidate's k), ``recorded`` (the champion's own figures,
    comparable: same data fingerprint and k, but its bundle is gone) or ``none`` (no champion, or nothing
    comparable: ``note`` says why)."""

    champion: str | None
    how: str = NOT_COMPARED
    k: int | None = None
    test_map: float | None = None
    validation_map: float | None = None
    note: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)  # per split, every accuracy metric (rescored)

    def columns(self) -> dict[str, Any]:
        """The ``models`` columns that record the comparison."""
        return {
            "compared_with": self.champion,
            "compared_test_map": self.test_map,
            "compared_validation_map": self.validation_map,
            "comparison": self.how,
        }


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


def _against(comparison: Comparison) -> str:
    if comparison.champion is None:
        return "first champion"
    if comparison.how == RESCORED:
        return (
            f"champion {comparison.champion} re-scored on this run's data at k={comparison.k}: "
            f"{comparison.test_map:.4f}"
        )
    if comparison.how == RECORDED:
        return f"champion {comparison.champion} had {comparison.test_map:.4f} on the same data at k={comparison.k} " \
            f"({comparison.note})"  # fmt: skip
    return f"not compared with champion {comparison.champion}: {comparison.note}"


def decide(candidate: dict[str, Any], comparison: Comparison, policy: Policy) -> Decision:
    """The promotion gate. ``candidate`` is a ``models`` row (with ``k``) that may carry a ``data_verdict``
    and ``data_summary`` (the run's data check); ``comparison`` says what it is judged against."""
    k = candidate.get("k")
    at = f" at k={k}" if k else ""
    if candidate.get("data_verdict") == "drift":
        return Decision(REJECTED, f"the data check found drift (on_data_drift: warn): {candidate.get('data_summary')}")
    test_map, popularity = candidate["test_map"], candidate["popularity_test_map"]
    if test_map is None:
        return Decision(REJECTED, "the best grid point has no test MAP")
    needed = policy.min_lift_over_popularity * (popularity or 0.0)
    if test_map < needed * (1 - TIE):
        return Decision(
            REJECTED,
            f"test MAP {test_map:.4f}{at} is below min_lift_over_popularity {policy.min_lift_over_popularity:g} x "
            f"popularity's {popularity:.4f} = {needed:.4f}",
        )
    if comparison.how in (RESCORED, RECORDED) and comparison.test_map is not None:
        floor = (1.0 - policy.max_regression) * comparison.test_map
        if test_map < floor * (1 - TIE):
            return Decision(
                REJECTED,
                f"test MAP {test_map:.4f}{at} regresses more than max_regression {policy.max_regression:g} below "
                f"{_against(comparison)} (floor {floor:.4f})",
            )
    if not policy.promote:
        return Decision(CANDIDATE, f"promote is false: published as a candidate only; {_against(comparison)}")
    champion_date, mine = _as_utc(candidate.get("champion_logical_date")), _as_utc(candidate.get("logical_date"))
    if comparison.champion is not None and mine is not None and champion_date is not None and mine < champion_date:
        return Decision(
            CANDIDATE,
            f"logical date {mine:%Y-%m-%d %H:%M} is older than champion {comparison.champion}'s "
            f"({champion_date:%Y-%m-%d %H:%M}): a backfill never replaces a newer model",
        )
    lift = test_map / popularity if popularity else float("inf")
    passed = f"test MAP {test_map:.4f}{at} = {lift:.2f}x popularity's {popularity:.4f}; {_against(comparison)}"
    if policy.require_approval:
        return Decision(AWAITING, f"{AWAITING_APPROVAL}; the gate passed it: {passed}")
    return Decision(CHAMPION, passed)


def registry_path(folder: str | Path, root: Path | None = None) -> str:
    """How the registry records a bundle folder: relative to the data root when it lies under it."""
    folder, root = Path(folder).resolve(), (root or settings.data_root()).resolve()
    return str(folder.relative_to(root)) if folder.is_relative_to(root) else str(folder)


def bundle_path(row: dict[str, Any]) -> Path:
    """The bundle folder of a ``models`` row (its path resolved against the data root of this process)."""
    return settings.in_data_root(row["path"])


def _one(conn: sa.Connection, query) -> dict[str, Any] | None:
    return next((dict(r._mapping) for r in conn.execute(query)), None)


def _champion(conn: sa.Connection) -> dict[str, Any] | None:
    return _one(conn, sa.select(models).where(models.c.status == CHAMPION))


def _get(conn: sa.Connection, version: str) -> dict[str, Any] | None:
    return _one(conn, sa.select(models).where(models.c.model_version == version))


def champion(store: ResultsStore) -> dict[str, Any] | None:
    return store.transaction(_champion)


def get(store: ResultsStore, version: str) -> dict[str, Any] | None:
    return store.transaction(lambda conn: _get(conn, version))


def all_models(store: ResultsStore) -> list[dict[str, Any]]:
    query = sa.select(models).order_by(models.c.created_at.desc())
    return store.transaction(lambda conn: [dict(r._mapping) for r in conn.execute(query)])


def awaiting(store: ResultsStore) -> list[dict[str, Any]]:
    """Models waiting for a person's decision (newest first)."""
    query = sa.select(models).where(models.c.status == AWAITING).order_by(models.c.created_at.desc())
    return store.transaction(lambda conn: [dict(r._mapping) for r in conn.execute(query)])


def _set_champion(conn: sa.Connection, version: str, now: datetime) -> None:
    conn.execute(sa.update(models).where(models.c.status == CHAMPION).values(status=RETIRED, retired_at=now))
    conn.execute(
        sa.update(models)
        .where(models.c.model_version == version)
        .values(status=CHAMPION, promoted_at=now, retired_at=None)
    )


def publish(
    store: ResultsStore, candidate: dict[str, Any], policy: Policy, comparison: Comparison
) -> tuple[Decision, dict | None]:
    """Record ``candidate`` (a ``models`` row plus the gate's inputs) and apply the gate, under the registry
    lock. Raises ``ChampionChanged`` when the champion is no longer ``comparison.champion``.

    Returns the decision and the champion it was compared with. Re-publishing a version (a retried task)
    decides again against the champion of the moment, so a retry never demotes a model it already
    promoted."""
    columns = {c.name for c in models.columns}

    def work(conn: sa.Connection) -> tuple[Decision, dict | None]:
        current = _champion(conn)
        if current is not None and current["model_version"] == candidate["model_version"]:
            return Decision(CHAMPION, current["reason"]), current
        if (current["model_version"] if current else None) != comparison.champion:
            raise ChampionChanged(comparison.champion, current)
        now = datetime.now(UTC)
        decision = decide(
            {**candidate, "champion_logical_date": current["logical_date"] if current else None}, comparison, policy
        )
        row = {k: v for k, v in candidate.items() if k in columns}
        row.update(comparison.columns())
        row.update(status=CANDIDATE if decision.promoted else decision.status, reason=decision.reason)
        row.setdefault("created_at", now)
        if _get(conn, row["model_version"]) is not None:
            conn.execute(sa.update(models).where(models.c.model_version == row["model_version"]).values(**row))
        else:
            conn.execute(sa.insert(models).values(**row))
        if decision.promoted:
            _set_champion(conn, row["model_version"], now)
        return decision, current

    return store.locked(work)


def publish_against(
    store: ResultsStore,
    candidate: dict[str, Any],
    policy: Policy,
    compare: Callable[[dict[str, Any] | None], Comparison],
    attempts: int = 5,
) -> tuple[Decision, dict | None, Comparison]:
    """``publish`` after ``compare(champion)``; when another run changes the champion in between, compare
    with the new one and try again (at most ``attempts`` times)."""
    current = champion(store)
    for attempt in range(1, attempts + 1):
        if current is not None and current["model_version"] == candidate["model_version"]:
            comparison = Comparison(None, note="this model is already champion (a retried publish)")
        else:
            comparison = compare(current)
        try:
            decision, before = publish(store, candidate, policy, comparison)
            return decision, before, comparison
        except ChampionChanged as changed:
            if attempt == attempts:
                raise
            current = changed.found
    raise AssertionError("unreachable")


def promote_manually(store: ResultsStore, version: str, reason: str) -> dict[str, Any]:
    """Make ``version`` the champion by hand (a rollback, say); the gate is not applied."""

    def work(conn: sa.Connection) -> dict[str, Any]:
        row = _get(conn, version)
        if row is None:
            raise LookupError(f"no model version {version!r} in the registry")
        if row["bundle_removed_at"] is not None:
            raise LookupError(f"model {version}'s bundle was removed by retention; it cannot be served")
        _set_champion(conn, version, datetime.now(UTC))
        conn.execute(sa.update(models).where(models.c.model_version == version).values(reason=reason))
        return _get(conn, version)

    return store.locked(work)


@dataclass(frozen=True)
class Resolution:
    """How a person's answer (or the timeout) left a model that awaited approval."""

    row: dict[str, Any]
    promoted: bool
    reason: str


def resolve_approval(
    store: ResultsStore,
    version: str,
    *,
    approved: bool,
    who: str | None,
    decided_against: str | None,
    gate: str,
    timeout_hours: float,
) -> Resolution:
    """Apply the answer to a model awaiting approval, under the registry lock. Never fails on a model that
    was decided elsewhere meanwhile (promoted or rolled back from the UI or the CLI): the answer then
    changes nothing and the reason says so."""

    def keep(conn: sa.Connection, reason: str) -> Resolution:
        conn.execute(sa.update(models).where(models.c.model_version == version).values(status=CANDIDATE, reason=reason))
        return Resolution(_get(conn, version), False, reason)

    def work(conn: sa.Connection) -> Resolution:
        row = _get(conn, version)
        if row is None:
            raise LookupError(f"no model version {version!r} in the registry")
        answer = f"approved by {who}" if approved and who else f"rejected by {who}" if who else "no decision"
        if row["status"] == CHAMPION:
            reason = f"{row['reason']} (while it awaited approval); the answer ({answer}) changes nothing"
            return Resolution(row, True, reason)
        if row["status"] != AWAITING:
            reason = (
                f"decided elsewhere while it awaited approval: {row['status']} ({row['reason']}); "
                f"the answer ({answer}) changes nothing"
            )
            return Resolution(row, False, reason)
        current = _champion(conn)
        current_version = current["model_version"] if current else None
        if approved and who and current_version != decided_against:
            # The gate compared this model with a champion that is no longer the champion: an approval of
            # that comparison must not replace a newer one unseen (promote it by hand after a look).
            return keep(
                conn,
                f"approved by {who}, but the champion changed from {decided_against} to {current_version} while "
                f"it waited: kept as a candidate (promote it from the registry if it should replace "
                f"{current_version}); gate: {gate}",
            )
        if approved and who:
            reason = f"approved by {who} (require_approval); gate: {gate}"
            _set_champion(conn, version, datetime.now(UTC))
            conn.execute(sa.update(models).where(models.c.model_version == version).values(reason=reason))
            return Resolution(_get(conn, version), True, reason)
        if not who:
            return keep(
                conn, f"no decision within approval_timeout_hours {timeout_hours:g}: kept as a candidate; gate: {gate}"
            )
        return keep(conn, f"rejected by {who} (require_approval): kept as a candidate; gate: {gate}")

    return store.locked(work)


def mark_bundle_removed(store: ResultsStore, versions: list[str]) -> None:
    if versions:
        now = datetime.now(UTC)
        store.locked(
            lambda conn: conn.execute(
                sa.update(models).where(models.c.model_version.in_(versions)).values(bundle_removed_at=now)
            )
        )
