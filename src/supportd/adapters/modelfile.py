"""The classifier the desk runs: the operator's keyword rules first, then the trained model
(the shipped one, or `classification.model`), or the English keyword rules without one.

Loaded once per process (the parse worker has its own copy): a few MB of arrays.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from supportd.domain.classify import classify, rule_match, rules_from, rules_only
from supportd.domain.model import NaiveBayes
from supportd.errors import ConfigError

NO_MODEL = "none"  # classification.model = "none": keyword rules only


def shipped_model() -> Path:
    return Path(str(files("supportd"))) / "data" / "classifier.json"


@lru_cache(maxsize=4)
def load_model(path: str = "") -> NaiveBayes:
    """The model at `path` ("" = the one shipped in the package); ConfigError names it."""
    where = Path(path) if path else shipped_model()
    try:
        return NaiveBayes.from_dict(json.loads(where.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"classification.model: cannot use {where}: {exc}") from None


Overrides = tuple[tuple[str, tuple[str, ...]], ...]


def overrides_key(rules: Mapping[str, Sequence[str]] | None) -> Overrides:
    return tuple(sorted((k, tuple(v)) for k, v in (rules or {}).items()))


@lru_cache(maxsize=8)
def classifier(overrides: Overrides = (), model: str = "") -> Callable[[str, str], str]:
    """(subject, text) -> category, as configured."""
    own = rules_only(dict(overrides)) if overrides else None
    if model == NO_MODEL:
        rules = rules_from(dict(overrides))
        return lambda subject, text: classify(subject, text, rules)
    trained = load_model(model)

    def decide(subject: str, text: str) -> str:
        if own is not None:
            hit = rule_match(subject, text, own)
            if hit is not None:
                return hit
        return trained.predict(subject, text).category

    return decide
