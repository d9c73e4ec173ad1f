"""Paths → a :class:`Dataset` of polars frames: DMARC records, reports, TLS policies and failures.

Each payload is parsed into plain tuples; the frames are built once at the end
from those tuples (column-wise, in bulk), and report-level fields reach every
record through one join. A report already seen (same reporter and report id)
is counted once: the first one read wins, later copies only count as duplicates.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, MutableSet
from dataclasses import dataclass
from typing import Callable

import polars as pl

from . import aggregate
from .inputs import Limits, OnError
from .worker import Event, iter_events

_S = pl.String
_LS = pl.List(pl.String)
REPORTS_SCHEMA = {
    "report_idx": pl.Int32, "reporter": _S, "reporter_email": _S, "report_id": _S, "begin": pl.Int64,
    "end": pl.Int64, "schema": pl.Enum(list(aggregate.SCHEMAS)), "version": _S, "generator": _S,
    "domain": _S, "adkim": _S, "aspf": _S, "p": _S, "sp": _S, "np": _S, "pct": pl.Int16, "fo": _S,
    "testing": _S, "discovery_method": _S, "report_errors": _S, "file": _S,
}
LIST_COLUMNS = ["override_reasons", "dkim_domains", "dkim_selectors", "dkim_results",
                "spf_domains", "spf_scopes", "spf_results"]
ROWS_SCHEMA = {
    "report_idx": pl.Int32, "source_ip": _S, "count": pl.Int64, "disposition": _S, "dkim_aligned": _S,
    "spf_aligned": _S, "override_reasons": _S, "header_from": _S, "envelope_from": _S, "envelope_to": _S,
    "dkim_domains": _S, "dkim_selectors": _S, "dkim_results": _S,
    "spf_domains": _S, "spf_scopes": _S, "spf_results": _S,
}
# Column order of the records frame (one row per report row).
RECORD_COLUMNS = [
    "reporter", "report_id", "begin", "end", "domain", "adkim", "aspf", "p", "sp", "np", "pct", "fo", "testing",
    "source_ip", "source_net", "count", "disposition", "dkim_aligned", "spf_aligned", "dmarc_pass",
    "override_reasons", "header_from", "envelope_from", "envelope_to",
    "dkim_domains", "dkim_selectors", "dkim_results", "spf_domains", "spf_scopes", "spf_results",
    "schema", "discovery_method", "reporter_email", "file",
]
TLS_REPORT_SCHEMA = {"tls_idx": pl.Int32, "reporter": _S, "report_id": _S, "begin": pl.Int64, "end": pl.Int64,
                     "contact": _S, "file": _S}
TLS_POLICY_SCHEMA = {"tls_idx": pl.Int32, "policy_type": _S, "policy_domain": _S, "policy_string": _S,
                     "mx_host": _S, "successful": pl.Int64, "failed": pl.Int64}
TLS_FAILURE_SCHEMA = {"tls_idx": pl.Int32, "policy_type": _S, "policy_domain": _S, "result_type": _S,
                      "sending_mta_ip": _S, "receiving_mx_hostname": _S, "receiving_mx_helo": _S,
                      "receiving_ip": _S, "failed": pl.Int64, "failure_reason_code": _S,
                      "additional_information": _S}


@dataclass
class Dataset:
    """Everything read: frames plus what was skipped."""

    records: pl.DataFrame  # one row per DMARC report row (RECORD_COLUMNS)
    reports: pl.DataFrame  # one row per distinct DMARC report
    tls_policies: pl.DataFrame  # one row per TLS report policy
    tls_failures: pl.DataFrame  # one row per TLS failure detail
    payloads: int = 0  # reports parsed (including duplicates)
    duplicates: int = 0  # reports skipped as already seen
    failed: int = 0  # inputs (or parts) that were not readable reports
    skipped_records: int = 0  # records (and TLS policies) skipped as unreadable


OnNote = Callable[[str, str], None]


def read_reports(paths: list[str], on_error: OnError, on_note: OnNote | None = None,
                 limits: Limits = Limits(), jobs: int = 1) -> Dataset:
    """Read every report under ``paths``; errors and notes go to the callbacks as (origin, text).

    ``jobs`` > 1 parses many files on that many processes; the result is the same.
    """
    return collect(iter_events(paths, limits, jobs), on_error, on_note)


Key = tuple[str, str]


def collect(events: Iterable[Event], on_error: OnError, on_note: OnNote | None = None,
            seen: MutableSet[Key] | None = None, seen_tls: MutableSet[Key] | None = None) -> Dataset:
    """The :class:`Dataset` of parse events (:mod:`.worker`). A report whose key is in ``seen``
    (``seen_tls`` for TLS reports) counts as a duplicate; the keys of the others are added, so
    a caller that keeps the sets (``tail``) counts each report once across calls."""
    seen = set() if seen is None else seen
    seen_tls = set() if seen_tls is None else seen_tls
    reports: list[tuple] = []
    rows: list[tuple] = []
    tls_reports: list[tuple] = []
    tls_policies: list[tuple] = []
    tls_failures: list[tuple] = []
    payloads = duplicates = skipped = failed = 0
    for kind, origin, item in events:
        if kind == "error":
            failed += 1
            on_error(origin, item)
            continue
        if kind == "note":
            if on_note:
                on_note(origin, item)
            continue
        payloads += 1
        keys = seen if kind == "dmarc" else seen_tls
        if item.key in keys:
            duplicates += 1
            continue
        keys.add(item.key)
        for text in item.notes:
            if on_note:
                on_note(origin, text)
            skipped += text.startswith(("record ", "policy ")) and " skipped" in text
        if kind == "dmarc":
            idx = len(reports)
            reports.append((idx, *item.report, origin))
            rows += [(idx, *r) for r in item.records]
        else:
            idx = len(tls_reports)
            tls_reports.append((idx, *item.report, origin))
            tls_policies += [(idx, *p) for p in item.policies]
            tls_failures += [(idx, *f) for f in item.failures]
    reports_df = normalize_reports(_frame(reports, REPORTS_SCHEMA))
    records = build_records(_frame(rows, ROWS_SCHEMA), reports_df)
    tls_rep = _frame(tls_reports, TLS_REPORT_SCHEMA).with_columns(_epoch("begin"), _epoch("end"))
    tls_pol = _frame(tls_policies, TLS_POLICY_SCHEMA).join(tls_rep, on="tls_idx", how="left").drop("tls_idx")
    tls_fail = _frame(tls_failures, TLS_FAILURE_SCHEMA).join(
        tls_rep.select("tls_idx", "reporter", "report_id", "begin", "end"), on="tls_idx", how="left").drop("tls_idx")
    return Dataset(records, reports_df.drop("report_idx"), tls_pol, tls_fail, payloads, duplicates, failed, skipped)


def _frame(rows: list[tuple], schema: dict) -> pl.DataFrame:
    """Tuples → frame, one column at a time (transposed in C by zip)."""
    cols = list(zip(*rows)) if rows else [[] for _ in schema]
    return pl.DataFrame([pl.Series(name, col, dtype=dtype, strict=False) for (name, dtype), col in zip(schema.items(), cols)])


def _epoch(col: str) -> pl.Expr:
    return pl.from_epoch(pl.col(col), time_unit="s").dt.replace_time_zone("UTC").alias(col)


def _lower(*cols: str) -> list[pl.Expr]:
    return [pl.col(c).str.to_lowercase() for c in cols]


def _domains(*cols: str) -> list[pl.Expr]:
    """Domain names (also LIST_SEP-joined lists of them): lower case, no trailing dot."""
    return [pl.col(c).str.to_lowercase().str.replace_all(r"\.+(\x1f|$)", "${1}") for c in cols]


def normalize_reports(reports: pl.DataFrame) -> pl.DataFrame:
    """Report fields as reported → lower case and RFC 7489 defaults, for all reports at once."""
    return reports.with_columns(
        _epoch("begin"), _epoch("end"), *_domains("domain"),
        *_lower("p", "testing", "discovery_method"),
        pl.col("adkim").str.to_lowercase().fill_null("r"), pl.col("aspf").str.to_lowercase().fill_null("r"),
        pl.col("pct").fill_null(100), pl.col("fo").fill_null("0"),
    ).with_columns(
        pl.when(pl.col("domain") != "").then(pl.col("domain")).alias("domain"),
        pl.coalesce(pl.col("sp").str.to_lowercase(), pl.col("p")).alias("sp"),
    ).with_columns(pl.coalesce(pl.col("np").str.to_lowercase(), pl.col("sp")).alias("np"))


def build_records(rows: pl.DataFrame, reports: pl.DataFrame) -> pl.DataFrame:
    """Join (normalised) report fields onto rows, normalise case, split lists, derive ``dmarc_pass`` and ``source_net``."""
    empty = pl.lit([], dtype=_LS)
    rows = rows.with_columns(
        *_lower("disposition", "dkim_aligned", "spf_aligned", "dkim_results", "spf_scopes", "spf_results"),
        *_domains("header_from", "envelope_from", "envelope_to", "dkim_domains", "spf_domains"),
    ).with_columns(pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in ("header_from", "envelope_from", "envelope_to"))
    df = rows.join(reports, on="report_idx", how="left").with_columns(
        pl.col(c).str.split(aggregate.LIST_SEP)
        .list.eval(pl.when(pl.element() != "").then(pl.element()))
        .fill_null(empty) for c in LIST_COLUMNS)
    nets = network_of(df.get_column("source_ip").unique().drop_nulls().to_list())
    return df.with_columns(
        dmarc_pass=(pl.col("dkim_aligned") == "pass") | (pl.col("spf_aligned") == "pass"),
        source_net=pl.col("source_ip").replace_strict(nets, default=None, return_dtype=pl.String),
    ).with_columns(pl.col("dmarc_pass").fill_null(False)).select(RECORD_COLUMNS)


def network_of(ips: list[str]) -> dict[str, str]:
    """IP → its /24 (IPv4) or /64 (IPv6) network, computed once per distinct address."""
    out = {}
    for ip in ips:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            continue
        out[ip] = str(ipaddress.ip_network(f"{addr}/{24 if addr.version == 4 else 64}", strict=False))
    return out
