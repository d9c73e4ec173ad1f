"""TLS vs plaintext: inbound SMTP sessions, outbound deliveries, IMAP/POP3 logins, exim.

* inbound: postfix smtpd sessions (``correlate.SmtpdSessions``) by service
  (smtp, submission, smtps, ...): TLS when a "TLS connection established
  from" line belongs to the session, or its disconnect counts ``starttls``;
  protocol, cipher and trust mix from the ``tls_in`` lines;
* outbound: postfix smtp/lmtp deliveries; a delivery used TLS when the same
  smtp process logged "TLS connection established to" the same relay before
  it (connection reuse keeps the state); local transports are not counted;
* dovecot logins by protocol: ``TLS``, ``secured`` (local or trusted network)
  or plaintext;
* exim arrivals and deliveries by the presence of ``X=``;
* findings: SASL authentications in sessions without TLS (a password crossed
  the wire in clear), and plaintext dovecot logins.
"""

from __future__ import annotations

import polars as pl

from . import count, ranked

IMPLICIT_TLS = ("smtps", "submissions")


def _kind(*kinds: str) -> pl.Expr:
    return pl.col("kind").is_in(list(kinds))


def session_flags(sessions: pl.DataFrame) -> pl.DataFrame:
    """Sessions with ``service`` defaulted and a ``tls`` / ``sasl`` / ``sasl_without_tls`` flag each."""
    return sessions.with_columns(
        pl.col("service").fill_null("smtp"),
        (pl.col("tls") | pl.col("starttls")).alias("tls"),
        (pl.col("sasl_method").is_not_null() | (pl.col("auth_ok").fill_null(0) > 0)).alias("sasl"),
    ).with_columns((pl.col("sasl") & ~pl.col("tls")).alias("sasl_without_tls"))


# what the TLS view reads of the events
COLUMNS = ("ts", "host", "source", "kind", "daemon", "service", "client_ip", "user", "method", "proto", "tls",
           "tls_trust", "tls_protocol", "tls_cipher", "tls_kex")


def partial(events: pl.DataFrame, sessions: pl.DataFrame, outbound: pl.DataFrame | None = None) -> dict[str, pl.DataFrame]:
    """``outbound`` is ``correlate.SmtpTls.feed`` of the same chunk."""
    out: dict[str, pl.DataFrame] = {}
    events = events.select(COLUMNS)  # a filter copies every column of its frame: narrow first
    if sessions.height:
        s = session_flags(sessions)
        day = pl.col("first_seen").dt.date().alias("day")
        out["inbound"] = s.group_by("host", "service", day).agg(
            pl.len().cast(pl.Int64).alias("sessions"), pl.col("tls").sum().cast(pl.Int64).alias("tls"),
            pl.col("sasl").sum().cast(pl.Int64).alias("sasl"),
            pl.col("sasl_without_tls").sum().cast(pl.Int64).alias("sasl_without_tls"),
            pl.col("started_before_input").sum().cast(pl.Int64).alias("started_before_input"))
        out["sasl_without_tls"] = count(
            s.filter(pl.col("sasl_without_tls")).rename({"first_seen": "ts"}).drop("last_seen"),
            ["service", "client_ip", "sasl_username"])
    tin = events.filter((pl.col("source") == "postfix") & _kind("tls_in"))
    out["inbound_mix"] = tin.group_by(pl.col("service").fill_null("smtp"), "tls_protocol", "tls_cipher",
                                      pl.col("tls_trust").cast(pl.String), pl.col("tls_kex").fill_null("(not logged)")).agg(
        pl.len().cast(pl.Int64).alias("count"))
    ob = outbound
    if ob is not None and ob.height:
        out["outbound"] = ob.group_by(
            "host", pl.col("ts").dt.date().alias("day"), pl.col("tls_trust").fill_null("plaintext").alias("trust"),
            pl.col("tls_protocol")).agg(pl.len().cast(pl.Int64).alias("deliveries"))
    dv = events.filter((pl.col("source") == "dovecot") & _kind("dovecot_login"))
    if dv.height:
        proto = pl.coalesce(pl.col("proto"), pl.col("daemon").str.replace("-login$", ""))
        out["logins"] = dv.group_by("host", proto.alias("protocol"), pl.col("ts").dt.date().alias("day"),
                                    pl.col("tls").cast(pl.String).fill_null("plaintext").str.to_lowercase().alias("tls")).agg(
            pl.len().cast(pl.Int64).alias("logins"))
        out["plaintext_logins"] = count(dv.filter(pl.col("tls").cast(pl.String).fill_null("plaintext") == "plaintext").with_columns(proto.alias("protocol")),
                                        ["protocol", "user", "client_ip", "method"])
    ex = events.filter((pl.col("source") == "exim") & _kind("exim_arrival", "exim_delivery"))
    if ex.height:
        out["exim"] = ex.group_by(pl.col("kind").cast(pl.String).str.replace("exim_", ""),
                                  pl.col("tls_cipher").is_not_null().alias("tls")).agg(pl.len().cast(pl.Int64).alias("count"))
    return out


def _share(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def finish(m: dict[str, pl.DataFrame], top: int) -> dict:
    res: dict = {}
    inbound = m.get("inbound", pl.DataFrame())
    if inbound.height:
        by = inbound.group_by("service").agg(pl.col("sessions", "tls", "sasl", "sasl_without_tls").sum()).sort("service")
        res["inbound_by_service"] = [dict(r, tls_pct=_share(r["tls"], r["sessions"])) for r in by.to_dicts()]
        tot = inbound.select(pl.col("sessions", "tls", "sasl_without_tls").sum()).row(0, named=True)
        res["inbound"] = dict(tot, tls_pct=_share(tot["tls"], tot["sessions"]))
        per_day = inbound.group_by("day").agg(pl.col("sessions", "tls").sum()).sort("day")
        res["inbound_per_day"] = [dict(r, day=str(r["day"]), tls_pct=_share(r["tls"], r["sessions"])) for r in per_day.to_dicts()]
        per_host = inbound.group_by("host").agg(pl.col("sessions", "tls").sum()).sort("host")
        res["inbound_per_host"] = [dict(r, tls_pct=_share(r["tls"], r["sessions"])) for r in per_host.to_dicts()]
    mix = m.get("inbound_mix", pl.DataFrame())
    if mix.height:
        res["inbound_protocols"] = mix.group_by("tls_protocol").agg(pl.col("count").sum()).pipe(ranked).to_dicts()
        res["inbound_ciphers"] = mix.group_by("tls_cipher").agg(pl.col("count").sum()).pipe(ranked, "count", top).to_dicts()
        res["inbound_trust"] = mix.group_by("tls_trust").agg(pl.col("count").sum()).pipe(ranked).to_dicts()
        res["inbound_key_exchange"] = mix.group_by("tls_kex").agg(pl.col("count").sum()).pipe(ranked).to_dicts()
    ob = m.get("outbound", pl.DataFrame())
    if ob.height:
        total = int(ob["deliveries"].sum())
        by = ob.group_by("trust").agg(pl.col("deliveries").sum()).pipe(ranked, "deliveries")
        res["outbound_by_trust"] = [dict(r, pct=_share(r["deliveries"], total)) for r in by.to_dicts()]
        plain = int(ob.filter(pl.col("trust") == "plaintext")["deliveries"].sum())
        res["outbound"] = {"deliveries": total, "tls": total - plain, "tls_pct": _share(total - plain, total)}
    lg = m.get("logins", pl.DataFrame())
    if lg.height:
        by = lg.group_by("protocol", "tls").agg(pl.col("logins").sum()).sort("protocol", "tls")
        res["logins"] = by.to_dicts()
    ex = m.get("exim", pl.DataFrame())
    if ex.height:
        res["exim"] = ex.group_by("kind", "tls").agg(pl.col("count").sum()).sort("kind", "tls").to_dicts()
    findings = []
    for name in ("sasl_without_tls", "plaintext_logins"):
        df = m.get(name, pl.DataFrame())
        if df.height:
            findings += [dict(r, finding=name, first_seen=str(r["first_seen"]), last_seen=str(r["last_seen"]))
                         for r in ranked(df, "count", top).to_dicts()]
    res["findings"] = findings
    return res
