"""The configuration file (TOML) and its defaults; every option is also a CLI flag.

Looked up at ``--config PATH``, else ``$XDG_CONFIG_HOME/logscope/config.toml``,
else ``/etc/logscope/config.toml``; none is needed. Keys::

    tz = "Europe/Berlin"              # zone of timestamps that carry none (default: the machine's)
    year = 2024                       # year of BSD timestamps (default: from file mtime)
    parsers_dirs = ["/etc/logscope/parsers"]   # extra parser files
    syslog_names = ["postfix-out"]    # more postfix syslog_name values
    program = "postfix/smtpd"         # program of lines without syslog header
    tls_exclude_ciphers = ["RC4", "3DES"]   # report: TLS readiness, what excluding these ciphers breaks
    blocklist_rules = ["id=8", "MY_BL"]     # report: your own rule texts/symbols; those that never fire are listed
    dmarc_paths = ["/var/mail/dmarc"]       # report --email: DMARC reports (files, dirs, Maildir, mbox)
    dmarc_dirs = ["/var/mail/dmarc"]        # tail: directories (or Maildirs) of DMARC/TLS reports to watch
    dmarc_domains = ["example.org"]         # tail: your policy domains, the policy_domain label values

    [email]                           # report --email; each key is also a flag, and the flag wins
    to = ["postmaster@example.org"]   # recipients (--email with no address uses these)
    from = "logscope@mx1.example.org" # sender (--from; default logscope@FQDN)
    subject = "mail report {period}"  # --subject
    template_dir = "templates"        # --template-dir
    smtp_server = "smtp.example.org"  # --smtp HOST[:PORT] (default localhost)
    smtp_port = 587                   # default 25, 465 with smtp_security = "tls"
    smtp_security = "starttls"        # --smtp-security: starttls | tls | none
    smtp_user = "reports"             # --smtp-user
    smtp_password_file = "smtp.password"   # --smtp-password-file (else $LOGSCOPE_SMTP_PASSWORD)
    smtp_ca_file = "ca.pem"           # --smtp-ca-file
    send_empty = false                # --send-empty

Relative paths in ``parsers_dirs``, ``dmarc_paths``, ``dmarc_dirs`` and ``[email]`` are relative to the
config file (paths given as flags are relative to the working directory).
A key of the wrong type is an error naming the file and the key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ConfigError(ValueError):
    """A user error in the configuration or its flags (exit status 2)."""


@dataclass
class EmailConfig:
    """The ``[email]`` table: defaults of ``report --email``'s flags (None: not set)."""

    to: list[str] = field(default_factory=list)
    sender: str | None = None  # the key is ``from``
    subject: str | None = None
    template_dir: str | None = None
    smtp_server: str | None = None
    smtp_port: int | None = None
    smtp_security: str | None = None
    smtp_user: str | None = None
    smtp_password_file: str | None = None
    smtp_ca_file: str | None = None
    send_empty: bool = False


EMAIL_PATHS = ("template_dir", "smtp_password_file", "smtp_ca_file")
SMTP_SECURITY = ("starttls", "tls", "none")
ARCHIVE_RETENTION_DAYS = 90  # default of ingest/tail --retention-days
SMTP_PASSWORD_ENV = "LOGSCOPE_SMTP_PASSWORD"
EMAIL_SUBJECT = "logscope weekly report {period}"  # default subject template of report --email


@dataclass
class Config:
    tz: str | None = None
    year: int | None = None
    parsers_dirs: list[str] = field(default_factory=list)
    syslog_names: list[str] = field(default_factory=list)
    program: str | None = None
    tls_exclude_ciphers: list[str] = field(default_factory=list)  # report: TLS readiness cipher tokens
    blocklist_rules: list[str] = field(default_factory=list)  # report: your own rules, to find stale ones
    dmarc_dirs: list[str] = field(default_factory=list)  # tail: DMARC/TLS report directories to watch
    dmarc_domains: list[str] = field(default_factory=list)  # tail: policy_domain label values of the DMARC metrics
    dmarc_paths: list[str] = field(default_factory=list)  # report --email: DMARC aggregate reports
    email: EmailConfig = field(default_factory=EmailConfig)


_LIST = "a list of strings"
# the type each key must have: (check, what the error calls it)
_TYPES = {
    "tz": (lambda v: isinstance(v, str), "a string"),
    "year": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "program": (lambda v: isinstance(v, str), "a string"),
    **{k: (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), _LIST)
       for k in ("parsers_dirs", "syslog_names", "tls_exclude_ciphers", "blocklist_rules", "dmarc_paths",
                 "dmarc_dirs", "dmarc_domains")},
    "email": (lambda v: isinstance(v, dict), "a table ([email])"),
}
_EMAIL_TYPES = {
    "to": (lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
           "a string or a list of strings"),
    "smtp_port": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536,
                  "a port number (1-65535)"),
    "smtp_security": (lambda v: v in SMTP_SECURITY, f"one of {', '.join(SMTP_SECURITY)}"),
    "send_empty": (lambda v: isinstance(v, bool), "true or false"),
    **{k: (lambda v: isinstance(v, str) and v != "", "a non-empty string")
       for k in ("from", "subject", "template_dir", "smtp_server", "smtp_user", "smtp_password_file",
                 "smtp_ca_file")},
}


def default_path() -> Path | None:
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    for p in (Path(xdg) / "logscope" / "config.toml", Path("/etc/logscope/config.toml")):
        if p.is_file():
            return p
    return None


def load(path: str | None) -> Config:
    """Read the config file (an explicit path must exist)."""
    p = Path(path) if path else default_path()
    if p is None:
        return Config()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    return from_dict(data, p)


def from_dict(data: dict, origin: Path) -> Config:
    """A Config from the parsed TOML of ``origin``: keys and types checked, relative paths resolved."""
    _check(data, _TYPES, origin, "")
    base = origin.parent
    email = dict(data.pop("email", {}))
    _check(email, _EMAIL_TYPES, origin, "email.")
    if isinstance(email.get("to"), str):
        email["to"] = [email["to"]]
    if "from" in email:
        email["sender"] = email.pop("from")
    for key in EMAIL_PATHS:
        if key in email:
            email[key] = str(base / email[key])
    if "dmarc_paths" in data:
        data["dmarc_paths"] = [str(base / d) if d != "-" else d for d in data["dmarc_paths"]]
    for key in ("dmarc_dirs", "parsers_dirs"):
        if key in data:
            data[key] = [str(base / d) for d in data[key]]
    return Config(**data, email=EmailConfig(**email))


def _check(data: dict, types: dict, origin: Path, prefix: str) -> None:
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise ConfigError(f"{origin}: unknown option(s): {', '.join(prefix + k for k in unknown)}")
    for key, value in data.items():
        ok, what = types[key]
        if not ok(value):
            raise ConfigError(f"{origin}: {prefix}{key} must be {what}, not {value!r:.60}")


def local_timezone() -> str:
    """The machine's IANA zone name: $TZ, /etc/timezone, or the /etc/localtime link; else UTC."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and _valid_tz(tz):
        return tz
    try:
        name = Path("/etc/timezone").read_text().strip()
        if _valid_tz(name):
            return name
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            name = target.split("zoneinfo/", 1)[1]
            if _valid_tz(name):
                return name
    except OSError:
        pass
    return "UTC"


def _valid_tz(name: str) -> bool:
    try:
        ZoneInfo(name)
        return True
    except (ZoneInfoNotFoundError, ValueError):
        return False


def check_tz(name: str) -> str:
    if not _valid_tz(name):
        raise ConfigError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)")
    return name
