"""Reject reasons, top spammer domains and IPs, authentication failures, firewall.

Reject classes come from ``logscope.classify`` (a data file users extend);
this module only counts. Spam-flagged mail is mail rspamd scored as reject,
soft reject, rewrite subject or add header, and milter rejects.
"""

from __future__ import annotations

import polars as pl

from . import count, network, ranked

REJECT_KINDS = ("reject", "milter_action", "cleanup_action", "exim_reject", "postscreen_violation",
                "postscreen_pregreet", "postscreen_dnsbl", "postscreen_listed")
SPAM_ACTIONS = ("reject", "soft reject", "rewrite subject", "add header")
MAIL_PORTS = (25, 465, 587, 993, 995, 143, 110)
# what this view and the reject classifier (any field a rule may name) read of the events
COLUMNS = ("ts", "source", "kind", "daemon", "service", "message", "queue_id", "client_ip", "helo", "sender_domain",
           "action", "stage", "status", "reply", "reason", "dsn", "symbols", "sasl_username", "user", "asa_id",
           "src_ip", "dst_port")


def _kind(*kinds: str) -> pl.Expr:
    return pl.col("kind").is_in(list(kinds))


def reject_rows(events: pl.DataFrame, classes) -> pl.DataFrame:
    """Classified rejects by the MTA: not warnings, not failed deliveries, and not the postscreen findings
    (PREGREET, DNSBL rank, ...) that postscreen follows with its own reject line."""
    from ..classify import POSTSCREEN_FINDINGS, reject_rows as is_reject
    # rspamd's own verdicts are counted as spam-flagged mail; the MTA logs the reject it made of them.
    df = classes.classify(events.filter(is_reject() & ~_kind("rspamd_verdict")))
    return df.filter(pl.col("reject_class").is_not_null() & ~_kind(*POSTSCREEN_FINDINGS)
                     & ~pl.col("action").fill_null("").is_in(["reject_warning", "warning", "warn", "info", "dunno"]))


def flagged_rows(events: pl.DataFrame) -> pl.DataFrame:
    """rspamd verdicts that flag spam (see ``correlate.SpamVerdicts`` for the ones the MTA rejected)."""
    return events.filter(_kind("rspamd_verdict") & pl.col("action").is_in(list(SPAM_ACTIONS))
                         & pl.col("sender_domain").is_not_null())


def partial(events: pl.DataFrame, classes, verdicts=None, final: bool = False) -> dict[str, pl.DataFrame]:
    """Additive tables of one chunk. ``verdicts`` is a ``correlate.SpamVerdicts``: spam-flagged mail is
    counted once, as the MTA's reject when it rejected it; without one, every flagged verdict counts.
    ``final``: the end of the input (the verdicts still held are counted)."""
    out: dict[str, pl.DataFrame] = {}
    events = events.select(COLUMNS)  # a filter copies every column of its frame: narrow first
    rj = reject_rows(events, classes)
    flagged = flagged_rows(events)
    if verdicts is not None:
        flagged = verdicts.feed(flagged, rj["queue_id"], final)
    if rj.height:
        rj = rj.with_columns(pl.col("reject_class").cast(pl.String),
                             pl.when(pl.col("daemon") == "postscreen").then(pl.lit("postscreen"))
                             .otherwise(pl.col("source").cast(pl.String)).alias("origin"),
                             pl.col("stage").fill_null("-"))
        out["classes"] = rj.group_by("reject_class", "stage", "origin").agg(
            pl.len().cast(pl.Int64).alias("count"), pl.col("reply").str.slice(0, 200).min().alias("example"),
            pl.col("ts").min().alias("first_seen"), pl.col("ts").max().alias("last_seen"))
        out["rbl_zones"] = count(rj.filter(pl.col("rbl_zone").is_not_null()), ["rbl_zone"])
        out["spam_ips"] = count(rj.filter(pl.col("client_ip").is_not_null()), ["client_ip"])
        out["spam_helos"] = count(rj.filter(pl.col("helo").is_not_null()).with_columns(pl.col("helo").str.slice(0, 255)), ["helo"])
        out["spam_domains"] = count(rj.filter(pl.col("sender_domain").is_not_null()), ["sender_domain", "reject_class"])
        out["spam_domain_ips"] = rj.filter(pl.col("sender_domain").is_not_null() & pl.col("client_ip").is_not_null()).select(
            "sender_domain", "client_ip").unique()
    if flagged is not None and flagged.height:
        out["flagged_domains"] = count(flagged.with_columns(("rspamd " + pl.col("action")).alias("reject_class")),
                                       ["sender_domain", "reject_class"])
        out["flagged_domain_ips"] = flagged.filter(pl.col("client_ip").is_not_null()).select("sender_domain", "client_ip").unique()
    auth = events.filter(_kind("sasl_auth_failed", "dovecot_auth_failed", "dovecot_login_failed", "exim_auth_failed"))
    if auth.height:
        auth = auth.with_columns(pl.when(pl.col("source") == "postfix").then(pl.lit("smtp-sasl"))
                                 .when(pl.col("source") == "exim").then(pl.lit("exim"))
                                 .otherwise(pl.col("daemon")).alias("service"),
                                 pl.coalesce("sasl_username", "user").alias("target_user"))
        out["auth_ips"] = count(auth.filter(pl.col("client_ip").is_not_null()), ["client_ip", "service"])
        out["auth_users"] = count(auth.filter(pl.col("target_user").is_not_null()), ["target_user", "service"])
    asa = events.filter(pl.col("source") == "cisco_asa")
    if asa.height:
        # ids and ports are keys, not amounts: strings, so merge() never adds them up
        port = pl.col("dst_port").cast(pl.Int64, strict=False).cast(pl.String)
        out["fw_denies"] = count(asa.filter(_kind("asa_deny")).with_columns(port.alias("port"), network(pl.col("src_ip")).alias("src_net")),
                                 ["port", "src_net"])
        out["fw_mail_conns"] = count(asa.filter(_kind("asa_conn_built") & port.is_in([str(p) for p in MAIL_PORTS])).with_columns(port.alias("port")), ["port"])
        out["fw_failover"] = count(asa.filter(_kind("asa_failover")).with_columns(
            pl.col("asa_id").cast(pl.String), pl.col("message").str.slice(0, 160).alias("text")),
                                   ["asa_id", "text"])
    return out


def _ts(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%SZ") for c in ("first_seen", "last_seen") if c in df.columns)


def finish(m: dict[str, pl.DataFrame], top: int, blocklist: bool = False) -> dict:
    res: dict = {}
    cl = m.get("classes", pl.DataFrame())
    total = int(cl["count"].sum()) if cl.height else 0
    if cl.height:
        by = cl.group_by("reject_class").agg(pl.col("count").sum(), pl.col("example").min(),
                                            pl.col("first_seen").min(), pl.col("last_seen").max()).pipe(ranked)
        res["reject_classes"] = [dict(r, pct=round(100 * r["count"] / total, 1)) for r in _ts(by).to_dicts()]
        res["reject_by_stage"] = cl.group_by("stage").agg(pl.col("count").sum()).pipe(ranked).to_dicts()
        res["reject_by_origin"] = cl.group_by("origin").agg(pl.col("count").sum()).pipe(ranked).to_dicts()
        res["reject_detail"] = _ts(ranked(cl)).to_dicts()
    res["rejects_total"] = total
    for name in ("rbl_zones", "spam_ips", "spam_helos"):
        df = m.get(name, pl.DataFrame())
        res[name] = _ts(ranked(df, "count", top)).to_dicts() if df.height else []
    nets = m.get("spam_ips", pl.DataFrame())
    res["spam_networks"] = (nets.with_columns(network(pl.col("client_ip")).alias("network")).group_by("network")
                            .agg(pl.col("count").sum(), pl.len().alias("ips")).pipe(ranked, "count", top).to_dicts()) if nets.height else []
    doms = pl.concat([d for d in (m.get("spam_domains"), m.get("flagged_domains")) if d is not None and d.height], how="diagonal_relaxed") \
        if any(d is not None and d.height for d in (m.get("spam_domains"), m.get("flagged_domains"))) else pl.DataFrame()
    if doms.height:
        ips = pl.concat([d for d in (m.get("spam_domain_ips"), m.get("flagged_domain_ips")) if d is not None and d.height]).unique() \
            if any(d is not None and d.height for d in (m.get("spam_domain_ips"), m.get("flagged_domain_ips"))) else None
        agg = doms.group_by("sender_domain").agg(
            pl.col("count").sum(), pl.col("reject_class").unique().sort().alias("classes"),
            pl.col("first_seen").min(), pl.col("last_seen").max())
        if ips is not None:
            agg = agg.join(ips.group_by("sender_domain").agg(pl.len().alias("client_ips")), on="sender_domain", how="left")
        whole = int(agg["count"].sum())
        agg = agg.with_columns((100 * pl.col("count") / whole).round(1).alias("pct")).sort(["count", "sender_domain"], descending=[True, False]).head(top)
        res["spam_domains"] = _ts(agg).to_dicts()
        if blocklist:
            res["blocklist"] = blocklist_lines(agg["sender_domain"].to_list())
    else:
        res["spam_domains"] = []
    for name in ("auth_ips", "auth_users"):
        df = m.get(name, pl.DataFrame())
        res[name] = _ts(ranked(df, "count", top)).to_dicts() if df.height else []
    fw = {}
    for name in ("fw_denies", "fw_mail_conns", "fw_failover"):
        df = m.get(name, pl.DataFrame())
        fw[name.removeprefix("fw_")] = _ts(ranked(df, "count", top)).to_dicts() if df.height else []
    den = m.get("fw_denies", pl.DataFrame())
    fw["denies_by_port"] = den.group_by("port").agg(pl.col("count").sum()).pipe(ranked, "count", top).to_dicts() if den.height else []
    res["firewall"] = fw
    return res


def blocklist_lines(domains: list[str]) -> dict[str, list[str]]:
    """Ready-to-paste lines for postfix check_sender_access, header_checks and an exim ACL."""
    import re
    safe = [d for d in domains if re.fullmatch(r"[a-z0-9.-]{1,253}", d or "")]  # never paste hostile text
    return {
        "postfix_check_sender_access": [f"{d}    REJECT spam source (logscope)" for d in safe],
        "postfix_header_checks": [f"/^From:.*@{re.escape(d)}>?\\s*$/ REJECT spam source (logscope)" for d in safe],
        "exim_acl": [f"deny  senders = *@{d}\n      message = spam source (logscope)" for d in safe],
    }
