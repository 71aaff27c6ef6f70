"""The command line as an operator uses it: a subprocess, a TOML file, real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import desk_config, write_toml
from tests.support.desk import append
from tests.support.dovecot import Account, Dovecot, free_port
from tests.support.mail import make_mail


def supportd(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "supportd", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
    )


@pytest.fixture
def smtp_port() -> Iterator[int]:
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            return "250 OK"

    controller = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port
    controller.stop()


@pytest.fixture
def config(tmp_path: Path, db_url: str, dovecot: Dovecot, account: Account, smtp_port: int) -> Path:
    data = desk_config(db_url, account, dovecot.port, smtp__port=smtp_port)
    return write_toml(tmp_path / "supportd.toml", data)


def test_run_refuses_an_unmigrated_database(config: Path) -> None:
    result = supportd(config, "run", "--once")
    assert result.returncode == 1
    assert "supportd migrate" in result.stderr


def test_migrate_run_once_and_read_tickets(
    config: Path, dovecot: Dovecot, account: Account
) -> None:
    append(
        dovecot,
        account,
        make_mail(message_id="<c1@customer.example>"),
        make_mail(
            subject="Re: Help",
            message_id="<c2@customer.example>",
            In_Reply_To="<c1@customer.example>",
        ),
        make_mail(sender="zed@other.example", subject="Licence question", message_id="<z@o>"),
    )
    first = supportd(config, "migrate")
    assert first.returncode == 0, first.stderr
    assert supportd(config, "migrate").stdout.strip().endswith("(unchanged)")
    run = supportd(config, "run", "--once")
    assert run.returncode == 0, run.stderr
    assert "stored 3" in run.stdout and "new tickets 2" in run.stdout

    listed = json.loads(supportd(config, "tickets", "list", "--json").stdout)
    assert [t["message_count"] for t in listed] == [2, 1]
    required = {
        "number",
        "subject",
        "requester",
        "status",
        "category",
        "created_at",
        "first_response_due",
        "first_responded_at",
        "escalation_level",
        "message_count",
    }
    assert required <= set(listed[0])
    assert listed[0]["status"] in ("open", "pending", "closed")
    assert listed[0]["category"] == "installation"  # "Help with installation"
    assert listed[0]["first_response_due"] is not None

    shown = json.loads(
        supportd(config, "tickets", "show", str(listed[0]["number"]), "--json").stdout
    )
    assert {"direction", "kind", "from", "to", "subject", "message_id", "date", "text"} <= set(
        shown["messages"][0]
    )
    assert [(m["direction"], m["kind"]) for m in shown["messages"]] == [
        ("in", "customer"),
        ("in", "customer"),
        ("out", "auto_reply"),
        ("out", "notification"),  # each customer message, to the one agent
        ("out", "notification"),
    ]

    table = supportd(config, "tickets", "list").stdout
    assert "Licence question" in table and "alice@customer.example" in table
    text = supportd(config, "tickets", "show", str(listed[0]["number"])).stdout
    assert "The installer stops." in text

    lines = supportd(config, "tickets", "export").stdout.splitlines()
    assert [json.loads(line)["number"] for line in lines] == [t["number"] for t in listed]
    assert all("messages" in json.loads(line) for line in lines)

    missing = supportd(config, "tickets", "show", "999")
    assert missing.returncode == 1 and "no ticket 999" in missing.stderr


def test_quarantine_list_and_replay(config: Path, dovecot: Dovecot, account: Account) -> None:
    # A message the parser cannot read: the real ingest path, with a parser that refuses.
    assert supportd(config, "migrate").returncode == 0
    append(dovecot, account, make_mail(subject="needs replay", message_id="<r@x>"))
    from supportd.bootstrap import build_desk, build_engine
    from supportd.config import load_settings
    from supportd.entrypoints.daemon import Runner

    settings = load_settings(config)
    desk = build_desk(settings, engine=build_engine(settings))
    desk.ingestor.parse_many = lambda raws: [ValueError("unreadable") for _ in raws]
    desk.ingestor.parse_async = None
    try:
        stats = Runner(desk).run_once()
    finally:
        desk.close()
    assert stats.quarantined == 1

    listed = json.loads(supportd(config, "quarantine", "list", "--json").stdout)
    assert len(listed) == 1
    assert {"id", "mailbox", "uid", "error", "created_at"} <= set(listed[0])
    assert "unreadable" in listed[0]["error"]
    assert "unreadable" in supportd(config, "quarantine", "list").stdout

    replay = supportd(config, "quarantine", "replay", str(listed[0]["id"]))
    assert replay.returncode == 0, replay.stderr
    assert json.loads(supportd(config, "quarantine", "list", "--json").stdout) == []
    tickets = json.loads(supportd(config, "tickets", "list", "--json").stdout)
    assert [t["subject"] for t in tickets] == ["needs replay"]
    again = supportd(config, "quarantine", "replay", str(listed[0]["id"]))
    assert again.returncode == 1 and "already replayed" in again.stderr


def test_check_passes_against_live_servers(config: Path) -> None:
    supportd(config, "migrate")
    result = supportd(config, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["ok"] * 6
    assert "10 FAQ entries" in result.stdout and "Saturday to Thursday" in result.stdout
    assert "nobody serves imap://" in result.stdout


def test_check_names_each_failure(config: Path, tmp_path: Path) -> None:
    env = {"SUPPORTD_IMAP__PASSWORD": "wrong", "SUPPORTD_SMTP__PORT": str(free_port())}
    result = supportd(config, "check", env=env)
    assert result.returncode == 1
    lines = {line.split()[1].rstrip(":"): line for line in result.stdout.splitlines()}
    assert lines["config"].startswith("ok")
    assert lines["database"].startswith("FAIL") and "supportd migrate" in lines["database"]
    assert lines["imap"].startswith("FAIL") and "login refused" in lines["imap"]
    assert "wrong" not in lines["imap"].replace("wrong-", "")
    assert lines["smtp"].startswith("FAIL") and "127.0.0.1" in lines["smtp"]


def test_check_names_a_bad_faq_file(config: Path, tmp_path: Path) -> None:
    broken = tmp_path / "faq.toml"
    broken.write_text("[[entry]]\nquestion = 'no answer'\n")
    result = supportd(config, "check", env={"SUPPORTD_SUPPORT__FAQ_FILE": str(broken)})
    assert result.returncode == 1
    [line] = [x for x in result.stdout.splitlines() if x.startswith("FAIL replies")]
    assert "support.faq_file" in line and str(broken) in line


def test_bad_config_names_key_and_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[imap]\nhost = "h"\nusername = "u"\npassword = "p"\nport = "x"\n'
        '[support]\naddress = "s@x.example"\nsecret_key = "0123456789abcdef"\n'
    )
    result = supportd(bad, "run", "--once")
    assert result.returncode == 1
    assert "imap.port" in result.stderr and str(bad) in result.stderr
    check = supportd(bad, "check")
    assert check.returncode == 1 and check.stdout.startswith("FAIL config")


def test_missing_config_file_is_explained(tmp_path: Path) -> None:
    result = supportd(tmp_path / "absent.toml", "tickets", "list")
    assert result.returncode == 1 and "not found" in result.stderr


def test_outbox_list_and_retry(config: Path, dovecot: Dovecot, account: Account) -> None:
    assert supportd(config, "migrate").returncode == 0
    append(dovecot, account, make_mail())
    closed = {"SUPPORTD_SMTP__PORT": str(free_port())}  # SMTP unreachable: the ack waits
    assert supportd(config, "run", "--once", env=closed).returncode == 0
    rows = json.loads(supportd(config, "outbox", "list", "--json").stdout)
    assert sorted(r["kind"] for r in rows) == ["auto_reply", "notification"]
    [row] = [r for r in rows if r["kind"] == "auto_reply"]
    assert row["status"] == "pending"
    assert row["to"] == "alice@customer.example" and row["attempts"] == 1
    assert "Connect" in row["last_error"] or "connect" in row["last_error"]
    assert "auto_reply" in supportd(config, "outbox", "list").stdout
    [newest] = json.loads(supportd(config, "outbox", "list", "--json", "--limit", "1").stdout)
    assert newest["id"] == max(r["id"] for r in rows)
    assert len(json.loads(supportd(config, "outbox", "list", "--json", "--limit", "0").stdout)) == 2
    negative = supportd(config, "outbox", "list", "--limit", "-1")
    assert negative.returncode == 2 and "--limit" in negative.stderr
    retried = supportd(config, "outbox", "retry", str(row["id"]))
    assert retried.returncode == 0 and "queued" in retried.stdout
    assert supportd(config, "run", "--once").returncode == 0  # now the sink answers
    [sent] = json.loads(supportd(config, "outbox", "list", "--json", "--status", "sent").stdout)
    assert sent["id"] == row["id"]
    missing = supportd(config, "outbox", "retry", "999")
    assert missing.returncode == 1 and "999" in missing.stderr


def test_classify_train_and_evaluate(tmp_path: Path) -> None:
    from tests.unit.test_model import CLEAR

    data = tmp_path / "labelled.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"subject": s, "text": t, "category": c})
            for c, cases in CLEAR.items()
            for s, t in cases * 3
        )
    )
    model = tmp_path / "model.json"
    config = tmp_path / "none.toml"  # these commands need no configuration
    trained = supportd(config, "classify", "train", str(data), "--out", str(model))
    assert trained.returncode == 0, trained.stderr
    assert "trained on 54 mails" in trained.stdout and model.exists()
    evaluated = supportd(config, "classify", "evaluate", str(data), "--model", str(model))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "macro-F1" in evaluated.stdout and "confusion" in evaluated.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"subject": "x", "text": "y", "category": "pricing"}\n')
    refused = supportd(config, "classify", "train", str(bad), "--out", str(model))
    assert refused.returncode == 1 and "bad.jsonl:1: unknown category 'pricing'" in refused.stderr


@pytest.mark.parametrize("command", [("migrate",), ("tickets", "list"), ("run", "--once")])
def test_a_database_that_cannot_be_opened_is_one_line(tmp_path: Path, command: tuple[str]) -> None:
    missing = tmp_path / "no-such-folder" / "desk.db"
    config = write_toml(tmp_path / "supportd.toml", desk_config(f"sqlite:///{missing}", None, 1))
    result = supportd(config, *command)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("supportd: database.url: the database refused: unable to open")


def test_check_does_not_call_an_unknown_owner_ok(tmp_path: Path) -> None:
    """With PostgreSQL unreachable, who owns the mailbox is unknown: a failure, not ok."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    config = write_toml(tmp_path / "supportd.toml", desk_config(url, None, free_port()))
    result = supportd(config, "check")
    assert result.returncode == 1
    assert "FAIL owner: cannot tell who serves" in result.stdout
    assert "ok   owner" not in result.stdout
