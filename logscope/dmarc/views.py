"""Views over DMARC records and TLS report frames: pure functions, frame in → small frame out.

The summary of ``logscope dmarc``, the weekly e-mail and the alerts all use
these, so a number means the same thing everywhere. Every count is a number of
*messages* (the sum of ``count``), not of report rows. Shares are fractions
(0..1). A message is DMARC-compliant when DKIM or SPF passed *aligned*
(``dkim_aligned``/``spf_aligned`` of ``policy_evaluated`` equal ``pass``).
"""

from __future__ import annotations

import polars as pl

# Source categories, most urgent first (the order of the per-source view).
CATEGORIES = ["spf_not_dkim", "fails_both", "dkim_not_spf", "passes_both"]
CATEGORY_LABELS = {
    "spf_not_dkim": "passes SPF but fails DKIM",
    "fails_both": "fails both",
    "dkim_not_spf": "passes DKIM but fails SPF",
    "passes_both": "passes both",
}
CATEGORY = pl.Enum(CATEGORIES)
DEFAULT_MIN_DAYS = 14

_DKIM = pl.col("dkim_aligned") == "pass"
_SPF = pl.col("spf_aligned") == "pass"


def _messages_where(cond: pl.Expr) -> pl.Expr:
    return pl.col("count").filter(cond.fill_null(False)).sum()


def _result_columns() -> list[pl.Expr]:
    """Message totals by alignment result; the building block of every view."""
    return [
        pl.col("count").sum().alias("messages"),
        _messages_where(pl.col("dmarc_pass")).alias("dmarc_pass"),
        _messages_where(_SPF).alias("spf_aligned_pass"),
        _messages_where(_DKIM).alias("dkim_aligned_pass"),
        _messages_where(_SPF & _DKIM).alias("passes_both"),
        _messages_where(_SPF & ~_DKIM.fill_null(False)).alias("spf_not_dkim"),
        _messages_where(_DKIM & ~_SPF.fill_null(False)).alias("dkim_not_spf"),
        _messages_where(~pl.col("dmarc_pass")).alias("fails_both"),
    ]


def _shares() -> list[pl.Expr]:
    m = pl.col("messages")
    safe = pl.when(m > 0).then(m).otherwise(None)
    return [(pl.col(c) / safe).fill_null(0.0).alias(f"{c}_share")
            for c in ("dmarc_pass", "spf_aligned_pass", "dkim_aligned_pass")]


def _dispositions() -> list[pl.Expr]:
    return [_messages_where(pl.col("disposition") == d).alias(d) for d in ("none", "quarantine", "reject")]


def _category() -> pl.Expr:
    """The category of a group of messages: the larger kind of failure wins, ties go to "fails both"."""
    fb, sd, ds = pl.col("fails_both"), pl.col("spf_not_dkim"), pl.col("dkim_not_spf")
    return (pl.when((fb > 0) & (fb >= sd)).then(pl.lit("fails_both"))
            .when(sd > 0).then(pl.lit("spf_not_dkim"))
            .when(ds > 0).then(pl.lit("dkim_not_spf"))
            .otherwise(pl.lit("passes_both")).cast(CATEGORY).alias("category"))


def domain_summary(records: pl.DataFrame) -> pl.DataFrame:
    """Per policy domain, most messages first.

    Columns: domain, messages, dmarc_pass, spf_aligned_pass, dkim_aligned_pass, passes_both,
    spf_not_dkim, dkim_not_spf, fails_both, none, quarantine, reject, reports, reporters
    (distinct), sources (distinct IPs), dmarc_pass_share, spf_aligned_pass_share,
    dkim_aligned_pass_share.
    """
    return (records.group_by("domain")
            .agg(*_result_columns(), *_dispositions(),
                 pl.struct("reporter", "report_id").n_unique().alias("reports"),
                 pl.col("reporter").n_unique().alias("reporters"),
                 pl.col("source_ip").n_unique().alias("sources"))
            .with_columns(_shares())
            .sort(["messages", "domain"], descending=[True, False], nulls_last=True))


def domain_reporter_summary(records: pl.DataFrame) -> pl.DataFrame:
    """Per (policy domain, reporter): the columns of :func:`domain_summary` without the distinct counts
    of reporters, plus reports. Sorted by domain, then messages."""
    return (records.group_by("domain", "reporter")
            .agg(*_result_columns(), *_dispositions(),
                 pl.col("report_id").n_unique().alias("reports"))
            .with_columns(_shares())
            .sort(["domain", "messages", "reporter"], descending=[False, True, False], nulls_last=True))


def source_summary(records: pl.DataFrame) -> pl.DataFrame:
    """Per source IP, failing sources first (by :data:`CATEGORIES`), then most messages.

    Columns: source_ip, source_net, category (enum of CATEGORIES), messages, dmarc_pass, spf_aligned_pass,
    dkim_aligned_pass, passes_both, spf_not_dkim, dkim_not_spf, fails_both, reporters (sorted list),
    domains (sorted list of policy domains), header_from (sorted list), shares as in domain_summary.
    """
    return _by_source(records, ["source_ip", "source_net"])


def network_summary(records: pl.DataFrame) -> pl.DataFrame:
    """Per network (/24 for IPv4, /64 for IPv6), ordered like :func:`source_summary`.

    Columns: source_net, category, sources (distinct IPs), and the counts and lists of source_summary.
    """
    return _by_source(records, ["source_net"], pl.col("source_ip").n_unique().alias("sources"))


def _by_source(records: pl.DataFrame, keys: list[str], *extra: pl.Expr) -> pl.DataFrame:
    lists = [pl.col(c).drop_nulls().unique().sort().alias(a)
             for c, a in (("reporter", "reporters"), ("domain", "domains"), ("header_from", "header_from"))]
    df = (records.group_by(keys).agg(*extra, *_result_columns(), *lists)
          .with_columns(_category(), *_shares()))
    cols = keys + ["category"] + [c for c in df.columns if c not in keys and c != "category"]
    return df.select(cols).sort(["category", "messages", keys[0]], descending=[False, True, False])


def daily_summary(records: pl.DataFrame) -> pl.DataFrame:
    """Per (day, policy domain); a report counts on the UTC day its period begins.

    Columns: day (date), domain, messages, dmarc_pass, spf_aligned_pass, dkim_aligned_pass, passes_both,
    spf_not_dkim, dkim_not_spf, fails_both, none, quarantine, reject, shares. Sorted by day, domain.
    """
    return (records.with_columns(pl.col("begin").dt.date().alias("day"))
            .group_by("day", "domain")
            .agg(*_result_columns(), *_dispositions())
            .with_columns(_shares())
            .sort(["day", "domain"], nulls_last=True))


def policy_summary(records: pl.DataFrame, min_days: int = DEFAULT_MIN_DAYS) -> pl.DataFrame:
    """Per policy domain: the policy in force (as published in the most recent report) and a recommendation.

    Columns: domain, p, sp, np, pct, adkim, aspf, fo, testing, first_day, last_day, days (distinct
    report days), messages, dmarc_pass, dmarc_pass_share, recommendation (null unless the data supports
    tightening: every message compliant over at least ``min_days`` days).
    """
    latest = (records.sort(["end", "begin"], nulls_last=False)
              .group_by("domain").agg(pl.col(c).last() for c in ("p", "sp", "np", "pct", "adkim", "aspf", "fo", "testing")))
    days = (records.with_columns(pl.col("begin").dt.date().alias("day"))
            .group_by("domain").agg(pl.col("day").min().alias("first_day"), pl.col("day").max().alias("last_day"),
                                    pl.col("day").n_unique().alias("days"),
                                    pl.col("count").sum().alias("messages"),
                                    _messages_where(pl.col("dmarc_pass")).alias("dmarc_pass")))
    df = latest.join(days, on="domain", how="left", nulls_equal=True).with_columns(
        (pl.col("dmarc_pass") / pl.when(pl.col("messages") > 0).then(pl.col("messages"))).fill_null(0.0)
        .alias("dmarc_pass_share"))
    return df.with_columns(_recommendation(min_days)).sort("domain", nulls_last=True)


def _recommendation(min_days: int) -> pl.Expr:
    full = (pl.col("messages") > 0) & (pl.col("dmarc_pass") == pl.col("messages")) & (pl.col("days") >= min_days)
    basis = pl.format("100% of {} messages DMARC-compliant over {} days under p={}",
                      pl.col("messages"), pl.col("days"), pl.col("p").fill_null("?"))
    pct = pl.col("pct").fill_null(100)
    step = (pl.when(pct < 100).then(pl.format("raise pct from {} to 100", pct))
            .when(pl.col("p") == "none").then(pl.lit("consider p=quarantine"))
            .when(pl.col("p") == "quarantine").then(pl.lit("consider p=reject"))
            .when((pl.col("p") == "reject") & (pl.col("sp").is_in(["none", "quarantine"])))
            .then(pl.lit("consider sp=reject")))
    return pl.when(full & step.is_not_null()).then(pl.format("{}: {}", basis, step)).alias("recommendation")


def tls_domain_summary(tls_policies: pl.DataFrame) -> pl.DataFrame:
    """Per receiving (policy) domain of SMTP TLS reports.

    Columns: policy_domain, policy_types (sorted list), successful, failed, sessions, failure_share,
    reports, reporters (sorted list). Most failed sessions first.
    """
    return (tls_policies.group_by("policy_domain")
            .agg(pl.col("policy_type").unique().sort().alias("policy_types"),
                 pl.col("successful").sum(), pl.col("failed").sum(),
                 pl.struct("reporter", "report_id").n_unique().alias("reports"),
                 pl.col("reporter").unique().sort().alias("reporters"))
            .with_columns(sessions=pl.col("successful") + pl.col("failed"))
            .with_columns(failure_share=(pl.col("failed") / pl.when(pl.col("sessions") > 0).then(pl.col("sessions")))
                          .fill_null(0.0))
            .sort(["failed", "sessions", "policy_domain"], descending=[True, True, False]))


def tls_failure_summary(tls_failures: pl.DataFrame) -> pl.DataFrame:
    """Per (policy domain, result type) of TLS failure details.

    Columns: policy_domain, result_type, failed (sessions), sending_mta_ips (distinct), receiving_mx
    (sorted list of hostnames), reporters (sorted list). Most failed sessions first.
    """
    return (tls_failures.group_by("policy_domain", "result_type")
            .agg(pl.col("failed").sum(), pl.col("sending_mta_ip").drop_nulls().n_unique().alias("sending_mta_ips"),
                 pl.col("receiving_mx_hostname").drop_nulls().unique().sort().alias("receiving_mx"),
                 pl.col("reporter").unique().sort().alias("reporters"))
            .sort(["failed", "policy_domain", "result_type"], descending=[True, False, False]))
