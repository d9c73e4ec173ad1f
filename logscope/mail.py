"""The weekly report as an e-mail: render, build a MIME message, send over SMTP or write an .eml.

The message is multipart/mixed: a multipart/alternative body (plain text + HTML
that mail clients display as is: inline CSS, tables, bars drawn with CSS, no
scripts, no external images) and the JSON report as an attachment. All
log-derived text goes through ``logscope.render.clean`` (one bounded line) and
the HTML template is autoescaped.

Besides the report itself the e-mail shows what ``logscope report`` adds to the
document for it (``commands/report.py``): ``comparison`` (the headline numbers
against the previous period of equal length, from the archive; built by
:func:`compare`), ``dmarc`` (:func:`dmarc_summary`) and ``alerts`` (the alert
rules replayed over the period; :func:`alerts_summary`).
"""

from __future__ import annotations

import json
import os
import re
import smtplib
import socket
import ssl
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .config import EMAIL_SUBJECT, SMTP_PASSWORD_ENV, SMTP_SECURITY
from .errors import UsageError
from .render import clean

DEFAULT_SUBJECT = EMAIL_SUBJECT
MAX_ALERTS = 50  # alerts listed one by one in the e-mail (all of them are counted per rule)
# The headline numbers compared with the previous period: key, label, unit ("n" count, "%" share in percent).
HEADLINE = [("received", "received", "n"), ("delivered", "delivered", "n"), ("rejected", "rejected", "n"),
            ("bounced", "bounced", "n"), ("deferred", "deferred", "n"),
            ("tls_in_pct", "inbound sessions with TLS", "%"), ("tls_out_pct", "outbound deliveries with TLS", "%"),
            ("unparsed_pct", "unparsed lines", "%")]
DIGITS = {"unparsed_pct": 2}  # decimals of a share (default 1): a small unparsed share still shows
SECURITY = SMTP_SECURITY
PASSWORD_ENV = SMTP_PASSWORD_ENV
_TEMPLATES = Path(__file__).parent / "templates"


# ------------------------------------------------------------------ content

def period(doc: dict) -> str:
    """The report's period as 'YYYY-MM-DD .. YYYY-MM-DD' (requested window, else first/last event)."""
    p = doc["period"]
    lo, hi = p.get("since") or p.get("first_event"), p.get("until") or p.get("last_event")
    if lo is None and hi is None:
        return "(no events)"
    return f"{(lo or '-')[:10]} .. {(hi or 'now')[:10]}" + (f" {p['host']}" if p.get("host") else "")


def is_empty(doc: dict) -> bool:
    """True when no event fell into the report's period."""
    return doc["input"]["events_in_period"] == 0


def unparsed_pct(doc: dict) -> float:
    """Share of the period's events no parser recognised, in percent (all sources)."""
    src = doc["input"]["sources"].values()
    events = sum(v["events"] for v in src)
    return round(100 * sum(v["unparsed"] for v in src) / events, 2) if events else 0.0


def headline(doc: dict) -> dict[str, float | int | None]:
    """The numbers of :data:`HEADLINE` (a share is None when there was nothing to share)."""
    tot, s = doc["traffic"]["totals"], doc["tls"]
    out: dict[str, float | int | None] = {k: tot[k] for k in ("received", "delivered", "rejected", "bounced", "deferred")}
    out["tls_in_pct"] = (s.get("inbound") or {}).get("tls_pct")
    out["tls_out_pct"] = (s.get("outbound") or {}).get("tls_pct")
    out["unparsed_pct"] = unparsed_pct(doc) if doc["input"]["events_in_period"] else None
    return out


def compare(doc: dict, previous: dict, since: str, until: str) -> dict:
    """The ``comparison`` entry: headline numbers of ``doc`` against those of the previous period's report.

    ``delta`` is the difference (percentage points for shares), ``delta_pct`` the relative change in
    percent (None when the previous value is 0 or missing). ``has_data`` is False when no event fell
    into the previous period: then there are no deltas, only the note.
    """
    has_data = previous["input"]["events_in_period"] > 0
    cur, prev = headline(doc), headline(previous)
    rows = []
    for key, label, unit in HEADLINE:
        c, p = cur[key], prev[key] if has_data else None
        delta = None if c is None or p is None else (c - p if unit == "n" else round(c - p, DIGITS.get(key, 1)))
        pct = round(100 * (c - p) / p, 1) if delta is not None and p else None
        rows.append({"key": key, "label": label, "unit": unit, "current": c, "previous": p, "delta": delta,
                     "delta_pct": pct})
    note = None if has_data else f"No data for the previous period ({since[:16]} .. {until[:16]}): no change shown."
    return {"since": since, "until": until, "has_data": has_data, "events": previous["input"]["events_in_period"],
            "headline": rows, "note": note}


def no_comparison(reason: str) -> dict:
    """The ``comparison`` entry when the previous period cannot be read."""
    return {"since": None, "until": None, "has_data": False, "events": None, "headline": [], "note": reason}


def value_text(key: str, value, unit: str) -> str:
    """A headline value as shown: '1,234', '73.4%', '0.03%' (unparsed), '-' when there is none."""
    if value is None:
        return "-"
    return clean(value) if unit == "n" else f"{value:.{DIGITS.get(key, 1)}f}%"


def delta_text(row: dict) -> str:
    """'+12 (+3.4%)', '-0.5 pp (-0.6%)', '+3 (new)' when the previous value was 0, '-' when there is none."""
    d = row["delta"]
    if d is None:
        return "-"
    text = f"{d:+,}" if row["unit"] == "n" else f"{d:+.{DIGITS.get(row['key'], 1)}f} pp"
    if row["delta_pct"] is None:
        return text + (" (new)" if d else "")
    return f"{text} ({row['delta_pct']:+.1f}%)"


def dmarc_summary(records, paths: list[str], top: int, failed: int = 0, duplicates: int = 0) -> dict:
    """The ``dmarc`` entry from DMARC records of the period (``logscope.dmarc.views``: same numbers as
    ``logscope dmarc``): totals, compliance per policy domain, the sources that fail alignment."""
    import polars as pl

    from .dmarc import views
    domains = views.domain_summary(records)
    sources = views.source_summary(records).filter(pl.col("category") != "passes_both")
    messages = int(records.get_column("count").sum() or 0) if records.height else 0
    passed = int(domains.get_column("dmarc_pass").sum() or 0) if domains.height else 0

    def pct(x: float) -> float:
        return round(100 * x, 1)
    dom_rows = [{"domain": r["domain"], "messages": r["messages"], "dmarc_pass": r["dmarc_pass"],
                 "dmarc_pass_pct": pct(r["dmarc_pass_share"]), "spf_aligned_pct": pct(r["spf_aligned_pass_share"]),
                 "dkim_aligned_pct": pct(r["dkim_aligned_pass_share"]), "quarantine": r["quarantine"],
                 "reject": r["reject"], "reports": r["reports"], "reporters": r["reporters"], "sources": r["sources"]}
                for r in domains.head(top).iter_rows(named=True)]
    src_rows = [{"source_ip": r["source_ip"], "category": views.CATEGORY_LABELS.get(r["category"], r["category"]),
                 "messages": r["messages"], "failed": r["messages"] - r["dmarc_pass"],
                 "domains": r["domains"][:5], "reporters": r["reporters"][:5]}
                for r in sources.head(top).iter_rows(named=True)]
    n_reports = records.select(pl.struct("reporter", "report_id").n_unique()).item() if records.height else 0
    return {"paths": paths, "reports": n_reports, "messages": messages, "dmarc_pass": passed,
            "dmarc_pass_pct": round(100 * passed / messages, 1) if messages else None,
            "domains": dom_rows, "domains_total": domains.height, "failing_sources": src_rows,
            "failing_sources_total": sources.height, "unreadable_inputs": failed, "duplicates": duplicates}


def alerts_summary(transitions, rules_name: str, still_firing: int, limit: int = MAX_ALERTS) -> dict:
    """The ``alerts`` entry: every alert that fired in the replay (rule, group labels, when it fired and
    resolved, its summary), the first ``limit`` one by one, and the count per rule."""
    fired: list[dict] = []
    open_: dict[tuple, dict] = {}
    per_rule: dict[str, dict] = {}
    for tr in transitions:
        a = tr.alert
        ident = (a.rule, a.key)
        if tr.status == "firing":
            entry = {"rule": a.rule, "severity": a.labels.get("severity", ""),
                     "labels": {k: v for k, v in a.labels.items() if k not in ("alertname", "severity")},
                     "fired_at": _iso_t(tr.at), "resolved_at": None, "value": a.value,
                     "summary": a.annotations.get("summary", "")}
            fired.append(entry)
            open_[ident] = entry
            r = per_rule.setdefault(a.rule, {"rule": a.rule, "severity": entry["severity"], "fired": 0})
            r["fired"] += 1
        elif ident in open_:
            open_.pop(ident)["resolved_at"] = _iso_t(tr.at)
    return {"rules": rules_name, "fired_total": len(fired), "still_firing": still_firing,
            "by_rule": sorted(per_rule.values(), key=lambda r: (-r["fired"], r["rule"])),
            "fired": fired[:limit], "not_listed": max(0, len(fired) - limit)}


def _iso_t(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _minute(iso: str | None) -> str | None:
    """'2025-03-01T00:03:00Z' → '2025-03-01 00:03' (alerts are evaluated once a minute)."""
    return None if iso is None else iso[:16].replace("T", " ")


def _labels(labels: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in labels.items())


def extra_sections(doc: dict) -> dict[str, list[dict]]:
    """Sections of the entries ``report`` adds for the e-mail: comparison, DMARC, alerts (empty when absent)."""
    out: dict[str, list[dict]] = {"comparison": [], "dmarc": [], "alerts": []}
    cmp_ = doc.get("comparison")
    if cmp_ is not None:
        rows = [dict(r, now=value_text(r["key"], r["current"], r["unit"]),
                     before=value_text(r["key"], r["previous"], r["unit"]), change=delta_text(r))
                for r in cmp_["headline"]] if cmp_["has_data"] else []
        period = f"{cmp_['since'][:16]} .. {cmp_['until'][:16]}" if cmp_["since"] else None
        out["comparison"].append(_sec(
            "Change against the previous period", rows,
            [("label", "metric"), ("now", "this period"), ("before", "previous"), ("change", "change")],
            note=cmp_["note"] or f"Previous period {period} ({cmp_['events']:,} events), read from the archive."))
    dm = doc.get("dmarc")
    if dm is not None:
        note = (f"{dm['reports']:,} DMARC aggregate reports, {dm['messages']:,} messages, "
                f"{dm['dmarc_pass_pct'] if dm['dmarc_pass_pct'] is not None else '-'}% DMARC-compliant."
                if dm["reports"] else "No DMARC report covers this period.")
        if dm["unreadable_inputs"]:
            note += f" {dm['unreadable_inputs']:,} inputs were not readable reports."
        out["dmarc"] += [
            _sec("DMARC compliance per domain", dm["domains"],
                 [("domain", "domain"), ("messages", "messages"), ("dmarc_pass_pct", "DMARC pass %"),
                  ("spf_aligned_pct", "SPF aligned %"), ("dkim_aligned_pct", "DKIM aligned %"),
                  ("quarantine", "quarantined"), ("reject", "rejected"), ("reporters", "reporters")],
                 bar="dmarc_pass_pct", pct=True, note=note),
            _sec("DMARC: sources failing alignment", dm["failing_sources"],
                 [("source_ip", "source"), ("category", "result"), ("messages", "messages"), ("failed", "DMARC fail"),
                  ("domains", "domains"), ("reporters", "reporters")], bar="failed",
                 note=(f"{dm['failing_sources_total']:,} sources in all" if dm["failing_sources_total"] > len(dm["failing_sources"])
                       else None))]
    al = doc.get("alerts")
    if al is not None:
        listed = [dict(a, labels_text=_labels(a["labels"]), fired=_minute(a["fired_at"]),
                       resolved=_minute(a["resolved_at"])) for a in al["fired"]]
        note = (f"Alert rules ({al['rules']}) replayed over the period: {al['fired_total']:,} alerts fired, "
                f"{al['still_firing']:,} still firing at its end." if al["fired_total"]
                else f"Alert rules ({al['rules']}) replayed over the period: no alert fired.")
        out["alerts"] += [
            _sec("Alerts fired during the period", al["by_rule"], [("rule", "rule"), ("severity", "severity"),
                                                                   ("fired", "fired")], bar="fired", note=note),
            _sec("Alerts, one by one", listed,
                 [("fired", "fired (UTC)"), ("resolved", "resolved"), ("rule", "rule"), ("labels_text", "labels"),
                  ("summary", "summary")],
                 note=f"The first {len(listed):,} of {al['fired_total']:,}." if al["not_listed"] else None)
            if listed else None]
        out["alerts"] = [x for x in out["alerts"] if x is not None]
    return out


def _sec(title, rows, cols, bar=None, pct=False, note=None) -> dict:
    return {"title": title, "rows": rows or [], "cols": cols, "bar": bar, "pct": pct, "note": note}


def sections(doc: dict) -> list[dict]:
    """The e-mail's tables in reading order: title, rows, columns and the column drawn as a bar.

    A curated subset of the full report (the JSON attachment has everything).
    """
    t, s, r = doc["traffic"], doc["tls"], doc["rejects"]
    fw = r.get("firewall") or {}
    extra = extra_sections(doc)
    sec = _sec

    return [*extra["comparison"],
        sec("Traffic per day", t.get("per_day"), [("day", "day"), ("received", "received"), ("delivered", "delivered"),
                                                  ("deferrals", "deferred"), ("bounced", "bounced"),
                                                  ("rejected", "rejected")], bar="received"),
        sec("Inbound SMTP sessions with TLS", s.get("inbound_by_service"),
            [("service", "service"), ("sessions", "sessions"), ("tls", "TLS"), ("tls_pct", "TLS %"),
             ("sasl_without_tls", "SASL w/o TLS")], bar="tls_pct", pct=True),
        sec("Outbound deliveries by TLS trust", s.get("outbound_by_trust"),
            [("trust", "trust"), ("deliveries", "deliveries"), ("pct", "%")], bar="pct", pct=True),
        sec("IMAP/POP3 logins by TLS", s.get("logins"), [("protocol", "protocol"), ("tls", "TLS"), ("logins", "logins")],
            bar="logins"),
        sec("Findings: credentials without TLS", s.get("findings"),
            [("finding", "finding"), ("service", "service"), ("client_ip", "IP"), ("sasl_username", "SASL user"),
             ("user", "user"), ("count", "count")]),
        sec("Reject reasons", r.get("reject_classes"),
            [("reject_class", "class"), ("count", "count"), ("pct", "%"), ("example", "example")], bar="pct", pct=True),
        sec("Top spammer domains", r.get("spam_domains"),
            [("sender_domain", "domain"), ("count", "rejects"), ("client_ips", "IPs"), ("classes", "classes")],
            bar="count"),
        sec("Top rejected client IPs", r.get("spam_ips"), [("client_ip", "IP"), ("count", "rejects"),
                                                          ("last_seen", "last")], bar="count"),
        sec("Top rejected HELO names", r.get("spam_helos"), [("helo", "HELO"), ("count", "rejects")], bar="count"),
        sec("Authentication attacks by client IP", r.get("auth_ips"),
            [("client_ip", "IP"), ("service", "service"), ("count", "failures"), ("first_seen", "first"),
             ("last_seen", "last")], bar="count"),
        sec("Authentication failures by user", r.get("auth_users"),
            [("target_user", "user"), ("service", "service"), ("count", "failures")], bar="count"),
        sec("Deferrals by reason", t.get("deferral_reasons"), [("dsn", "dsn"), ("reason", "reason"), ("count", "count")]),
        sec("Bounces by reason", t.get("bounce_reasons"),
            [("relay_host", "relay"), ("dsn", "dsn"), ("reason", "reason"), ("count", "count")]),
        sec("Warnings, errors, fatal, panic", t.get("problems"),
            [("level", "level"), ("daemon", "daemon"), ("text", "text"), ("count", "count")]),
        *extra["dmarc"],
        sec("Firewall (ASA): denies by destination port", fw.get("denies_by_port"),
            [("port", "port"), ("count", "count")], bar="count"),
        sec("Firewall (ASA): failover events", fw.get("failover"), [("asa_id", "id"), ("text", "text"), ("count", "count")]),
        *extra["alerts"],
        sec("Parser health", [dict(source=k, **v) for k, v in doc["input"]["sources"].items()],
            [("source", "source"), ("events", "events"), ("unparsed", "unparsed"), ("unparsed_pct", "unparsed %")],
            bar="unparsed_pct", pct=True, note=f"{unparsed_pct(doc):.2f}% of the events in the period unparsed"),
    ]


def kpis(doc: dict) -> list[dict]:
    """The headline numbers: value, label and (with a comparison) the change against the previous period."""
    tot = doc["traffic"]["totals"]
    cur = headline(doc)
    cmp_ = doc.get("comparison") or {}
    changes = {r["key"]: delta_text(r) for r in cmp_.get("headline", [])} if cmp_.get("has_data") else {}
    out = []
    for key, label, unit in HEADLINE:
        value = cur[key]
        if unit == "%" and value is None:
            continue
        if key == "rejected":
            label = f"rejected ({tot['rejected_pct']}%)"
        out.append({"value": value_text(key, value, unit), "label": label, "change": changes.get(key)})
    return out


def _bar_width(row: dict, sec: dict, rows: list[dict]) -> int:
    """Bar length in percent of the cell: the value itself for shares, else relative to the largest."""
    v = row.get(sec["bar"])
    if not isinstance(v, (int, float)):
        return 0
    top = 100 if sec["pct"] else max((x.get(sec["bar"]) or 0 for x in rows), default=0)
    return max(0, min(100, round(100 * v / top))) if top else 0


_NUMBER = re.compile(r"[-+]?[\d,]+(\.\d+)?%?")


def _numeric(value) -> bool:
    """A number, or a number shown as text ('73.4%', '1,234'): right-aligned in tables."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
        isinstance(value, str) and _NUMBER.fullmatch(value) is not None)


def text_table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    """An aligned plain-text table (numbers right-aligned)."""
    if not rows:
        return "  (none)"
    cells = [[clean(r.get(k)) for k, _ in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(cols)]
    num = [all(isinstance(r.get(k), (int, float)) or r.get(k) is None or _NUMBER.fullmatch(str(r.get(k)))
               for r in rows) for k, _ in cols]

    def line(row):
        return "  " + "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, num)).rstrip()
    return "\n".join([line([h for _, h in cols]), "  " + "  ".join("-" * w for w in widths)] + [line(c) for c in cells])


def _env(template_dir: str | None, html: bool) -> Environment:
    dirs = ([template_dir] if template_dir else []) + [str(_TEMPLATES)]
    env = Environment(loader=FileSystemLoader(dirs), autoescape=html, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["cell"] = clean
    env.globals.update(bar_width=_bar_width, text_table=text_table, numeric=_numeric)
    return env


def render_bodies(doc: dict, template_dir: str | None = None) -> tuple[str, str]:
    """(plain text, HTML) of the e-mail; templates in ``template_dir`` override the package's."""
    ctx = {"doc": doc, "period": clean(period(doc), 200), "kpis": kpis(doc), "sections": sections(doc),
           # exim's entries span lines; each line is cleaned (and bounded) on its own
           "blocklist": {name: [ln for entry in lines for ln in str(entry).splitlines()]
                         for name, lines in (doc["rejects"].get("blocklist") or {}).items()},
           "title": clean(f"logscope report {period(doc)}", 200)}
    try:
        txt = _env(template_dir, False).get_template("email.txt.j2").render(**ctx)
        page = _env(template_dir, True).get_template("email.html.j2").render(**ctx)
    except Exception as exc:  # a broken override template is a user error, not a crash
        if template_dir is None:
            raise
        raise UsageError(f"{template_dir}: cannot render the e-mail templates: {exc}") from None
    return txt, page


# ------------------------------------------------------------------ message

def parse_recipients(text: str) -> list[str]:
    """'a@x, b@y' → addresses; a usage error when one is not an address."""
    addrs = [a for _, a in getaddresses([text]) if a]
    bad = [a for a in addrs if "@" not in a or any(c.isspace() or ord(c) < 32 for c in a)]
    if not addrs or bad:
        raise UsageError(f"--email: not an e-mail address: {clean(bad[0] if bad else text, 100)!r}")
    return addrs


def subject(doc: dict, template: str = DEFAULT_SUBJECT) -> str:
    """The subject line from a str.format template with {period}, {host}, {received}, {rejected}."""
    tot = doc["traffic"]["totals"]
    fields = {"period": period(doc), "host": doc["period"].get("host") or "", "received": tot["received"],
              "rejected": tot["rejected"]}
    try:
        text = template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(f"--subject: bad template {template!r} ({exc}); fields: {', '.join(fields)}") from None
    return clean(text, 200)


def build_message(doc: dict, sender: str, recipients: list[str], subject_line: str,
                  template_dir: str | None = None) -> EmailMessage:
    """multipart/mixed: multipart/alternative (text, HTML) + the JSON report attached."""
    txt, page = render_bodies(doc, template_dir)
    msg = EmailMessage()
    msg["Subject"] = subject_line
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(txt)
    msg.add_alternative(page, subtype="html")
    day = (doc["period"].get("until") or doc["period"].get("last_event") or doc["generated"])[:10]
    msg.add_attachment(json.dumps(doc, indent=2, default=str).encode(), maintype="application", subtype="json",
                       filename=f"logscope-report-{day}.json")
    return msg


def default_sender() -> str:
    return f"logscope@{socket.getfqdn() or 'localhost'}"


# ------------------------------------------------------------------ sending

def parse_smtp(text: str, security: str) -> tuple[str, int]:
    """HOST[:PORT] (IPv6 as [addr]:port); the default port follows the security (465 for tls, else 25)."""
    default = 465 if security == "tls" else 25
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        port_no = int(port) if port else default
    except ValueError:
        port_no = -1
    if not host or not 0 < port_no < 65536:
        raise UsageError(f"--smtp: cannot read {text!r} (use HOST or HOST:PORT)")
    return host, port_no


def read_password(path: str | None) -> str | None:
    """The SMTP password from a file (first line) or $LOGSCOPE_SMTP_PASSWORD; never from the command line."""
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").splitlines()[0] if Path(path).stat().st_size else ""
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: cannot read the SMTP password: {getattr(exc, 'strerror', None) or exc}") from None
    return os.environ.get(PASSWORD_ENV)


def _why(exc: Exception) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        err = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"{exc.smtp_code} {err}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "recipients refused: " + ", ".join(f"{a} ({c})" for a, (c, _) in exc.recipients.items())
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def send(msg: EmailMessage, host: str, port: int, security: str = "starttls", user: str | None = None,
         password: str | None = None, cafile: str | None = None, timeout: float = 30.0) -> None:
    """Deliver ``msg`` to its To: addresses; any refusal is a UsageError with the server's answer."""
    if security not in SECURITY:
        raise UsageError(f"--smtp-security must be one of {', '.join(SECURITY)}")
    if user and password is None:
        raise UsageError(f"--smtp-user needs a password: --smtp-password-file or ${PASSWORD_ENV}")
    ctx = ssl.create_default_context(cafile=cafile) if security != "none" else None
    try:
        if security == "tls":
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=ctx)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            smtp.ehlo()
            if security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise UsageError(f"smtp {host}:{port}: server offers no STARTTLS (use --smtp-security none "
                                     "only on a trusted network)")
                smtp.starttls(context=ctx)
                smtp.ehlo()
            if user:
                smtp.login(user, password)
            refused = smtp.send_message(msg)
        if refused:
            raise UsageError(f"smtp {host}:{port}: recipients refused: {', '.join(refused)}")
    except UsageError:
        raise
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise UsageError(f"smtp {host}:{port}: {clean(_why(exc), 300)}") from None


def write_eml(msg: EmailMessage, path: str) -> None:
    try:
        Path(path).write_bytes(msg.as_bytes())
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None
