"""Response clocks (SLA): when a response is due, and which escalation to send now.

Pure: the calendar, the targets and `now` are passed in; nothing here reads a clock, a file
or the database. A ticket has at most one clock running: the first response (from the arrival
of the ticket's first message) or the next response (from the arrival of the first customer
message still unanswered). `pending` and `closed` pause it; the time spent paused is added to
the due time. Each clock warns once and breaches once: the stored `level` (0 none, 1 warned,
2 breached) is what makes an event fire at most once, so the caller stores `Evaluation.level`
together with the mail it sends, and starts a new `Clock` (level 0) when the team answers.

Time is "support time": business time of the calendar with a business clock, wall time
(elapsed UTC time) with a calendar clock.

Inputs and limits:

- Every datetime must be timezone-aware; a naive one raises ValueError (its meaning depends
  on the machine's zone). Any zone may be used; results are in UTC.
- Otherwise `evaluate`, `pause` and `resume` do not raise, whatever the instants: a due
  time that would fall past the end of `datetime` (or, with a business clock, more than
  HORIZON after the instant it is counted from) is NEVER, and support time is counted
  over at most HORIZON of wall time, so the work per call is bounded (tens of milliseconds
  at worst, well under one normally). No real ticket waits ten years.
- The one exception is configuration: a calendar with no opening at all in sight raises
  supportd.domain.calendar.NeverOpenError (a ValueError), as BusinessCalendar does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Literal

from supportd.domain.calendar import BusinessCalendar
from supportd.domain.team import TicketState

Event = Literal["warning", "breach"]
WARNING: Event = "warning"
BREACH: Event = "breach"

NONE, WARNED, BREACHED = 0, 1, 2  # Clock.level

NEVER = datetime.max.replace(tzinfo=UTC)  # a due time that cannot be reached
HORIZON = timedelta(days=3660)  # about ten years: how far support time is counted

_ZERO = timedelta(0)
# The calendar is only asked about instants in this range, well inside datetime's range in
# any zone, so that walking a few years forward from them cannot overflow.
_FIRST = datetime(2, 1, 1, tzinfo=UTC)
_LAST = datetime(9980, 1, 1, tzinfo=UTC)  # + HORIZON + 3 years of walking
_FLOOR = datetime.min.replace(tzinfo=UTC)
_WINDOW = timedelta(days=366)  # wall time per BusinessCalendar.between call (it walks <= 3 y)
_STEP = timedelta(hours=24)  # business time per BusinessCalendar.add call


def _no_targets() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True)
class SlaPolicy:
    """The `[sla]` settings with the support calendar. Hours are support hours."""

    calendar: BusinessCalendar
    first_response_hours: float = 14
    next_response_hours: float = 14
    business: bool = True  # sla.clock == "business"; False: wall time
    warn_at: float = 0.75  # share of the target elapsed when the warning fires
    notify_outside_hours: bool = False
    targets: Mapping[str, float] = field(default_factory=_no_targets)  # category -> hours

    def __post_init__(self) -> None:
        # A private read-only copy: the policy stays frozen even if the caller's dict changes.
        object.__setattr__(self, "targets", MappingProxyType(dict(self.targets)))
        if not (0 < self.warn_at <= 1):
            raise ValueError(f"sla.warn_at must be in (0, 1], got {self.warn_at!r}")
        _hours("sla.first_response_hours", self.first_response_hours)
        _hours("sla.next_response_hours", self.next_response_hours)
        for category, hours in self.targets.items():
            _hours(f"sla.targets.{category}", hours)

    def target(self, first: bool, category: str) -> timedelta:
        """The support time allowed: the category's target, else the first or next one."""
        if category in self.targets:
            return timedelta(hours=self.targets[category])
        return timedelta(hours=self.first_response_hours if first else self.next_response_hours)


def _hours(name: str, hours: float) -> None:
    if not (isinstance(hours, int | float) and math.isfinite(hours) and hours > 0):
        raise ValueError(f"{name} must be a positive number of hours, got {hours!r}")
    if hours * 3600 > HORIZON.total_seconds() or timedelta(hours=hours) <= _ZERO:
        raise ValueError(f"{name} must be between a microsecond and {HORIZON}, got {hours!r} h")


@dataclass(frozen=True)
class Clock:
    """The clock now running for a ticket, as stored.

    `paused` is support time already spent paused; `paused_since` is set while the ticket is
    pending or closed; `level` counts the escalations already sent for this clock.
    """

    started: datetime
    first: bool
    category: str
    paused: timedelta = _ZERO
    paused_since: datetime | None = None
    level: int = NONE

    def __post_init__(self) -> None:
        _require_aware(self.started, "started")
        if self.paused_since is not None:
            _require_aware(self.paused_since, "paused_since")
        if self.paused < _ZERO:
            raise ValueError(f"paused must not be negative, got {self.paused}")
        if self.level not in (NONE, WARNED, BREACHED):
            raise ValueError(f"level must be 0, 1 or 2, got {self.level!r}")


@dataclass(frozen=True)
class Evaluation:
    """What a clock says at `now`.

    `event` is the escalation to send now (None: nothing); `level` is the level to store
    after sending it; `next_at` is the next instant at which `evaluate` could return an event
    (None while paused or when nothing can happen any more): the next threshold not yet
    passed, moved to the next opening when escalations wait for support hours; `left` is the
    support time from now to `due`, negative when overdue; `held` means an event is due but
    waits for support hours (then `next_at` is the next opening). All instants are UTC.
    """

    due: datetime
    warn: datetime
    event: Event | None
    level: int
    next_at: datetime | None
    left: timedelta
    held: bool = False


def pause(clock: Clock, at: datetime) -> Clock:
    """The clock paused at `at` (the ticket became pending or closed); no-op if paused."""
    at = _utc(at, "at")
    if clock.paused_since is not None:
        return clock
    return replace(clock, paused_since=at)


def resume(clock: Clock, at: datetime, policy: SlaPolicy) -> Clock:
    """The clock running again from `at`, the support time paused added; no-op if running.

    An `at` before `paused_since` adds nothing.
    """
    at = _utc(at, "at")
    if clock.paused_since is None:
        return clock
    spent = _support_between(policy, _utc(clock.paused_since, "paused_since"), at)
    return replace(clock, paused=_sum(clock.paused, spent), paused_since=None)


def evaluate(clock: Clock, now: datetime, policy: SlaPolicy) -> Evaluation:
    """Due and warning times, and the escalation to send at `now`.

    A paused clock is shown as if it resumed at `now`, and sends nothing. When both the
    warning and the breach are due (the daemon was down), only the breach is sent. With
    `notify_outside_hours` false, nothing is sent while the calendar is closed: the event is
    held until the next opening.
    """
    now = _utc(now, "now")
    running = resume(clock, now, policy)
    target = policy.target(clock.first, clock.category)
    started = _utc(clock.started, "started")
    due = _support_add(policy, started, _sum(target, running.paused))
    warn = _support_add(policy, started, _sum(target * policy.warn_at, running.paused))
    left = _left(policy, now, due)
    if clock.paused_since is not None:
        return Evaluation(due, warn, None, clock.level, None, left)

    reached = BREACHED if now >= due else WARNED if now >= warn else NONE
    level = clock.level
    event: Event | None = None
    if reached > level:
        if not policy.notify_outside_hours and not _is_open(policy.calendar, now):
            opening = _next_open(policy.calendar, now)
            return Evaluation(due, warn, None, level, _reachable(opening), left, held=True)
        event = BREACH if reached == BREACHED else WARNING
        level = reached

    threshold = warn if level < WARNED else due if level < BREACHED else None
    next_at = None
    if threshold is not None and threshold != NEVER:
        next_at = threshold
        if not policy.notify_outside_hours:
            next_at = _next_open(policy.calendar, threshold)
    return Evaluation(due, warn, event, level, _reachable(next_at), left)


def clock_of(state: TicketState) -> Clock | None:
    """The clock a stored ticket runs, or None when it does not await the team."""
    if state.clock_started_at is None:
        return None
    return Clock(
        started=state.clock_started_at,
        first=state.clock_first,
        category=state.category,
        paused=timedelta(seconds=state.clock_paused),
        paused_since=state.clock_paused_since,
        level=min(max(state.escalation_level, 0), 2),
    )


# Support-time arithmetic, saturating instead of raising.


def _require_aware(t: datetime, name: str) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got the naive {t.isoformat()}")


def _utc(t: datetime, name: str) -> datetime:
    _require_aware(t, name)
    try:
        return t.astimezone(UTC)
    except OverflowError:  # within a day of datetime's ends, in a zone far from UTC
        return NEVER if t.year > 1 else _FLOOR


def _reachable(t: datetime | None) -> datetime | None:
    return None if t is None or t == NEVER else t


def _sum(a: timedelta, b: timedelta) -> timedelta:
    try:
        return a + b
    except OverflowError:
        return timedelta.max


def _clamp(t: datetime) -> datetime:
    return min(max(t, _FIRST), _LAST)


def _is_open(calendar: BusinessCalendar, t: datetime) -> bool:
    if not _FIRST <= t < _LAST:
        return False
    return calendar.is_open(t)


def _next_open(calendar: BusinessCalendar, t: datetime) -> datetime:
    if t >= _LAST:
        return NEVER
    try:
        return calendar.next_open(max(t, _FIRST))
    except OverflowError:  # a calendar closed for years, walking off the end of time
        return NEVER


def _support_add(policy: SlaPolicy, t: datetime, amount: timedelta) -> datetime:
    """The instant when `amount` of support time has passed after t (NEVER if unreachable)."""
    if not policy.business:
        try:
            return t + amount
        except OverflowError:
            return NEVER
    cursor = max(t, _FIRST)
    if cursor >= _LAST or amount > HORIZON:  # business time is never more than wall time
        return NEVER
    limit = cursor + HORIZON
    remaining = amount
    try:
        # Steps of positive business time compose exactly: add(add(t, a), b) == add(t, a + b).
        while remaining > _STEP:
            cursor = policy.calendar.add(cursor, _STEP)
            remaining -= _STEP
            if cursor > limit:
                return NEVER
        cursor = policy.calendar.add(cursor, remaining)
    except OverflowError:
        return NEVER
    return NEVER if cursor > limit else cursor


def _support_between(policy: SlaPolicy, a: datetime, b: datetime) -> timedelta:
    """Support time from a to b, zero when b is not after a (at most HORIZON is counted)."""
    if b <= a:
        return _ZERO
    if not policy.business:
        return b - a
    a, b = _clamp(a), _clamp(b)
    b = min(b, a + HORIZON)
    total = _ZERO
    while a < b:
        step_end = min(b, a + _WINDOW)
        try:
            total += policy.calendar.between(a, step_end)
        except OverflowError:  # a calendar closed for years, walking off the end of time
            break
        a = step_end
    return total


def _left(policy: SlaPolicy, now: datetime, due: datetime) -> timedelta:
    if not policy.business:
        return due - now
    if due >= now:
        return _support_between(policy, now, due)
    return -_support_between(policy, due, now)
