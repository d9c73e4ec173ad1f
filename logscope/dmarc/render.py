"""The ``logscope dmarc`` summary as text, markdown, JSON or HTML, and the records export.

All four formats render the same sections, computed once by :func:`sections`
from the views. Every string in a report is hostile: text output replaces
control characters (no terminal escapes) and bounds cell widths, markdown
escapes HTML and markdown punctuation, HTML goes through jinja2 with
autoescaping on.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path

import polars as pl

from ..errors import UsageError
from . import views
from .collect import Dataset
from .inputs import clean

FORMATS = ("text", "markdown", "json", "html")


@dataclass
class Column:
    header: str
    key: str
    kind: str = "str"  # str, int, pct, list, date
    numeric: bool = False


@dataclass
class Section:
    title: str
    columns: list[Column]
    rows: list[dict]
    note: str = ""  # a line under the title
    omitted: int = 0  # rows left out by --top
    lines: list[str] = field(default_factory=list)  # free lines instead of (or after) a table


def _c(header: str, key: str, kind: str = "str") -> Column:
    return Column(header, key, kind, kind in ("int", "pct"))


RESULT_COLS = [_c("messages", "messages", "int"), _c("compliant", "dmarc_pass_share", "pct"),
               _c("SPF aligned", "spf_aligned_pass_share", "pct"), _c("DKIM aligned", "dkim_aligned_pass_share", "pct")]
DISPOSITION_COLS = [_c("none", "none", "int"), _c("quarantine", "quarantine", "int"), _c("reject", "reject", "int")]
SOURCE_COLS = [_c("messages", "messages", "int"), _c("SPF aligned", "spf_aligned_pass", "int"),
               _c("DKIM aligned", "dkim_aligned_pass", "int"), _c("fail both", "fails_both", "int"),
               _c("policy domains", "domains", "list"), _c("header from", "header_from", "list"),
               _c("reporters", "reporters", "list")]


def sections(ds: Dataset, top: int = 20, min_days: int = views.DEFAULT_MIN_DAYS) -> list[Section]:
    """The summary's sections, in order; ``top`` bounds the source and network tables (0: all)."""
    out: list[Section] = []
    recs = ds.records
    if recs.height or ds.reports.height:
        out.append(Section("Policy domains", [_c("domain", "domain"), *RESULT_COLS, *DISPOSITION_COLS,
                                              _c("reports", "reports", "int"), _c("reporters", "reporters", "int")],
                           views.domain_summary(recs).to_dicts(),
                           note="compliant: DKIM or SPF aligned pass; none/quarantine/reject: dispositions applied"))
        out.append(Section("By reporter", [_c("domain", "domain"), _c("reporter", "reporter"), *RESULT_COLS,
                                           *DISPOSITION_COLS, _c("reports", "reports", "int")],
                           views.domain_reporter_summary(recs).to_dicts()))
        src = views.source_summary(recs)
        for cat, note in (("spf_not_dkim", "typical of a legitimate sender with broken or missing DKIM signing"),
                          ("fails_both", "likely spoofing, or a sender you have not set up")):
            part = src.filter(pl.col("category") == cat)
            out.append(_limited(Section(f"Failing sources: {views.CATEGORY_LABELS[cat]}",
                                        [_c("source IP", "source_ip"), _c("network", "source_net"), *SOURCE_COLS],
                                        part.to_dicts(), note=note), top))
        rest = src.filter(pl.col("category").is_in(["dkim_not_spf", "passes_both"]))
        out.append(_limited(Section("Aligned sources", [_c("source IP", "source_ip"), _c("network", "source_net"),
                                                        _c("result", "category"), *SOURCE_COLS],
                                    rest.with_columns(pl.col("category").replace_strict(views.CATEGORY_LABELS, return_dtype=pl.String)).to_dicts()),
                            top))
        out.append(_limited(Section("Networks (/24, /64)", [_c("network", "source_net"), _c("sources", "sources", "int"),
                                                            _c("result", "category"), *SOURCE_COLS],
                                    views.network_summary(recs).with_columns(pl.col("category").replace_strict(views.CATEGORY_LABELS, return_dtype=pl.String)).to_dicts(),
                                    note="failing networks first"), top))
        out.append(Section("Per day", [_c("day", "day", "date"), _c("domain", "domain"), *RESULT_COLS, *DISPOSITION_COLS],
                           views.daily_summary(recs).to_dicts(), note="a report counts on the UTC day its period begins"))
        pol = views.policy_summary(recs, min_days)
        out.append(Section("Policy in force", [_c("domain", "domain"), _c("p", "p"), _c("sp", "sp"), _c("np", "np"),
                                               _c("pct", "pct", "int"), _c("adkim", "adkim"), _c("aspf", "aspf"),
                                               _c("testing", "testing"), _c("days", "days", "int"),
                                               _c("compliant", "dmarc_pass_share", "pct")],
                           pol.to_dicts(), note="as published in each domain's most recent report",
                           lines=[f"{d}: {r}" for d, r in pol.filter(pl.col("recommendation").is_not_null())
                                  .select("domain", "recommendation").iter_rows()]))
    if ds.tls_policies.height:
        out.append(Section("SMTP TLS: receiving domains", [_c("domain", "policy_domain"), _c("policies", "policy_types", "list"),
                                                           _c("successful", "successful", "int"), _c("failed", "failed", "int"),
                                                           _c("failure share", "failure_share", "pct"),
                                                           _c("reports", "reports", "int"), _c("reporters", "reporters", "list")],
                           views.tls_domain_summary(ds.tls_policies).to_dicts(), note="sessions per policy domain"))
        out.append(Section("SMTP TLS: failures", [_c("domain", "policy_domain"), _c("result type", "result_type"),
                                                  _c("sessions", "failed", "int"), _c("sending MTAs", "sending_mta_ips", "int"),
                                                  _c("receiving MX", "receiving_mx", "list"), _c("reporters", "reporters", "list")],
                           views.tls_failure_summary(ds.tls_failures).to_dicts()))
    return out


def _limited(s: Section, top: int) -> Section:
    if top and len(s.rows) > top:
        s.omitted = len(s.rows) - top
        s.rows = s.rows[:top]
    return s


def headline(ds: Dataset) -> list[str]:
    """Totals: what was read, what was skipped."""
    r = ds.records
    lines = [f"DMARC aggregate reports: {ds.reports.height:,}, records: {r.height:,}, "
             f"messages: {int(r.get_column('count').sum() or 0):,}"]
    if r.height:
        lo, hi = r.get_column("begin").min(), r.get_column("end").max()
        if lo is not None and hi is not None:
            lines[0] += f", {lo:%Y-%m-%d} to {hi:%Y-%m-%d}"
    if ds.tls_policies.height:
        n = ds.tls_policies.select(pl.struct("reporter", "report_id").n_unique()).item()
        lines.append(f"SMTP TLS reports: {n:,}, policies: {ds.tls_policies.height:,}")
    lines.append(f"duplicates skipped: {ds.duplicates:,}, records skipped: {ds.skipped_records:,}, "
                 f"inputs failed: {ds.failed:,}")
    return lines


def _cell(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "int":
        return f"{value:,}"
    if kind == "pct":
        return f"{value:.1%}"
    if kind == "list":
        items = [str(v) for v in value]
        return ", ".join(items[:3]) + (f" (+{len(items) - 3})" if len(items) > 3 else "")
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def render_text(ds: Dataset, secs: list[Section]) -> str:
    out = headline(ds)
    for s in secs:
        out += ["", s.title + (f" ({s.note})" if s.note else "")]
        if s.rows:
            out += _table(s, lambda v, c: clean(_cell(v, c.kind), 48))
        elif not s.lines:
            out.append("  (none)")
        if s.omitted:
            out.append(f"  … {s.omitted:,} more (--top)")
        out += [f"  recommendation: {clean(line, 300)}" for line in s.lines]
    return "\n".join(out)


def _table(s: Section, fmt) -> list[str]:
    cells = [[fmt(row.get(c.key), c) for c in s.columns] for row in s.rows]
    widths = [max([len(c.header)] + [len(r[i]) for r in cells]) for i, c in enumerate(s.columns)]

    def line(values):
        return "  " + "  ".join(v.rjust(w) if c.numeric else v.ljust(w)
                                for v, w, c in zip(values, widths, s.columns)).rstrip()
    return [line([c.header for c in s.columns])] + [line(r) for r in cells]


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def md_escape(text: str) -> str:
    """Make a hostile string inert in markdown: HTML escaped, markdown punctuation backslashed."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(clean(text, 300), quote=False)).replace("\n", " ")


def render_markdown(ds: Dataset, secs: list[Section]) -> str:
    out = ["# DMARC report", ""] + [f"- {md_escape(line)}" for line in headline(ds)]
    for s in secs:
        out += ["", f"## {s.title}", ""]
        if s.note:
            out += [f"_{md_escape(s.note)}_", ""]
        if s.rows:
            out.append("| " + " | ".join(c.header for c in s.columns) + " |")
            out.append("|" + "|".join("---:" if c.numeric else "---" for c in s.columns) + "|")
            out += ["| " + " | ".join(md_escape(_cell(r.get(c.key), c.kind)) for c in s.columns) + " |" for r in s.rows]
        elif not s.lines:
            out.append("(none)")
        if s.omitted:
            out += ["", f"… {s.omitted:,} more"]
        if s.lines:
            out += [""] + [f"**Recommendation:** {md_escape(line)}" for line in s.lines]
    return "\n".join(out) + "\n"


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>DMARC report</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:bold;font-size:1.1em;padding:.3em 0}
p.note{color:#666;margin:.2em 0}
p.rec{background:#eef7ee;border-left:4px solid #4a4;padding:.3em .6em}
</style></head><body>
<h1>DMARC report</h1>
<ul>{% for line in headline %}<li>{{ line }}</li>{% endfor %}</ul>
{% for s in sections %}<section>
<h2>{{ s.title }}</h2>
{% if s.note %}<p class="note">{{ s.note }}</p>{% endif %}
{% if s.rows %}<table>
<thead><tr>{% for c in s.columns %}<th>{{ c.header }}</th>{% endfor %}</tr></thead>
<tbody>{% for r in s.cells %}<tr>{% for v, c in r %}<td{% if c.numeric %} class="n"{% endif %}>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>{% elif not s.lines %}<p>(none)</p>{% endif %}
{% if s.omitted %}<p class="note">… {{ s.omitted }} more</p>{% endif %}
{% for line in s.lines %}<p class="rec">Recommendation: {{ line }}</p>{% endfor %}
</section>
{% endfor %}</body></html>
"""


@lru_cache(maxsize=1)
def _html_template():
    """Compiled on first use: jinja2 and the compile cost 40 ms that text and JSON output do not need."""
    import jinja2
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(_HTML)


def render_html(ds: Dataset, secs: list[Section]) -> str:
    data = [dict(title=s.title, note=s.note, columns=s.columns, omitted=s.omitted, lines=s.lines, rows=s.rows,
                 cells=[[(clean(_cell(r.get(c.key), c.kind), 1000), c) for c in s.columns] for r in s.rows]) for s in secs]
    for d in data:
        d["lines"] = [clean(line, 1000) for line in d["lines"]]
    return _html_template().render(headline=[clean(line, 1000) for line in headline(ds)], sections=data)


def _jsonable(v):
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    raise TypeError(type(v).__name__)


def summary_dict(ds: Dataset, min_days: int = views.DEFAULT_MIN_DAYS) -> dict:
    """Every view in full (no --top), for scripts."""
    r = ds.records
    return {
        "totals": {"reports": ds.reports.height, "records": r.height, "messages": int(r.get_column("count").sum() or 0),
                   "tls_reports": ds.tls_policies.select(pl.struct("reporter", "report_id").n_unique()).item()
                   if ds.tls_policies.height else 0,
                   "duplicates": ds.duplicates, "skipped_records": ds.skipped_records, "failed_inputs": ds.failed},
        "domains": views.domain_summary(r).to_dicts(),
        "domain_reporters": views.domain_reporter_summary(r).to_dicts(),
        "sources": views.source_summary(r).to_dicts(),
        "networks": views.network_summary(r).to_dicts(),
        "days": views.daily_summary(r).to_dicts(),
        "policies": views.policy_summary(r, min_days).to_dicts(),
        "tls_domains": views.tls_domain_summary(ds.tls_policies).to_dicts(),
        "tls_failures": views.tls_failure_summary(ds.tls_failures).to_dicts(),
    }


def render(ds: Dataset, fmt: str, top: int = 20, min_days: int = views.DEFAULT_MIN_DAYS) -> str:
    if fmt == "json":
        return json.dumps(summary_dict(ds, min_days), indent=2, default=_jsonable, ensure_ascii=False)
    secs = sections(ds, top, min_days)
    return {"text": render_text, "markdown": render_markdown, "html": render_html}[fmt](ds, secs)


EXPORT_SUFFIXES = (".parquet", ".csv", ".ndjson", ".jsonl")


def check_output(out: str) -> None:
    """Fail early (before reading anything) on an output name we cannot write."""
    if Path(out).suffix.lower() not in EXPORT_SUFFIXES:
        raise UsageError(f"{out}: unknown output format (use .parquet, .csv, .ndjson or .jsonl)")


def write_records(records: pl.DataFrame, out: str) -> None:
    """Write the records frame; CSV gets list columns joined with ``;`` (CSV has no lists)."""
    check_output(out)
    suffix = Path(out).suffix.lower()
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".parquet":
            records.write_parquet(out)
        elif suffix == ".csv":
            flat = records.with_columns(
                [pl.col(c).list.eval(pl.element().fill_null("")).list.join(";") for c, t in records.schema.items()
                 if isinstance(t, pl.List)] + [pl.col(pl.Enum).cast(pl.String)])
            flat.write_csv(out)
        else:
            records.write_ndjson(out)
    except OSError as exc:
        raise UsageError(f"{out}: cannot write: {exc.strerror or exc}") from None
