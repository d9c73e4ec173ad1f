"""`logscope report --email`: a real SMTP server (aiosmtpd, STARTTLS with a self-signed certificate) on
127.0.0.1 receives the weekly report; the received message is parsed with the email package and its
numbers checked against the attached JSON; the HTML part is rendered in headless Chromium.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import ssl
import subprocess
import sys

import pytest

from .conftest import REPO, SAMPLES
from .test_prometheus import free_port

aiosmtpd = pytest.importorskip("aiosmtpd", reason="the SMTP tests need aiosmtpd (pip install aiosmtpd)")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult  # noqa: E402

OPENSSL = shutil.which("openssl")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SAMPLE_FILES = [str(SAMPLES / n) for n in ("maillog", "postfix.log", "dovecot.log", "exim.log", "rspamd.log",
                                           "cisco_asa.log")]


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "logscope", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))


class Inbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content, session.ssl))
        return "250 OK"


class OnePassword:
    def __init__(self, user, password):
        self.user, self.password = user.encode(), password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = getattr(auth_data, "login", None) == self.user and getattr(auth_data, "password", None) == self.password
        return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if OPENSSL is None:
        pytest.skip("openssl not installed (Debian: apt-get install openssl)")
    d = tmp_path_factory.mktemp("smtpcert")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")], check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


@pytest.fixture
def smtp(cert):
    """A STARTTLS-only SMTP server on 127.0.0.1 that accepts user 'reports' with password 'pa ss'."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port(), tls_context=ctx, require_starttls=True,
                     authenticator=OnePassword("reports", "pa ss"), auth_require_tls=True)
    ctl.start()
    try:
        yield ctl, inbox
    finally:
        ctl.stop()


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def parts(msg):
    """(text, html, report) of a received report message."""
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    att = [p for p in msg.iter_attachments() if p.get_content_type() == "application/json"]
    assert len(att) == 1 and att[0].get_filename().endswith(".json")
    return text, html, json.loads(att[0].get_content())


def n(v) -> str:
    return f"{v:,}"


def test_report_mail_over_starttls_matches_the_json(smtp, cert, tmp_path):
    ctl, inbox = smtp
    pw = tmp_path / "pw"
    pw.write_text("pa ss\n")
    res = run("report", *SAMPLE_FILES, "--tz", "UTC", "--email", "ops@example.org, sec@example.org",
              "--smtp", f"127.0.0.1:{ctl.port}", "--smtp-user", "reports", "--smtp-password-file", str(pw),
              "--smtp-ca-file", str(cert[0]), "--from", "logscope@mx.example.org", "--subject", "weekly {period}")
    assert res.returncode == 0, res.stderr
    assert len(inbox.messages) == 1
    sender, rcpts, raw, tls = inbox.messages[0]
    assert sender == "logscope@mx.example.org" and rcpts == ["ops@example.org", "sec@example.org"]
    assert tls is not None  # delivered after STARTTLS
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/mixed"
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/mixed", "multipart/alternative", "text/plain", "text/html", "application/json"]
    text, html, doc = parts(msg)
    assert msg["Subject"] == f"weekly {doc['period']['first_event'][:10]} .. {doc['period']['last_event'][:10]}"
    tot = doc["traffic"]["totals"]
    assert tot["received"] > 0 and tot["rejected"] > 0  # the sample has traffic; the checks below mean something
    for part in (text, html):
        assert n(doc["input"]["lines"]) in part
        for key in ("received", "delivered", "rejected", "deferred", "bounced"):
            assert n(tot[key]) in part, key
        assert f"{doc['tls']['inbound']['tls_pct']}%" in part and f"{doc['tls']['outbound']['tls_pct']}%" in part
        for row in doc["rejects"]["reject_classes"][:5]:
            assert row["reject_class"] in part and n(row["count"]) in part
        top = doc["rejects"]["spam_domains"][0]
        assert top["sender_domain"] in part
        assert doc["rejects"]["blocklist"]["postfix_check_sender_access"][0] in part
        assert doc["rejects"]["auth_ips"][0]["client_ip"] in part
        for src, h in doc["input"]["sources"].items():
            assert f"{h['unparsed_pct']:.1f}" in part, src  # shown to one decimal
    # the text table row of a reject class carries its count and share
    rbl = next(r for r in doc["rejects"]["reject_classes"] if r["reject_class"] == "rbl")
    assert any(ln.split()[:3] == ["rbl", n(rbl["count"]), str(rbl["pct"])] for ln in text.splitlines())
    assert "<script" not in html.lower() and "src=" not in html  # no scripts, no external images
    exim = doc["rejects"]["blocklist"].get("exim_acl")
    if exim:  # multi-line entries arrive as lines, not with control characters replaced
        assert all(ln in text for entry in exim for ln in entry.splitlines())


def test_refused_auth_is_one_line_and_exit_2(smtp, cert):
    ctl, inbox = smtp
    res = run("report", str(SAMPLES / "maillog"), "--tz", "UTC", "--email", "ops@example.org",
              "--smtp", f"127.0.0.1:{ctl.port}", "--smtp-user", "reports", "--smtp-ca-file", str(cert[0]),
              env={"LOGSCOPE_SMTP_PASSWORD": "wrong"})
    assert res.returncode == 2 and inbox.messages == []
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert f"127.0.0.1:{ctl.port}" in res.stderr and "535" in res.stderr


def test_untrusted_certificate_and_missing_starttls_are_refused(smtp):
    ctl, inbox = smtp
    res = run("report", str(SAMPLES / "maillog"), "--tz", "UTC", "--email", "ops@example.org",
              "--smtp", f"127.0.0.1:{ctl.port}")
    assert res.returncode == 2 and inbox.messages == [] and "Traceback" not in res.stderr
    assert "certificate" in res.stderr.lower()
    plain = Controller(Inbox(), hostname="127.0.0.1", port=free_port())
    plain.start()
    try:
        res = run("report", str(SAMPLES / "maillog"), "--tz", "UTC", "--email", "ops@example.org",
                  "--smtp", f"127.0.0.1:{plain.port}")
        assert res.returncode == 2 and "STARTTLS" in res.stderr and plain.handler.messages == []
        # --smtp-security none is the explicit opt-out
        res = run("report", str(SAMPLES / "maillog"), "--tz", "UTC", "--email", "ops@example.org",
                  "--smtp", f"127.0.0.1:{plain.port}", "--smtp-security", "none")
        assert res.returncode == 0, res.stderr
        assert len(plain.handler.messages) == 1
    finally:
        plain.stop()


def test_implicit_tls(cert, tmp_path):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    ctl = Controller(Inbox(), hostname="127.0.0.1", port=free_port(), ssl_context=ctx)
    ctl.start()
    try:
        res = run("report", str(SAMPLES / "maillog"), "--tz", "UTC", "--email", "ops@example.org",
                  "--smtp", f"127.0.0.1:{ctl.port}", "--smtp-security", "tls", env={"SSL_CERT_FILE": str(cert[0])})
        assert res.returncode == 0, res.stderr
        (_, _, raw, _), = ctl.handler.messages
        assert parse(raw)["To"] == "ops@example.org"
        # (the server speaks only TLS on this port, so the message above came over TLS)
    finally:
        ctl.stop()


def test_password_is_not_a_command_line_option():
    res = run("report", str(SAMPLES / "maillog"), "--email", "a@b.example", "--smtp-password", "x")
    assert res.returncode == 2 and "--smtp-password-file" in res.stderr and "Connection" not in res.stderr


def test_dry_run_writes_a_parseable_eml(tmp_path):
    eml = tmp_path / "out.eml"
    res = run("report", str(SAMPLES / "maillog"), "--tz", "UTC", "--email", "ops@example.org", "--dry-run", str(eml))
    assert res.returncode == 0, res.stderr
    msg = parse(eml.read_bytes())
    text, html, doc = parts(msg)
    assert msg["To"] == "ops@example.org" and msg["Subject"].startswith("logscope weekly report ")
    assert n(doc["traffic"]["totals"]["received"]) in text and doc["input"]["lines"] > 0


def test_empty_period_sends_nothing_unless_asked(tmp_path):
    eml = tmp_path / "empty.eml"
    args = ("report", str(SAMPLES / "maillog"), "--tz", "UTC", "--since", "2001-01-01", "--until", "2001-01-08",
            "--email", "ops@example.org", "--dry-run", str(eml))
    res = run(*args)
    assert res.returncode == 0 and not eml.exists() and "no mail sent" in res.stderr
    res = run(*args, "--send-empty")
    assert res.returncode == 0, res.stderr
    text, html, doc = parts(parse(eml.read_bytes()))
    assert doc["input"]["events_in_period"] == 0 and "2001-01-01 .. 2001-01-08" in text


def test_bad_arguments_are_usage_errors(tmp_path):
    for extra in (["--email", "not an address"], ["--email", "a@b.example", "--subject", "{nope}"],
                  ["--email", "a@b.example", "--smtp", "host:notaport"],
                  ["--dry-run", str(tmp_path / "x.eml")],
                  ["--email", "a@b.example", "--smtp-user", "u", "--smtp-password-file", str(tmp_path / "none")]):
        res = run("report", str(SAMPLES / "maillog"), "--tz", "UTC", *extra)
        assert res.returncode == 2 and "Traceback" not in res.stderr, (extra, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, (extra, res.stderr)


def test_hostile_values_are_escaped_and_truncated(tmp_path):
    helo = "h" * 10_000
    head = ("Mar  1 00:00:16 mx1 postfix/smtpd[7514]: NOQUEUE: reject: RCPT from x.example[192.0.2.9]: 450 4.2.0 "
            "<a@example.org>: Recipient address rejected: Greylisted")
    log = tmp_path / "evil.log"
    # the parser refuses '<' inside from=<...>, so markup reaches the report through the reply text (the
    # reject example: both lines carry it, either may be the example) and a domain made of HTML entities
    # and quotes through the sender
    bad = "<script>alert(1)</script>\x1b[31m"
    log.write_text(f"{head}{bad}; from=<x@y.example> to=<a@example.org> proto=ESMTP helo=<{helo}>\n"
                   f"{head}{bad}; from=<x@&lt;script&gt;\"onmouseover=alert(1)> to=<a@example.org> proto=ESMTP "
                   f"helo=<{helo}>\n")
    eml = tmp_path / "evil.eml"
    res = run("report", str(log), "--tz", "UTC", "--email", "ops@example.org", "--dry-run", str(eml))
    assert res.returncode == 0, res.stderr
    text, html, doc = parts(parse(eml.read_bytes()))
    # the hostile values really reached the report
    assert any("<script>" in (r["example"] or "") for r in doc["rejects"]["reject_classes"])
    assert any(r["sender_domain"].startswith("&lt;script&gt;") for r in doc["rejects"]["spam_domains"])
    assert any(r["helo"].startswith("h" * 200) for r in doc["rejects"]["spam_helos"])  # 255 in the JSON
    assert "<script" not in html and "&lt;script&gt;alert(1)" in html
    assert "&amp;lt;script&amp;gt;&#34;onmouseover" in html  # entities and quotes stay text
    assert '"onmouseover' not in html
    assert "h" * 200 not in html and "h" * 200 not in text  # cut to a bounded cell
    assert "\x1b" not in text and "\x1b" not in html


def test_html_part_renders_in_headless_chromium(tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    eml = tmp_path / "r.eml"
    assert run("report", *SAMPLE_FILES, "--tz", "UTC", "--email", "ops@example.org", "--dry-run",
               str(eml)).returncode == 0
    text, html, doc = parts(parse(eml.read_bytes()))
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
    png = tmp_path / "shot.png"
    shot = subprocess.run(base + [f"--user-data-dir={tmp_path / 'profile1'}", f"--screenshot={png}",
                                  "--window-size=1000,1400", page.as_uri()], capture_output=True, timeout=90)
    assert png.exists(), shot.stderr.decode(errors="replace")[-2000:]
    dom = subprocess.run(base + [f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", page.as_uri()],
                         capture_output=True, timeout=90, text=True)
    title = f"logscope report {doc['period']['first_event'][:10]} .. {doc['period']['last_event'][:10]}"
    assert f"<title>{title}</title>" in dom.stdout and "Reject reasons" in dom.stdout
    assert_non_blank_png(png.read_bytes())


def assert_non_blank_png(data: bytes) -> None:
    """Decode the PNG (stdlib only) and require many distinct pixel values: text and bars, not one colour."""
    import struct
    import zlib
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + size]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += size + 12
    width, height, depth, colour = ihdr[:4]
    assert width >= 800 and height >= 800 and depth == 8 and colour in (2, 6)
    raw = zlib.decompress(idat)
    # filtered scanlines: distinct byte patterns over the image tell a rendered page from a blank one
    stride = width * (3 if colour == 2 else 4) + 1
    rows = {raw[i:i + stride] for i in range(0, len(raw), stride)}
    assert len(rows) > 50, f"only {len(rows)} distinct scanlines: blank screenshot?"


# ---------------------------------------------------------------- week over week, DMARC, alerts, config

def report_json(*args) -> dict:
    res = run("report", *args, "--format", "json", "--tz", "UTC")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def two_weeks(tmp_path_factory):
    """An archive with the sample maillog on 2025-03-01 and its first half a week earlier (2025-02-22)."""
    from datetime import timedelta

    import polars as pl

    from logscope.archive import Archive
    from logscope.header import HeaderOptions
    from logscope.parsers import load
    from logscope.pipeline import ReadOptions, iter_events
    events = pl.concat(list(iter_events([str(SAMPLES / "maillog")], load(),
                                        ReadOptions(HeaderOptions(tz="UTC", year=2025)), print)))
    arc = tmp_path_factory.mktemp("weeks") / "archive"
    with Archive(arc) as a:
        a.write_events(events, "this week")
        a.write_events(events.filter(pl.col("line") <= 2500).with_columns(pl.col("ts") - timedelta(days=7)),
                       "last week")
    return arc


WEEK = ("--since", "2025-02-24", "--until", "2025-03-03")
PREVIOUS = ("--since", "2025-02-17", "--until", "2025-02-24")


def test_change_against_the_previous_week_from_the_archive(two_weeks, tmp_path):
    from logscope import mail
    eml = tmp_path / "w.eml"
    res = run("report", "--from-archive", str(two_weeks), *WEEK, "--tz", "UTC", "--email", "ops@example.org",
              "--dry-run", str(eml), "--no-alerts")
    assert res.returncode == 0, res.stderr
    text, html, doc = parts(parse(eml.read_bytes()))
    now, before = report_json("--from-archive", str(two_weeks), *WEEK), report_json(
        "--from-archive", str(two_weeks), *PREVIOUS)
    assert 0 < before["traffic"]["totals"]["received"] < now["traffic"]["totals"]["received"]
    c = doc["comparison"]
    assert c["has_data"] and (c["since"], c["until"]) == ("2025-02-17T00:00:00Z", "2025-02-24T00:00:00Z")
    assert c["events"] == before["input"]["events_in_period"] == 2500
    rows = {r["key"]: r for r in c["headline"]}
    assert list(rows) == [k for k, _, _ in mail.HEADLINE]
    for key in ("received", "delivered", "rejected", "bounced", "deferred"):
        cur, prev = now["traffic"]["totals"][key], before["traffic"]["totals"][key]
        assert (rows[key]["current"], rows[key]["previous"], rows[key]["delta"]) == (cur, prev, cur - prev), key
        assert rows[key]["delta_pct"] == (round(100 * (cur - prev) / prev, 1) if prev else None)
    for key, side in (("tls_in_pct", "inbound"), ("tls_out_pct", "outbound")):
        cur, prev = now["tls"][side]["tls_pct"], before["tls"][side]["tls_pct"]
        assert rows[key]["delta"] == round(cur - prev, 1) and rows[key]["previous"] == prev
    received = rows["received"]
    shown = f"{received['delta']:+,} ({received['delta_pct']:+.1f}%)"
    assert received["delta"] > 0
    for part in (text, html):
        assert "Change against the previous period" in part and "2025-02-17T00:00 .. 2025-02-24T00:00" in part
        assert shown in part and f"{n(received['previous'])}" in part
        tls_in = rows["tls_in_pct"]
        assert f"{tls_in['delta']:+.1f} pp" in part and f"{tls_in['previous']:.1f}%" in part
    assert f"{shown} vs previous" in text  # next to the headline number
    # the same comparison in JSON when asked for
    assert report_json("--from-archive", str(two_weeks), *WEEK, "--compare")["comparison"]["headline"] == c["headline"]


def test_no_data_in_the_previous_period_says_so(two_weeks, tmp_path):
    eml = tmp_path / "w.eml"
    res = run("report", "--from-archive", str(two_weeks), "--since", "2025-03-01", "--until", "2025-03-02",
              "--tz", "UTC", "--email", "ops@example.org", "--dry-run", str(eml), "--no-alerts")
    assert res.returncode == 0, res.stderr
    text, html, doc = parts(parse(eml.read_bytes()))
    c = doc["comparison"]
    assert not c["has_data"] and c["events"] == 0 and all(r["delta"] is None for r in c["headline"])
    for part in (text, html):
        assert "No data for the previous period (2025-02-28T00:00 .. 2025-03-01T00:00): no change shown." in part
        assert "vs previous" not in part and " pp" not in part
    # reading files, there is no previous period to read: the mail says how to get one
    text, _, doc = parts(parse(dry_run(tmp_path, str(SAMPLES / "maillog"), "--no-alerts")))
    assert doc["comparison"]["note"] in text and "--from-archive" in text


def dry_run(tmp_path, *args) -> bytes:
    eml = tmp_path / "d.eml"
    res = run("report", *args, "--tz", "UTC", "--year", "2025", "--email", "ops@example.org", "--dry-run", str(eml))
    assert res.returncode in (0, 2), res.stderr
    assert "Traceback" not in res.stderr
    return eml.read_bytes()


def test_dmarc_summary_from_reports_of_the_period(tmp_path):
    """Reports from --dmarc (or the config's dmarc_paths) whose period overlaps the report's: per-domain
    compliance and failing sources with the numbers of logscope.dmarc.views; hostile names escaped."""
    from datetime import datetime, timezone

    from logscope.dmarc import views
    from logscope.dmarc.collect import read_reports

    from .test_dmarc import gz, record, report

    def ts(day):
        return int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp())
    d = tmp_path / "dmarc"
    d.mkdir()
    (d / "google.xml").write_text(report(
        [record("192.0.2.1", 100), record("198.51.100.7", 12, dkim="fail", spf="fail", disposition="quarantine"),
         record("203.0.113.5", 5, dkim="fail")], org="google.com", report_id="g1",
        begin=ts("2025-03-01"), end=ts("2025-03-02") - 1))
    (d / "hostile.xml.gz").write_bytes(gz(report(
        [record("198.51.100.9", 3, spf="fail", dkim="fail", disposition="reject",
                header_from="&lt;script&gt;evil.example")],
        org="&lt;b&gt;Yahoo", report_id="y1", domain="&lt;script&gt;evil.example",
        begin=ts("2025-02-28"), end=ts("2025-03-01") - 1).encode()))
    (d / "old.xml").write_text(report([record("192.0.2.99", 1000, dkim="fail", spf="fail")], org="old",
                                      report_id="o1", begin=ts("2025-01-01"), end=ts("2025-01-02") - 1))
    (d / "broken.xml").write_text("<feedback><nope")
    raw = dry_run(tmp_path, str(SAMPLES / "maillog"), "--since", "2025-02-28", "--until", "2025-03-07",
                  "--dmarc", str(d), "--no-alerts")
    text, html, doc = parts(parse(raw))
    dm = doc["dmarc"]
    # the views on the same reports, without the one outside the period (and the broken file: one error)
    ds = read_reports([str(d)], lambda *a: None)
    want = views.domain_summary(ds.records.filter(ds.records["report_id"] != "o1"))
    assert dm["reports"] == 2 and dm["messages"] == 120 and dm["unreadable_inputs"] == 1
    assert [(r["domain"], r["messages"], r["dmarc_pass"]) for r in dm["domains"]] == [
        (r["domain"], r["messages"], r["dmarc_pass"]) for r in want.iter_rows(named=True)]
    org = next(r for r in dm["domains"] if r["domain"] == "example.org")
    assert (org["messages"], org["dmarc_pass"], org["dmarc_pass_pct"], org["quarantine"]) == (117, 105, 89.7, 12)
    failing = {r["source_ip"]: r for r in dm["failing_sources"]}
    assert set(failing) == {"198.51.100.7", "198.51.100.9", "203.0.113.5"}  # 192.0.2.99 is from January
    assert failing["198.51.100.7"]["failed"] == 12 and failing["203.0.113.5"]["category"] == "passes SPF but fails DKIM"
    for part in (text, html):
        assert "DMARC compliance per domain" in part and "2 DMARC aggregate reports, 120 messages" in part
        assert "198.51.100.7" in part and "192.0.2.99" not in part and "89.7" in part
    assert "<script" not in html and "&lt;script&gt;evil.example" in html and "&lt;b&gt;yahoo" in html.lower()
    # the config's dmarc_paths are read when no --dmarc is given
    conf = tmp_path / "c.toml"
    conf.write_text('dmarc_paths = ["dmarc"]\n')
    _, _, doc2 = parts(parse(dry_run(tmp_path, str(SAMPLES / "maillog"), "--since", "2025-02-28", "--until",
                                     "2025-03-07", "--config", str(conf), "--no-alerts")))
    assert doc2["dmarc"]["domains"] == dm["domains"]


def test_alerts_fired_during_the_period_are_the_replay_of_alerts_test(tmp_path):
    """The e-mail lists what `logscope alerts test` finds on the same logs (the same engine, replayed)."""
    log = str(SAMPLES / "maillog")
    res = run("alerts", "test", "default", log, "--format", "json", "--tz", "UTC", "--year", "2025")
    assert res.returncode == 1, res.stderr  # alerts fired
    want = [(t["at"], t["rule"], {k: v for k, v in t["labels"].items() if k != "severity"})
            for t in json.loads(res.stdout)["transitions"] if t["status"] == "firing"]
    assert len(want) >= 3
    text, html, doc = parts(parse(dry_run(tmp_path, log)))
    al = doc["alerts"]
    assert al["rules"] == "default rules" and al["fired_total"] == len(want)
    assert [(a["fired_at"], a["rule"], a["labels"]) for a in al["fired"]] == want
    for part in (text, html):
        assert "Alerts fired during the period" in part and f"{len(want):,} alerts fired" in part
        for at, rule, labels in want:
            assert rule in part and at[:16].replace("T", " ") in part and all(v in part for v in labels.values())
    _, _, doc = parts(parse(dry_run(tmp_path, log, "--no-alerts")))
    assert "alerts" not in doc


def test_parser_health_headline(tmp_path):
    log = tmp_path / "mixed.log"
    lines = (SAMPLES / "maillog").read_text().splitlines()[:90]
    log.write_text("\n".join(lines + ["Mar  1 00:10:00 mx1 postfix/smtpd[1]: something logscope has never seen"] * 1
                             + ["Mar  1 00:10:01 mx1 postfix/smtpd[1]: nor this %d" % i for i in range(9)]) + "\n")
    text, html, doc = parts(parse(dry_run(tmp_path, str(log), "--no-alerts")))
    src = doc["input"]["sources"]
    unparsed = sum(v["unparsed"] for v in src.values())
    share = 100 * unparsed / sum(v["events"] for v in src.values())
    assert unparsed >= 10
    for part in (text, html):
        assert f"{share:.2f}%" in part and "unparsed lines" in part
        assert f"{share:.2f}% of the events in the period unparsed" in part


def test_smtp_settings_from_the_config_file(smtp, cert, tmp_path):
    """Server, port, security, user, password file (relative to the config), CA, recipients, sender and
    subject all from [email]; the message arrives over STARTTLS with authentication."""
    ctl, inbox = smtp
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "smtp.password").write_text("pa ss\n")
    conf = conf_dir / "config.toml"
    conf.write_text(f'[email]\nto = ["ops@example.org", "sec@example.org"]\nfrom = "logscope@mx.example.org"\n'
                    f'subject = "weekly {{received}} received"\nsmtp_server = "127.0.0.1"\nsmtp_port = {ctl.port}\n'
                    f'smtp_security = "starttls"\nsmtp_user = "reports"\nsmtp_password_file = "smtp.password"\n'
                    f'smtp_ca_file = "{cert[0]}"\n')
    res = run("report", str(SAMPLES / "maillog"), "--tz", "UTC", "--config", str(conf), "--email", "--no-alerts",
              env={"LOGSCOPE_SMTP_PASSWORD": ""})
    assert res.returncode == 0, res.stderr
    (sender, rcpts, raw, tls), = inbox.messages
    assert sender == "logscope@mx.example.org" and rcpts == ["ops@example.org", "sec@example.org"] and tls
    _, _, doc = parts(parse(raw))
    assert parse(raw)["Subject"] == f"weekly {doc['traffic']['totals']['received']} received"
    # a flag wins over the config: the wrong port is refused, one line, exit 2
    res = run("report", str(SAMPLES / "maillog"), "--tz", "UTC", "--config", str(conf), "--email", "--no-alerts",
              "--smtp", f"127.0.0.1:{free_port()}")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and len(inbox.messages) == 1
