"""The weekly report as an e-mail: render, build a MIME message, send over SMTP or write an .eml.

The message is multipart/mixed: a multipart/alternative body (plain text + HTML
that mail clients display as is: inline CSS, tables, bars drawn with CSS, no
scripts, no external images) and the JSON report as an attachment. All
log-derived text goes through ``logscope.render.clean`` (one bounded line) and
the HTML template is autoescaped.
"""

from __future__ import annotations

import json
import os
import smtplib
import socket
import ssl
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .errors import UsageError
from .render import clean

DEFAULT_SUBJECT = "logscope weekly report {period}"
SECURITY = ("starttls", "tls", "none")
PASSWORD_ENV = "LOGSCOPE_SMTP_PASSWORD"
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


def sections(doc: dict) -> list[dict]:
    """The e-mail's tables in reading order: title, rows, columns and the column drawn as a bar.

    A curated subset of the full report (the JSON attachment has everything).
    """
    t, s, r = doc["traffic"], doc["tls"], doc["rejects"]
    fw = r.get("firewall") or {}

    def sec(title, rows, cols, bar=None, pct=False, note=None):
        return {"title": title, "rows": rows or [], "cols": cols, "bar": bar, "pct": pct, "note": note}

    return [
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
        sec("Firewall (ASA): denies by destination port", fw.get("denies_by_port"),
            [("port", "port"), ("count", "count")], bar="count"),
        sec("Firewall (ASA): failover events", fw.get("failover"), [("asa_id", "id"), ("text", "text"), ("count", "count")]),
        sec("Parser health", [dict(source=k, **v) for k, v in doc["input"]["sources"].items()],
            [("source", "source"), ("events", "events"), ("unparsed", "unparsed"), ("unparsed_pct", "unparsed %")],
            bar="unparsed_pct", pct=True),
    ]


def kpis(doc: dict) -> list[tuple[str, str]]:
    """(value, label) pairs for the headline numbers."""
    tot, s = doc["traffic"]["totals"], doc["tls"]
    out = [(clean(tot["received"]), "received"), (clean(tot["delivered"]), "delivered"),
           (clean(tot["rejected"]), f"rejected ({tot['rejected_pct']}%)"), (clean(tot["deferred"]), "deferred"),
           (clean(tot["bounced"]), "bounced")]
    if s.get("inbound"):
        out.append((f"{s['inbound']['tls_pct']}%", "inbound sessions with TLS"))
    if s.get("outbound"):
        out.append((f"{s['outbound']['tls_pct']}%", "outbound deliveries with TLS"))
    return out


def _bar_width(row: dict, sec: dict, rows: list[dict]) -> int:
    """Bar length in percent of the cell: the value itself for shares, else relative to the largest."""
    v = row.get(sec["bar"])
    if not isinstance(v, (int, float)):
        return 0
    top = 100 if sec["pct"] else max((x.get(sec["bar"]) or 0 for x in rows), default=0)
    return max(0, min(100, round(100 * v / top))) if top else 0


def text_table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    """An aligned plain-text table (numbers right-aligned)."""
    if not rows:
        return "  (none)"
    cells = [[clean(r.get(k)) for k, _ in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(cols)]
    num = [all(isinstance(r.get(k), (int, float)) or r.get(k) is None for r in rows) for k, _ in cols]

    def line(row):
        return "  " + "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, num)).rstrip()
    return "\n".join([line([h for _, h in cols]), "  " + "  ".join("-" * w for w in widths)] + [line(c) for c in cells])


def _env(template_dir: str | None, html: bool) -> Environment:
    dirs = ([template_dir] if template_dir else []) + [str(_TEMPLATES)]
    env = Environment(loader=FileSystemLoader(dirs), autoescape=html, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["cell"] = clean
    env.globals.update(bar_width=_bar_width, text_table=text_table)
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
