"""Process-wide malloc settings (adapters/process.tune_malloc): what it asks glibc for, and
that an operator's MALLOC_* environment variables win."""

from __future__ import annotations

import ctypes
import sys
from typing import Any

import pytest

from supportd.adapters import process


class _Libc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return 1


@pytest.fixture
def libc(monkeypatch: pytest.MonkeyPatch) -> _Libc:
    fake = _Libc()
    monkeypatch.setattr(ctypes, "CDLL", lambda name: fake)
    monkeypatch.setattr(sys, "platform", "linux")
    for name in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    return fake


def test_one_arena_and_fixed_thresholds(libc: _Libc) -> None:
    process.tune_malloc()
    assert libc.calls == [(-8, 1), (-3, 128 * 1024), (-1, 128 * 1024)]


@pytest.mark.parametrize(
    "variable, parameter",
    [("MALLOC_ARENA_MAX", -8), ("MALLOC_MMAP_THRESHOLD_", -3), ("MALLOC_TRIM_THRESHOLD_", -1)],
)
def test_the_environment_wins(
    libc: _Libc, monkeypatch: pytest.MonkeyPatch, variable: str, parameter: int
) -> None:
    monkeypatch.setenv(variable, "4")
    process.tune_malloc()
    assert parameter not in [p for p, _ in libc.calls]
    assert len(libc.calls) == 2


def test_nothing_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libc(name: Any) -> Any:
        raise OSError("no such library")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    monkeypatch.setattr(sys, "platform", "linux")
    process.tune_malloc()  # no error
