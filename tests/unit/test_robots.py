from __future__ import annotations

import pytest

from supportd.domain.mail import Address, ParsedMail
from supportd.domain.robots import automatic_reason


def mail(
    sender: str = "alice@customer.example",
    return_path: str | None = None,
    content_type: str = "text/plain",
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
        subject="s",
        date_header="",
        date=None,
        text="",
        auto_headers={k.replace("_", "-"): v for k, v in headers.items()},
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
