"""The parse worker on the second core, and what happens when it dies."""

from __future__ import annotations

import os
import signal

from supportd.adapters.parsepool import ParseFailure, ParsePool, parse_serial
from supportd.domain.mail import ParsedMail
from tests.support.mail import make_mail


def test_pool_parses_like_the_serial_parser() -> None:
    raws = [make_mail(message_id=f"<p{n}@x>", subject=f"s{n}") for n in range(20)]
    pool = ParsePool(1)
    try:
        parsed = pool.parse_async(raws)()
    finally:
        pool.close()
    assert parsed == parse_serial(raws)
    assert all(isinstance(p, ParsedMail) for p in parsed)


def test_a_dead_worker_costs_time_not_mail() -> None:
    raws = [make_mail(message_id=f"<d{n}@x>") for n in range(5)]
    pool = ParsePool(1)
    try:
        assert len(pool.parse_async(raws)()) == 5
        executor = pool._executor()
        for pid in list(executor._processes):  # the worker dies between batches
            os.kill(pid, signal.SIGKILL)
        parsed = pool.parse_async(raws)()
        assert [p.message_id for p in parsed if isinstance(p, ParsedMail)] == [
            f"<d{n}@x>" for n in range(5)
        ]
        assert len(pool.parse_async(raws)()) == 5  # and a new worker takes over
    finally:
        pool.close()


def test_parse_failures_are_returned_not_raised(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from supportd.adapters import mailparse

    def broken(raw: bytes) -> ParsedMail:
        raise LookupError("codec exploded")

    monkeypatch.setattr(mailparse, "parse", broken)
    [result] = parse_serial([b"x"])
    assert isinstance(result, ParseFailure) and "codec exploded" in str(result)
