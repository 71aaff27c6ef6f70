"""Mail to and for the team: notifications, relayed answers, internal notes, notices.

Written with adapters/mime like the acknowledgements: every header value is one cleaned
line (RFC 2047 where not ASCII), so nothing from incoming mail can add a header.
"""

from __future__ import annotations

import hashlib
import hmac
import html as html_lib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import formataddr

from supportd.adapters import mime
from supportd.adapters.authresults import parse_auth_headers
from supportd.adapters.compose import Composer, FaqIndex, envelope
from supportd.adapters.mailparse import attachments as attachments_of
from supportd.adapters.mailparse import bodies, clean_header
from supportd.adapters.replytext import MARKER, new_words
from supportd.domain.agents import Agent, AuthHeader, reply_token, token_address
from supportd.domain.mail import Address, Attachment
from supportd.domain.team import ThreadHead, TicketFacts, reply_subject
from supportd.services.records import Deferred, Payload

Built = tuple[str, str, bytes]  # (subject, text, raw)
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


def _text_and_html(text: str) -> mime.Part:
    """multipart/alternative of `text` and the same paragraphs as simple HTML."""
    paragraphs = "".join(
        f"<p>{html_lib.escape(p).replace(chr(10), '<br>')}</p>"
        for p in text.split("\n\n")
        if p.strip()
    )
    html = f"<!DOCTYPE html><html><body>{paragraphs}</body></html>"
    return mime.multipart("alternative", [mime.text("plain", text), mime.text("html", html)])


def _span(amount: timedelta) -> str:
    minutes = int(amount.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _multipart(raw: bytes) -> bool:
    """Only a multipart message can carry files: skip the full parse for the rest."""
    end = raw.find(b"\r\n\r\n")
    head = raw[: end if end >= 0 else 65536].lower()
    return b"multipart/" in head


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n //= 1024
    return f"{n} MB"


def _address(address: Address | Agent) -> str:
    return formataddr((clean_header(address.name), address.email), "utf-8")


@dataclass(frozen=True)
class TeamMailSpec:
    """How to build the same TeamComposer in the worker process (plain values, pickled)."""

    composer: dict[str, str]
    secret: str
    forward_limit: int

    def build(self) -> TeamComposer:
        # No FAQ: the team's mail never suggests answers.
        composer = Composer(**self.composer, faq=FaqIndex([]))
        return TeamComposer(composer, secret=self.secret, forward_limit=self.forward_limit)


def _pair(who: Address | Agent) -> list[str]:
    return [who.email, who.name]


class TeamComposer:
    """Renders the team's mail with the acknowledgement Composer's templates and filters."""

    def __init__(self, composer: Composer, *, secret: str, forward_limit: int) -> None:
        self.composer = composer
        self.secret = secret
        self.forward_limit = forward_limit
        self.address = composer.support_address
        self.domain = self.address.rsplit("@", 1)[-1]

    def agent_reply(self, raw: bytes) -> tuple[str, list[Attachment]]:
        """The agent's new words (mail-parser-reply and the rules of replytext) and files."""
        plain, html = bodies(raw)
        return new_words(plain, html, support_address=self.address), attachments_of(raw)

    def auth_headers(self, values: Sequence[str]) -> tuple[AuthHeader, ...]:
        return parse_auth_headers(values)

    def thread_root(self, ticket: int, agent: str) -> str:
        """A Message-ID every notification of (ticket, agent) refers to: one thread."""
        digest = hmac.new(
            self.secret.encode(), f"thread\x1f{ticket}\x1f{agent}".encode(), hashlib.sha256
        ).hexdigest()[:16]
        return f"<ticket-{ticket}.{digest}@{self.domain}>"

    def _envelope(self, body: mime.Part, files: Sequence[Attachment]) -> mime.Part:
        if not files:
            return body
        parts = [body]
        for item in files:
            ctype = item.content_type.lower()
            if not _CONTENT_TYPE.match(ctype) or ctype.startswith(("multipart/", "message/")):
                ctype = "application/octet-stream"  # whatever the sender claimed
            # RFC 2231 names are not folded: a long one would break the 998-octet line limit.
            name = item.filename if len(item.filename) <= 60 else item.filename[-60:]
            parts.append(mime.attachment(ctype, name, item.data))
        return mime.multipart("mixed", parts)

    def _finish(
        self,
        body: mime.Part,
        *,
        sender: str,
        to: str,
        subject: str,
        message_id: str,
        in_reply_to: str | None,
        references: Sequence[str],
        cc: str = "",
        reply_to: str = "",
        auto: bool = True,
    ) -> bytes:
        return envelope(
            body,
            sender=sender,
            to=to,
            subject=subject,
            message_id=message_id,
            in_reply_to=in_reply_to,
            references=references,
            auto="auto-generated" if auto else "",
            cc=cc,
            reply_to=reply_to,
        )

    def spec(self) -> TeamMailSpec:
        return TeamMailSpec(self.composer.args, self.secret, self.forward_limit)

    def notification(
        self,
        facts: TicketFacts,
        agent: Agent,
        customer: Address,
        text: str,
        raw: bytes,
        message_id: str,
    ) -> tuple[str, str, Payload]:
        """One customer message for one agent, with a reply token for that agent.

        Without files to forward it is written when the outbox sends it (render()): the
        ingest transaction stores the facts and the text, not 17 KiB of MIME per agent.
        """
        if _multipart(raw):
            return self._notification(facts, agent, customer, text, raw, message_id)
        subject = clean_header(f"{facts.tag} {facts.subject}")[:900]
        intent = {
            "kind": "notification",
            "facts": {
                "number": facts.number,
                "tag": facts.tag,
                "subject": facts.subject,
                "requester": _pair(facts.requester),
                "category": facts.category,
                "status": facts.status,
                "due": facts.due.isoformat() if facts.due else None,
                "assignee": facts.assignee,
                "continues": facts.continues,
            },
            "agent": _pair(agent),
            "customer": _pair(customer),
        }
        # The facts as one line of JSON, then the customer's text as it is: escaping 8 KiB
        # of text into JSON and back cost 40 us a notification (issue 9's profile). The
        # outbox row refers to the stored message for the text where it can (services/plan).
        return subject, text, Deferred(json.dumps(intent), quoted=text)

    def render(self, intent: str, message_id: str) -> bytes:
        """The mail a Deferred intent describes, written now (the outbox sender calls it)."""
        facts_line, _, text = intent.partition("\n")
        data = json.loads(facts_line)
        data.setdefault("text", text)  # rows queued before held one JSON object, text inside
        if data.get("kind") != "notification":
            raise ValueError(f"unknown intent {data.get('kind')!r}")
        f = data["facts"]
        facts = TicketFacts(
            number=f["number"],
            tag=f["tag"],
            subject=f["subject"],
            requester=Address(*f["requester"]),
            category=f["category"],
            status=f["status"],
            due=datetime.fromisoformat(f["due"]) if f["due"] else None,
            assignee=f["assignee"],
            continues=f["continues"],
        )
        agent, customer = Agent(*data["agent"]), Address(*data["customer"])
        return self._notification(facts, agent, customer, data["text"], b"", message_id)[2]

    def _notification(
        self,
        facts: TicketFacts,
        agent: Agent,
        customer: Address,
        text: str,
        raw: bytes,
        message_id: str,
    ) -> Built:
        files = attachments_of(raw) if _multipart(raw) else []
        total = sum(len(f.data) for f in files)
        forward = total <= self.forward_limit
        listed = [(f.filename, _size(len(f.data)), forward) for f in files]
        who = str(customer)
        values = {"facts": facts, "customer": who, "text": text, "attachments": listed}
        body_text = self.composer._render("notification.txt.j2", marker=MARKER, **values)
        body_html = self.composer._render("notification.html.j2", marker=MARKER, **values)
        body = mime.multipart(
            "alternative", [mime.text("plain", body_text), mime.text("html", body_html)]
        )
        msg = self._envelope(body, files if forward else [])
        subject = clean_header(f"{facts.tag} {facts.subject}")[:900]
        name = f"{customer.name or customer.email} via {self.composer.support_name}"
        token = reply_token(self.secret, facts.number, agent.email)
        root = self.thread_root(facts.number, agent.email)
        raw_out = self._finish(
            msg,
            sender=formataddr((clean_header(name), self.address), "utf-8"),
            to=_address(agent),
            reply_to=token_address(self.address, token),
            subject=subject,
            message_id=message_id,
            in_reply_to=root,
            references=[root],
        )
        return subject, text, raw_out

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
    ) -> Built:
        """An agent's new words to the customer, from the desk under the agent's name."""
        text = self.composer._render("relay.txt.j2", words=words, agent=agent, facts=facts)
        body = _text_and_html(text)
        msg = self._envelope(body, files)
        subject = clean_header(reply_subject(facts.tag, facts.subject))[:900]
        name = f"{agent.name or agent.email} ({self.composer.support_name})"
        refs = [*head.references, head.message_id] if head.message_id else list(head.references)
        raw_out = self._finish(
            msg,
            sender=formataddr((clean_header(name), self.address), "utf-8"),
            to=_address(to),
            cc=", ".join(cc),
            subject=subject,
            message_id=message_id,
            in_reply_to=head.message_id,
            references=refs[-20:],
            auto=False,
        )
        return subject, words, raw_out

    def note(
        self, facts: TicketFacts, author: Agent, reader: Agent, words: str, message_id: str
    ) -> Built:
        """An internal note for another agent (never for the customer)."""
        text = self.composer._render(
            "note.txt.j2", words=words, author=str(author), facts=facts, marker=MARKER
        )
        subject = clean_header(f"{facts.tag} Note: {facts.subject}")[:900]
        token = reply_token(self.secret, facts.number, reader.email)
        root = self.thread_root(facts.number, reader.email)
        raw_out = self._finish(
            mime.text("plain", text),
            sender=formataddr(
                (
                    clean_header(f"{author.name or author.email} via {self.composer.support_name}"),
                    self.address,
                ),
                "utf-8",
            ),
            to=_address(reader),
            reply_to=token_address(self.address, token),
            subject=subject,
            message_id=message_id,
            in_reply_to=root,
            references=[root],
        )
        return subject, words, raw_out

    def escalation(
        self,
        facts: TicketFacts,
        event: str,
        due: datetime,
        left: timedelta,
        recipients: Sequence[str],
        message_id: str,
    ) -> Built:
        """SLA warning or breach, to the escalation list and the assignee."""
        span = _span(abs(left))
        text = self.composer._render(
            "escalation.txt.j2", facts=facts, event=event, due=due, left=span
        )
        word = "breached" if event == "breach" else "warning"
        subject = clean_header(f"{facts.tag} SLA {word}: {facts.subject}")[:900]
        body = _text_and_html(text)
        raw = self._finish(
            body,
            sender=formataddr((clean_header(self.composer.support_name), self.address), "utf-8"),
            to=", ".join(recipients),
            subject=subject,
            message_id=message_id,
            in_reply_to=None,
            references=[],
        )
        return subject, text, raw

    def notice(
        self,
        agent: Agent,
        subject: str,
        problems: Sequence[str],
        message_id: str,
        in_reply_to: str | None = None,
    ) -> Built:
        """To an agent: why their mail was not sent to the customer."""
        text = self.composer._render("notice.txt.j2", subject=subject, problems=list(problems))
        title = clean_header(f"Not sent: {subject}")[:900]
        raw_out = self._finish(
            mime.text("plain", text),
            sender=formataddr((clean_header(self.composer.support_name), self.address), "utf-8"),
            to=_address(agent),
            subject=title,
            message_id=message_id,
            in_reply_to=in_reply_to,
            references=[in_reply_to] if in_reply_to else [],
        )
        return title, text, raw_out
