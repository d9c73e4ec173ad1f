"""Traffic: what pflogsumm calls grand totals, and more (postfix and exim).

Definitions follow pflogsumm where both count the same thing (README lists
the differences): *received* = smtpd ``client=`` and pickup lines; *delivered*
= ``status=sent`` not "forwarded as"; *deferred* = messages with at least one
``status=deferred`` (each such line is a *deferral*); *bounced* =
``status=bounced`` lines; *rejected*/*reject warnings*/*held*/*discarded* =
smtpd and postscreen access rejects, plus cleanup header/body checks and
milter rejects in cleanup. Bytes received count a message once, when both its
``client=``/pickup line and its qmgr ``size=`` are seen; bytes delivered add
the message size per delivered recipient.
"""

from __future__ import annotations

import polars as pl

from . import count, of_kind, ranked

# Delay histogram bucket bounds in seconds (percentiles are read off the merged histogram).
DELAY_BUCKETS = [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600,
                 86400, 3 * 86400, 5 * 86400]


def _k(*kinds: str) -> pl.Expr:
    return pl.col("kind").is_in(list(kinds))


# what the traffic view reads of the events (a filter copies every column of its frame: narrow first)
COLUMNS = ("ts", "host", "source", "kind", "daemon", "level", "message", "queue_id", "sender", "recipient", "size",
           "relay_host", "delay", "delays", "dsn", "status", "action", "reply", "reason")


def postfix_flags(events: pl.DataFrame) -> pl.DataFrame:
    """postfix events with one boolean column per pflogsumm counter."""
    pf = events.select(c for c in COLUMNS if c in events.columns).filter(pl.col("source") == "postfix")
    sent = _k("delivery") & (pl.col("status") == "sent")
    forwarded = sent & pl.col("reply").str.contains("forwarded as", literal=True).fill_null(False)
    smtpd_access = _k("reject") & pl.col("daemon").is_in(["smtpd", "postscreen"])
    cleanup = _k("cleanup_action") | (_k("milter_action") & (pl.col("daemon") == "cleanup"))
    act = pl.col("action")
    return pf.with_columns(
        (_k("smtpd_client") | _k("pickup")).alias("received"),
        (sent & ~forwarded).alias("delivered"),
        forwarded.alias("forwarded"),
        (_k("delivery") & (pl.col("status") == "deferred")).alias("deferral"),
        (_k("delivery") & (pl.col("status") == "bounced")).alias("bounced"),
        ((smtpd_access & (act == "reject")) | (cleanup & act.is_in(["reject", "milter-reject"]))).fill_null(False).alias("rejected"),
        ((smtpd_access & (act == "reject_warning")) | (cleanup & (act == "warning"))).fill_null(False).alias("reject_warning"),
        ((smtpd_access | cleanup) & (act == "hold")).fill_null(False).alias("held"),
        ((smtpd_access | cleanup) & (act == "discard")).fill_null(False).alias("discarded"),
    )


_COUNTERS = ["received", "delivered", "forwarded", "deferral", "bounced", "rejected", "reject_warning", "held", "discarded"]


def partial(events: pl.DataFrame, tracked: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Additive tables of one chunk; ``tracked`` is ``PostfixMessages.feed`` of the same chunk."""
    pf = postfix_flags(events)
    out: dict[str, pl.DataFrame] = {}
    sums = [pl.col(c).sum().cast(pl.Int64) for c in _COUNTERS]
    out["totals"] = pf.select(sums) if pf.height else pl.DataFrame()
    out["per_day"] = pf.group_by(pl.col("ts").dt.date().alias("day")).agg(sums) if pf.height else pl.DataFrame()
    # the hour is text ("07"): merge() adds up numeric columns and would sum the hours of two chunks
    out["per_hour"] = pf.group_by(pl.col("ts").dt.strftime("%H").alias("hour")).agg(sums) if pf.height else pl.DataFrame()
    out["deferred_ids"] = pf.filter(pl.col("deferral")).select("host", "queue_id").unique()
    rec = tracked["received_bytes"]
    out["senders"] = rec.group_by(pl.col("sender").fill_null("")).agg(
        pl.len().cast(pl.Int64).alias("count"), pl.col("size").sum().cast(pl.Int64).alias("bytes"))
    dl = tracked["deliveries"].filter((pl.col("status") == "sent")
                                      & ~pl.col("reply").str.contains("forwarded as", literal=True).fill_null(False))
    out["recipients"] = dl.group_by(pl.col("recipient").str.to_lowercase()).agg(
        pl.len().cast(pl.Int64).alias("count"), pl.col("msg_size").fill_null(0).sum().cast(pl.Int64).alias("bytes"),
        pl.col("msg_size").is_null().sum().cast(pl.Int64).alias("without_size"))
    delays = pf.filter(pl.col("delivered")).select(pl.col("delay").cast(pl.Float64))
    out["delays"] = delays.group_by(
        pl.col("delay").bin_intervals(DELAY_BUCKETS, labels=[str(b) for b in DELAY_BUCKETS] + ["inf"], right_closed=True).cast(pl.String).alias("le")
    ).agg(pl.len().cast(pl.Int64).alias("count"), pl.col("delay").sum().alias("seconds")) if delays.height else pl.DataFrame()
    trim = pl.col("reply").str.replace(r"^\d{3} ", "").str.slice(0, 100)
    out["deferral_reasons"] = count(pf.filter(pl.col("deferral")).with_columns(trim.alias("reason")), ["dsn", "reason"])
    out["bounce_reasons"] = count(pf.filter(pl.col("bounced")).with_columns(trim.alias("reason")), ["relay_host", "dsn", "reason"])
    problems = of_kind(pf, "warning", "error", "fatal", "panic")
    out["problems"] = count(problems.with_columns(pl.col("kind").cast(pl.String).alias("level"),
                                                  pl.col("reply").fill_null(pl.col("message")).str.slice(0, 100).alias("text")),
                            ["level", "daemon", "text"])
    out["exim"] = _exim(events)
    return out


def _exim(events: pl.DataFrame) -> pl.DataFrame:
    ex = events.select("source", "kind", "size").filter(pl.col("source") == "exim")
    if ex.height == 0:
        return pl.DataFrame()
    k = pl.col("kind").cast(pl.String)
    return ex.select(
        (k == "exim_arrival").sum().cast(pl.Int64).alias("received"),
        pl.col("size").filter(k == "exim_arrival").sum().cast(pl.Int64).alias("bytes_received"),
        (k == "exim_delivery").sum().cast(pl.Int64).alias("delivered"),
        (k == "exim_deferral").sum().cast(pl.Int64).alias("deferrals"),
        (k == "exim_failure").sum().cast(pl.Int64).alias("bounced"),
        (k == "exim_reject").sum().cast(pl.Int64).alias("rejected"),
        (k == "exim_completed").sum().cast(pl.Int64).alias("completed"),
    )


def _percentile(hist: pl.DataFrame, q: float) -> float | None:
    """Upper bound of the bucket holding the q-quantile."""
    if hist.height == 0:
        return None
    order = {str(b): i for i, b in enumerate(DELAY_BUCKETS)} | {"inf": len(DELAY_BUCKETS)}
    h = hist.with_columns(pl.col("le").replace_strict(order, return_dtype=pl.Int32).alias("_i")).sort("_i")
    total = h["count"].sum()
    cum = 0
    for le, n in zip(h["le"], h["count"]):
        cum += n
        if cum >= q * total:
            return None if le == "inf" else float(le)
    return None


def _daily_average(per_hour: pl.DataFrame, days: int) -> pl.DataFrame:
    """Per-hour sums divided by the days of the period, rounded half up: pflogsumm's "Daily Average"."""
    if not per_hour.height:
        return per_hour
    return per_hour.with_columns((pl.col(c) / days + 0.5).floor().cast(pl.Int64)
                                 for c, t in per_hour.schema.items() if t.is_numeric())


def finish(m: dict[str, pl.DataFrame], top: int) -> dict:
    """The traffic section of the report from merged partials."""
    t = m["totals"].row(0, named=True) if m["totals"].height else {c: 0 for c in _COUNTERS}
    senders, recips = m["senders"], m["recipients"]
    s_dom = (senders.with_columns(pl.col("sender").str.extract(r"@([^@]+)$").str.to_lowercase().fill_null("(none)").alias("domain"))
             .group_by("domain").agg(pl.col("count").sum(), pl.col("bytes").sum())) if senders.height else senders
    r_dom = (recips.with_columns(pl.col("recipient").str.extract(r"@([^@]+)$").fill_null("(local)").alias("domain"))
             .group_by("domain").agg(pl.col("count").sum(), pl.col("bytes").sum())) if recips.height else recips
    total_msgs = t["delivered"] + t["rejected"] + t["discarded"]
    hist = m["delays"]
    totals = {
        "received": t["received"], "delivered": t["delivered"], "forwarded": t["forwarded"],
        "deferred": m["deferred_ids"].height if m["deferred_ids"].height else 0, "deferrals": t["deferral"],
        "bounced": t["bounced"], "rejected": t["rejected"],
        "rejected_pct": round(100 * t["rejected"] / total_msgs, 1) if total_msgs else 0.0,
        "reject_warnings": t["reject_warning"], "held": t["held"], "discarded": t["discarded"],
        "bytes_received": int(senders["bytes"].sum()) if senders.height else 0,
        "bytes_delivered": int(recips["bytes"].sum()) if recips.height else 0,
        "senders": senders.height, "sending_domains": s_dom.height,
        "recipients": recips.height, "recipient_domains": r_dom.height,
        "deliveries_without_message_start": int(recips["without_size"].sum()) if recips.height else 0,
    }

    def top_by(df: pl.DataFrame, key: str, by: str) -> list[dict]:
        return df.sort([by, key], descending=[True, False]).head(top).to_dicts() if df.height else []

    def table(df: pl.DataFrame, key: str) -> list[dict]:
        if not df.height:
            return []
        return df.sort(key).rename({"deferral": "deferrals"}).with_columns(pl.col(key).cast(pl.String)).to_dicts()

    days = m["per_day"].height
    return {
        "totals": totals,
        "days": days,
        "per_day": table(m["per_day"], "day"),
        "per_hour": table(m["per_hour"], "hour"),
        "per_hour_average": table(_daily_average(m["per_hour"], days), "hour") if days > 1 else [],
        "top_senders": top_by(senders.rename({"sender": "address"}) if senders.height else senders, "address", "count"),
        "top_senders_by_size": top_by(senders.rename({"sender": "address"}) if senders.height else senders, "address", "bytes"),
        "top_recipients": top_by(recips.drop("without_size").rename({"recipient": "address"}) if recips.height else recips, "address", "count"),
        "top_sending_domains": top_by(s_dom, "domain", "count"),
        "top_recipient_domains": top_by(r_dom, "domain", "count"),
        "delay_seconds": {"p50": _percentile(hist, 0.5), "p90": _percentile(hist, 0.9), "p99": _percentile(hist, 0.99),
                          "mean": round(hist["seconds"].sum() / hist["count"].sum(), 3) if hist.height and hist["count"].sum() else None},
        "deferral_reasons": _seen(m["deferral_reasons"], top),
        "bounce_reasons": _seen(m["bounce_reasons"], top),
        "problems": _seen(m["problems"], top),
        "exim": m["exim"].row(0, named=True) if m["exim"].height else None,
    }


def _seen(df: pl.DataFrame, top: int) -> list[dict]:
    if not df.height:
        return []
    return ranked(df, "count", top).with_columns(
        pl.col("first_seen").dt.strftime("%Y-%m-%dT%H:%M:%SZ"), pl.col("last_seen").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_dicts()
