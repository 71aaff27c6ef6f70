"""Precision and recall of the classifier on the labelled set in tests/data.

.venv/bin/python bench/classify.py
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from supportd.domain.classify import CATEGORIES, classify

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SETS = {
    "development set 1 (rules written against it)": DATA / "classification.jsonl",
    "development set 2 (held out at first, then used to widen the rules)": DATA
    / "classification_dev2.jsonl",
    "blind set (written after the rules, never tuned on)": DATA / "classification_blind.jsonl",
}


def evaluate(
    path: Path,
) -> tuple[dict[str, tuple[float, float, int]], float, list[tuple[str, str, str]]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    truth = Counter()
    predicted = Counter()
    correct = Counter()
    mistakes = []
    for row in rows:
        guess = classify(row["subject"], row["text"])
        truth[row["category"]] += 1
        predicted[guess] += 1
        if guess == row["category"]:
            correct[guess] += 1
        else:
            mistakes.append((row["category"], guess, row["subject"]))
    report = {}
    for category in CATEGORIES:
        precision = correct[category] / predicted[category] if predicted[category] else 0.0
        recall = correct[category] / truth[category] if truth[category] else 0.0
        report[category] = (precision, recall, truth[category])
    return report, sum(correct.values()) / len(rows), mistakes


def main() -> None:
    for title, path in SETS.items():
        report, accuracy, mistakes = evaluate(path)
        print(f"\n{title}")
        print(f"{'category':<15}{'precision':>10}{'recall':>8}{'n':>5}")
        for category, (precision, recall, n) in report.items():
            print(f"{category:<15}{precision:>10.2f}{recall:>8.2f}{n:>5}")
        print(f"accuracy {accuracy:.2f} on {sum(n for *_, n in report.values())} mails")
        for want, got, subject in mistakes:
            print(f"  {want} -> {got}: {subject}")


if __name__ == "__main__":
    main()
