"""Syslog header formats, year inference and time zones."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pytest

from logscope.header import HeaderOptions, parse_header


def header(lines, **kw):
    return parse_header(pl.DataFrame({"line": lines}), HeaderOptions(**kw)).to_dicts()


def utc(*a):
    return datetime(*a, tzinfo=timezone.utc)


@pytest.mark.parametrize("line", [
    "Mar  7 02:09:33 mx postfix/smtpd[27246]: connect from a[1.2.3.4]",
    "Mar 07 02:09:33 mx postfix/smtpd[27246]: connect from a[1.2.3.4]",
    "Mar 7 02:09:33 mx postfix/smtpd[27246]: connect from a[1.2.3.4]",
])
def test_bsd_day_padding(line):
    (row,) = header([line], year=2024)
    assert row["ts"] == utc(2024, 3, 7, 2, 9, 33)
    assert (row["host"], row["program"], row["pid"]) == ("mx", "postfix/smtpd", 27246)
    assert row["message"] == "connect from a[1.2.3.4]"


def test_program_names_as_postfix_writes_them():
    rows = header([
        "Mar  7 02:09:33 mx postfix/submission/smtpd[1]: x",
        "Mar  7 02:09:33 mx postfix-mx2/smtpd[2]: y",
        "Mar  7 02:09:33 mx postfix-smo/submission/smtpd[22427]: z",
    ], year=2024)
    assert [r["program"] for r in rows] == ["postfix/submission/smtpd", "postfix-mx2/smtpd", "postfix-smo/submission/smtpd"]


def test_rfc3339_with_fraction_and_offset():
    (row,) = header(["2016-03-20T13:30:53.574978+01:00 tron postfix/smtpd[32655]: too many errors after RCPT from unknown[1.2.3.4]"])
    assert row["ts"] == utc(2016, 3, 20, 12, 30, 53, 574978)
    assert (row["host"], row["program"], row["pid"]) == ("tron", "postfix/smtpd", 32655)


def test_rfc5424_with_pri():
    (row,) = header(['<22>1 2024-05-01T10:00:00.5Z mx postfix/smtpd 4242 - [meta x="1"] connect from a[1.2.3.4]'])
    assert row["ts"] == utc(2024, 5, 1, 10, 0, 0, 500000)
    assert (row["host"], row["program"], row["pid"]) == ("mx", "postfix/smtpd", 4242)
    assert row["message"] == "connect from a[1.2.3.4]"


def test_pri_prefix_on_bsd_and_asa_device_year():
    rows = header([
        "<190>May 14 15:10:46 fw1 : %ASA-6-106015: Deny TCP (no connection)",
        "Oct 10 2019 10:21:36 fw1 : %ASA-6-302021: Teardown ICMP connection",
        "%ASA-2-106001: Inbound TCP connection denied",
    ], year=2024)
    assert rows[0]["ts"] == utc(2024, 5, 14, 15, 10, 46) and rows[0]["host"] == "fw1"
    assert rows[0]["message"].startswith("%ASA-6-106015")
    assert rows[1]["ts"] == utc(2019, 10, 10, 10, 21, 36)
    assert rows[2]["ts"] is None and rows[2]["message"].startswith("%ASA-2-106001")


def test_exim_rspamd_dovecot_file_formats():
    rows = header([
        "2017-07-30 18:51:05.712 [10099] H=(x) [1.2.3.4] F=<a@b> rejected RCPT <c@d>: relay not permitted",
        "2013-06-10 18:33:32 1Ov4tU-0000Nz-Rm <= a@b H=x [1.2.3.4] P=esmtp S=100",
        "2016-05-10 11:51:17 #47219(normal) <162cd1>; task; rspamd_task_write_log: id: <x>",
        "2013-08-11 03:56:40 auth-worker(default): Info: pam(u,1.2.3.4): unknown user",
    ])
    assert rows[0]["hint"] == "exim" and rows[0]["pid"] == 10099
    assert rows[0]["ts"] == utc(2017, 7, 30, 18, 51, 5, 712000)
    assert rows[1]["hint"] == "exim" and rows[1]["message"].startswith("1Ov4tU-0000Nz-Rm <=")
    assert rows[2]["program"] == "rspamd" and rows[2]["pid"] == 47219
    assert rows[2]["message"] == "(normal) <162cd1>; task; rspamd_task_write_log: id: <x>"
    assert rows[3]["program"] == "auth-worker(default)" and rows[3]["level"] == "info"


def test_lines_without_host():
    rows = header(["Jan 29 09:33:58 pop3-login: Info: Aborted login", "Jun 12 11:48:12 auth-worker(80180): Info: x"], year=2024)
    assert [r["host"] for r in rows] == [None, None]
    assert [r["program"] for r in rows] == ["pop3-login", "auth-worker(80180)"]


def test_tai64n():
    (row,) = header(["@400000004c91b044077a9e94 imap-login: Info: Aborted login"])
    assert row["program"] == "imap-login"
    assert row["ts"] == utc(2010, 9, 16, 5, 50, 50)


def test_year_rollover_within_a_file_and_old_rotated_files():
    anchor = datetime(2025, 1, 2, 12, 0, tzinfo=timezone.utc)
    rows = header(["Dec 30 23:59:59 mx p[1]: a", "Dec 31 23:59:59 mx p[1]: b", "Jan  1 00:00:01 mx p[1]: c"], anchor=anchor)
    assert [r["ts"].year for r in rows] == [2024, 2024, 2025]
    # a file rotated in March 2023 keeps its own year
    rows = header(["Mar  1 10:00:00 mx p[1]: a"], anchor=datetime(2023, 3, 2, tzinfo=timezone.utc))
    assert rows[0]["ts"] == utc(2023, 3, 1, 10)
    # --year wins
    rows = header(["Dec 30 23:59:59 mx p[1]: a"], anchor=anchor, year=2020)
    assert rows[0]["ts"].year == 2020


def test_feb_29_read_in_a_year_without_it_is_last_years():
    """A log of a leap year's Feb 29 read the next year: not a null time stamp, but last year's date."""
    rows = header(["Feb 29 10:00:00 mx p[1]: a", "Feb 28 23:59:60 mx p[1]: b"],
                  anchor=datetime(2025, 1, 10, tzinfo=timezone.utc))
    assert rows[0]["ts"] == utc(2024, 2, 29, 10)
    assert rows[1]["ts"] == utc(2024, 2, 28, 23, 59, 59)  # a leap second reads as :59
    # read in a leap year after Feb 29: this year's
    rows = header(["Feb 29 10:00:00 mx p[1]: a"], anchor=datetime(2024, 3, 1, tzinfo=timezone.utc))
    assert rows[0]["ts"] == utc(2024, 2, 29, 10)
    # a local time in this year's DST gap is no date of last year (Berlin skipped 02:00-03:00 on 2024-03-31)
    rows = header(["Mar 31 02:30:00 mx p[1]: a"], anchor=datetime(2024, 12, 31, tzinfo=timezone.utc), tz="Europe/Berlin")
    assert rows[0]["ts"] is None


def test_local_timezone_applies_to_zoneless_timestamps_only():
    rows = header(["Jul  1 12:00:00 mx p[1]: a", "2024-07-01T12:00:00+00:00 mx p[1]: b", "2024-07-01 12:00:00 x"],
                  tz="Europe/Berlin", year=2024)
    assert rows[0]["ts"] == utc(2024, 7, 1, 10)
    assert rows[1]["ts"] == utc(2024, 7, 1, 12)
    assert rows[2]["ts"] == utc(2024, 7, 1, 10)


def test_impossible_dates_do_not_raise():
    rows = header(["Feb 29 10:00:00 mx p[1]: a", "Feb 30 10:00:00 mx p[1]: b", "Jan 1 25:00:00 mx p[1]: c"], year=2023)
    assert [r["ts"] for r in rows] == [None, None, None]
    assert [r["program"] for r in rows] == ["p", "p", "p"]


@pytest.mark.parametrize("line,host,program,pid,message", [
    ("Mar  1 2025 10:00:00 mx1 prog[12]: msg", "mx1", "prog", 12, "msg"),
    ("2016-03-20T13:30:53.574978+01:00 mx1 postfix/qmgr[2]: y", "mx1", "postfix/qmgr", 2, "y"),
    ("Mar  1 10:00:00 mx1 imap(john doe)<1>: msg", "mx1", "imap(john doe)<1>", None, "msg"),
    ("Mar  1 10:00:00 p(a b c): msg", None, "p(a b c)", None, "msg"),
    ("Mar  1 10:00:00 mx1 postfix/smtpd[1] : spaced", "mx1", "postfix/smtpd", 1, "spaced"),
    ("Oct 10 2019 10:21:36 fw01 : %ASA-6-302013: Built", "fw01", None, None, "%ASA-6-302013: Built"),
    # not "[host] program" before the first ": ": the host, and the rest stays in the message
    ("Mar  1 10:00:00 a b c: msg", "a", None, None, "b c: msg"),
    ("Mar  1 10:00:00 mx1 %ASA-6-1: z", "mx1", None, None, "%ASA-6-1: z"),
])
def test_host_and_program_before_the_first_colon(line, host, program, pid, message):
    """The time stamp and the "[host] program[pid]" after it are matched apart (the second once per
    distinct value); together they must read a prefix as one regex would."""
    row = parse_header(pl.DataFrame({"line": [line, line]}), HeaderOptions(year=2025)).row(1, named=True)
    assert (row["host"], row["program"], row["pid"], row["message"]) == (host, program, pid, message)
    assert row["ts"] is not None
