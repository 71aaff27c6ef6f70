"""Ingestion: mailbox messages to tickets, one transaction per FETCH batch.

Invariant 1: a batch's raw messages, its ticket changes and the advanced cursor commit
together, before anything is moved on the server. Invariant 3: each message runs in its
own SAVEPOINT; a failure rolls back that message alone and stores it raw in quarantine.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from supportd.domain.acknowledgement import AckContext, SupportHours, form_customer, timing
from supportd.domain.autoreply import ReplyFacts, decide_acknowledgement, outgoing_message_id
from supportd.domain.calendar import BusinessCalendar, due_at
from supportd.domain.classify import own_words
from supportd.domain.mail import Address, Cursor, FetchedMail, ParsedMail, dedup_key
from supportd.domain.robots import automatic_reason
from supportd.domain.threads import decide, new_participants, strip_tag, ticket_tag
from supportd.errors import SupportdError
from supportd.services.archive import ArchiveLog
from supportd.services.clocks import ClockKeeper
from supportd.services.plan import ChunkPlan, Outgoing
from supportd.services.ports import Clock, Composer, MailSource, TicketStore, UnitOfWorkFactory
from supportd.services.team import Filed, Team

log = logging.getLogger(__name__)

ParseMany = Callable[[Sequence[bytes]], list["ParsedMail | BaseException"]]
# Starts parsing a batch and returns a callable that waits for the result.
ParseAsync = Callable[[Sequence[bytes]], Callable[[], list["ParsedMail | BaseException"]]]


@dataclass
class IngestStats:
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    new_tickets: int = 0
    batches: int = 0
    archived: int = 0
    ticket_numbers: list[int] = field(default_factory=list)

    def add(self, other: IngestStats) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.new_tickets += other.new_tickets
        self.batches += other.batches
        self.archived += other.archived
        self.ticket_numbers.extend(other.ticket_numbers)


SUPPRESS_AFTER_BOUNCE = timedelta(days=30)
DAY = timedelta(days=1)


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


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Ingestor:
    """Drains a MailSource into tickets."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        desk: DeskIdentity,
        parse_many: ParseMany,
        clock: Clock,
        parse_async: ParseAsync | None = None,
        replies: ReplyPolicy | None = None,
        team: Team | None = None,
        clocks: ClockKeeper | None = None,
    ) -> None:
        self.uow = uow
        self.desk = desk
        self.parse_many = parse_many
        self.clock = clock
        self.parse_async = parse_async
        self.replies = replies
        self.team = team
        self.clocks = clocks
        # The ownership epoch this process claimed (None: unfenced, single-process use).
        self.epoch: int | None = None
        # Called after each batch commits (the runner wakes the outbox with it).
        self.on_commit: Callable[[], None] = lambda: None

    def claim(self, mailbox: str, owner: str) -> int:
        """Start a new ownership epoch for `mailbox` (the caller holds its lock)."""
        with self.uow() as store:
            epoch = store.claim_mailbox(mailbox, owner, self.clock())
            store.commit()
        self.epoch = epoch
        return epoch

    def drain(self, source: MailSource, stop: threading.Event | None = None) -> IngestStats:
        """Read every message after the cursor; commit batch by batch; archive if configured."""
        stats = IngestStats()
        uidvalidity = source.open()
        with self.uow() as store:
            cursor = store.get_cursor(source.key)
        last_uid = 0
        if cursor is not None and cursor.uidvalidity == uidvalidity:
            last_uid = cursor.last_uid
        elif cursor is not None:
            log.warning(
                "%s: UIDVALIDITY changed from %d to %d; rescanning, duplicates are recognised",
                source.key,
                cursor.uidvalidity,
                uidvalidity,
            )
        uids = source.uids_after(last_uid)
        if uids:
            log.info("%s: %d new message(s) after UID %d", source.key, len(uids), last_uid)
        # A pipeline: batch k is parsed (on the second core, with parse_async) while batch
        # k-1 is stored and batch k+1 fetched. Batches still commit one by one, in order.
        pending: tuple[list[FetchedMail], Callable[[], list[ParsedMail | BaseException]]] | None
        pending = None
        for batch in source.fetch(uids):
            started = self._start_parse(batch)
            if pending is not None:
                stats.add(self.ingest_batch(source.key, uidvalidity, pending[0], pending[1]()))
                last_uid = pending[0][-1].uid
                if stop is not None and stop.is_set():
                    pending = None
                    break
            pending = (batch, started)
        if pending is not None:
            stats.add(self.ingest_batch(source.key, uidvalidity, pending[0], pending[1]()))
            last_uid = pending[0][-1].uid
        if last_uid:
            stats.archived = source.archive(last_uid, ArchiveLog(self.uow, source.key, self.epoch))
        return stats

    def _start_parse(
        self, batch: list[FetchedMail]
    ) -> Callable[[], list[ParsedMail | BaseException]]:
        raws = [m.raw for m in batch]
        if self.parse_async is not None:
            return self.parse_async(raws)
        return lambda: self.parse_many(raws)

    def ingest_batch(
        self,
        mailbox: str,
        uidvalidity: int,
        batch: list[FetchedMail],
        parsed: list[ParsedMail | BaseException] | None = None,
    ) -> IngestStats:
        """Store one FETCH batch and advance the cursor, all in one transaction.

        The batch is planned and written in bulk inside a SAVEPOINT; if that fails, each
        message is retried alone in its own SAVEPOINT, and one that still fails goes to
        quarantine with its error.
        """
        stats = IngestStats(batches=1)
        if parsed is None:
            parsed = self.parse_many([m.raw for m in batch])
        now = self.clock()
        with self.uow() as store:
            good: list[tuple[FetchedMail, ParsedMail]] = []
            for fetched, mail in zip(batch, parsed, strict=True):
                if isinstance(mail, BaseException):
                    self._quarantine(
                        store,
                        mailbox,
                        uidvalidity,
                        fetched,
                        f"cannot parse: {_describe(mail)}",
                        now,
                        stats,
                    )
                else:
                    good.append((fetched, mail))
            try:
                with store.savepoint():
                    stats.add(self._apply(store, mailbox, uidvalidity, good, now)[0])
            except Exception as exc:
                log.warning(
                    "%s: batch failed (%s); retrying its messages one by one",
                    mailbox,
                    _describe(exc),
                )
                for fetched, mail in good:
                    try:
                        stats.add(
                            self._apply_alone(store, mailbox, uidvalidity, fetched, mail, now)
                        )
                    except Exception as one_exc:  # one bad message never stops the desk
                        log.exception("%s UID %d: processing failed", mailbox, fetched.uid)
                        self._quarantine(
                            store,
                            mailbox,
                            uidvalidity,
                            fetched,
                            f"cannot process: {_describe(one_exc)}",
                            now,
                            stats,
                        )
            # Fenced: raises (and rolls the batch back) if another process took over.
            store.set_cursor(mailbox, Cursor(uidvalidity, batch[-1].uid), now, self.epoch)
            store.commit()
        self.on_commit()
        return stats

    def _apply_alone(
        self,
        store: TicketStore,
        mailbox: str,
        uidvalidity: int,
        fetched: FetchedMail,
        mail: ParsedMail,
        now: datetime,
    ) -> IngestStats:
        """One message in its own SAVEPOINT, tried twice: the first failure may be the
        unique delivery key refusing a copy another writer stored meanwhile, and the second
        try then sees that copy and records a duplicate delivery."""
        try:
            with store.savepoint():
                return self._apply(store, mailbox, uidvalidity, [(fetched, mail)], now)[0]
        except Exception:
            with store.savepoint():
                return self._apply(store, mailbox, uidvalidity, [(fetched, mail)], now)[0]

    def _quarantine(
        self,
        store: TicketStore,
        mailbox: str,
        uidvalidity: int,
        fetched: FetchedMail,
        error: str,
        now: datetime,
        stats: IngestStats,
    ) -> None:
        log.warning("%s UID %d quarantined: %s", mailbox, fetched.uid, error)
        store.quarantine(fetched, mailbox=mailbox, uidvalidity=uidvalidity, error=error, now=now)
        stats.quarantined += 1

    def _apply(
        self,
        store: TicketStore,
        mailbox: str,
        uidvalidity: int,
        items: list[tuple[FetchedMail, ParsedMail]],
        now: datetime,
        want_ids: bool = False,
    ) -> tuple[IngestStats, list[int]]:
        """Thread and store a chunk of parsed messages; raises if any of it fails.

        Returns the statistics and, with `want_ids`, the row ids of the messages stored.
        """
        stats = IngestStats()
        if not items:
            return stats, []
        keys = [dedup_key(mail, fetched.raw) for fetched, mail in items]
        plan = ChunkPlan.prepare(
            store, mailbox, uidvalidity, now, [m for _, m in items], keys, self.message_id
        )
        for (fetched, mail), key in zip(items, keys, strict=True):
            original = plan.duplicate_of(key)
            if original is not None:
                plan.duplicates.append((original, fetched))
                stats.duplicates += 1
            else:
                self.file_message(plan, fetched, mail, key)
                stats.stored += 1
        stats.ticket_numbers, row_ids = plan.flush(want_ids=want_ids)
        stats.new_tickets = len(stats.ticket_numbers)
        return stats, row_ids

    def message_id(self, row_id: int) -> str:
        """The signed Message-ID of the outgoing mail in outbox row `row_id`."""
        domain = self.desk.address.rsplit("@", 1)[-1]
        return outgoing_message_id(row_id, domain, self.replies.secret if self.replies else "")

    def replay(self, item_id: int) -> int:
        """Process a quarantined message again; returns the message row it became."""
        with self.uow() as store:
            item = store.quarantined(item_id)
            if item is None:
                raise SupportdError(f"quarantine item {item_id} does not exist")
            if item.replayed_at is not None:
                when = f"{item.replayed_at:%Y-%m-%d %H:%M}"
                raise SupportdError(f"quarantine item {item_id} was already replayed at {when}")
            mail = self.parse_many([item.fetched.raw])[0]
            if isinstance(mail, BaseException):
                raise SupportdError(
                    f"quarantine item {item_id} still cannot be parsed: {_describe(mail)}"
                )
            now = self.clock()
            stats, row_ids = self._apply(
                store, item.mailbox, item.uidvalidity, [(item.fetched, mail)], now, want_ids=True
            )
            if not stats.stored:
                raise SupportdError(
                    f"quarantine item {item_id} is a duplicate of a stored message; "
                    "nothing to replay"
                )
            store.mark_replayed(item_id, row_ids[0], now)
            store.commit()
        return row_ids[0]

    def file_message(
        self, plan: ChunkPlan, fetched: FetchedMail, mail: ParsedMail, key: str
    ) -> int:
        """Thread `mail` onto a ticket (or open one) in the plan; returns its number."""
        replies = self.replies
        if replies and mail.sender and mail.sender.email in replies.form_senders:
            customer = form_customer(mail)
            # A website form mailer speaks for the customer it names, unless the name is the
            # desk's or an agent's address: a visitor must not become an agent that way.
            if customer is not None and customer.email not in self.desk.own_addresses:
                mail = replace(mail, sender=customer)
        threading_mail = mail
        if mail.bounce is not None:  # a bounce belongs with the mail that bounced
            threading_mail = replace(mail, in_reply_to=mail.bounce.original_ids + mail.in_reply_to)
        refs = threading_mail.thread_references()
        known = {r: plan.ticket_of_id[r] for r in refs if r in plan.ticket_of_id}
        related = None
        sender = mail.sender.email if mail.sender else ""
        if not known:  # out of order: a reply to this mail, or a sibling, arrived first
            if mail.message_id and mail.message_id in plan.ticket_of_parent:
                related = plan.ticket_of_parent[mail.message_id]  # it answers this very mail
            else:
                # A sibling (same parent) joins only from the ticket's own people: two
                # customers answering one announcement are two tickets, not one.
                sibling = next(
                    (plan.ticket_of_parent[m] for m in refs if m in plan.ticket_of_parent), None
                )
                if sibling is not None and sender in plan.members(sibling):
                    related = sibling
        decision = decide(threading_mail, self.desk.product, known, plan.members, related)
        automatic = automatic_reason(mail)
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
            due = None
            if replies and not automatic:
                category = mail.category or replies.classify(mail.subject, mail.text)
                due = due_at(
                    fetched.internaldate,
                    replies.response_hours,
                    replies.calendar,
                    business=replies.business_clock,
                )
            ticket = plan.open_ticket(
                strip_tag(mail.subject, self.desk.product) or "(no subject)",
                sender,
                mail.sender.name if mail.sender else "",
                fetched.internaldate,
                category,
                due,
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
        row = message_row(
            mail,
            fetched,
            kind=kind,
            automatic=automatic,
            mailbox=plan.mailbox,
            uidvalidity=plan.uidvalidity,
            dedup_key=key,
            now=plan.now,
        )
        row["untrusted"] = untrusted
        if replies is not None:
            row["reply_decision"] = self._reply(
                plan, ticket, mail, fetched, category, existing is None, automatic
            )
        # Untrusted agent-looking mail is kept, but changes nothing: no reopening.
        reopen = kind == "customer" and not automatic and not untrusted
        plan.add_message(ticket, row, mail, key, reopen=reopen)
        if (
            kind == "customer"
            and not automatic
            and not untrusted
            and sender != self.desk.address  # the desk writing to itself: a loop, not a customer
        ):
            if self.clocks is not None:  # a customer awaits the team from now on
                self.clocks.customer_message(plan, ticket, fetched.internaldate)
            if team is not None:
                team.notify(plan, ticket, mail, fetched.raw)
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
        row = message_row(
            mail,
            fetched,
            kind=filed.kind,
            automatic=automatic,
            mailbox=plan.mailbox,
            uidvalidity=plan.uidvalidity,
            dedup_key=key,
            now=plan.now,
        )
        row.update(direction=filed.direction, text=filed.text, reply_decision="suppressed: agent")
        row["untrusted"] = filed.untrusted
        plan.add_message(filed.ticket, row, mail, key, reopen=False, counted=False)
        return filed.ticket

    def _reply(
        self,
        plan: ChunkPlan,
        ticket: int,
        mail: ParsedMail,
        fetched: FetchedMail,
        category: str,
        new_ticket: bool,
        automatic: str,
    ) -> str:
        """Decide about (and queue) the acknowledgement; returns the decision as recorded."""
        replies = self.replies
        assert replies is not None
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
                sent_to_sender_last_24h=plan.acknowledged_since(sender, plan.now - DAY)
                if look
                else 0,
                per_sender_limit=replies.per_sender_limit,
                suppressed_until=plan.suppressed_until(sender) if look else None,
                now=plan.now,
                enabled=replies.enabled,
            ),
        )
        if not new_ticket or automatic:
            return decision.describe()
        context = self._context(mail, fetched, category)
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
        self, mail: ParsedMail, fetched: FetchedMail, category: str
    ) -> Callable[[int], AckContext]:
        replies = self.replies
        assert replies is not None and mail.sender is not None
        received = fetched.internaldate
        outside, next_open = timing(received, replies.calendar)
        due = due_at(
            received, replies.response_hours, replies.calendar, business=replies.business_clock
        )
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


def _addresses(addresses: tuple[Address, ...]) -> str:
    return ", ".join(str(a) for a in addresses)


def message_row(
    mail: ParsedMail,
    fetched: FetchedMail,
    *,
    kind: str,
    automatic: str,
    mailbox: str,
    uidvalidity: int,
    dedup_key: str,
    now: datetime,
) -> dict[str, object]:
    """The stored form of an incoming message (column name to value)."""
    return {
        "direction": "in",
        "kind": kind,
        "from_addr": mail.sender.email if mail.sender else "",
        "from_name": mail.sender.name if mail.sender else "",
        "to_addrs": _addresses(mail.to),
        "cc_addrs": _addresses(mail.cc),
        "subject": mail.subject,
        "message_id": mail.message_id,
        "in_reply_to": " ".join(mail.in_reply_to),
        "parent_message_id": next(iter(mail.thread_references()), None),
        "references": " ".join(mail.references),
        "date": fetched.internaldate,
        "header_date": mail.date_header,
        "text": mail.text,
        "mailbox": mailbox,
        "uidvalidity": uidvalidity,
        "uid": fetched.uid,
        "dedup_key": dedup_key,
        "automatic": automatic[:200],
        "defects": " ".join(mail.defects)[:2000],
        "size": len(fetched.raw),
        "raw": fetched.raw,
        "created_at": now,
        "untrusted": "",
    }
