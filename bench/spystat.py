"""Sum a py-spy raw (collapsed-stack) file by function: where the samples went.

    .venv/bin/python bench/spystat.py FILE [--under FRAME] [--top 40] [--self]

Each line of FILE is `frame;frame;...;frame COUNT` (py-spy record -f raw). Prints each
function's inclusive share (on the stack at all) or, with --self, its own share (the top
frame). --under FRAME keeps only the stacks that pass through a frame containing FRAME and
reports what lies below it. A reading aid for bench/ingest.py --spy, not a test.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# py-spy's frames read "function (file.py:line)"; the line number is left out so that a
# function is one entry however many lines of it were sampled.
_LINE = re.compile(r":\d+\)$")


def frames_of(stack: str) -> list[str]:
    return [_LINE.sub(")", frame) for frame in stack.split(";")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--under", help="only stacks through a frame containing this text")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--self", action="store_true", help="own time, not inclusive")
    args = parser.parse_args()

    inclusive: Counter[str] = Counter()
    total = 0
    for line in args.file.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = frames_of(stack)
        if args.under:
            hits = [i for i, f in enumerate(frames) if args.under in f]
            if not hits:
                continue
            frames = frames[hits[0] :]
        total += count
        if args.self:
            inclusive[frames[-1]] += count
        else:
            for frame in set(frames):
                inclusive[frame] += count
    print(f"{total} samples" + (f" under {args.under!r}" if args.under else ""))
    for frame, count in inclusive.most_common(args.top):
        print(f"{100 * count / max(total, 1):6.1f} %  {count:7d}  {frame[:150]}")


if __name__ == "__main__":
    main()
