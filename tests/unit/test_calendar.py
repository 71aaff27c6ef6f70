"""Business calendar: Saturday–Thursday 10:00–18:00 Asia/Dhaka, holidays, closed dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supportd.domain.calendar import BusinessCalendar, NeverOpenError, due_at, parse_days

DHAKA = ZoneInfo("Asia/Dhaka")


def calendar(**kw: object) -> BusinessCalendar:
    base: dict[str, object] = {
        "timezone": DHAKA,
        "open_days": parse_days(["sat", "sun", "mon", "tue", "wed", "thu"]),
        "opens": time(10),
        "closes": time(18),
    }
    base.update(kw)
    return BusinessCalendar(**base)  # type: ignore[arg-type]


def dhaka(y: int, m: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, tzinfo=DHAKA)


CAL = calendar()


def test_open_inside_hours_closed_outside_and_on_friday() -> None:
    assert CAL.is_open(dhaka(2026, 11, 22, 10))  # Sunday 10:00
    assert not CAL.is_open(dhaka(2026, 11, 22, 18))  # closing instant is closed
    assert not CAL.is_open(dhaka(2026, 11, 22, 9, 59))
    assert not CAL.is_open(dhaka(2026, 11, 27, 12))  # Friday


def test_thursday_evening_mail_is_due_sunday_afternoon() -> None:
    due = due_at(dhaka(2026, 11, 19, 17), 14, CAL, business=True)
    assert due == dhaka(2026, 11, 22, 15)  # 1 h Thu + 8 h Sat + 5 h Sun


def test_calendar_clock_is_wall_clock() -> None:
    due = due_at(dhaka(2026, 11, 19, 17), 14, CAL, business=False)
    assert due == dhaka(2026, 11, 20, 7)


def test_friday_mail_waits_for_saturday_opening() -> None:
    friday = dhaka(2026, 11, 20, 12)
    assert CAL.next_open(friday) == dhaka(2026, 11, 21, 10)
    assert due_at(friday, 14, CAL, business=True) == dhaka(2026, 11, 22, 16)


def test_public_holiday_from_the_holidays_package() -> None:
    bd = holidays.country_holidays("BD")
    cal = calendar(holidays=bd)
    victory_day = date(2026, 12, 16)  # Victory Day, a Wednesday
    assert victory_day in bd
    assert not cal.is_open(dhaka(2026, 12, 16, 12))
    # Tuesday 17:00 + 14 h: 1 h Tue, Wed closed, 8 h Thu, Fri closed, 5 h Sat.
    assert due_at(dhaka(2026, 12, 15, 17), 14, cal, business=True) == dhaka(2026, 12, 19, 15)


def test_closed_and_extra_open_dates() -> None:
    cal = calendar(
        closed_dates=frozenset({date(2026, 11, 22)}),
        extra_open_dates=frozenset({date(2026, 11, 27)}),
    )
    assert not cal.is_open(dhaka(2026, 11, 22, 12))  # a Sunday made closed
    assert cal.is_open(dhaka(2026, 11, 27, 12))  # a Friday made open


def test_between_counts_only_open_time() -> None:
    assert CAL.between(dhaka(2026, 11, 19, 17), dhaka(2026, 11, 22, 15)) == timedelta(hours=14)
    assert CAL.between(dhaka(2026, 11, 22, 15), dhaka(2026, 11, 19, 17)) == timedelta(0)


def test_a_calendar_that_never_opens_fails_plainly() -> None:
    cal = calendar(open_days=frozenset())
    with pytest.raises(NeverOpenError):
        cal.next_open(dhaka(2026, 11, 22, 12))


def test_bad_hours_and_days_are_refused() -> None:
    with pytest.raises(ValueError):
        calendar(opens=time(18), closes=time(10))
    with pytest.raises(ValueError, match="Caturday"):
        parse_days(["Caturday"])


instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
amounts = st.integers(min_value=0, max_value=200 * 60).map(lambda m: timedelta(minutes=m))
BD_CAL = calendar(holidays=holidays.country_holidays("BD", years=range(2025, 2031)))


@settings(max_examples=300, deadline=None)
@given(t=instants, h=amounts)
def test_adding_then_measuring_gives_the_amount_back(t: datetime, h: timedelta) -> None:
    assert BD_CAL.between(t, BD_CAL.add(t, h)) == h


@settings(max_examples=300, deadline=None)
@given(t=instants, h=amounts.filter(lambda a: a > timedelta(0)))
def test_results_fall_inside_opening_hours(t: datetime, h: timedelta) -> None:
    due = BD_CAL.add(t, h)
    # The due instant closes an open stretch: just before it, support was open.
    assert BD_CAL.is_open(due - timedelta(seconds=1))
    assert BD_CAL.is_open(BD_CAL.next_open(t))


@settings(max_examples=300, deadline=None)
@given(a=instants, b=instants, h=amounts)
def test_monotone_in_t(a: datetime, b: datetime, h: timedelta) -> None:
    early, late = sorted((a, b))
    assert BD_CAL.add(early, h) <= BD_CAL.add(late, h)
    assert BD_CAL.next_open(early) <= BD_CAL.next_open(late)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31)),
        min_size=1,
        max_size=30,
    )
)
def test_a_calendar_that_remembers_its_days_answers_as_a_fresh_one(moments: list) -> None:  # type: ignore[type-arg]
    """The day cache (issue 9) never changes an answer: one calendar asked many times, and
    a new calendar for every question, agree (with holidays and closed dates)."""
    kw = {
        "holidays": holidays.country_holidays("BD"),
        "closed_dates": frozenset({date(2026, 12, 24)}),
    }
    shared = calendar(**kw)
    for moment in moments:
        t = moment.replace(tzinfo=UTC)
        fresh = calendar(**kw)
        assert shared.is_open(t) == fresh.is_open(t)
        assert shared.next_open(t) == fresh.next_open(t)
        assert due_at(t, 14, shared, business=True) == due_at(t, 14, fresh, business=True)
        assert shared.between(t, t + timedelta(days=3)) == fresh.between(t, t + timedelta(days=3))
