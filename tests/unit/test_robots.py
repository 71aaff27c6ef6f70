from __future__ import annotations

import pytest

from supportd.domain.mail import Address, ParsedMail
from supportd.domain.robots import automatic_reason


def mail(
    sender: str = "alice@customer.example",
    return_path: str | None = None,
    content_type: str = "text/plain",
    subject: str = "s",
    **headers: str,
) -> ParsedMail:
    return ParsedMail(
        message_id=None,
        in_reply_to=(),
        references=(),
        sender=Address(sender) if sender else None,
        to=(),
        cc=(),
        reply_to=(),
        subject=subject,
        date_header="",
        date=None,
        text="",
        auto_headers={k.rstrip("_").replace("_", "-"): v for k, v in headers.items()},
        return_path=return_path,
        content_type=content_type,
    )


def test_a_person_is_not_automatic() -> None:
    assert automatic_reason(mail(auto_submitted="no")) == ""


@pytest.mark.parametrize(
    "m",
    [
        mail(auto_submitted="auto-replied"),
        mail(auto_submitted="auto-generated"),
        mail(precedence="bulk"),
        mail(precedence="junk"),
        mail(precedence="list"),
        mail(list_id="<news.example>"),
        mail(list_unsubscribe="<mailto:u@x>"),
        mail(x_auto_response_suppress="OOF, AutoReply"),
        mail(x_autoreply="yes"),
        mail(x_autorespond="yes"),
        mail(return_path=""),
        mail(sender="MAILER-DAEMON@mx.example"),
        mail(sender="no-reply@shop.example"),
        mail(sender="noreply@shop.example"),
        mail(content_type="multipart/report"),
        mail(sender=""),
    ],
)
def test_robots_are_recognised(m: ParsedMail) -> None:
    assert automatic_reason(m) != ""


# Shapes a second reader wrote from each sender's documented behaviour (issue 4's
# invariant: never answer a robot), and persons the rules once took for robots.
@pytest.mark.parametrize(
    "m",
    [
        mail(subject="自動応答: [Desk] Refund"),
        mail(subject="Risposta automatica: Refund"),
        mail(subject="Automatisch antwoord: Refund"),
        mail(subject="[EXTERNAL] Out of Office: Refund"),
        mail(subject="Out of Office AutoReply: Refund"),
        mail(subject="Out of office"),
        mail(x_servicenow_generated="true"),
        mail(x_loop="support@vendor.example"),
        mail(x_no_loop="yes"),
        mail(sender="drive-shares-dm-noreply@google.com"),
        mail(sender="ne-pas-repondre@impots.example"),
        mail(sender="bounces+verp=x@lists.example"),
        mail(sender="agent@vendor.example", sender_="Salesforce <noreply@salesforce.com>"),
    ],
)
def test_more_robots_are_recognised(m: ParsedMail) -> None:
    assert automatic_reason(m) != ""


@pytest.mark.parametrize(
    "m",
    [
        mail(subject="Out of office hours emergency number?"),
        mail(subject="Automatic reply settings not saving in your app"),
        mail(subject="Autoreply from your system is confusing"),
        mail(subject="RE: Automatic reply: Refund"),  # a person answering a robot
        mail(sender="bouncehouse.rentals@gmail.com"),
        mail(sender="bounce.house@party.example"),
        mail(sender="noreplyk@customer.example"),
        mail(sender="info@customer.example"),
        mail(sender="alice@customer.example", sender_="Alice <alice@customer.example>"),
    ],
)
def test_persons_are_not_taken_for_robots(m: ParsedMail) -> None:
    assert automatic_reason(m) == ""
