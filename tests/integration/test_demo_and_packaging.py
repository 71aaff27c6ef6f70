"""The quick start's first command, the systemd unit, and the wheel carrying migrations."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_demo_threads_sample_mail_into_tickets_and_leaves_nothing_behind() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supportd", "demo"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "stored 5, duplicates 0, quarantined 0, new tickets 4" in out
    assert "#1 [open] 'Cannot install WPERP on PHP 8.2'" in out and "(2 message(s))" in out
    assert "mallory@elsewhere.example (1 message(s))" in out
    assert "automatic: Auto-Submitted: auto-replied" in out
    # The mail that arrived three days ago breached its target: one escalation to the lead.
    assert "The team lead received 1 escalation(s)" in out
    assert "Subject: [WPERP #4] SLA breached: Payroll export fails every month" in out
    # Alice, Mallory and Dana are acknowledged; Carol's out-of-office reply is not answered.
    assert "The SMTP sink received 3 acknowledgement(s)" in out
    assert "To: Alice Rahman <alice@customer.example>" in out
    assert "Subject: [WPERP #1] Cannot install WPERP on PHP 8.2" in out
    assert "To: Carol" not in out
    # The agents' loop: notification with a reply token, a Thunderbird reply, the relay
    # with only the new words, and an internal note that reaches the other agent only.
    assert "Reply-To: support+1-" in out
    relayed = out.split("Alice receives 1 mail(s), only the new words:")[1].split("#note")[0]
    assert 'From: "Rahim Uddin (WPERP Support)" <support@demo.example>' in relayed
    assert "memory_limit = 256M" in relayed and "Cc: bob@customer.example" in relayed
    assert "wrote:" not in relayed and "Reply above this line" not in relayed
    note = out.split("replies with #note: it goes to Rahim Uddin only:")[1].split("Ticket #1")[0]
    assert "To: Rahim Uddin <rahim@demo.example>" in note and "opcache" in note
    assert "alice@" not in note
    assert "first response at 20" in out
    folder = next(line.split()[1] for line in out.splitlines() if line.startswith("database:"))
    assert not Path(folder).exists()


def test_demo_keep_leaves_a_config_to_look_at_its_tickets_with() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supportd", "demo", "--keep"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    [kept] = [line for line in result.stdout.splitlines() if line.startswith("kept ")]
    config = kept.split("--config ")[1].split()[0]
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "supportd", "--config", config, "tickets", "list", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        assert len(json.loads(listed.stdout)) == 4
    finally:
        shutil.rmtree(Path(config).parent, ignore_errors=True)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies() -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(ROOT / "systemd" / "supportd.service")],
        capture_output=True,
        text=True,
    )
    # Missing /usr/bin/supportd or user on a build host is fine; syntax errors are not.
    bad = [
        line
        for line in result.stderr.splitlines()
        if "Unknown" in line or "Invalid" in line or "Failed to parse" in line
    ]
    assert bad == []


def test_wheel_carries_the_migrations_templates_and_model(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    [wheel] = tmp_path.glob("supportd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "supportd/migrations/env.py" in names
    assert "supportd/defaults/templates/acknowledgement.txt.j2" in names
    assert "supportd/defaults/faq.toml" in names
    assert "supportd/data/classifier.json" in names  # the trained model ships with the code
    assert "supportd/defaults/templates/notification.txt.j2" in names
    assert any(n.startswith("supportd/migrations/versions/0001") for n in names)
