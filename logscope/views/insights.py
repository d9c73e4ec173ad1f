"""Operator insights: the numbers behind hardening decisions mail admins make by hand.

Seven views, each a set of additive partial tables (``partial``) and one
finished section (``finish``), like the other views:

* **TLS readiness**: inbound SMTP sessions (postfix smtpd sessions, exim
  arrivals) and outbound deliveries (postfix smtp, exim) by TLS protocol and
  cipher per peer (the registered domain of the peer's host name, else its
  IP); what breaks if TLS >= 1.2, TLS >= 1.3, a cipher exclusion list or TLS
  itself is required; TLS handshake failures (postfix ``SSL_accept error``,
  ``TLS library problem``, ``Cannot start TLS``, certificate verification;
  dovecot ``TLS handshaking``, ``SSL_read() failed``; exim TLS errors) by
  reason and peer.
* **Authentication hygiene**: postfix SASL sessions, exim ``A=`` arrivals and
  dovecot logins by mechanism and by TLS; who still sends PLAIN/LOGIN
  credentials without TLS; login attempts dovecot refused (plaintext auth
  disallowed, unsupported mechanism).
* **IPv4 vs IPv6**: share of inbound connections and sessions, outbound
  deliveries and logins over IPv6 (loopback left out); relays reached over
  IPv4 that have an IPv6 address in other deliveries.
* **Blocklists at work**: hits per postfix header/body_checks rule (the rule's
  text), per postfix access-map text (check_*_access), per exim ACL message,
  per rspamd symbol and action (as ``rspamc stat`` shows them); configured
  rules that never fired; sender domains rspamd flagged but let through.
* **Inbound authentication results**: SPF/DKIM/DMARC from rspamd symbols,
  exim ``DKIM: ... [verification ...]`` lines and policyd-spf
  ``Received-SPF:`` lines, by domain.
* **Firewall noise**: Cisco ASA message ids by volume and share with the
  ``no logging message <id>`` lines for the top noise; failover (105xxx)
  and threat detection (733100) are flagged, never suggested.
* **Configuration problems**: dovecot, postfix and exim configuration
  warnings and panics, grouped by a normalised text (digits and addresses
  replaced), with count and first/last seen.

Every key that comes from a log line is cut, and text is normalised so that
tables stay small; the report keeps the top N rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from . import count
from .tls import IMPLICIT_TLS, session_flags

# Cipher name tokens (OpenSSL and GnuTLS names, split at - and _) excluded by
# default: the ciphers Mozilla's "intermediate" profile and the postfix
# documentation's smtpd_tls_exclude_ciphers example leave out.
DEFAULT_EXCLUDED_CIPHERS = ("RC4", "DES", "3DES", "CBC3", "NULL", "EXP", "EXPORT", "MD5", "ADH", "AECDH", "ANON")
# OpenSSL cipher-list aliases that are not tokens of cipher names.
_CIPHER_ALIASES = {"ANULL": ("ADH", "AECDH", "ANON"), "ENULL": ("NULL",)}

PROTOCOL_RANK = {"SSLv2": 0, "SSLv3": 1, "TLSv1": 2, "TLSv1.1": 3, "TLSv1.2": 4, "TLSv1.3": 5}
# The requirements the what-if table evaluates, in its order (a closed set: metric label values).
REQUIREMENTS = ("TLS >= 1.2", "TLS >= 1.3", "excluded ciphers", "TLS required")

MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256",
              "SCRAM-SHA-256-PLUS", "XOAUTH2", "OAUTHBEARER", "EXTERNAL", "GSSAPI", "NTLM", "APOP", "ANONYMOUS", "OTP")
CLEARTEXT_MECHANISMS = ("PLAIN", "LOGIN")
# every value mechanism() gives (a closed set: metric label values)
MECHANISM_LABELS = MECHANISMS + ("SCRAM", "OTHER", "unknown")

RSPAMD_ACTIONS = ("reject", "soft reject", "rewrite subject", "add header", "greylist", "no action")
FLAGGED_DELIVERED = ("add header", "rewrite subject")  # rspamd let these through, marked

# rspamd symbol -> (method, result); results use the RFC 8601 words where they exist.
AUTH_SYMBOLS = {
    "R_SPF_ALLOW": ("spf", "pass"), "R_SPF_FAIL": ("spf", "fail"), "R_SPF_SOFTFAIL": ("spf", "softfail"),
    "R_SPF_NEUTRAL": ("spf", "neutral"), "R_SPF_NA": ("spf", "none"), "R_SPF_DNSFAIL": ("spf", "temperror"),
    "R_SPF_PERMFAIL": ("spf", "permerror"),
    "R_DKIM_ALLOW": ("dkim", "pass"), "R_DKIM_REJECT": ("dkim", "fail"), "R_DKIM_TEMPFAIL": ("dkim", "temperror"),
    "R_DKIM_PERMFAIL": ("dkim", "permerror"), "R_DKIM_NA": ("dkim", "none"),
    "DMARC_POLICY_ALLOW": ("dmarc", "pass"), "DMARC_POLICY_ALLOW_WITH_FAILURES": ("dmarc", "pass"),
    "DMARC_POLICY_REJECT": ("dmarc", "reject"), "DMARC_POLICY_QUARANTINE": ("dmarc", "quarantine"),
    "DMARC_POLICY_SOFTFAIL": ("dmarc", "softfail"), "DMARC_NA": ("dmarc", "none"),
    "DMARC_BAD_POLICY": ("dmarc", "permerror"), "DMARC_DNSFAIL": ("dmarc", "temperror"),
}
AUTH_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "reject", "quarantine", "other")
AUTH_FAILED = ("fail", "softfail", "permerror", "reject", "quarantine")

# Cisco ASA ids that must never be silenced: failover and threat detection.
ASA_KEEP = {"105": "failover: never silence", "733100": "threat detection: never silence"}

# Configuration problem classes (a closed set: metric label values), first match wins:
# (class, source, kinds (None: the source's warning/error/fatal/panic), regex over the text).
CONFIG_CLASSES: tuple[tuple[str, str, tuple[str, ...] | None, str], ...] = (
    ("dovecot_obsolete_setting", "dovecot", None, r"(?i)obsolete setting|is deprecated|has been replaced by"),
    ("dovecot_userdb_settings", "dovecot", None, r"(?i)invalid settings in userdb"),
    ("dovecot_systemd_port", "dovecot", None, r"(?i)systemd listens on port"),
    ("dovecot_config", "dovecot", None, r"(?i)error in configuration file|unknown setting|doveconf|failed to initialize ssl|ssl_(?:cert|key)"),
    ("postfix_alias_maps", "postfix", None, r"(?i)\balias"),
    ("postfix_tls_keys", "postfix", None,
     r"(?i)private key|certificate (?:from|file|and key)|server certs|disabling tls|tls won.t be enabled|"
     r"key .*does not match|cannot load .*(?:cert|key)|ee key too small|ca file|ca_path"),
    ("postfix_milter", "postfix", None, r"(?i)\bmilter\b"),
    ("postfix_tables", "postfix", None, r"(?i)is unavailable|open database|lookup (?:error for|problem)|database .* is older than"),
    ("postfix_config", "postfix", None,
     r"(?i)unused parameter|undefined parameter|overriding earlier entry|do not list domain|in parameter \S+|"
     r"specify at least one|main\.cf|master\.cf|bad .*(?:parameter|value)|unknown .*(?:parameter|setting)"),
    ("exim_sync_error", "exim", ("exim_protocol_error",), r"(?i)synchronization error"),
    ("exim_config", "exim", ("exim_config_error",), r""),
    ("exim_panic", "exim", ("exim_panic",), r""),
)
_CONFIG_KINDS = {"postfix": ("warning", "error", "fatal", "panic"),
                 "dovecot": ("warning", "error", "fatal", "panic", "dovecot_service")}
CONFIG_CLASS_NAMES = tuple(dict.fromkeys(c[0] for c in CONFIG_CLASSES))

MAX_TEXT = 160  # characters of a rule, reason or message kept as a key
MAX_EXAMPLE = 200


@dataclass(frozen=True)
class Options:
    """Settings of the insight views (the report command fills them from the config file).

    ``exclude_ciphers``: cipher name tokens (or full names) the "excluded ciphers"
    what-if uses; ``rules``: rule texts, ids or rspamd symbols you expect to fire,
    listed as stale when no hit matches them; ``noise_lines``: how many
    ``no logging message`` lines to suggest, for ids of at least ``noise_min_pct``
    percent of the firewall lines.
    """

    exclude_ciphers: tuple[str, ...] = DEFAULT_EXCLUDED_CIPHERS
    rules: tuple[str, ...] = ()
    noise_lines: int = 5
    noise_min_pct: float = 1.0


# ----------------------------------------------------------------- helpers --

def _kind(*kinds: str) -> pl.Expr:
    return pl.col("kind").is_in(list(kinds))


def _cut(expr: pl.Expr, n: int = MAX_TEXT) -> pl.Expr:
    return expr.str.slice(0, n).str.strip_chars()


def is_loopback(ip: pl.Expr) -> pl.Expr:
    return (ip.str.starts_with("127.") | (ip == "::1") | ip.str.starts_with("::ffff:127.")).fill_null(False)


def ip_family(ip: pl.Expr) -> pl.Expr:
    """``ipv6`` or ``ipv4`` (IPv4-mapped ``::ffff:a.b.c.d`` is IPv4); null without an address."""
    v6 = ip.str.contains(":") & ~ip.str.to_lowercase().str.starts_with("::ffff:")
    return pl.when(ip.is_null()).then(None).when(v6).then(pl.lit("ipv6")).otherwise(pl.lit("ipv4"))


_SECOND_LEVEL = ("co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go", "ltd", "plc", "nhs")


def peer(host: pl.Expr, ip: pl.Expr) -> pl.Expr:
    """The registered domain of a host name (``mail-ed1.example.net`` -> ``example.net``, ``a.b.co.uk`` ->
    ``b.co.uk``, approximated without the public suffix list), else the IP address."""
    h = host.str.to_lowercase().str.strip_chars_end(".")
    named = h.is_not_null() & (h != "unknown") & h.str.contains(r"[a-z]") & ~h.str.contains(":", literal=True)
    labels = h.str.split(".")
    # a two-letter country domain under a generic second level (example.co.uk): keep three labels
    three = (labels.list.len() >= 3) & labels.list.get(-2, null_on_oob=True).is_in(list(_SECOND_LEVEL)) \
        & (labels.list.get(-1, null_on_oob=True).str.len_chars() == 2)
    domain = labels.list.tail(pl.when(three).then(3).otherwise(2)).list.join(".")
    return _cut(pl.when(named).then(domain).otherwise(ip), 100)


def protocol(expr: pl.Expr) -> pl.Expr:
    """TLS protocol in OpenSSL's spelling: exim's ``TLS1.2`` -> ``TLSv1.2``, ``TLSv1.0`` -> ``TLSv1``."""
    p = expr.str.replace(r"^(TLS|SSL)v?", "${1}v").str.replace(r"^TLSv1\.0$", "TLSv1")
    return _cut(p, 20)


def protocol_rank(expr: pl.Expr) -> pl.Expr:
    return expr.replace_strict(PROTOCOL_RANK, default=None, return_dtype=pl.Int8)


def cipher_regex(tokens: tuple[str, ...]) -> str:
    """A regex over upper-cased cipher names that matches any of the tokens at - or _ boundaries."""
    parts: list[str] = []
    for tok in tokens:
        up = tok.strip().upper()
        parts += _CIPHER_ALIASES.get(up, (up,)) if up else ()
    alts = "|".join("[-_]".join(re.escape(w) for w in re.split(r"[-_]", p)) for p in dict.fromkeys(parts))
    return rf"(?:^|[-_])(?:{alts})(?:[-_]|$)" if alts else r"$^"


def mechanism(expr: pl.Expr) -> pl.Expr:
    """A SASL mechanism of a closed set: postfix/dovecot names as they are, exim authenticator
    driver names (``dovecot_plain``, ``plain_server``) by what they contain; else OTHER."""
    m = expr.str.to_uppercase()
    return (pl.when(m.is_null()).then(pl.lit("unknown"))
            .when(m.is_in(list(MECHANISMS))).then(m)
            .when(m.str.contains("SCRAM")).then(pl.lit("SCRAM"))
            .when(m.str.contains("CRAM")).then(pl.lit("CRAM-MD5"))
            .when(m.str.contains("OAUTH")).then(pl.lit("XOAUTH2"))
            .when(m.str.contains("PLAIN")).then(pl.lit("PLAIN"))
            .when(m.str.contains("LOGIN")).then(pl.lit("LOGIN"))
            .when(m.str.contains("EXTERNAL|TLS|CERT")).then(pl.lit("EXTERNAL"))
            .when(m.str.contains("(?:^|_)SPA(?:_|$)|NTLM")).then(pl.lit("NTLM"))  # exim's spa authenticator
            .otherwise(pl.lit("OTHER")))


def normalise(expr: pl.Expr, digits: str | None = r"\b\d+\b", addresses: bool = True) -> pl.Expr:
    """Text with IPs, times, (``addresses``) mail addresses and (unless ``digits`` is None) numbers
    matching ``digits`` replaced, cut."""
    e = expr.str.replace_all(r"[\w.+=-]+@[\w.-]+", "ADDR") if addresses else expr
    e = (e.str.replace_all(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", "IP")
         .str.replace_all(r"\b\d{1,2}:\d\d:\d\d(?:\.\d+)?\b", "TIME")
         .str.replace_all(r"(?:[0-9A-Fa-f]{1,4}:|:)(?:[0-9A-Fa-f]{0,4}:){1,6}[0-9A-Fa-f]{1,4}", "IP")
         .str.replace_all(r"[\w.-]+ ?\[IP\]", "HOST [IP]"))
    if digits is not None:
        e = e.str.replace_all(digits, "N")
    return _cut(e.str.replace_all(r"\s+", " "))


def tls_reason(expr: pl.Expr) -> pl.Expr:
    """The reason of a TLS failure: OpenSSL's reason string (``tlsv1 alert unknown ca``,
    ``wrong version number``, ``no shared cipher``) where the text has one, else the text, normalised."""
    openssl = expr.str.extract(r"error:[0-9A-Fa-f]+:(?:SSL|[A-Za-z0-9 ]+) routines:[^:]*:([^:,(]+)")
    rest = expr.str.replace(r"^(?:TLS library problem: )?(?:SSL_\w+\(\) (?:syscall )?failed: |TLS handshaking(?: failed)?: )?", "")
    text = pl.coalesce(openssl.str.strip_chars(), normalise(rest)).str.to_lowercase().str.slice(0, 80)
    # postfix's "SSL_accept error from x: -1" carries only a return code
    return pl.when(text.str.contains(r"(?i)^-?n?$")).then(pl.lit("handshake failed (no detail)")).otherwise(text)


def _ts(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%SZ") for c in ("first_seen", "last_seen") if c in df.columns)


def _pct(part, whole) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def _top(df: pl.DataFrame, top: int, by: str = "count", key: str | None = None) -> list[dict]:
    """The ``top`` rows with most ``by``; ties in the order of ``key`` and the other text columns, so that
    the result does not depend on how the input was cut into chunks."""
    if not df.height:
        return []
    ties = list(dict.fromkeys(([key] if key else []) + [c for c, t in df.schema.items() if t == pl.String and c != by]))
    return _ts(df.sort([by, *ties], descending=[True] + [False] * len(ties), nulls_last=True).head(top)).to_dicts()


# ---------------------------------------------------------------- partials --

# The event kinds the insight views read (and every Cisco ASA line, for the message id counts) and their columns.
KINDS_USED = (
    "smtpd_connect", "tls_error", "tls_out", "delivery", "postscreen_connect", "connect_failed", "cleanup_action",
    "reject", "postscreen_listed", "warning", "error", "fatal", "panic",
    "dovecot_login", "dovecot_login_aborted", "dovecot_login_failed", "dovecot_proxy", "dovecot_service",
    "exim_arrival", "exim_delivery", "exim_tls_error", "exim_reject", "exim_message_note", "exim_protocol_error",
    "exim_config_error", "exim_panic", "rspamd_verdict", "unparsed")
COLUMNS_USED = (
    "ts", "host", "pid", "program", "source", "kind", "daemon", "service", "message", "client_host", "client_ip",
    "relay_host", "relay_ip", "tls_protocol", "tls_cipher", "tls", "sasl_method", "sasl_username", "user", "method",
    "proto", "reason", "reply", "action", "stage", "sender_domain", "symbols", "asa_id", "severity")


def relevant(events: pl.DataFrame) -> pl.DataFrame:
    """The rows and columns the views read, with ``kind`` and ``source`` as text: one pass over the chunk,
    after which every view filters a frame a fraction of its size."""
    keep = pl.col("kind").is_in(KINDS_USED) | (pl.col("source") == "cisco_asa")
    return events.select(COLUMNS_USED).filter(keep).with_columns(pl.col("kind", "source").cast(pl.String))


def partial(events: pl.DataFrame, sessions: pl.DataFrame, opts: Options | None = None,
            outbound: pl.DataFrame | None = None) -> dict[str, pl.DataFrame]:
    """Additive tables of one chunk; ``sessions`` and ``outbound`` are ``SmtpdSessions.feed`` and
    ``SmtpTls.feed`` of the same chunk."""
    out: dict[str, pl.DataFrame] = {}
    events = relevant(events)
    sess = None
    if sessions.height:
        # smtps/submissions sessions are TLS from the first byte: no "TLS connection established" needed
        sess = session_flags(sessions).with_columns(
            (pl.col("tls") | pl.col("service").is_in(list(IMPLICIT_TLS))).alias("tls"),
            # a login: SASL succeeded (auth=1 on disconnect, or a method with no failure)
            ((pl.col("auth_ok").fill_null(0) > 0)
             | (pl.col("sasl_method").is_not_null() & (pl.col("auth_failures") == 0))).alias("sasl_login"))
    out.update(_tls_partial(events, sess, outbound))
    out.update(_auth_partial(events, sess))
    out.update(_ip_partial(events, sess))
    verdicts = events.filter((pl.col("source") == "rspamd") & (pl.col("kind") == "rspamd_verdict"))
    syms = rspamd_symbols(verdicts) if verdicts.height else None
    out.update(_blocklist_partial(events, verdicts, syms))
    out["auth_results"] = _auth_results(events, syms)
    out["asa_ids"] = _asa_ids(events)
    out["config_problems"] = _config_problems(events)
    return out


def _tls_partial(events: pl.DataFrame, sess: pl.DataFrame | None, ob: pl.DataFrame | None) -> dict[str, pl.DataFrame]:
    # raw rows from each source first; peer() and protocol() then run once per chunk (their regexes cost
    # more to compile than to run over a chunk's rows)
    parts = []
    raw = ["direction", "host", "ip", "protocol", "cipher", "sessions", "messages", "first_seen", "last_seen"]
    if sess is not None:
        s = sess.filter(pl.col("client_ip").is_not_null() & ~is_loopback(pl.col("client_ip")))
        parts.append(s.select(
            pl.lit("in").alias("direction"), pl.col("client_host").alias("host"), pl.col("client_ip").alias("ip"),
            pl.when(pl.col("tls_protocol").is_not_null()).then(pl.col("tls_protocol"))
            .when(pl.col("tls")).then(pl.lit("unknown")).otherwise(pl.lit("plaintext")).alias("protocol"),
            pl.col("tls_cipher").alias("cipher"), pl.lit(1, pl.Int64).alias("sessions"),
            pl.col("messages").cast(pl.Int64), "first_seen", "last_seen"))
    ex = events.filter(_kind("exim_arrival", "exim_delivery") & (pl.col("source") == "exim"))
    if ex.height:
        inbound = pl.col("kind") == "exim_arrival"
        ip = pl.when(inbound).then(pl.col("client_ip")).otherwise(pl.col("relay_ip"))
        ex = ex.filter(ip.is_not_null() & ~is_loopback(ip) & (ip != ""))
        parts.append(ex.select(
            pl.when(inbound).then(pl.lit("in")).otherwise(pl.lit("out")).alias("direction"),
            pl.when(inbound).then(pl.col("client_host")).otherwise(pl.col("relay_host")).alias("host"), ip.alias("ip"),
            pl.when(pl.col("tls_cipher").is_null()).then(pl.lit("plaintext"))
            .otherwise(pl.col("tls_protocol").fill_null("unknown")).alias("protocol"),
            pl.col("tls_cipher").alias("cipher"),
            pl.when(inbound).then(pl.lit(1, pl.Int64)).otherwise(pl.lit(None, pl.Int64)).alias("sessions"),
            pl.lit(1, pl.Int64).alias("messages"), pl.col("ts").alias("first_seen"), pl.col("ts").alias("last_seen")))
    if ob is not None:
        ob = ob.filter(pl.col("relay_ip").is_not_null() & ~is_loopback(pl.col("relay_ip")))
    if ob is not None and ob.height:
        parts.append(ob.select(
            pl.lit("out").alias("direction"), pl.col("relay_host").alias("host"), pl.col("relay_ip").alias("ip"),
            pl.col("tls_protocol").fill_null("plaintext").alias("protocol"), pl.col("tls_cipher").alias("cipher"),
            pl.lit(None, pl.Int64).alias("sessions"), pl.lit(1, pl.Int64).alias("messages"),
            pl.col("ts").alias("first_seen"), pl.col("ts").alias("last_seen")))
    out: dict[str, pl.DataFrame] = {}
    parts = [p.select(raw) for p in parts if p.height]
    if parts:
        out["tls_peers"] = pl.concat(parts, how="vertical_relaxed").group_by(
            "direction", peer(pl.col("host"), pl.col("ip")).alias("peer"), protocol(pl.col("protocol")).alias("protocol"),
            _cut(pl.col("cipher"), 80).alias("cipher")).agg(
            pl.col("sessions").sum(), pl.col("messages").sum(), pl.col("first_seen").min(), pl.col("last_seen").max())
    out["tls_failures"] = _tls_failures(events)
    return out


_DOVECOT_TLS_FAIL = r"TLS handshaking|SSL_\w+\(\) (?:syscall )?failed"


def _tls_failures(events: pl.DataFrame) -> pl.DataFrame:
    """TLS handshake failures: source, direction, reason, peer; counted with first/last seen."""
    parts = []
    raw = ["ts", "source", "direction", "text", "host", "ip"]
    pf = events.filter((pl.col("source") == "postfix") & _kind("tls_error", "warning", "smtpd_connect"))
    if pf.height:
        library = ((pl.col("kind") == "warning") & pl.col("reply").str.starts_with("TLS library problem")).fill_null(False)
        connect = pl.col("kind") == "smtpd_connect"
        # "SSL_accept error from x: -1" next to a "TLS library problem" line (postfix logs it before, some
        # versions after) is the same failure: count it once, with the library's reason
        bare = (pl.col("kind") == "tls_error") & pl.col("reply").str.contains(r"^-?\d+$").fill_null(False)
        near = (pl.col("kind") == "tls_error") & pl.col("client_ip").is_not_null()

        def client(c: str) -> pl.Expr:
            # "TLS library problem" names no peer: the SSL_accept error line next to it does, else the
            # process's last "connect from"
            return pl.coalesce(pl.when(near).then(pl.col(c)).shift(1), pl.when(near).then(pl.col(c)).shift(-1),
                               pl.when(connect).then(pl.col(c)).forward_fill()).over(["host", "pid"])
        pf = pf.filter(library | _kind("tls_error") | connect)
        pids = pf.filter(library).select("host", "pid").unique()
        if pids.height:  # the look-around only for the processes that logged a library problem
            near_lib = pf.join(pids, on=["host", "pid"], how="semi", nulls_equal=True).with_columns(
                client("client_host").alias("_host"), client("client_ip").alias("_ip"),
                (library.shift(1).fill_null(False) | library.shift(-1).fill_null(False)).over(["host", "pid"]).alias("_lib"),
            ).filter(~connect & ~(bare & pl.col("_lib"))).drop("_lib")
            rest = pf.join(pids, on=["host", "pid"], how="anti", nulls_equal=True).filter(~connect)
            pf = pl.concat([near_lib, rest.with_columns(pl.col("client_host").alias("_host"), pl.col("client_ip").alias("_ip"))])
        else:
            pf = pf.filter(~connect).with_columns(pl.col("client_host").alias("_host"), pl.col("client_ip").alias("_ip"))
        out_dir = pl.col("daemon").is_in(["smtp", "lmtp"])
        parts.append(pf.select(
            "ts", pl.lit("postfix").alias("source"), pl.when(out_dir).then(pl.lit("out")).otherwise(pl.lit("in")).alias("direction"),
            pl.when(pl.col("reason").is_not_null())
            .then(pl.col("reason") + ": " + pl.col("reply").fill_null("").str.replace(r" /.*$", ""))
            .otherwise(pl.col("reply")).alias("text"),
            pl.when(out_dir).then(pl.col("relay_host")).otherwise(pl.coalesce("client_host", "_host")).alias("host"),
            pl.when(out_dir).then(pl.col("relay_ip")).otherwise(pl.coalesce("client_ip", "_ip")).alias("ip")))
    dv = events.filter((pl.col("source") == "dovecot") & _kind("dovecot_login_aborted", "dovecot_login_failed", "dovecot_login",
                                                                "warning", "error", "dovecot_proxy")
                       & pl.col("message").str.contains(_DOVECOT_TLS_FAIL).fill_null(False))
    if dv.height:
        detail = pl.col("message").str.extract(r"((?:SSL_\w+\(\) (?:syscall )?failed|TLS handshaking failed): [^,]*)")
        parts.append(dv.select(
            "ts", pl.lit("dovecot").alias("source"), pl.lit("in").alias("direction"),
            detail.fill_null("disconnected during handshake").alias("text"),
            pl.col("client_host").alias("host"), pl.col("client_ip").alias("ip")))
    ex = events.filter((pl.col("source") == "exim") & _kind("exim_tls_error"))
    if ex.height:
        inbound = pl.col("client_ip").is_not_null()
        parts.append(ex.select(
            "ts", pl.lit("exim").alias("source"), pl.when(inbound).then(pl.lit("in")).otherwise(pl.lit("out")).alias("direction"),
            pl.col("reply").alias("text"),
            pl.when(inbound).then(pl.col("client_host")).otherwise(pl.col("relay_host")).alias("host"),
            pl.when(inbound).then(pl.col("client_ip")).otherwise(pl.col("relay_ip")).alias("ip")))
    parts = [p.select(raw) for p in parts if p.height]
    if not parts:
        return pl.DataFrame()
    rows = pl.concat(parts, how="vertical_relaxed").select(
        "ts", "source", "direction", tls_reason(pl.col("text")).fill_null("(no detail)").alias("reason"),
        peer(pl.col("host"), pl.col("ip")).alias("peer"))
    return count(rows, ["source", "direction", "reason", "peer"])


def _auth_partial(events: pl.DataFrame, sess: pl.DataFrame | None) -> dict[str, pl.DataFrame]:
    parts = []
    if sess is not None:
        s = sess.filter(pl.col("sasl_login"))
        parts.append(s.select(
            pl.col("first_seen").alias("ts"), ("postfix " + pl.col("service")).alias("service"),
            pl.col("sasl_method").alias("mechanism"),
            pl.when(pl.col("tls")).then(pl.lit("TLS")).otherwise(pl.lit("plaintext")).alias("tls"),
            _cut(pl.col("sasl_username"), 100).alias("user"), pl.col("client_ip")))
    ex = events.filter((pl.col("source") == "exim") & _kind("exim_arrival") & pl.col("sasl_method").is_not_null())
    if ex.height:
        parts.append(ex.select(
            "ts", pl.lit("exim").alias("service"), pl.col("sasl_method").alias("mechanism"),
            pl.when(pl.col("tls_cipher").is_not_null()).then(pl.lit("TLS")).otherwise(pl.lit("plaintext")).alias("tls"),
            _cut(pl.col("sasl_username"), 100).alias("user"), pl.col("client_ip")))
    dv = events.filter((pl.col("source") == "dovecot") & _kind("dovecot_login"))
    if dv.height:
        parts.append(dv.select(
            "ts", pl.coalesce(pl.col("proto"), pl.col("daemon").str.replace("-login$", "")).alias("service"),
            pl.col("method").alias("mechanism"),
            pl.col("tls").cast(pl.String).fill_null("plaintext").alias("tls"),
            _cut(pl.col("user"), 100).alias("user"), pl.col("client_ip")))
    out: dict[str, pl.DataFrame] = {}
    parts = [p for p in parts if p.height]
    if parts:
        logins = pl.concat(parts, how="vertical_relaxed")
        logins = logins.with_columns(mechanism(pl.col("mechanism")).alias("mechanism"))  # one regex chain per chunk
        out["logins"] = logins.group_by("service", "mechanism", "tls").agg(pl.len().cast(pl.Int64).alias("logins"))
        clear = logins.filter(pl.col("mechanism").is_in(list(CLEARTEXT_MECHANISMS)) & (pl.col("tls") == "plaintext"))
        out["cleartext"] = count(clear, ["service", "mechanism", "user", "client_ip"])
    refused = events.filter((pl.col("source") == "dovecot") & _kind("dovecot_login_aborted", "dovecot_login_failed", "warning", "error")
                            & pl.col("message").str.contains(r"(?i)plaintext auth|unsupported auth").fill_null(False))
    if refused.height:
        what = pl.when(pl.col("message").str.contains(r"(?i)plaintext auth")).then(pl.lit("plaintext auth disallowed")) \
            .otherwise(pl.lit("unsupported mechanism"))
        out["refused"] = count(refused.with_columns(
            what.alias("refusal"), pl.coalesce(pl.col("proto"), pl.col("daemon").str.replace("-login$", "")).alias("service"),
            _cut(pl.col("user"), 100).alias("user")), ["refusal", "service", "client_ip", "user"])
    return out


def _ip_partial(events: pl.DataFrame, sess: pl.DataFrame | None) -> dict[str, pl.DataFrame]:
    parts = []

    def rows(df: pl.DataFrame, what: str, ip: str) -> None:
        """Counts per family; ``what`` names them, or the frame's own ``what`` column when empty."""
        df = df.filter(pl.col(ip).is_not_null() & ~is_loopback(pl.col(ip)))
        if df.height:
            keys = [ip_family(pl.col(ip)).alias("family")] + ([] if what else ["what"])
            got = df.group_by(keys).agg(pl.len().cast(pl.Int64).alias("count"))
            parts.append(got.with_columns(pl.lit(what).alias("what")) if what else got)
    if sess is not None:
        rows(sess, "inbound smtpd sessions", "client_ip")
    k, src = pl.col("kind"), pl.col("source")
    outbound = ((src == "postfix") & (k == "delivery") & (pl.col("daemon") == "smtp")) | ((src == "exim") & (k == "exim_delivery"))
    what = (pl.when((src == "postfix") & (k == "postscreen_connect")).then(pl.lit("inbound postscreen connections"))
            .when((src == "exim") & (k == "exim_arrival")).then(pl.lit("inbound exim messages"))
            .when(outbound).then(pl.lit("outbound deliveries"))
            .when((src == "postfix") & (k == "connect_failed")).then(pl.lit("outbound connect failures"))
            .when((src == "dovecot") & (k == "dovecot_login")).then(pl.lit("IMAP/POP3 logins")))
    inbound = k.is_in(["postscreen_connect", "exim_arrival", "dovecot_login"])
    ev = events.select(what.alias("what"), pl.when(inbound).then(pl.col("client_ip")).otherwise(pl.col("relay_ip")).alias("ip"),
                       "relay_host").filter(pl.col("what").is_not_null())
    rows(ev.drop("relay_host"), "", "ip")
    out: dict[str, pl.DataFrame] = {}
    if parts:
        out["ip_family"] = pl.concat(parts, how="diagonal_relaxed").group_by("what", "family").agg(pl.col("count").sum())
    relays = ev.filter((pl.col("what") == "outbound deliveries") & pl.col("ip").is_not_null() & ~is_loopback(pl.col("ip"))
                       & pl.col("relay_host").is_not_null()).rename({"ip": "relay_ip"})
    if relays.height:
        out["relay_family"] = relays.group_by(
            _cut(pl.col("relay_host").str.to_lowercase(), 255).alias("relay_host"), ip_family(pl.col("relay_ip")).alias("family")
        ).agg(pl.len().cast(pl.Int64).alias("deliveries"))
    return out


# postfix texts after "... rejected:" that come from built-in restrictions or policy services, not access maps
_BUILTIN = (r"(?i)^(?:domain not found|need fully-qualified|host not found|invalid name|malformed dns|cannot find your|"
            r"user unknown|undeliverable address|unverified address|not owned by|improper use|not logged in|"
            r"multi-recipient bounce|greylist|message rejected due to|.*\bspf\b)")
_ACCESS = r"(?i)^(?:<[^>]*>: )?(Sender address|Client host|Recipient address|Helo command|Sender|Recipient|Client|Helo)\b"
_EXIM_ACL = {"RCPT": "acl_smtp_rcpt", "MAIL": "acl_smtp_mail", "DATA": "acl_smtp_data", "CONNECT": "acl_smtp_connect",
             "EHLO": "acl_smtp_helo", "HELO": "acl_smtp_helo"}


def rspamd_symbols(verdicts: pl.DataFrame) -> pl.DataFrame:
    """One row per symbol of each rspamd verdict: symbol, score (null in the 1.x format), sender_domain."""
    stripped = pl.col("symbols").str.replace_all(r"\{[^{}]*\}", "")  # options may hold commas
    syms = verdicts.select(stripped.str.extract_all(r"[A-Za-z0-9_]{1,64}(?:\(-?[0-9.]+\))?").alias("s"),
                           "sender_domain").explode("s").drop_nulls("s")
    parts = pl.col("s").str.split_exact("(", 1)
    return syms.select(parts.struct.field("field_0").alias("symbol"),
                       parts.struct.field("field_1").str.strip_suffix(")").cast(pl.Float64, strict=False).alias("score"),
                       "sender_domain")


def _count_texts(rows: pl.DataFrame, keys: list[str], text: str = "rule") -> pl.DataFrame:
    """Hits per ``keys`` and normalised ``text``: counted per distinct raw text first, so that each text is
    normalised once (``_norm`` says how: postfix rule texts keep addresses and numbers, their ids)."""
    # the example is the smallest text: the same whatever the chunking, as merge() keeps it
    raw = rows.group_by([*keys, "_norm", text], maintain_order=True).agg(
        pl.len().cast(pl.Int64).alias("count"), pl.col("example").min(),
        pl.col("ts").min().alias("first_seen"), pl.col("ts").max().alias("last_seen"))
    norm = pl.when(pl.col("_norm") == "postfix").then(normalise(pl.col(text), None, addresses=False)) \
        .when(pl.col("_norm") == "exim").then(normalise(pl.col(text), r"\d{4,}")).otherwise(normalise(pl.col(text)))
    return raw.with_columns(norm.alias(text)).group_by([*keys, text], maintain_order=True).agg(
        pl.col("count").sum(), pl.col("example").min(), pl.col("first_seen").min(), pl.col("last_seen").max())


def _blocklist_partial(events: pl.DataFrame, rs: pl.DataFrame, syms: pl.DataFrame | None) -> dict[str, pl.DataFrame]:
    out: dict[str, pl.DataFrame] = {}
    parts = []
    hc = events.filter((pl.col("source") == "postfix") & _kind("cleanup_action"))
    if hc.height:
        prefix = pl.when(pl.col("daemon").is_in(["smtp", "lmtp"])).then(pl.lit("smtp_")).otherwise(pl.lit(""))
        table = pl.when(pl.col("stage") == "body").then(pl.lit("body_checks")).otherwise(pl.lit("header_checks"))
        field = pl.col("reason").str.extract(r"^([\w-]{1,60}):")
        parts.append(hc.select(
            "ts", ("postfix " + prefix + table).alias("origin"),
            pl.lit("postfix").alias("_norm"),
            pl.coalesce(pl.col("reply"), "(no text) " + pl.col("stage") + pl.coalesce(" " + field, pl.lit(""))).alias("rule"),
            pl.col("action"), _cut(pl.col("reply").fill_null(pl.col("reason")), MAX_EXAMPLE).alias("example")))
    acc = events.filter((pl.col("source") == "postfix") & _kind("reject") & (pl.col("daemon") == "smtpd")
                        & ~pl.col("action").is_in(["proxy-reject", "proxy-accept"]).fill_null(False)
                        & (pl.col("reply").str.contains("rejected: ", literal=True)
                           | pl.col("reply").str.contains(" action", literal=True)).fill_null(False))
    if acc.height:
        which = pl.col("reply").str.extract(_ACCESS).str.to_lowercase().str.extract(r"^(\w+)")
        text = pl.coalesce(pl.col("reply").str.extract(r"(?i)\brejected: (.*)$"),
                           pl.col("reply").str.extract(r"(?i)\b(triggers [A-Z]+ action)"))
        acc = acc.with_columns(which.alias("_which"), text.alias("_text")).filter(
            pl.col("_which").is_not_null() & pl.col("_text").is_not_null() & ~pl.col("_text").str.contains(_BUILTIN))
        parts.append(acc.select(
            "ts", ("postfix check_" + pl.col("_which") + "_access").alias("origin"), pl.lit("postfix").alias("_norm"),
            pl.col("_text").alias("rule"),
            pl.col("action"), _cut(pl.col("reply"), MAX_EXAMPLE).alias("example")))
    ps = events.filter((pl.col("source") == "postfix") & _kind("postscreen_listed") & pl.col("action").is_in(["DENYLISTED", "BLACKLISTED"]))
    if ps.height:
        parts.append(ps.select("ts", pl.lit("postfix postscreen_access_list").alias("origin"), pl.lit("postfix").alias("_norm"),
                               pl.lit("deny").alias("rule"),
                               pl.lit("reject").alias("action"), _cut(pl.col("message"), MAX_EXAMPLE).alias("example")))
    ex = events.filter((pl.col("source") == "exim") & _kind("exim_reject"))
    if ex.height:
        acl = pl.col("stage").str.strip_chars("'").str.to_uppercase().replace_strict(_EXIM_ACL, default=None)
        parts.append(ex.select(
            "ts", ("exim " + pl.coalesce(acl, pl.lit("acl"))).alias("origin"), pl.lit("exim").alias("_norm"),
            pl.col("reason").fill_null("(no message)").alias("rule"),
            pl.col("action"), _cut(pl.col("reason").fill_null(pl.col("message")), MAX_EXAMPLE).alias("example")))
    parts = [p for p in parts if p.height]
    if parts:
        rows = pl.concat(parts, how="vertical_relaxed").with_columns(pl.col("action").fill_null("-"))
        out["rule_hits"] = _count_texts(rows, ["origin", "action"])
    if rs.height:
        action = pl.when(pl.col("action").is_in(list(RSPAMD_ACTIONS))).then(pl.col("action")).otherwise(pl.lit("other"))
        out["rspamd_actions"] = rs.group_by(action.alias("action")).agg(pl.len().cast(pl.Int64).alias("count"))
        if syms is not None and syms.height:
            out["rspamd_symbols"] = syms.group_by("symbol").agg(
                pl.len().cast(pl.Int64).alias("count"), pl.col("score").sum().alias("score_sum"),
                pl.col("score").is_not_null().sum().cast(pl.Int64).alias("scored"))
        through = rs.filter(pl.col("action").is_in(list(FLAGGED_DELIVERED)) & pl.col("sender_domain").is_not_null())
        if through.height:
            out["got_through"] = count(through.with_columns(_cut(pl.col("sender_domain").str.to_lowercase(), 100).alias("sender_domain")),
                                       ["sender_domain", "action"])
    return out


def _auth_results(events: pl.DataFrame, syms: pl.DataFrame | None = None) -> pl.DataFrame:
    """SPF/DKIM/DMARC outcomes: source, method, result, domain, count; ``syms`` are ``rspamd_symbols``."""
    parts = []
    if syms is not None and syms.height:
        auth = syms.filter(pl.col("symbol").is_in(list(AUTH_SYMBOLS)))
        parts.append(auth.select(
            pl.lit("rspamd").alias("source"),
            pl.col("symbol").replace_strict({k: m for k, (m, _) in AUTH_SYMBOLS.items()}).alias("method"),
            pl.col("symbol").replace_strict({k: r for k, (_, r) in AUTH_SYMBOLS.items()}).alias("result"),
            _cut(pl.col("sender_domain").str.to_lowercase(), 100).fill_null("(none)").alias("domain")))
    # "DKIM: d=<domain> s=<selector> ... [<verdict>]"; not "DKIM: acl called", signing errors and the like
    ex = events.filter((pl.col("source") == "exim") & _kind("exim_message_note")
                       & pl.col("reply").str.starts_with("DKIM: d=").fill_null(False))
    if ex.height:
        verdict = pl.col("reply").str.extract(r"\[(verification succeeded|verification failed|fail\b|invalid|failed key import)")
        parts.append(ex.select(
            pl.lit("exim").alias("source"), pl.lit("dkim").alias("method"),
            verdict.replace_strict({"verification succeeded": "pass", "verification failed": "fail", "fail": "fail",
                                    "invalid": "permerror", "failed key import": "permerror"}, default="other").alias("result"),
            _cut(pl.col("reply").str.extract(r"\bd=([^\s;]+)").str.to_lowercase(), 100).fill_null("(none)").alias("domain")))
    spf = events.filter(_kind("unparsed") & pl.col("program").str.contains(r"(?i)spf").fill_null(False)
                        & pl.col("message").str.contains("Received-SPF: ", literal=True).fill_null(False))
    if spf.height:
        res = pl.col("message").str.extract(r"Received-SPF: (\w+)").str.to_lowercase()
        sender = pl.col("message").str.extract(r"envelope-from=\"?<?([^;\"\s>]+)")
        helo = pl.col("message").str.extract(r"\bhelo=([^;\s]+)")
        dom = pl.coalesce(sender.str.extract(r"@([^@]+)$"), helo)
        parts.append(spf.select(
            pl.lit("policyd-spf").alias("source"), pl.lit("spf").alias("method"),
            pl.when(res.is_in(list(AUTH_RESULTS))).then(res).otherwise(pl.lit("other")).alias("result"),
            _cut(dom.str.to_lowercase(), 100).fill_null("(none)").alias("domain")))
    parts = [p for p in parts if p.height]
    if not parts:
        return pl.DataFrame()
    return pl.concat(parts, how="vertical_relaxed").group_by("source", "method", "result", "domain").agg(
        pl.len().cast(pl.Int64).alias("count"))


def _asa_ids(events: pl.DataFrame) -> pl.DataFrame:
    asa = events.filter((pl.col("source") == "cisco_asa") & pl.col("asa_id").is_not_null())
    if asa.height == 0:
        return pl.DataFrame()
    # ids and severities are keys, not numbers to add up: strings
    return count(asa.with_columns(pl.col("asa_id").cast(pl.String).str.zfill(6).alias("asa_id"),
                                  pl.col("severity").cast(pl.String).alias("severity")), ["asa_id", "severity"])


def _config_problems(events: pl.DataFrame) -> pl.DataFrame:
    parts = []
    for source in ("postfix", "dovecot", "exim"):
        kinds = sorted({k for cls in CONFIG_CLASSES if cls[1] == source for k in (cls[2] or _CONFIG_KINDS[source])})
        rows = events.filter((pl.col("source") == source) & _kind(*kinds))
        if rows.height == 0:
            continue
        text = pl.coalesce(pl.col("reply"), pl.col("reason"), pl.col("message"))
        if source == "exim":  # a synchronization error: the whole line without the client's input (always different)
            text = pl.when(_kind("exim_protocol_error")).then(
                pl.col("message").str.replace(r" (?:next )?input=.*$", "")).otherwise(text)
        cls = pl.lit(None, pl.String)
        for name, src, ks, rx in reversed([c for c in CONFIG_CLASSES if c[1] == source]):
            cond = _kind(*(ks or _CONFIG_KINDS[source]))
            if rx:
                cond = cond & text.str.contains(rx).fill_null(False)
            cls = pl.when(cond).then(pl.lit(name)).otherwise(cls)
        rows = rows.with_columns(cls.alias("class"), text.alias("_text")).filter(pl.col("class").is_not_null())
        if rows.height:
            parts.append(rows.select("ts", "class", pl.lit(source).alias("source"), pl.lit("config").alias("_norm"),
                                     pl.col("_text").alias("text"), _cut(pl.col("_text"), MAX_EXAMPLE).alias("example")))
    if not parts:
        return pl.DataFrame()
    return _count_texts(pl.concat(parts, how="vertical_relaxed"), ["class", "source"], "text")


# ------------------------------------------------------------------ finish --

def finish(m: dict[str, pl.DataFrame], top: int, opts: Options | None = None) -> dict:
    """The ``insights`` section of the report from merged partials."""
    opts = opts or Options()
    return {
        "tls_readiness": _finish_tls(m, top, opts),
        "tls_failures": _finish_tls_failures(m.get("tls_failures", pl.DataFrame()), top),
        "auth_hygiene": _finish_auth(m, top),
        "ip_families": _finish_ip(m, top),
        "blocklists": _finish_blocklists(m, top, opts),
        "auth_results": _finish_auth_results(m.get("auth_results", pl.DataFrame()), top),
        "firewall_noise": _finish_asa(m.get("asa_ids", pl.DataFrame()), top, opts),
        "config_problems": _top(m.get("config_problems", pl.DataFrame()), top),
    }


def _breaks(opts: Options) -> dict[str, pl.Expr]:
    """Per requirement: the rows of ``tls_peers`` that would fail it (an unknown protocol fails none)."""
    rank = protocol_rank(pl.col("protocol"))
    return dict(zip(REQUIREMENTS, (
        (rank < PROTOCOL_RANK["TLSv1.2"]).fill_null(False),
        (rank < PROTOCOL_RANK["TLSv1.3"]).fill_null(False),
        pl.col("cipher").str.to_uppercase().str.contains(cipher_regex(opts.exclude_ciphers)).fill_null(False),
        pl.col("protocol") == "plaintext",
    )))


def _finish_tls(m: dict, top: int, opts: Options) -> dict:
    res: dict = {"excluded_ciphers": list(opts.exclude_ciphers), "protocols": [], "ciphers": [], "what_if": [], "breaking_peers": []}
    p = m.get("tls_peers", pl.DataFrame())
    if not p.height:
        return res
    p = p.with_columns(pl.col("protocol").fill_null("unknown"))
    totals = {r["direction"]: r for r in p.group_by("direction").agg(pl.col("sessions", "messages").sum()).to_dicts()}
    by_proto = p.group_by("direction", "protocol").agg(
        pl.col("sessions").sum(), pl.col("messages").sum(), pl.col("peer").n_unique().alias("peers")
    ).with_columns(protocol_rank(pl.col("protocol")).alias("_r")).sort("direction", "_r", "protocol", nulls_last=True)
    res["protocols"] = [dict(r, sessions=r["sessions"] if r["direction"] == "in" else None,
                             messages_pct=_pct(r["messages"], totals[r["direction"]]["messages"]))
                        for r in by_proto.drop("_r").to_dicts()]
    breaks = _breaks(opts)
    ciphers = p.filter(pl.col("cipher").is_not_null()).group_by("direction", "protocol", "cipher").agg(
        pl.col("sessions").sum(), pl.col("messages").sum(), pl.col("peer").n_unique().alias("peers")
    ).with_columns(breaks["excluded ciphers"].alias("excluded"))
    res["ciphers"] = _out_sessions(_top(ciphers, top, "messages", "cipher"))
    what_if, breaking = [], []
    for req, cond in breaks.items():
        hit = p.filter(cond)
        for d in sorted(totals):
            h = hit.filter(pl.col("direction") == d)
            msgs = int(h["messages"].sum()) if h.height else 0
            what_if.append({"direction": d, "requirement": req, "peers": h["peer"].n_unique() if h.height else 0,
                            "sessions": int(h["sessions"].sum()) if d == "in" else None, "messages": msgs,
                            "messages_pct": _pct(msgs, totals[d]["messages"])})
            if h.height:
                per = h.group_by("peer").agg(
                    pl.col("sessions").sum(), pl.col("messages").sum(),
                    pl.col("protocol").unique().sort().alias("protocols"), pl.col("cipher").drop_nulls().unique().sort().head(3).alias("ciphers"),
                    pl.col("last_seen").max())
                breaking += [{"direction": d, "requirement": req, **r} for r in _top(per, top, "messages", "peer")]
    res["what_if"] = what_if
    res["breaking_peers"] = _out_sessions(breaking)
    return res


def _out_sessions(rows: list[dict]) -> list[dict]:
    """Outbound rows count deliveries only: no sessions."""
    return [dict(r, sessions=None) if r.get("direction") == "out" else r for r in rows]


def _finish_tls_failures(f: pl.DataFrame, top: int) -> dict:
    if not f.height:
        return {"total": 0, "by_reason": [], "by_peer": []}
    by_reason = f.group_by("source", "direction", "reason").agg(
        pl.col("count").sum(), pl.col("peer").n_unique().alias("peers"), pl.col("first_seen").min(), pl.col("last_seen").max())
    by_peer = f.group_by("peer", "direction").agg(
        pl.col("count").sum(), pl.col("reason").unique().sort().head(3).alias("reasons"), pl.col("last_seen").max())
    return {"total": int(f["count"].sum()), "by_reason": _top(by_reason, top, key="reason"),
            "by_peer": _top(by_peer.filter(pl.col("peer").is_not_null()), top, key="peer")}


def _finish_auth(m: dict, top: int) -> dict:
    lg = m.get("logins", pl.DataFrame())
    res: dict = {"by_mechanism": [], "mechanisms": [], "cleartext_without_tls": [], "refused": []}
    if lg.height:
        total = int(lg["logins"].sum())
        res["by_mechanism"] = lg.sort(["logins", "service", "mechanism", "tls"], descending=[True, False, False, False]).to_dicts()
        mech = lg.group_by("mechanism").agg(pl.col("logins").sum(),
                                            pl.col("logins").filter(pl.col("tls") == "plaintext").sum().alias("without_tls"))
        res["mechanisms"] = [dict(r, pct=_pct(r["logins"], total), cleartext=r["mechanism"] in CLEARTEXT_MECHANISMS)
                             for r in mech.sort(["logins", "mechanism"], descending=[True, False]).to_dicts()]
    res["cleartext_without_tls"] = _top(m.get("cleartext", pl.DataFrame()), top)
    res["refused"] = _top(m.get("refused", pl.DataFrame()), top)
    return res


def _finish_ip(m: dict, top: int) -> dict:
    res: dict = {"share": [], "relays_missing_ipv6": []}
    fam = m.get("ip_family", pl.DataFrame())
    if fam.height:
        wide = fam.group_by("what").agg(
            pl.col("count").filter(pl.col("family") == "ipv4").sum().alias("ipv4"),
            pl.col("count").filter(pl.col("family") == "ipv6").sum().alias("ipv6"))
        order = ["inbound postscreen connections", "inbound smtpd sessions", "inbound exim messages", "outbound deliveries",
                 "outbound connect failures", "IMAP/POP3 logins"]
        rows = sorted(wide.to_dicts(), key=lambda r: order.index(r["what"]) if r["what"] in order else len(order))
        res["share"] = [dict(r, ipv6_pct=_pct(r["ipv6"], r["ipv4"] + r["ipv6"])) for r in rows]
    rel = m.get("relay_family", pl.DataFrame())
    if rel.height:
        wide = rel.group_by("relay_host").agg(
            pl.col("deliveries").filter(pl.col("family") == "ipv4").sum().alias("ipv4"),
            pl.col("deliveries").filter(pl.col("family") == "ipv6").sum().alias("ipv6"))
        res["relays_missing_ipv6"] = _top(wide.filter((pl.col("ipv4") > 0) & (pl.col("ipv6") > 0)), top, "ipv4", "relay_host")
    return res


def rule_fired(rule: str) -> str:
    """The regex a configured rule must match in a hit's rule text or symbol (case-insensitive, at word edges)."""
    return r"(?i)(?:^|\W)" + re.escape(rule.strip()) + r"(?:\W|$)"


def _finish_blocklists(m: dict, top: int, opts: Options) -> dict:
    hits = m.get("rule_hits", pl.DataFrame())
    acts = m.get("rspamd_actions", pl.DataFrame())
    syms = m.get("rspamd_symbols", pl.DataFrame())
    res: dict = {"rule_hits": _top(hits, top, key="rule"), "rspamd_actions": [], "rspamd_symbols": [],
                 "stale_rules": None, "got_through": []}
    scanned = int(acts["count"].sum()) if acts.height else 0
    if acts.height:
        have = dict(zip(acts["action"].to_list(), acts["count"].to_list()))
        res["rspamd_actions"] = [{"action": a, "count": have.get(a, 0), "pct": _pct(have.get(a, 0), scanned)}
                                 for a in RSPAMD_ACTIONS + (("other",) if "other" in have else ())]
    if syms.height:
        # rspamd 1.x logs bare names: no score to average (null, not NaN)
        syms = syms.with_columns(pl.when(pl.col("scored") > 0).then(pl.col("score_sum") / pl.col("scored")).round(2)
                                 .alias("mean_score"))
        res["rspamd_symbols"] = [dict(r, pct=_pct(r["count"], scanned))
                                 for r in _top(syms.drop("score_sum", "scored"), top, key="symbol")]
    if opts.rules:
        names = pl.concat([d.select(pl.col(c).alias("name")) for d, c in ((hits, "rule"), (syms, "symbol")) if d.height]) \
            if hits.height or syms.height else pl.DataFrame({"name": []}, schema={"name": pl.String})
        res["stale_rules"] = [r for r in dict.fromkeys(opts.rules) if r.strip()
                              and not names["name"].str.contains(rule_fired(r)).any()]
    gt = m.get("got_through", pl.DataFrame())
    if gt.height:
        agg = gt.group_by("sender_domain").agg(pl.col("count").sum(), pl.col("action").unique().sort().alias("actions"),
                                               pl.col("first_seen").min(), pl.col("last_seen").max())
        res["got_through"] = _top(agg, top, key="sender_domain")
    return res


def _finish_auth_results(a: pl.DataFrame, top: int) -> dict:
    res: dict = {"summary": [], "by_domain": []}
    if not a.height:
        return res
    summ = a.group_by("method", "result").agg(pl.col("count").sum())
    per_method = dict(summ.group_by("method").agg(pl.col("count").sum()).iter_rows())
    res["summary"] = [dict(r, pct=_pct(r["count"], per_method[r["method"]]))
                      for r in summ.sort(["method", "count", "result"], descending=[False, True, False]).to_dicts()]
    failed = pl.col("result").is_in(list(AUTH_FAILED))

    def n(method: str, cond: pl.Expr) -> pl.Expr:
        return pl.col("count").filter((pl.col("method") == method) & cond).sum()
    dom = a.group_by("domain").agg(
        *(n(mth, pl.col("result") == "pass").alias(f"{mth}_pass") for mth in ("spf", "dkim", "dmarc")),
        *(n(mth, failed).alias(f"{mth}_fail") for mth in ("spf", "dkim", "dmarc")),
    ).with_columns(pl.sum_horizontal("spf_fail", "dkim_fail", "dmarc_fail").alias("failures"),
                   pl.sum_horizontal("spf_pass", "dkim_pass", "dmarc_pass").alias("passes"))
    rows = dom.sort(["failures", "passes", "domain"], descending=[True, True, False]).head(top)
    res["by_domain"] = rows.to_dicts()
    return res


def _finish_asa(a: pl.DataFrame, top: int, opts: Options) -> dict:
    res: dict = {"total": 0, "ids": [], "no_logging": []}
    if not a.height:
        return res
    ids = a.group_by("asa_id").agg(pl.col("count").sum(),
                                   pl.col("severity").sort_by(["count", "severity"], descending=[True, False]).first(),
                                   pl.col("first_seen").min(), pl.col("last_seen").max())
    total = int(ids["count"].sum())
    res["total"] = total
    rows = []
    for r in _top(ids, top, key="asa_id"):
        keep = ASA_KEEP.get(r["asa_id"]) or ASA_KEEP.get(r["asa_id"][:3])
        rows.append(dict(r, pct=_pct(r["count"], total), keep=keep,
                         suggestion=keep or f"no logging message {int(r['asa_id'])}"))
    res["ids"] = rows
    res["no_logging"] = [r["suggestion"] for r in rows
                         if not r["keep"] and r["pct"] >= opts.noise_min_pct][:max(opts.noise_lines, 0)]
    return res


# ----------------------------------------------------------------- render --

def report_sections(ins: dict | None) -> tuple[list, list]:
    """(title, rows, columns) of the report's insight tables: (main sections, problem sections)."""
    if not ins:
        return [], []
    t, f, a, ip, b = ins["tls_readiness"], ins["tls_failures"], ins["auth_hygiene"], ins["ip_families"], ins["blocklists"]
    r, fw = ins["auth_results"], ins["firewall_noise"]
    main = [
        ("TLS readiness: protocols", t["protocols"],
         [("direction", "dir"), ("protocol", "protocol"), ("sessions", "sessions"), ("messages", "messages"),
          ("messages_pct", "% msgs"), ("peers", "peers")]),
        ("TLS readiness: what breaks if you require ...", t["what_if"],
         [("direction", "dir"), ("requirement", "requirement"), ("peers", "peers"), ("sessions", "sessions"),
          ("messages", "messages"), ("messages_pct", "% msgs")]),
        ("TLS readiness: peers that would break", t["breaking_peers"],
         [("direction", "dir"), ("requirement", "requirement"), ("peer", "peer"), ("protocols", "protocols"),
          ("sessions", "sessions"), ("messages", "messages"), ("last_seen", "last")]),
        ("TLS readiness: ciphers", t["ciphers"],
         [("direction", "dir"), ("protocol", "protocol"), ("cipher", "cipher"), ("sessions", "sessions"),
          ("messages", "messages"), ("excluded", "excluded")]),
        ("TLS handshake failures by reason", f["by_reason"],
         [("source", "source"), ("direction", "dir"), ("reason", "reason"), ("count", "count"), ("peers", "peers"),
          ("last_seen", "last")]),
        ("TLS handshake failures by peer", f["by_peer"],
         [("peer", "peer"), ("direction", "dir"), ("count", "count"), ("reasons", "reasons")]),
        ("Logins by mechanism and TLS", a["by_mechanism"],
         [("service", "service"), ("mechanism", "mechanism"), ("tls", "TLS"), ("logins", "logins")]),
        ("IPv4 vs IPv6", ip["share"], [("what", "what"), ("ipv4", "IPv4"), ("ipv6", "IPv6"), ("ipv6_pct", "IPv6 %")]),
        ("Relays reached over IPv4 that also have IPv6", ip["relays_missing_ipv6"],
         [("relay_host", "relay"), ("ipv4", "IPv4 deliveries"), ("ipv6", "IPv6 deliveries")]),
        ("Your blocklist rules at work", b["rule_hits"],
         [("origin", "origin"), ("rule", "rule"), ("action", "action"), ("count", "count"), ("last_seen", "last")]),
    ]
    if b["stale_rules"] is not None:
        main.append(("Configured rules that never fired", [{"rule": x} for x in b["stale_rules"]], [("rule", "rule")]))
    main += [
        ("rspamd actions", b["rspamd_actions"], [("action", "action"), ("count", "count"), ("pct", "%")]),
        ("rspamd symbols", b["rspamd_symbols"],
         [("symbol", "symbol"), ("count", "count"), ("pct", "% of scans"), ("mean_score", "mean score")]),
        ("Flagged by rspamd but delivered (sender domains)", b["got_through"],
         [("sender_domain", "domain"), ("count", "count"), ("actions", "actions"), ("last_seen", "last")]),
        ("Inbound SPF/DKIM/DMARC results", r["summary"],
         [("method", "method"), ("result", "result"), ("count", "count"), ("pct", "%")]),
        ("SPF/DKIM/DMARC by domain", r["by_domain"],
         [("domain", "domain"), ("spf_pass", "SPF pass"), ("spf_fail", "SPF fail"), ("dkim_pass", "DKIM pass"),
          ("dkim_fail", "DKIM fail"), ("dmarc_pass", "DMARC pass"), ("dmarc_fail", "DMARC fail")]),
        ("Firewall noise: ASA message ids", fw["ids"],
         [("asa_id", "id"), ("severity", "sev"), ("count", "count"), ("pct", "%"), ("suggestion", "suggestion")]),
    ]
    problems = [
        ("Findings: cleartext credentials (PLAIN/LOGIN) without TLS", a["cleartext_without_tls"],
         [("service", "service"), ("mechanism", "mechanism"), ("user", "user"), ("client_ip", "IP"), ("count", "count"),
          ("last_seen", "last")]),
        ("Refused logins: plaintext auth disallowed, unsupported mechanism", a["refused"],
         [("refusal", "refusal"), ("service", "service"), ("client_ip", "IP"), ("user", "user"), ("count", "count")]),
        ("Configuration problems", ins["config_problems"],
         [("class", "class"), ("text", "message"), ("count", "count"), ("first_seen", "first"), ("last_seen", "last")]),
    ]
    return main, problems
