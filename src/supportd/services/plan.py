"""A chunk of incoming mail planned in memory, then written with a few bulk statements.

Threading needs to see the messages of the same chunk (a follow-up right behind its
question), so the plan keeps the lookups the database gave it and adds what the chunk
creates. New tickets get negative placeholder numbers until the flush inserts them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.parser import HeaderParser
from email.policy import compat32

from supportd.domain.mail import FetchedMail, ParsedMail
from supportd.domain.team import ThreadHead, TicketState
from supportd.domain.threads import Seen, seen_in
from supportd.services.ports import TicketStore
from supportd.services.records import (
    Deferred,
    IncomingMessage,
    NewTicket,
    OutgoingCopy,
    Payload,
    QueuedMail,
)

DAY = timedelta(days=1)

# Builds an outgoing mail once its ticket number and Message-ID are known:
# (ticket number, Message-ID) -> (subject, text, raw bytes or a Deferred intent).
Build = Callable[[int, str], tuple[str, str, Payload]]


@dataclass
class Outgoing:
    ticket: int | None  # None: on no ticket (a notice about a ticket that is gone)
    kind: str
    sender: str
    recipient: str
    build: Build
    # The stored message whose text the mail quotes (a notification's customer message):
    # the outbox row and the ticket's copy refer to that row instead of copying the text.
    quotes: IncomingMessage | None = None


@dataclass
class Touch:
    """What a chunk does to an existing ticket."""

    count: int = 0
    reopen: bool = False


@dataclass
class ChunkPlan:
    """Lookups for a chunk of messages, and the rows it will write."""

    store: TicketStore
    mailbox: str
    uidvalidity: int
    now: datetime
    stored_keys: dict[str, int]
    # Stored messages by Message-ID, and the stored replies to a Message-ID (latest first).
    seen_by_id: dict[str, Seen]
    children_of: dict[str, list[Seen]]
    message_id_for: Callable[[int], str]
    new_tickets: list[NewTicket] = field(default_factory=list)
    touched: dict[int, Touch] = field(default_factory=dict)
    messages: list[IncomingMessage] = field(default_factory=list)
    duplicates: list[tuple[int | str, FetchedMail]] = field(default_factory=list)
    participants: list[tuple[int, str, str]] = field(default_factory=list)
    batch_keys: dict[str, int] = field(default_factory=dict)
    outgoing: list[Outgoing] = field(default_factory=list)
    suppressions: dict[str, tuple[datetime, str]] = field(default_factory=dict)
    # Column changes per ticket (status, assignee, category, first_responded_at ...).
    changes: dict[int, dict[str, object]] = field(default_factory=dict)
    _states: dict[int, TicketState | None] = field(default_factory=dict)
    _members: dict[int, set[str]] = field(default_factory=dict)
    _requesters: dict[int, str] = field(default_factory=dict)
    _sent: dict[str, int] = field(default_factory=dict)
    _suppressed: dict[str, datetime | None] = field(default_factory=dict)

    @classmethod
    def prepare(
        cls,
        store: TicketStore,
        mailbox: str,
        uidvalidity: int,
        now: datetime,
        mails: Sequence[ParsedMail],
        keys: Sequence[str],
        message_id_for: Callable[[int], str],
    ) -> ChunkPlan:
        refs = {r for m in mails for r in m.thread_references()}
        refs |= {r for m in mails if m.bounce for r in m.bounce.original_ids}
        own = {m.message_id for m in mails if m.message_id}
        plan = cls(
            store=store,
            mailbox=mailbox,
            uidvalidity=uidvalidity,
            now=now,
            stored_keys=store.find_deliveries(mailbox, list(keys)),
            seen_by_id=store.seen_by_message_ids(sorted(refs)),
            children_of=store.seen_by_parent(sorted(refs | own)),
            message_id_for=message_id_for,
        )
        # The tickets the chunk's references point at, in two queries rather than two or
        # three per reply (state, participants, requester: round trips on PostgreSQL).
        known = sorted(
            {s.ticket for s in plan.seen_by_id.values()}
            | {s.ticket for children in plan.children_of.values() for s in children}
        )
        if known:
            states = store.ticket_states(known)
            members = store.participants_many(known)
            for number in known:
                state = plan._states[number] = states.get(number)
                plan._members[number] = set(members.get(number, ()))
                if state is not None:
                    plan._requesters[number] = state.requester
        # What the acknowledgement rules ask about each sender, in two queries for the
        # chunk rather than two per new ticket.
        senders = sorted({m.sender.email for m in mails if m.sender and m.sender.email})
        if senders:
            sent = store.acknowledgements_since_many(senders, now - DAY)
            plan._sent = {a: sent.get(a, 0) for a in senders}
            found = store.suppressed_until_many(senders)
            plan._suppressed = {a: found.get(a) for a in senders}
        return plan

    def members(self, ticket: int) -> frozenset[str]:
        if ticket not in self._members:
            self._members[ticket] = set() if ticket < 0 else set(self.store.participants(ticket))
        return frozenset(self._members[ticket])

    def requester(self, ticket: int) -> str:
        if ticket not in self._requesters:
            self._requesters[ticket] = self.store.requester(ticket)
        return self._requesters[ticket]

    def acknowledged_last_day(self, address: str) -> int:
        """Acknowledgements to `address` in the day before `now`, this chunk's included."""
        if address not in self._sent:
            self._sent[address] = self.store.acknowledgements_since(address, self.now - DAY)
        return self._sent[address]

    def suppressed_until(self, address: str) -> datetime | None:
        if address in self.suppressions:
            return self.suppressions[address][0]
        if address not in self._suppressed:
            self._suppressed[address] = self.store.suppressed_until(address)
        return self._suppressed[address]

    def state(self, ticket: int) -> TicketState | None:
        """The ticket as this chunk leaves it so far (None: no such ticket)."""
        if ticket < 0:
            t = self.new_tickets[-ticket - 1]
            base: TicketState | None = TicketState(
                ticket,
                t.subject,
                t.requester,
                t.requester_name,
                "open",
                t.category,
                t.due,
                continues=t.continues,
            )
        else:
            if ticket not in self._states:
                self._states[ticket] = self.store.ticket_state(ticket)
            base = self._states[ticket]
        if base is None:
            return None
        changed = {
            k: v for k, v in self.changes.get(ticket, {}).items() if k in TicketState.__slots__
        }
        return replace(base, **changed) if changed else base  # type: ignore[arg-type]

    def change(self, ticket: int, **values: object) -> None:
        """Set ticket columns at flush (first_responded_at only where still empty)."""
        current = self.changes.setdefault(ticket, {})
        if "first_responded_at" in values and "first_responded_at" in current:
            values.pop("first_responded_at")  # the earliest answer of the chunk counts
        current.update(values)

    def thread_head(self, ticket: int) -> ThreadHead:
        """The latest trusted customer message of the ticket: answers are threaded to it."""
        people = self.members(ticket)
        for m in reversed(self.messages):
            if (
                m.ticket == ticket
                and m.kind == "customer"
                and not m.untrusted
                and m.sender in people
            ):
                return ThreadHead(m.mail.message_id, m.mail.references)
        found = self.store.latest_customer_message(ticket) if ticket > 0 else None
        return ThreadHead(*found) if found else ThreadHead(None, ())

    def suppress(self, address: str, until: datetime, reason: str) -> None:
        self.suppressions[address] = (until, reason)

    def send(self, outgoing: Outgoing) -> None:
        self.outgoing.append(outgoing)
        if outgoing.kind == "auto_reply":
            self._sent[outgoing.recipient] = self._sent.get(outgoing.recipient, 0) + 1

    def open_ticket(
        self,
        subject: str,
        requester: str,
        name: str,
        created_at: datetime,
        category: str = "other",
        due: datetime | None = None,
        continues: int | None = None,
    ) -> int:
        placeholder = -(len(self.new_tickets) + 1)
        self.new_tickets.append(
            NewTicket(
                placeholder, subject, requester, name, created_at, category, due, 0, continues
            )
        )
        self._members[placeholder] = set()
        self._requesters[placeholder] = requester
        return placeholder

    def add_members(self, ticket: int, addresses: frozenset[str], requester: str) -> None:
        known = self._members.setdefault(ticket, set(self.members(ticket)))
        for address in sorted(addresses - known):
            self.participants.append(
                (ticket, address, "requester" if address == requester else "cc")
            )
            known.add(address)

    def add_message(self, message: IncomingMessage, reopen: bool, counted: bool = True) -> None:
        """Queue a stored message; `counted` ones add to the ticket's message_count (the
        customers' mail; the team's replies and notes do not)."""
        ticket, mail = message.ticket, message.mail
        self.batch_keys[message.dedup_key] = len(self.messages)
        self.messages.append(message)
        seen = seen_in(ticket, mail)
        if mail.message_id:
            self.seen_by_id.setdefault(mail.message_id, seen)
        parents = mail.thread_references()
        if parents:
            self.children_of.setdefault(parents[0], []).insert(0, seen)
        if ticket < 0:
            self.new_tickets[-ticket - 1].message_count += int(counted)
        else:
            touch = self.touched.setdefault(ticket, Touch())
            touch.count += int(counted)
            touch.reopen = touch.reopen or reopen

    def duplicate_of(self, key: str) -> int | str | None:
        """Row id of a stored delivery, or the key of one earlier in this chunk."""
        if key in self.stored_keys:
            return self.stored_keys[key]
        if key in self.batch_keys:
            return key
        return None

    def flush(self) -> tuple[list[int], list[int]]:
        """Write the plan; returns the numbers of the tickets it opened and the message rows."""
        numbers = self.store.insert_tickets(
            [(t, self._insert_changes(t.placeholder)) for t in self.new_tickets], self.now
        )

        def real(ticket: int) -> int:
            return numbers[-ticket - 1] if ticket < 0 else ticket

        for message in self.messages:
            message.ticket = real(message.ticket)
        row_ids = self.store.insert_messages(self.messages)
        self.store.insert_participants([(real(t), a, r) for t, a, r in self.participants])
        self.store.insert_duplicates(
            [
                (row_ids[self.batch_keys[ref]] if isinstance(ref, str) else ref, fetched.uid)
                for ref, fetched in self.duplicates
            ],
            self.mailbox,
            self.uidvalidity,
            self.now,
        )
        self.store.touch_tickets(
            [(number, t.count, t.reopen) for number, t in self.touched.items()], self.now
        )
        self.store.update_tickets(
            [(real(number), values) for number, values in self.changes.items()]
        )
        self.store.add_suppressions(
            [(address, until, reason) for address, (until, reason) in self.suppressions.items()],
            self.now,
        )
        self._flush_outgoing(real)
        return numbers, row_ids

    def _insert_changes(self, placeholder: int) -> dict[str, object]:
        """A new ticket's changes that its INSERT can carry (the clock's, say), instead of
        an UPDATE per ticket afterwards; the rest stay for update_tickets."""
        changes = self.changes.get(placeholder, {})
        if set(changes) <= self.store.new_ticket_columns:
            return self.changes.pop(placeholder, {})
        return {}

    def _flush_outgoing(self, real: Callable[[int], int]) -> None:
        """Outbox rows and their copies on the ticket, in the ticket change's transaction."""
        if not self.outgoing:
            return
        ids = self.store.outbox_ids(len(self.outgoing))
        rows: list[tuple[int, QueuedMail, str, Payload]] = []
        copies: list[OutgoingCopy] = []
        for row_id, o in zip(ids, self.outgoing, strict=True):
            message_id = self.message_id_for(row_id)
            number = 0 if o.ticket is None else real(o.ticket)
            subject, text, payload = o.build(number, message_id)
            size = payload.size if isinstance(payload, Deferred) else len(payload)
            text_of = _quoted_row(o, payload)  # None: the intent keeps the text itself
            queued = QueuedMail(
                None if o.ticket is None else number,
                o.kind,
                o.sender,
                o.recipient,
                self.now,
                text_of,
            )
            rows.append((row_id, queued, message_id, payload))
            if o.ticket is not None:
                copies.append(
                    OutgoingCopy(
                        number,
                        o.kind,
                        o.sender,
                        o.recipient,
                        subject,
                        "" if text_of is not None else text,
                        message_id,
                        size,
                        self.now,
                        text_of,
                        *_addressing(o.recipient, payload),
                    )
                )
        self.store.insert_outbox(rows)
        self.store.insert_copies(copies)


def _addressing(recipients: str, payload: Payload) -> tuple[str, str, str]:
    """To, Cc and In-Reply-To as a mail with several recipients says them (a relayed
    answer), for the ticket's record; ("", "", "") for the rest (their To is the one
    recipient), which spares parsing every acknowledgement's header."""
    if "," not in recipients or not isinstance(payload, bytes):
        return "", "", ""
    head = payload.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    headers = HeaderParser(policy=compat32).parsestr(head + "\r\n\r\n", headersonly=True)
    names = ("To", "Cc", "In-Reply-To")
    to, cc, parent = (" ".join(str(headers.get(n, "")).split()) for n in names)
    return _decoded(to), _decoded(cc), parent


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (HeaderParseError, UnicodeError, LookupError):
        return value


def _quoted_row(o: Outgoing, payload: Payload) -> int | None:
    """The message row holding the text a deferred mail quotes, when there is one and it
    holds that very text (the intent then stores none: issue 9, a notification per agent
    copied 8 KiB of customer's text twice)."""
    source = o.quotes
    if (
        isinstance(payload, Deferred)
        and payload.quoted is not None
        and source is not None
        and source.row_id is not None
        and source.stored_text == payload.quoted
    ):
        return source.row_id
    return None
