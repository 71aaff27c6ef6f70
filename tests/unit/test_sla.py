"""Response clocks: due and warning times, pauses, escalation events held outside hours."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from supportd.domain.calendar import MAX_DAYS, BusinessCalendar, parse_days
from supportd.domain.sla import (
    BREACH,
    NEVER,
    WARNING,
    Clock,
    Evaluation,
    SlaPolicy,
    evaluate,
    pause,
    resume,
)

DHAKA = ZoneInfo("Asia/Dhaka")
US = timedelta(microseconds=1)
H = timedelta(hours=1)


def dhaka(y: int, m: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, tzinfo=DHAKA)


CAL = BusinessCalendar(
    timezone=DHAKA,
    open_days=parse_days(["sat", "sun", "mon", "tue", "wed", "thu"]),
    opens=time(10),
    closes=time(18),
    holidays=holidays.country_holidays("BD", years=range(2025, 2031)),
)
POLICY = SlaPolicy(calendar=CAL)
THURSDAY_17 = dhaka(2026, 11, 19, 17)  # 1 business hour left on Thursday, Friday closed


def first(started: datetime, category: str = "other", **kw: object) -> Clock:
    return Clock(started=started, first=True, category=category, **kw)  # type: ignore[arg-type]


# Examples: the Dhaka calendar, Saturday to Thursday 10:00-18:00.


def test_thursday_evening_ticket_warns_and_breaches_on_sunday() -> None:
    clock = first(THURSDAY_17)
    ev = evaluate(clock, dhaka(2026, 11, 19, 17, 30), POLICY)
    # 14 h: 1 h Thursday, Friday closed, 8 h Saturday, 5 h Sunday.
    assert ev.due == dhaka(2026, 11, 22, 15)
    assert ev.warn == dhaka(2026, 11, 22, 11, 30)  # 10.5 h = 1 + 8 + 1.5
    assert (ev.event, ev.level, ev.held) == (None, 0, False)
    assert ev.next_at == ev.warn
    assert ev.left == timedelta(hours=13, minutes=30)
    assert ev.due.tzinfo == UTC

    assert evaluate(clock, dhaka(2026, 11, 21, 12), POLICY).left == 11 * H  # 6 h Sat + 5 h Sun

    warned = evaluate(clock, dhaka(2026, 11, 22, 11, 30), POLICY)
    assert (warned.event, warned.level, warned.next_at) == (WARNING, 1, ev.due)

    clock = replace(clock, level=warned.level)
    assert evaluate(clock, dhaka(2026, 11, 22, 14), POLICY).event is None
    breached = evaluate(clock, dhaka(2026, 11, 22, 15), POLICY)
    assert (breached.event, breached.level, breached.next_at) == (BREACH, 2, None)
    assert breached.left == timedelta(0)

    clock = replace(clock, level=breached.level)
    done = evaluate(clock, dhaka(2026, 11, 23, 12), POLICY)
    assert (done.event, done.level, done.next_at) == (None, 2, None)
    assert done.left == -5 * H  # 3 h Sunday + 2 h Monday overdue


def test_after_downtime_only_the_breach_is_sent() -> None:
    ev = evaluate(first(THURSDAY_17), dhaka(2026, 11, 22, 16), POLICY)
    assert (ev.event, ev.level, ev.next_at, ev.left) == (BREACH, 2, None, -H)


def test_an_event_found_on_friday_waits_for_saturday_opening() -> None:
    clock = first(dhaka(2026, 11, 18, 10))  # Wednesday 10:00: due Thursday 16:00
    friday = evaluate(clock, dhaka(2026, 11, 20, 12), POLICY)
    assert friday.due == dhaka(2026, 11, 19, 16)
    assert (friday.event, friday.level, friday.held) == (None, 0, True)
    assert friday.next_at == dhaka(2026, 11, 21, 10)
    assert friday.left == -2 * H
    saturday = evaluate(clock, dhaka(2026, 11, 21, 10), POLICY)
    assert (saturday.event, saturday.level, saturday.held) == (BREACH, 2, False)

    anytime = replace(POLICY, notify_outside_hours=True)
    assert evaluate(clock, dhaka(2026, 11, 20, 12), anytime).event == BREACH


def test_a_bangladesh_holiday_in_the_window_is_skipped() -> None:
    # Tuesday 17:00 + 14 h: 1 h Tue, Victory Day (Wed) closed, 8 h Thu, Fri closed, 5 h Sat.
    assert date(2026, 12, 16) in CAL.holidays
    ev = evaluate(first(dhaka(2026, 12, 15, 17)), dhaka(2026, 12, 15, 17), POLICY)
    assert ev.due == dhaka(2026, 12, 19, 15)
    assert ev.warn == dhaka(2026, 12, 19, 11, 30)
    assert ev.left == 14 * H
    held = evaluate(first(dhaka(2026, 12, 14, 10)), dhaka(2026, 12, 16, 12), POLICY)
    assert held.held and held.next_at == dhaka(2026, 12, 17, 10)  # the holiday is closed


def test_a_category_target_overrides_first_and_next_hours() -> None:
    policy = replace(POLICY, next_response_hours=4, targets={"billing": 8})
    assert policy.target(True, "billing") == policy.target(False, "billing") == 8 * H
    assert policy.target(True, "other") == 14 * H
    assert policy.target(False, "other") == 4 * H

    billing = evaluate(first(THURSDAY_17, "billing"), THURSDAY_17, policy)
    assert billing.due == dhaka(2026, 11, 21, 17)  # 1 h Thursday + 7 h Saturday
    assert billing.warn == dhaka(2026, 11, 21, 15)  # 6 h
    nxt = Clock(started=THURSDAY_17, first=False, category="other")
    assert evaluate(nxt, THURSDAY_17, policy).due == dhaka(2026, 11, 21, 13)  # 1 h + 3 h


def test_wall_clock_counts_every_hour() -> None:
    wall = replace(POLICY, business=False)
    clock = first(THURSDAY_17)
    ev = evaluate(clock, dhaka(2026, 11, 19, 18), wall)
    assert ev.due == dhaka(2026, 11, 20, 7)
    assert ev.warn == dhaka(2026, 11, 20, 3, 30)
    assert ev.left == 13 * H
    # The warning falls at 03:30 on a Friday: held until Saturday 10:00 ...
    assert ev.next_at == dhaka(2026, 11, 21, 10)
    held = evaluate(clock, dhaka(2026, 11, 20, 3, 30), wall)
    assert held.held and held.event is None and held.next_at == dhaka(2026, 11, 21, 10)
    late = evaluate(clock, dhaka(2026, 11, 21, 10), wall)
    assert (late.event, late.left) == (BREACH, -27 * H)
    # ... unless escalations may go out at any hour.
    anytime = replace(wall, notify_outside_hours=True)
    assert evaluate(clock, dhaka(2026, 11, 19, 18), anytime).next_at == ev.warn
    assert evaluate(clock, dhaka(2026, 11, 20, 3, 30), anytime).event == WARNING


def test_pausing_moves_the_due_time_by_the_business_time_paused() -> None:
    clock = pause(first(THURSDAY_17), dhaka(2026, 11, 21, 12))  # pending Saturday noon
    assert pause(clock, dhaka(2026, 11, 21, 15)) == clock  # already paused: no-op
    # While paused: shown as if resumed now (6 h paused on Saturday), and nothing fires.
    shown = evaluate(clock, dhaka(2026, 11, 21, 18), POLICY)
    assert shown.due == dhaka(2026, 11, 23, 13)  # Sunday 15:00 + 6 h: 3 h Sun, 3 h Mon
    assert (shown.event, shown.next_at, shown.held) == (None, None, False)
    overdue = evaluate(clock, dhaka(2026, 12, 1, 12), POLICY)
    assert overdue.event is None and overdue.next_at is None and overdue.left > timedelta(0)

    running = resume(clock, dhaka(2026, 11, 22, 12), POLICY)  # 6 h Sat + 2 h Sun
    assert running.paused == 8 * H and running.paused_since is None
    assert resume(running, dhaka(2026, 11, 22, 13), POLICY) == running  # running: no-op
    assert evaluate(running, dhaka(2026, 11, 22, 12), POLICY).due == dhaka(2026, 11, 23, 15)

    wall = replace(POLICY, business=False)
    assert resume(clock, dhaka(2026, 11, 22, 12), wall).paused == 24 * H


def test_resuming_before_the_pause_adds_nothing() -> None:
    clock = pause(first(THURSDAY_17), dhaka(2026, 11, 22, 12))
    assert resume(clock, dhaka(2026, 11, 21, 12), POLICY).paused == timedelta(0)


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 11, 19, 17)
    with pytest.raises(ValueError, match="timezone-aware"):
        first(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(first(THURSDAY_17), naive, POLICY)
    with pytest.raises(ValueError, match="timezone-aware"):
        pause(first(THURSDAY_17), naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        resume(pause(first(THURSDAY_17), THURSDAY_17), naive, POLICY)


@pytest.mark.parametrize(
    "kw",
    [
        {"warn_at": 0},
        {"warn_at": 1.5},
        {"first_response_hours": 0},
        {"next_response_hours": -1},
        {"first_response_hours": float("nan")},
        {"first_response_hours": float("inf")},
        {"first_response_hours": 1e300},
        {"targets": {"billing": 0}},
    ],
)
def test_bad_policies_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SlaPolicy(calendar=CAL, **kw)  # type: ignore[arg-type]


def test_bad_clocks_are_refused() -> None:
    with pytest.raises(ValueError):
        first(THURSDAY_17, paused=-H)
    with pytest.raises(ValueError):
        first(THURSDAY_17, level=3)


def test_the_policy_keeps_its_own_copy_of_the_targets() -> None:
    targets = {"billing": 8.0}
    policy = SlaPolicy(calendar=CAL, targets=targets)
    targets["billing"] = 1.0
    assert policy.target(True, "billing") == 8 * H


@pytest.mark.parametrize("business", [True, False])
def test_instants_at_the_ends_of_time_do_not_raise(business: bool) -> None:
    policy = replace(POLICY, business=business)
    far_west, far_east = timezone(timedelta(hours=-23)), timezone(timedelta(hours=23))
    ends = [
        datetime.min.replace(tzinfo=UTC),
        datetime.max.replace(tzinfo=UTC),
        datetime.min.replace(tzinfo=far_east),
        datetime.max.replace(tzinfo=far_west),
        THURSDAY_17,
    ]
    for started in ends:
        for now in ends:
            for clock in (
                first(started),
                first(started, paused=timedelta.max, level=1),
                pause(first(started), now),
            ):
                ev = evaluate(clock, now, policy)
                assert isinstance(ev, Evaluation) and ev.warn <= ev.due
                resume(clock, now, policy)
    assert evaluate(first(datetime.max.replace(tzinfo=UTC)), THURSDAY_17, policy).due == NEVER


# Properties, on the Bangladesh calendar (holidays included), in several zones.

ZONES = st.sampled_from([UTC, DHAKA, ZoneInfo("Europe/London"), ZoneInfo("America/New_York")])
instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=ZONES
)
hours = st.integers(min_value=1, max_value=60 * 60).map(lambda m: m / 60)
spans = st.integers(min_value=0, max_value=5 * 24 * 60).map(lambda m: timedelta(minutes=m))
policies = st.builds(
    SlaPolicy,
    calendar=st.just(CAL),
    first_response_hours=hours,
    next_response_hours=hours,
    business=st.booleans(),
    warn_at=st.floats(min_value=0, max_value=1, exclude_min=True),
    notify_outside_hours=st.booleans(),
    targets=st.dictionaries(st.sampled_from(["billing", "bug"]), hours, max_size=2),
)
categories = st.sampled_from(["billing", "bug", "other"])


@st.composite
def clocks(draw: st.DrawFn, running: bool = False) -> Clock:
    started = draw(instants)
    paused_since = None if running else draw(st.none() | instants)
    return Clock(
        started=started,
        first=draw(st.booleans()),
        category=draw(categories),
        paused=draw(st.just(timedelta(0)) | spans),
        paused_since=paused_since,
        level=draw(st.integers(min_value=0, max_value=2)),
    )


@settings(max_examples=150, deadline=None)
@given(clock=clocks(), now=instants, policy=policies)
def test_a_warning_never_comes_after_the_breach(
    clock: Clock, now: datetime, policy: SlaPolicy
) -> None:
    ev = evaluate(clock, now, policy)
    assert ev.warn <= ev.due
    assert ev.level >= clock.level
    if ev.event is not None:
        assert ev.level > clock.level and not ev.held


@settings(max_examples=60, deadline=None)
@given(
    policy=policies,
    started=instants,
    category=categories,
    steps=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=10 * 60).map(lambda m: timedelta(minutes=m)),
            st.sampled_from(["evaluate", "evaluate", "pause", "resume"]),
        ),
        max_size=40,
    ),
)
def test_each_event_fires_at_most_once_per_clock(
    policy: SlaPolicy,
    started: datetime,
    category: str,
    steps: list[tuple[timedelta, str]],
) -> None:
    clock = Clock(started=started, first=True, category=category)
    now = started.astimezone(UTC)  # steps in elapsed time: `now` only increases
    sent: list[str] = []
    for step, action in steps:
        now += step
        if action == "pause":
            clock = pause(clock, now)
        elif action == "resume":
            clock = resume(clock, now, policy)
        ev = evaluate(clock, now, policy)
        assert ev.level >= clock.level
        if ev.event is not None:
            sent.append(ev.event)
            assert policy.notify_outside_hours or CAL.is_open(now)
        clock = replace(clock, level=ev.level)
    assert sent.count(WARNING) <= 1 and sent.count(BREACH) <= 1
    assert sent in ([], [WARNING], [BREACH], [WARNING, BREACH])


@settings(max_examples=150, deadline=None)
@given(
    clock=clocks(running=True),
    a=instants,
    days=st.integers(min_value=0, max_value=40 * 24 * 60).map(lambda m: timedelta(minutes=m)),
    now=instants,
    policy=policies,
)
def test_pausing_moves_the_due_time_by_the_support_time_paused(
    clock: Clock, a: datetime, days: timedelta, now: datetime, policy: SlaPolicy
) -> None:
    b = a.astimezone(UTC) + days
    due = evaluate(clock, now, policy).due
    paused = pause(clock, a)
    after = evaluate(resume(paused, b, policy), now, policy)
    if policy.business:
        spent = CAL.between(a, b)
        # add(t, 0) would jump to the next opening; no business time paused moves nothing.
        assert after.due == (CAL.add(due, spent) if spent else due)
    else:
        assert after.due == due + (b.astimezone(UTC) - a.astimezone(UTC))  # elapsed, not wall
    # While paused, the clock is shown as if it resumed now.
    assert evaluate(paused, b, policy).due == after.due


@settings(max_examples=150, deadline=None)
@given(clock=clocks(running=True), now=instants, policy=policies)
def test_events_wait_for_support_hours(clock: Clock, now: datetime, policy: SlaPolicy) -> None:
    policy = replace(policy, notify_outside_hours=False)
    ev = evaluate(clock, now, policy)
    if ev.event is not None:
        assert CAL.is_open(now)
    if ev.held:
        assert not CAL.is_open(now) and ev.next_at == CAL.next_open(now)
        later = evaluate(clock, ev.next_at, policy)
        assert later.event is not None and not later.held and later.level > clock.level
        assert later.event == (BREACH if ev.next_at >= ev.due else WARNING)


@settings(max_examples=150, deadline=None)
@given(clock=clocks(running=True), now=instants, policy=policies)
def test_next_at_is_exact(clock: Clock, now: datetime, policy: SlaPolicy) -> None:
    ev = evaluate(clock, now, policy)
    if ev.held or ev.next_at is None:
        return
    assert ev.next_at > now
    stored = replace(clock, level=ev.level)
    assert evaluate(stored, ev.next_at - US, policy).event is None
    at = evaluate(stored, ev.next_at, policy)
    assert at.event is not None and at.level > ev.level
    if not policy.notify_outside_hours:
        assert CAL.is_open(ev.next_at)


@settings(max_examples=100, deadline=None)
@given(clock=clocks(running=True), now=instants, policy=policies)
def test_left_is_the_support_time_to_the_due_time(
    clock: Clock, now: datetime, policy: SlaPolicy
) -> None:
    ev = evaluate(clock, now, policy)
    # The calendar itself (the reference here) measures at most MAX_DAYS at a time.
    assume(abs(ev.due - now) < timedelta(days=MAX_DAYS - 10))
    if not policy.business:
        assert ev.left == ev.due - now
    elif ev.due >= now:
        assert ev.left == CAL.between(now, ev.due)
    else:
        assert ev.left == -CAL.between(ev.due, now)
