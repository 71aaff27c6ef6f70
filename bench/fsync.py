"""What this disk's fsync costs a batch commit: SQLite in WAL mode, FULL against NORMAL.

    .venv/bin/python bench/fsync.py [--batches 50] [--rows 100] [--row-bytes 25000]

The daemon commits each FETCH batch of a backlog with synchronous=NORMAL and only the
drain's last one with FULL (services/ingest, issue 9's tenth session): how much that
spares depends on the disk, which this prints: the ninth session's disk took 22 ms for a
batch's FULL commit; on the tenth's, FULL cost 0.4 ms more than NORMAL at one hour and
made whole runs 11 % slower at another. Alternates the two modes twice; wall and CPU
milliseconds per batch. Not a test.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--row-bytes", type=int, default=25_000)
    args = parser.parse_args()
    blob = os.urandom(args.row_bytes)
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as folder:
        for round_, level in enumerate(("FULL", "NORMAL", "FULL", "NORMAL")):
            conn = sqlite3.connect(f"{folder}/{round_}.db", isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={level}")
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.batches):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO t (b) VALUES (?)", [(blob,)] * args.rows)
                conn.execute("COMMIT")
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            conn.close()
            print(
                f"{level:6} {wall / args.batches * 1e3:6.1f} ms a batch "
                f"({cpu / args.batches * 1e3:.1f} ms CPU)"
            )


if __name__ == "__main__":
    main()
