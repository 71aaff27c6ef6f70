"""The one place that knows every concrete class: Settings in, a wired desk out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from supportd.adapters.compose import Composer, FaqIndex, defaults_dir
from supportd.adapters.db import schema
from supportd.adapters.db.engine import make_engine, outbox_database
from supportd.adapters.db.outbox import OutboxConnections
from supportd.adapters.db.ownership import MailboxLock, mailbox_lock
from supportd.adapters.db.store import unit_of_work
from supportd.adapters.imap import ImapSource
from supportd.adapters.modelfile import classifier, overrides_key
from supportd.adapters.parsepool import ParsePool, parse_serial
from supportd.adapters.process import StartedWorker
from supportd.adapters.sendhost import SenderSpec
from supportd.adapters.smtp import SmtpTarget, SmtpTransport
from supportd.adapters.teammail import TeamComposer
from supportd.config import HoursSettings, Settings
from supportd.domain.acknowledgement import SupportHours
from supportd.domain.agents import parse_agent
from supportd.domain.calendar import BusinessCalendar, parse_days
from supportd.domain.sla import SlaPolicy
from supportd.errors import ConfigError
from supportd.services.clocks import ClockKeeper
from supportd.services.escalation import Escalator
from supportd.services.ingest import DeskIdentity, Ingestor, ReplyPolicy
from supportd.services.outbox import OutboxSender
from supportd.services.team import Team, TeamPolicy

DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Desk:
    settings: Settings
    engine: Engine
    ingestor: Ingestor
    outbox: OutboxSender
    parse_pool: ParsePool | None = None
    escalator: Escalator | None = None
    outbox_connections: OutboxConnections | None = None  # the sender's (db/outbox)

    def make_source(self) -> ImapSource:
        return build_source(self.settings)

    def make_lock(self, mailbox: str) -> MailboxLock:
        """The one-owner-per-mailbox lock for `mailbox` on this desk's database."""
        return build_lock(self.engine, mailbox, self.settings)

    def sending(self, allowed: Callable[[], bool]) -> AbstractContextManager[Callable[[], None]]:
        """The outbox sending while a backlog drains: yields wake() to call after each
        commit. In the worker process when there is one (adapters/sendhost), else here."""
        if self.parse_pool is not None:
            return self.parse_pool.background(allowed, self.outbox.background)
        return self.outbox.background()

    def close(self) -> None:
        if self.parse_pool is not None:
            self.parse_pool.close()
        self.engine.dispose()
        if self.outbox_connections is not None:
            self.outbox_connections.close()


def build_source(settings: Settings) -> ImapSource:
    return ImapSource(settings.imap)


def build_lock(engine: Engine, mailbox: str, settings: Settings) -> MailboxLock:
    return mailbox_lock(engine, mailbox, settings.ha.takeover_seconds)


def build_engine(settings: Settings) -> Engine:
    return make_engine(settings.database.url, echo=settings.database.echo)


def build_calendar(hours: HoursSettings) -> BusinessCalendar:
    """The business calendar, with the public holidays of the `holidays` package.

    `holidays` is the maintained source of public holidays for 150+ countries (with
    subdivisions); the dates are expanded lazily per year as the calendar asks. Only the
    configured country's module is loaded (adapters/publicholidays).
    """
    from supportd.adapters.publicholidays import country_holidays

    public: object = frozenset()
    if hours.holidays_country:
        try:
            public = country_holidays(
                hours.holidays_country, subdiv=hours.holidays_subdivision or None
            )
        except NotImplementedError:
            raise ConfigError(
                f"hours.holidays_country: no public holidays known for "
                f"{hours.holidays_country!r} (expected an ISO 3166 code such as BD)"
            ) from None
    return BusinessCalendar(
        timezone=ZoneInfo(hours.timezone),
        open_days=parse_days(hours.open_days),
        opens=hours.open,
        closes=hours.close,
        holidays=public,  # type: ignore[arg-type]
        closed_dates=frozenset(hours.closed_dates),
        extra_open_dates=frozenset(hours.extra_open_dates),
    )


def describe_hours(hours: HoursSettings) -> tuple[str, str, str]:
    """("Saturday to Thursday", "10:00–18:00 Asia/Dhaka", "04:00–12:00 UTC")."""
    days = sorted(parse_days(hours.open_days))
    text = ", ".join(DAY_NAMES[d] for d in days)
    for first in days:  # a run that may wrap the week, such as Saturday ... Thursday
        run = [(first + i) % 7 for i in range(len(days))]
        if len(days) > 2 and set(run) == set(days):
            text = f"{DAY_NAMES[run[0]]} to {DAY_NAMES[run[-1]]}"
            break
    zone = ZoneInfo(hours.timezone)
    sample = datetime.now(UTC).astimezone(zone).date()

    def utc(t: time) -> str:
        return datetime.combine(sample, t, zone).astimezone(UTC).strftime("%H:%M")

    offset = datetime.combine(sample, hours.open, zone).utcoffset() or timedelta(0)
    hours_offset = offset.total_seconds() / 3600
    gmt = f"GMT{hours_offset:+g}"
    local = f"{hours.open:%H:%M}–{hours.close:%H:%M} {hours.timezone} ({gmt})"
    return text, local, f"{utc(hours.open)}–{utc(hours.close)} UTC"


def build_replies(settings: Settings) -> ReplyPolicy:
    support, hours = settings.support, settings.hours
    days, local, utc = describe_hours(hours)
    faq_path = Path(support.faq_file) if support.faq_file else defaults_dir() / "faq.toml"
    if support.templates_dir and not Path(support.templates_dir).is_dir():
        raise ConfigError(f"support.templates_dir: {support.templates_dir} is not a directory")
    composer = Composer(
        support_name=support.name,
        support_address=support.address,
        timezone=hours.timezone,
        hours_days=days,
        hours_local=local,
        hours_utc=utc,
        faq=FaqIndex.load(faq_path),
        templates_dir=support.templates_dir,
        sales_address=support.sales,
    )
    return ReplyPolicy(
        calendar=build_calendar(hours),
        response_hours=settings.sla.first_response_hours,
        business_clock=settings.sla.clock == "business",
        hours=SupportHours(hours.timezone, (days,), f"{hours.open:%H:%M}", f"{hours.close:%H:%M}"),
        classify=classifier(
            overrides_key(settings.classification.rules), settings.classification.model
        ),
        composer=composer,
        secret=support.secret_key,
        per_sender_limit=support.autoreply_per_sender,
        enabled=support.autoreply,
        form_senders=frozenset(support.form_senders),
        sales=support.sales,
        contact_form_url=support.contact_form_url,
        faq_url=support.faq_url,
        customization_resources=tuple(support.customization_resources),
    )


def build_sla(settings: Settings, calendar: BusinessCalendar) -> SlaPolicy:
    sla = settings.sla
    return SlaPolicy(
        calendar=calendar,
        first_response_hours=sla.first_response_hours,
        next_response_hours=sla.next_response_hours,
        business=sla.clock == "business",
        warn_at=sla.warn_at,
        notify_outside_hours=sla.notify_outside_hours,
        targets=dict(sla.targets),
    )


def build_team_mail(settings: Settings, replies: ReplyPolicy) -> TeamComposer:
    """The composer of the team's mail (notifications, relays, notes, escalations)."""
    composer = replies.composer
    assert isinstance(composer, Composer)
    support = settings.support
    return TeamComposer(
        composer, secret=support.secret_key, forward_limit=support.forward_attachments_bytes
    )


def build_team(
    settings: Settings, mail: TeamComposer, clocks: ClockKeeper | None = None
) -> Team | None:
    """The team's side: notifications, relays, notes and commands (None without agents)."""
    support = settings.support
    if not support.agents:
        return None
    return Team(
        clocks=clocks,
        policy=TeamPolicy(
            agents=tuple(parse_agent(a) for a in support.agents),
            address=support.address,
            product=support.product,
            secret=support.secret_key,
            mail=mail,
            authserv_id=support.authserv_id,
            reopen_days=support.reopen_days,
        ),
    )


def build_desk(
    settings: Settings,
    *,
    engine: Engine | None = None,
    check_schema: bool = True,
    worker: StartedWorker | None = None,
) -> Desk:
    """The desk. `worker`: its first parse worker, started early by the caller."""
    engine = engine or build_engine(settings)
    if check_schema:
        schema.require_current(engine)
    desk_identity = DeskIdentity(
        product=settings.support.product,
        address=settings.support.address,
        agents=frozenset(parse_agent(a).email for a in settings.support.agents),
    )
    workers = settings.imap.effective_parse_workers
    rules = settings.classification.rules
    model = settings.classification.model
    database = outbox_database(engine)
    replies = build_replies(settings)
    sla = build_sla(settings, replies.calendar)
    clocks = ClockKeeper(sla)
    team_mail = build_team_mail(settings, replies)
    sender = SenderSpec(
        database,
        SmtpTarget.of(settings.smtp),
        give_up_after=settings.smtp.give_up_after,
        batch_size=settings.smtp.batch_size,
        connections=settings.smtp.connections,
        team_mail=team_mail.spec(),
    )
    pool = ParsePool(workers, rules, model, sender=sender, started=worker) if workers > 0 else None
    ingestor = Ingestor(
        unit_of_work(engine),
        desk_identity,
        partial(parse_serial, rules=rules, model=model),
        utcnow,
        parse_async=pool.parse_async if pool else None,
        replies=replies,
        team=build_team(settings, team_mail, clocks),
        clocks=clocks,
        # PostgreSQL gained nothing from a deeper pipeline (602 / 600 msg/s) and it cost
        # 2.3 MiB of a memory budget that had 1.3 MiB to spare at 50,000 mails (issue 9).
        parse_ahead=1 if engine.dialect.name == "postgresql" else Ingestor.PARSE_AHEAD,
    )
    escalator = Escalator(
        unit_of_work(engine),
        sla,
        team_mail,
        address=settings.support.address,
        product=settings.support.product,
        escalation=settings.support.escalation,
        message_id_for=ingestor.message_id,
        clock=utcnow,
    )
    connections = OutboxConnections(database)
    outbox = OutboxSender(
        connections.transaction,
        SmtpTransport(settings.smtp),
        utcnow,
        give_up_after=timedelta(seconds=settings.smtp.give_up_after),
        batch_size=settings.smtp.batch_size,
        connections=settings.smtp.connections,
        render=team_mail.render,
    )
    return Desk(
        settings=settings,
        engine=engine,
        ingestor=ingestor,
        outbox=outbox,
        parse_pool=pool,
        escalator=escalator,
        outbox_connections=connections,
    )


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
