"""Trusting an agent's mail: agents, reply tokens, decide_trust and the #commands."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from supportd.domain.agents import (
    COMMANDS,
    Agent,
    AuthHeader,
    AuthResult,
    Command,
    ParsedCommands,
    Trust,
    check_token,
    decide_trust,
    find_tokens,
    parse_agent,
    parse_commands,
    reply_token,
    token_address,
)

SECRET = "s3cret-key-for-tests"
SUPPORT = "support@wperp.example"
MX = "mx.wperp.example"
RAHIM = Agent("rahim@wperp.example", "Rahim Uddin")
NADIA = Agent("nadia@wperp.example", "Nadia Islam")
AGENTS = (RAHIM, NADIA)
CATEGORIES = ("billing", "bug", "Feature request")
AGENT_ADDRESSES = ("Rahim Uddin <rahim@wperp.example>", "nadia@wperp.example")


# --- agents ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Rahim Uddin <rahim@wperp.example>", Agent("rahim@wperp.example", "Rahim Uddin")),
        ('"Uddin, Rahim" <Rahim@WPERP.example>', Agent("rahim@wperp.example", "Uddin, Rahim")),
        ("rahim@wperp.example", Agent("rahim@wperp.example", "")),
        ("  RAHIM@wperp.example  ", Agent("rahim@wperp.example", "")),
        ("<rahim@wperp.example>", Agent("rahim@wperp.example", "")),
    ],
)
def test_parse_agent_forms(value: str, expected: Agent) -> None:
    assert parse_agent(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "rahim",
        "Rahim Uddin",
        "@wperp.example",
        "rahim@",
        "rahim@@wperp.example",
        "ra@him@wperp.example",
        "Rahim <>",
        "Rahim <ra him@wperp.example>",
        "rahim@wperp.example, mallory@evil.example",
        "rahim@wperp.example <mallory@evil.example>",
        "Uddin, Rahim <rahim@wperp.example>",
    ],
)
def test_parse_agent_rejects_values_without_a_valid_address(value: str) -> None:
    with pytest.raises(ValueError, match="not a valid agent address") as info:
        parse_agent(value)
    assert repr(value) in str(info.value)


def test_agent_str() -> None:
    assert str(RAHIM) == "Rahim Uddin <rahim@wperp.example>"
    assert str(Agent("rahim@wperp.example")) == "rahim@wperp.example"


def test_agent_str_quotes_a_name_with_specials_and_parses_back() -> None:
    agent = parse_agent('"Uddin, Rahim" <rahim@wperp.example>')
    assert str(agent) == '"Uddin, Rahim" <rahim@wperp.example>'
    assert parse_agent(str(agent)) == agent


def test_agent_is_frozen() -> None:
    with pytest.raises(AttributeError):
        RAHIM.email = "x@y.example"  # type: ignore[misc]


# --- reply tokens ---------------------------------------------------------------------

emails = st.builds(
    lambda local, domain: f"{local}@{domain}.example",
    st.from_regex(r"[A-Za-z0-9._%+-]{1,20}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True),
)
tickets = st.integers(min_value=1, max_value=10**9)
secrets = st.text(min_size=1, max_size=40)


def test_reply_token_shape() -> None:
    token = reply_token(SECRET, 42, "rahim@wperp.example")
    number, _, digest = token.partition("-")
    assert number == "42"
    assert len(digest) == 20
    assert digest == digest.lower()
    int(digest, 16)


def test_reply_token_ignores_the_case_of_the_address() -> None:
    assert reply_token(SECRET, 7, "Rahim@WPERP.example") == reply_token(
        SECRET, 7, "rahim@wperp.example"
    )


def test_reply_token_depends_on_the_secret() -> None:
    assert reply_token("a", 7, "rahim@wperp.example") != reply_token("b", 7, "rahim@wperp.example")


def test_reply_token_refuses_an_empty_secret() -> None:
    with pytest.raises(ValueError):
        reply_token("", 7, "rahim@wperp.example")


def test_check_token_with_an_empty_secret_is_none() -> None:
    assert check_token("", "7-" + "0" * 20, "rahim@wperp.example") is None


@given(secret=secrets, ticket=tickets, email=emails)
def test_token_round_trip(secret: str, ticket: int, email: str) -> None:
    token = reply_token(secret, ticket, email)
    assert check_token(secret, token, email) == ticket
    assert check_token(secret, token, email.upper()) == ticket


@given(secret=secrets, ticket=tickets, email=emails, other=emails)
def test_token_of_another_agent_is_none(secret: str, ticket: int, email: str, other: str) -> None:
    assume(email.lower() != other.lower())
    assert check_token(secret, reply_token(secret, ticket, other), email) is None


@given(secret=secrets, ticket=tickets, other=tickets, email=emails)
def test_token_hash_under_another_ticket_number_is_none(
    secret: str, ticket: int, other: int, email: str
) -> None:
    assume(ticket != other)
    digest = reply_token(secret, ticket, email).partition("-")[2]
    assert check_token(secret, f"{other}-{digest}", email) is None
    assert check_token(secret, reply_token(secret, other, email), email) == other


@given(secret=secrets, ticket=tickets, email=emails, data=st.data())
def test_truncated_token_is_none(secret: str, ticket: int, email: str, data: st.DataObject) -> None:
    token = reply_token(secret, ticket, email)
    cut = data.draw(st.integers(min_value=1, max_value=len(token)))
    assert check_token(secret, token[:-cut], email) is None


@given(secret=secrets, ticket=tickets, email=emails, extra=st.characters())
def test_extended_token_is_none(secret: str, ticket: int, email: str, extra: str) -> None:
    token = reply_token(secret, ticket, email)
    assert check_token(secret, token + extra, email) is None
    assert check_token(secret, extra + token, email) is None


@given(secret=secrets, ticket=tickets, email=emails)
def test_upper_case_hex_is_none(secret: str, ticket: int, email: str) -> None:
    token = reply_token(secret, ticket, email)
    assume(token != token.upper())
    assert check_token(secret, token.upper(), email) is None


@given(secret=secrets, ticket=tickets, email=emails)
def test_leading_zero_in_the_number_is_none(secret: str, ticket: int, email: str) -> None:
    assert check_token(secret, "0" + reply_token(secret, ticket, email), email) is None


@given(secret=secrets, garbage=st.text(max_size=60), email=emails)
def test_garbage_token_is_none_and_never_raises(secret: str, garbage: str, email: str) -> None:
    assert check_token(secret, garbage, email) is None


@pytest.mark.parametrize(
    "token",
    ["", "-", "1-", "-" + "a" * 20, "1_" + "a" * 20, "１-" + "a" * 20, "1-" + "g" * 20, "x" * 5000],
)
def test_malformed_tokens_are_none(token: str) -> None:
    assert check_token(SECRET, token, "rahim@wperp.example") is None


def test_token_address() -> None:
    assert token_address(SUPPORT, "12-abc") == "support+12-abc@wperp.example"
    assert token_address("Support <support@wperp.example>", "1-x") == "support+1-x@wperp.example"
    with pytest.raises(ValueError):
        token_address("support", "1-x")


# --- find_tokens ----------------------------------------------------------------------


def test_find_tokens_in_to_cc_and_delivered_to_values() -> None:
    a = reply_token(SECRET, 12, RAHIM.email)
    b = reply_token(SECRET, 13, RAHIM.email)
    values = [
        f'"Alice" <alice@customer.example>, "Support" <support+{a}@wperp.example>',  # To
        f"bob@customer.example, Support+{b}@WPERP.Example",  # Cc
        f"support+{a}@wperp.example",  # Delivered-To: the same token again
        f"<support+{b}@wperp.example>",  # X-Original-To
    ]
    assert find_tokens(values, SUPPORT) == [a, b]


def test_find_tokens_ignores_other_domains_and_other_local_parts() -> None:
    values = [
        "support+1-aaaa@evil.example",
        "supportx+2-bbbb@wperp.example",
        "sales+3-cccc@wperp.example",
        "support@wperp.example",
        "support+@wperp.example",
        "support+4-dddd@sub.wperp.example",
        "nonsense, <<>>, @@",
    ]
    assert find_tokens(values, SUPPORT) == []


def test_find_tokens_accepts_a_support_address_with_a_display_name() -> None:
    assert find_tokens(["support+9-x@wperp.example"], "Help <Support@wperp.example>") == ["9-x"]


def test_find_tokens_keeps_order_and_the_tag_as_written() -> None:
    values = ["support+B@wperp.example", "support+a@wperp.example", "support+B@wperp.example"]
    assert find_tokens(values, SUPPORT) == ["B", "a"]


# --- decide_trust ---------------------------------------------------------------------


def ar(authserv: str, *results: tuple[str, str, str]) -> AuthHeader:
    return AuthHeader(authserv, tuple(AuthResult(*r) for r in results))


def decide(
    sender: str = RAHIM.email,
    recipients: tuple[str, ...] = (SUPPORT,),
    auth_headers: tuple[AuthHeader, ...] = (),
    authserv_id: str = "",
) -> Trust:
    return decide_trust(
        sender=sender,
        recipients=recipients,
        auth_headers=auth_headers,
        agents=AGENTS,
        support_address=SUPPORT,
        secret=SECRET,
        authserv_id=authserv_id,
    )


def to_token(ticket: int, agent: Agent) -> str:
    return token_address(SUPPORT, reply_token(SECRET, ticket, agent.email))


def test_agent_with_own_token_is_trusted_for_its_ticket() -> None:
    trust = decide(recipients=(f"Support <{to_token(42, RAHIM)}>",))
    assert trust == Trust(RAHIM, 42, "token", "")
    assert trust.trusted


@pytest.mark.parametrize("field", ["to", "cc", "delivered-to", "x-original-to"])
def test_the_token_counts_in_any_recipient_field(field: str) -> None:
    values = {"to": "alice@customer.example", "cc": "", "delivered-to": "", "x-original-to": ""}
    values[field] = to_token(7, NADIA)
    trust = decide(sender="Nadia <Nadia@WPERP.example>", recipients=tuple(values.values()))
    assert trust == Trust(NADIA, 7, "token", "")


def test_sender_with_a_display_name_and_other_case_is_the_agent() -> None:
    trust = decide(sender="Rahim Uddin <RAHIM@wperp.example>", recipients=(to_token(5, RAHIM),))
    assert trust.agent == RAHIM
    assert trust.ticket == 5


def test_valid_token_among_invalid_ones_counts() -> None:
    recipients = (to_token(3, NADIA), to_token(4, RAHIM))
    assert decide(recipients=recipients) == Trust(RAHIM, 4, "token", "")


def test_dmarc_pass_from_the_trusted_authserv_id() -> None:
    header = ar(MX, ("dmarc", "pass", "wperp.example"))
    trust = decide(auth_headers=(header,), authserv_id=MX)
    assert trust == Trust(RAHIM, None, "authentication-results", "")
    assert trust.trusted


def test_dkim_pass_for_the_sender_domain() -> None:
    header = ar(MX, ("dkim", "pass", "wperp.example"), ("dmarc", "none", "wperp.example"))
    assert decide(auth_headers=(header,), authserv_id=MX).via == "authentication-results"


def test_dkim_pass_for_a_parent_domain_of_the_sender() -> None:
    agents = (Agent("rahim@mail.wperp.example"),)
    header = ar(MX, ("dkim", "pass", "wperp.example"))
    trust = decide_trust(
        sender="rahim@mail.wperp.example",
        recipients=(),
        auth_headers=(header,),
        agents=agents,
        support_address=SUPPORT,
        secret=SECRET,
        authserv_id=MX,
    )
    assert trust.trusted


def test_authserv_id_compares_case_insensitively() -> None:
    header = ar("MX.WPERP.Example", ("dmarc", "pass", "wperp.example"))
    assert decide(auth_headers=(header,), authserv_id=" mx.wperp.EXAMPLE ").trusted


def test_valid_token_wins_over_authentication_results() -> None:
    header = ar(MX, ("dmarc", "pass", "wperp.example"))
    trust = decide(recipients=(to_token(9, RAHIM),), auth_headers=(header,), authserv_id=MX)
    assert trust == Trust(RAHIM, 9, "token", "")


def test_stranger_is_not_an_agent() -> None:
    assert decide(sender="alice@customer.example") == Trust(None, None, "", "not an agent")


@pytest.mark.parametrize(
    "sender",
    [
        "",
        "not an address",
        "<>",
        "rahim@wperp.example, x@y.z",
        "rahim@wperp.example <mallory@evil.example>",
    ],
)
def test_unreadable_sender_is_not_an_agent(sender: str) -> None:
    trust = decide(sender=sender, recipients=(to_token(1, RAHIM),))
    assert not trust.trusted
    assert trust.agent is None


# attacks


def test_forged_from_of_an_agent_without_token_is_not_trusted() -> None:
    trust = decide(recipients=("support@wperp.example", "alice@customer.example"))
    assert trust == Trust(None, None, "", "no reply token and no trusted Authentication-Results")
    assert not trust.trusted


def test_agent_b_using_agent_a_token_is_not_trusted() -> None:
    trust = decide(sender=NADIA.email, recipients=(to_token(42, RAHIM),))
    assert not trust.trusted
    assert trust.agent is None and trust.ticket is None and trust.via == ""
    assert trust.reason == "token of another agent or another ticket"


def test_ticket_1_token_under_ticket_2_number_is_not_trusted() -> None:
    digest = reply_token(SECRET, 1, RAHIM.email).partition("-")[2]
    trust = decide(recipients=(token_address(SUPPORT, f"2-{digest}"),))
    assert not trust.trusted
    assert trust.reason == "token of another agent or another ticket"


def test_stranger_writing_to_an_agent_token_address_is_not_trusted() -> None:
    trust = decide(sender="mallory@evil.example", recipients=(to_token(42, RAHIM),))
    assert trust == Trust(None, None, "", "not an agent")


def test_forged_authentication_results_from_another_authserv_id_is_ignored() -> None:
    forged = ar("mx.evil.example", ("dmarc", "pass", "wperp.example"))
    trust = decide(auth_headers=(forged,), authserv_id=MX)
    assert not trust.trusted
    assert trust.reason == f"no reply token and no Authentication-Results from {MX}"


def test_forged_trusted_authserv_id_below_the_real_failing_one_is_not_trusted() -> None:
    real = ar(MX, ("dkim", "fail", "evil.example"), ("dmarc", "fail", "wperp.example"))
    forged = ar(MX, ("dmarc", "pass", "wperp.example"), ("dkim", "pass", "wperp.example"))
    trust = decide(auth_headers=(real, forged), authserv_id=MX)
    assert not trust.trusted
    assert trust.reason.startswith(f"Authentication-Results from {MX} says dmarc=fail")


def test_dmarc_fail_reason() -> None:
    header = ar(MX, ("dmarc", "fail", "wperp.example"))
    trust = decide(auth_headers=(header,), authserv_id=MX)
    assert trust.reason == f"Authentication-Results from {MX} says dmarc=fail"


def test_dkim_pass_for_another_domain_is_not_trusted() -> None:
    header = ar(MX, ("dkim", "pass", "evil.example"), ("dmarc", "none", "wperp.example"))
    trust = decide(auth_headers=(header,), authserv_id=MX)
    assert not trust.trusted
    assert "dkim=pass for evil.example" in trust.reason


@pytest.mark.parametrize("signer", ["perp.example", "evilwperp.example", "sub.wperp.example", ""])
def test_dkim_pass_for_a_lookalike_or_child_domain_is_not_trusted(signer: str) -> None:
    header = ar(MX, ("dkim", "pass", signer))
    assert not decide(auth_headers=(header,), authserv_id=MX).trusted


def test_dmarc_pass_for_another_from_domain_is_not_trusted() -> None:
    header = ar(MX, ("dmarc", "pass", "evil.example"))
    trust = decide(auth_headers=(header,), authserv_id=MX)
    assert not trust.trusted
    assert "dmarc=pass for evil.example" in trust.reason


def test_spf_pass_alone_is_not_trusted() -> None:
    header = ar(MX, ("spf", "pass", ""))
    trust = decide(auth_headers=(header,), authserv_id=MX)
    assert not trust.trusted
    assert trust.reason == f"Authentication-Results from {MX} has no dkim or dmarc result"


def test_without_authserv_id_authentication_results_never_apply() -> None:
    header = ar(MX, ("dmarc", "pass", "wperp.example"), ("dkim", "pass", "wperp.example"))
    for authserv_id in ("", "   "):
        trust = decide(auth_headers=(header,), authserv_id=authserv_id)
        assert not trust.trusted
        assert trust.reason == "no reply token and no trusted Authentication-Results"


def test_an_unparsed_header_with_the_trusted_id_on_top_blocks_trust() -> None:
    garbage = AuthHeader(MX, ())
    forged = ar(MX, ("dmarc", "pass", "wperp.example"))
    assert not decide(auth_headers=(garbage, forged), authserv_id=MX).trusted


def test_bad_token_and_failing_authentication_results_give_both_reasons() -> None:
    header = ar(MX, ("dmarc", "fail", "wperp.example"))
    trust = decide(
        sender=NADIA.email, recipients=(to_token(1, RAHIM),), auth_headers=(header,), authserv_id=MX
    )
    assert trust.reason == (
        "token of another agent or another ticket; "
        f"Authentication-Results from {MX} says dmarc=fail"
    )


def test_bad_token_but_authentication_results_pass_is_trusted_without_a_ticket() -> None:
    header = ar(MX, ("dmarc", "pass", "wperp.example"))
    trust = decide(
        sender=NADIA.email, recipients=(to_token(1, RAHIM),), auth_headers=(header,), authserv_id=MX
    )
    assert trust == Trust(NADIA, None, "authentication-results", "")


def test_reasons_never_hold_the_secret_or_a_valid_token() -> None:
    a_token = reply_token(SECRET, 42, RAHIM.email)
    header = ar(MX, ("dkim", "pass", "x" * 500), ("dmarc", "fail\nInjected: yes", ""))
    trust = decide(
        sender=NADIA.email,
        recipients=(to_token(42, RAHIM),),
        auth_headers=(header,),
        authserv_id=MX,
    )
    assert SECRET not in trust.reason
    assert a_token not in trust.reason
    assert a_token.partition("-")[2] not in trust.reason
    assert "\n" not in trust.reason
    assert len(trust.reason) < 250


def test_with_an_empty_secret_no_token_is_valid() -> None:
    token = token_address(SUPPORT, "1-" + "0" * 20)
    trust = decide_trust(
        sender=RAHIM.email,
        recipients=(token,),
        auth_headers=(),
        agents=AGENTS,
        support_address=SUPPORT,
        secret="",
    )
    assert not trust.trusted


def test_trust_is_trusted_only_with_an_agent_and_a_way() -> None:
    assert not Trust(None, None, "", "not an agent").trusted
    assert not Trust(RAHIM, None, "", "because").trusted
    assert Trust(RAHIM, 1, "token", "").trusted


# --- commands -------------------------------------------------------------------------


def commands(text: str) -> ParsedCommands:
    return parse_commands(text, CATEGORIES, AGENT_ADDRESSES)


@pytest.mark.parametrize("name", ["note", "close", "pending", "open"])
def test_each_command_without_argument(name: str) -> None:
    parsed = commands(f"#{name}\nHello")
    assert parsed == ParsedCommands((Command(name),), "Hello", ())


def test_command_names_are_case_insensitive() -> None:
    assert commands("#CLOSE\n#Note").commands == (Command("close"), Command("note"))


def test_assign_me() -> None:
    assert commands("#assign me").commands == (Command("assign", "me"),)
    assert commands("#assign ME").commands == (Command("assign", "me"),)


@pytest.mark.parametrize(
    "argument",
    ["rahim@wperp.example", "RAHIM@WPERP.EXAMPLE", "Rahim Uddin <rahim@wperp.example>"],
)
def test_assign_an_agent(argument: str) -> None:
    parsed = commands(f"#assign {argument}")
    assert parsed.commands == (Command("assign", "rahim@wperp.example"),)
    assert parsed.errors == ()


def test_assign_an_agent_listed_by_bare_address() -> None:
    assert commands("#assign Nadia <nadia@wperp.example>").commands == (
        Command("assign", "nadia@wperp.example"),
    )


def test_category() -> None:
    assert commands("#category billing").commands == (Command("category", "billing"),)
    assert commands("#category feature  REQUEST").commands == (
        Command("category", "Feature request"),
    )


def test_combination_of_commands_and_a_body() -> None:
    parsed = commands("#assign me\n#category bug\n#pending\n\nThanks, we are on it.\n")
    assert parsed.commands == (
        Command("assign", "me"),
        Command("category", "bug"),
        Command("pending"),
    )
    assert parsed.body == "Thanks, we are on it.\n"
    assert parsed.errors == ()
    assert not parsed.note


def test_note_with_body() -> None:
    parsed = commands("#note\nCustomer is on the legacy plan, check with finance.")
    assert parsed.note
    assert parsed.body == "Customer is on the legacy plan, check with finance."
    assert parsed.errors == ()


def test_no_commands() -> None:
    assert commands("Hello Alice,\n\n#1 on our list.\n") == ParsedCommands(
        (), "Hello Alice,\n\n#1 on our list.\n", ()
    )


def test_empty_text() -> None:
    assert commands("") == ParsedCommands((), "", ())
    assert commands("\n \n") == ParsedCommands((), "", ())


def test_only_commands_give_an_empty_body() -> None:
    parsed = commands("#close\n")
    assert parsed.commands == (Command("close"),)
    assert parsed.body == ""


def test_leading_blank_lines_are_skipped() -> None:
    parsed = commands("\n  \r\n#close\n\n\nBye.")
    assert parsed.commands == (Command("close"),)
    assert parsed.body == "Bye."


def test_hash_inside_the_body_is_not_a_command() -> None:
    parsed = commands("#pending\nWe will check.\n#close\n#unknown stays text")
    assert parsed.commands == (Command("pending"),)
    assert parsed.body == "We will check.\n#close\n#unknown stays text"
    assert parsed.errors == ()


def test_a_blank_line_ends_the_commands() -> None:
    parsed = commands("#note\n\n#close")
    assert parsed.commands == (Command("note"),)
    assert parsed.body == "#close"


def test_unknown_command_names_it_and_lists_the_known_ones() -> None:
    parsed = commands("#resolve\nDone.")
    assert parsed.commands == ()
    assert parsed.body == "Done."
    assert len(parsed.errors) == 1
    assert "#resolve" in parsed.errors[0]
    for name in COMMANDS:
        assert f"#{name}" in parsed.errors[0]


def test_unknown_command_keeps_the_valid_ones() -> None:
    parsed = commands("#close\n#frobnicate")
    assert parsed.commands == (Command("close"),)
    assert len(parsed.errors) == 1


def test_empty_command_is_an_error() -> None:
    assert len(commands("#\nHi").errors) == 1


@pytest.mark.parametrize("name", ["note", "close", "pending", "open"])
def test_argument_to_a_command_without_one_is_an_error(name: str) -> None:
    parsed = commands(f"#{name} now please")
    assert parsed.commands == ()
    assert parsed.errors == (f"#{name} takes no argument, got 'now please'",)


@pytest.mark.parametrize(
    "line", ["#assign", "#assign bob@customer.example", "#assign someone", "#assign <>"]
)
def test_bad_assign_argument(line: str) -> None:
    parsed = commands(line)
    assert parsed.commands == ()
    assert len(parsed.errors) == 1
    assert "#assign" in parsed.errors[0]
    assert "'me' or the address of an agent" in parsed.errors[0]
    argument = line.removeprefix("#assign").strip()
    if argument:
        assert argument in parsed.errors[0]


@pytest.mark.parametrize("line", ["#category", "#category sales"])
def test_bad_category_argument(line: str) -> None:
    parsed = commands(line)
    assert parsed.commands == ()
    assert len(parsed.errors) == 1
    error = parsed.errors[0]
    assert "#category" in error
    assert "billing" in error and "bug" in error and "Feature request" in error
    if "sales" in line:
        assert "'sales'" in error


def test_close_with_open_is_an_error() -> None:
    parsed = commands("#close\n#open")
    assert len(parsed.errors) == 1
    assert "#close" in parsed.errors[0] and "#open" in parsed.errors[0]


def test_close_with_pending_is_an_error() -> None:
    assert len(commands("#pending\n#close").errors) == 1


def test_the_same_command_twice_counts_once() -> None:
    parsed = commands("#close\n#close")
    assert parsed.commands == (Command("close"),)
    assert parsed.errors == ()


def test_two_different_assignments_are_an_error() -> None:
    parsed = commands("#assign me\n#assign nadia@wperp.example")
    assert len(parsed.errors) == 1
    assert "#assign" in parsed.errors[0]


def test_space_after_hash_is_tolerated() -> None:
    assert commands("# close").commands == (Command("close"),)


@given(st.text(max_size=300))
def test_parse_commands_never_raises(text: str) -> None:
    parsed = commands(text)
    assert isinstance(parsed, ParsedCommands)
    assert all(c.name in COMMANDS for c in parsed.commands)


def test_dmarc_pass_without_the_from_domain_is_not_enough() -> None:
    header = ar(MX, ("dmarc", "pass", ""))  # no header.from: a pass for which From?
    trust = decide(auth_headers=(header,), authserv_id=MX)
    assert not trust.trusted
    good = ar(MX, ("dmarc", "pass", "wperp.example"))
    assert decide(auth_headers=(good,), authserv_id=MX).trusted
