"""Public holidays for the business calendar, from the `holidays` package, one country only.

`holidays.country_holidays("BD")` imports the module of every country the package knows
(its `holidays.countries` package imports all 251 of them) to find one: 8 MiB of the
daemon's resident memory (issue 9's budget) and 0.1 s of start-up, for one set of dates.
This loads only the configured country's module, found through the package's own
registry, and falls back to `country_holidays()` whenever it cannot (a country whose module
imports another country's, a package that changed its layout): the same holidays either
way, only the memory differs.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def country_holidays(code: str, subdiv: str | None = None) -> Any:
    """The `holidays` object of a country (ISO 3166 code), holidays expanded per year as
    asked. Raises NotImplementedError for a code the package does not know."""
    import holidays

    entity = _single_country(Path(holidays.__file__).parent, code.strip().upper())
    if entity is not None:
        return entity(subdiv=subdiv)
    return holidays.country_holidays(code, subdiv=subdiv)


def _single_country(package: Path, code: str) -> Any | None:
    """The country's class, loaded from its module alone; None to use the package's way."""
    try:
        from holidays.registry import COUNTRIES
    except ImportError:
        return None
    for module, names in COUNTRIES.items():
        if code in names[1:3]:  # (class name, alpha-2, alpha-3, aliases...)
            return _load(package, module, names[0])
    return None


def _load(package: Path, module: str, class_name: str) -> Any | None:
    name = f"holidays.countries.{module}"
    loaded = sys.modules.get(name)
    if loaded is None:
        spec = importlib.util.spec_from_file_location(name, package / "countries" / f"{module}.py")
        if spec is None or spec.loader is None:
            return None
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded  # as an import would: pickling finds the class by name
        try:
            spec.loader.exec_module(loaded)
        except Exception as exc:  # a layout this does not know: the package's own way
            del sys.modules[name]
            log.debug("holidays: cannot load %s alone (%s); loading every country", name, exc)
            return None
    return getattr(loaded, class_name, None)
