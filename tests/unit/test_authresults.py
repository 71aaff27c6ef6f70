"""Authentication-Results header values → AuthHeader, and what decide_trust makes of them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supportd.adapters.authresults import parse_auth_headers
from supportd.domain.agents import Agent, AuthHeader, AuthResult, decide_trust

OURS = (
    "mx.wperp.example; dkim=pass header.d=wperp.example header.s=s1; "
    "spf=pass smtp.mailfrom=wperp.example; dmarc=pass (p=reject) header.from=wperp.example"
)
GOOGLE_FAIL = (
    "mx.google.com; dkim=fail header.i=@evil.example; dmarc=fail header.from=wperp.example"
)
NONE = "mx.wperp.example 1; none"


def test_our_mx_pass() -> None:
    assert parse_auth_headers([OURS]) == (
        AuthHeader(
            "mx.wperp.example",
            (
                AuthResult("dkim", "pass", "wperp.example"),
                AuthResult("spf", "pass", ""),
                AuthResult("dmarc", "pass", "wperp.example"),
            ),
        ),
    )


def test_google_fail_with_header_i_only() -> None:
    assert parse_auth_headers([GOOGLE_FAIL]) == (
        AuthHeader(
            "mx.google.com",
            (
                AuthResult("dkim", "fail", "evil.example"),
                AuthResult("dmarc", "fail", "wperp.example"),
            ),
        ),
    )


def test_none_with_version() -> None:
    assert parse_auth_headers([NONE]) == (AuthHeader("mx.wperp.example", ()),)


def test_order_is_kept() -> None:
    headers = parse_auth_headers([GOOGLE_FAIL, OURS, NONE])
    assert [h.authserv_id for h in headers] == [
        "mx.google.com",
        "mx.wperp.example",
        "mx.wperp.example",
    ]


def test_empty_input() -> None:
    assert parse_auth_headers([]) == ()


def test_case_is_lowered_and_folding_unfolded() -> None:
    value = (
        "MX.WPerp.Example;\r\n\tDKIM=Pass header.d=WPERP.Example;\r\n"
        " DMARC=FAIL header.from=X.example"
    )
    assert parse_auth_headers([value]) == (
        AuthHeader(
            "mx.wperp.example",
            (AuthResult("dkim", "pass", "wperp.example"), AuthResult("dmarc", "fail", "x.example")),
        ),
    )


def test_comment_after_the_authserv_id() -> None:
    value = "mx.wperp.example (Postfix) 1; dkim=pass header.d=wperp.example"
    assert parse_auth_headers([value]) == (
        AuthHeader("mx.wperp.example", (AuthResult("dkim", "pass", "wperp.example"),)),
    )


def test_gmail_style_header() -> None:
    value = (
        "mx.google.com;\r\n       dkim=pass header.i=@gmail.com header.s=20230601 header.b=Ab1;"
        "\r\n       spf=pass (google.com: domain of x@gmail.com designates 192.0.2.1 as permitted"
        " sender) smtp.mailfrom=x@gmail.com;\r\n       dmarc=pass (p=NONE sp=QUARANTINE dis=NONE)"
        " header.from=gmail.com"
    )
    (header,) = parse_auth_headers([value])
    assert header.authserv_id == "mx.google.com"
    assert AuthResult("dkim", "pass", "gmail.com") in header.results
    assert AuthResult("dmarc", "pass", "gmail.com") in header.results


@pytest.mark.parametrize(
    ("value", "authserv_id"),
    [
        ("mx.wperp.example; this is not a result", "mx.wperp.example"),
        ("MX.WPERP.EXAMPLE 2; dkim=pass header.d=wperp.example", "mx.wperp.example"),
        ("mx.wperp.example (our (nested) mx) 7; dmarc=pass", "mx.wperp.example"),
        ("mx.wperp.example", "mx.wperp.example"),
        ("   ", ""),
        ("", ""),
        (";;;", ""),
    ],
)
def test_unparseable_value_keeps_its_authserv_id_and_no_results(
    value: str, authserv_id: str
) -> None:
    assert parse_auth_headers([value]) == (AuthHeader(authserv_id, ()),)


@given(st.lists(st.text(max_size=200), max_size=5))
def test_never_raises_and_gives_one_header_per_value(values: list[str]) -> None:
    headers = parse_auth_headers(values)
    assert len(headers) == len(values)
    for h in headers:
        assert h.authserv_id == h.authserv_id.lower()
        assert all(r.domain == r.domain.lower() for r in h.results)


# --- through decide_trust -------------------------------------------------------------

RAHIM = Agent("rahim@wperp.example", "Rahim Uddin")


def trusted(values: list[str], authserv_id: str = "mx.wperp.example") -> bool:
    return decide_trust(
        sender="Rahim Uddin <rahim@wperp.example>",
        recipients=("support@wperp.example",),
        auth_headers=parse_auth_headers(values),
        agents=(RAHIM,),
        support_address="support@wperp.example",
        secret="secret",
        authserv_id=authserv_id,
    ).trusted


def test_real_pass_on_top_is_trusted() -> None:
    assert trusted([OURS, GOOGLE_FAIL])


def test_garbage_with_the_trusted_id_on_top_blocks_a_forged_pass_below() -> None:
    assert not trusted(["mx.wperp.example; garbage", OURS])


def test_none_on_top_blocks_a_forged_pass_below() -> None:
    assert not trusted([NONE, OURS])


def test_pass_from_another_authserv_id_is_ignored() -> None:
    assert not trusted([OURS.replace("mx.wperp.example", "mx.evil.example")])


def test_fail_from_another_mx_above_ours_does_not_matter() -> None:
    assert trusted([GOOGLE_FAIL, OURS])


def test_unset_authserv_id_never_trusts() -> None:
    assert not trusted([OURS], authserv_id="")
