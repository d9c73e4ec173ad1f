"""``logscope dmarc PATH...``: DMARC aggregate and SMTP TLS reports → records and a summary."""

from __future__ import annotations

import sys

from ..errors import UsageError

# Defaults repeated here so that building the CLI does not import the dmarc package (jinja2, defusedxml, ...).
FORMATS = ("text", "markdown", "json", "html")
MIN_DAYS = 14  # logscope.dmarc.views.DEFAULT_MIN_DAYS
MAX_SIZE_MB, MAX_TOTAL_MB, MAX_MEMBERS = 64, 512, 1000  # logscope.dmarc.inputs.Limits


def add_parser(sub, common) -> None:
    p = sub.add_parser(
        "dmarc", help="read DMARC aggregate and SMTP TLS reports; compliance per domain, source and day",
        description="Read DMARC aggregate reports (XML; plain, .gz, .zip, in e-mail messages, mbox files, Maildirs "
                    "or directories) and SMTP TLS reports (RFC 8460 JSON). Print per-domain compliance, sources that "
                    "fail alignment, a per-day view, the policy in force and a recommendation where the data supports "
                    "tightening it. A report delivered twice (same reporter and report id) counts once.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="report file, message, mbox, Maildir or directory; - for stdin")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="write one row per report record to OUT (.parquet, .csv, .ndjson/.jsonl)")
    p.add_argument("--format", choices=FORMATS,
                   help="summary format (default: text; with -o no summary unless asked)")
    p.add_argument("--top", type=int, default=20, metavar="N",
                   help="rows of the source and network tables in text/markdown/html (0: all; default 20)")
    p.add_argument("--min-days", type=int, default=MIN_DAYS, metavar="N",
                   help=f"days of fully compliant reports before tightening is recommended (default {MIN_DAYS})")
    p.add_argument("--max-size", type=int, default=MAX_SIZE_MB, metavar="MB",
                   help=f"largest decompressed report, archive member or message (default {MAX_SIZE_MB})")
    p.add_argument("--max-total", type=int, default=MAX_TOTAL_MB, metavar="MB",
                   help=f"most bytes decompressed from one input path (default {MAX_TOTAL_MB})")
    p.add_argument("--max-members", type=int, default=MAX_MEMBERS, metavar="N",
                   help=f"most members read from one zip archive (default {MAX_MEMBERS})")
    p.add_argument("-j", "--jobs", type=int, default=0, metavar="N",
                   help="processes parsing reports when there are many files (default 0: one per CPU; "
                        "fewer than a few hundred files are always read in one process)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..dmarc import render
    from ..dmarc.collect import read_reports
    from ..dmarc.inputs import MiB, Limits, clean
    from ..dmarc.worker import default_jobs

    for name in ("top", "min_days", "max_size", "max_total", "max_members", "jobs"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must not be negative")
    if args.output:
        render.check_output(args.output)
    limits = Limits(max_bytes=args.max_size * MiB, max_total=max(args.max_total, args.max_size) * MiB,
                    max_members=args.max_members)

    def on_error(origin: str, why: str) -> None:
        print(f"logscope: {clean(origin, 300)}: {clean(why, 300)}", file=sys.stderr)

    def on_note(origin: str, text: str) -> None:
        print(f"logscope: {clean(origin, 300)}: warning: {clean(text, 300)}", file=sys.stderr)

    ds = read_reports(args.paths, on_error, on_note, limits, args.jobs or default_jobs())
    if args.output:
        render.write_records(ds.records, args.output)
        print(f"{ds.records.height:,} records of {ds.reports.height:,} reports written to {args.output}", file=sys.stderr)
    if args.format or not args.output:
        print(render.render(ds, args.format or "text", args.top, args.min_days))
    return 2 if ds.failed else 0
