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
class Config:
    tz: str | None = None
    year: int | None = None
    parsers_dirs: list[str] = field(default_factory=list)
    syslog_names: list[str] = field(default_factory=list)
    program: str | None = None
    tls_exclude_ciphers: list[str] = field(default_factory=list)  # report: TLS readiness cipher tokens
    blocklist_rules: list[str] = field(default_factory=list)  # report: your own rules, to find stale ones


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
    known = set(Config.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{p}: unknown option(s): {', '.join(sorted(unknown))}")
    return Config(**data)


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
