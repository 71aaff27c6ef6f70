"""Keeping each ticket's response clock as mail comes and goes (domain/sla.py decides).

A customer's message starts the clock (first response from the ticket's first message,
next response from the first unanswered one) or resumes a paused one; the team's answer
stops it; #pending and #close pause it. Each change stores the due time and the instant
the escalation scan must look again (next_event_at), in the message's transaction.
"""

from __future__ import annotations

from datetime import datetime

from supportd.domain.sla import NEVER, Clock, SlaPolicy, clock_of, evaluate, pause, resume
from supportd.services.plan import ChunkPlan


def clock_columns(clock: Clock | None, now: datetime, policy: SlaPolicy) -> dict[str, object]:
    """The ticket columns for `clock` at `now` (the scan sends what is due, not this)."""
    if clock is None:
        return {
            "clock_started_at": None,
            "clock_paused": 0.0,
            "clock_paused_since": None,
            "next_response_due": None,
            "next_event_at": None,
            "escalation_level": 0,
        }
    ev = evaluate(clock, now, policy)
    return {
        "clock_started_at": clock.started,
        "clock_first": clock.first,
        "clock_paused": clock.paused.total_seconds(),
        "clock_paused_since": clock.paused_since,
        "next_response_due": None if ev.due == NEVER else ev.due,
        # An event already due (mail that arrived while the desk was down): the next scan.
        "next_event_at": now if ev.event is not None else ev.next_at,
        "escalation_level": clock.level,
    }


class ClockKeeper:
    def __init__(self, policy: SlaPolicy) -> None:
        self.policy = policy

    def _write(self, plan: ChunkPlan, ticket: int, clock: Clock | None) -> None:
        plan.change(ticket, **clock_columns(clock, plan.now, self.policy))

    def customer_message(self, plan: ChunkPlan, ticket: int, at: datetime) -> None:
        """A customer wrote: start the clock, or resume it if the ticket was paused."""
        state = plan.state(ticket)
        if state is None:
            return
        clock = clock_of(state)
        if clock is None:
            first = state.first_responded_at is None
            clock = Clock(started=at, first=first, category=state.category)
        elif clock.paused_since is not None:
            clock = resume(clock, at, self.policy)
        else:
            return
        self._write(plan, ticket, clock)

    def answered(self, plan: ChunkPlan, ticket: int) -> None:
        """The team answered: the clock stops, its escalation level goes back to 0."""
        self._write(plan, ticket, None)

    def paused(self, plan: ChunkPlan, ticket: int, at: datetime) -> None:
        state = plan.state(ticket)
        clock = clock_of(state) if state else None
        if clock is not None:
            self._write(plan, ticket, pause(clock, at))

    def resumed(self, plan: ChunkPlan, ticket: int, at: datetime) -> None:
        state = plan.state(ticket)
        clock = clock_of(state) if state else None
        if clock is not None:
            self._write(plan, ticket, resume(clock, at, self.policy))
