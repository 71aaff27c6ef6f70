"""The `supportd` command line (the external contract of DESIGN.md)."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from supportd.errors import SupportdError


class _Context:
    def __init__(self, config: Path | None) -> None:
        self.config_path = config

    def settings(self) -> Any:
        from supportd.config import load_settings

        return load_settings(self.config_path)


EX_TEMPFAIL = 75  # sysexits.h: another process owns the mailbox; try again later


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"supportd: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Configuration file (default: $SUPPORTD_CONFIG, else ./supportd.toml).",
)
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """supportd: an email support desk."""
    ctx.obj = _Context(config)


def _desk(
    ctx: click.Context, *, check_schema: bool = True, settings: Any = None, worker: Any = None
) -> Any:
    """The desk, from `settings` when the caller has read them already; `worker`: its first
    parse worker, started early (adapters/process.start_worker)."""
    from supportd.bootstrap import build_desk, configure_logging

    if settings is None:
        settings = ctx.obj.settings()
    configure_logging(settings.logging.level)
    return build_desk(settings, check_schema=check_schema, worker=worker)


def _engine(ctx: click.Context) -> Any:
    from supportd.adapters.db import schema
    from supportd.bootstrap import build_engine

    engine = build_engine(ctx.obj.settings())
    schema.require_current(engine)
    return engine


@cli.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Bring the database to the newest schema."""
    from supportd.adapters.db import schema
    from supportd.bootstrap import build_engine

    engine = build_engine(ctx.obj.settings())
    before = schema.current_revision(engine)
    schema.upgrade(engine)
    after = schema.current_revision(engine)
    click.echo(f"database at revision {after}" + (" (unchanged)" if before == after else ""))


@cli.command()
@click.option("--once", is_flag=True, help="Process all waiting mail, run periodic work, exit.")
@click.pass_context
def run(ctx: click.Context, once: bool) -> None:
    """Run the desk in the foreground."""
    from supportd.adapters.process import start_worker, tune_malloc

    tune_malloc()  # before the first thread
    settings = ctx.obj.settings()
    # The parse worker starts now, so that its imports run on the second core while this
    # process imports the desk's modules (a backlog's start-up: issue 9).
    worker = start_worker() if settings.imap.effective_parse_workers > 0 else None
    try:
        from supportd.entrypoints.daemon import Runner
        from supportd.errors import NotOwnerError

        desk = _desk(ctx, settings=settings, worker=worker)
    except BaseException:
        if worker is not None:
            worker.stop()
        raise
    try:
        runner = Runner(desk)  # (a lock file it cannot open: the desk still closes)
        runner.install_signal_handlers()
        if once:
            started = time.monotonic()
            try:
                stats = runner.run_once()
            except NotOwnerError as exc:
                _fail(str(exc), EX_TEMPFAIL)
            click.echo(
                f"stored {stats.stored}, duplicates {stats.duplicates}, "
                f"quarantined {stats.quarantined}, new tickets {stats.new_tickets} "
                f"in {time.monotonic() - started:.2f} s"
            )
        else:
            runner.run_forever()
    finally:
        desk.close()


@cli.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Validate the configuration and reach the database, IMAP and SMTP servers."""
    from supportd.entrypoints.checks import run_checks

    ok = run_checks(ctx.obj.config_path, click.echo)
    sys.exit(0 if ok else 1)


@cli.group()
def tickets() -> None:
    """Look at tickets."""


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str, int]]) -> None:
    click.echo("  ".join(title.ljust(width) for _, title, width in columns).rstrip())
    for row in rows:
        cells = []
        for key, _, width in columns:
            value = row.get(key)
            text = "" if value is None else str(value)
            cells.append((text[: width - 1] + "…" if len(text) > width else text).ljust(width))
        click.echo("  ".join(cells).rstrip())


@tickets.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON array (see DESIGN.md).")
@click.option("--status", type=click.Choice(["open", "pending", "closed"]), default=None)
@click.pass_context
def tickets_list(ctx: click.Context, as_json: bool, status: str | None) -> None:
    """List tickets."""
    from supportd.adapters.db.views import list_tickets

    rows = list_tickets(_engine(ctx), status)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        row["created"] = (row["created_at"] or "")[:16].replace("T", " ")
    _table(
        rows,
        [
            ("number", "#", 6),
            ("status", "STATUS", 7),
            ("category", "CATEGORY", 13),
            ("requester", "REQUESTER", 28),
            ("message_count", "MSGS", 4),
            ("created", "CREATED (UTC)", 16),
            ("subject", "SUBJECT", 40),
        ],
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="JSON array (see DESIGN.md).")
@click.option(
    "--limit", type=click.IntRange(min=0), default=200, show_default=True, help="0 for all."
)
@click.pass_context
def sla(ctx: click.Context, as_json: bool, limit: int) -> None:
    """Tickets awaiting the team, most urgent first, with the business time left."""
    from datetime import UTC, datetime

    from supportd.adapters.db.views import sla_rows
    from supportd.bootstrap import build_calendar, build_sla

    settings = ctx.obj.settings()
    policy = build_sla(settings, build_calendar(settings.hours))
    rows = sla_rows(_engine(ctx), policy, datetime.now(UTC), limit or None)

    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        row["due_utc"] = (row["due"] or "")[:16].replace("T", " ")
        row["left"] = f"{row['business_hours_left']:+.1f} h"
        row["level"] = ("", "warned", "BREACHED")[row["escalation_level"]]
    _table(
        rows,
        [
            ("number", "#", 6),
            ("due_utc", "DUE (UTC)", 16),
            ("left", "LEFT", 9),
            ("level", "LEVEL", 8),
            ("requester", "REQUESTER", 28),
            ("subject", "SUBJECT", 40),
        ],
    )


@tickets.command("show")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tickets_show(ctx: click.Context, number: int, as_json: bool) -> None:
    """Show one ticket with its messages."""
    from supportd.adapters.db.views import show_ticket

    detail = show_ticket(_engine(ctx), number)
    if detail is None:
        _fail(f"no ticket {number}")
        return
    if as_json:
        click.echo(json.dumps(detail, ensure_ascii=False, indent=2))
        return
    click.echo(f"Ticket #{detail['number']}: {detail['subject']}")
    click.echo(
        f"  requester: {detail['requester']}   status: {detail['status']}   "
        f"category: {detail['category']}"
    )
    click.echo(f"  participants: {', '.join(detail['participants'])}")
    click.echo(f"  created: {detail['created_at']}   due: {detail['first_response_due']}")
    for msg in detail["messages"]:
        auto = f"  [automatic: {msg['automatic']}]" if msg["automatic"] else ""
        click.echo(f"\n--- {msg['direction']} {msg['kind']} {msg['date']} from {msg['from']}{auto}")
        click.echo(f"    Subject: {msg['subject']}")
        for line in (msg["text"] or "").strip().splitlines()[:40]:
            click.echo(f"    {line}")


@tickets.command("export")
@click.pass_context
def tickets_export(ctx: click.Context) -> None:
    """Every ticket as JSON Lines (one `show` object per line), streamed."""
    from supportd.adapters.db.views import export_tickets

    for detail in export_tickets(_engine(ctx)):
        sys.stdout.write(json.dumps(detail, ensure_ascii=False) + "\n")


@cli.group()
def classify() -> None:
    """The trained classifier: export the team's corrections, train, evaluate."""


def _labelled(paths: tuple[Path, ...]) -> list[tuple[str, str, str]]:
    from supportd.domain.classify import CATEGORIES

    rows = []
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            _fail(f"{path}: cannot read: {exc.strerror}")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                row = (str(item.get("subject", "")), str(item["text"]), str(item["category"]))
            except (ValueError, KeyError, AttributeError) as exc:
                _fail(f"{path}:{number}: not a labelled mail ({type(exc).__name__}: {exc})")
            if row[2] not in CATEGORIES:
                _fail(f"{path}:{number}: unknown category {row[2]!r}")
            rows.append(row)
    if not rows:
        _fail("no labelled mail in " + ", ".join(str(p) for p in paths))
    return rows


@classify.command("export")
@click.pass_context
def classify_export(ctx: click.Context) -> None:
    """Tickets the team re-categorised (#category), as training JSON Lines on stdout."""
    from supportd.adapters.db.views import corrected_examples

    for row in corrected_examples(_engine(ctx)):
        click.echo(json.dumps(row, ensure_ascii=False))


@classify.command("train")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Model file to write (point classification.model at it).",
)
@click.option(
    "--target-precision",
    type=float,
    default=0.95,
    show_default=True,
    help="Abstain below the confidence that keeps this precision for the declining "
    "and redirecting categories.",
)
def classify_train(files: tuple[Path, ...], out: Path, target_precision: float) -> None:
    """Train a model on labelled JSON Lines files (subject, text, category)."""
    from supportd.services.training import build

    rows = _labelled(files)
    model = build(rows, target_precision=target_precision)
    out.write_text(json.dumps(model.to_dict(), separators=(",", ":")), encoding="utf-8")
    thresholds = ", ".join(f"{k} {v:.2f}" for k, v in sorted(model.thresholds.items()))
    click.echo(
        f"trained on {len(rows)} mails, {len(model.vocabulary)} features; abstain below: "
        f"{thresholds}; wrote {out} ({out.stat().st_size / 1e6:.1f} MB)"
    )


@classify.command("evaluate")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--model", "model_path", default="", help="Model file (default: the shipped one).")
def classify_evaluate(file: Path, model_path: str) -> None:
    """Per-category precision, recall, F1 and the confusion matrix on labelled mail."""
    from supportd.adapters.modelfile import load_model
    from supportd.services.training import evaluate

    click.echo(evaluate(load_model(model_path), _labelled((file,))))


@cli.group()
def quarantine() -> None:
    """Messages that could not be processed."""


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--all", "include_replayed", is_flag=True, help="Include replayed items.")
@click.pass_context
def quarantine_list(ctx: click.Context, as_json: bool, include_replayed: bool) -> None:
    """List quarantined messages."""
    from supportd.adapters.db.views import list_quarantine

    rows = list_quarantine(_engine(ctx), include_replayed)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    _table(
        rows,
        [("id", "ID", 6), ("uid", "UID", 8), ("created_at", "CREATED", 26), ("error", "ERROR", 70)],
    )


@quarantine.command("replay")
@click.argument("item_id", type=int)
@click.pass_context
def quarantine_replay(ctx: click.Context, item_id: int) -> None:
    """Process a quarantined message again."""
    desk = _desk(ctx)
    try:
        row_id = desk.ingestor.replay(item_id)
    finally:
        desk.close()
    click.echo(f"quarantine item {item_id} replayed: stored as message {row_id}")


@cli.group()
def outbox() -> None:
    """Outgoing mail: acknowledgements and notifications."""


@outbox.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--status", type=click.Choice(["pending", "sent", "failed"]), default=None)
@click.option(
    "--limit", type=click.IntRange(min=0), default=500, show_default=True, help="0 for all."
)
@click.pass_context
def outbox_list(ctx: click.Context, as_json: bool, status: str | None, limit: int) -> None:
    """List outgoing mail, newest first."""
    from supportd.adapters.db.views import list_outbox

    rows = list_outbox(_engine(ctx), status, limit)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    _table(
        rows,
        [
            ("id", "ID", 6),
            ("ticket", "TICKET", 6),
            ("kind", "KIND", 12),
            ("status", "STATUS", 8),
            ("attempts", "TRIES", 5),
            ("to", "TO", 30),
            ("last_error", "LAST ERROR", 50),
        ],
    )


@outbox.command("retry")
@click.argument("item_id", type=int)
@click.pass_context
def outbox_retry(ctx: click.Context, item_id: int) -> None:
    """Queue a failed (or waiting) message again, now."""
    from supportd.adapters.db.engine import outbox_database
    from supportd.adapters.db.outbox import outbox_unit_of_work
    from supportd.bootstrap import utcnow

    with outbox_unit_of_work(outbox_database(_engine(ctx)))() as store:
        if not store.retry(item_id, utcnow()):
            _fail(f"outbox item {item_id} does not exist or was already sent")
        store.commit()
    click.echo(f"outbox item {item_id} queued; the daemon sends it on its next cycle")


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the temporary folder with the demo database.")
def demo(keep: bool) -> None:
    """Run the whole desk on embedded servers with sample mail, then print the tickets."""
    from supportd.entrypoints.demo import run_demo

    run_demo(click.echo, keep=keep)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except SupportdError as exc:
        _fail(str(exc))
    except Exception as exc:
        reason = _database_refused(exc)
        if reason is None:
            raise
        _fail(reason)


def _database_refused(exc: Exception) -> str | None:
    """One line for a database that cannot be opened or written (a server down, a folder
    missing, a read-only file), instead of the driver's traceback."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        detail = str(exc.orig)
    elif isinstance(exc, sqlite3.Error):
        detail = str(exc)
    else:
        return None
    first = detail.strip().splitlines()[0] if detail.strip() else type(exc).__name__
    return (
        f"database.url: the database refused: {first} (is the server running, does the "
        "file's folder exist, may supportd write there?)"
    )
