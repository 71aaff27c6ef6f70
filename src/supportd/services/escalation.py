"""The escalation scan: warn before, and tell when, a ticket misses its response target.

One indexed query on tickets.next_event_at finds what is due, whatever the number of
closed tickets. Each escalation mail goes through the outbox in the transaction that
raises the ticket's escalation_level, so a crash can neither lose nor double it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from supportd.domain.mail import Address
from supportd.domain.sla import NEVER, SlaPolicy, clock_of, evaluate
from supportd.domain.team import TicketFacts, TicketState
from supportd.domain.threads import ticket_tag
from supportd.services.plan import ChunkPlan, Outgoing
from supportd.services.ports import Clock, UnitOfWorkFactory

log = logging.getLogger(__name__)

BATCH = 200
RETRY_LATER = timedelta(minutes=1)
Built = tuple[str, str, bytes]


class EscalationMail(Protocol):
    def escalation(
        self,
        facts: TicketFacts,
        event: str,
        due: datetime,
        left: timedelta,
        recipients: Sequence[str],
        message_id: str,
    ) -> Built: ...


@dataclass
class ScanStats:
    examined: int = 0
    warnings: int = 0
    breaches: int = 0


class Escalator:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        policy: SlaPolicy,
        mail: EscalationMail,
        *,
        address: str,
        product: str,
        escalation: Sequence[str],
        message_id_for: Callable[[int], str],
        clock: Clock,
    ) -> None:
        self.uow = uow
        self.policy = policy
        self.mail = mail
        self.address = address
        self.product = product
        self.escalation = tuple(escalation)
        self.message_id_for = message_id_for
        self.clock = clock

    def scan(self) -> ScanStats:
        """Send every escalation due now; returns what it did."""
        stats = ScanStats()
        for _ in range(10_000):  # bounded: a scan never spins
            now = self.clock()
            with self.uow() as store:
                states = store.due_clocks(now, BATCH)
                if not states:
                    break
                plan = ChunkPlan(store, "", 0, now, {}, {}, {}, self.message_id_for)
                for state in states:
                    self._one(plan, state, now, stats)
                plan.flush()
                store.commit()
            if len(states) < BATCH:
                break
        return stats

    def _one(self, plan: ChunkPlan, state: TicketState, now: datetime, stats: ScanStats) -> None:
        stats.examined += 1
        clock = clock_of(state)
        if clock is None or (state.status != "open" and clock.paused_since is None):
            plan.change(state.number, next_event_at=None)
            return
        ev = evaluate(clock, now, self.policy)
        next_at = ev.next_at
        if next_at is not None and next_at <= now and ev.event is None:
            next_at = now + RETRY_LATER  # never the same instant again: no busy scan
        plan.change(
            state.number,
            escalation_level=ev.level,
            next_event_at=next_at,
            next_response_due=None if ev.due == NEVER else ev.due,
        )
        if ev.event is None:
            return
        if ev.event == "breach":
            stats.breaches += 1
        else:
            stats.warnings += 1
        recipients = list(self.escalation)
        if state.assignee and state.assignee not in recipients:
            recipients.append(state.assignee)
        log.warning(
            "ticket %d: SLA %s (due %s); telling %s",
            state.number,
            "breached" if ev.event == "breach" else "warning",
            ev.due.isoformat(timespec="minutes"),
            ", ".join(recipients) or "nobody (support.escalation is empty)",
        )
        if not recipients:
            return
        facts = TicketFacts(
            number=state.number,
            tag=ticket_tag(self.product, state.number),
            subject=state.subject,
            requester=Address(state.requester, state.requester_name),
            category=state.category,
            status=state.status,
            due=ev.due,
            assignee=state.assignee,
        )
        event, due, left = ev.event, ev.due, ev.left

        def build(number: int, mid: str) -> Built:
            return self.mail.escalation(facts, event, due, left, recipients, mid)

        plan.send(Outgoing(state.number, "escalation", self.address, ", ".join(recipients), build))
