"""The classifier on labelled mail: quality, speed and memory.

    .venv/bin/python bench/classify.py [--model PATH]

For the shipped model (or --model): per-category precision, recall, F1 and the confusion
matrix on the blind set (data/classification/blind.jsonl, never tuned on) and on the older
sets in tests/data; cross-validated figures on the training data; the precision of the four
declining/redirecting categories; microseconds per mail on the first 800 characters of the
customer's words; and the resident memory the model adds to a process.
Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from supportd.adapters.modelfile import load_model  # noqa: E402
from supportd.domain.classify import classify, rules_from  # noqa: E402
from supportd.domain.model import CONSEQUENTIAL, report  # noqa: E402
from supportd.services.training import evaluate  # noqa: E402

DATA = ROOT / "data" / "classification"
SETS = {
    "blind set (data/classification/blind.jsonl, never tuned on)": DATA / "blind.jsonl",
    "old blind set (tests/data/classification_blind.jsonl)": ROOT
    / "tests"
    / "data"
    / "classification_blind.jsonl",
}


def rows_of(path: Path) -> list[tuple[str, str, str]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            out.append((item.get("subject", ""), item["text"], item["category"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="")
    args = parser.parse_args()
    probe = (
        "import resource, sys; sys.path.insert(0, 'src');"
        "from supportd.adapters.modelfile import load_model;"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        f"load_model({args.model!r});"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)"
    )
    added = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    model = load_model(args.model)
    print(
        f"model: {len(model.vocabulary):,} features, {len(model.categories)} categories; "
        f"loading it adds {int(added.stdout) / 1024:.1f} MiB of RSS to a process"
    )
    print("abstain thresholds: " + ", ".join(f"{k} {v:.2f}" for k, v in model.thresholds.items()))
    rules = rules_from()
    for title, path in SETS.items():
        if not path.exists():
            continue
        rows = rows_of(path)
        print(f"\n== {title}: {len(rows)} mails")
        print(evaluate(model, rows))
        pairs = [(c, model.predict(s, t).category) for s, t, c in rows]
        per, _, _ = report(pairs)
        print(
            "precision of the declining/redirecting categories: "
            + ", ".join(f"{c} {per[c][0]:.2f}" for c in CONSEQUENTIAL)
        )
        _, _, macro_rules = report([(c, classify(s, t, rules)) for s, t, c in rows])
        print(f"(keyword rules alone on this set: macro-F1 {macro_rules:.3f})")
        samples = rows * max(1, 2000 // len(rows))
        started = time.perf_counter()
        for s, t, _ in samples:
            model.predict(s, t)
        per_mail = (time.perf_counter() - started) / len(samples)
        print(f"speed: {per_mail * 1e6:.0f} µs per mail ({len(samples)} predictions)")


if __name__ == "__main__":
    main()
