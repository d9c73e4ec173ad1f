"""``logscope report``: summaries over any period (text, markdown, json, html)."""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime, timedelta, timezone

from .. import config as cfg
from ..errors import ErrorLog, UsageError


def add_parser(sub, common) -> None:
    p = sub.add_parser("report", help="traffic, TLS, reject, spammer, auth and firewall summary of log files",
                       description="Summarise log files (plain, .gz, .bz2, .xz, - for stdin; rotated sets in order): "
                                   "pflogsumm-style traffic totals plus TLS vs plaintext, reject reasons, top spammer "
                                   "domains, authentication failures and firewall events.")
    p.add_argument("files", nargs="*", metavar="FILE")
    p.add_argument("--from-archive", nargs="?", const="", metavar="DIR",
                   help="read events from the archive (`logscope ingest`, default <state dir>/archive) instead of FILEs")
    p.add_argument("--since", help="only events at or after this time (ISO 8601, e.g. 2025-03-01 or 2025-03-01T12:00)")
    p.add_argument("--until", help="only events before this time (ISO 8601)")
    p.add_argument("--last", help="only the last period before now, e.g. 24h, 7d, 2w")
    p.add_argument("--host", help="only events of this syslog host")
    p.add_argument("--format", choices=["text", "markdown", "json", "html"], default="text")
    p.add_argument("--top", type=int, default=10, help="rows in top-N tables (default 10)")
    p.add_argument("--blocklist", action="store_true", help="print postfix/exim blocklist lines for the top spammer domains")
    p.add_argument("--problems-first", action="store_true", help="deferrals, bounces, warnings and findings first")
    p.add_argument("-o", "--output", help="write the report to this file instead of stdout")
    _add_email_arguments(p)
    common(p)
    p.set_defaults(func=run)


def _add_email_arguments(p) -> None:
    """``--email`` and friends: send the report as a multipart e-mail (logscope.mail)."""
    from ..mail import DEFAULT_SUBJECT, PASSWORD_ENV, SECURITY
    g = p.add_argument_group("e-mail", "send the report as an e-mail (text + HTML, JSON attached) instead of printing it")
    g.add_argument("--email", metavar="TO[,TO...]", help="recipients of the report e-mail")
    g.add_argument("--smtp", metavar="HOST[:PORT]", default="localhost",
                   help="SMTP server (default localhost, port 25; 465 with --smtp-security tls)")
    g.add_argument("--smtp-security", choices=SECURITY, default="starttls",
                   help="starttls (default; refuses servers without it), tls (implicit, port 465) or none")
    g.add_argument("--smtp-user", help="authenticate as this user")
    g.add_argument("--smtp-password-file", metavar="FILE",
                   help=f"file whose first line is the SMTP password (else ${PASSWORD_ENV}; never on the command line)")
    # declared so that it cannot be an abbreviation of --smtp-password-file; refused in _email()
    g.add_argument("--smtp-password", help=argparse.SUPPRESS)
    g.add_argument("--smtp-ca-file", metavar="FILE", help="CA certificates to verify the SMTP server with (default: system)")
    g.add_argument("--from", dest="mail_from", metavar="ADDRESS", help="sender address (default logscope@FQDN)")
    g.add_argument("--subject", default=DEFAULT_SUBJECT,
                   help="subject template; fields {period} {host} {received} {rejected} (default %(default)r)")
    g.add_argument("--template-dir", metavar="DIR", help="directory with email.html.j2/email.txt.j2 overriding the built-in ones")
    g.add_argument("--dry-run", metavar="FILE.eml",
                   help="write the message to this .eml file instead of sending it")
    g.add_argument("--send-empty", action="store_true", help="send even when no event fell into the period")


def _email(args, doc: dict) -> int:
    """Mail ``doc`` (or write the .eml with --dry-run); 0, or a UsageError when the server refuses."""
    from .. import mail
    if args.smtp_password is not None:
        raise UsageError("--smtp-password: a password on the command line is visible to every local user; "
                         f"use --smtp-password-file or ${mail.PASSWORD_ENV}")
    recipients = mail.parse_recipients(args.email)
    if mail.is_empty(doc) and not args.send_empty:
        print("logscope: no events in the period, no mail sent (--send-empty sends it anyway)", file=sys.stderr)
        return 0
    sender = args.mail_from or mail.default_sender()
    mail.parse_recipients(sender)
    msg = mail.build_message(doc, sender, recipients, mail.subject(doc, args.subject), args.template_dir)
    if args.dry_run:
        mail.write_eml(msg, args.dry_run)
        print(f"logscope: message written to {args.dry_run}", file=sys.stderr)
        return 0
    host, port = mail.parse_smtp(args.smtp, args.smtp_security)
    password = mail.read_password(args.smtp_password_file) if args.smtp_user else None
    mail.send(msg, host, port, args.smtp_security, args.smtp_user, password, args.smtp_ca_file)
    print(f"logscope: report mailed to {', '.join(recipients)} via {host}:{port}", file=sys.stderr)
    return 0


def parse_time(text: str, tz: str) -> datetime:
    """An ISO 8601 date or time; without a zone it is in ``tz``."""
    from zoneinfo import ZoneInfo
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"cannot read time {text!r} (use ISO 8601, e.g. 2025-03-01 or 2025-03-01T12:00)") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=ZoneInfo(tz))
    return ts.astimezone(timezone.utc)


def parse_span(text: str) -> timedelta:
    m = re.fullmatch(r"(\d+)\s*([mhdw])", text.strip())
    if not m:
        raise UsageError(f"cannot read period {text!r} (use e.g. 90m, 24h, 7d, 2w)")
    n, unit = int(m.group(1)), m.group(2)
    return {"m": timedelta(minutes=n), "h": timedelta(hours=n), "d": timedelta(days=n), "w": timedelta(weeks=n)}[unit]


def _archive_events(directory: str, window):
    """The archived events of the window's period and host, one day at a time."""
    from ..archive import ArchiveError, iter_days
    try:
        yield from iter_days(directory or None, window.since, window.until, window.host)
    except ArchiveError as exc:
        raise UsageError(str(exc)) from None


def run(args) -> int:
    from ..classify import load_classes
    from ..cli import header_options, parsers_from_args
    from ..pipeline import ReadOptions, iter_events
    from ..render import as_json, html, markdown, text
    from ..report import Report, Window

    conf = cfg.load(args.config)
    header = header_options(args, conf)
    parsers = parsers_from_args(args, conf)
    if args.from_archive is None and not args.files:
        raise UsageError("report: give FILE arguments, or --from-archive")
    if args.from_archive is not None and args.files:
        raise UsageError("report: --from-archive reads the archive; do not give FILE arguments as well")
    if args.last and (args.since or args.until):
        raise UsageError("--last cannot be combined with --since/--until")
    if args.top < 1:
        raise UsageError("--top must be at least 1")
    if args.dry_run and not args.email:
        raise UsageError("--dry-run writes the e-mail: give --email TO as well")
    window = Window(host=args.host)
    if args.since:
        window.since = parse_time(args.since, header.tz)
    if args.until:
        window.until = parse_time(args.until, header.tz)
    if args.last:
        window.since = datetime.now(timezone.utc) - parse_span(args.last)
    from pathlib import Path
    classes = load_classes([Path(d) for d in conf.parsers_dirs + args.parsers_dir])
    from ..views.insights import DEFAULT_EXCLUDED_CIPHERS, Options
    opts = Options(exclude_ciphers=tuple(conf.tls_exclude_ciphers) or DEFAULT_EXCLUDED_CIPHERS,
                   rules=tuple(conf.blocklist_rules))
    report = Report(classes, window, insight_options=opts)
    on_error = ErrorLog()

    progress = sys.stderr.isatty()
    started = time.monotonic()
    if args.from_archive is not None:
        events_in = _archive_events(args.from_archive, window)
    else:
        events_in = iter_events(args.files, parsers, ReadOptions(header, keep_file=False), on_error)
    for events in events_in:
        report.add(events)
        if progress:
            print(f"\r{report.lines:,} lines, {report.lines / max(time.monotonic() - started, 1e-9):,.0f}/s",
                  end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    doc = report.build(top=args.top, blocklist=args.blocklist or bool(args.email))
    if args.email:
        status = _email(args, doc)
        return 2 if on_error else status
    render = {"text": text, "markdown": markdown, "html": html}.get(args.format)
    out = as_json(doc) if render is None else render(doc, problems_first=args.problems_first)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(out + "\n")
        except OSError as exc:
            raise UsageError(f"{args.output}: cannot write: {exc.strerror or exc}") from None
    else:
        print(out)
    return 2 if on_error else 0
