"""The events schema: every column and every event kind, in one place.

Every parsed line becomes exactly one row of this schema. Columns a line does
not have are null. Closed sets (source, kind, status, TLS trust, ...) are
``pl.Enum`` so they stay small and typos fail loudly.
"""

from __future__ import annotations

import polars as pl

SOURCES = ("postfix", "dovecot", "exim", "rspamd", "cisco_asa", "unknown")

# Event kinds, per source, with a one-line meaning. A parser file may only
# emit kinds listed here (checked when the file is loaded).
KINDS_BY_SOURCE: dict[str, dict[str, str]] = {
    "postfix": {
        "smtpd_connect": "smtpd: connect from client",
        "smtpd_disconnect": "smtpd: disconnect, with per-command counts",
        "smtpd_lost_connection": "smtpd: lost connection after a command",
        "smtpd_timeout": "smtpd: timeout after a command",
        "smtpd_too_many_errors": "smtpd: too many errors after a command",
        "smtpd_pipelining": "smtpd: improper command pipelining",
        "smtpd_client": "smtpd: queue id assigned to client (client=, SASL)",
        "tls_in": "smtpd: TLS connection established from client",
        "tls_out": "smtp/lmtp: TLS connection established to server",
        "tls_error": "smtpd/smtp/tlsproxy: TLS handshake or certificate verification failed (SSL_accept, SSL_connect)",
        "sasl_auth_failed": "smtpd: client SASL authentication failed; smtp: server rejected our SASL login",
        "cleanup_message_id": "cleanup: message-id of a queued message",
        "cleanup_action": "cleanup: header/body check reject, hold, discard, ...",
        "qmgr_from": "qmgr: sender, size and recipient count",
        "qmgr_expired": "qmgr: message expired and returned to sender",
        "qmgr_removed": "qmgr: message removed from the queue",
        "delivery": "delivery agent: one recipient's outcome (status=)",
        "delivery_reply": "smtp/lmtp: remote server reply or session problem before the status line (host said, refused to talk, conversation timed out)",
        "connect_failed": "smtp/lmtp: connect to a remote server failed",
        "reject": "smtpd/postscreen: NOQUEUE or queued reject, reject_warning, and other access actions (hold, discard, filter, redirect, proxy-reject)",
        "milter_action": "smtpd/cleanup: milter-reject, milter-discard, milter-hold, ...",
        "bounce_notification": "bounce: sender (non-)delivery notification",
        "pickup": "pickup: locally submitted message",
        "postscreen_connect": "postscreen/tlsproxy: CONNECT",
        "postscreen_pass": "postscreen: PASS NEW / PASS OLD",
        "postscreen_listed": "postscreen: allow/deny-listed client (ALLOWLISTED, DENYLISTED, ...)",
        "postscreen_dnsbl": "postscreen: DNSBL rank; dnsblog: address listed by a DNSBL",
        "postscreen_pregreet": "postscreen: PREGREET (client talked before greeting)",
        "postscreen_hangup": "postscreen: HANGUP",
        "postscreen_violation": "postscreen: protocol test failure (PIPELINING, BARE NEWLINE, ...)",
        "postscreen_disconnect": "postscreen/tlsproxy: DISCONNECT",
        "anvil_stats": "anvil/scache: statistics",
        "daemon_event": "master/postfix-script/postsuper/...: start, stop, reload, delete, hold; table changed; cache cleanup",
        "warning": "warning: message",
        "error": "error: message",
        "fatal": "fatal: message",
        "panic": "panic: message",
    },
    "dovecot": {
        "dovecot_login": "login process: successful login (proto from the process; tls plaintext when neither TLS nor secured)",
        "dovecot_login_failed": "login process: disconnect/abort with failed authentication",
        "dovecot_login_aborted": "login process: disconnect/abort without successful login",
        "dovecot_proxy": "login process: proxying started / ended",
        "dovecot_auth_failed": "auth: passdb mismatch, unknown user, pam failure",
        "dovecot_logout": "mail process: logout / disconnect (reason; the in=/out=/bytes= counters in reply)",
        "dovecot_delivery": "lda/lmtp: mail saved or delivery failed",
        "dovecot_sieve": "lda/lmtp sieve: action taken",
        "dovecot_mail_action": "mail_log plugin: save/copy/expunge/delete/flag_change/mailbox_* (action)",
        "dovecot_connection": "lmtp: Connect from / Disconnect from (action connect/disconnect, stage = state)",
        "dovecot_service": "master: starting up, shutting down, reload, service(x) process trouble",
        "warning": "Warning: message",
        "error": "Error: message",
        "fatal": "Fatal: message",
        "panic": "Panic: message",
    },
    "exim": {
        "exim_arrival": "<= message arrival",
        "exim_delivery": "=> -> >> *> delivery (status delivered/additional/cutthrough/suppressed)",
        "exim_failure": "** delivery failed permanently",
        "exim_deferral": "== delivery deferred",
        "exim_completed": "message completed",
        "exim_reject": "ACL outcome: rejected (action reject/defer) connection/HELO/MAIL/RCPT/DATA, dropped, discarded, warn",
        "exim_sender_verify_failed": "sender verify fail",
        "exim_protocol_error": "SMTP protocol or synchronization error, dropped call, ignored AUTH= on MAIL, local input cut short",
        "exim_auth_failed": "authenticator failed (535)",
        "exim_connection": "SMTP connection opened, lost, no MAIL, closed",
        "exim_queue_run": "start/end/abandon of a queue run (named queues, ODMR); a client's ETRN/ATRN request",
        "exim_message_note": "other line about one message (frozen, retry, remote reply, ...)",
        "exim_tls_error": "TLS error on a connection",
        "exim_dns": "host name / IP address lookup failure",
        "exim_rejectlog_header": "rejectlog: envelope and header lines of a rejected message",
        "exim_continuation": "continuation line of a multi-line entry",
        "exim_config_error": "configuration error",
        "exim_panic": "internal failure of the kind exim writes to the paniclog (re-exec failed, malware scanner error, spool space shortage, SASL library failure, ...)",
        "exim_daemon": "daemon start/stop, listening, other process-wide line",
    },
    "rspamd": {
        "rspamd_verdict": "rspamd_task_write_log: the scan result of one message",
        "rspamd_message": "message loaded (message id and queue id)",
        "rspamd_connection": "accepted connection / milter connection",
        "rspamd_log": "other rspamd log line (reason = function, reply = text)",
    },
    "cisco_asa": {
        "asa_deny": "ACL or policy deny (106001, 106006/7, 106010, 106014-106017, 106020-106023, 710003, 710005)",
        "asa_acl_hit": "106100 access-list permitted/denied with hit count",
        "asa_conn_built": "302013/302015/302020 connection built (src = initiator, also for outbound)",
        "asa_conn_teardown": "302014/302016/302018/302021/302023 connection teardown (src = for/faddr side)",
        "asa_nat": "305011/305012 translation built/teardown",
        "asa_icmp": "313001/313004/313005 ICMP denied or unmatched",
        "asa_dup_syn": "419002 duplicate TCP SYN",
        "asa_threat": "733100 threat-detection rate exceeded",
        "asa_failover": "105003-105009 failover events",
        "asa_config": "111001-111010 configuration command executed, config read/written/erased",
        "asa_auth": "113004-113006/109005-109008/611101-611103/605004/605005 authentication, login",
        "asa_event": "any other %ASA-n-nnnnnn message",
    },
    "unknown": {},
}
# Kinds every source can produce.
COMMON_KINDS = {"unparsed": "no parser recognised the line (counted, never dropped)"}

KINDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        [k for kinds in KINDS_BY_SOURCE.values() for k in kinds] + list(COMMON_KINDS)
    )
)

DELIVERY_STATUSES = (
    "sent", "deferred", "bounced", "expired", "force-expired", "undeliverable",
    "deliverable", "delivered", "additional", "cutthrough", "suppressed", "failed",
    "saved", "rejected",
)
TLS_TRUST = ("Anonymous", "Untrusted", "Trusted", "Verified")
# How a dovecot login protected the credentials.
LOGIN_TLS = ("TLS", "secured", "plaintext", "TLS handshaking")
LEVELS = ("debug", "info", "notice", "warning", "error", "fatal", "panic")

SourceEnum = pl.Enum(SOURCES)
KindEnum = pl.Enum(KINDS)

# Column name -> dtype. Order is the column order of every events frame.
COLUMNS: dict[str, pl.DataType] = {
    # provenance and syslog header
    "ts": pl.Datetime("us", "UTC"),
    "host": pl.String,
    "program": pl.String,
    "pid": pl.Int64,
    "source": SourceEnum,
    "kind": KindEnum,
    "daemon": pl.String,  # postfix daemon (smtpd, qmgr), dovecot process (imap-login)
    "service": pl.String,  # master.cf service or postfix instance part (submission, smtps)
    "level": pl.Enum(LEVELS),
    "file": pl.String,
    "line": pl.Int64,  # 1-based line number in its file
    "message": pl.String,  # the message part after the syslog header
    # message identity
    "queue_id": pl.String,  # postfix queue id, exim message id, rspamd qid
    "message_id": pl.String,
    "session_id": pl.String,  # dovecot session=<...>, rspamd task tag
    # the SMTP client / login peer
    "client_host": pl.String,
    "client_ip": pl.String,
    "client_port": pl.Int32,
    "local_ip": pl.String,
    "local_port": pl.Int32,
    "helo": pl.String,
    "proto": pl.String,  # SMTP/ESMTP, exim P=, dovecot protocol (imap, pop3)
    # envelope
    "sender": pl.String,
    "recipient": pl.String,
    "orig_recipient": pl.String,
    "sender_domain": pl.String,
    "recipient_domain": pl.String,
    "size": pl.Int64,
    "nrcpt": pl.Int32,
    # delivery
    "relay_host": pl.String,
    "relay_ip": pl.String,
    "relay_port": pl.Int32,
    "transport": pl.String,
    "router": pl.String,
    "delay": pl.Float64,
    "delays": pl.String,
    "dsn": pl.String,
    "status": pl.Enum(DELIVERY_STATUSES),
    # rejects and replies
    "action": pl.String,  # reject, reject_warning, milter-reject, hold, discard, Deny, Built, ...
    "stage": pl.String,  # CONNECT, HELO, EHLO, MAIL, RCPT, DATA, END-OF-MESSAGE, header, body
    "reply_code": pl.Int32,
    "reply": pl.String,  # reply text / reason
    "reason": pl.String,  # short reason (dovecot abort reason, exim reject reason)
    "commands": pl.String,  # smtpd disconnect counts "ehlo=1 starttls=1 ..."
    "count": pl.Int64,  # generic count (auth attempts, DNSBL rank, hit count)
    # TLS
    "tls_trust": pl.Enum(TLS_TRUST),
    "tls_protocol": pl.String,
    "tls_cipher": pl.String,
    "tls_bits": pl.Int32,
    "tls_kex": pl.String,  # key exchange where logged (postfix >= 3.4: "key-exchange X25519")
    "tls": pl.Enum(LOGIN_TLS),  # dovecot login TLS state
    # authentication
    "sasl_method": pl.String,
    "sasl_username": pl.String,
    "user": pl.String,
    "method": pl.String,
    # rspamd
    "score": pl.Float64,
    "required_score": pl.Float64,
    "symbols": pl.String,
    "scan_time": pl.Float64,  # seconds
    # cisco asa
    "asa_id": pl.Int32,
    "severity": pl.Int8,
    "protocol": pl.String,
    "src_iface": pl.String,
    "src_ip": pl.String,
    "src_port": pl.Int32,
    "dst_iface": pl.String,
    "dst_ip": pl.String,
    "dst_port": pl.Int32,
    "interface": pl.String,
    "acl": pl.String,
    "conn_id": pl.Int64,
    "duration": pl.String,
    "bytes": pl.Int64,
}

# Columns that a pattern may capture or set (everything but what the header
# and the engine fill in).
ENGINE_COLUMNS = {"ts", "host", "program", "pid", "source", "kind", "file", "line", "message"}
FIELD_COLUMNS = tuple(c for c in COLUMNS if c not in ENGINE_COLUMNS)

SCHEMA = pl.Schema(COLUMNS)


def empty_events() -> pl.DataFrame:
    """An events frame with no rows."""
    return pl.DataFrame(schema=SCHEMA)
