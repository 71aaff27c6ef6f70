"""Acknowledgement wording and headers, rendered from the shipped templates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from supportd.adapters import compose
from supportd.adapters.compose import (
    _STOP,
    _WORD,
    Composer,
    FaqEntry,
    FaqIndex,
    _local_time,
    _utc_time,
    defaults_dir,
    query_words,
)
from supportd.bootstrap import describe_hours
from supportd.config import HoursSettings
from supportd.domain.acknowledgement import AckContext, SupportHours, form_customer
from supportd.domain.mail import Address, ParsedMail


def composer(tmp_templates: str = "") -> Composer:
    days, local, utc = describe_hours(HoursSettings())
    return Composer(
        support_name="WPERP Support",
        support_address="support@desk.example",
        timezone="Asia/Dhaka",
        hours_days=days,
        hours_local=local,
        hours_utc=utc,
        faq=FaqIndex.load(defaults_dir() / "faq.toml"),
        templates_dir=tmp_templates,
        sales_address="sales@desk.example",
    )


def context(**kw: object) -> AckContext:
    base: dict[str, object] = dict(
        ticket=12,
        tag="[WPERP #12]",
        subject="Installer stops",
        category="installation",
        customer=Address("alice@customer.example", "Alice"),
        received=datetime(2026, 11, 19, 11, 0, tzinfo=UTC),  # Thursday 17:00 Dhaka
        outside_hours=False,
        next_open=datetime(2026, 11, 19, 11, 0, tzinfo=UTC),
        due=datetime(2026, 11, 22, 9, 0, tzinfo=UTC),
        business_clock=True,
        response_hours=14.0,
        hours=SupportHours("Asia/Dhaka", ("Saturday to Thursday",), "10:00", "18:00"),
        in_reply_to="<q1@customer.example>",
        references=("<q1@customer.example>",),
        query_text="How do I install the plugin? The installer stops.",
        contact_form_url="https://desk.example/contact",
        customization_resources=("https://desk.example/developers",),
    )
    base.update(kw)
    return AckContext(**base)  # type: ignore[arg-type]


def test_acknowledgement_headers_and_text() -> None:
    subject, text, raw = composer().acknowledgement(context(), "<supportd.1.abc@desk.example>")
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == subject == "[WPERP #12] Installer stops"
    assert msg["Message-ID"] == "<supportd.1.abc@desk.example>"
    assert msg["In-Reply-To"] == "<q1@customer.example>"
    assert msg["References"] == "<q1@customer.example>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert "WPERP Support" in msg["From"] and "support@desk.example" in msg["From"]
    assert msg.get_body(("html",)) is not None
    assert "[WPERP #12]" in text
    assert "Saturday to Thursday, 10:00–18:00 Asia/Dhaka (GMT+6) (04:00–12:00 UTC)" in text
    assert "Sunday 22 November 2026, 15:00 (Asia/Dhaka)" in text  # the due time, in Dhaka
    assert "09:00 UTC" in text
    assert "installation, configuration and usage" in text
    assert "confidential" in text
    assert "How do I install the plugin?" in text  # the best FAQ entry


def test_outside_hours_says_when_support_opens() -> None:
    ctx = context(
        outside_hours=True,
        received=datetime(2026, 11, 20, 6, 0, tzinfo=UTC),
        next_open=datetime(2026, 11, 21, 4, 0, tzinfo=UTC),
    )
    _, text, _ = composer().acknowledgement(ctx, "<x@d>")
    assert "arrived outside our support hours" in text
    assert "Saturday 21 November 2026, 10:00 (Asia/Dhaka)" in text


def test_policy_paragraphs_follow_the_category() -> None:
    c = composer()
    assert (
        "provide our products as is"
        in c.acknowledgement(context(category="customization"), "<a@d>")[1]
    )
    assert (
        "https://desk.example/developers"
        in c.acknowledgement(context(category="customization"), "<a@d>")[1]
    )
    assert (
        "disable the third-party products"
        in c.acknowledgement(context(category="third_party"), "<a@d>")[1]
    )
    assert (
        "https://desk.example/contact"
        in c.acknowledgement(context(category="presales"), "<a@d>")[1]
    )
    assert "defect" in c.acknowledgement(context(category="bug"), "<a@d>")[1]


def test_subject_from_mail_cannot_inject_headers() -> None:
    _, _, raw = composer().acknowledgement(
        context(subject="Hi\r\nBcc: victim@evil.example"), "<a@d>"
    )
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Bcc"] is None and "victim" not in (msg["To"] or "")
    headers = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in headers and b"\r\nBcc" not in headers


def test_faq_ranking_prefers_matching_entries() -> None:
    index = FaqIndex([FaqEntry("How do I run payroll?", "Pay Run"), FaqEntry("Install", "Upload")])
    assert [e.question for e in index.top("payroll run for november")] == ["How do I run payroll?"]
    assert index.top("the and of") == []


_SHIPPED_FAQ = FaqIndex.load(defaults_dir() / "faq.toml")
_FAQ_WORDS = sorted(
    {w for e in _SHIPPED_FAQ.entries for w in query_words(f"{e.question} {e.answer}", 1000)}
)


def _top_by_one_query(index: FaqIndex, text: str, limit: int = 3) -> list[FaqEntry]:
    """The ranking as FTS5 gives it for one query of the text's words OR-ed together."""
    terms = [
        w
        for w in query_words(text)
        if index.db.execute("SELECT 1 FROM faq WHERE faq MATCH ?", (f'"{w}"',)).fetchone()
    ]
    if not terms:
        return []
    rows = index.db.execute(
        "SELECT rowid, bm25(faq, 2.0, 1.0) AS score FROM faq WHERE faq MATCH ? "
        "ORDER BY score, rowid LIMIT ?",
        (" OR ".join(f'"{w}"' for w in terms), limit),
    ).fetchall()
    return [index.entries[rowid] for rowid, score in rows if score < -1e-6]


@given(
    st.lists(
        st.sampled_from(_FAQ_WORDS) | st.from_regex(r"[a-z]{3,9}", fullmatch=True),
        max_size=40,
    ),
    st.integers(min_value=1, max_value=5),
)
def test_faq_ranking_is_the_one_query_ranking(words: list[str], limit: int) -> None:
    """The sum of each word's BM25 terms ranks as FTS5's query of all the words does:
    the same entries, in the same order (words the FAQ lacks and repeats included)."""
    text = " ".join(words)
    assert _SHIPPED_FAQ.top(text, limit) == _top_by_one_query(_SHIPPED_FAQ, text, limit)


def test_templates_can_be_overridden(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "acknowledgement.txt.j2").write_text("Ticket {{ ctx.tag }} received.\n")
    _, text, _ = composer(str(tmp_path)).acknowledgement(context(), "<a@d>")
    assert text == "Ticket [WPERP #12] received.\n"


def test_sales_copy_goes_to_sales() -> None:
    subject, text, raw = composer().sales_copy(
        context(category="presales"), "What does it cost?", "<s@d>"
    )
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["To"] == "sales@desk.example" and msg["Auto-Submitted"] == "auto-generated"
    assert "What does it cost?" in text and subject.startswith("[WPERP #12]")


def _form_mail(reply_to: tuple[Address, ...], text: str) -> ParsedMail:
    return ParsedMail(
        message_id=None,
        in_reply_to=(),
        references=(),
        sender=Address("form@desk.example"),
        to=(),
        cc=(),
        reply_to=reply_to,
        subject="Contact form",
        date_header="",
        date=None,
        text=text,
    )


def test_form_customer_from_reply_to_or_body() -> None:
    assert form_customer(_form_mail((Address("c@x.example", "C"),), "")) == Address(
        "c@x.example", "C"
    )
    body = "Name: Rahim Uddin\nEmail: Rahim@Example.com\nMessage: hello"
    assert form_customer(_form_mail((), body)) == Address("rahim@example.com", "Rahim Uddin")
    assert form_customer(_form_mail((), "no address here")) is None


def test_faq_ranking_reads_the_first_64_distinct_words_only() -> None:
    """Repeats and stop words do not count towards the 64; the 65th distinct word does not
    reach the query (pasted logs further down cost time without changing the answer)."""
    index = FaqIndex([FaqEntry("How do I run payroll?", "Pay Run")])
    filler = " ".join(f"word{chr(97 + n // 26)}{chr(97 + n % 26)}" for n in range(63))
    assert index.top(f"the the and {filler} {filler} payroll") != []  # 64th distinct
    assert index.top(f"{filler} extra payroll") == []  # 65th distinct


def _words_by_definition(text: str, limit: int = 64) -> list[str]:
    distinct = dict.fromkeys(_WORD.findall(text.lower()))
    return [w for w in distinct if w not in _STOP][:limit]


@given(
    st.lists(
        st.sampled_from(["install", "the", "Ünïcode", "ΣΑΣ", "İstanbul", "don't", "a.b", "x1y"])
        | st.text(min_size=0, max_size=12),
        max_size=200,
    ),
    st.sampled_from([" ", "\n", "\t", " \u00a0", "\u2028", ", ", "-"]),
    st.integers(min_value=1, max_value=70),
)
def test_query_words_are_the_first_distinct_words_of_the_text(
    tokens: list[str], separator: str, limit: int
) -> None:
    text = separator.join(tokens)
    assert query_words(text, limit) == _words_by_definition(text, limit)


def test_query_words_stop_at_the_limit() -> None:
    text = " ".join(f"word{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(500))
    assert len(query_words(text)) == 64
    assert query_words(text)[:2] == ["wordaa", "wordba"]


def test_times_are_written_in_the_desks_zone_whatever_zone_they_come_in() -> None:
    """The local-time filter is remembered per instant and zone: the same instant given
    in another zone reads the same, and another desk's zone is not served from it."""
    dhaka, berlin = ZoneInfo("Asia/Dhaka"), ZoneInfo("Europe/Berlin")
    instant = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    same = instant.astimezone(timezone(timedelta(hours=-5)))
    assert _local_time(instant, dhaka) == "Monday 07 December 2026, 12:00 (Asia/Dhaka)"
    assert _local_time(same, dhaka) == _local_time(instant, dhaka)
    assert _local_time(same, berlin) == "Monday 07 December 2026, 07:00 (Europe/Berlin)"
    assert _utc_time(same) == "06:00 UTC, Mon 07 Dec"


def _letters(n: int) -> str:
    word = ""
    while True:
        n, digit = divmod(n, 26)
        word += chr(ord("a") + digit)
        if not n:
            return "zz" + word


def test_the_faq_words_kept_are_bounded_and_rankings_unchanged() -> None:
    """A desk's stream of new words (names, typos, order numbers) never ends: the words
    kept for ranking stay under TERMS_KEPT, and a ranking after the cache starts over is
    the one before."""
    index = FaqIndex(
        [FaqEntry("How do I install the plugin?", "Upload the zip."), FaqEntry("Refunds", "Ask.")]
    )
    before = index.top("install plugin refund")
    assert [e.question for e in before][:1] == ["How do I install the plugin?"]
    for n in range(compose.TERMS_KEPT + 50):
        index.top(_letters(n))
        assert len(index._terms) <= compose.TERMS_KEPT
    assert index.top("install plugin refund") == before
    assert len(index._terms) < compose.TERMS_KEPT  # it started over at least once
