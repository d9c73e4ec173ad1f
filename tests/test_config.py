"""The config file: keys, types, the [email] table, relative paths, and errors as one line (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from logscope import config
from logscope.config import ConfigError

from .conftest import SAMPLES
from .test_cli import run

FULL = """\
tz = "Europe/Berlin"
year = 2024
tls_exclude_ciphers = ["RC4"]
dmarc_paths = ["dmarc", "/srv/dmarc/Maildir"]

[email]
to = ["postmaster@example.org", "ops@example.org"]
from = "logscope@mx1.example.org"
subject = "mail {period}"
template_dir = "templates"
smtp_server = "smtp.example.org"
smtp_port = 587
smtp_security = "tls"
smtp_user = "reports"
smtp_password_file = "secret/smtp.password"
smtp_ca_file = "/etc/ssl/private-ca.pem"
send_empty = true
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "conf" / "config.toml"
    p.parent.mkdir(exist_ok=True)
    p.write_text(text)
    return p


def test_full_config_with_email_table(tmp_path):
    p = write(tmp_path, FULL)
    c = config.load(str(p))
    base = p.parent
    assert c.tz == "Europe/Berlin" and c.year == 2024 and c.tls_exclude_ciphers == ["RC4"]
    # relative paths are relative to the config file, absolute ones stay
    assert c.dmarc_paths == [str(base / "dmarc"), "/srv/dmarc/Maildir"]
    e = c.email
    assert e.to == ["postmaster@example.org", "ops@example.org"] and e.sender == "logscope@mx1.example.org"
    assert (e.subject, e.smtp_server, e.smtp_port, e.smtp_security, e.smtp_user) == (
        "mail {period}", "smtp.example.org", 587, "tls", "reports")
    assert e.template_dir == str(base / "templates")
    assert e.smtp_password_file == str(base / "secret" / "smtp.password")
    assert e.smtp_ca_file == "/etc/ssl/private-ca.pem" and e.send_empty is True


def test_defaults_without_file_and_a_single_recipient_string(tmp_path):
    c = config.Config()
    assert c.dmarc_paths == [] and c.email.to == [] and c.email.smtp_server is None and not c.email.send_empty
    c = config.load(str(write(tmp_path, '[email]\nto = "a@example.org, b@example.org"\n')))
    assert c.email.to == ["a@example.org, b@example.org"]  # split like --email by the report command


@pytest.mark.parametrize("text, said", [
    ("year = \"2024\"\n", "year must be an integer"),
    ("dmarc_paths = \"/srv/dmarc\"\n", "dmarc_paths must be a list of strings"),
    ("parsers_dirs = [1]\n", "parsers_dirs must be a list of strings"),
    ("email = 3\n", "email must be a table"),
    ("[email]\nsmtp_port = 70000\n", "email.smtp_port must be a port number"),
    ("[email]\nsmtp_port = \"587\"\n", "email.smtp_port must be a port number"),
    ("[email]\nsmtp_security = \"ssl\"\n", "email.smtp_security must be one of starttls, tls, none"),
    ("[email]\nsend_empty = \"yes\"\n", "email.send_empty must be true or false"),
    ("[email]\nto = [\"a@example.org\", 5]\n", "email.to must be a string or a list of strings"),
    ("[email]\nsmtp_host = \"x\"\n", "unknown option(s): email.smtp_host"),
    ("smtp_server = \"x\"\n", "unknown option(s): smtp_server"),
    ("[email]\nfrom = \"\"\n", "email.from must be a non-empty string"),
])
def test_wrong_keys_and_types_name_file_and_key(tmp_path, text, said):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(str(p))
    assert str(err.value).startswith(f"{p}: ") and said in str(err.value)
    # the commands say it in one line, exit 2
    proc = run("report", str(SAMPLES / "maillog"), "--config", str(p))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and said in proc.stderr


def test_report_email_settings_come_from_config_and_flags_win(tmp_path):
    """--dry-run shows what would be sent: recipients, sender and subject from [email], then from flags."""
    import email
    import email.policy
    p = write(tmp_path, '[email]\nto = ["cfg@example.org"]\nfrom = "cfg-sender@example.org"\n'
                        'subject = "from config {received}"\n')
    eml = tmp_path / "m.eml"
    proc = run("report", str(SAMPLES / "maillog"), "--tz", "UTC", "--config", str(p), "--email", "--dry-run", str(eml),
               "--no-alerts")
    assert proc.returncode == 0, proc.stderr
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert msg["To"] == "cfg@example.org" and msg["From"] == "cfg-sender@example.org"
    assert msg["Subject"].startswith("from config ") and msg["Subject"] != "from config {received}"
    proc = run("report", str(SAMPLES / "maillog"), "--tz", "UTC", "--config", str(p), "--email", "flag@example.org",
               "--from", "flag-sender@example.org", "--subject", "from flag", "--dry-run", str(eml), "--no-alerts")
    assert proc.returncode == 0, proc.stderr
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert (msg["To"], msg["From"], msg["Subject"]) == ("flag@example.org", "flag-sender@example.org", "from flag")
    # no recipient anywhere: a usage error before any work
    proc = run("report", str(SAMPLES / "maillog"), "--email", "--dry-run", str(eml))
    assert proc.returncode == 2 and "no recipients" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_parsers_dirs_are_relative_to_the_config_file(tmp_path):
    """parsers_dirs = ["parsers.d"] in /etc/logscope/config.toml means /etc/logscope/parsers.d, from any cwd."""
    p = write(tmp_path, 'parsers_dirs = ["parsers.d"]\n')
    d = p.parent / "parsers.d"
    d.mkdir()
    (d / "x.toml").write_text('[source]\nname = "postfix"\n[[event]]\nkind = "warning"\nmatch = "%{NOPE}"\n')
    assert config.load(str(p)).parsers_dirs == [str(d)]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run("parsers", "--config", str(p), cwd=elsewhere)
    assert r.returncode == 2 and r.stderr.startswith(f"logscope: {d / 'x.toml'}:5:"), r.stderr
