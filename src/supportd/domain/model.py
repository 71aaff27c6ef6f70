"""A trained classifier in pure Python: multinomial Naive Bayes over the words and word pairs
of the customer's own words (and the subject's words), with a confidence to abstain on.

Why Naive Bayes: measured here on a small labelled set it did as well as scikit-learn's
linear models, it trains in a second without numpy, and its model is a table that loads
as a few arrays (a few MB of RSS) and scores a mail in well under a millisecond.
"""

from __future__ import annotations

import itertools
import math
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from supportd.domain.classify import CATEGORIES, own_words

FORMAT = "supportd-nb-1"
_TOKEN = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
# Categories whose paragraph declines or redirects: a wrong one costs more than "other".
CONSEQUENTIAL = ("customization", "third_party", "presales", "account")


FEATURE_CHARACTERS = 800  # of the customer's own words (own_words' limit)


def features(subject: str, text: str, limit: int = FEATURE_CHARACTERS) -> set[str]:
    """The feature set of a mail: subject words, body words and word pairs.

    Character 4-grams were tried for misspellings: with Naive Bayes they cost 4 points of
    cross-validated macro-F1 (0.79 against 0.83), as correlated features it double-counts.
    """
    subject_words, words = _tokens(subject, text, limit)
    found = {"s:" + w for w in subject_words}
    found.update("w:" + w for w in words)
    found.update("w:" + w for w in subject_words)
    found.update(f"b:{a}_{b}" for a, b in itertools.pairwise(words))
    return found


def _tokens(
    subject: str, text: str, limit: int = FEATURE_CHARACTERS
) -> tuple[list[str], list[str]]:
    """The subject's words and those of the customer's own first `limit` characters."""
    return (
        _TOKEN.findall((subject or "").lower()),
        _TOKEN.findall(own_words(text or "", limit).lower()),
    )


@dataclass(frozen=True)
class Prediction:
    category: str  # after abstaining
    predicted: str  # the model's best guess
    confidence: float  # posterior probability of the best guess (0..1)


class NaiveBayes:
    """Log-probabilities per category in one array each, indexed through a vocabulary."""

    def __init__(
        self,
        categories: Sequence[str],
        priors: Sequence[float],
        vocabulary: Mapping[str, int],
        weights: Sequence[Sequence[float]],
        unknown: Sequence[float],
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        self.categories = tuple(categories)
        self.priors = tuple(priors)
        self.vocabulary = dict(vocabulary)
        self.weights = [array("d", w) for w in weights]
        self.unknown = tuple(unknown)
        self.thresholds = dict(thresholds or {})
        # The vocabulary by kind, keyed by what the mail's tokens give without building a
        # feature's name: a subject word, a body word, a pair of body words (pairwise's own
        # tuple). Naming every word and pair ("w:...", "b:a_b") was 60 % of scoring a mail
        # (issue 9's profile); tokens hold no "_", so a pair's name splits back unambiguously.
        self._subject_words: dict[str, int] = {}
        self._words: dict[str, int] = {}
        self._pairs: dict[tuple[str, ...], int] = {}
        for name, i in self.vocabulary.items():
            kind, _, rest = name.partition(":")
            if kind == "s":
                self._subject_words[rest] = i
            elif kind == "w":
                self._words[rest] = i
            elif kind == "b":
                self._pairs[tuple(rest.split("_", 1))] = i

    def indexes(self, subject: str, text: str) -> list[int]:
        """The vocabulary indexes of a mail's features (features() that the model knows),
        in ascending order, so that the sums below do not depend on hashing."""
        subject_words, words = _tokens(subject, text)
        found: set[int | None] = set(map(self._subject_words.get, subject_words))
        found.update(map(self._words.get, words))
        found.update(map(self._words.get, subject_words))
        found.update(map(self._pairs.get, itertools.pairwise(words)))
        found.discard(None)
        return sorted(found)  # type: ignore[arg-type]

    def scores(self, subject: str, text: str) -> list[float]:
        index = self.indexes(subject, text)
        return [
            prior + sum(map(w.__getitem__, index))
            for prior, w in zip(self.priors, self.weights, strict=True)
        ]

    def predict(self, subject: str, text: str) -> Prediction:
        scores = self.scores(subject, text)
        top = max(scores)
        total = sum(math.exp(s - top) for s in scores)
        best = scores.index(top)
        category = self.categories[best]
        confidence = 1.0 / total
        threshold = self.thresholds.get(category, self.thresholds.get("*", 0.0))
        final = category if confidence >= threshold else "other"
        return Prediction(final, category, confidence)

    def to_dict(self) -> dict[str, Any]:
        ordered = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        return {
            "format": FORMAT,
            "categories": list(self.categories),
            "priors": [round(p, 5) for p in self.priors],
            "features": ordered,
            "weights": [[round(v, 4) for v in w] for w in self.weights],
            "unknown": [round(u, 4) for u in self.unknown],
            "thresholds": self.thresholds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NaiveBayes:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a supportd classifier model (format {data.get('format')!r})")
        categories = list(data["categories"])
        unknown_names = [c for c in categories if c not in CATEGORIES]
        if unknown_names:
            raise ValueError(f"unknown categories in the model: {', '.join(unknown_names)}")
        names = list(data["features"])
        weights = [list(w) for w in data["weights"]]
        if len(weights) != len(categories) or any(len(w) != len(names) for w in weights):
            raise ValueError("the model's weights do not match its categories and features")
        return cls(
            categories,
            data["priors"],
            {name: i for i, name in enumerate(names)},
            weights,
            data["unknown"],
            data.get("thresholds", {}),
        )


def train(
    rows: Iterable[tuple[str, str, str]],
    *,
    alpha: float = 0.5,
    min_count: int = 3,
    max_features: int = 40_000,
) -> NaiveBayes:
    """Multinomial NB with binary feature counts per mail, Laplace smoothing `alpha`.

    Features outside the vocabulary are ignored at prediction time, as usual for NB.
    """
    docs: dict[str, list[set[str]]] = {c: [] for c in CATEGORIES}
    for subject, text, category in rows:
        if category not in docs:
            raise ValueError(f"unknown category {category!r} (one of {', '.join(CATEGORIES)})")
        docs[category].append(features(subject, text))
    categories = [c for c in CATEGORIES if docs[c]]
    if not categories:
        raise ValueError("no training mail")
    document_frequency: Counter[str] = Counter()
    for category in categories:
        for found in docs[category]:
            document_frequency.update(found)
    kept = [f for f, n in document_frequency.most_common(max_features) if n >= min_count]
    vocabulary = {f: i for i, f in enumerate(sorted(kept))}
    total_docs = sum(len(docs[c]) for c in categories)
    priors, weights, unknown = [], [], []
    for category in categories:
        counts: Counter[str] = Counter()
        for found in docs[category]:
            counts.update(f for f in found if f in vocabulary)
        total = sum(counts.values()) + alpha * len(vocabulary)
        unknown.append(math.log(alpha / total))
        weights.append([math.log((counts[f] + alpha) / total) for f in vocabulary])
        priors.append(math.log(len(docs[category]) / total_docs))
    return NaiveBayes(categories, priors, vocabulary, weights, unknown)


def cross_validate(
    rows: Sequence[tuple[str, str, str]], folds: int = 5, **options: Any
) -> list[tuple[str, str, float]]:
    """(truth, predicted, confidence) for every row, each predicted by a model trained on
    the other folds (no abstaining: thresholds are chosen from these)."""
    out: list[tuple[str, str, float]] = [("", "", 0.0)] * len(rows)
    for k in range(folds):
        train_rows = [r for i, r in enumerate(rows) if i % folds != k]
        model = train(train_rows, **options)
        for i, (subject, text, category) in enumerate(rows):
            if i % folds == k:
                p = model.predict(subject, text)
                out[i] = (category, p.predicted, p.confidence)
    return out


def choose_thresholds(
    predictions: Sequence[tuple[str, str, float]], target_precision: float = 0.95
) -> dict[str, float]:
    """Per consequential category, the lowest confidence at which its precision on the
    cross-validated predictions reaches `target_precision` (below it: "other")."""
    chosen: dict[str, float] = {}
    for category in CONSEQUENTIAL:
        scored = sorted(
            ((conf, truth == category) for truth, guess, conf in predictions if guess == category),
            reverse=True,
        )
        threshold = 1.0
        right = 0
        for n, (confidence, correct) in enumerate(scored, start=1):
            right += correct
            if right / n >= target_precision:
                threshold = confidence
        chosen[category] = threshold if scored else 0.0
    return chosen


def report(
    pairs: Sequence[tuple[str, str]],
) -> tuple[dict[str, tuple[float, float, float, int]], dict[str, Counter[str]], float]:
    """Per category (precision, recall, F1, support), the confusion matrix (truth -> guess
    counts) and macro-F1, for (truth, guess) pairs."""
    confusion: dict[str, Counter[str]] = {c: Counter() for c in CATEGORIES}
    for truth, guess in pairs:
        confusion[truth][guess] += 1
    per: dict[str, tuple[float, float, float, int]] = {}
    for c in CATEGORIES:
        tp = confusion[c][c]
        predicted = sum(confusion[t][c] for t in CATEGORIES)
        actual = sum(confusion[c].values())
        p = tp / predicted if predicted else 0.0
        r = tp / actual if actual else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        per[c] = (p, r, f, actual)
    present = [c for c in CATEGORIES if per[c][3]]
    macro = sum(per[c][2] for c in present) / len(present) if present else 0.0
    return per, confusion, macro
