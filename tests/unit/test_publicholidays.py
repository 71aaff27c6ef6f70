"""Public holidays from one country's module: the same dates as the package's own lookup."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

import holidays
import pytest

from supportd.adapters.publicholidays import country_holidays
from supportd.bootstrap import build_calendar
from supportd.config import HoursSettings
from supportd.errors import ConfigError

YEARS = range(2024, 2031)


def _dates(entity: object) -> dict[date, str]:
    for year in YEARS:  # expanded per year, as the calendar asks
        entity.get(date(year, 6, 1))  # type: ignore[attr-defined]
    return dict(entity.items())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("code", "subdiv"),
    [
        ("BD", None),
        ("bgd", None),
        ("US", "CA"),
        ("DE", "BY"),
        ("GB", "SCT"),
        ("IN", None),
        ("AS", None),
    ],  # American Samoa's module imports the United States' module
)
def test_same_holidays_as_the_package(code: str, subdiv: str | None) -> None:
    expected = holidays.country_holidays(code.upper(), subdiv=subdiv, years=YEARS)
    assert _dates(country_holidays(code, subdiv=subdiv)) == dict(expected.items())


def test_unknown_country_is_not_implemented() -> None:
    with pytest.raises(NotImplementedError):
        country_holidays("XX")


def test_unknown_country_in_the_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"hours\.holidays_country"):
        build_calendar(HoursSettings(holidays_country="XX"))


def test_only_the_configured_country_is_loaded() -> None:
    # A fresh interpreter: the package's own lookup imports every country's module.
    probe = (
        "import sys\n"
        "from supportd.adapters.publicholidays import country_holidays\n"
        "h = country_holidays('BD')\n"
        "assert h.get('2026-12-16') == 'Victory Day', h.get('2026-12-16')\n"
        "print(sorted(m for m in sys.modules if m.startswith('holidays.countries')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['holidays.countries.bangladesh']"
