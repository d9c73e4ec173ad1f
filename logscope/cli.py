"""The ``logscope`` command line: subcommands, options, exit codes.

Exit codes: 0 ok, 1 findings where asked, 2 usage or input error. User errors
print one line to stderr and never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import tempfile
import time
from pathlib import Path

from typing import TYPE_CHECKING

from . import __version__, config as cfg
from .errors import ErrorLog, UsageError

if TYPE_CHECKING:  # the engine, polars and pyparsing are imported by the commands that need them
    import polars as pl

    from .header import HeaderOptions
    from .parsers import ParserSet


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help="configuration file (TOML)")
    p.add_argument("--tz", help="time zone of timestamps without one (default: the machine's)")
    p.add_argument("--year", type=int, help="year of BSD syslog timestamps (default: from each file's mtime)")
    p.add_argument("--parsers-dir", action="append", default=[], metavar="DIR",
                   help="directory with extra parser files (*.toml); repeatable")
    p.add_argument("--syslog-name", action="append", default=[], metavar="NAME",
                   help="extra postfix syslog_name (e.g. postfix-out); repeatable")
    p.add_argument("--program", help="program of lines without a syslog header (e.g. journalctl -o cat output)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="logscope", description="Mail-server log analytics: postfix, dovecot, exim, rspamd, Cisco ASA.")
    ap.add_argument("--version", action="version", version=f"logscope {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("parse", help="parse log files into events; summary table or an events file",
                       description="Parse log files (plain, .gz, .bz2, .xz, - for stdin) into typed events. "
                                   "Without -o, print events per source and kind and the unparsed share.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-o", "--output", metavar="OUT", help="write events to OUT (.parquet, .csv, .ndjson/.jsonl)")
    p.add_argument("--format", choices=["table", "json"], default="table", help="summary format (default: table)")
    _common(p)

    p = sub.add_parser("generate", help="write a large, realistic, seeded mixed maillog",
                       description="Write a seeded synthetic mixed maillog (postfix, dovecot, rspamd, Cisco ASA) for demos and benchmarks.")
    p.add_argument("-n", "--lines", type=int, default=100_000, help="number of lines (default: 100000)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--start", help="timestamp of the first line, e.g. 2025-03-01T00:00:00")
    p.add_argument("-o", "--output", default="-", help="output file (.gz compresses); default: stdout")

    p = sub.add_parser("parsers", help="list the loaded parser files, sources and event kinds",
                       description="Load and check the bundled parser files and any --parsers-dir; list sources and kinds.")
    _common(p)

    p = sub.add_parser("bench", help="benchmark parse speed and peak memory on a generated maillog",
                       description="Generate a mixed maillog (cached) and time `logscope parse` on it with /usr/bin/time -v.")
    p.add_argument("-n", "--lines", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--file", help="benchmark this file instead of a generated one")
    p.add_argument("--report", action="store_true", help="benchmark `logscope report` against pflogsumm instead")
    from . import commands
    for mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        importlib.import_module(f"{commands.__name__}.{mod}").add_parser(sub, _common)
    return ap


def header_options(args, conf: cfg.Config) -> HeaderOptions:
    from .header import HeaderOptions
    tz = args.tz or conf.tz or cfg.local_timezone()
    return HeaderOptions(tz=cfg.check_tz(tz), year=args.year or conf.year, default_program=args.program or conf.program)


def parsers_from_args(args, conf: cfg.Config) -> ParserSet:
    from .parsers import ParserFileError, load as load_parsers
    dirs = [Path(d) for d in conf.parsers_dirs + args.parsers_dir]
    try:
        return load_parsers(dirs, tuple(conf.syslog_names + args.syslog_name))
    except ParserFileError as exc:
        raise UsageError(str(exc)) from None


def _writer(out: str):
    """A function that appends one events frame to ``out``, and one that finishes it."""
    import polars as pl
    suffix = Path(out).suffix.lower()
    if suffix not in (".parquet", ".csv", ".ndjson", ".jsonl"):
        raise UsageError(f"{out}: unknown output format (use .parquet, .csv, .ndjson or .jsonl)")
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fh = open(out, "wb")
    except OSError as exc:
        raise UsageError(f"{out}: cannot write: {exc.strerror or exc}") from None
    if suffix == ".parquet":
        # Parquet cannot be appended to: spill chunks to IPC, then stream them into one file.
        fh.close()
        tmp = tempfile.TemporaryDirectory(prefix="logscope-")
        parts: list[str] = []

        def write(df: pl.DataFrame) -> None:
            part = f"{tmp.name}/{len(parts):06d}.arrow"
            df.write_ipc(part)
            parts.append(part)

        def close() -> None:
            if parts:
                pl.scan_ipc(parts).sink_parquet(out)
            tmp.cleanup()
        return write, close
    first = [True]

    def write(df: pl.DataFrame) -> None:
        if suffix == ".csv":
            df.with_columns(pl.col(pl.Enum).cast(pl.String)).write_csv(fh, include_header=first[0])
        else:
            df.write_ndjson(fh)
        first[0] = False
    return write, fh.close


def cmd_parse(args) -> int:
    from .pipeline import ReadOptions, iter_events
    from .summary import Summary, format_table
    conf = cfg.load(args.config)
    header = header_options(args, conf)
    parsers = parsers_from_args(args, conf)
    on_error = ErrorLog()

    write = close = None
    if args.output:
        write, close = _writer(args.output)
    summary = Summary(parsers)
    progress = sys.stderr.isatty()
    started = time.monotonic()
    for events in iter_events(args.files, parsers, ReadOptions(header), on_error):
        summary.add(events)
        if write:
            write(events)
        if progress:
            print(f"\r{summary.lines:,} lines, {summary.lines / max(time.monotonic() - started, 1e-9):,.0f}/s",
                  end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    if close:
        close()
    if args.format == "json":
        print(json.dumps(summary.to_dict(), indent=2))
    elif not args.output:
        print(format_table(summary))
    else:
        print(f"{summary.lines:,} events written to {args.output}", file=sys.stderr)
    return 2 if on_error else 0


def cmd_generate(args) -> int:
    from .generate import main as gen_main
    argv = ["-n", str(args.lines), "--seed", str(args.seed), "-o", args.output]
    if args.start:
        argv += ["--start", args.start]
    return gen_main(argv)


def cmd_parsers(args) -> int:
    conf = cfg.load(args.config)
    parsers = parsers_from_args(args, conf)
    for name, sdef in parsers.sources.items():
        kinds = sorted({e.kind for e in sdef.events})
        print(f"{name}: {len(sdef.events)} patterns, programs {', '.join(sdef.programs) or '-'}")
        print(f"    kinds: {', '.join(kinds)}")
    return 0


def cmd_bench(args) -> int:
    from .bench import run, run_report
    return (run_report if args.report else run)(args.lines, args.runs, args.file)


COMMANDS = {"parse": cmd_parse, "generate": cmd_generate, "parsers": cmd_parsers, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        func = getattr(args, "func", None) or COMMANDS[args.command]
        return func(args)
    except (UsageError, cfg.ConfigError) as exc:
        print(f"logscope: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
