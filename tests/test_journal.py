"""The systemd journal input, on real journal files.

The files are built by ``systemd-journal-remote`` (Debian package
``systemd-journal-remote``) from journal export format, and read back by the
real ``journalctl`` through ``logscope tail --journal-file``. Tests that need
the binaries skip, saying which, where they are absent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from logscope.engine import parse_lines
from logscope.header import HeaderOptions
from logscope.sources.journal import journal_to_lines

REMOTE = next((p for p in ("/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote")
               if os.path.exists(p)), None)
JOURNALCTL = shutil.which("journalctl")
needs_journal = pytest.mark.skipif(
    REMOTE is None or JOURNALCTL is None,
    reason="needs journalctl and systemd-journal-remote (apt-get install systemd-journal-remote)")

T0 = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z in microseconds
BOOT = "0123456789abcdef0123456789abcdef"


def export(entries: list[dict]) -> bytes:
    """Journal export format; bytes values are written as binary fields."""
    out = b""
    for e in entries:
        rec = b""
        for k, v in e.items():
            if isinstance(v, bytes):
                rec += k.encode() + b"\n" + struct.pack("<Q", len(v)) + v + b"\n"
            else:
                rec += f"{k}={v}\n".encode()
        out += rec + b"\n"
    return out


def entry(i: int, ident: str, msg, unit: str, pid: int = 100, host: str = "mx1") -> dict:
    return {"__REALTIME_TIMESTAMP": T0 + i * 1_000_000, "__MONOTONIC_TIMESTAMP": 1_000_000 + i,
            "_BOOT_ID": BOOT, "_HOSTNAME": host, "SYSLOG_IDENTIFIER": ident, "_PID": pid,
            "_SYSTEMD_UNIT": unit, "PRIORITY": 6, "MESSAGE": msg}


def postfix(i: int) -> dict:
    return entry(i, "postfix/smtpd", f"connect from c{i}.example[192.0.2.{i % 250 + 1}]", "postfix@-.service")


def dovecot(i: int) -> dict:
    return entry(i, "dovecot", f"imap-login: Login: user=<u{i}>, method=PLAIN, rip=192.0.2.9, lip=192.0.2.1, "
                                f"mpid={i}, TLS, session=<abc{i}>", "dovecot.service", pid=200)


def write_journal(path: Path, entries: list[dict]) -> None:
    """Append ``entries`` to the journal file ``path`` (created if missing)."""
    done = subprocess.run([REMOTE, f"--output={path}", "-"], input=export(entries), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()


def tail_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "logscope", "tail", "--tz", "UTC", "--no-metrics", *args]


def stats_of(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def wait_for(cond, timeout: float = 20.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_entries_become_syslog_lines_the_parser_reads(parser_set):
    raw = [
        {"__REALTIME_TIMESTAMP": str(T0 + 1_500_000), "_HOSTNAME": "mx1", "SYSLOG_IDENTIFIER": "postfix/smtpd",
         "SYSLOG_PID": "123", "_PID": "999", "MESSAGE": "connect from a.example[192.0.2.1]"},
        {"__REALTIME_TIMESTAMP": str(T0), "_HOSTNAME": "mx1", "SYSLOG_IDENTIFIER": "dovecot", "_PID": "5",
         "MESSAGE": list(b"bad \xff byte")},  # not UTF-8: journalctl gives a byte array
        {"__REALTIME_TIMESTAMP": str(T0), "_COMM": "exim4", "MESSAGE": "two\nlines"},  # no host, no pid
        {"__REALTIME_TIMESTAMP": str(T0), "SYSLOG_IDENTIFIER": ["rspamd", "rspamd"], "MESSAGE": "[brackets]"},
        {"MESSAGE": None},
    ]
    frame = pl.DataFrame({"line": [json.dumps(r) for r in raw]})
    out = journal_to_lines(frame)["line"].to_list()
    assert out == [
        "2025-01-01T00:00:01.500000+00:00 mx1 postfix/smtpd[123]: connect from a.example[192.0.2.1]",
        "2025-01-01T00:00:00.000000+00:00 mx1 dovecot[5]: bad \ufffd byte",
        "2025-01-01T00:00:00.000000+00:00 exim4: two#012lines",
        "2025-01-01T00:00:00.000000+00:00 rspamd: [brackets]",
        "1970-01-01T00:00:00.000000+00:00 journal: ",
    ]
    events = parse_lines(out, parser_set, HeaderOptions(tz="Europe/Berlin"))
    first = events.row(0, named=True)
    assert (first["source"], first["kind"], first["host"], first["program"], first["pid"], first["client_ip"]) == \
        ("postfix", "smtpd_connect", "mx1", "postfix/smtpd", 123, "192.0.2.1")
    assert str(first["ts"]) == "2025-01-01 00:00:01.500000+00:00"  # RFC 3339 with zone: --tz does not shift it
    assert events["program"].to_list()[1:4] == ["dovecot", "exim4", "rspamd"]


@needs_journal
def test_journal_file_resumes_at_its_cursor(tmp_path):
    j, state, stats = tmp_path / "mail.journal", tmp_path / "state", tmp_path / "stats.json"
    binary = entry(2, "postfix/smtpd", b"connect from bin\xff.example[192.0.2.7]", "postfix@-.service")
    write_journal(j, [postfix(0), dovecot(1), binary, entry(3, "postfix/qmgr", "multi\nline", "postfix@-.service")])
    args = ["--journal-file", str(j), "--state-dir", str(state), "--stats-file", str(stats), "--once"]
    first = subprocess.run(tail_cmd(*args, "--from-start"), capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    got = stats_of(stats)
    assert got["lines"] == 4
    assert got["sources"]["postfix"]["smtpd_connect"] == 2  # the byte-array MESSAGE included
    assert got["sources"]["dovecot"] == {"dovecot_login": 1}
    saved = json.loads((state / "tail.json").read_text())
    (cp,) = saved["inputs"].values()
    assert cp["cursor"].startswith("s=")
    write_journal(j, [postfix(10), postfix(11), dovecot(12)])
    second = subprocess.run(tail_cmd(*args), capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    got = stats_of(stats)
    assert got["lines"] == 7  # only the three new entries
    assert got["sources"]["postfix"]["smtpd_connect"] == 4
    assert got["sources"]["dovecot"] == {"dovecot_login": 2}


@needs_journal
def test_units_and_matches_filter(tmp_path):
    d = tmp_path / "journal"
    d.mkdir()
    write_journal(d / "system.journal", [postfix(0), dovecot(1), postfix(2)])

    def run(*extra: str) -> dict:
        stats = tmp_path / f"s{len(list(tmp_path.iterdir()))}.json"
        done = subprocess.run(tail_cmd("--journal-dir", str(d), "--state-dir", str(tmp_path / "st"),
                                       "--state-name", stats.stem, "--stats-file", str(stats),
                                       "--once", "--from-start", *extra), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return stats_of(stats)["sources"]

    assert run("--journal", "postfix@-.service") == {"postfix": {"smtpd_connect": 2}}
    assert run("--journal-match", "SYSLOG_IDENTIFIER=dovecot") == {"dovecot": {"dovecot_login": 1}}
    assert run() == {"postfix": {"smtpd_connect": 2}, "dovecot": {"dovecot_login": 1}}


@needs_journal
def test_follow_from_end_sees_new_entries_and_stops_on_sigterm(tmp_path):
    j, state, stats = tmp_path / "mail.journal", tmp_path / "state", tmp_path / "stats.json"
    write_journal(j, [postfix(i) for i in range(5)])  # there before the start: not counted (--from-end)
    proc = subprocess.Popen(tail_cmd("--journal-file", str(j), "--state-dir", str(state), "--stats-file", str(stats),
                                     "--quiet"), stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "lines" in stats_of(stats), what="start")
        time.sleep(1.0)  # journalctl --follow is running
        write_journal(j, [dovecot(10), postfix(11)])
        wait_for(lambda: stats_of(stats).get("lines") == 2, what="two new entries")
        assert stats_of(stats)["sources"] == {"dovecot": {"dovecot_login": 1}, "postfix": {"smtpd_connect": 1}}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "<6>journal: no checkpoint, starting after the newest entry" in proc.stderr.read()
    again = subprocess.run(tail_cmd("--journal-file", str(j), "--state-dir", str(state), "--stats-file", str(stats),
                                    "--once"), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and stats_of(stats)["lines"] == 2  # nothing read twice


def test_missing_journalctl_is_a_usage_error(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no journalctl on this PATH
    done = subprocess.run(tail_cmd("--journal", "--once", "--state-dir", str(tmp_path / "st")),
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert done.stderr.strip() == "logscope: --journal needs journalctl (systemd), which is not installed"
