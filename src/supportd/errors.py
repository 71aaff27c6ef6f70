"""One error family: every failure an operator may see is a SupportdError with context."""


class SupportdError(Exception):
    """Base of every error supportd raises on purpose."""


class ConfigError(SupportdError):
    """The configuration is missing, unreadable or invalid; the message names key and file."""


class SchemaError(SupportdError):
    """The database schema is not at the version this code needs."""


class MailboxError(SupportdError):
    """The IMAP server could not be reached or used (host, user and folder in the message)."""


class LoginError(MailboxError):
    """The IMAP server refused the credentials."""


class SendError(SupportdError):
    """An SMTP submission failed."""

    def __init__(self, message: str, *, permanent: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


class FencedError(SupportdError):
    """This process no longer owns the mailbox: its batch was rolled back, not committed."""


class NotOwnerError(SupportdError):
    """Another process owns the mailbox (the message names it)."""
