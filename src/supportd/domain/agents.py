"""Trusting an agent's mail: who the agents are, reply tokens, Authentication-Results, commands.

Pure: standard library only, no I/O, no clock. See DESIGN.md, "The support team's side".

Mail from an address in ``support.agents`` is the agent speaking for the desk only when
(a) one of its recipient addresses carries a valid reply token of that agent, or (b) the
first ``Authentication-Results`` header of the trusted authserv-id says ``dmarc=pass`` or
``dkim=pass`` for the sender's domain. Everything else is not trusted, with a short reason
that never holds the secret or a valid token.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses, parseaddr

# --------------------------------------------------------------------------------------
# Agents
# --------------------------------------------------------------------------------------

# RFC 5322 "specials": a display name holding one of these is quoted by __str__.
_NAME_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_BAD_ADDRESS_CHARS = re.compile(r'[\s<>()\[\],;:"\\]|[\x00-\x1f\x7f]')


@dataclass(frozen=True, slots=True)
class Agent:
    email: str
    name: str = ""

    def __str__(self) -> str:
        if not self.name:
            return self.email
        if _NAME_SPECIALS.search(self.name):
            quoted = self.name.replace("\\", "\\\\").replace('"', '\\"')
            return f'"{quoted}" <{self.email}>'
        return f"{self.name} <{self.email}>"


def _valid_address(address: str) -> bool:
    if address.count("@") != 1 or _BAD_ADDRESS_CHARS.search(address):
        return False
    local, domain = address.split("@")
    return bool(local) and bool(domain)


def parse_agent(value: str) -> Agent:
    """``"Rahim Uddin <rahim@wperp.example>"`` or ``"rahim@wperp.example"`` → Agent.

    The address is lower-cased. ValueError naming ``value`` when it holds no valid address,
    or more than one (``"a@b.example <c@d.example>"`` is two, not a name and an address).
    """
    pairs = getaddresses([value])
    if len(pairs) != 1:
        raise ValueError(f"not a valid agent address: {value!r}")
    name, address = pairs[0]
    address = address.strip().lower()
    if not _valid_address(address):
        raise ValueError(f"not a valid agent address: {value!r}")
    return Agent(email=address, name=" ".join(name.split()))


def _email_of(value: str) -> str | None:
    """The lower-cased address in ``value`` (bare or with a display name), or None."""
    try:
        return parse_agent(value).email
    except ValueError:
        return None


def _split(address: str) -> tuple[str, str] | None:
    if address.count("@") != 1:
        return None
    local, domain = address.split("@")
    if not local or not domain:
        return None
    return local, domain


# --------------------------------------------------------------------------------------
# Reply tokens
# --------------------------------------------------------------------------------------

_TOKEN_HEX = 20
_TOKEN = re.compile(rf"([1-9][0-9]{{0,17}})-([0-9a-f]{{{_TOKEN_HEX}}})")


def reply_token(secret: str, ticket: int, agent_email: str) -> str:
    """``"<ticket>-<20 hex>"``: HMAC-SHA256 of ticket and agent address under ``secret``."""
    if not secret:
        raise ValueError("the reply-token secret is empty")
    if ticket < 1:
        raise ValueError(f"not a ticket number: {ticket!r}")
    message = f"{ticket}\x1f{agent_email.lower()}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"{ticket}-{digest[:_TOKEN_HEX]}"


def token_address(support_address: str, token: str) -> str:
    """``support@example`` and a token → ``support+<token>@example``."""
    local, domain = _address_parts(support_address)
    return f"{local}+{token}@{domain}"


@functools.lru_cache(maxsize=16)
def _address_parts(support_address: str) -> tuple[str, str]:
    """The desk's own address, parsed once: every notification and relay needs it
    (parseaddr was 13 % of writing a notification, issue 9)."""
    parts = _split(parseaddr(support_address)[1].strip())
    if parts is None:
        raise ValueError(f"not a valid support address: {support_address!r}")
    return parts


def find_tokens(addresses: Iterable[str], support_address: str) -> list[str]:
    """The plus-parts of the addresses that are the support address plus a tag.

    ``addresses`` are header values (To, Cc, Delivered-To, X-Original-To), each one or
    more addresses. Local part before "+" and domain compare case-insensitively; the
    tags come back as written, deduplicated, in order.
    """
    support = _split(parseaddr(support_address)[1].strip().lower())
    if support is None:
        return []
    prefix = support[0] + "+"
    found: list[str] = []
    try:
        pairs = getaddresses([str(a) for a in addresses])
    except Exception:  # the standard parser on hostile input: no tokens rather than a crash
        return []
    for _name, address in pairs:
        parts = _split(address.strip())
        if parts is None:
            continue
        local, domain = parts
        if domain.lower() != support[1] or not local.lower().startswith(prefix):
            continue
        tag = local[len(prefix) :]
        if tag and tag not in found:
            found.append(tag)
    return found


def check_token(secret: str, token: str, agent_email: str) -> int | None:
    """The ticket number when ``token`` is ``agent_email``'s token for it, else None.

    Constant-time comparison; anything malformed (truncated, extended, upper-case hex,
    leading zeros, another agent's or another ticket's) gives None. Never raises.
    """
    try:
        if not secret or not token.isascii():
            return None
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        ticket = int(match.group(1))
        expected = reply_token(secret, ticket, agent_email)
        if hmac.compare_digest(expected.encode(), token.encode()):
            return ticket
        return None
    except Exception:
        return None


# --------------------------------------------------------------------------------------
# Authentication-Results, as plain data (parsed by supportd.adapters.authresults)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthResult:
    """One resinfo: ``dkim=pass header.d=example.org`` → ("dkim", "pass", "example.org").

    ``domain`` is header.d for dkim and header.from for dmarc, lower-case ("" if none).
    """

    method: str
    result: str
    domain: str


@dataclass(frozen=True, slots=True)
class AuthHeader:
    authserv_id: str
    results: tuple[AuthResult, ...]


# --------------------------------------------------------------------------------------
# Trust
# --------------------------------------------------------------------------------------

VIA_TOKEN = "token"
VIA_AUTH_RESULTS = "authentication-results"


@dataclass(frozen=True, slots=True)
class Trust:
    """The decision on one mail. ``agent`` and ``via`` are set only when trusted."""

    agent: Agent | None
    ticket: int | None
    via: str
    reason: str

    @property
    def trusted(self) -> bool:
        return self.agent is not None and self.via in (VIA_TOKEN, VIA_AUTH_RESULTS)


_NOT_AN_AGENT = Trust(None, None, "", "not an agent")
_BAD_TOKEN = "token of another agent or another ticket"
_CLIP = 64


def _clip(text: str) -> str:
    """Attacker-supplied text in a reason: printable, short."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= _CLIP else text[: _CLIP - 3] + "..."


def _within(domain: str, signer: str) -> bool:
    """``domain`` is ``signer`` or one of its subdomains."""
    return bool(signer) and (domain == signer or domain.endswith("." + signer))


def _auth_verdict(header: AuthHeader, sender_domain: str, authserv: str) -> tuple[bool, str]:
    """(passes, why not) for the first header of the trusted authserv-id."""
    said: list[str] = []
    for r in header.results:
        method, result, domain = r.method.lower(), r.result.lower(), r.domain.lower()
        if method == "dmarc":
            # The pass must be for the From domain the desk sees (header.from), not just "a"
            # pass: a filter that read another From than ours would otherwise vouch for it.
            if result == "pass" and domain == sender_domain:
                return True, ""
        elif method == "dkim":
            if result == "pass" and _within(sender_domain, domain):
                return True, ""
        else:
            continue
        if result == "pass":
            said.append(f"{method}=pass for {_clip(domain) or 'no domain'}")
        else:
            said.append(f"{method}={_clip(result)}")
    said.sort(key=lambda s: not s.startswith("dmarc"))  # dmarc first, stable otherwise
    source = f"Authentication-Results from {_clip(authserv)}"
    if not said:
        return False, f"{source} has no dkim or dmarc result"
    shown = ", ".join(said[:4]) + (", ..." if len(said) > 4 else "")
    return False, f"{source} says {shown}"


def decide_trust(
    *,
    sender: str,
    recipients: Sequence[str],
    auth_headers: Sequence[AuthHeader],
    agents: Sequence[Agent],
    support_address: str,
    secret: str,
    authserv_id: str = "",
) -> Trust:
    """Is this mail an agent speaking for the desk? (DESIGN.md, "Agent reply").

    ``sender`` is the From address; ``recipients`` the To, Cc, Delivered-To and
    X-Original-To header values; ``auth_headers`` top-down as in the message.
    Trusted via a token: the ticket is the token's. Trusted via Authentication-Results:
    ticket None (the caller threads). Not trusted: agent None, ticket None, a reason.
    """
    email = _email_of(sender)
    if email is None:
        return _NOT_AN_AGENT
    agent = next((a for a in agents if a.email.lower() == email), None)
    if agent is None:
        return _NOT_AN_AGENT

    # (a) a reply token of this very agent, in any recipient address
    tokens = find_tokens(recipients, support_address)
    for token in tokens:
        ticket = check_token(secret, token, email)
        if ticket is not None:
            return Trust(agent, ticket, VIA_TOKEN, "")

    # (b) the first Authentication-Results header of the trusted authserv-id
    authserv = authserv_id.strip().lower()
    auth_reason = ""
    if authserv:
        header = next((h for h in auth_headers if h.authserv_id.strip().lower() == authserv), None)
        if header is None:
            auth_reason = f"no Authentication-Results from {_clip(authserv)}"
        else:
            passes, auth_reason = _auth_verdict(header, email.rsplit("@", 1)[1], authserv)
            if passes:
                return Trust(agent, None, VIA_AUTH_RESULTS, "")

    if tokens:
        reason = _BAD_TOKEN + (f"; {auth_reason}" if auth_reason else "")
    elif not authserv:
        reason = "no reply token and no trusted Authentication-Results"
    elif auth_reason.startswith("no "):
        reason = f"no reply token and {auth_reason}"
    else:
        reason = auth_reason
    return Trust(None, None, "", reason)


# --------------------------------------------------------------------------------------
# Commands at the top of an agent's reply
# --------------------------------------------------------------------------------------

COMMANDS = ("note", "close", "pending", "open", "assign", "category")
_NO_ARGUMENT = frozenset({"note", "close", "pending", "open"})
_STATUSES = ("close", "pending", "open")
_KNOWN = ", ".join("#" + c for c in COMMANDS)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    argument: str = ""


@dataclass(frozen=True, slots=True)
class ParsedCommands:
    commands: tuple[Command, ...]
    body: str
    errors: tuple[str, ...]

    @property
    def note(self) -> bool:
        return any(c.name == "note" for c in self.commands)


def _is_blank(line: str) -> bool:
    return not line.strip()


def _parse_one(line: str, categories: Collection[str], agents: Collection[str]) -> Command | str:
    """One command line → Command, or an error string."""
    words = line.strip()[1:].split(maxsplit=1)
    name = words[0].lower() if words else ""
    argument = words[1].strip() if len(words) > 1 else ""
    if not name:
        return f"empty command {_clip(line.strip())!r}; known commands: {_KNOWN}"
    if name not in COMMANDS:
        return f"unknown command #{_clip(name)}; known commands: {_KNOWN}"
    if name in _NO_ARGUMENT:
        if argument:
            return f"#{name} takes no argument, got {_clip(argument)!r}"
        return Command(name)
    if name == "assign":
        expected = "expected 'me' or the address of an agent"
        if not argument:
            return f"#assign needs an argument: {expected}"
        if argument.lower() == "me":
            return Command("assign", "me")
        address = _email_of(argument)
        known = {e for e in (_email_of(a) for a in agents) if e is not None}
        if address is None or address not in known:
            return f"#assign {_clip(argument)!r} is not an agent: {expected}"
        return Command("assign", address)
    # category
    listed = ", ".join(sorted(categories)) or "(none configured)"
    expected = f"expected one of: {listed}"
    if not argument:
        return f"#category needs an argument: {expected}"
    wanted = " ".join(argument.split()).lower()
    match = next((c for c in categories if c.lower() == wanted), None)
    if match is None:
        return f"#category {_clip(argument)!r} is not a category: {expected}"
    return Command("category", match)


def parse_commands(
    text: str, categories: Collection[str], agents: Collection[str]
) -> ParsedCommands:
    """Split the ``#`` lines at the very top of an agent's reply from the body.

    Leading blank lines are skipped; each following line that starts with "#" is a
    command, up to the first line that does not. ``body`` is the rest, leading blank lines
    removed. Valid commands are in ``commands`` even when there are ``errors``; a caller
    acts on none of them then. Never raises.
    """
    try:
        lines = text.splitlines(keepends=True)
        i = 0
        while i < len(lines) and _is_blank(lines[i]):
            i += 1
        commands: list[Command] = []
        errors: list[str] = []
        while i < len(lines) and lines[i].startswith("#"):
            parsed = _parse_one(lines[i], categories, agents)
            if isinstance(parsed, str):
                errors.append(parsed)
            elif parsed not in commands:
                commands.append(parsed)
            i += 1
        while i < len(lines) and _is_blank(lines[i]):
            i += 1
        body = "".join(lines[i:])

        statuses = [c.name for c in commands if c.name in _STATUSES]
        if len(statuses) > 1:
            shown = " and ".join("#" + s for s in statuses)
            errors.append(f"{shown} together: give one status command")
        for name in ("assign", "category"):
            args = [c.argument for c in commands if c.name == name]
            if len(args) > 1:
                errors.append(f"#{name} given {len(args)} times with different arguments")
        return ParsedCommands(tuple(commands), body, tuple(errors))
    except Exception as exc:  # pragma: no cover - defensive: never raise on agent input
        return ParsedCommands((), text, (f"could not read the commands: {type(exc).__name__}",))
