"""Outgoing mail: Jinja2 templates, FAQ suggestions (SQLite FTS5 BM25), MIME composition.

Why these: Jinja2 is the templating library the ops who override wording already know;
FTS5's bm25() is a maintained BM25 implementation that ships inside Python's sqlite3,
so ranking needs no numpy (rank-bm25 would add 12 MB to every daemon process).
"""

from __future__ import annotations

import functools
import re
import sqlite3
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, formataddr
from importlib.resources import files
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    select_autoescape,
)

from supportd.adapters import mime
from supportd.adapters.mailparse import clean_header
from supportd.domain.acknowledgement import AckContext
from supportd.errors import ConfigError

_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "you",
        "your",
        "with",
        "this",
        "that",
        "have",
        "has",
        "are",
        "was",
        "were",
        "not",
        "but",
        "can",
        "could",
        "would",
        "should",
        "what",
        "when",
        "where",
        "which",
        "who",
        "how",
        "why",
        "our",
        "out",
        "all",
        "any",
        "from",
        "into",
        "about",
        "there",
        "their",
        "they",
        "them",
        "then",
        "than",
        "just",
        "also",
        "please",
        "thanks",
        "thank",
        "regards",
        "hello",
        "dear",
        "team",
        "support",
        "will",
        "shall",
        "may",
        "might",
        "been",
        "being",
        "does",
        "did",
        "done",
        "get",
        "got",
        "its",
    ]
)


def _header(value: str) -> str:
    """A header value: one clean line, RFC 2047-encoded when it is not ASCII."""
    return mime.encode_header(clean_header(value))


def defaults_dir() -> Path:
    """Shipped templates and FAQ: inside the wheel, or ../config in a source checkout."""
    packaged = Path(str(files("supportd"))) / "defaults"
    if (packaged / "templates").is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "config"


def envelope(
    body: mime.Part,
    *,
    sender: str,
    to: str,
    subject: str,
    message_id: str,
    in_reply_to: str | None,
    references: Sequence[str],
    auto: str,
    cc: str = "",
    reply_to: str = "",
) -> bytes:
    """Every mail the desk writes: its headers around `body`. Values from incoming mail are
    cleaned to one line; `auto` is the Auto-Submitted value ("" for a person's words)."""
    return mime.message(
        [
            ("From", sender),
            ("To", to),
            ("Cc", cc),
            ("Reply-To", reply_to),
            ("Subject", _header(subject)),
            ("Date", format_datetime(datetime.now(UTC))),
            ("Message-ID", message_id),
            ("In-Reply-To", clean_header(in_reply_to) if in_reply_to else ""),
            ("References", clean_header(" ".join(r for r in references if r))),
            ("Auto-Submitted", auto),
            ("X-Auto-Response-Suppress", "All" if auto else ""),
        ],
        body,
    )


@dataclass(frozen=True)
class FaqEntry:
    question: str
    answer: str
    url: str = ""


def query_words(text: str, limit: int = 64) -> list[str]:
    """The first `limit` distinct words of `text` (lower case, 3+ letters, no stop words),
    in order. A word never spans whitespace, so the words of the distinct whitespace-
    separated tokens, in order, are the words of the text: the regular expression runs
    over each distinct token once, and stops at `limit` (issue 9: the whole 5,000
    characters through the expression cost 100 us of each acknowledgement's 230)."""
    found: dict[str, None] = {}
    for token in dict.fromkeys(text.lower().split()):
        for word in _WORD.findall(token):
            if word not in found and word not in _STOP:
                found[word] = None
                if len(found) == limit:
                    return list(found)
    return list(found)


_NO_TERMS: dict[int, float] = {}  # shared by every word no entry has (never written to)
# Words whose terms are kept. Customers' words (names, typos, order numbers) never run out,
# so the cache fills to this and starts again: 100,000 words held about 9 MiB of a daemon
# whose memory budget has a few MiB to spare, where the bench's small vocabulary never
# showed it (issue 9); the most common 10,000 are most of any mail's words.
TERMS_KEPT = 10_000


class FaqIndex:
    """FAQ entries ranked against a mail's words with BM25 (SQLite FTS5)."""

    def __init__(self, entries: list[FaqEntry]) -> None:
        self.entries = entries
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.execute(
            "CREATE VIRTUAL TABLE faq USING fts5(question, answer, tokenize='porter unicode61')"
        )
        self.db.executemany(
            "INSERT INTO faq(rowid, question, answer) VALUES (?, ?, ?)",
            [(i, e.question, e.answer) for i, e in enumerate(entries)],
        )
        # word -> each entry's BM25 term for it ({} when no entry has it). FTS5's bm25() of
        # a query of OR-ed words is the sum of each word's term (its idf and frequencies
        # are the index's, not the query's), so a mail's ranking adds the terms of its
        # words, each read from FTS5 once, instead of a query per mail (issue 9: 110 of an
        # acknowledgement's 480 us). tests/unit/test_compose.py holds it to the query.
        self._terms: dict[str, dict[int, float]] = {}

    def _terms_of(self, word: str) -> dict[int, float]:
        terms = self._terms.get(word)
        if terms is None:
            if len(self._terms) >= TERMS_KEPT:  # bounded: real vocabularies never end
                self._terms.clear()
            rows = self.db.execute(
                "SELECT rowid, bm25(faq, 2.0, 1.0) FROM faq WHERE faq MATCH ?", (f'"{word}"',)
            ).fetchall()
            terms = self._terms[word] = dict(rows) if rows else _NO_TERMS
        return terms

    @classmethod
    def load(cls, path: Path) -> FaqIndex:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            entries = [
                FaqEntry(str(e["question"]), str(e["answer"]), str(e.get("url", "")))
                for e in data.get("entry", [])
            ]
        except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"support.faq_file: cannot use {path}: {exc}") from None
        return cls(entries)

    def top(self, text: str, limit: int = 3) -> list[FaqEntry]:
        """The best `limit` entries for `text`'s words, best first (BM25, FTS5's weights:
        the question counts twice); entries no word of the text matches are not ranked."""
        if not self.entries:
            return []
        scores: dict[int, float] = {}
        for word in query_words(text):
            for rowid, term in self._terms_of(word).items():
                scores[rowid] = scores.get(rowid, 0.0) + term
        # bm25() is negative, more negative is better; zero means no real match.
        ranked = sorted((score, rowid) for rowid, score in scores.items() if score < -1e-6)
        return [self.entries[rowid] for _, rowid in ranked[:limit]]


# A time is written twice per mail (its text and HTML), and a ticket's due time in each of
# its notifications: each written once (issue 9: strftime and astimezone were 2 % of a
# backlog's samples). An aware datetime hashes as its instant, so the zone is in the key.
@functools.lru_cache(maxsize=512)
def _local_time(t: datetime, zone: ZoneInfo) -> str:
    local = t.astimezone(zone)
    return f"{local:%A %d %B %Y, %H:%M} ({zone.key})"


@functools.lru_cache(maxsize=512)
def _utc_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%H:%M UTC, %a %d %b")


class Composer:
    """Renders acknowledgements and sales copies into RFC 5322 bytes."""

    def __init__(
        self,
        *,
        support_name: str,
        support_address: str,
        timezone: str,
        hours_days: str,
        hours_local: str,
        hours_utc: str,
        faq: FaqIndex,
        templates_dir: str = "",
        sales_address: str = "",
    ) -> None:
        # Everything but the FAQ: what a copy of this composer in another process needs.
        self.args: dict[str, str] = {
            "support_name": support_name,
            "support_address": support_address,
            "timezone": timezone,
            "hours_days": hours_days,
            "hours_local": hours_local,
            "hours_utc": hours_utc,
            "templates_dir": templates_dir,
            "sales_address": sales_address,
        }
        self.support_name = support_name
        self.sales_address = sales_address
        self.support_address = support_address
        self.zone = ZoneInfo(timezone)
        self.faq = faq
        self.hours = {"days": hours_days, "local": hours_local, "utc": hours_utc}
        loaders = [FileSystemLoader(templates_dir)] if templates_dir else []
        loaders.append(FileSystemLoader(str(defaults_dir() / "templates")))
        self.env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(["html", "html.j2"]),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            # Templates are read once: no stat() of the file on every mail rendered.
            auto_reload=False,
        )
        self._templates: dict[str, Template] = {}  # by name: looked up once, not per mail
        self.env.filters["local"] = functools.partial(_local_time, zone=self.zone)
        self.env.filters["utc"] = _utc_time
        self.env.filters["hours"] = lambda h: f"{h:g} hours"

    def _render(self, name: str, **values: object) -> str:
        support = {"name": self.support_name, "address": self.support_address}
        template = self._templates.get(name)
        if template is None:
            template = self._templates[name] = self.env.get_template(name)
        return template.render(support=support, hours=self.hours, **values)

    def _message(
        self,
        ctx: AckContext,
        to: str,
        subject: str,
        message_id: str,
        text: str,
        html: str | None,
        auto: str,
    ) -> bytes:
        # Written straight to bytes (adapters/mime): every header value is a single cleaned
        # line, RFC 2047-encoded where it is not ASCII, so nothing taken from incoming mail
        # can add a header.
        body = mime.text("plain", text)
        if html is not None:
            body = mime.multipart("alternative", [body, mime.text("html", html)])
        return envelope(
            body,
            sender=formataddr((clean_header(self.support_name), self.support_address), "utf-8"),
            to=to,
            subject=subject,
            message_id=message_id,
            in_reply_to=ctx.in_reply_to,
            references=ctx.references,
            auto=auto,
        )

    def acknowledgement(self, ctx: AckContext, message_id: str) -> tuple[str, str, bytes]:
        faq = self.faq.top(ctx.query_text)
        text = self._render("acknowledgement.txt.j2", ctx=ctx, faq=faq)
        html = self._render("acknowledgement.html.j2", ctx=ctx, faq=faq)
        subject = clean_header(f"{ctx.tag} {ctx.subject}")[:900]
        to = formataddr((clean_header(ctx.customer.name), ctx.customer.email), "utf-8")
        return (
            subject,
            text,
            self._message(ctx, to, subject, message_id, text, html, "auto-replied"),
        )

    def sales_copy(
        self, ctx: AckContext, original_text: str, message_id: str
    ) -> tuple[str, str, bytes]:
        text = self._render("sales_copy.txt.j2", ctx=ctx, original_text=original_text)
        subject = clean_header(f"{ctx.tag} Fwd: {ctx.subject}")[:900]
        raw = self._message(
            ctx, self.sales_address, subject, message_id, text, None, "auto-generated"
        )
        return subject, text, raw
