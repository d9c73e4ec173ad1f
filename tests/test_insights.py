"""Operator insights (logscope/views/insights.py): every number below was counted by hand in the
annotated samples (sample_logs/*.log) or in the small logs written out in this file."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logscope import render
from logscope.classify import load_classes
from logscope.engine import parse_lines
from logscope.report import Report
from logscope.samples import SAMPLE_OPTIONS, read_expectations
from logscope.views import insights
from logscope.views.insights import Options

from .conftest import SAMPLES
from .test_cli import run

SOURCES = ("postfix", "dovecot", "exim", "rspamd", "cisco_asa")


@pytest.fixture(scope="module")
def classes():
    return load_classes([])


def sample(source: str) -> list[str]:
    return read_expectations(SAMPLES / f"{source}.log")[0]


def report(chunks: list[list[str]], parser_set, classes, top: int = 50, opts: Options | None = None) -> dict:
    """The report document of lines fed chunk by chunk."""
    rep = Report(classes, insight_options=opts)
    for lines in chunks:
        rep.add(parse_lines(pl.DataFrame({"line": lines}), parser_set, SAMPLE_OPTIONS))
    return rep.build(top=top)


def insight(chunks, parser_set, classes, **kw) -> dict:
    return report(chunks, parser_set, classes, **kw)["insights"]


def rows(table: list[dict], *keys: str) -> dict:
    """{tuple of key values: row} of a result table."""
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r for r in table}


# ---------------------------------------------------------------- TLS readiness --

def test_tls_readiness_on_postfix_sample(parser_set, classes):
    t = insight([sample("postfix")], parser_set, classes)["tls_readiness"]
    proto = rows(t["protocols"], "direction", "protocol")
    # 14 smtpd sessions with a client address: pid 2101 used TLSv1.3 (1 message); the smtps session (2303)
    # is TLS without a protocol line; the other 12 are plaintext, one of them (2201, submission) sent a message.
    assert (proto[("in", "TLSv1.3")]["sessions"], proto[("in", "TLSv1.3")]["messages"]) == (1, 1)
    assert proto[("in", "unknown")]["sessions"] == 1
    assert (proto[("in", "plaintext")]["sessions"], proto[("in", "plaintext")]["messages"]) == (12, 1)
    # relay.example.net had two sessions (2304, 2307): 11 plaintext peers
    assert proto[("in", "plaintext")]["peers"] == 11
    # 7 smtp deliveries to remote addresses: one after "Verified TLS connection established to mx.example.com"
    # by the same process (2230), six without TLS; outbound rows count deliveries, not sessions
    assert proto[("out", "TLSv1.3")]["messages"] == 1 and proto[("out", "TLSv1.3")]["sessions"] is None
    assert (proto[("out", "plaintext")]["messages"], proto[("out", "plaintext")]["peers"]) == (6, 2)
    what = rows(t["what_if"], "direction", "requirement")
    assert what[("in", "TLS required")] | {} == {"direction": "in", "requirement": "TLS required", "peers": 11,
                                                  "sessions": 12, "messages": 1, "messages_pct": 50.0}
    assert what[("out", "TLS required")]["messages"] == 6 and what[("out", "TLS required")]["messages_pct"] == 85.7
    assert what[("in", "TLS >= 1.3")]["peers"] == 0


TLS_LOG = """\
Mar  2 09:00:00 mx1 postfix/smtpd[3101]: connect from legacy.example.com[198.51.100.70]
Mar  2 09:00:00 mx1 postfix/smtpd[3101]: Anonymous TLS connection established from legacy.example.com[198.51.100.70]: TLSv1 with cipher DES-CBC3-SHA (112/168 bits)
Mar  2 09:00:01 mx1 postfix/smtpd[3101]: 5B2F13D2E8: client=legacy.example.com[198.51.100.70]
Mar  2 09:00:01 mx1 postfix/smtpd[3101]: disconnect from legacy.example.com[198.51.100.70] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7
Mar  2 09:01:00 mx1 postfix/smtpd[3102]: connect from mta7.bulk.example.net[198.51.100.71]
Mar  2 09:01:00 mx1 postfix/smtpd[3102]: Untrusted TLS connection established from mta7.bulk.example.net[198.51.100.71]: TLSv1.2 with cipher ECDHE-RSA-AES128-SHA (128/128 bits)
Mar  2 09:01:01 mx1 postfix/smtpd[3102]: 6C3A24E3F9: client=mta7.bulk.example.net[198.51.100.71]
Mar  2 09:01:02 mx1 postfix/smtpd[3102]: 7D4B35F4AA: client=mta7.bulk.example.net[198.51.100.71]
Mar  2 09:01:02 mx1 postfix/smtpd[3102]: disconnect from mta7.bulk.example.net[198.51.100.71] ehlo=2 starttls=1 mail=2 rcpt=2 data=2 quit=1 commands=10
Mar  2 09:02:00 mx1 postfix/smtpd[3103]: connect from mail.modern.example.org[2001:db8::25]
Mar  2 09:02:00 mx1 postfix/smtpd[3103]: Anonymous TLS connection established from mail.modern.example.org[2001:db8::25]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256
Mar  2 09:02:01 mx1 postfix/smtpd[3103]: 8E5C46A5BB: client=mail.modern.example.org[2001:db8::25]
Mar  2 09:02:01 mx1 postfix/smtpd[3103]: disconnect from mail.modern.example.org[2001:db8::25] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7
Mar  2 09:03:00 mx1 postfix/smtpd[3104]: connect from smtp.plainmail.example[198.51.100.72]
Mar  2 09:03:01 mx1 postfix/smtpd[3104]: 9F6D57B6CC: client=smtp.plainmail.example[198.51.100.72]
Mar  2 09:03:01 mx1 postfix/smtpd[3104]: disconnect from smtp.plainmail.example[198.51.100.72] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5
Mar  2 09:04:00 mx1 postfix/smtp[3201]: Trusted TLS connection established to mx.partner.example[203.0.113.40]:25: TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)
Mar  2 09:04:01 mx1 postfix/smtp[3201]: 0A7E68C7DD: to=<a@partner.example>, relay=mx.partner.example[203.0.113.40]:25, delay=0.5, delays=0.1/0/0.2/0.2, dsn=2.0.0, status=sent (250 ok)
Mar  2 09:04:01 mx1 postfix/smtp[3201]: 0A7E68C7DD: to=<b@partner.example>, relay=mx.partner.example[203.0.113.40]:25, delay=0.5, delays=0.1/0/0.2/0.2, dsn=2.0.0, status=sent (250 ok)
Mar  2 09:04:02 mx1 postfix/smtp[3202]: 1B8F79D8EE: to=<c@example.org>, relay=127.0.0.1[127.0.0.1]:10024, delay=0.1, delays=0.1/0/0/0, dsn=2.0.0, status=sent (250 ok)
2025-03-02 09:05:00 1tOaBn-0007Oo-7G <= legacy@old.example H=mail.old.example [198.51.100.80]:40000 I=[192.0.2.10]:25 P=esmtps X=TLS1.0:RSA_3DES_EDE_CBC_SHA1:168 CV=no S=1200 id=legacy-1@old.example for bob@example.org
""".splitlines()


def test_tls_what_if_thresholds_and_cipher_exclusion(parser_set, classes):
    t = insight([TLS_LOG], parser_set, classes)["tls_readiness"]
    # inbound: example.com TLSv1/DES-CBC3-SHA (1 message), example.net TLSv1.2 (1 session, 2 messages),
    # example.org TLSv1.3 (1), plainmail.example plaintext (1), exim old.example TLS1.0/3DES (1): 6 messages
    what = rows(t["what_if"], "direction", "requirement")
    assert {k: (v["peers"], v["sessions"], v["messages"], v["messages_pct"]) for k, v in what.items()} == {
        ("in", "TLS >= 1.2"): (2, 2, 2, 33.3),
        ("in", "TLS >= 1.3"): (3, 3, 4, 66.7),
        ("in", "excluded ciphers"): (2, 2, 2, 33.3),   # DES-CBC3-SHA, RSA_3DES_EDE_CBC_SHA1
        ("in", "TLS required"): (1, 1, 1, 16.7),
        # outbound: 2 deliveries to partner.example over TLSv1.2; the loopback content filter is no peer
        ("out", "TLS >= 1.2"): (0, None, 0, 0.0),
        ("out", "TLS >= 1.3"): (1, None, 2, 100.0),
        ("out", "excluded ciphers"): (0, None, 0, 0.0),
        ("out", "TLS required"): (0, None, 0, 0.0),
    }
    peers = rows(t["breaking_peers"], "direction", "requirement", "peer")
    assert set(k[2] for k in peers if k[1] == "TLS >= 1.2") == {"example.com", "old.example"}
    assert peers[("in", "TLS >= 1.2", "old.example")]["protocols"] == ["TLSv1"]  # exim's TLS1.0, spelled as OpenSSL does
    assert peers[("in", "TLS >= 1.3", "example.net")]["messages"] == 2
    ciphers = rows(t["ciphers"], "direction", "cipher")
    assert ciphers[("in", "DES-CBC3-SHA")]["excluded"] and not ciphers[("in", "ECDHE-RSA-AES128-SHA")]["excluded"]
    # a custom list: tokens match between - and _ only ("SHA" is not "SHA1" or "SHA384")
    sha = insight([TLS_LOG], parser_set, classes, opts=Options(exclude_ciphers=("SHA",)))["tls_readiness"]
    hit = rows(sha["what_if"], "direction", "requirement")[("in", "excluded ciphers")]
    assert (hit["peers"], hit["messages"]) == (2, 3)   # DES-CBC3-SHA (1), ECDHE-RSA-AES128-SHA (2)
    cbc = insight([TLS_LOG], parser_set, classes, opts=Options(exclude_ciphers=("CBC",)))["tls_readiness"]
    assert [p["peer"] for p in cbc["breaking_peers"] if p["requirement"] == "excluded ciphers"] == ["old.example"]


def test_cipher_regex_tokens():
    rx = insights.cipher_regex(("aNULL", "RC4", "EDH-DSS-DES-CBC3-SHA"))
    match = lambda c: bool(re.search(rx, c.upper()))  # noqa: E731
    assert match("ADH-AES256-SHA") and match("RC4-MD5") and match("EDH_DSS_DES_CBC3_SHA")
    assert not match("ECDHE-RSA-AES256-GCM-SHA384") and not match("TLS_AES_128_GCM_SHA256")
    assert insights.cipher_regex(()) == r"$^"


def test_tls_handshake_failures(parser_set, classes):
    pf = insight([sample("postfix")], parser_set, classes)["tls_failures"]
    # SSL_accept error: lost connection (in); Cannot start TLS: handshake failure (out, no peer named);
    # certificate verification failed (out); SSL_accept error -1 + TLS library problem = one failure (in)
    assert pf["total"] == 4
    assert {(r["direction"], r["reason"]): r["count"] for r in pf["by_reason"]} == {
        ("in", "lost connection"): 1, ("out", "handshake failure"): 1,
        ("out", "certificate verification failed: untrusted issuer"): 1, ("in", "unsupported protocol"): 1}
    # the library line names no client: the SSL_accept error line next to it does
    assert rows(pf["by_peer"], "peer")["203.0.113.99"]["reasons"] == ["unsupported protocol"]
    assert rows(pf["by_peer"], "peer")["example.biz"]["direction"] == "out"
    dv = insight([sample("dovecot")], parser_set, classes)["tls_failures"]
    assert {r["reason"]: (r["count"], r["peers"]) for r in dv["by_reason"]} == {
        "wrong version number": (2, 2), "connection reset by peer": (1, 1), "tlsv1 alert unknown ca": (1, 1)}
    ex = insight([sample("exim")], parser_set, classes)["tls_failures"]
    # a TLS error on a delivery, and an incoming client's certificate that failed verification
    assert [(r["reason"], r["count"]) for r in ex["by_reason"]] == [
        ("a tls packet with unexpected length was received.", 1),
        ("depth=n error=unable to get local issuer certificate cert=/cn=client.example", 1)]
    assert {r["peer"] for r in ex["by_peer"]} == {"scanner.example", "203.0.113.92"}


# --------------------------------------------------------- authentication hygiene --

AUTH_LOG = """\
Mar  2 10:00:06 mx1 dovecot: imap-login: Login: user=<olga@example.org>, method=CRAM-MD5, rip=198.51.100.60, lip=192.0.2.10, mpid=40215, session=<b2xnYWNyYW0>
Mar  2 10:00:07 mx1 dovecot: imap-login: Login: user=<paul@example.org>, method=SCRAM-SHA-256, rip=2001:db8::77, lip=2001:db8::1, mpid=40216, TLS, session=<cGF1bHNjcmFt>
Mar  2 10:00:08 mx1 dovecot: imap-login: Login: user=<quinn@example.org>, method=XOAUTH2, rip=198.51.100.61, lip=192.0.2.10, mpid=40217, TLS, session=<cXVpbm5vYXV0aA>
Mar  2 10:00:09 mx1 dovecot: pop3-login: Login: user=<bob>, method=LOGIN, rip=203.0.113.30, lip=192.0.2.10, mpid=40218, session=<Ym9ibG9naW4>
Mar  2 10:00:10 mx1 dovecot: pop3-login: Login: user=<bob>, method=LOGIN, rip=203.0.113.30, lip=192.0.2.10, mpid=40219, session=<Ym9ibG9naW5>
Mar  2 10:01:00 mx1 postfix/submission/smtpd[3301]: connect from unknown[203.0.113.93]
Mar  2 10:01:01 mx1 postfix/submission/smtpd[3301]: warning: unknown[203.0.113.93]: SASL LOGIN authentication failed: UGFzc3dvcmQ6
Mar  2 10:01:02 mx1 postfix/submission/smtpd[3301]: disconnect from unknown[203.0.113.93] ehlo=1 auth=0/1 commands=1/2
Mar  2 10:02:00 mx1 postfix/submission/smtpd[3302]: connect from laptop.example.org[198.51.100.9]
Mar  2 10:02:00 mx1 postfix/submission/smtpd[3302]: Anonymous TLS connection established from laptop.example.org[198.51.100.9]: TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits)
Mar  2 10:02:01 mx1 postfix/submission/smtpd[3302]: disconnect from laptop.example.org[198.51.100.9] ehlo=2 starttls=1 auth=1 quit=1 commands=5
""".splitlines()


def test_auth_hygiene_on_samples(parser_set, classes):
    dv = insight([sample("dovecot")], parser_set, classes)["auth_hygiene"]
    # logins: alice PLAIN TLS, erin PLAIN TLS (imap), bob PLAIN plaintext (pop3), carol PLAIN secured
    # (managesieve on 127.0.0.1), dave LOGIN TLS (submission)
    assert {(r["service"], r["mechanism"], r["tls"]): r["logins"] for r in dv["by_mechanism"]} == {
        ("imap", "PLAIN", "TLS"): 2, ("pop3", "PLAIN", "plaintext"): 1, ("managesieve", "PLAIN", "secured"): 1,
        ("submission", "LOGIN", "TLS"): 1}
    assert [(r["user"], r["client_ip"], r["mechanism"]) for r in dv["cleartext_without_tls"]] == [("bob", "2001:db8::25", "PLAIN")]
    # refused: "tried to use disabled plaintext auth" (2.2), "disallowed plaintext auth" (2.3), unsupported mechanism
    assert sorted((r["refusal"], r["service"], r["client_ip"]) for r in dv["refused"]) == [
        ("plaintext auth disallowed", "imap", "203.0.113.213"), ("plaintext auth disallowed", "pop3", "203.0.113.210"),
        ("unsupported mechanism", "imap", "203.0.113.214")]
    pf = insight([sample("postfix")], parser_set, classes)["auth_hygiene"]
    # carol's submission session (2201) authenticated with PLAIN and never started TLS; the two
    # sessions whose only SASL line is a failure (2406, 2407) are not logins
    assert pf["by_mechanism"] == [{"service": "postfix submission", "mechanism": "PLAIN", "tls": "plaintext", "logins": 1}]
    assert pf["cleartext_without_tls"][0]["user"] == "carol@example.org"
    ex = insight([sample("exim")], parser_set, classes)["auth_hygiene"]
    # A=dovecot_plain:carol@example.org over X=TLS1.2: the authenticator's driver name maps to PLAIN
    assert ex["by_mechanism"] == [{"service": "exim", "mechanism": "PLAIN", "tls": "TLS", "logins": 1}]


def test_auth_hygiene_mechanisms(parser_set, classes):
    a = insight([AUTH_LOG], parser_set, classes)["auth_hygiene"]
    mech = rows(a["mechanisms"], "mechanism")
    assert {m: (r["logins"], r["without_tls"], r["cleartext"]) for m, r in mech.items()} == {
        "LOGIN": (2, 2, True), "CRAM-MD5": (1, 1, False), "SCRAM-SHA-256": (1, 0, False), "XOAUTH2": (1, 0, False),
        "unknown": (1, 0, False)}   # postfix: auth=1 on disconnect, method not logged without a message
    # CRAM-MD5 without TLS sends no password: only bob's LOGIN is a finding, twice
    assert [(r["user"], r["mechanism"], r["count"]) for r in a["cleartext_without_tls"]] == [("bob", "LOGIN", 2)]
    assert ("postfix submission", "unknown", "TLS") in {(r["service"], r["mechanism"], r["tls"]) for r in a["by_mechanism"]}


# ---------------------------------------------------------------- IPv4 vs IPv6 --

def test_ip_families(parser_set, classes):
    ip = insight([sample("postfix")], parser_set, classes)["ip_families"]
    share = rows(ip["share"], "what")
    # sessions from 2001:db8::1 (submission) and fe80::1:2:3:4 (VRFY); erin's delivery to mx6.example.com
    assert (share["inbound smtpd sessions"]["ipv4"], share["inbound smtpd sessions"]["ipv6"]) == (12, 2)
    assert (share["outbound deliveries"]["ipv4"], share["outbound deliveries"]["ipv6"]) == (6, 1)
    assert share["outbound deliveries"]["ipv6_pct"] == 14.3
    assert share["inbound postscreen connections"]["ipv4"] == 1 and share["outbound connect failures"]["ipv4"] == 1
    # mx6.example.com was reached over IPv6 (erin) and over IPv4 (finn)
    assert ip["relays_missing_ipv6"] == [{"relay_host": "mx6.example.com", "ipv4": 1, "ipv6": 1}]
    ex = insight([sample("exim")], parser_set, classes)["ip_families"]
    assert ex["relays_missing_ipv6"] == [{"relay_host": "mx1.remote.example", "ipv4": 2, "ipv6": 1}]
    dv = rows(insight([sample("dovecot")], parser_set, classes)["ip_families"]["share"], "what")
    # logins from 198.51.100.23, 2001:db8::25, 203.0.113.77, 198.51.100.5; carol's 127.0.0.1 is left out
    assert (dv["IMAP/POP3 logins"]["ipv4"], dv["IMAP/POP3 logins"]["ipv6"]) == (3, 1)


# --------------------------------------------------------------- blocklists --

RULES_LOG = """\
Mar  2 11:00:00 mx1 postfix/cleanup[4001]: 1A2B3C4D5E: reject: header Subject: Cheap meds from spam1.example[203.0.113.101]; from=<a@spam1.example> to=<bob@example.org> proto=ESMTP helo=<spam1.example>: 5.7.1 Plz stop sending SPAM id=8
Mar  2 11:00:05 mx1 postfix/cleanup[4001]: 2B3C4D5E6F: reject: header Subject: Cheap pills from spam2.example[203.0.113.102]; from=<b@spam2.example> to=<bob@example.org> proto=ESMTP helo=<spam2.example>: 5.7.1 Plz stop sending SPAM id=8
Mar  2 11:00:10 mx1 postfix/smtpd[4002]: NOQUEUE: reject: RCPT from spam3.example[203.0.113.103]: 554 5.7.1 <c@spam3.example>: Sender address rejected: Plz stop sending SPAM id=3; from=<c@spam3.example> to=<bob@example.org> proto=ESMTP helo=<spam3.example>
Mar  2 11:00:15 mx1 postfix/smtpd[4003]: NOQUEUE: reject: RCPT from unknown[203.0.113.104]: 554 5.7.1 <unknown[203.0.113.104]>: Client host rejected: Access denied; from=<d@spam4.example> to=<bob@example.org> proto=ESMTP helo=<x>
Mar  2 11:00:20 mx1 postfix/smtpd[4004]: NOQUEUE: reject: RCPT from unknown[203.0.113.105]: 450 4.1.8 <e@nxdomain.example>: Sender address rejected: Domain not found; from=<e@nxdomain.example> to=<bob@example.org> proto=ESMTP helo=<y>
""".splitlines()

DMARC_LOG = """\
2025-03-02 09:16:50 #3121(normal) <2a3b4c>; task; rspamd_task_write_log: id: <spoof-1@bank.example>, qid: <9A3B1C45DD>, ip: 203.0.113.150, from: <ceo@bank.example>, (default: F (add header): [8.40/15.00] [DMARC_POLICY_QUARANTINE(1.50){bank.example;quarantine;},R_SPF_SOFTFAIL(0.00){~all;},R_DKIM_NA(0.00){},BAYES_SPAM(5.10){97.00%;},FORGED_SENDER(0.30){},PHISHING(1.50){}]), len: 3100, time: 120.000ms real, 10.000ms virtual, dns req: 8, digest: <abababababababababababababababab>, rcpts: <ivy@example.net>, mime_rcpts: <ivy@example.net>
2025-03-02 09:16:55 #3121(normal) <3b4c5d>; task; rspamd_task_write_log: id: <stmt-77@bank.example>, qid: <9B4C2D56EE>, ip: 198.51.100.90, from: <statements@bank.example>, (default: F (no action): [-0.90/15.00] [DMARC_POLICY_ALLOW(-0.50){bank.example;reject;},R_SPF_ALLOW(-0.20){+ip4:198.51.100.0/24;},R_DKIM_ALLOW(-0.20){bank.example:s=s1;}]), len: 5200, time: 90.000ms real, 9.000ms virtual, dns req: 7, digest: <cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd>, rcpts: <ivy@example.net>, mime_rcpts: <ivy@example.net>
Mar  2 09:17:00 mx1 policyd-spf[2601]: prepend Received-SPF: Softfail (mailfrom) identity=mailfrom; client-ip=198.51.100.70; helo=legacy.example.com; envelope-from=news@legacy.example.com; receiver=<UNKNOWN>
Mar  2 09:17:01 mx1 postfix/policy-spf[2602]: Policy action=PREPEND Received-SPF: pass (example.com: 198.51.100.7 is authorized to use 'alice@example.com' in 'mfrom' identity (mechanism 'ip4:198.51.100.0/24' matched)) receiver=mx1.example.org; identity=mailfrom; envelope-from="alice@example.com"; helo=mail.example.com; client-ip=198.51.100.7
2025-03-02 09:18:00 1tOaBq-0008Qq-9I DKIM: d=broken.example s=old c=relaxed/relaxed a=rsa-sha256 b=1024 [invalid - public key record (currently?) unavailable]
2025-03-02 09:18:01 1tOaBr-0008Qq-0J DKIM: d=weak.example s=sel c=simple/simple a=rsa-sha1 b=1024 [fail - hash too weak]
2025-03-02 09:18:02 1tOaBr-0008Qq-0J DKIM: acl called - signer: weak.example bits: 1024
""".splitlines()


def test_blocklists_on_samples(parser_set, classes):
    pf = insight([sample("postfix")], parser_set, classes)["blocklists"]
    assert {(r["origin"], r["rule"], r["action"]): r["count"] for r in pf["rule_hits"]} == {
        ("postfix header_checks", "No lottery mail here", "reject"): 1,
        ("postfix header_checks", "(no text) header X-Mailer", "warning"): 1,   # WARN without text: the header names it
        ("postfix body_checks", "archive@example.org", "redirect"): 1,
        ("postfix check_sender_access", "triggers HOLD action", "hold"): 1,
        ("postfix postscreen_access_list", "deny", "reject"): 1,
    }  # built-in restrictions (not owned by user, cannot find your hostname, ...) are not your rules
    ex = insight([sample("exim")], parser_set, classes)["blocklists"]
    hits = {(r["origin"], r["rule"]): (r["action"], r["count"]) for r in ex["rule_hits"]}
    assert len(hits) == 14
    # connections refused before any ACL (host_reject_connection, smtp_reserve_hosts, smtp_accept_max_per_host)
    assert hits[("exim acl_smtp_connect", "host_reject_connection")] == ("reject", 1)
    assert hits[("exim acl_smtp_connect", "not in reserve list: connected=95 max=100 reserve=5")] == ("defer", 1)
    assert hits[("exim acl_smtp_connect", "too many connections from that IP address")] == ("defer", 1)
    # the client's name, address and port are taken out of the ACL message: one rule, whoever triggers it
    assert hits[("exim acl_smtp_rcpt", "JunkMail rejected - HOST [IP]:N is in an RBL: https://www.spamhaus.org/query/ip/IP")] == ("reject", 1)
    assert hits[("exim acl_smtp_connect", "too many connections")] == ("drop", 1)
    assert hits[("exim acl", "found in zen.spamhaus.org")] == ("warn", 1)
    rs = insight([sample("rspamd")], parser_set, classes)["blocklists"]
    # 11 scans: reject 3 (21.37, GTUBE, reduced format), soft reject 1, rewrite subject 1, add header 2, greylist 1, no action 3
    assert {r["action"]: (r["count"], r["pct"]) for r in rs["rspamd_actions"]} == {
        "reject": (3, 27.3), "soft reject": (1, 9.1), "rewrite subject": (1, 9.1), "add header": (2, 18.2),
        "greylist": (1, 9.1), "no action": (3, 27.3)}
    sym = rows(rs["rspamd_symbols"], "symbol")
    # BAYES_SPAM scored 5.10, 4.20, 5.05, 5.0, 4.02
    assert (sym["BAYES_SPAM"]["count"], sym["BAYES_SPAM"]["mean_score"], sym["BAYES_SPAM"]["pct"]) == (5, 4.67, 45.5)
    assert sym["R_SPF_ALLOW"]["count"] == 3 and sym["GTUBE"]["count"] == 1
    assert sym["R_SPF_ALLOW"]["mean_score"] == -0.6  # -0.20, -1.0 and a bare 1.x name without a score
    assert {(r["sender_domain"], tuple(r["actions"])) for r in rs["got_through"]} == {
        ("lists.example.com", ("add header",)), ("mailer.example.io", ("rewrite subject",)), ("example.com", ("add header",))}
    assert rs["stale_rules"] is None  # no rule list configured


def test_rule_hits_and_stale_rules(parser_set, classes):
    opts = Options(rules=("id=8", "id=3", "id=80", "MY_LOCAL_BL", "Access denied", "BAYES_SPAM"))
    b = insight([RULES_LOG + DMARC_LOG], parser_set, classes, opts=opts)["blocklists"]
    assert {(r["origin"], r["rule"]): r["count"] for r in b["rule_hits"]} == {
        ("postfix header_checks", "Plz stop sending SPAM id=8"): 2,
        ("postfix check_sender_access", "Plz stop sending SPAM id=3"): 1,
        ("postfix check_client_access", "Access denied"): 1}   # "Domain not found" is reject_unknown_sender_domain
    # "id=8" does not count as "id=80"; rspamd symbols are rules too
    assert b["stale_rules"] == ["id=80", "MY_LOCAL_BL"]
    assert [r["sender_domain"] for r in b["got_through"]] == ["bank.example"]


# ------------------------------------------------------ SPF / DKIM / DMARC results --

def test_auth_results(parser_set, classes):
    rs = insight([sample("rspamd")], parser_set, classes)["auth_results"]
    assert {(r["method"], r["result"]): r["count"] for r in rs["summary"]} == {
        ("spf", "pass"): 3, ("spf", "none"): 1, ("dkim", "fail"): 1, ("dkim", "pass"): 1}
    assert rs["by_domain"][0]["domain"] == "lists.example.com" and rs["by_domain"][0]["dkim_fail"] == 1
    ex = insight([sample("exim")], parser_set, classes)["auth_results"]
    assert {(r["domain"], r["dkim_pass"], r["dkim_fail"]) for r in ex["by_domain"]} == {
        ("forged.example", 0, 1), ("sender.example", 1, 0)}
    a = insight([DMARC_LOG], parser_set, classes)["auth_results"]
    assert {(r["method"], r["result"]): (r["count"], r["pct"]) for r in a["summary"]} == {
        ("dmarc", "quarantine"): (1, 50.0), ("dmarc", "pass"): (1, 50.0),
        ("spf", "softfail"): (2, 50.0), ("spf", "pass"): (2, 50.0),   # rspamd and policyd-spf (python and perl)
        # rspamd R_DKIM_NA / R_DKIM_ALLOW, exim [invalid ...] / [fail - hash too weak]; "acl called" is no verdict
        ("dkim", "none"): (1, 25.0), ("dkim", "pass"): (1, 25.0), ("dkim", "permerror"): (1, 25.0), ("dkim", "fail"): (1, 25.0)}
    dom = rows(a["by_domain"], "domain")
    assert {k: dom["bank.example"][k] for k in ("spf_pass", "spf_fail", "dkim_pass", "dkim_fail", "dmarc_pass", "dmarc_fail")} == {
        "spf_pass": 1, "spf_fail": 1, "dkim_pass": 1, "dkim_fail": 0, "dmarc_pass": 1, "dmarc_fail": 1}
    assert dom["legacy.example.com"]["spf_fail"] == 1 and dom["example.com"]["spf_pass"] == 1
    assert dom["broken.example"]["dkim_fail"] == 1 and dom["weak.example"]["dkim_fail"] == 1
    assert a["by_domain"][0]["domain"] == "bank.example"  # most failures first


# ------------------------------------------------------------ firewall noise --

def test_firewall_noise(parser_set, classes):
    lines = sample("cisco_asa")
    fw = insight([lines], parser_set, classes)["firewall_noise"]
    tagged = [m for m in (re.search(r"%(?:ASA|PIX|FTD)-(?:[a-z]+-)?\d-(\d{6})", ln) for ln in lines) if m]
    assert fw["total"] == len(tagged) == 46
    ids = rows(fw["ids"], "asa_id")
    assert (ids["106023"]["count"], ids["106023"]["pct"]) == (3, 6.5)   # two %ASA- lines and one %PIX- line
    assert ids["733100"]["keep"] == "threat detection: never silence" and ids["733100"]["count"] == 2
    assert ids["105005"]["keep"] == ids["105009"]["keep"] == "failover: never silence"
    assert fw["ids"][0]["asa_id"] == "106023"
    # most lines first, flagged ids skipped: 106023 (3), 106100, 302013, 302020 (2 each, 733100 kept), then 106001
    assert fw["no_logging"] == ["no logging message 106023", "no logging message 106100", "no logging message 302013",
                                "no logging message 302020", "no logging message 106001"]
    assert not any(s.endswith(("105005", "105009", "733100")) for s in fw["no_logging"])
    few = insight([lines], parser_set, classes, opts=Options(noise_lines=10, noise_min_pct=3.0))["firewall_noise"]
    assert len(few["no_logging"]) == 4   # 6.5 % and three ids at 4.3 %


# ------------------------------------------------------- configuration problems --

def test_configuration_problems(parser_set, classes):
    pf = insight([sample("postfix")], parser_set, classes)["config_problems"]
    assert {r["class"]: r["count"] for r in pf} == {
        "postfix_tables": 1, "postfix_config": 1, "postfix_milter": 1, "postfix_tls_keys": 1, "postfix_alias_maps": 1}
    milter = rows(pf, "class")["postfix_milter"]
    assert milter["text"] == "milter inet:IP:N: can't read SMFIC_OPTNEG reply packet header: Connection timed out"
    assert milter["example"].startswith("milter inet:127.0.0.1:11332") and milter["first_seen"] == "2025-03-01T11:06:04Z"
    dv = insight([sample("dovecot")], parser_set, classes)["config_problems"]
    # ports 110 and 995: one problem, seen twice
    assert {(r["class"], r["text"]): r["count"] for r in dv} == {
        ("dovecot_systemd_port", "systemd listens on port N, but it's not configured in Dovecot. Closing."): 2,
        ("dovecot_obsolete_setting", "Obsolete setting in /etc/dovecot/conf.d/N-ssl.conf:N: ssl_protocols has been replaced by ssl_min_protocol"): 1,
        ("dovecot_userdb_settings", "Invalid settings in userdb: userdb returned N as uid"): 1}
    assert dv[0]["class"] == "dovecot_systemd_port"   # most first
    ex = insight([sample("exim")], parser_set, classes)["config_problems"]
    # config errors (one a "discard" verb in the wrong ACL); panics (re-exec, malware scanner, spool space,
    # the Cyrus and GNU SASL libraries)
    assert sorted((r["class"], r["count"]) for r in ex) == [("exim_config", 1)] * 3 + [("exim_panic", 1)] * 5 + [
        ("exim_sync_error", 1)]
    assert "spool directory space check failed: space=N inodes=N" in {r["text"] for r in ex}
    sync = rows(ex, "class")["exim_sync_error"]
    assert "input=" not in sync["text"] and "H=[IP]:N" in sync["text"]


# ------------------------------------------------- chunks, report, hostile text --

def test_same_result_in_one_chunk_or_many(parser_set, classes):
    lines = {s: sample(s) for s in SOURCES}
    whole = insight([sum(lines.values(), [])], parser_set, classes)
    chunks = [lines["postfix"]] + [half for s in SOURCES[1:] for half in (lines[s][: len(lines[s]) // 2], lines[s][len(lines[s]) // 2:])]
    assert insight(chunks, parser_set, classes) == whole
    # more partial tables than the report keeps before adding them up
    many = insight([[ln] for ln in lines["rspamd"] + lines["cisco_asa"]], parser_set, classes)
    assert many["blocklists"]["rspamd_symbols"] == insight([lines["rspamd"]], parser_set, classes)["blocklists"]["rspamd_symbols"]
    assert many["firewall_noise"]["total"] == 46


def test_report_formats_show_insights(tmp_path):
    logs = [str(SAMPLES / f"{s}.log") for s in SOURCES]
    doc = json.loads(run("report", *logs, "--format", "json", "--tz", "UTC", "--year", "2025").stdout)
    assert set(doc["insights"]) == {"tls_readiness", "tls_failures", "auth_hygiene", "ip_families", "blocklists",
                                    "auth_results", "firewall_noise", "config_problems"}
    text = run("report", *logs, "--tz", "UTC", "--year", "2025").stdout
    for title in ("TLS readiness: what breaks if you require", "TLS handshake failures by reason", "Logins by mechanism and TLS",
                  "IPv4 vs IPv6", "Your blocklist rules at work", "rspamd actions", "Inbound SPF/DKIM/DMARC results",
                  "Firewall noise: ASA message ids", "Configuration problems",
                  "Findings: cleartext credentials (PLAIN/LOGIN) without TLS"):
        assert title in text, title
    assert "no logging message 106023" in text and "threat detection: never silence" in text
    md = run("report", *logs, "--format", "markdown", "--tz", "UTC", "--year", "2025").stdout
    assert "## Firewall noise: ASA message ids" in md
    page = run("report", *logs, "--format", "html", "--tz", "UTC", "--year", "2025").stdout
    assert "<h2>Configuration problems</h2>" in page and "systemd listens on port N" in page


HOSTILE = [
    "Mar  2 13:00:00 mx1 postfix/cleanup[5001]: 3C4D5E6F7A: reject: header Subject: x from h.example[192.0.2.1]; "
    "from=<a@h.example> to=<b@example.org> proto=ESMTP helo=<h>: 5.7.1 <script>alert(1)</script>\x1b[31mRED" + "A" * 100_000,
    "2025-03-02 13:00:01 H=[192.0.2.2] F=<x@evil.example> rejected RCPT <b@example.org>: <img src=x onerror=alert(1)>\x07bell",
    "Mar  2 13:00:02 mx1 dovecot: config: Warning: Obsolete setting in <b>x</b>\x1b]0;title\x07: " + "z" * 50_000,
    "2025-03-02 13:00:03 #1(normal) <abc>; task; rspamd_task_write_log: id: <m@x>, qid: <Q1>, ip: 10.0.0.1, from: <a@"
    + "d" * 300 + ".example>, (default: F (add header): [9.00/15.00] [" + ",".join(f"S{i}_<b>(1.0)" for i in range(2000)) + "]), len: 1",
]


def test_hostile_text_is_bounded_and_escaped(parser_set, classes, tmp_path):
    doc = report([HOSTILE], parser_set, classes, top=10)
    ins = doc["insights"]
    hits = ins["blocklists"]["rule_hits"]
    assert len(hits) == 2 and all(len(r["rule"]) <= insights.MAX_TEXT and len(r["example"]) <= insights.MAX_EXAMPLE for r in hits)
    assert len(ins["blocklists"]["rspamd_symbols"]) == 10   # top N of 2000 symbols
    assert all(len(r["text"]) <= insights.MAX_TEXT for r in ins["config_problems"]) and ins["config_problems"]
    assert all(len(r["sender_domain"]) <= 100 for r in ins["blocklists"]["got_through"])
    out = render.text(doc)
    assert "\x1b" not in out and "\x07" not in out and max(map(len, out.splitlines())) < 400
    page = render.html(doc)
    assert "<script>" not in page and "<img" not in page and "<b>x</b>" not in page and "&lt;img" in page
    json.dumps(doc)


def test_many_distinct_rules_stay_top_n(parser_set, classes):
    lines = [f"Mar  2 14:{i // 60:02d}:{i % 60:02d} mx1 postfix/cleanup[6001]: {i:010X}: reject: body spam from "
             f"h.example[192.0.2.1]; from=<a@h.example> to=<b@example.org> proto=ESMTP helo=<h>: 5.7.1 rule {i}" for i in range(300)]
    b = insight([lines[:150], lines[150:]], parser_set, classes, top=7)["blocklists"]
    assert len(b["rule_hits"]) == 7 and all(r["count"] == 1 and r["origin"] == "postfix body_checks" for r in b["rule_hits"])


def test_empty_input_gives_empty_sections(parser_set, classes):
    ins = insight([[]], parser_set, classes)
    assert ins["tls_readiness"]["what_if"] == [] and ins["firewall_noise"] == {"total": 0, "ids": [], "no_logging": []}
    assert ins["config_problems"] == [] and ins["blocklists"]["rspamd_actions"] == []
    assert render.text(report([[]], parser_set, classes))   # renders without a row


ALL_SAMPLE_LINES = [ln for s in SOURCES for ln in read_expectations(SAMPLES / f"{s}.log")[0]] + HOSTILE[:2]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(ALL_SAMPLE_LINES), st.integers(0, 400), st.text(max_size=30)), max_size=40))
def test_mutated_lines_never_break_the_views(parser_set, classes, edits):
    """Sample lines cut anywhere and followed by arbitrary text: the insights build, serialise and render."""
    lines = [line[:cut] + junk for line, cut, junk in edits]
    doc = report([lines[: len(lines) // 2], lines[len(lines) // 2:]], parser_set, classes, top=5)
    json.dumps(doc["insights"], allow_nan=False)
    assert "\x1b" not in render.text(doc)
