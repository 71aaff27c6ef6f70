"""supportd: an email support desk that turns an IMAP mailbox into threaded tickets."""

__version__ = "0.1.0"
