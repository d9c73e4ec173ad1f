"""``logscope report``: summaries over any period (text, markdown, json, html)."""

from __future__ import annotations

import argparse
import os
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
    """``--email`` and friends: send the report as a multipart e-mail (logscope.mail).

    Defaults are None so that ``_mail_settings`` can tell a flag from the config's ``[email]`` value.
    """
    g = p.add_argument_group("e-mail", "send the report as an e-mail (text + HTML, JSON attached) instead of printing "
                                       "it; every option can be set in the config file's [email] table")
    g.add_argument("--email", nargs="?", const="", metavar="TO[,TO...]",
                   help="recipients of the report e-mail (without addresses: email.to of the config)")
    g.add_argument("--smtp", metavar="HOST[:PORT]",
                   help="SMTP server (default localhost, port 25; 465 with --smtp-security tls)")
    g.add_argument("--smtp-security", choices=cfg.SMTP_SECURITY,
                   help="starttls (default; refuses servers without it), tls (implicit, port 465) or none")
    g.add_argument("--smtp-user", help="authenticate as this user")
    g.add_argument("--smtp-password-file", metavar="FILE",
                   help=f"file whose first line is the SMTP password (else ${cfg.SMTP_PASSWORD_ENV}; never on the command line)")
    # declared so that it cannot be an abbreviation of --smtp-password-file; refused in _email()
    g.add_argument("--smtp-password", help=argparse.SUPPRESS)
    g.add_argument("--smtp-ca-file", metavar="FILE", help="CA certificates to verify the SMTP server with (default: system)")
    g.add_argument("--from", dest="mail_from", metavar="ADDRESS", help="sender address (default logscope@FQDN)")
    g.add_argument("--subject", help=f"subject template; fields {{period}} {{host}} {{received}} {{rejected}} "
                                     f"(default {cfg.EMAIL_SUBJECT!r})")
    g.add_argument("--template-dir", metavar="DIR", help="directory with email.html.j2/email.txt.j2 overriding the built-in ones")
    g.add_argument("--dry-run", metavar="FILE.eml",
                   help="write the message to this .eml file instead of sending it")
    g.add_argument("--send-empty", action="store_true", default=None,
                   help="send even when no event fell into the period")
    x = p.add_argument_group("e-mail content", "added to the e-mail (and to --format json when asked for)")
    x.add_argument("--dmarc", nargs="+", action="extend", metavar="PATH",
                   help="DMARC aggregate reports (files, directories, Maildir, mbox) for the DMARC summary; those whose "
                        "period overlaps the report's (default with --email: dmarc_paths of the config)")
    x.add_argument("--alerts", metavar="RULES", help="alert rules replayed over the period (TOML, or 'default': the "
                                                    "bundled rules, which --email uses unless --no-alerts)")
    x.add_argument("--no-alerts", action="store_true", help="do not replay the alert rules for the e-mail")
    x.add_argument("--compare", action="store_true",
                   help="with --from-archive: also report the previous period of equal length and the change "
                        "(always done for --email)")


def _mail_settings(args, conf) -> argparse.Namespace:
    """The e-mail options: each flag, else its config key, else the default."""
    from .. import mail
    e = conf.email
    if args.email:
        recipients = mail.parse_recipients(args.email)
    elif e.to:
        recipients = mail.parse_recipients(", ".join(e.to))
    else:
        raise UsageError("--email: no recipients (give --email TO[,TO...] or set to = [...] in the config's [email])")
    security = args.smtp_security or e.smtp_security or "starttls"
    if args.smtp:
        host, port = mail.parse_smtp(args.smtp, security)
    else:
        host, port = mail.parse_smtp(e.smtp_server or "localhost", security)
        port = e.smtp_port or port
    return argparse.Namespace(
        recipients=recipients, sender=args.mail_from or e.sender or mail.default_sender(), host=host, port=port,
        security=security, user=args.smtp_user or e.smtp_user, ca_file=args.smtp_ca_file or e.smtp_ca_file,
        password_file=args.smtp_password_file or (None if os.environ.get(mail.PASSWORD_ENV) else e.smtp_password_file),
        subject=args.subject or e.subject or mail.DEFAULT_SUBJECT, template_dir=args.template_dir or e.template_dir,
        send_empty=bool(args.send_empty or e.send_empty))


def _email(args, conf, doc: dict) -> int:
    """Mail ``doc`` (or write the .eml with --dry-run); 0, or a UsageError when the server refuses."""
    from .. import mail
    if args.smtp_password is not None:
        raise UsageError("--smtp-password: a password on the command line is visible to every local user; "
                         f"use --smtp-password-file or ${mail.PASSWORD_ENV}")
    m = _mail_settings(args, conf)
    if mail.is_empty(doc) and not m.send_empty:
        print("logscope: no events in the period, no mail sent (--send-empty sends it anyway)", file=sys.stderr)
        return 0
    mail.parse_recipients(m.sender)
    msg = mail.build_message(doc, m.sender, m.recipients, mail.subject(doc, m.subject), m.template_dir)
    if args.dry_run:
        mail.write_eml(msg, args.dry_run)
        print(f"logscope: message written to {args.dry_run}", file=sys.stderr)
        return 0
    password = mail.read_password(m.password_file) if m.user else None
    mail.send(msg, m.host, m.port, m.security, m.user, password, m.ca_file)
    print(f"logscope: report mailed to {', '.join(m.recipients)} via {m.host}:{m.port}", file=sys.stderr)
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
    """The archived events of the window's period and host, in time order, piece by piece (bounded memory)."""
    from ..archive import ArchiveError, iter_pieces
    try:
        yield from iter_pieces(directory or None, window.since, window.until, window.host)
    except ArchiveError as exc:
        raise UsageError(str(exc)) from None


def previous_window(window, now: datetime):
    """The period of equal length just before ``window`` (its end defaults to ``now``); None without a start."""
    from ..report import Window
    if window.since is None:
        return None
    length = (window.until or now) - window.since
    return Window(since=window.since - length, until=window.since, host=window.host)


def _comparison(args, window, now: datetime, doc: dict, new_report) -> dict:
    """``comparison``: the headline numbers against the previous period read from the archive."""
    from .. import mail
    if args.from_archive is None:
        return mail.no_comparison("The change against the previous period needs the archive "
                                  "(logscope ingest, then report --from-archive).")
    prev = previous_window(window, now)
    if prev is None:
        return mail.no_comparison("No previous period: this report has no start (use --last or --since).")
    report = new_report(prev)
    for events in _archive_events(args.from_archive, prev):
        report.add(events)
    iso = "%Y-%m-%dT%H:%M:%SZ"
    return mail.compare(doc, report.build(top=1), prev.since.strftime(iso), prev.until.strftime(iso))


def _read_dmarc(paths: list[str], window, on_error):
    """DMARC records of the reports under ``paths`` whose period overlaps the window; (records, dataset)."""
    import polars as pl

    from ..dmarc.collect import read_reports
    from ..render import clean
    ds = read_reports(paths, lambda origin, text: on_error(f"{clean(origin, 300)}: {clean(text, 300)}"))
    records = ds.records
    if window.since is not None:
        records = records.filter(pl.col("end") > window.since)
    if window.until is not None:
        records = records.filter(pl.col("begin") < window.until)
    return records, ds


ALL_INPUTS = "(all logs)"


class _AlertReplay:
    """The alert rules replayed over the report's events (``logscope.alerts``, as ``logscope alerts test``)."""

    def __init__(self, spec: str | None, classes):
        from ..alerts.engine import AlertEngine
        from ..alerts.rules import default_rules_path, load
        self.name = spec if spec and spec != "default" else "default rules"
        self.engine = AlertEngine(load(default_rules_path() if spec in (None, "default") else spec), notifiers=[],
                                  replay=True, log=self._log, classes=classes)

    def add(self, events) -> None:
        import polars as pl
        # all inputs as one: "logging stopped" means no line at all (an archive knows rotated files by
        # their names of the day, which would each seem to stop)
        self.engine.add(events.with_columns(pl.lit(ALL_INPUTS, events.schema["file"]).alias("file")))

    @staticmethod
    def _log(level: str, msg: str) -> None:
        print(f"logscope: alerts: {level}: {msg}", file=sys.stderr)

    def summary(self) -> dict:
        from .. import mail
        transitions = self.engine.replay()
        ended = {(tr.alert.rule, tr.alert.key) for tr in transitions}
        still = [a for a in self.engine.active() if a.state == "firing" and (a.rule, a.key) in ended]
        return mail.alerts_summary(transitions, self.name, len(still))


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
    mailing = args.email is not None
    if args.dry_run and not mailing:
        raise UsageError("--dry-run writes the e-mail: give --email as well")
    if args.compare and args.from_archive is None:
        raise UsageError("--compare reads the previous period from the archive: give --from-archive as well")
    if args.alerts and args.no_alerts:
        raise UsageError("--alerts and --no-alerts contradict each other")
    if mailing:
        _mail_settings(args, conf)  # a bad address or server is refused before the work
    now = datetime.now(timezone.utc)
    window = Window(host=args.host)
    if args.since:
        window.since = parse_time(args.since, header.tz)
    if args.until:
        window.until = parse_time(args.until, header.tz)
    if args.last:
        window.since = now - parse_span(args.last)
    from pathlib import Path
    classes = load_classes([Path(d) for d in conf.parsers_dirs + args.parsers_dir])
    from ..views.insights import DEFAULT_EXCLUDED_CIPHERS, Options
    opts = Options(exclude_ciphers=tuple(conf.tls_exclude_ciphers) or DEFAULT_EXCLUDED_CIPHERS,
                   rules=tuple(conf.blocklist_rules))

    def new_report(w):
        return Report(classes, w, insight_options=opts)
    report = new_report(window)
    on_error = ErrorLog()
    alerts = _AlertReplay(args.alerts, classes) if (mailing or args.alerts) and not args.no_alerts else None
    dmarc_paths = args.dmarc if args.dmarc is not None else (conf.dmarc_paths if mailing else [])

    progress = sys.stderr.isatty()
    started = time.monotonic()
    if args.from_archive is not None:
        events_in = _archive_events(args.from_archive, window)
    else:
        events_in = iter_events(args.files, parsers, ReadOptions(header, keep_file=False), on_error)
    for events in events_in:
        report.add(events)
        if alerts:
            alerts.add(window.apply(events))
        if progress:
            print(f"\r{report.lines:,} lines, {report.lines / max(time.monotonic() - started, 1e-9):,.0f}/s",
                  end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    if report.lines and not report.counted and report.input_first is not None:
        # --last counts back from now; old or replayed logs fall outside it
        print(f"logscope: none of the {report.lines:,} lines read falls into the period; the input runs from "
              f"{report.input_first:%Y-%m-%d %H:%M} to {report.input_last:%Y-%m-%d %H:%M} UTC (use --since/--until)",
              file=sys.stderr)
    doc = report.build(top=args.top, blocklist=args.blocklist or mailing)
    if mailing or args.compare:
        doc["comparison"] = _comparison(args, window, now, doc, new_report)
    if dmarc_paths:
        from ..mail import dmarc_summary
        records, ds = _read_dmarc(dmarc_paths, window, on_error)
        doc["dmarc"] = dmarc_summary(records, dmarc_paths, args.top, ds.failed, ds.duplicates)
        if alerts:
            alerts.engine.add_dmarc(records)
    if alerts:
        doc["alerts"] = alerts.summary()
    if mailing:
        status = _email(args, conf, doc)
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
