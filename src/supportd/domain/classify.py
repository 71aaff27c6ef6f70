"""What a support mail is about, by keyword rules (English defaults, replaceable in config).

One function, `classify`, is the seam: another classifier can replace it without touching
the callers. Only the customer's own words count: quoted history is dropped first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

CATEGORIES = (
    "installation",
    "configuration",
    "usage",
    "customization",
    "third_party",
    "presales",
    "account",
    "bug",
    "other",
)
IN_SCOPE = frozenset({"installation", "configuration", "usage", "bug"})

# Regular expressions (case-insensitive, matched at word starts). A subject hit counts double.
DEFAULT_RULES: dict[str, list[str]] = {
    "installation": [
        r"install",
        r"setup wizard",
        r"set ?up the plugin",
        r"activat",
        r"upload(ed|ing)? the (zip|plugin)",
        r"unzip",
        r"requirements?",
        r"php (version|extension)",
        r"deploy",
        r"docker",
        r"cpanel",
        r"hosting",
        r"migrat(e|ion) to (a )?new (server|host)",
        r"destination folder",
        r"(put|add) (the |your )?(plugin|erp|hrm)",
        r"(first time|new user|from where (i|we) start)",
        r"missing \w+ extension",
        r"add new",
    ],
    "configuration": [
        r"configur",
        r"settings?",
        r"smtp",
        r"permissions?",
        r"roles?",
        r"currency",
        r"tax(es)? rate",
        r"fiscal year",
        r"time ?zone",
        r"enable",
        r"disable the (option|module)",
        r"options?",
        r"set (the )?default",
        r"working days",
        r"leave polic",
        r"prefix",
        r"sender name",
        r"approv(al|e) (flow|workflow|chain)",
        r"where (to|i can|can i|do i) (set|change|put)",
        r"holiday list",
        r"(number|numbering) (format|start)",
    ],
    "usage": [
        r"how (do|can|to|should) (i|we|you)",
        r"how to",
        r"how we",
        r"how .{0,30} works?",
        r"where (can|do) (i|we) (find|see)",
        r"is (it|there) (possible|a way)",
        r"create an? ",
        r"add (a|an|new) (employee|customer|vendor|invoice)",
        r"export",
        r"import",
        r"generate (a )?report",
        r"steps?",
        r"guide",
        r"tutorial",
        r"use the",
        r"explain",
        r"what is the (process|procedure|way)",
        r"process to",
        r"reconcil",
        r"run payroll",
        r"upload documents?",
        r"search",
    ],
    "customization": [
        r"customi[sz]",
        r"custom (code|field|feature|development|template|design|report)",
        r"modify the",
        r"change (the )?(look|colou?r|layout|design|font|logo|template|style)",
        r"css",
        r"(add|write) (a |some )?(hook|filter|shortcode)",
        r"override",
        r"white ?label",
        r"rebrand",
        r"develop (a|the|this) (feature|function)",
        r"extra (field|column)",
        r"our own (field|design)",
        r"can you (do|build|make|develop) (it|this|that)?( for us)?",
        r"special report",
        r"(our|company) (colou?rs|logo|brand)",
        r"build (it|this) for us",
        r"do (it )?for us",
    ],
    "third_party": [
        r"third[- ]party",
        r"another plugin",
        r"other plugins?",
        r"conflict",
        r"compatib",
        r"woocommerce",
        r"elementor",
        r"wpml",
        r"yoast",
        r"zapier",
        r"(my|our) theme",
        r"divi",
        r"learndash",
        r"stripe",
        r"paypal",
        r"gateway",
        r"(page )?builder",
        r"caching plugin",
        r"plugin (from|by) (another|a different)",
        r"not yours",
        r"(their|that) plugin",
    ],
    "presales": [
        r"pre-?sales?",
        r"before (i |we )?(buy|purchas)",
        r"pricing",
        r"prices?",
        r"discount",
        r"trial",
        r"quote",
        r"do you (offer|provide|have)",
        r"(want|plan(ning)?|thinking) (to|of) (buy|purchas)",
        r"which (plan|package|edition)",
        r"agency plan",
        r"interested in (buying|your)",
        r"how much",
        r"cost",
        r"per year",
        r"lifetime",
        r"licen[cs]e option",
        r"nonprofit",
        r"\bngo\b",
    ],
    "account": [
        r"my account",
        r"billing",
        r"refund",
        r"renew",
        r"subscription",
        r"licen[cs]e key",
        r"payment",
        r"charged",
        r"cancel (my )?(order|plan|subscription)",
        r"receipt",
        r"credit card",
        r"my card",
        r"took money",
        r"upgrade my (plan|licen)",
        r"transfer (my |the )?licen",
        r"login to (my|your)",
        r"download the update",
        r"order (i|we) placed",
        r"vat (number|invoice)",
        r"bin number",
    ],
    "bug": [
        r"bug",
        r"error",
        r"fatal",
        r"exception",
        r"crash",
        r"broken",
        r"not work",
        r"doesn'?t work",
        r"does not work",
        r"500",
        r"50[234]",
        r"blank (page|screen)",
        r"white screen",
        r"warning:",
        r"stack ?trace",
        r"fails?",
        r"failed",
        r"wrong (amount|total|calculation)",
        r"stopped working",
        r"defect",
        r"does not balance",
        r"(every|each) time",
        r"duplicat",
        r"shows as",
        r"timeout",
        r"loading forever",
        r"missing after",
        r"after (the )?(last )?update",
    ],
}
# When two categories score the same, the one that changes the answer most wins.
PRIORITY = (
    "customization",
    "third_party",
    "presales",
    "account",
    "bug",
    "installation",
    "configuration",
    "usage",
)
_QUOTE = re.compile(r"^\s*>.*$|^On .{5,200}wrote:\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Rules:
    """All categories in one pattern, a named group each: one scan of the text, not nine."""

    pattern: re.Pattern[str]


@lru_cache(maxsize=8)
def _compile(items: tuple[tuple[str, tuple[str, ...]], ...]) -> Rules:
    groups = [f"(?P<{category}>{'|'.join(exprs)})" for category, exprs in items if exprs]
    # Matched against lower-cased text: IGNORECASE makes sre's literal matching much slower.
    return Rules(re.compile(r"\b(?:" + "|".join(groups) + ")"))


def rules_from(overrides: Mapping[str, Sequence[str]] | None = None) -> Rules:
    """The default rules, with any category given in `overrides` replaced."""
    merged = {**DEFAULT_RULES, **{k: list(v) for k, v in (overrides or {}).items()}}
    return _compile(tuple((c, tuple(merged.get(c, ()))) for c in PRIORITY))


def own_words(text: str, limit: int = 800) -> str:
    """The part of a mail its sender wrote: quoted lines and attributions removed.

    Only the first `limit` characters count: the question is at the top, and pasted logs
    further down would cost time without changing the answer.
    """
    return _QUOTE.sub("", text[:limit])


def rules_only(overrides: Mapping[str, Sequence[str]]) -> Rules | None:
    """The operator's own rules alone (no English defaults), or None when there are none."""
    items = tuple((c, tuple(overrides[c])) for c in PRIORITY if overrides.get(c))
    return _compile(items) if items else None


def rule_match(subject: str, text: str, rules: Rules) -> str | None:
    """The category the rules pick for a mail, or None when none of them matches."""
    best, best_score = None, 0
    scores = _scores(subject, text, rules)
    for category in PRIORITY:  # ties keep the earlier, more consequential category
        if scores.get(category, 0) > best_score:
            best, best_score = category, scores[category]
    return best


def _scores(subject: str, text: str, rules: Rules) -> dict[str, int]:
    scores: dict[str, int] = {}
    for weight, part in ((2, (subject or "").lower()), (1, own_words(text).lower())):
        for match in rules.pattern.finditer(part):
            category = match.lastgroup or "other"
            scores[category] = scores.get(category, 0) + weight
    return scores


def classify(subject: str, text: str, rules: Rules | None = None) -> str:
    """One of CATEGORIES for a mail, by keyword rules ("other" when none matches)."""
    return rule_match(subject, text, rules or rules_from()) or "other"
