"""How exactly new_words strips real client replies: the shared corpus's reply bodies.

.venv/bin/python bench/replies.py

Rows of ../shared/corpus/MANIFEST.tsv with kind=body_fragment whose expected_file is an
extracted expectation (not a whole upstream test file) give a reply body and the visible
text the upstream parser's tests expect. Compared after normalising whitespace (each
line's trailing spaces, and the whole text stripped).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

from supportd.adapters.replytext import new_words

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"

# Why the known misses miss: each is the upstream expectation dropping the sender's own
# sign-off, which the library's parse_reply keeps and so does new_words.
REASONS = {
    "crisp-email-reply-parser/fixtures/email_with_regards.txt": (
        "upstream's first fragment ends before 'Regards,\\nJohn Doe\\nCEO @ Acme !' (its "
        "signature rule); we keep the sender's sign-off"
    ),
    "github-email_reply_parser/emails/email_1_1.txt": (
        "upstream's first fragment ends before the '-Abhishek Kona' sign-off (its '-name' "
        "signature rule); we keep it, as crisp's expectation for the same mail (email_1) does"
    ),
}


def normalise(text: str) -> str:
    """Each line's trailing spaces and the whole text stripped."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip()


def fragments(corpus: Path = CORPUS) -> list[tuple[str, str, str]]:
    """(name, body, expected) for every reply body with an extracted expected text."""
    manifest = corpus / "MANIFEST.tsv"
    if not manifest.exists():
        return []
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    found = []
    for row in rows:
        expected = row["expected_file"]
        # Some rows point at a whole upstream test file (test.js, *_test.rb): those assert
        # fragment counts and regexes, not one expected text, so they are not scored.
        if row["kind"] != "body_fragment" or ".expected" not in expected:
            continue
        body = (corpus / row["local_file"]).read_text(encoding="utf-8", errors="replace")
        want = (corpus / expected).read_text(encoding="utf-8", errors="replace")
        found.append((row["local_file"], body, want))
    return found


def unscored(corpus: Path = CORPUS) -> tuple[list[str], int]:
    """Reply bodies without an extracted expectation, and how many name a test file."""
    manifest = corpus / "MANIFEST.tsv"
    if not manifest.exists():
        return [], 0
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["kind"] == "body_fragment"]
    others = [r for r in rows if ".expected" not in r["expected_file"]]
    return [r["local_file"] for r in others], sum(1 for r in others if r["expected_file"])


def score(items: list[tuple[str, str, str]]) -> tuple[int, list[tuple[str, str, str]]]:
    """Exact count and the misses as (name, expected, got)."""
    misses = []
    for name, body, want in items:
        got = new_words(body)
        if normalise(got) != normalise(want):
            misses.append((name, normalise(want), normalise(got)))
    return len(items) - len(misses), misses


def _first_difference(want: str, got: str) -> str:
    wanted, gotten = want.split("\n"), got.split("\n")
    for index, (a, b) in enumerate(zip(wanted, gotten, strict=False)):
        if a != b:
            return f"line {index + 1}: expected {a[:60]!r}, got {b[:60]!r}"
    if len(wanted) > len(gotten):
        return f"missing from line {len(gotten) + 1}: {wanted[len(gotten)][:60]!r}"
    extra = "\n".join(gotten[len(wanted) :]).strip()
    return f"extra after line {len(wanted)}: {extra[:60]!r}"


def main() -> None:
    items = fragments()
    if not items:
        print(f"corpus not found at {CORPUS}")
        return
    exact, misses = score(items)
    print(f"reply bodies with an expected text: {len(items)}")
    print(f"stripped exactly: {exact} ({exact / len(items):.1%})")
    for name, want, got in misses:
        reason = REASONS.get(name, "")
        print(f"  miss {name}: {_first_difference(want, got)}")
        if reason:
            print(f"       reason: {reason}")

    bodies = [body for _, body, _ in items]
    rounds = 20
    started = time.perf_counter()
    for _ in range(rounds):
        for body in bodies:
            new_words(body)
    mean = (time.perf_counter() - started) / (rounds * len(bodies)) * 1e6
    print(f"new_words: mean {mean:.0f} µs per reply ({rounds} rounds of {len(bodies)})")

    others, test_files = unscored()
    longest = 0.0
    for name in others:
        body = (CORPUS / name).read_text(encoding="utf-8", errors="replace")
        started = time.perf_counter()
        new_words(body)
        longest = max(longest, time.perf_counter() - started)
    print(
        f"not scored: {len(others)} reply bodies ({test_files} whose upstream test asserts "
        f"fragment counts or regexes, {len(others) - test_files} with no expectation); "
        f"slowest of them {longest * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
