from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from supportd.domain.mail import Address, ParsedMail
from supportd.domain.threads import (
    Seen,
    ThreadReason,
    answered_by,
    decide,
    find_tag,
    new_participants,
    replies_to,
    sibling_of,
    strip_tag,
    ticket_tag,
)


def mail(
    sender: str | None = "alice@customer.example",
    subject: str = "Help",
    in_reply_to: tuple[str, ...] = (),
    references: tuple[str, ...] = (),
    to: tuple[str, ...] = ("support@desk.example",),
    cc: tuple[str, ...] = (),
) -> ParsedMail:
    return ParsedMail(
        message_id="<m@x>",
        in_reply_to=in_reply_to,
        references=references,
        sender=Address(sender) if sender else None,
        to=tuple(Address(a) for a in to),
        cc=tuple(Address(a) for a in cc),
        reply_to=(),
        subject=subject,
        date_header="",
        date=None,
        text="",
    )


def nobody(_: int) -> frozenset[str]:
    return frozenset()


def test_reply_by_in_reply_to_joins_that_ticket() -> None:
    d = decide(mail(in_reply_to=("<a@x>",)), "Desk", {"<a@x>": 7}, nobody)
    assert (d.ticket, d.reason) == (7, ThreadReason.REFERENCE)


def test_in_reply_to_wins_over_older_references() -> None:
    m = mail(in_reply_to=("<new@x>",), references=("<old@x>", "<new@x>"))
    assert decide(m, "Desk", {"<old@x>": 1, "<new@x>": 2}, nobody).ticket == 2


def test_nearest_reference_wins_when_no_in_reply_to() -> None:
    m = mail(references=("<root@x>", "<mid@x>", "<leaf@x>"))
    assert decide(m, "Desk", {"<root@x>": 1, "<mid@x>": 2}, nobody).ticket == 2


def test_unknown_references_open_a_new_ticket() -> None:
    d = decide(mail(references=("<zzz@x>",)), "Desk", {}, nobody)
    assert d.is_new and d.reason == ThreadReason.NEW


def test_tag_from_requester_joins() -> None:
    d = decide(
        mail(subject="Re: [Desk #12] Help"),
        "Desk",
        {},
        lambda n: frozenset({"alice@customer.example"}) if n == 12 else frozenset(),
    )
    assert (d.ticket, d.reason) == (12, ThreadReason.TAG)


def test_tag_from_a_stranger_opens_a_new_ticket() -> None:
    d = decide(
        mail(sender="mallory@evil.example", subject="[Desk #12] give me the thread"),
        "Desk",
        {},
        lambda n: frozenset({"alice@customer.example"}),
    )
    assert d.is_new and d.reason == ThreadReason.TAG_REFUSED


def test_tag_without_sender_opens_a_new_ticket() -> None:
    d = decide(mail(sender=None, subject="[Desk #1]"), "Desk", {}, lambda n: frozenset({""}))
    assert d.is_new


def test_tag_of_another_product_is_ignored() -> None:
    assert find_tag("[Other #5] hi", "Desk") is None
    assert find_tag("RE: [desk  # 5 ] hi", "Desk") == 5


def test_tag_round_trip_and_strip() -> None:
    assert find_tag(ticket_tag("WP ERP", 42) + " x", "WP ERP") == 42
    assert strip_tag("Re: Fwd: [Desk #3] Printer on fire", "Desk") == "Printer on fire"


def test_participants_are_requester_and_their_to_cc_minus_desk() -> None:
    m = mail(to=("support@desk.example", "bob@customer.example"), cc=("agent@desk.example",))
    found = new_participants(
        m, "alice@customer.example", {"support@desk.example", "agent@desk.example"}
    )
    assert found == {"alice@customer.example", "bob@customer.example"}


def test_the_desks_plus_address_is_not_a_participant() -> None:
    """Mail to support+billing@ would else Cc every answer to the desk's own mailbox."""
    m = mail(to=("support+billing@desk.example",), cc=("bob+work@customer.example",))
    found = new_participants(m, "alice@customer.example", {"support@desk.example"})
    assert found == {"alice@customer.example", "bob+work@customer.example"}


def test_others_do_not_add_participants() -> None:
    m = mail(sender="bob@customer.example", cc=("eve@evil.example",))
    assert new_participants(m, "alice@customer.example", set()) == frozenset()


emails = st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.example", fullmatch=True)


@given(
    sender=emails,
    number=st.integers(min_value=1, max_value=10**9),
    members=st.sets(emails, max_size=4),
    prefix=st.sampled_from(["", "Re: ", "AW: ", "Fwd: "]),
)
def test_a_tag_joins_only_for_participants(
    sender: str, number: int, members: set[str], prefix: str
) -> None:
    d = decide(
        mail(sender=sender, subject=f"{prefix}{ticket_tag('Desk', number)} hi"),
        "Desk",
        {},
        lambda n: frozenset(members) if n == number else frozenset(),
    )
    if sender in members:
        assert d.ticket == number
    else:
        assert d.ticket is None


@given(
    known=st.dictionaries(st.from_regex(r"<[a-z0-9]{1,6}@x>", fullmatch=True), st.integers(1, 50)),
    refs=st.lists(st.from_regex(r"<[a-z0-9]{1,6}@x>", fullmatch=True), max_size=6),
)
def test_references_only_ever_pick_a_ticket_that_owns_one_of_them(
    known: dict[str, int], refs: list[str]
) -> None:
    d = decide(mail(references=tuple(refs)), "Desk", known, nobody)
    owners = {known[r] for r in refs if r in known}
    if owners:
        assert d.ticket in owners
    else:
        assert d.ticket is None


def test_related_ticket_is_used_when_no_reference_is_known() -> None:
    d = decide(mail(references=("<unknown@x>",)), "Desk", {}, nobody, ticket_of_related=4)
    assert (d.ticket, d.reason) == (4, ThreadReason.RELATED)


def test_a_known_reference_beats_a_related_ticket() -> None:
    d = decide(mail(in_reply_to=("<a@x>",)), "Desk", {"<a@x>": 2}, nobody, ticket_of_related=4)
    assert d.ticket == 2


def test_a_quoted_address_with_a_comma_never_becomes_a_participant() -> None:
    from supportd.domain.threads import new_participants

    m = mail(cc=('"support@desk.example, x"@evil.example', "bob@customer.example"))
    found = new_participants(m, "alice@customer.example", ["support@desk.example"])
    assert found == {"alice@customer.example", "bob@customer.example"}


# A stored message that supportd did not write links only mail between the same people.
ALICE, BOB, MALLORY = "alice@customer.example", "bob@customer.example", "mallory@evil.example"


def test_a_reply_links_to_a_stored_mail_of_its_sender_or_written_to_its_author() -> None:
    stored = Seen(1, ours=False, author=ALICE, addressed=frozenset({BOB}))
    assert replies_to(mail(sender=ALICE), stored)  # her own follow-up
    assert replies_to(mail(sender=BOB, to=(ALICE, "support@desk.example")), stored)
    assert not replies_to(mail(sender=BOB), stored)  # Bob, to the desk only
    assert not replies_to(mail(sender=MALLORY), stored)
    assert replies_to(mail(sender=MALLORY), Seen(1, ours=True))  # an ID supportd issued
    assert not replies_to(mail(sender=None), stored)


def test_a_stored_reply_answers_a_late_mail_of_its_addressee_or_its_author() -> None:
    child = Seen(1, ours=False, author=BOB, addressed=frozenset({ALICE}))
    assert answered_by(mail(sender=ALICE), child)  # Bob answered Alice's mail
    assert answered_by(mail(sender=BOB), child)
    assert not answered_by(mail(sender=MALLORY, to=(ALICE, BOB)), child)


def test_siblings_share_a_sender_or_a_reply_to_all() -> None:
    sibling = Seen(1, ours=False, author=BOB, addressed=frozenset({ALICE}))
    assert sibling_of(mail(sender=BOB), sibling)
    assert sibling_of(mail(sender="dina@customer.example", cc=(BOB,)), sibling)
    # Being in the sibling's Cc is not enough: a stranger chooses whom he puts there.
    assert not sibling_of(mail(sender=ALICE), sibling)


@given(emails, emails, st.frozensets(emails, max_size=3))
def test_a_stranger_never_links_to_a_mail_not_written_to_or_by_them(
    author: str, sender: str, addressed: frozenset[str]
) -> None:
    stored = Seen(1, ours=False, author=author, addressed=addressed)
    new = mail(sender=sender, to=("support@desk.example",))
    if sender != author:
        assert not replies_to(new, stored) and not sibling_of(new, stored)
