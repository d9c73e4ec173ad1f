"""Correlation across chunk boundaries: sessions, messages, dovecot logins, with bounded state."""

from __future__ import annotations

from logscope.correlate import PostfixMessages, SmtpdSessions, dovecot_sessions
from logscope.engine import parse_lines
from logscope.header import HeaderOptions

OPTS = HeaderOptions(tz="UTC", year=2025)


def ev(lines, parser_set):
    return parse_lines(lines, parser_set, OPTS)


def test_smtpd_session_split_over_chunks(parser_set):
    first = [
        "Mar  1 10:00:00 mx postfix/smtpd[1]: connect from a.example[192.0.2.1]",
        "Mar  1 10:00:01 mx postfix/smtpd[1]: Anonymous TLS connection established from a.example[192.0.2.1]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
        "Mar  1 10:00:01 mx postfix/smtpd[2]: disconnect from b.example[192.0.2.2] ehlo=1 quit=1 commands=2",
        "Mar  1 10:00:02 mx postfix/submission/smtpd[3]: connect from c.example[192.0.2.3]",
    ]
    second = [
        "Mar  1 10:00:03 mx postfix/smtpd[1]: 4F3A21C0D2: client=a.example[192.0.2.1]",
        "Mar  1 10:00:04 mx postfix/smtpd[1]: disconnect from a.example[192.0.2.1] ehlo=1 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=6",
        "Mar  1 10:00:05 mx postfix/submission/smtpd[3]: 5F3A21C0D2: client=c.example[192.0.2.3], sasl_method=PLAIN, sasl_username=carol",
    ]
    s = SmtpdSessions()
    out1 = s.feed(ev(first, parser_set))
    assert out1.height == 1 and out1["started_before_input"].to_list() == [True]  # pid 2: no connect seen
    out2 = s.feed(ev(second, parser_set))
    assert out2.height == 1
    one = out2.row(0, named=True)
    assert one["pid"] == 1 and one["tls"] and one["messages"] == 1 and one["tls_protocol"] == "TLSv1.3"
    rest = s.feed(ev(["Mar  1 10:00:06 mx postfix/qmgr[9]: 4F3A21C0D2: removed"], parser_set), final=True)
    sub = rest.row(0, named=True)
    assert sub["service"] == "submission" and sub["sasl_username"] == "carol" and not sub["closed"] and not sub["tls"]


def test_messages_count_bytes_once_across_chunks_and_flag_unknown_starts(parser_set):
    m = PostfixMessages()
    a = m.feed(ev(["Mar  1 10:00:00 mx postfix/smtpd[1]: 4F3A21C0D2: client=a.example[192.0.2.1]"], parser_set))
    assert a["received_bytes"].height == 0  # size not known yet
    b = m.feed(ev([
        "Mar  1 10:00:01 mx postfix/qmgr[9]: 4F3A21C0D2: from=<x@a.example>, size=1234, nrcpt=1 (queue active)",
        "Mar  1 10:00:02 mx postfix/smtp[5]: 4F3A21C0D2: to=<y@b.example>, relay=b.example[192.0.2.5]:25, delay=1, delays=0.1/0/0.4/0.5, dsn=2.0.0, status=sent (250 ok)",
        "Mar  1 10:00:02 mx postfix/smtp[5]: 0000DEAD01: to=<z@b.example>, relay=b.example[192.0.2.5]:25, delay=1, delays=0.1/0/0.4/0.5, dsn=2.0.0, status=sent (250 ok)",
    ], parser_set))
    assert b["received_bytes"]["size"].to_list() == [1234]
    sizes = dict(zip(b["deliveries"]["queue_id"], b["deliveries"]["msg_size"]))
    assert sizes == {"4F3A21C0D2": 1234, "0000DEAD01": None}  # the second started before the input
    c = m.feed(ev(["Mar  1 10:00:03 mx postfix/qmgr[9]: 4F3A21C0D2: from=<x@a.example>, size=1234, nrcpt=1 (queue active)",
                   "Mar  1 10:00:04 mx postfix/qmgr[9]: 4F3A21C0D2: removed"], parser_set))
    assert c["received_bytes"].height == 0 and m.completed == 1
    assert "4F3A21C0D2" not in m.state["queue_id"].to_list()


def test_dovecot_session_login_then_logout_in_next_chunk(parser_set):
    d = dovecot_sessions()
    login = ("Mar  1 10:00:00 mx dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.7, "
             "lip=192.0.2.1, mpid=77, TLS, session=<abcDEF123>")
    logout = "Mar  1 10:05:00 mx dovecot: imap(alice)<77><abcDEF123>: Logged out in=10 out=20"
    assert d.feed(ev([login], parser_set)).height == 0
    done = d.feed(ev([logout], parser_set))
    row = done.row(0, named=True)
    assert row["user"] == "alice" and row["closed"] and (row["logout"] - row["login"]).total_seconds() == 300
