"""The shipped classifier, and the Naive Bayes it is made of (training, abstaining, report)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supportd.adapters.modelfile import classifier, load_model, shipped_model
from supportd.domain.classify import CATEGORIES
from supportd.domain.model import NaiveBayes, choose_thresholds, features, report, train

# Clear cases, written for this test (not taken from any data set).
CLEAR = {
    "installation": [
        (
            "Install fails",
            "When I upload the wperp zip in Plugins > Add New it says the "
            "package could not be installed. PHP 8.1, WordPress 6.4.",
        ),
        ("", "How to install the pro version after buying? I have the free plugin active."),
    ],
    "configuration": [
        (
            "Leave policy settings",
            "Where do I set the number of annual leave days per "
            "year and the fiscal year start in the HR settings?",
        ),
        (
            "",
            "How can I configure the email notification settings so the manager gets the "
            "leave request email?",
        ),
    ],
    "usage": [
        ("how to", "How do I add a new employee and assign him to a department?"),
        ("", "How to create an invoice for a customer and record the payment in accounting?"),
    ],
    "customization": [
        (
            "custom field",
            "Can you add a custom field for blood group in the employee profile "
            "and change the payslip PDF design for us?",
        ),
        (
            "",
            "Is it possible to modify the invoice template layout with our own design and "
            "colors? We want a custom version.",
        ),
    ],
    "third_party": [
        (
            "conflict",
            "Since I activated WooCommerce and Elementor the ERP dashboard is blank. "
            "When I deactivate WooCommerce it works.",
        ),
        (
            "",
            "The SMTP plugin from another company does not send the mails, my hosting "
            "support says it is your problem.",
        ),
    ],
    "presales": [
        (
            "pricing",
            "Before we buy: what is the price of the pro license for 5 sites and "
            "does it include payroll?",
        ),
        (
            "",
            "Do you have a discount or a trial? I want to compare the free and pro plans "
            "before purchase.",
        ),
    ],
    "account": [
        (
            "license",
            "My license key says activation limit reached, please reset it. I "
            "renewed my subscription last week.",
        ),
        ("refund", "I want a refund for my purchase and the invoice of my payment."),
    ],
    "bug": [
        (
            "error",
            "PHP Fatal error: Uncaught TypeError in includes/hrm/class-employee.php "
            "on line 223 after updating to the latest version.",
        ),
        (
            "",
            "The payroll calculation is wrong after the update, the net pay is negative and "
            "the save button does nothing.",
        ),
    ],
    "other": [
        ("Thank you", "Just wanted to say thanks, great plugin and great team!"),
        ("guest post", "We offer SEO backlinks and guest posts on high authority websites."),
    ],
}


@pytest.mark.parametrize("category", CATEGORIES)
def test_shipped_model_gets_clear_cases_right(category: str) -> None:
    model = load_model()
    for subject, text in CLEAR[category]:
        assert model.predict(subject, text).predicted == category, (subject, text)


def test_shipped_model_file_is_a_valid_model() -> None:
    data = json.loads(shipped_model().read_text(encoding="utf-8"))
    model = NaiveBayes.from_dict(data)
    assert set(model.categories) == set(CATEGORIES)
    assert set(model.thresholds) == {"customization", "third_party", "presales", "account"}


def test_below_the_threshold_a_declining_category_falls_back_to_other() -> None:
    rows = [(s, t, c) for c, cases in CLEAR.items() for s, t in cases] * 3
    model = train(rows, min_count=1)
    subject, text = CLEAR["customization"][0]
    assert model.predict(subject, text).category == "customization"
    model.thresholds = {"customization": 1.01}  # unreachable: the model must abstain
    prediction = model.predict(subject, text)
    assert (prediction.predicted, prediction.category) == ("customization", "other")


def test_a_model_survives_its_json_form() -> None:
    rows = [(s, t, c) for c, cases in CLEAR.items() for s, t in cases] * 2
    model = train(rows, min_count=1)
    model.thresholds = {"presales": 0.5}
    again = NaiveBayes.from_dict(json.loads(json.dumps(model.to_dict())))
    for subject, text, _ in rows:
        a, b = model.predict(subject, text), again.predict(subject, text)
        assert a.category == b.category and abs(a.confidence - b.confidence) < 1e-3


def test_a_bad_model_file_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a supportd classifier model"):
        NaiveBayes.from_dict({"format": "other"})


def test_thresholds_keep_the_target_precision() -> None:
    # 10 customization guesses: the 4 least confident are wrong.
    predictions = [("customization", "customization", 0.9 - i / 100) for i in range(6)]
    predictions += [("usage", "customization", 0.5 - i / 100) for i in range(4)]
    assert choose_thresholds(predictions, 0.95)["customization"] == pytest.approx(0.85)


def test_report_counts_precision_recall_and_the_confusion_matrix() -> None:
    per, confusion, macro = report([("bug", "bug"), ("bug", "usage"), ("usage", "usage")])
    assert per["bug"][:2] == (1.0, 0.5) and per["usage"][:2] == (0.5, 1.0)
    assert confusion["bug"]["usage"] == 1
    assert macro == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_operator_rules_win_over_the_model() -> None:
    decide = classifier((("presales", ("angebot",)),), "")
    assert decide("Angebot", "Bitte ein Angebot für 3 Lizenzen") == "presales"
    subject, text = CLEAR["bug"][0]
    assert decide(subject, text) == "bug"  # no rule matches: the model decides


# Text made of what the tokenizer cares about: words, digits, apostrophes (both kinds),
# quoted lines, non-ASCII letters, punctuation and line breaks.
_PIECES = st.sampled_from(
    ["install", "plugin", "invoice", "don't", "it’s", "rock'n'roll", "v2", "9am", "é", "İ",
     "ß", "K", "_", "-", ".", ",", " ", "  ", "\n", "\n> quoted install\n", "On Mon wrote:\n"]
)  # fmt: skip
_TEXT = st.lists(_PIECES, max_size=300).map("".join)


# A model whose vocabulary holds every feature of the pieces above, so that a lookup that
# missed or invented one would show.
_MODEL = train(
    [
        (p, f"{p} {q} {p}", category)
        for category in CATEGORIES
        for p in ["install", "plugin", "don't", "it’s", "rock'n'roll", "v2", "9am", "é", "İ", "K"]
        for q in ["invoice", "ß", "rock'n", "roll", "i"]
    ],
    min_count=1,
)


@given(_TEXT, _TEXT)
def test_indexes_are_the_known_features_of_a_mail(subject: str, text: str) -> None:
    """The scoring's lookup by token and token pair finds exactly the vocabulary entries that
    features() names, whatever the text (the model is scored on those, nothing else)."""
    model = _MODEL
    expected = sorted(model.vocabulary[f] for f in features(subject, text) if f in model.vocabulary)
    assert model.indexes(subject, text) == expected


def test_indexes_match_features_on_the_shipped_model_and_clear_cases() -> None:
    model = load_model()
    for cases in CLEAR.values():
        for subject, text in cases:
            want = sorted(
                model.vocabulary[f] for f in features(subject, text) if f in model.vocabulary
            )
            assert want and model.indexes(subject, text) == want
