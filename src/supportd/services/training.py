"""Training and evaluating the classifier from labelled mail (JSON Lines rows)."""

from __future__ import annotations

from collections.abc import Sequence

from supportd.domain.model import NaiveBayes, choose_thresholds, cross_validate, report, train

Row = tuple[str, str, str]  # (subject, text, category)


def build(rows: Sequence[Row], *, target_precision: float = 0.95, folds: int = 5) -> NaiveBayes:
    """A model on all `rows`, with abstain thresholds chosen by cross-validation on them:
    per consequential category, the lowest confidence that keeps its precision at
    `target_precision` on mail the fold's model never saw."""
    predictions = cross_validate(rows, folds=folds)
    model = train(rows)
    model.thresholds = choose_thresholds(predictions, target_precision)
    return model


def evaluate(model: NaiveBayes, rows: Sequence[Row]) -> str:
    """Per-category precision, recall and F1, macro-F1, and the confusion matrix, as text."""
    pairs = [(category, model.predict(s, t).category) for s, t, category in rows]
    per, confusion, macro = report(pairs)
    accuracy = sum(a == b for a, b in pairs) / len(pairs) if pairs else 0.0
    lines = [f"{'category':<15}{'precision':>10}{'recall':>8}{'F1':>7}{'n':>6}"]
    for category, (p, r, f, n) in per.items():
        lines.append(f"{category:<15}{p:>10.2f}{r:>8.2f}{f:>7.2f}{n:>6}")
    lines.append(f"macro-F1 {macro:.3f}, accuracy {accuracy:.3f} on {len(pairs)} mails")
    names = list(per)
    short = [n[:6] for n in names]
    lines.append("")
    lines.append("confusion (rows: truth, columns: predicted)")
    lines.append(f"{'':<15}" + "".join(f"{s:>7}" for s in short))
    for truth in names:
        lines.append(f"{truth:<15}" + "".join(f"{confusion[truth][g]:>7}" for g in names))
    return "\n".join(lines)
