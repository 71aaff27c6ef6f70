"""The business calendar: support hours, holidays, and time measured in business hours.

Pure: the time zone, the hours and the closed dates are data; `now` is always passed in.
Days are walked in local time, so a zone with DST would still get its hours right.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MAX_DAYS = 3 * 366  # a calendar that is never open must fail, not loop


class NeverOpenError(ValueError):
    """The calendar has no opening within MAX_DAYS of the instant asked about."""


def _no_holidays() -> frozenset[date]:
    return frozenset()


@dataclass(frozen=True)
class BusinessCalendar:
    """When support is open. Weekdays are Python's: Monday 0 ... Sunday 6."""

    timezone: ZoneInfo
    open_days: frozenset[int]
    opens: time
    closes: time
    holidays: Container[date] = field(default_factory=_no_holidays)
    closed_dates: frozenset[date] = frozenset()
    extra_open_dates: frozenset[date] = frozenset()
    # day -> its opening interval in UTC, or None when closed. The calendar is data that
    # never changes, and every due time walks the same few days: working them out once
    # (time zone arithmetic, a holidays lookup) took a twentieth of the daemon's CPU under
    # a backlog (issue 9).
    _days: dict[date, tuple[datetime, datetime] | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.closes <= self.opens:
            raise ValueError(f"closing time {self.closes} is not after opening time {self.opens}")

    def is_open_day(self, day: date) -> bool:
        return self._day(day) is not None

    def _day(self, day: date) -> tuple[datetime, datetime] | None:
        days = self._days
        if day in days:
            return days[day]
        if len(days) >= 10_000:  # bounded, whatever is asked about
            days.clear()
        found = self._interval(day) if self._open_day(day) else None
        days[day] = found
        return found

    def _open_day(self, day: date) -> bool:
        if day in self.extra_open_dates:
            return True
        if day.weekday() not in self.open_days or day in self.closed_dates:
            return False
        return day not in self.holidays

    def _interval(self, day: date) -> tuple[datetime, datetime]:
        start = datetime.combine(day, self.opens, self.timezone).astimezone(UTC)
        end = datetime.combine(day, self.closes, self.timezone).astimezone(UTC)
        return start, end

    def _intervals_from(self, t: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Opening intervals (UTC) that end after t, in order."""
        day = t.astimezone(self.timezone).date()
        for _ in range(MAX_DAYS):
            interval = self._day(day)
            if interval is not None and interval[1] > t:
                yield interval
            day += timedelta(days=1)
        raise NeverOpenError(f"support is never open within {MAX_DAYS} days after {t.isoformat()}")

    def is_open(self, t: datetime) -> bool:
        interval = self._day(t.astimezone(self.timezone).date())
        return interval is not None and interval[0] <= t < interval[1]

    def next_open(self, t: datetime) -> datetime:
        """t itself when open, else the next moment support opens (UTC)."""
        start, _ = next(self._intervals_from(t))
        return max(start, t.astimezone(UTC))

    def add(self, t: datetime, amount: timedelta) -> datetime:
        """The instant when `amount` of business time has passed after t (UTC)."""
        if amount < timedelta(0):
            raise ValueError("cannot add negative business time")
        remaining = amount
        cursor = t.astimezone(UTC)
        for start, end in self._intervals_from(cursor):
            cursor = max(cursor, start)
            available = end - cursor
            if remaining <= available:
                return cursor + remaining
            remaining -= available
            cursor = end
        raise AssertionError("unreachable")  # _intervals_from raises first

    def between(self, a: datetime, b: datetime) -> timedelta:
        """Business time from a to b (zero when b is not after a)."""
        if b <= a:
            return timedelta(0)
        total = timedelta(0)
        for start, end in self._intervals_from(a):
            if start >= b:
                break
            total += min(end, b) - max(start, a)
        return total


WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


def parse_days(names: list[str]) -> frozenset[int]:
    """["sat", "sun", ...] or ["saturday", ...] to weekday numbers."""
    days = set()
    for name in names:
        key = name.strip().lower()[:3]
        if key not in WEEKDAYS:
            raise ValueError(f"{name!r} is not a day of the week")
        days.add(WEEKDAYS[key])
    return frozenset(days)


def due_at(
    received: datetime, hours: float, calendar: BusinessCalendar, *, business: bool
) -> datetime:
    """When a first response is due for mail that reached the mailbox at `received`."""
    if business:
        return calendar.add(received, timedelta(hours=hours))
    return received.astimezone(UTC) + timedelta(hours=hours)
