"""Configuration: a TOML file, overridden by SUPPORTD_<SECTION>__<KEY> and systemd credentials.

Precedence, highest first: environment, credentials directory, TOML file, defaults.
Every error names the key, where the value came from, and what was expected.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date, time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from supportd.errors import ConfigError

ENV_PREFIX = "SUPPORTD_"
ENV_DELIMITER = "__"

# Secrets that may come from $CREDENTIALS_DIRECTORY (systemd LoadCredential=), by file name.
CREDENTIAL_KEYS: dict[str, tuple[str, str]] = {
    "imap.password": ("imap", "password"),
    "smtp.password": ("smtp", "password"),
    "support.secret_key": ("support", "secret_key"),
    "database.url": ("database", "url"),
}

Security = Literal["tls", "starttls", "none"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DatabaseSettings(_Section):
    url: str = "sqlite:///supportd.db"
    echo: bool = False


class ImapSettings(_Section):
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Security = "tls"
    username: str
    password: str
    folder: str = "INBOX"
    idle: bool = True
    poll_interval: float = Field(default=60.0, gt=0)
    processed_folder: str = ""
    # 100: as fast as 200 on SQLite (about 800 msg/s) with 14 MiB less peak memory; 7 %
    # slower on PostgreSQL (bench/RESULTS.md, issue 9).
    batch_size: int = Field(default=100, ge=1, le=5000)
    batch_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024)
    timeout: float = Field(default=60.0, gt=0)
    # IDLE is ended and re-issued after this many seconds without news (RFC 2177: at most
    # 29 minutes); the DONE and the folder check that follow prove the peer is alive.
    idle_timeout: float = Field(default=300.0, gt=0, le=29 * 60)
    ca_file: str = ""
    tls_verify: bool = True
    max_backoff: float = Field(default=300.0, gt=0)
    # Processes that parse mail beside the main one (None: 1 when there are 2+ cores).
    parse_workers: int | None = Field(default=None, ge=0, le=8)

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "tls" else 143)

    @property
    def effective_parse_workers(self) -> int:
        if self.parse_workers is not None:
            return self.parse_workers
        return 1 if (os.cpu_count() or 1) > 1 else 0


class SmtpSettings(_Section):
    host: str = "localhost"
    # Temporary failures (4xx, connection errors) are retried until this many seconds
    # after the message was queued; then it is marked failed.
    give_up_after: float = Field(default=2 * 24 * 3600, gt=0)
    batch_size: int = Field(default=100, ge=1, le=10000)
    # SMTP connections the outbox sends over at once; a crash can repeat one row per
    # connection (the row in flight on each).
    connections: int = Field(default=4, ge=1, le=32)
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Security = "starttls"
    username: str = ""
    password: str = ""
    timeout: float = Field(default=30.0, gt=0)
    ca_file: str = ""
    tls_verify: bool = True

    @property
    def effective_port(self) -> int:
        if self.port:
            return self.port
        return {"tls": 465, "starttls": 587, "none": 25}[self.security]


class SupportSettings(_Section):
    address: str
    name: str = "Support"
    product: str = "Support"
    # "Rahim Uddin <rahim@wperp.example>" or "rahim@wperp.example"
    agents: list[str] = Field(default_factory=list)
    escalation: list[str] = Field(default_factory=list)
    secret_key: str = Field(min_length=16)
    # Trust an agent's mail without a reply token when the first Authentication-Results
    # header from this authserv-id (your own MTA) says dmarc=pass or dkim=pass ("" = never).
    authserv_id: str = ""
    # A customer's mail on a ticket closed at most this many days ago reopens it; later
    # it opens a new ticket that names the old one.
    reopen_days: float = Field(default=14, ge=0)
    # Customer attachments up to this size in all are forwarded to the agents; larger ones
    # are listed by name and size (they stay on the ticket).
    forward_attachments_bytes: int = Field(default=10 * 1024 * 1024, ge=0)
    # Pre-sales and account mail gets a copy here (empty: no copy).
    sales: str = ""
    # Website form mailers: their mail is attributed to the customer in Reply-To or the body.
    form_senders: list[str] = Field(default_factory=list)
    contact_form_url: str = "https://example.com/contact"
    faq_url: str = ""
    customization_resources: list[str] = Field(default_factory=list)
    autoreply_per_sender: int = Field(default=3, ge=0)
    autoreply: bool = True
    # Files that override the shipped defaults ("" = the defaults).
    templates_dir: str = ""
    faq_file: str = ""

    @field_validator("sales")
    @classmethod
    def _sales(cls, value: str) -> str:
        if value and "@" not in value:
            raise ValueError(f"{value!r} is not an email address")
        return value.strip().lower()

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if "@" not in value or any(c in value for c in " <>\r\n"):
            raise ValueError("expected a bare address like support@example.com")
        return value.strip().lower()

    @field_validator("agents")
    @classmethod
    def _agents(cls, values: list[str]) -> list[str]:
        from supportd.domain.agents import parse_agent

        return [str(parse_agent(v)) for v in values]

    @field_validator("escalation", "form_senders")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        for value in values:
            if "@" not in value:
                raise ValueError(f"{value!r} is not an email address")
        return [v.strip().lower() for v in values]

    @field_validator("product")
    @classmethod
    def _product(cls, value: str) -> str:
        if not value.strip() or any(c in value for c in "[]#\r\n"):
            raise ValueError("expected a short product name without [, ] or #")
        return value.strip()


class HoursSettings(_Section):
    """Support hours (the policy: Saturday to Thursday, 10:00 to 18:00, Asia/Dhaka)."""

    timezone: str = "Asia/Dhaka"
    open_days: list[str] = Field(default_factory=lambda: ["sat", "sun", "mon", "tue", "wed", "thu"])
    open: time = time(10, 0)
    close: time = time(18, 0)
    holidays_country: str = "BD"
    holidays_subdivision: str = ""
    closed_dates: list[date] = Field(default_factory=list)
    extra_open_dates: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (expected e.g. Asia/Dhaka)") from None
        return value

    @field_validator("open_days")
    @classmethod
    def _days(cls, values: list[str]) -> list[str]:
        from supportd.domain.calendar import parse_days

        parse_days(values)
        return values

    @model_validator(mode="after")
    def _hours(self) -> HoursSettings:
        if self.close <= self.open:
            raise ValueError(f"close ({self.close}) must be after open ({self.open})")
        return self


class SlaSettings(_Section):
    first_response_hours: float = Field(default=14.0, gt=0, le=87_840)
    next_response_hours: float = Field(default=14.0, gt=0, le=87_840)
    clock: Literal["business", "calendar"] = "business"
    # Share of the target elapsed when the warning fires.
    warn_at: float = Field(default=0.75, gt=0, le=1)
    # false: escalations found outside support hours wait for the next opening.
    notify_outside_hours: bool = False
    scan_interval: float = Field(default=60.0, gt=0)
    # Per-category targets in hours, e.g. [sla.targets] bug = 8
    targets: dict[str, float] = Field(default_factory=dict)

    @field_validator("targets")
    @classmethod
    def _targets(cls, targets: dict[str, float]) -> dict[str, float]:
        from supportd.domain.classify import CATEGORIES

        for name, hours in targets.items():
            if name not in CATEGORIES:
                raise ValueError(f"unknown category {name!r} (one of {', '.join(CATEGORIES)})")
            if not 0 < hours <= 87_840:
                raise ValueError(f"{name}: expected hours above 0, got {hours!r}")
        return targets


class ClassificationSettings(_Section):
    """The trained model, and the operator's keyword rules, which win when they match."""

    rules: dict[str, list[str]] = Field(default_factory=dict)
    # The trained model: "" = the one shipped with supportd, a path to your own (from
    # `supportd classify train`), or "none" for the keyword rules alone.
    model: str = ""

    @field_validator("rules")
    @classmethod
    def _categories(cls, rules: dict[str, list[str]]) -> dict[str, list[str]]:
        from supportd.domain.classify import CATEGORIES

        for name, patterns in rules.items():
            if name not in CATEGORIES:
                raise ValueError(f"unknown category {name!r} (one of {', '.join(CATEGORIES)})")
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    why = f"{name}: {pattern!r} is not a regular expression: {exc}"
                    raise ValueError(why) from None
        return rules


class HaSettings(_Section):
    """One owner per mailbox: how fast a standby takes over from a dead owner."""

    takeover_seconds: float = Field(default=30.0, ge=2, le=3600)


class DaemonSettings(_Section):
    # After SIGTERM, the message and the outbox item in flight get this long; then exit 0.
    stop_timeout: float = Field(default=10.0, gt=0, le=3600)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(BaseSettings):
    """The whole configuration; build it with load_settings(), not directly."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        case_sensitive=False,
    )

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    imap: ImapSettings
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    support: SupportSettings
    hours: HoursSettings = Field(default_factory=HoursSettings)
    sla: SlaSettings = Field(default_factory=SlaSettings)
    classification: ClassificationSettings = Field(default_factory=ClassificationSettings)
    ha: HaSettings = Field(default_factory=HaSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)


def default_config_path() -> Path:
    """--config default: $SUPPORTD_CONFIG, else ./supportd.toml."""
    return Path(os.environ.get("SUPPORTD_CONFIG") or "supportd.toml")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: configuration file not found "
            "(pass --config PATH or set SUPPORTD_CONFIG; "
            "see config/supportd.example.toml)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _read_credentials(directory: str | None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if not directory:
        return found
    for name, (section, key) in CREDENTIAL_KEYS.items():
        path = Path(directory) / name
        if path.is_file():
            found.setdefault(section, {})[key] = path.read_text(encoding="utf-8").strip()
    return found


def _where(loc: tuple[Any, ...], path: Path, credentials: dict[str, Any]) -> str:
    env_name = ENV_PREFIX + ENV_DELIMITER.join(str(p) for p in loc).upper()
    if env_name in {k.upper() for k in os.environ}:
        return f"environment variable {env_name}"
    if len(loc) == 2 and loc[1] in credentials.get(str(loc[0]), {}):
        return f"credential {loc[0]}.{loc[1]} in $CREDENTIALS_DIRECTORY"
    return str(path)


def _explain(exc: ValidationError, path: Path, credentials: dict[str, Any]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        where = _where(loc, path, credentials)
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key {key!r}")
        elif err["type"] == "missing":
            lines.append(f"{where}: missing required key {key!r}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            shown = "" if key.endswith(("password", "secret_key")) else f" (got {value!r})"
            lines.append(f"{where}: {key}: {msg}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(path: Path | str | None = None) -> Settings:
    """Read the configuration, raising ConfigError that names key, file and expectation."""
    path = Path(path) if path is not None else default_config_path()
    data = _read_toml(path)
    credentials = _read_credentials(os.environ.get("CREDENTIALS_DIRECTORY"))

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                env_settings,
                InitSettingsSource(settings_cls, credentials),
                InitSettingsSource(settings_cls, data),
            )

    _unknown_sections_in_environment()
    try:
        loaded = _FromFile()  # type: ignore[call-arg]  # values come from the sources
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, credentials)) from None
    except SettingsError as exc:  # a list or table in a variable that is not JSON
        raise ConfigError(_unreadable_variable(exc)) from None
    return Settings.model_validate(loaded.model_dump())


def _config_variables() -> list[str]:
    """SUPPORTD_<SECTION>__<KEY> variables (SUPPORTD_CONFIG and the like are not keys)."""
    return sorted(
        name
        for name in os.environ
        if name.upper().startswith(ENV_PREFIX) and ENV_DELIMITER in name[len(ENV_PREFIX) :]
    )


def _unknown_sections_in_environment() -> None:
    """pydantic-settings ignores a variable whose section it does not know: a misspelt
    SUPPORTD_IMAPP__HOST would silently leave imap.host as the file has it."""
    sections = set(Settings.model_fields)
    for name in _config_variables():
        section = name[len(ENV_PREFIX) :].split(ENV_DELIMITER, 1)[0].lower()
        if section not in sections:
            raise ConfigError(
                f"environment variable {name}: unknown section {section!r} "
                f"(sections: {', '.join(sorted(sections))})"
            )


def _unreadable_variable(exc: SettingsError) -> str:
    match = re.search(r'field "(\w+)"', str(exc))
    section = match.group(1) if match else ""
    names = [
        n for n in _config_variables() if n[len(ENV_PREFIX) :].lower().startswith(f"{section}__")
    ]
    return (
        f"environment variable {' or '.join(names) or ENV_PREFIX + section.upper()}: cannot be "
        f"read: a list or table in a variable is JSON, for example "
        f"{ENV_PREFIX}SUPPORT{ENV_DELIMITER}AGENTS='[\"rahim@desk.example\"]'"
    )


def settings_from_dict(data: dict[str, Any]) -> Settings:
    """Build Settings from a plain mapping (demo and tests), without env or files."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, Path("<embedded>"), {})) from None
