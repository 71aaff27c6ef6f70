"""Filing one message: which ticket it joins or opens, what it changes, who hears of it.

The robot verdict and the response target are worked out once per message (Arrival) and
handed to whoever needs them: the ticket, the acknowledgement, the clocks.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

from supportd.domain.acknowledgement import form_customer
from supportd.domain.mail import FetchedMail, ParsedMail
from supportd.domain.robots import automatic_reason
from supportd.domain.threads import (
    answered_by,
    decide,
    new_participants,
    replies_to,
    sibling_of,
    strip_tag,
)
from supportd.services.answers import Answerer, Arrival, DeskIdentity, ReplyPolicy
from supportd.services.clocks import ClockKeeper
from supportd.services.plan import ChunkPlan
from supportd.services.records import IncomingMessage
from supportd.services.team import Filed, Team

log = logging.getLogger(__name__)

SUPPRESS_AFTER_BOUNCE = timedelta(days=30)


class Filer:
    """Threads each parsed message onto a ticket of a ChunkPlan."""

    def __init__(
        self,
        desk: DeskIdentity,
        replies: ReplyPolicy | None = None,
        team: Team | None = None,
        clocks: ClockKeeper | None = None,
    ) -> None:
        self.desk = desk
        self.replies = replies
        self.answers = Answerer(desk, replies) if replies is not None else None
        self.team = team
        self.clocks = clocks

    def file(self, plan: ChunkPlan, fetched: FetchedMail, mail: ParsedMail, key: str) -> int:
        """Thread `mail` onto a ticket (or open one) in the plan; returns its number."""
        replies = self.replies
        if replies and mail.sender and mail.sender.email in replies.form_senders:
            customer = form_customer(mail)
            # A website form mailer speaks for the customer it names, unless the name is the
            # desk's or an agent's address: a visitor must not become an agent that way.
            if customer is not None and customer.email not in self.desk.own_addresses:
                # Judged again as the customer's: the worker's verdict was about the form
                # mailer's own address (often no-reply@), which answers for no one here.
                mail = replace(mail, sender=customer, automatic=None)
        threading_mail = mail
        if mail.bounce is not None:  # a bounce belongs with the mail that bounced
            threading_mail = replace(mail, in_reply_to=mail.bounce.original_ids + mail.in_reply_to)
        refs = threading_mail.thread_references()
        # Stored messages link only between the same people (domain/threads: a Message-ID
        # is no secret); supportd's own link as issued.
        known = {
            r: seen.ticket
            for r in refs
            if (seen := plan.seen_by_id.get(r)) is not None and replies_to(threading_mail, seen)
        }
        related = None
        sender = mail.sender.email if mail.sender else ""
        if not known:  # out of order: a reply to this mail, or a sibling, arrived first
            answers = plan.children_of.get(mail.message_id or "", ())
            related = next((c.ticket for c in answers if answered_by(mail, c)), None)
            if related is None:
                # Two customers answering one announcement are two tickets, not one.
                related = next(
                    (
                        s.ticket
                        for m in refs
                        for s in plan.children_of.get(m, ())
                        if sibling_of(mail, s)
                    ),
                    None,
                )
        decision = decide(threading_mail, self.desk.product, known, plan.members, related)
        # The parse worker judged it already; mail filed without it (replays) is judged here.
        automatic = automatic_reason(mail) if mail.automatic is None else mail.automatic
        arrival = (
            self.answers.arrival(mail, fetched, automatic)
            if self.answers is not None
            else Arrival(automatic)
        )
        team = self.team
        untrusted = ""
        if team is not None and sender in team.policy.emails and mail.bounce is None:
            filed = team.file_agent_mail(plan, fetched, mail, decision.ticket, automatic)
            if filed.ticket is not None:
                return self._file_team_row(plan, fetched, mail, key, filed, automatic)
            untrusted = filed.untrusted  # stored like a customer's mail, relayed to nobody
        existing = decision.ticket
        continues = None
        if (
            existing is not None
            and team is not None
            and mail.bounce is None
            and not automatic
            and team.continued(plan, existing, fetched.internaldate)
        ):
            continues, existing = existing, None  # closed long ago: a new ticket names it
        category = "other"
        if existing is None:
            if replies and not automatic:
                category = mail.category or replies.classify(mail.subject, mail.text)
            ticket = plan.open_ticket(
                strip_tag(mail.subject, self.desk.product) or "(no subject)",
                sender,
                mail.sender.name if mail.sender else "",
                fetched.internaldate,
                category,
                arrival.due,
                continues,
            )
            requester = sender
        else:
            ticket = existing
            requester = plan.requester(ticket)
        plan.add_members(
            ticket, new_participants(mail, requester, self.desk.own_addresses), requester
        )
        if mail.bounce is not None:
            kind = "note"
            if mail.bounce.permanent:
                for address in mail.bounce.recipients:
                    plan.suppress(
                        address,
                        plan.now + SUPPRESS_AFTER_BOUNCE,
                        f"permanent bounce, UID {fetched.uid} of {plan.mailbox}",
                    )
        else:
            kind = "customer"
        message = IncomingMessage(
            ticket,
            mail,
            fetched,
            kind,
            automatic,
            plan.mailbox,
            plan.uidvalidity,
            key,
            plan.now,
            untrusted=untrusted,
        )
        if self.answers is not None:
            message.reply_decision = self.answers.answer(
                plan, ticket, mail, fetched, category, existing is None, arrival
            )
        # Untrusted agent-looking mail is kept, but changes nothing: no reopening.
        reopen = kind == "customer" and not automatic and not untrusted
        plan.add_message(message, reopen=reopen)
        if (
            kind == "customer"
            and not automatic
            and not untrusted
            and sender != self.desk.address  # the desk writing to itself: a loop, not a customer
        ):
            if self.clocks is not None:  # a customer awaits the team from now on
                self.clocks.customer_message(plan, ticket, fetched.internaldate)
            if team is not None:
                team.notify(plan, ticket, mail, fetched.raw, quotes=message)
        log.debug("%s UID %d -> ticket %d (%s)", plan.mailbox, fetched.uid, ticket, decision.reason)
        return ticket

    def _file_team_row(
        self,
        plan: ChunkPlan,
        fetched: FetchedMail,
        mail: ParsedMail,
        key: str,
        filed: Filed,
        automatic: str,
    ) -> int:
        """Store an agent's mail as the team side decided (reply, note, direct answer)."""
        assert filed.ticket is not None
        message = IncomingMessage(
            filed.ticket,
            mail,
            fetched,
            filed.kind,
            automatic,
            plan.mailbox,
            plan.uidvalidity,
            key,
            plan.now,
            direction=filed.direction,
            text=filed.text,
            untrusted=filed.untrusted,
            reply_decision="suppressed: agent",
        )
        plan.add_message(message, reopen=False, counted=False)
        return filed.ticket
