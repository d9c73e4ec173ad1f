"""Alerting: the expression language, rules files, replay of crafted logs through every default rule
(fires when it must, stays silent when it must not, resolves), the live engine (pending, for,
repeat, dedupe, caps, state, reload) and the notifiers (real SMTP with STARTTLS and implicit TLS via
aiosmtpd, a real HTTP server for the webhook, a notifier that is down).

Alertmanager is in test_alertmanager.py.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from logscope.alerts import expr as E
from logscope.alerts.engine import AlertEngine, Notification, clean_label
from logscope.alerts.notify import (SmtpNotifier, StdoutNotifier, WebhookNotifier, build_notifiers,
                                    check_config)
from logscope.alerts.rules import RulesError, default_rules_path, load, loads
from logscope.cli import main as cli_main
from logscope.engine import parse_lines
from logscope.header import HeaderOptions

from .test_dmarc import record, report

UTC = timezone.utc
T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
OPTS = HeaderOptions(tz="UTC", year=2025)
OPENSSL = shutil.which("openssl")


# ---------------------------------------------------------------- crafted log lines

def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def stamp(t: datetime) -> str:
    return t.strftime("%b %e %H:%M:%S")


def sasl_fail(t, ip):
    return f"{stamp(t)} mx1 postfix/smtpd[2406]: warning: unknown[{ip}]:51234: SASL LOGIN authentication failed: UGFzc3dvcmQ6"


def outbound_sasl_fail(t):
    return (f"{stamp(t)} mx1 postfix/relay/smtp[2240]: 6A7B8C9D0E: SASL authentication failed; server "
            f"smarthost.example.net[192.0.2.50]:587 said: 535 5.7.8 Error: authentication failed: UGFzc3dvcmQ6")


def dovecot_fail(t, ip, attempts):
    return (f"{stamp(t)} mx1 dovecot: imap-login: Disconnected (auth failed, {attempts} attempts in 14 secs): "
            f"user=<admin>, method=PLAIN, rip={ip}, lip=192.0.2.10, TLS: Disconnected, session=<s{t:%M%S}>")


def exim_fail(t, ip):
    return (f"{t:%Y-%m-%d %H:%M:%S} dovecot_login authenticator failed for (User) [{ip}]:21298 "
            f"I=[192.0.2.10]:465: 535 Incorrect authentication data (set_id=admin@example.org)")


def session(t, ip, tls=True, auth=False, service=None):
    prog = f"postfix/{service}/smtpd" if service else "postfix/smtpd"
    cmds = "ehlo=2 starttls=1" if tls else "ehlo=1"
    cmds += " auth=1" if auth else ""
    return f"{stamp(t)} mx1 {prog}[2101]: disconnect from client.example[{ip}] {cmds} mail=1 rcpt=1 data=1 quit=1 commands=7"


def dovecot_login(t, ip, tls):
    return (f"{stamp(t)} mx1 dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip={ip}, lip=192.0.2.10, "
            f"mpid=1{', TLS' if tls else ''}, session=<l{t:%M%S}>")


def connect(t, ip="198.51.100.23"):
    return f"{stamp(t)} mx1 postfix/smtpd[2101]: connect from mail.example.net[{ip}]"


REPLIES = {
    "rbl": "554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/{ip}",
    "unknown_recipient": "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
}


def reject(t, klass, ip="203.0.113.77"):
    reply = REPLIES[klass].format(ip=ip)
    return (f"{stamp(t)} mx1 postfix/smtpd[2301]: NOQUEUE: reject: RCPT from unknown[{ip}]: {reply}; "
            f"from=<promo@example.info> to=<alice@example.org> proto=ESMTP helo=<bulk.example.info>")


def deferred(t, reason="connect to mx.example.biz[198.51.100.99]:25: Connection timed out", status="deferred"):
    dsn = "4.4.1" if status == "deferred" else "5.7.1"
    return (f"{stamp(t)} mx1 postfix/smtp[2230]: {int(t.timestamp()) % 16**8:08X}: to=<dave@example.com>, "
            f"relay=mx.example.com[203.0.113.25]:25, delay=1.2, delays=0.41/0.02/0.33/0.44, dsn={dsn}, "
            f"status={status} ({reason})")


LISTED = ("host mx.example.com[203.0.113.25] said: 554 5.7.1 Service unavailable; Client host [192.0.2.10] "
          "blocked using b.barracudacentral.org (in reply to MAIL FROM command)")


def asa_failover(t, host="fw1"):
    return f"{stamp(t)} {host} %ASA-1-105005: (Secondary) Lost Failover communications with mate on interface inside"


def asa_deny(t, port):
    return (f"{stamp(t)} fw1 %ASA-2-106001: Inbound TCP connection denied from 198.51.100.59/54322 to "
            f"192.0.2.122/{port} flags SYN on interface outside")


def postfix_unparsed(t):
    return f"{stamp(t)} mx1 postfix/smtpd[2101]: this is a brand new log format nobody knows"


def dovecot_unparsed(t):
    return f"{stamp(t)} mx1 dovecot: imap: this is a brand new dovecot line"


def keepalive(start: float, end: float, every: float = 5) -> list[str]:
    """A connect line every few minutes, so no test log looks like logging stopped."""
    out, m = [], start
    while m <= end:
        out.append(connect(at(m, 30)))
        m += every
    return out


# ---------------------------------------------------------------- replay helper

def replay(tmp_path, lines, rules=None, dmarc=None, name="mail.log", step=None):
    """Write ``lines`` (sorted by time) to a file, replay it through the rules; (time, status, rule, keys) tuples."""
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    rs = load(rules or default_rules_path())
    engine = AlertEngine(rs, notifiers=[], replay=True)
    from logscope.parsers import load as load_parsers
    from logscope.pipeline import ReadOptions, iter_events
    for events in iter_events([str(path)], load_parsers(), ReadOptions(OPTS), lambda msg: pytest.fail(msg)):
        engine.add(events)
    if dmarc:
        from logscope.dmarc.collect import read_reports
        engine.add_dmarc(read_reports([str(p) for p in dmarc], lambda o, m: pytest.fail(f"{o}: {m}")).records)
    raw = engine.replay(step)
    return [(tr.at, tr.status, tr.alert.rule, _keys(tr.alert)) for tr in raw], raw


def _keys(alert) -> dict:
    return {k: v for k, v in alert.labels.items() if k not in ("alertname", "severity")}


def hm(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M")


def of(transitions, rule):
    return [(hm(t), status, keys) for t, status, r, keys in transitions if r == rule]


def rules_fired(transitions):
    return {r for _, status, r, _ in transitions if status == "firing"}


# ---------------------------------------------------------------- every default rule, replayed

def test_password_guessing_fires_per_client_ip_and_resolves(tmp_path):
    a, b = "203.0.113.93", "198.51.100.7"
    lines = keepalive(0, 40)
    # A: 4 postfix + 2 dovecot logins with 3 attempts each + 2 exim = 12 attempts in 4 minutes
    lines += [sasl_fail(at(0, 10 * i), a) for i in range(4)]
    lines += [dovecot_fail(at(2, 0), a, 3), dovecot_fail(at(3, 0), a, 3), exim_fail(at(3, 30), a), exim_fail(at(3, 40), a)]
    # B: exactly 10 attempts (the rule says more than 10); outbound SASL failures have no client
    lines += [sasl_fail(at(5, 10 * i), b) for i in range(10)] + [outbound_sasl_fail(at(6, i)) for i in range(20)]
    tr, _ = replay(tmp_path, sorted(lines, key=_ts))
    assert of(tr, "auth_password_guessing") == [
        ("10:04", "firing", {"client_ip": a}),  # the 12th attempt (10:03:40) counts from 10:04
        ("10:11", "resolved", {"client_ip": a}),  # 10:00:00-10:00:30 leave the 10-minute window
    ]
    assert rules_fired(tr) == {"auth_password_guessing"}


def _ts(line: str):
    """Sort key for mixed BSD and exim lines of March 2025."""
    if line[:4].isdigit():
        return datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S")
    return datetime.strptime("2025 " + line[:15], "%Y %b %d %H:%M:%S")


def test_plaintext_sessions_share(tmp_path):
    lines = keepalive(0, 330)
    # hour 0: 30 sessions, 5 plain (17%): silent; hour 2: 10 sessions, all plain (too few): silent
    lines += [session(at(i), "198.51.100.1", tls=i >= 5) for i in range(30)]
    lines += [session(at(120 + i), "198.51.100.2", tls=False) for i in range(10)]
    # hour 4: 30 sessions, 12 plain (40%)
    lines += [session(at(240 + i), "198.51.100.3", tls=i >= 12) for i in range(30)]
    tr, raw = replay(tmp_path, sorted(lines, key=_ts))
    assert [t.alert.annotations["summary"] for t in raw if t.status == "firing"] == [
        "60.0% of 20 inbound SMTP sessions without TLS in the last 1h"]
    got = of(tr, "plaintext_smtp_sessions")
    # the 20th session (14:19) makes count >= 20, 12 of them plain; at 15:04 the window
    # (14:04, 15:04] holds 25 sessions (14:05-14:29), 7 plain: 28%
    assert got == [("14:19", "firing", {}), ("15:04", "resolved", {})]
    assert rules_fired(tr) == {"plaintext_smtp_sessions", "auth_without_tls"} - {"auth_without_tls"}


def test_authentication_without_tls(tmp_path):
    lines = keepalive(0, 30) + [
        session(at(1), "198.51.100.10", tls=False, auth=True),  # fires
        session(at(2), "198.51.100.11", tls=True, auth=True),  # STARTTLS: silent
        session(at(3), "198.51.100.12", tls=False, auth=True, service="submissions"),  # implicit TLS: silent
        session(at(4), "198.51.100.13", tls=False, auth=False),  # no auth: silent
        dovecot_login(at(5), "203.0.113.5", tls=False),  # plaintext IMAP login: fires
        dovecot_login(at(6), "203.0.113.6", tls=True),  # silent
    ]
    tr, _ = replay(tmp_path, sorted(lines, key=_ts))
    # a line at 10:01:00 is in the window (10:00:59.., 10:01:00] evaluated at 10:01, and leaves it at 10:11
    assert of(tr, "auth_without_tls") == [
        ("10:01", "firing", {"source": "postfix", "client_ip": "198.51.100.10"}),
        ("10:05", "firing", {"source": "dovecot", "client_ip": "203.0.113.5"}),
        ("10:11", "resolved", {"source": "postfix", "client_ip": "198.51.100.10"}),
        ("10:15", "resolved", {"source": "dovecot", "client_ip": "203.0.113.5"}),
    ]
    assert rules_fired(tr) == {"auth_without_tls"}


def test_reject_class_surge_against_its_24_hour_average(tmp_path):
    lines = keepalive(0, 27 * 60, every=10)
    for h in range(26):
        # steady: 30 unknown-recipient rejects every hour (never 3x its own average), 2 rbl rejects an hour
        lines += [reject(at(h * 60 + 2 * i, 5), "unknown_recipient") for i in range(30)]
        lines += [reject(at(h * 60 + 30, 10 * i), "rbl", ip=f"203.0.113.{i + 1}") for i in range(2)]
    # hour 25: 30 more rbl rejects within 15 minutes
    lines += [reject(at(25 * 60 + 35, 20 * i), "rbl", ip=f"198.51.100.{i + 1}") for i in range(30)]
    tr, _ = replay(tmp_path, sorted(lines, key=_ts))
    got = of(tr, "reject_class_surge")
    assert [(s, k) for _, s, k in got] == [("firing", {"reject_class": "rbl"}), ("resolved", {"reject_class": "rbl"})]
    fired, resolved = got[0][0], got[1][0]
    assert fired == "11:41"  # the 20th rbl reject of the hour (10:41:00 on day 2) makes count >= 20
    assert resolved > "12:00"
    assert rules_fired(tr) == {"reject_class_surge"}


def test_outbound_ip_on_a_blocklist(tmp_path):
    lines = keepalive(0, 140) + [
        deferred(at(1)),  # timeout: not a blocklist
        deferred(at(2), LISTED),  # a deferral naming a blocklist
        deferred(at(70), LISTED.replace("554", "550"), status="bounced"),  # a bounce naming one, an hour later
    ]
    tr, _ = replay(tmp_path, sorted(lines, key=_ts))
    zone = {"rbl_zone": "b.barracudacentral.org"}
    assert of(tr, "outbound_blocklisted") == [
        ("10:02", "firing", zone), ("11:02", "resolved", zone), ("11:10", "firing", zone), ("12:10", "resolved", zone)]
    assert rules_fired(tr) == {"outbound_blocklisted"}


def test_deferred_deliveries(tmp_path):
    lines = keepalive(0, 120)
    lines += [deferred(at(i * 0.25)) for i in range(40)]  # 40 in 10 minutes: silent
    lines += [deferred(at(60 + i * 0.2)) for i in range(60)]  # 60 in 12 minutes
    tr, _ = replay(tmp_path, sorted(lines, key=_ts))
    # the 51st deferral is at 11:10:00; at 11:17 the window (11:02, 11:17] holds 49
    assert of(tr, "deferred_deliveries") == [("11:10", "firing", {}), ("11:17", "resolved", {})]
    assert rules_fired(tr) == {"deferred_deliveries"}


def test_asa_failover_and_mail_port_denies(tmp_path):
    lines = keepalive(0, 90) + [asa_failover(at(1))]
    lines += [asa_deny(at(10, i * 0.75), 1433) for i in range(400)]  # not a mail port
    lines += [asa_deny(at(30, i * 1.5), 25) for i in range(200)]  # mail port, 0.67/s: silent
    lines += [asa_deny(at(60, i * 0.5), 587) for i in range(400)]  # 2/s over 200 s
    tr, raw = replay(tmp_path, sorted(lines, key=_ts))
    summaries = {t.alert.rule: t.alert.annotations["summary"] for t in raw if t.status == "firing"}
    assert summaries == {"asa_failover": "1 failover events on firewall fw1",
                         "asa_mail_port_denies": "1.21 denied connections per second to mail ports"}  # 362/300 s
    assert of(tr, "asa_failover") == [("10:01", "firing", {"host": "fw1"}), ("10:06", "resolved", {"host": "fw1"})]
    got = of(tr, "asa_mail_port_denies")
    assert [s for _, s, _ in got] == ["firing", "resolved"]
    assert "11:02" <= got[0][0] <= "11:04" and got[1][0] <= "11:09"
    assert rules_fired(tr) == {"asa_failover", "asa_mail_port_denies"}


def test_unparsed_share_per_source(tmp_path):
    lines = keepalive(0, 90)
    lines += [postfix_unparsed(at(i * 0.2)) if i % 10 == 0 else connect(at(i * 0.2)) for i in range(200)]  # 10%
    lines += [dovecot_unparsed(at(i * 0.2, 1)) if i % 100 == 0 else dovecot_login(at(i * 0.2, 1), "203.0.113.9", True)
              for i in range(200)]  # 1%
    tr, _ = replay(tmp_path, sorted(lines, key=_ts))
    got = of(tr, "unparsed_share")
    assert [(s, k) for _, s, k in got] == [("firing", {"source": "postfix"}), ("resolved", {"source": "postfix"})]
    assert got[0][0] == "10:19"  # 96 postfix lines and 4 keepalives by then: 100, 10% unparsed
    assert rules_fired(tr) == {"unparsed_share"}


def test_logging_stopped_on_a_gap_and_back(tmp_path):
    lines = keepalive(0, 10, every=1) + keepalive(40, 60, every=1)  # nothing from 10:10:30 to 10:40:30
    tr, _ = replay(tmp_path, lines)
    path = str(tmp_path / "mail.log")
    assert of(tr, "logging_stopped") == [("10:26", "firing", {"input": path}), ("10:41", "resolved", {"input": path})]
    assert rules_fired(tr) == {"logging_stopped"}


def test_dmarc_alignment_failures(tmp_path):
    begin = int(T0.timestamp())
    xml = report([record("192.0.2.1", 15, dkim="fail", spf="fail"),  # fails alignment: fires
                  record("192.0.2.2", 5, dkim="fail", spf="fail"),  # only 5: silent
                  record("192.0.2.3", 100)],  # passes: silent
                 begin=begin, end=begin + 86399)
    (tmp_path / "r.xml").write_text(xml)
    tr, _ = replay(tmp_path, keepalive(0, 5), dmarc=[tmp_path / "r.xml"])
    got = [(s, k) for _, s, k in of(tr, "dmarc_alignment_failures")]
    assert got == [("firing", {"domain": "example.org", "source_ip": "192.0.2.1"})]  # the replay ends inside the day


def test_quiet_logs_fire_nothing(tmp_path, capsys):
    """The bundled sample and a busy clean log: no default rule fires; `alerts test` exits 0."""
    lines = keepalive(0, 120, every=1) + [session(at(i), "198.51.100.1") for i in range(120)]
    path = tmp_path / "clean.log"
    path.write_text("\n".join(sorted(lines, key=_ts)) + "\n")
    assert cli_main(["alerts", "test", "default", str(path), "--tz", "UTC", "--year", "2025"]) == 0
    assert "no alert fired" in capsys.readouterr().out


# ---------------------------------------------------------------- the command

def test_alerts_test_command_text_json_and_exit_codes(tmp_path, capsys):
    lines = keepalive(0, 30) + [session(at(1), "198.51.100.10", tls=False, auth=True)]
    path = tmp_path / "m.log"
    path.write_text("\n".join(sorted(lines, key=_ts)) + "\n")
    args = ["alerts", "test", "default", str(path), "--tz", "UTC", "--year", "2025"]
    assert cli_main(args) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2025-03-01T10:01:00Z  FIRING    auth_without_tls")
    assert "client_ip=198.51.100.10" in out[0] and "1 authentications without TLS from 198.51.100.10" in out[0]
    assert out[1].startswith("2025-03-01T10:11:00Z  resolved  auth_without_tls")
    assert out[-1] == "1 alert fired (auth_without_tls); 0 still firing at the end"
    assert cli_main(args + ["--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [t["status"] for t in doc["transitions"]] == ["firing", "resolved"]
    assert doc["transitions"][0]["labels"] == {"severity": "critical", "source": "postfix", "client_ip": "198.51.100.10"}
    assert cli_main(args + ["--rule", "deferred_deliveries"]) == 0
    assert cli_main(args + ["--rule", "nope"]) == 2
    assert "no such rule" in capsys.readouterr().err
    assert cli_main(["alerts", "test", "default", str(tmp_path / "missing.log")]) == 2


def test_alerts_check_default_and_show_default(capsys):
    assert cli_main(["alerts", "check", "default"]) == 0
    out = capsys.readouterr().out
    assert "auth_password_guessing: warning, from events by client_ip, window 10m: sum(coalesce(count, 1)) > 10" in out
    assert "11 rules OK" in out
    assert cli_main(["alerts", "show-default"]) == 0
    assert capsys.readouterr().out == default_rules_path().read_text()


@pytest.mark.parametrize("body, where, message", [
    ('condition = "count() > 10"\nwhere = \'kind == "sasl_auth_faild"\'', (4, 17),
     "rule 'r': 'sasl_auth_faild' is not one of the values of this column (did you mean 'sasl_auth_failed'?)"),
    ('condition = "count() > 10 and"', (3, 27), "rule 'r': syntax error"),
    ('condition = "count() > 10"\ngroup_by = ["clinet_ip"]', (4, 12), "unknown column 'clinet_ip'"),
    ("condition = '''\ncount() > 10\n  and share(not tsl) > 0.5'''", (5, 17), "unknown column 'tsl' (did you mean 'tls'?)"),
    ('condition = "client_ip == 1"', (3, 14), "outside an aggregate"),
    ('where = "count() > 1"\ncondition = "count() > 1"', (3, 10), "count() is an aggregate"),
    ('condition = "count() > 1"\nwindow = "ten minutes"', (4, 10), "not a duration"),
    ('condition = "count() > 1"\nsummary = "{{ value"', (4, 12), "template:"),
    ('condition = "count() > 1"\nseverity = "loud"', (4, 12), "'severity' must be one of"),
    ('condition = "rate() > baseline(1m)"\nwindow = "1h"', (3, 32), "at least the rule's window"),
    ('condition = "count() > 1"\nwindwo = "1h"', (4, 10), "unknown key 'windwo' (did you mean 'window'?)"),
])
def test_rule_errors_name_rule_line_and_column(tmp_path, capsys, body, where, message):
    path = tmp_path / "rules.toml"
    path.write_text(f'# my rules\n[[rule]]\n{body.replace(chr(10), chr(10))}\nname = "r"\n'
                    if False else f'[[rule]]\nname = "r"\n{body}\n')
    with pytest.raises(RulesError) as exc:
        load(path)
    text = str(exc.value)
    assert text.startswith(f"{path}:{where[0]}:{where[1]}: "), text
    assert message in text
    assert cli_main(["alerts", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_toml_and_structure_errors(tmp_path):
    with pytest.raises(RulesError, match=r"^x.toml:2:\d+: "):
        loads('[[rule]]\nname = "a\n', "x.toml")
    with pytest.raises(RulesError, match="defined twice"):
        loads('[[rule]]\nname="a"\ncondition="count()>1"\n[[rule]]\nname="a"\ncondition="count()>1"\n')
    with pytest.raises(RulesError, match=r":1:1: unknown table 'rules'"):
        loads('[rules]\n')
    with pytest.raises(RulesError, match="notifier smtp: needs 'to'"):
        loads('[[notifier]]\ntype = "smtp"\nhost = "h"\nfrom = "a@b"\n')
    with pytest.raises(RulesError, match=r":3:12: notifier smtp: a login needs TLS"):
        loads('[[notifier]]\ntype = "smtp"\nsecurity = "none"\nhost="h"\nfrom="a@b"\nto=["c@d"]\nusername="u"\n')


def test_expression_language():
    cols = E.events_columns()
    for text in ['kind in ("sasl_auth_failed", "dovecot_auth_failed") and source != "exim"',
                 'client_ip is not null and not (reply ~ "blocked using" or dst_port in (25, 587))',
                 'lower(helo) == "localhost" or startswith(sender, "bounce") or len(coalesce(user, "")) > 64']:
        E.compile_where(text, cols)
    for text in ["count() > 10", "share(not tls) > 0.3", "rate() > 3 * baseline(24h)", "count() >= 20 and share(tls) < 70%",
                 "distinct(client_ip) > 5 or max(size) > 1e6", "sum(coalesce(count, 1)) / count() > -1"]:
        E.compile_condition(text, cols, 3600)
    assert E.parse_duration("24h") == 86400 and E.parse_duration("90s") == 90 and E.format_duration(600) == "10m"
    with pytest.raises(ValueError):
        E.parse_duration("-1m")
    # a where expression selects rows vectorized, with SQL-like nulls (a null never matches)
    df = pl.DataFrame({"kind": ["reject", "delivery", None], "dst_port": [25, 80, None], "reply": ["x blocked", None, "y"]},
                      schema={"kind": pl.Enum(["reject", "delivery"]), "dst_port": pl.Int32, "reply": pl.String})
    cols = {"kind": E.Column("kind", lambda: pl.col("kind"), "str", ("reject", "delivery")),
            "dst_port": E.Column("dst_port", lambda: pl.col("dst_port"), "num"),
            "reply": E.Column("reply", lambda: pl.col("reply"), "str")}
    where, _ = E.compile_where('kind == "reject" or dst_port not in (25) or not (reply ~ "^y")', cols)
    assert df.select(where).to_series().to_list() == [True, True, False]


# ---------------------------------------------------------------- the live engine

RULES = """
[defaults]
eval_interval = "1s"
repeat_interval = "1h"

[[rule]]
name = "guess"
where = 'kind == "sasl_auth_failed"'
group_by = ["client_ip"]
window = "10m"
condition = "count() > 3"
for = "2m"
max_alerts = 3
summary = "{{ value|fmt }} failures from {{ client_ip }}"

[[rule]]
name = "silent"
from = "inputs"
group_by = ["input"]
window = "5m"
condition = "sum(lines) == 0"
"""


class Recorder:
    """A notifier that keeps what it is given (the engine's side of the interface, no thread)."""

    name = "recorder"

    def __init__(self):
        self.notes: list[Notification] = []

    def wants(self, note):
        return True

    def notify(self, note):
        self.notes.append(note)


def events(lines):
    from logscope.parsers import load as load_parsers
    return parse_lines(pl.DataFrame({"line": lines}, schema={"line": pl.String}), load_parsers(), OPTS)


def live(tmp_path, text=RULES):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    rec = Recorder()
    clock = [T0.timestamp()]
    engine = AlertEngine(load(path), notifiers=[rec], clock=lambda: clock[0], path=str(path))
    return engine, rec, clock


def test_live_pending_for_firing_repeat_and_resolved_notice(tmp_path):
    engine, rec, clock = live(tmp_path)
    t = T0.timestamp()

    def tick(minutes):
        clock[0] = t + minutes * 60
        return engine.tick()

    engine.add(events([sasl_fail(at(0, i), "203.0.113.1") for i in range(5)]))
    assert tick(0.5) == [] and [a.state for a in engine.active()] == ["pending"]  # for = 2m
    assert tick(1.5) == [] and rec.notes == []
    fired = tick(2.5)
    assert [(tr.status, tr.alert.value) for tr in fired] == [("firing", 5.0)]
    assert len(rec.notes) == 1 and rec.notes[0].status == "firing"
    assert rec.notes[0].alerts[0]["annotations"]["summary"] == "5 failures from 203.0.113.1"
    tick(3) and tick(4)
    assert len(rec.notes) == 1  # de-duplicated: nothing new, no repeat before repeat_interval
    tick(10.5)  # the failures have left the window
    assert [n.status for n in rec.notes] == ["firing", "resolved"]
    assert rec.notes[1].alerts[0]["status"] == "resolved" and engine.active() == []
    # a new burst that lasts: one notice, then one repeat after an hour
    engine.add(events([sasl_fail(at(20, i), "203.0.113.1") for i in range(5)]))
    tick(20.5), tick(23)
    for m in range(24, 90):
        engine.add(events([sasl_fail(at(m), "203.0.113.1")]))
        tick(m + 0.1)
    assert [n.status for n in rec.notes] == ["firing", "resolved", "firing", "firing"]
    assert rec.notes[3].at - rec.notes[2].at == pytest.approx(3600, abs=70)


def test_live_pending_dropped_without_notice_and_eval_interval(tmp_path):
    engine, rec, clock = live(tmp_path)
    engine.add(events([sasl_fail(at(0, i), "203.0.113.2") for i in range(4)]))
    clock[0] = at(1).timestamp()
    engine.tick()
    assert engine.tick() == [] and engine.evaluations == 1  # within eval_interval: not evaluated again
    clock[0] = at(10, 30).timestamp()
    engine.tick()
    assert engine.active() == [] and rec.notes == []


def test_live_caps_active_alerts_per_rule(tmp_path):
    engine, rec, clock = live(tmp_path)
    lines = [sasl_fail(at(0, i % 60), f"203.0.113.{i // 5}") for i in range(5 * 50)]
    engine.add(events(lines))
    for m in (1, 4):
        clock[0] = at(m).timestamp()
        engine.tick()
    assert len(engine.active()) == 3 and engine.stats()["overflow"] == {"guess": 47}
    assert len(rec.notes) == 1 and len(rec.notes[0].alerts) == 3  # grouped: one notice for the rule


def test_live_inputs_logging_stopped(tmp_path):
    engine, rec, clock = live(tmp_path)
    engine.watch_inputs(["/var/log/mail.log", "journal"], at=at(0).timestamp())
    for m in range(0, 12):
        engine.lines_read("journal", 10, at=at(m).timestamp())
        clock[0] = at(m, 1).timestamp()
        engine.tick()
    fired = [n for n in rec.notes if n.rule == "silent"]
    assert len(fired) == 1 and [a["labels"]["input"] for a in fired[0].alerts] == ["/var/log/mail.log"]
    assert datetime.fromtimestamp(fired[0].at, UTC) == at(5, 1)


def test_replay_equals_live_evaluation_on_the_grid(tmp_path):
    """The vectorized replay and the live engine stepped over the same minutes agree."""
    lines = []
    for m in range(0, 60, 3):
        lines += [sasl_fail(at(m, s), f"203.0.113.{m % 4}") for s in range(0, 60, 12 if m % 9 else 7)]
    lines = sorted(lines + keepalive(0, 80, every=1), key=_ts)
    replayed, _ = replay(tmp_path, lines, rules=_write(tmp_path, RULES.replace('for = "2m"', 'for = "1m"')))
    engine, rec, clock = live(tmp_path, RULES.replace('for = "2m"', 'for = "1m"'))
    stepped, fed = [], 0
    for m in range(0, 80):
        clock[0] = at(m).timestamp()
        batch = [line for line in lines[fed:] if _ts(line).replace(tzinfo=UTC) <= at(m)]  # what has arrived
        fed += len(batch)
        if batch:
            engine.add(events(batch))
        stepped += [(tr.at, tr.status, tr.alert.rule, _keys(tr.alert)) for tr in engine.tick()]
    replayed = [x for x in replayed if x[2] == "guess"]
    assert replayed and sorted(stepped, key=lambda x: (x[0], x[2])) == replayed


def test_buffered_rows_are_compacted_with_the_same_values(monkeypatch):
    """A busy second's many equal rows are kept as one weighted row: every aggregate gives the value it
    gives over the raw rows, and the rows a rule keeps follow seconds and groups, not lines."""
    from logscope.alerts import engine as engine_mod

    rules = loads("""
[[rule]]
name = "mix"
group_by = ["source"]
window = "1h"
condition = 'count() > 0 and share(kind == "unparsed") >= 0 and sum(size) >= 0 and avg(size) >= 0 and min(size) >= 0 and max(size) >= 0 and distinct(client_ip) >= 0 and rate() > 0 and count(kind == "reject") >= 0'
""")
    n = 60_000
    kinds = ["reject", "unparsed", "delivery"]
    df = pl.DataFrame({
        "ts": [T0 + timedelta(microseconds=137 * i) for i in range(n)],  # 60,000 lines in 8.2 s
        "source": ["postfix" if i % 5 else "dovecot" for i in range(n)],
        "kind": [kinds[i % 3] for i in range(n)],
        "size": [None if i % 7 == 0 else float(i % 4) for i in range(n)],
        "client_ip": [f"192.0.2.{i % 9}" for i in range(n)],
    })

    def values(compact_above: int):
        monkeypatch.setattr(engine_mod, "COMPACT_ABOVE", compact_above)
        eng = AlertEngine(rules, notifiers=[], clock=lambda: (T0 + timedelta(seconds=30)).timestamp())
        for part in df.iter_slices(7_000):
            eng.add(part)
        run = eng.runs[0]
        got = run.evaluate((T0 + timedelta(seconds=30)).timestamp(), T0.timestamp()).sort("source")
        return got.drop("_cond").to_dicts(), run.buffer().height

    raw, raw_rows = values(10 ** 9)
    small, small_rows = values(1_000)
    assert raw_rows == n and small_rows <= 9 * 2 * 3 * 5 * 9  # seconds x sources x kinds x sizes x ips
    assert len(raw) == len(small) == 2
    for a, b in zip(raw, small):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k]), k


def _write(tmp_path, text):
    p = tmp_path / "other_rules.toml"
    p.write_text(text)
    return p


def test_state_restore_does_not_refire_and_reload_keeps_alerts(tmp_path):
    engine, rec, clock = live(tmp_path)
    engine.add(events([sasl_fail(at(0, i), "203.0.113.3") for i in range(5)]))
    for m in (1, 3.5):
        clock[0] = at(m).timestamp()
        engine.tick()
    assert [n.status for n in rec.notes] == ["firing"]
    saved = json.loads(json.dumps(engine.state()))  # what tail writes to its state file
    # a restarted process: no rows yet, the alert is kept (no second notice) until the window has refilled
    engine2, rec2, clock2 = live(tmp_path)
    clock2[0] = at(4).timestamp()
    engine2.restore_state(saved)
    engine2.add(events([sasl_fail(at(4, i), "203.0.113.3") for i in range(5)]))
    for m in (4, 6, 9):
        clock2[0] = at(m).timestamp()
        engine2.tick()
    assert rec2.notes == [] and [a.state for a in engine2.active()] == ["firing"]
    clock2[0] = at(15).timestamp()
    engine2.tick()
    assert [n.status for n in rec2.notes] == ["resolved"]
    # reload: a broken file keeps the old rules; a changed threshold keeps the firing alert
    (tmp_path / "rules.toml").write_text("[[rule]]\nname = 'x'\n")
    assert engine.reload() is False and [r.rule.name for r in engine.runs] == ["guess", "silent"]
    (tmp_path / "rules.toml").write_text(RULES.replace("count() > 3", "count() > 2"))
    assert engine.reload() is True
    clock[0] = at(5).timestamp()
    engine.tick()
    assert [n.status for n in rec.notes] == ["firing"] and [a.state for a in engine.active()] == ["firing"]


def test_label_values_are_cleaned_and_bounded():
    assert clean_label("a\x1b[31mb\nc") == "a [31mb c"
    assert len(clean_label("x" * 1000)) == 200


def test_broken_rule_does_not_stop_the_others(tmp_path):
    engine, rec, clock = live(tmp_path)
    engine.runs[0].evaluate = lambda t, origin: (_ for _ in ()).throw(RuntimeError("boom"))
    logged = []
    engine.log = lambda level, msg: logged.append(msg)
    engine.watch_inputs(["in"], at=at(0).timestamp())
    clock[0] = at(6).timestamp()
    assert [tr.alert.rule for tr in engine.evaluate(clock[0])] == ["silent"]
    assert any("guess" in m and "boom" in m for m in logged)


# ---------------------------------------------------------------- notifiers

def note(status="firing", rule="guess", ip="203.0.113.1") -> Notification:
    alert = {"status": status, "labels": {"alertname": rule, "severity": "warning", "client_ip": ip},
             "annotations": {"summary": f"12 failures from {ip}"}, "startsAt": "2025-03-01T10:04:00.000Z",
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "f", "value": 12.0}
    return Notification(rule, "warning", status, [alert], T0.timestamp())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hook(http.server.BaseHTTPRequestHandler):
    received: list = []
    status = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), json.loads(body)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


def serve(port: int, handler) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_webhook_posts_alertmanager_webhook_json(monkeypatch):
    class H(Hook):
        received = []
    port = free_port()
    server = serve(port, H)
    monkeypatch.setenv("HOOK_TOKEN", "s3cret")
    try:
        n = WebhookNotifier({"type": "webhook", "url": f"http://127.0.0.1:{port}/hook", "bearer_token_env": "HOOK_TOKEN"},
                            lambda *a: None)
        n.notify(note())
        n.notify(note("resolved"))
        assert n.flush(10)
        assert n.stats() == {"sent": 2, "failed": 0, "dropped": 0, "queued": 0}
        (h1, b1), (_, b2) = H.received
        assert h1["Authorization"] == "Bearer s3cret" and h1["Content-Type"] == "application/json"
        assert b1["version"] == "4" and b1["status"] == "firing" and b1["groupLabels"] == {"alertname": "guess"}
        assert b1["alerts"][0]["labels"]["client_ip"] == "203.0.113.1" and b2["status"] == "resolved"
        assert b1["commonLabels"] == {"alertname": "guess", "severity": "warning", "client_ip": "203.0.113.1"}
    finally:
        server.shutdown()
        n.close(1)


def test_notifier_down_does_not_block_and_loses_nothing():
    """Nothing listens: notify() returns at once, deliveries fail and are counted, then arrive when it is up."""
    class H(Hook):
        received = []
    port = free_port()
    logged = []
    n = WebhookNotifier({"type": "webhook", "url": f"http://127.0.0.1:{port}/", "retry_initial": "50ms",
                         "retry_max": "200ms", "timeout": "2s", "max_queue": 5}, lambda lvl, msg: logged.append(msg))
    started = time.monotonic()
    for i in range(8):
        n.notify(note(ip=f"203.0.113.{i}"))
    assert time.monotonic() - started < 0.5  # the caller never waits for delivery
    deadline = time.monotonic() + 10
    while n.stats()["failed"] < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    s = n.stats()
    assert s["failed"] >= 3 and s["sent"] == 0 and s["dropped"] == 3 and s["queued"] == 5  # bounded: oldest 3 dropped
    assert sum("delivery failed" in m for m in logged) == 1 and any("queue full" in m for m in logged)
    server = serve(port, H)
    try:
        assert n.flush(10)
        assert [b["alerts"][0]["labels"]["client_ip"] for _, b in H.received] == [f"203.0.113.{i}" for i in range(3, 8)]
        assert n.stats()["sent"] == 5
    finally:
        server.shutdown()
        n.close(1)


def test_webhook_permanent_refusal_is_dropped_not_retried():
    class H(Hook):
        received = []
        status = 400
    port = free_port()
    server = serve(port, H)
    try:
        n = WebhookNotifier({"type": "webhook", "url": f"http://127.0.0.1:{port}/", "retry_initial": "50ms"},
                            lambda *a: None)
        n.notify(note())
        assert n.flush(10)
        assert len(H.received) == 1 and n.stats() == {"sent": 0, "failed": 1, "dropped": 1, "queued": 0}
    finally:
        server.shutdown()
        n.close(1)


def test_engine_does_not_block_on_a_hanging_notifier(tmp_path):
    """A webhook that accepts connections and never answers: ticks and adds still return at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    text = RULES + f'\n[[notifier]]\ntype = "webhook"\nurl = "http://127.0.0.1:{port}/"\ntimeout = "30s"\n'
    path = tmp_path / "r.toml"
    path.write_text(text)
    clock = [at(0).timestamp()]
    engine = AlertEngine(load(path), clock=lambda: clock[0])
    try:
        started = time.monotonic()
        for m in range(0, 30):
            engine.add(events([sasl_fail(at(m, i), f"203.0.113.{m}") for i in range(5)]))
            clock[0] = at(m, 59).timestamp()
            engine.tick()
        assert time.monotonic() - started < 20  # 30 batches of evaluation, not 30 x 30 s of waiting
        assert engine.stats()["alerts"]["firing"] >= 1
        assert engine.stats()["notifiers"]["webhook"]["sent"] == 0
    finally:
        engine.close(0.1)
        sock.close()


def test_stdout_notifier_and_default_log_notifier(capsys):
    n = StdoutNotifier({"type": "stdout"}, lambda *a: None)
    n.notify(note())
    assert n.flush(5)
    assert capsys.readouterr().out == ("logscope alert: FIRING guess [warning] {client_ip=203.0.113.1}: "
                                       "12 failures from 203.0.113.1\n")
    logged = []
    (default,) = build_notifiers([], lambda lvl, msg: logged.append((lvl, msg)))
    default.notify(note())
    assert default.flush(5) and logged == [("warning", "logscope alert: FIRING guess [warning] "
                                                       "{client_ip=203.0.113.1}: 12 failures from 203.0.113.1")]
    n.close(1), default.close(1)


def test_notifier_config_checks(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="password_file"):
        SmtpNotifier({"type": "smtp", "host": "h", "from": "a@b", "to": ["c@d"], "username": "u",
                      "password_file": str(tmp_path / "missing")}, lambda *a: None)
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(ValueError, match="NOPE is not set"):
        SmtpNotifier({"type": "smtp", "host": "h", "from": "a@b", "to": ["c@d"], "username": "u",
                      "password_env": "NOPE"}, lambda *a: None)
    with pytest.raises(ValueError, match="http"):
        check_config({"type": "webhook", "url": "file:///etc/passwd"})


# ---------------------------------------------------------------- SMTP with aiosmtpd

@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if OPENSSL is None:
        pytest.skip("openssl not installed (Debian: apt-get install openssl)")
    d = tmp_path_factory.mktemp("smtpcert")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")], check=True, capture_output=True)
    return d


@pytest.fixture
def smtpd(cert):
    """A real SMTP server (aiosmtpd) with STARTTLS and AUTH, and one with implicit TLS."""
    aiosmtpd = pytest.importorskip("aiosmtpd", reason="the SMTP tests need aiosmtpd (pip install aiosmtpd)")
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    class Handler:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            tls = server.transport.get_extra_info("cipher") is not None
            self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.content.decode(), tls,
                                  session.authenticated))
            return "250 OK"

    def auth(server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"alerts", b"pw from file")
        # handled=False: aiosmtpd answers a failure itself (535) instead of leaving the client waiting
        return AuthResult(success=ok, handled=ok)

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert / "cert.pem", cert / "key.pem")
    handler = Handler()
    starttls = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=ctx, require_starttls=True,
                          authenticator=auth, auth_require_tls=True)
    implicit = Controller(handler, hostname="127.0.0.1", port=free_port(), ssl_context=ctx, authenticator=auth,
                          auth_require_tls=False)
    starttls.start()
    implicit.start()
    yield handler, starttls.port, implicit.port
    starttls.stop()
    implicit.stop()
    del aiosmtpd


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_smtp_notifier_starttls_and_implicit_tls_with_password_file(smtpd, cert, tmp_path, security):
    handler, starttls_port, tls_port = smtpd
    secret = tmp_path / "pw"
    secret.write_text("pw from file\n")
    n = SmtpNotifier({"type": "smtp", "host": "127.0.0.1", "port": starttls_port if security == "starttls" else tls_port,
                      "security": security, "from": "logscope@example.org", "to": ["postmaster@example.org"],
                      "username": "alerts", "password_file": str(secret), "ca_file": str(cert / "cert.pem")},
                     lambda *a: None)
    try:
        n.notify(note(ip="203.0.113.1\r\nBcc: victim@example.com"))  # a hostile value must not make a header
        assert n.flush(15), n.stats()
        assert n.stats()["sent"] == 1
        ((sender, rcpts, content, tls, authed),) = handler.messages
        assert sender == "logscope@example.org" and rcpts == ["postmaster@example.org"] and tls and authed
        import email
        import email.policy
        msg = email.message_from_string(content, policy=email.policy.default)
        assert msg["Subject"].startswith("[logscope] FIRING:1 guess: 12 failures from 203.0.113.1")
        assert msg["Bcc"] is None and "\n" not in msg["Subject"]
        assert "client_ip=203.0.113.1" in msg.get_payload(decode=True).decode()
    finally:
        n.close(1)


def test_smtp_wrong_password_is_retried_and_counted(smtpd, cert, monkeypatch):
    handler, port, _ = smtpd
    monkeypatch.setenv("SMTP_PW", "wrong")
    n = SmtpNotifier({"type": "smtp", "host": "127.0.0.1", "port": port, "from": "a@example.org", "to": ["b@example.org"],
                      "username": "alerts", "password_env": "SMTP_PW", "ca_file": str(cert / "cert.pem"),
                      "retry_initial": "50ms", "retry_max": "100ms", "timeout": "1s"}, lambda *a: None)
    try:
        n.notify(note())
        deadline = time.monotonic() + 10
        while n.stats()["failed"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert n.stats()["failed"] >= 2 and n.stats()["queued"] == 1 and handler.messages == []
    finally:
        n.close(0)


def test_tail_style_sink_interface(tmp_path):
    """What tail calls: add_batch (events + lines per input), on_commit (evaluate when due), state, close."""
    from logscope.sources.follow import Batch
    engine, rec, clock = live(tmp_path)
    lines = [sasl_fail(at(0, i), "203.0.113.4") for i in range(5)]
    batch = Batch(input="/var/log/mail.log", path="/var/log/mail.log", lines=pl.DataFrame({"line": lines}))
    engine.add_batch(events(lines), batch)
    for m in (1, 3.5):
        clock[0] = at(m).timestamp()
        engine.on_commit()
    assert [n.rule for n in rec.notes] == ["guess"]
    assert engine.name == "alerts" and engine.state()["alerts"][0]["rule"] == "guess"
    engine.close(0.1)


# ---------------------------------------------------------------- the Prometheus rules file

PROM_RULES = Path(__file__).resolve().parent.parent / "dashboards" / "alerts.rules.yml"
PROMTOOL = shutil.which("promtool")


def test_prometheus_rules_use_exported_metric_names():
    import re
    from logscope.sinks.metrics import family_names
    names = set(family_names())
    used = set(re.findall(r"\b((?:logscope|postfix)_[a-z_]+)\b", PROM_RULES.read_text()))
    assert used and used <= names, used - names


def test_prometheus_rules_pass_promtool_check_and_unit_tests(tmp_path):
    if PROMTOOL is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    out = subprocess.run([PROMTOOL, "check", "rules", str(PROM_RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 9 rules found" in out.stdout
    # promtool's own replay: series in, alerts out (fires when it must, silent when not)
    tests = {
        "rule_files": [str(PROM_RULES)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": 'logscope_auth_failures_total{source="postfix",service="submission"}', "values": "0+10x20"},
                {"series": 'logscope_auth_failures_total{source="dovecot",service="imap"}', "values": "0+1x20"},
                {"series": 'logscope_smtpd_sessions_total{service="smtp",tls="no"}', "values": "0+1x60"},
                {"series": 'logscope_smtpd_sessions_total{service="smtp",tls="yes"}', "values": "0+1x60"},
                {"series": 'logscope_input_lines_total{input="/var/log/mail.log"}', "values": "0+10x10 100x30"},
                {"series": 'logscope_input_lines_total{input="journal"}', "values": "0+10x40"},
                {"series": 'logscope_asa_events_total{message_id="105005",severity="1"}', "values": "0x10 1x30"},
                {"series": 'logscope_asa_events_total{message_id="302013",severity="6"}', "values": "0+100x40"},
            ],
            "alert_rule_test": [
                {"eval_time": "15m", "alertname": "LogscopeAuthPasswordGuessing", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "source": "postfix", "service": "submission"},
                     "exp_annotations": {"summary": "100 failed logins (postfix submission) in 10 minutes"}}]},
                {"eval_time": "60m", "alertname": "LogscopePlaintextSmtpSessions", "exp_alerts": [
                    {"exp_labels": {"severity": "warning"},
                     "exp_annotations": {"summary": "50% of inbound SMTP sessions without TLS in the last hour"}}]},
                {"eval_time": "20m", "alertname": "LogscopeLoggingStopped", "exp_alerts": []},
                {"eval_time": "30m", "alertname": "LogscopeLoggingStopped", "exp_alerts": [
                    {"exp_labels": {"severity": "critical", "input": "/var/log/mail.log"},
                     "exp_annotations": {"summary": "no lines from /var/log/mail.log for 15 minutes"}}]},
                {"eval_time": "9m", "alertname": "LogscopeAsaFailover", "exp_alerts": []},
                {"eval_time": "12m", "alertname": "LogscopeAsaFailover", "exp_alerts": [
                    {"exp_labels": {"severity": "critical"},
                     "exp_annotations": {"summary": "Cisco ASA failover events in the last 5 minutes"}}]},
                {"eval_time": "20m", "alertname": "LogscopeAsaFailover", "exp_alerts": []},
            ],
        }],
    }
    path = tmp_path / "tests.yml"
    path.write_text(json.dumps(tests))  # JSON is YAML
    out = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------- hostile input

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_EXPR_ALPHABET = st.sampled_from(list("abcdefgklnorstuwy_()\"'\\,.~<>=!+-*/%0123456789 \n\t") +
                                 ["and ", "or ", "not ", "in ", "is ", "null", "count()", "share(", "kind", "tls",
                                  "baseline(", "24h", "rate()", "client_ip", "\x00", "é"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_EXPR_ALPHABET, max_size=30).map("".join))
def test_any_expression_text_compiles_or_is_an_expr_error(text):
    cols = E.events_columns()
    for compile_it in (lambda: E.compile_where(text, cols), lambda: E.compile_condition(text, cols, 600)):
        try:
            compile_it()
        except E.ExprError as exc:
            assert 0 <= exc.offset <= len(text)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_any_rules_text_loads_or_is_one_rules_error(text):
    try:
        loads(text, "fuzz.toml")
    except RulesError as exc:
        assert str(exc).startswith("fuzz.toml:") and "\n" not in str(exc).rstrip("\n")


def test_live_lines_from_the_future_count_now_with_a_warning(tmp_path):
    engine, rec, clock = live(tmp_path)
    logged = []
    engine.log = lambda level, msg: logged.append(msg)
    engine.add(events([sasl_fail(at(120, i), "203.0.113.8") for i in range(5)]))  # stamped 2 hours ahead
    for m in (1, 3.5):
        clock[0] = at(m).timestamp()
        engine.tick()
    assert [n.rule for n in rec.notes] == ["guess"]
    assert any("120 minutes in the future" in m for m in logged)


def test_engine_metrics_on_a_prometheus_registry(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest
    engine, rec, clock = live(tmp_path)
    n = WebhookNotifier({"type": "webhook", "name": "chat", "url": f"http://127.0.0.1:{free_port()}/",
                         "retry_initial": "10s"}, lambda *a: None)
    engine.notifiers.append(n)
    registry = CollectorRegistry()
    engine.register(registry)
    engine.add(events([sasl_fail(at(0, i), "203.0.113.9") for i in range(5)]))
    for m in (1, 3.5):
        clock[0] = at(m).timestamp()
        engine.tick()
    deadline = time.monotonic() + 10
    while n.stats()["failed"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    text = generate_latest(registry).decode()
    assert 'logscope_alerts{rule="guess",state="firing"} 1.0' in text
    assert 'logscope_alert_notifications_total{notifier="chat",result="failed"} 1.0' in text
    n.close(0)
