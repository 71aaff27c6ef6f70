"""What the desk says back to a new ticket: the acknowledgement and the sales copy.

Decided in the ingest transaction (the outbox row commits with the ticket), composed from
the facts the filing already worked out once per message (robot verdict, due time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from supportd.domain.acknowledgement import AckContext, SupportHours, timing
from supportd.domain.autoreply import ReplyFacts, decide_acknowledgement
from supportd.domain.calendar import BusinessCalendar, due_at
from supportd.domain.classify import own_words
from supportd.domain.mail import FetchedMail, ParsedMail
from supportd.domain.threads import strip_tag, ticket_tag
from supportd.services.plan import ChunkPlan, Outgoing
from supportd.services.ports import Composer


@dataclass(frozen=True)
class ReplyPolicy:
    """How the desk answers new tickets: hours, response target, rules, wording."""

    calendar: BusinessCalendar
    response_hours: float
    business_clock: bool
    hours: SupportHours
    classify: Callable[[str, str], str]  # (subject, text) -> category
    composer: Composer
    secret: str
    per_sender_limit: int = 3
    enabled: bool = True
    form_senders: frozenset[str] = frozenset()
    sales: str = ""
    contact_form_url: str = ""
    faq_url: str = ""
    customization_resources: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeskIdentity:
    """Who the desk is: its product tag, its own address and its agents."""

    product: str
    address: str
    agents: frozenset[str]

    @property
    def own_addresses(self) -> frozenset[str]:
        return self.agents | {self.address}


class Arrival:
    """What is decided once per incoming message, before it is filed: the robot verdict
    ("" for a person) and, worked out the first time it is asked for, the response target
    if the message opens a ticket (None: no target)."""

    def __init__(
        self, automatic: str, due_of: Callable[[], datetime | None] = lambda: None
    ) -> None:
        self.automatic = automatic
        self._due_of = due_of

    @cached_property
    def due(self) -> datetime | None:
        return self._due_of()


class Answerer:
    """Decides about (and queues) the acknowledgement of a new ticket and its sales copy."""

    def __init__(self, desk: DeskIdentity, replies: ReplyPolicy) -> None:
        self.desk = desk
        self.replies = replies

    def arrival(self, mail: ParsedMail, fetched: FetchedMail, automatic: str) -> Arrival:
        replies = self.replies
        if automatic:
            return Arrival(automatic)
        return Arrival(
            automatic,
            lambda: due_at(
                fetched.internaldate,
                replies.response_hours,
                replies.calendar,
                business=replies.business_clock,
            ),
        )

    def answer(
        self,
        plan: ChunkPlan,
        ticket: int,
        mail: ParsedMail,
        fetched: FetchedMail,
        category: str,
        new_ticket: bool,
        arrival: Arrival,
    ) -> str:
        """Decide about (and queue) the acknowledgement; returns the decision as recorded."""
        replies = self.replies
        automatic = arrival.automatic
        sender = mail.sender.email if mail.sender else ""
        # The history lookups only matter when every cheaper rule lets the reply through.
        look = bool(sender) and new_ticket and replies.enabled and not automatic
        decision = decide_acknowledgement(
            mail,
            ReplyFacts(
                new_ticket=new_ticket,
                sender=sender,
                desk_addresses=self.desk.own_addresses,
                agents=self.desk.agents,
                secret=replies.secret,
                sent_to_sender_last_24h=plan.acknowledged_last_day(sender) if look else 0,
                per_sender_limit=replies.per_sender_limit,
                suppressed_until=plan.suppressed_until(sender) if look else None,
                now=plan.now,
                enabled=replies.enabled,
                automatic=automatic,
            ),
        )
        if not new_ticket or automatic:
            return decision.describe()
        context = self._context(mail, fetched, category, arrival)
        composer = replies.composer
        if decision.send:
            plan.send(
                Outgoing(
                    ticket,
                    "auto_reply",
                    self.desk.address,
                    sender,
                    lambda number, mid: composer.acknowledgement(context(number), mid),
                )
            )
        if category in ("presales", "account") and replies.sales:
            text = mail.text
            plan.send(
                Outgoing(
                    ticket,
                    "notification",
                    self.desk.address,
                    replies.sales,
                    lambda number, mid: composer.sales_copy(context(number), text, mid),
                )
            )
        return decision.describe()

    def _context(
        self, mail: ParsedMail, fetched: FetchedMail, category: str, arrival: Arrival
    ) -> Callable[[int], AckContext]:
        replies = self.replies
        assert mail.sender is not None and arrival.due is not None
        received = fetched.internaldate
        outside, next_open = timing(received, replies.calendar)
        due = arrival.due
        customer = mail.sender
        product = self.desk.product

        def build(number: int) -> AckContext:
            return AckContext(
                ticket=number,
                tag=ticket_tag(product, number),
                subject=strip_tag(mail.subject, product) or "(no subject)",
                customer=customer,
                category=category,
                received=received,
                outside_hours=outside,
                next_open=next_open,
                due=due,
                business_clock=replies.business_clock,
                response_hours=replies.response_hours,
                hours=replies.hours,
                in_reply_to=mail.message_id,
                references=(*mail.references, mail.message_id)
                if mail.message_id
                else mail.references,
                query_text=f"{mail.subject}\n{own_words(mail.text, 5000)}",
                contact_form_url=replies.contact_form_url,
                faq_url=replies.faq_url,
                customization_resources=replies.customization_resources,
            )

        return build
