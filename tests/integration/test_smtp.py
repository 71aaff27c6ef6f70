"""The SMTP adapter against aiosmtpd: what arrives is what was sent, and refusals map to
permanent or temporary SendErrors, with and without PIPELINING."""

from __future__ import annotations

import pytest

from supportd.adapters.smtp import SmtpTransport, _Session
from supportd.config import SmtpSettings
from supportd.errors import SendError
from tests.support.smtp import Sink, SmtpServer

RAW = (
    b"From: support@desk.example\r\nTo: a@example.com\r\nSubject: dots\r\n\r\n"
    b".starts with a dot\r\nmiddle\r\n.\r\n..two dots\r\nlast line without newline"
)


def transport(server: SmtpServer) -> SmtpTransport:
    return SmtpTransport(SmtpSettings(host="127.0.0.1", port=server.port, security="none"))


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
def session(request: pytest.FixtureRequest, smtp_server: SmtpServer, smtp: Sink):  # type: ignore[no-untyped-def]
    client = transport(smtp_server).connect()
    try:
        yield _Session(client, "SMTP test", pipelining=request.param)
    finally:
        client.close()


def test_a_message_arrives_unchanged_dots_and_all(session: _Session, smtp: Sink) -> None:
    session.send("support@desk.example", ("a@example.com", "b@example.com"), RAW)
    session.send("support@desk.example", ("c@example.com",), b"Subject: second\r\n\r\nok\r\n")
    first, second = smtp.received
    assert first.sender == "support@desk.example"
    assert first.recipients == ["a@example.com", "b@example.com"]
    assert first.raw == RAW + b"\r\n"  # the last line gets its line end, nothing else changes
    assert second.recipients == ["c@example.com"] and second.raw.endswith(b"ok\r\n")


def test_one_refused_recipient_leaves_the_others(session: _Session, smtp: Sink) -> None:
    smtp.refuse.add("gone@example.com")
    session.send("support@desk.example", ("gone@example.com", "a@example.com"), RAW)
    [item] = smtp.received
    assert item.recipients == ["a@example.com"]


def test_all_recipients_refused_is_permanent_and_the_session_goes_on(
    session: _Session, smtp: Sink
) -> None:
    smtp.refuse.add("gone@example.com")
    with pytest.raises(SendError) as info:
        session.send("support@desk.example", ("gone@example.com",), RAW)
    assert info.value.permanent and info.value.code == 550
    assert "gone@example.com" in str(info.value)
    session.send("support@desk.example", ("a@example.com",), RAW)  # same connection
    assert [r.recipients for r in smtp.received] == [["a@example.com"]]


@pytest.mark.parametrize(
    ("reply", "permanent"), [("550 5.7.1 no", True), ("451 4.3.0 later", False)]
)
def test_data_refusals_map_to_permanent_or_temporary(
    session: _Session, smtp: Sink, reply: str, permanent: bool
) -> None:
    smtp.failures.append(reply)
    with pytest.raises(SendError) as info:
        session.send("support@desk.example", ("a@example.com",), RAW)
    assert info.value.permanent is permanent and str(info.value.code) == reply[:3]
    session.send("support@desk.example", ("a@example.com",), RAW)
    assert len(smtp.received) == 1


def test_an_address_that_could_add_a_command_is_refused(session: _Session, smtp: Sink) -> None:
    with pytest.raises(SendError, match="cannot send") as info:
        session.send("support@desk.example", ("a@example.com>\r\nRCPT TO:<x@evil.example",), RAW)
    assert info.value.permanent
    assert smtp.received == [] and smtp.attempts == 0
