"""Render a report document as text (terminal), markdown or HTML; JSON is the document itself.

All log-derived text is untrusted: the text renderers strip control characters
(no terminal escape sequences reach the screen) and cut long values; the HTML
template is autoescaped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from .views.insights import report_sections

_CTRL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_CELL = 80


def clean(value, width: int = MAX_CELL) -> str:
    """A value as one safe, bounded line of text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.1f}"
    elif isinstance(value, int) and not isinstance(value, bool):
        text = f"{value:,}"
    elif isinstance(value, list):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    text = _CTRL.sub("?", text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(rows: list[dict], cols: list[tuple[str, str]], markdown: bool = False) -> list[str]:
    if not rows:
        return ["  (none)"] if not markdown else ["_none_"]
    cells = [[clean(r.get(key)) for key, _ in cols] for r in rows]
    if markdown:
        esc = [[c.replace("|", "\\|") for c in row] for row in cells]
        return ["| " + " | ".join(h for _, h in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"] + \
               ["| " + " | ".join(row) + " |" for row in esc]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, (_, h) in enumerate(cols)]
    numeric = [all(re.fullmatch(r"[-\d,.]+%?|-", row[i]) for row in cells) for i in range(len(cols))]

    def fmt(row: list[str]) -> str:
        return "  " + "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)).rstrip()
    return [fmt([h for _, h in cols]), "  " + "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells]


_HOURLY = [("hour", "hour"), ("received", "received"), ("delivered", "delivered"),
           ("deferrals", "deferred"), ("bounced", "bounced"), ("rejected", "rejected")]


def sections(doc: dict, problems_first: bool = False) -> list[tuple[str, list[dict], list[tuple[str, str]]]]:
    """(title, rows, columns) in reading order; shared by the text, markdown and HTML renderers."""
    t, s, r = doc["traffic"], doc["tls"], doc["rejects"]
    tot = t["totals"]
    grand = [{"what": k.replace("_", " "), "value": v} for k, v in tot.items()]
    main = [
        ("Grand totals (postfix)", grand, [("what", "counter"), ("value", "value")]),
        ("Inbound SMTP sessions by service (TLS share)", s.get("inbound_by_service", []),
         [("service", "service"), ("sessions", "sessions"), ("tls", "TLS"), ("tls_pct", "TLS %"), ("sasl", "SASL"),
          ("sasl_without_tls", "SASL w/o TLS")]),
        ("Inbound TLS protocols", s.get("inbound_protocols", []), [("tls_protocol", "protocol"), ("count", "count")]),
        ("Inbound TLS ciphers", s.get("inbound_ciphers", []), [("tls_cipher", "cipher"), ("count", "count")]),
        ("Inbound TLS key exchange", s.get("inbound_key_exchange", []), [("tls_kex", "key exchange"), ("count", "count")]),
        ("Outbound deliveries by TLS trust", s.get("outbound_by_trust", []),
         [("trust", "trust"), ("deliveries", "deliveries"), ("pct", "%")]),
        ("IMAP/POP3 logins by TLS", s.get("logins", []), [("protocol", "protocol"), ("tls", "TLS"), ("logins", "logins")]),
        ("Reject reasons", r.get("reject_classes", []),
         [("reject_class", "class"), ("count", "count"), ("pct", "%"), ("example", "example")]),
        ("Rejects by stage", r.get("reject_by_stage", []), [("stage", "stage"), ("count", "count")]),
        ("DNS blocklists that hit", r.get("rbl_zones", []), [("rbl_zone", "zone"), ("count", "count")]),
        ("Top spammer domains", r.get("spam_domains", []),
         [("sender_domain", "domain"), ("count", "count"), ("pct", "%"), ("client_ips", "IPs"), ("classes", "classes"),
          ("first_seen", "first"), ("last_seen", "last")]),
        ("Top rejected client IPs", r.get("spam_ips", []), [("client_ip", "IP"), ("count", "count"), ("last_seen", "last")]),
        ("Top rejected networks", r.get("spam_networks", []), [("network", "network"), ("count", "count"), ("ips", "IPs")]),
        ("Top rejected HELO names", r.get("spam_helos", []), [("helo", "HELO"), ("count", "count")]),
        ("Authentication failures by client IP", r.get("auth_ips", []),
         [("client_ip", "IP"), ("service", "service"), ("count", "failures"), ("first_seen", "first"), ("last_seen", "last")]),
        ("Authentication failures by user", r.get("auth_users", []),
         [("target_user", "user"), ("service", "service"), ("count", "failures"), ("last_seen", "last")]),
        ("Per-day traffic", t["per_day"], [("day", "day"), ("received", "received"), ("delivered", "delivered"),
                                           ("deferrals", "deferred"), ("bounced", "bounced"), ("rejected", "rejected")]),
        ("Per-hour traffic" + (f" (sums over {t['days']} days)" if t.get("days", 0) > 1 else ""), t["per_hour"], _HOURLY),
        ("Top senders by count", t["top_senders"], [("address", "sender"), ("count", "messages"), ("bytes", "bytes")]),
        ("Top senders by size", t["top_senders_by_size"], [("address", "sender"), ("bytes", "bytes"), ("count", "messages")]),
        ("Top recipients by count", t["top_recipients"], [("address", "recipient"), ("count", "messages"), ("bytes", "bytes")]),
        ("Top sending domains", t["top_sending_domains"], [("domain", "domain"), ("count", "messages"), ("bytes", "bytes")]),
        ("Top recipient domains", t["top_recipient_domains"], [("domain", "domain"), ("count", "messages"), ("bytes", "bytes")]),
        ("Delivery delay (seconds)", [t["delay_seconds"]], [("p50", "p50 ≤"), ("p90", "p90 ≤"), ("p99", "p99 ≤"), ("mean", "mean")]),
        ("Firewall: denies by destination port", r["firewall"].get("denies_by_port", []), [("port", "port"), ("count", "count")]),
        ("Firewall: denies by source network", r["firewall"].get("denies", []),
         [("port", "port"), ("src_net", "source network"), ("count", "count")]),
        ("Firewall: connections to mail ports", r["firewall"].get("mail_conns", []), [("port", "port"), ("count", "count")]),
        ("Firewall: failover events", r["firewall"].get("failover", []), [("asa_id", "id"), ("text", "text"), ("count", "count")]),
    ]
    if t.get("per_hour_average"):  # pflogsumm's "Per-Hour Traffic Daily Average"
        at = next(i for i, sec in enumerate(main) if sec[1] is t["per_hour"]) + 1
        main.insert(at, (f"Per-hour traffic, daily average over {t['days']} days", t["per_hour_average"], _HOURLY))
    if t.get("exim"):
        main.insert(1, ("Grand totals (exim)", [{"what": k.replace("_", " "), "value": v} for k, v in t["exim"].items()],
                        [("what", "counter"), ("value", "value")]))
    problems = [
        ("Findings: credentials without TLS", s.get("findings", []),
         [("finding", "finding"), ("client_ip", "IP"), ("sasl_username", "SASL user"), ("user", "user"), ("count", "count")]),
        ("Deferrals by reason", t["deferral_reasons"], [("dsn", "dsn"), ("reason", "reason"), ("count", "count")]),
        ("Bounces by reason", t["bounce_reasons"], [("relay_host", "relay"), ("reason", "reason"), ("count", "count")]),
        ("Warnings, errors, fatal, panic", t["problems"], [("level", "level"), ("daemon", "daemon"), ("text", "text"), ("count", "count")]),
    ]
    ins_main, ins_problems = report_sections(doc.get("insights"))
    main, problems = main + ins_main, problems + ins_problems
    health = [("Parser health", [dict(source=k, **v) for k, v in doc["input"]["sources"].items()],
               [("source", "source"), ("events", "events"), ("unparsed", "unparsed"), ("unparsed_pct", "%")]),
              ("Not attributed", [{"what": k.replace("_", " "), "value": v} for k, v in doc["unattributed"].items()],
               [("what", "what"), ("value", "count")])]
    return (problems + main if problems_first else main + problems) + health


def _heading(doc: dict) -> str:
    p = doc["period"]
    return f"logscope report: {p['first_event'] or '-'} .. {p['last_event'] or '-'}" + (f", host {p['host']}" if p["host"] else "")


def text(doc: dict, problems_first: bool = False) -> str:
    out = [clean(_heading(doc), 200), f"{doc['input']['lines']:,} lines read, {doc['input']['events_in_period']:,} in the period", ""]
    for title, rows, cols in sections(doc, problems_first):
        out += [title, "-" * len(title)] + _table(rows, cols) + [""]
    bl = doc["rejects"].get("blocklist")
    if bl:
        out += ["Suggested blocklist lines", "-------------------------"]
        for name, lines in bl.items():
            out += [f"# {name}"] + lines + [""]
    return "\n".join(out)


def markdown(doc: dict, problems_first: bool = False) -> str:
    out = [f"# {clean(_heading(doc), 200)}", ""]
    for title, rows, cols in sections(doc, problems_first):
        out += [f"## {title}", ""] + _table(rows, cols, markdown=True) + [""]
    return "\n".join(out)


def html(doc: dict, problems_first: bool = False, template_dir: str | None = None) -> str:
    dirs = ([template_dir] if template_dir else []) + [str(Path(__file__).parent / "templates")]
    env = Environment(loader=FileSystemLoader(dirs), autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["cell"] = clean
    return env.get_template("report.html.j2").render(doc=doc, heading=_heading(doc),
                                                     sections=sections(doc, problems_first))


def as_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, default=str)
