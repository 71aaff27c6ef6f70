from __future__ import annotations

from pathlib import Path

import pytest

from supportd.config import load_settings
from supportd.errors import ConfigError

GOOD = """
[database]
url = "sqlite:///x.db"
[imap]
host = "mail.example"
username = "support"
password = "from-file"
[support]
address = "Support@Example.COM"
product = "WPERP"
agents = ["agent@example.com"]
secret_key = "0123456789abcdef0123"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SUPPORTD_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "supportd.toml"
    path.write_text(text)
    return path


def test_file_values_and_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, GOOD))
    assert s.imap.host == "mail.example" and s.imap.effective_port == 993
    assert s.imap.idle is True and s.imap.folder == "INBOX"
    assert s.support.address == "support@example.com"
    assert s.smtp.effective_port == 587


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTD_IMAP__PORT", "1143")
    monkeypatch.setenv("SUPPORTD_SUPPORT__AGENTS", '["a@x.example", "b@x.example"]')
    s = load_settings(write(tmp_path, GOOD))
    assert s.imap.port == 1143
    assert s.support.agents == ["a@x.example", "b@x.example"]


def test_credentials_directory_supplies_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "imap.password").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    s = load_settings(write(tmp_path, GOOD))
    assert s.imap.password == "from-credential"


def test_config_env_variable_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, GOOD)
    monkeypatch.setenv("SUPPORTD_CONFIG", str(path))
    assert load_settings().imap.host == "mail.example"


def test_unknown_key_is_named_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('folder = "INBOX"', "") + "\n[imap_extra]\nx = 1\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "imap_extra" in str(err.value) and str(path) in str(err.value)


def test_unknown_key_inside_a_section(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('host = "mail.example"', 'host = "mail.example"\nhots = 1'))
    with pytest.raises(ConfigError, match=r"unknown key 'imap\.hots'"):
        load_settings(path)


def test_bad_value_names_key_file_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('host = "mail.example"', 'host = "m"\nport = "abc"'))
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    text = str(err.value)
    assert "imap.port" in text and str(path) in text and "integer" in text


def test_bad_value_from_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPPORTD_IMAP__SECURITY", "ssl")
    with pytest.raises(ConfigError, match="SUPPORTD_IMAP__SECURITY"):
        load_settings(write(tmp_path, GOOD))


def test_missing_required_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing required key 'support\.secret_key'"):
        load_settings(write(tmp_path, GOOD.replace('secret_key = "0123456789abcdef0123"', "")))


def test_password_is_never_echoed(tmp_path: Path) -> None:
    path = write(
        tmp_path, GOOD.replace('secret_key = "0123456789abcdef0123"', 'secret_key = "short"')
    )
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "support.secret_key" in str(err.value) and "short" not in str(err.value).split(":")[-1]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_broken_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[imap\nhost="))


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "supportd.example.toml"
    s = load_settings(example)
    assert s.support.product


def test_a_list_in_a_variable_that_is_not_json_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPPORTD_SUPPORT__AGENTS", "rahim@desk.example")
    with pytest.raises(ConfigError, match=r"SUPPORTD_SUPPORT__AGENTS: cannot be read.*JSON"):
        load_settings(write(tmp_path, GOOD))


def test_a_variable_of_an_unknown_section_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPPORTD_IMAPP__HOST", "mail.example")  # a typo for IMAP
    with pytest.raises(ConfigError, match=r"SUPPORTD_IMAPP__HOST: unknown section 'imapp'"):
        load_settings(write(tmp_path, GOOD))


def test_a_rule_that_is_not_a_regular_expression_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + '\n[classification.rules]\npresales = ["(unclosed"]\n')
    with pytest.raises(ConfigError, match=r"classification\.rules.*'\(unclosed'.*regular"):
        load_settings(path)
