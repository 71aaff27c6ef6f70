from __future__ import annotations

import json
from pathlib import Path

import pytest

from supportd.domain.classify import CATEGORIES, classify, own_words, rules_from

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize(
    ("subject", "text", "category"),
    [
        ("Cannot install", "The installer stops after upload the zip.", "installation"),
        (
            "Please change the invoice design",
            "Can you customize the colours for us?",
            "customization",
        ),
        (
            "Conflict",
            "After WooCommerce update there is a conflict with another plugin.",
            "third_party",
        ),
        ("Refund", "Please refund my payment.", "account"),
        ("Before we buy", "Do you offer a discount for nonprofits?", "presales"),
        ("Fatal error", "Fatal error: Uncaught Error in erp.php", "bug"),
        ("Hello", "Thanks for the nice chat.", "other"),
    ],
)
def test_typical_mails(subject: str, text: str, category: str) -> None:
    assert classify(subject, text) == category


def test_quoted_history_does_not_count() -> None:
    text = "Thanks, that solved it.\n\nOn Mon, Support wrote:\n> Fatal error bug crash broken"
    assert "Fatal" not in own_words(text)
    assert classify("Re: question", text) == "other"


def test_rules_from_configuration_replace_a_category() -> None:
    rules = rules_from({"presales": [r"angebot"]})
    assert classify("Angebot bitte", "", rules) == "presales"
    assert classify("pricing", "", rules) != "presales"


def test_the_development_set_stays_classified() -> None:
    """A regression guard for the rules; bench/classify.py reports the blind set too."""
    rows = [json.loads(x) for x in (DATA / "classification.jsonl").read_text().splitlines() if x]
    assert len(rows) >= 60 and {r["category"] for r in rows} == set(CATEGORIES)
    right = sum(classify(r["subject"], r["text"]) == r["category"] for r in rows)
    assert right / len(rows) >= 0.9
