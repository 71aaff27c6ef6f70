"""`supportd check`: one pass/fail line per dependency, exit 1 on any failure."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from supportd.errors import SupportdError

if TYPE_CHECKING:
    from supportd.adapters.imap import ImapSource
    from supportd.config import Settings


def run_checks(config_path: Path | None, echo: Callable[[str], None]) -> bool:
    from supportd.adapters.db import schema
    from supportd.adapters.smtp import probe
    from supportd.bootstrap import build_engine, build_source
    from supportd.config import default_config_path, load_settings

    path = config_path or default_config_path()
    try:
        settings = load_settings(path)
    except SupportdError as exc:
        echo(f"FAIL config: {exc}")
        return False
    echo(f"ok   config: {path}")
    ok = True

    from supportd.bootstrap import build_replies

    try:
        replies = build_replies(settings)
        faq = replies.composer.faq.entries  # type: ignore[attr-defined]
        echo(
            f"ok   replies: templates render, {len(faq)} FAQ entries, support hours "
            f"{replies.hours.days[0]} {settings.hours.open:%H:%M}-{settings.hours.close:%H:%M} "
            f"{settings.hours.timezone}"
        )
    except SupportdError as exc:
        echo(f"FAIL replies: {exc}")
        ok = False

    try:
        engine = build_engine(settings)
        schema.require_current(engine)
        echo(
            f"ok   database: {engine.url.render_as_string(hide_password=True)} "
            f"at revision {schema.current_revision(engine)}"
        )
        engine.dispose()
    except SupportdError as exc:
        echo(f"FAIL database: {exc}")
        ok = False
    except Exception as exc:
        echo(f"FAIL database: {settings.database.url.split('@')[-1]}: {type(exc).__name__}: {exc}")
        ok = False

    source = build_source(settings)
    try:
        uidvalidity = source.open()
        count = len(source.uids_after(0))
        echo(f"ok   imap: {source.key} (UIDVALIDITY {uidvalidity}, {count} message(s))")
        ok = _check_processed_folder(source, echo) and ok
    except SupportdError as exc:
        echo(f"FAIL imap: {exc}")
        ok = False
    finally:
        source.close()

    ok = _check_owner(settings, source.key, echo) and ok

    try:
        echo(f"ok   smtp: {probe(settings.smtp)}")
    except SupportdError as exc:
        echo(f"FAIL smtp: {exc}")
        ok = False
    return ok


def _check_processed_folder(source: ImapSource, echo: Callable[[str], None]) -> bool:
    configured = source.settings.processed_folder
    if not configured:
        return True
    method = source.archive_method()
    where = source.processed_folder
    if where != configured:
        where = f"{where} (the server's personal namespace prefix applied to {configured!r})"
    if not method:
        echo(
            f"FAIL imap: processed_folder {where}: the server offers neither MOVE nor UIDPLUS; "
            "a plain EXPUNGE would also remove other clients' \\Deleted mail, so supportd "
            "refuses to move mail there (leave imap.processed_folder empty)"
        )
        return False
    echo(f"ok   imap: processed mail goes to {where} by {method}")
    return True


def _check_owner(settings: Settings, mailbox: str, echo: Callable[[str], None]) -> bool:
    from supportd.bootstrap import build_engine, build_lock

    try:
        engine = build_engine(settings)
        try:
            holder = build_lock(engine, mailbox, settings).owner()
        finally:
            engine.dispose()
    except Exception as exc:
        echo(f"FAIL owner: cannot tell who serves {mailbox}: {type(exc).__name__}: {exc}")
        return False
    if holder.startswith("unknown ("):  # the lock's database could not be asked
        echo(f"FAIL owner: cannot tell who serves {mailbox}: {holder[9:-1]}")
        return False
    if holder:
        echo(
            f"ok   owner: {mailbox} is served by {holder}; "
            "a daemon started now would wait as its standby"
        )
    else:
        echo(f"ok   owner: nobody serves {mailbox} now (the next daemon takes it)")
    return True
