"""A private Dovecot on 127.0.0.1 for the tests: own config, base_dir, state_dir and log.

Never the system instance: its own instance_name, free ports, a passwd-file user database,
Maildirs owned by an unprivileged system user (Dovecot refuses mail owned by root) in a
folder that user can reach.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MAIL_USER = "nobody"
POOL = 400


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None
    )


def unavailable_reason() -> str | None:
    """Why a private Dovecot cannot run here, or None."""
    if dovecot_binary() is None:
        return (
            "Dovecot is not installed (apt-get install dovecot-imapd; scripts/test does it as root)"
        )
    if os.geteuid() != 0:
        return "the private Dovecot needs root (it runs mail processes as another user)"
    return None


@dataclass
class Account:
    username: str
    password: str
    home: Path

    @property
    def maildir(self) -> Path:
        return self.home / "Maildir"


class Dovecot:
    """`extra` is appended to the configuration (capabilities, namespaces of other servers)."""

    def __init__(self, extra: str = "") -> None:
        self.extra = extra
        self.root = Path(tempfile.mkdtemp(prefix="supportd-dovecot-", dir="/tmp"))
        self.root.chmod(0o755)
        self.port = free_port()
        self.tls_port = free_port()
        # Where Dovecot's LDA submits the mail Sieve sends (vacation replies): a test's
        # SMTP router listens there when it needs to.
        self.submission_port = free_port()
        self.passwd = self.root / "passwd"
        self.passwd.write_text("")
        self.log = self.root / "dovecot.log"
        self.cert, self.key = self.root / "cert.pem", self.root / "key.pem"
        self.process: subprocess.Popen[bytes] | None = None
        self._users = 0
        entry = pwd.getpwnam(MAIL_USER)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        # Dovecot does not reliably re-read a passwd-file appended to within the same
        # second, so the accounts exist before it starts; tests take them in turn.
        (self.root / "home").mkdir()
        os.chown(self.root / "home", self.uid, self.gid)
        with self.passwd.open("w") as fh:
            for n in range(1, POOL + 1):
                home = self.root / "home" / f"user{n}"
                fh.write(f"user{n}:{{PLAIN}}pw-user{n}-secret:{self.uid}:{self.gid}::{home}::\n")

    def _make_cert(self) -> None:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                str(self.key),
                "-out",
                str(self.cert),
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
            ],
            check=True,
            capture_output=True,
        )

    def config(self) -> str:
        r = self.root
        return f"""
instance_name = supportd-test-{self.port}
base_dir = {r}/run
state_dir = {r}/state
log_path = {self.log}
info_log_path = {self.log}
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{self.cert}
ssl_key = <{self.key}
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
default_login_user = dovenull
default_internal_user = dovecot
mail_max_userip_connections = 100
imap_max_line_length = 1M
postmaster_address = postmaster@dovecot.test
submission_host = 127.0.0.1:{self.submission_port}
protocol lda {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.passwd}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
    ssl = yes
  }}
}}
{self.extra}
"""

    def start(self) -> None:
        binary = dovecot_binary()
        assert binary, "dovecot not installed"
        if not self.cert.exists():
            self._make_cert()
        conf = self.root / "dovecot.conf"
        conf.write_text(self.config())
        for sub in ("run", "state"):
            (self.root / sub).mkdir(exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"dovecot exited: {err} {self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen on {self.port}: {self.log_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def add_user(self) -> Account:
        """A fresh, empty account (from the pool created before start)."""
        self._users += 1
        if self._users > POOL:
            raise RuntimeError(f"more than {POOL} Dovecot accounts asked for; raise POOL")
        name = f"user{self._users}"
        home = self.root / "home" / name
        (home / "Maildir").mkdir(parents=True)
        for path in (home, home / "Maildir"):
            os.chown(path, self.uid, self.gid)
        return Account(name, f"pw-{name}-secret", home)

    def deliver(
        self, account: Account, raw: bytes, folder: str = "", when: float | None = None
    ) -> None:
        """Drop a message straight into the Maildir (fast seeding for big tests and benches)."""
        base = account.maildir / (f".{folder}" if folder else "")
        for sub in ("tmp", "new", "cur"):
            path = base / sub
            if not path.exists():
                path.mkdir(parents=True)
                os.chown(path, self.uid, self.gid)
        self._seq = getattr(self, "_seq", 0) + 1
        name = f"{time.time_ns()}.P{os.getpid()}Q{self._seq}.supportd-test"
        tmp = base / "tmp" / name
        tmp.write_bytes(raw)
        os.chown(tmp, self.uid, self.gid)
        if when is not None:
            os.utime(tmp, (when, when))
        os.rename(tmp, base / "new" / name)


def lda_binary() -> str | None:
    path = "/usr/lib/dovecot/dovecot-lda"
    plugin = "/usr/lib/dovecot/modules/lib90_sieve_plugin.so"
    return path if os.path.exists(path) and os.path.exists(plugin) else None


def install_sieve(dovecot: Dovecot, account: Account, script: str) -> None:
    """Make `script` the account's active Sieve script (owned by the mail user)."""
    folder = account.home / "sieve"
    folder.mkdir(exist_ok=True)
    target = folder / "active.sieve"
    target.write_text(script)
    link = account.home / ".dovecot.sieve"
    link.symlink_to(target)
    for path in (folder, target):
        os.chown(path, dovecot.uid, dovecot.gid)
    os.lchown(link, dovecot.uid, dovecot.gid)


# What Dovecot 2.3 advertises after login, for configurations that hide some of it.
FULL_CAPABILITIES = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
    "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
    "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE LITERAL+"
)
# Cyrus's default layout (altnamespace: no): every folder lives under "INBOX.".
CYRUS_NAMESPACE = """
namespace inbox {
  inbox = yes
  prefix = INBOX.
  separator = .
}
"""


def older_server(*hidden: str, cyrus_namespace: bool = True) -> str:
    """Configuration for a Dovecot that behaves like an older server: capabilities hidden."""
    caps = " ".join(c for c in FULL_CAPABILITIES.split() if c not in hidden)
    return f"imap_capability = {caps}\n" + (CYRUS_NAMESPACE if cyrus_namespace else "")
