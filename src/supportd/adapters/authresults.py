"""Authentication-Results header values (RFC 8601) → plain AuthHeader data, with ``authres``.

One AuthHeader per value, in the order given (top-down in the message). A value ``authres``
cannot parse still gives an AuthHeader: the authserv-id read from the text before the first
";" and no results, so that a garbage header from the trusted authserv-id on top blocks
trust instead of letting a forged one further down count. Never raises.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import authres

from supportd.domain.agents import AuthHeader, AuthResult

_FOLD = re.compile(r"\r?\n[ \t]*|\r[ \t]*")
_COMMENT = re.compile(r"\([^()]*\)")


def _unfold(value: str) -> str:
    return _FOLD.sub(" ", value).strip()


def _fallback_authserv_id(value: str) -> str:
    """The authserv-id of a value authres rejected: comments out, version dropped."""
    text = value
    for _ in range(10):  # nested comments, peeled from the inside
        stripped = _COMMENT.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    words = text.split(";", 1)[0].split()
    return words[0].lower() if words else ""


def _property(result: Any, ptype: str, name: str) -> str:
    for prop in getattr(result, "properties", None) or ():
        if prop.type == ptype and prop.name == name and prop.value:
            return str(prop.value)
    return ""


def _domain(method: str, result: Any) -> str:
    if method == "dkim":
        domain = _property(result, "header", "d")
        if not domain:
            # header.i (the AUID) is the signing domain or one of its subdomains
            domain = _property(result, "header", "i").rpartition("@")[2]
    elif method == "dmarc":
        domain = _property(result, "header", "from")
    else:
        return ""
    return domain.strip().rstrip(".").lower()


def _convert(header: Any) -> AuthHeader:
    results: list[AuthResult] = []
    for r in header.results:
        method = str(getattr(r, "method", "") or "").lower()
        outcome = str(getattr(r, "result", "") or "").lower()
        if method:
            results.append(AuthResult(method=method, result=outcome, domain=_domain(method, r)))
    return AuthHeader(authserv_id=str(header.authserv_id or "").lower(), results=tuple(results))


def parse_auth_header(value: str) -> AuthHeader:
    """One Authentication-Results header value (without the field name). Never raises."""
    text = _unfold(str(value))
    try:
        return _convert(
            authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {text}")
        )
    except Exception:
        return AuthHeader(authserv_id=_fallback_authserv_id(text), results=())


def parse_auth_headers(values: Sequence[str]) -> tuple[AuthHeader, ...]:
    """Every Authentication-Results header value, in the order given. Never raises."""
    return tuple(parse_auth_header(v) for v in values)
