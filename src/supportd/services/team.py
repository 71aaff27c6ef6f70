"""The support team's side: notifications out, agents' replies in (relay, notes, commands).

Invariant 5: an agent's mail reaches a customer only with that agent's reply token for
the ticket, or trusted Authentication-Results; anything else is stored with the reason
and relayed to nobody. Everything queued here goes through the outbox in the transaction
of the message that caused it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from supportd.domain.agents import (
    VIA_AUTH_RESULTS,
    VIA_TOKEN,
    Agent,
    AuthHeader,
    ParsedCommands,
    decide_trust,
    find_tokens,
    parse_commands,
)
from supportd.domain.classify import CATEGORIES
from supportd.domain.mail import Address, Attachment, FetchedMail, ParsedMail
from supportd.domain.team import ThreadHead, TicketFacts, TicketState
from supportd.domain.threads import find_tag, ticket_tag
from supportd.services.clocks import ClockKeeper
from supportd.services.plan import ChunkPlan, Outgoing
from supportd.services.records import IncomingMessage, Payload

log = logging.getLogger(__name__)
_INVISIBLE = re.compile("[\ufeff\u200b\u200c\u200d\u2060\u00ad]")

Built = tuple[str, str, bytes]


class TeamMail(Protocol):
    """Reads agents' replies and writes the team's mail (adapters/teammail.py)."""

    def notification(
        self,
        facts: TicketFacts,
        agent: Agent,
        customer: Address,
        text: str,
        raw: bytes,
        message_id: str,
    ) -> tuple[str, str, Payload]:
        """The bytes, or a Deferred intent the outbox's renderer writes when it sends."""

    def relay(
        self,
        facts: TicketFacts,
        agent: Agent,
        to: Address,
        cc: Sequence[str],
        words: str,
        files: Sequence[Attachment],
        head: ThreadHead,
        message_id: str,
    ) -> Built: ...

    def note(
        self, facts: TicketFacts, author: Agent, reader: Agent, words: str, message_id: str
    ) -> Built: ...

    def notice(
        self,
        agent: Agent,
        subject: str,
        problems: Sequence[str],
        message_id: str,
        in_reply_to: str | None = None,
    ) -> Built: ...

    def agent_reply(self, raw: bytes) -> tuple[str, list[Attachment]]:
        """The agent's new words (no quoted history, facts block or token) and files."""

    def auth_headers(self, values: Sequence[str]) -> tuple[AuthHeader, ...]: ...


@dataclass(frozen=True)
class TeamPolicy:
    agents: tuple[Agent, ...]
    address: str  # the support address
    product: str
    secret: str
    mail: TeamMail
    authserv_id: str = ""
    reopen_days: float = 14.0

    @property
    def emails(self) -> frozenset[str]:
        return frozenset(a.email for a in self.agents)

    def agent(self, email: str) -> Agent | None:
        return next((a for a in self.agents if a.email == email), None)


@dataclass(frozen=True)
class Filed:
    """What the team's side decided about an agent's mail: the row to store."""

    ticket: int | None  # None: file it like a customer's mail (a new ticket if no thread)
    kind: str
    direction: str
    text: str
    untrusted: str = ""


class Team:
    """Notifications for customer mail, and the handling of agents' mail."""

    def __init__(self, policy: TeamPolicy, clocks: ClockKeeper | None = None) -> None:
        self.policy = policy
        self.clocks = clocks

    # -- customers' mail ------------------------------------------------------------------

    def facts(self, plan: ChunkPlan, ticket: int) -> TicketFacts | None:
        state = plan.state(ticket)
        if state is None:
            return None
        return TicketFacts(
            number=ticket,
            tag=ticket_tag(self.policy.product, ticket),
            subject=state.subject,
            requester=Address(state.requester, state.requester_name),
            category=state.category,
            status=state.status,
            due=state.due,
            assignee=state.assignee,
            continues=state.continues,
        )

    def notify(
        self,
        plan: ChunkPlan,
        ticket: int,
        mail: ParsedMail,
        raw: bytes,
        quotes: IncomingMessage | None = None,
    ) -> None:
        """One notification per agent (only the assignee once there is one); `quotes`: the
        stored message, whose row the notifications refer to for the customer's text."""
        facts = self.facts(plan, ticket)
        if facts is None or mail.sender is None:
            return
        readers = self.policy.agents
        if facts.assignee:
            assigned = self.policy.agent(facts.assignee)
            readers = (assigned,) if assigned else readers
        customer, text, product = mail.sender, mail.text, self.policy.product
        for agent in readers:

            def build(number: int, mid: str, agent: Agent = agent) -> tuple[str, str, Payload]:
                real = replace(facts, number=number, tag=ticket_tag(product, number))
                return self.policy.mail.notification(real, agent, customer, text, raw, mid)

            plan.send(
                Outgoing(ticket, "notification", self.policy.address, agent.email, build, quotes)
            )

    def continued(self, plan: ChunkPlan, ticket: int, now: datetime) -> bool:
        """True when a customer's mail on `ticket` must open a new ticket instead: it was
        closed more than support.reopen_days ago."""
        state = plan.state(ticket)
        if state is None or state.status != "closed" or state.closed_at is None:
            return False
        return now - state.closed_at > timedelta(days=self.policy.reopen_days)

    # -- agents' mail ---------------------------------------------------------------------

    def file_agent_mail(
        self,
        plan: ChunkPlan,
        fetched: FetchedMail,
        mail: ParsedMail,
        thread_ticket: int | None,
        automatic: str,
    ) -> Filed:
        """Decide about mail from an agent's address and queue what it causes."""
        policy = self.policy
        sender = mail.sender.email if mail.sender else ""
        agent = policy.agent(sender)
        assert agent is not None
        if automatic:  # an agent's out-of-office answering a notification: never relayed
            return self._untrusted(mail, fetched, f"automatic mail ({automatic})")
        to_cc = [a.email for a in (*mail.to, *mail.cc)]
        trust = decide_trust(
            sender=sender,
            recipients=[*to_cc, *mail.delivered_to],
            auth_headers=policy.mail.auth_headers(mail.auth_results),
            agents=policy.agents,
            support_address=policy.address,
            secret=policy.secret,
            authserv_id=policy.authserv_id,
        )
        own = policy.emails | {policy.address}
        tokens = find_tokens(to_cc, policy.address)
        direct = any(a not in own for a in to_cc) and not tokens
        if direct:  # written to the customer, the desk in Cc: recorded, not sent again
            if trust.via == VIA_AUTH_RESULTS or thread_ticket is not None:
                ticket = thread_ticket
                if ticket is None or plan.state(ticket) is None:
                    return self._untrusted(mail, fetched, "direct answer that names no ticket")
                plan.change(ticket, first_responded_at=fetched.internaldate)
                if self.clocks is not None:
                    self.clocks.answered(plan, ticket)
                words, _ = policy.mail.agent_reply(fetched.raw)
                log.info("ticket %d: %s answered the customer directly", ticket, sender)
                return Filed(ticket, "agent", "out", words)
            return self._untrusted(
                mail,
                fetched,
                "direct answer without proof of the ticket's thread (In-Reply-To/References) "
                "or trusted Authentication-Results",
            )
        if not trust.trusted:
            return self._untrusted(mail, fetched, trust.reason)
        ticket = trust.ticket if trust.via == VIA_TOKEN else thread_ticket
        if trust.via == VIA_TOKEN and ticket is not None:
            tagged = find_tag(mail.subject, policy.product)
            if (tagged is not None and tagged != ticket) or (
                thread_ticket is not None and thread_ticket != ticket
            ):
                return self._untrusted(
                    mail, fetched, f"token of ticket {ticket} under another ticket's tag or thread"
                )
        if ticket is None:
            return self._untrusted(mail, fetched, "trusted, but the mail names no ticket")
        state = plan.state(ticket)
        if state is None:
            self._notice(plan, agent, mail, [f"Ticket #{ticket} no longer exists."], None)
            return self._untrusted(mail, fetched, f"ticket {ticket} no longer exists")
        return self._reply(plan, fetched, mail, agent, ticket, state)

    def _untrusted(self, mail: ParsedMail, fetched: FetchedMail, reason: str) -> Filed:
        sender = mail.sender.email if mail.sender else ""
        log.warning(
            "UID %d from agent address %s not trusted, relayed to nobody: %s",
            fetched.uid,
            sender,
            reason,
        )
        return Filed(None, "customer", "in", mail.text, untrusted=reason[:300])

    def _reply(
        self,
        plan: ChunkPlan,
        fetched: FetchedMail,
        mail: ParsedMail,
        agent: Agent,
        ticket: int,
        state: TicketState,
    ) -> Filed:
        words, files = self.policy.mail.agent_reply(fetched.raw)
        # Invisible characters (BOM, zero-width) that HTML clients put before a line would
        # hide "#note" from the command parser and send the note to the customer.
        words = _INVISIBLE.sub("", words)
        agents = [a.email for a in self.policy.agents]
        parsed = parse_commands(words, CATEGORIES, agents)
        problems = list(parsed.errors)
        if not problems and not parsed.commands and not parsed.body.strip():
            problems.append(
                "The reply holds no new text (only quoted history), so there was nothing to send."
            )
        if parsed.note and not parsed.body.strip() and not problems:
            problems.append("#note needs the note's text below it.")
        if problems:
            self._notice(plan, agent, mail, problems, ticket)
            return Filed(ticket, "agent", "in", words)
        self._apply(plan, ticket, parsed, agent, fetched.internaldate)
        facts = self.facts(plan, ticket)
        assert facts is not None
        product = self.policy.product
        if parsed.note:
            for reader in self.policy.agents:
                if reader.email == agent.email:
                    continue

                def build_note(number: int, mid: str, reader: Agent = reader) -> Built:
                    real = replace(facts, number=number, tag=ticket_tag(product, number))
                    return self.policy.mail.note(real, agent, reader, parsed.body, mid)

                plan.send(Outgoing(ticket, "note", self.policy.address, reader.email, build_note))
            return Filed(ticket, "note", "in", parsed.body)
        if not parsed.body.strip():  # commands only: the customer hears nothing
            return Filed(ticket, "agent", "in", words)
        requester = Address(state.requester, state.requester_name)
        own = self.policy.emails | {self.policy.address}
        cc = sorted(m for m in plan.members(ticket) if m != state.requester and m not in own)
        head = plan.thread_head(ticket)
        body = parsed.body

        def build_relay(number: int, mid: str) -> Built:
            real = replace(facts, number=number, tag=ticket_tag(product, number))
            return self.policy.mail.relay(real, agent, requester, cc, body, files, head, mid)

        plan.send(
            Outgoing(
                ticket,
                "agent",
                self.policy.address,
                ", ".join([state.requester, *cc]),
                build_relay,
            )
        )
        plan.change(ticket, first_responded_at=fetched.internaldate)
        if self.clocks is not None:
            self.clocks.answered(plan, ticket)
        log.info("ticket %d: %s's answer relayed to %s", ticket, agent.email, state.requester)
        return Filed(ticket, "agent", "in", body)

    def _apply(
        self,
        plan: ChunkPlan,
        ticket: int,
        parsed: ParsedCommands,
        agent: Agent,
        at: datetime,
    ) -> None:
        clocks = self.clocks
        for command in parsed.commands:
            if command.name == "close":
                plan.change(ticket, status="closed", closed_at=plan.now)
                if clocks is not None:
                    clocks.paused(plan, ticket, at)
            elif command.name in ("pending", "open"):
                plan.change(ticket, status=command.name)
                if clocks is not None:
                    if command.name == "pending":
                        clocks.paused(plan, ticket, at)
                    else:
                        clocks.resumed(plan, ticket, at)
            elif command.name == "assign":
                who = agent.email if command.argument == "me" else command.argument
                plan.change(ticket, assignee=who)
            elif command.name == "category":
                plan.change(ticket, category=command.argument)
        if parsed.commands:
            log.info(
                "ticket %d: %s ran %s",
                ticket,
                agent.email,
                " ".join(f"#{c.name} {c.argument}".strip() for c in parsed.commands),
            )

    def _notice(
        self,
        plan: ChunkPlan,
        agent: Agent,
        mail: ParsedMail,
        problems: list[str],
        ticket: int | None,
    ) -> None:
        subject = mail.subject or "(no subject)"
        in_reply_to = mail.message_id

        def build(number: int, mid: str) -> Built:
            return self.policy.mail.notice(agent, subject, problems, mid, in_reply_to)

        plan.send(Outgoing(ticket, "notification", self.policy.address, agent.email, build))
