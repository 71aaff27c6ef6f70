"""Which stored message a deferred mail's rows refer to for the text it quotes."""

from __future__ import annotations

from datetime import UTC, datetime

from supportd.domain.mail import Address, FetchedMail, ParsedMail
from supportd.services.plan import Outgoing, _quoted_row
from supportd.services.records import Deferred, IncomingMessage

NOW = datetime(2026, 3, 1, 9, tzinfo=UTC)


def _message(text: str, row_id: int | None, own_text: str | None = None) -> IncomingMessage:
    mail = ParsedMail(
        message_id="<q@x>",
        in_reply_to=(),
        references=(),
        sender=Address("alice@example.com"),
        to=(),
        cc=(),
        reply_to=(),
        subject="Export",
        date_header="",
        date=None,
        text=text,
    )
    message = IncomingMessage(
        1, mail, FetchedMail(1, NOW, b""), "customer", "", "INBOX", 1, "k", NOW, text=own_text
    )
    message.row_id = row_id
    return message


def _outgoing(quotes: IncomingMessage | None) -> Outgoing:
    return Outgoing(1, "notification", "desk@x", "agent@x", lambda n, m: ("", "", b""), quotes)


def test_a_deferred_mail_refers_to_the_stored_message_holding_its_text() -> None:
    payload = Deferred('{"kind": "notification"}', quoted="The export is blank.")
    assert _quoted_row(_outgoing(_message("The export is blank.", 7)), payload) == 7


def test_without_a_row_holding_that_very_text_the_intent_keeps_its_own() -> None:
    payload = Deferred('{"kind": "notification"}', quoted="The export is blank.")
    assert _quoted_row(_outgoing(None), payload) is None
    assert _quoted_row(_outgoing(_message("The export is blank.", None)), payload) is None
    assert _quoted_row(_outgoing(_message("Something else.", 7)), payload) is None
    # stored with a text of its own (an agent's new words): that is what the row holds
    stored_other = _message("The export is blank.", 7, own_text="new words")
    assert _quoted_row(_outgoing(stored_other), payload) is None
    assert _quoted_row(_outgoing(_message("x", 7)), b"raw bytes") is None
    assert payload.whole == '{"kind": "notification"}\nThe export is blank.'
    assert payload.size == len(payload.whole) and Deferred("{}").size == 2
