"""``logscope tail``: follow live logs and the journal, without losing or double-counting a line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import config as cfg
from ..errors import UsageError
from ..sources.files import CHUNK_BYTES
from ..sources.follow import ROTATE_WAIT, FileInput, Input, StdinInput
from ..sources.journal import JournalInput, find_journalctl
from ..state import StateError, StateStore, default_state_dir, write_atomic

if TYPE_CHECKING:  # the tail loop and the parse engine are imported when tail runs, not when the CLI is built
    from ..tail import Tail

DESCRIPTION = """\
Follow log files (paths, globs, - for stdin) and/or the systemd journal, parse every new line into
events and hand them to the sinks. Positions are checkpointed in the state directory after every
batch, so a restart resumes exactly where the last one stopped, also inside a file rotated while
logscope was down. A first run without checkpoint starts at the end of existing files (--from-start
reads them whole); files that appear later are read from their start."""


def add_parser(sub, common) -> None:
    p = sub.add_parser("tail", help="follow live logs and the journal; checkpointed, rotation-safe",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="FILE",
                   help="file, glob (quote it: '/var/log/asa/*.log') or - for stdin")
    j = p.add_argument_group("journal")
    j.add_argument("--journal", nargs="*", metavar="UNIT",
                   help="read the systemd journal, optionally only these units (e.g. postfix@-.service); "
                        "put files before --journal")
    j.add_argument("--journal-match", action="append", default=[], metavar="FIELD=VALUE",
                   help="journal match (journalctl syntax), repeatable; implies --journal")
    j.add_argument("--journal-file", action="append", default=[], metavar="PATH",
                   help="read this journal file instead of the system journal; repeatable; implies --journal")
    j.add_argument("--journal-dir", metavar="DIR", help="read the journal files in DIR; implies --journal")
    s = p.add_argument_group("state and start")
    s.add_argument("--state-dir", metavar="DIR",
                   help=f"checkpoint directory (default {default_state_dir()}; /var/lib/logscope for a service)")
    s.add_argument("--state-name", default="tail", metavar="NAME",
                   help="state file name in the directory, for several tail processes (default: tail)")
    start = s.add_mutually_exclusive_group()
    start.add_argument("--from-start", dest="start", action="store_const", const="start",
                       help="first run without checkpoint: read existing files and the journal from their start")
    start.add_argument("--from-end", dest="start", action="store_const", const="end",
                       help="first run without checkpoint: only lines written from now on (default)")
    r = p.add_argument_group("running")
    r.add_argument("--once", action="store_true",
                   help="process what is there now, checkpoint, exit (cron, tests)")
    r.add_argument("--poll", type=float, metavar="SECONDS",
                   help="poll every SECONDS instead of inotify (network file systems)")
    r.add_argument("--rotate-wait", type=float, default=ROTATE_WAIT, metavar="SECONDS",
                   help=f"keep reading a rotated-away file this long after its last write (default {ROTATE_WAIT:g})")
    r.add_argument("--quiet", action="store_true",
                   help="service mode: no live output; log lines to stderr with journald priorities")
    r.add_argument("--stats-file", metavar="PATH",
                   help="write event counts per source and kind as JSON after every checkpoint")
    r.add_argument("--batch-bytes", type=int, default=CHUNK_BYTES, help=argparse.SUPPRESS)  # tests, tuning
    # benchmarks: seconds per stage (read, parse, sinks, commit) as JSON after every checkpoint; see Tail.timings
    r.add_argument("--timings-file", metavar="PATH", help=argparse.SUPPRESS)
    m = p.add_argument_group("metrics and live view")
    m.add_argument("--listen", default=None, metavar="ADDR:PORT",
                   help="serve Prometheus /metrics here (default 127.0.0.1:3904; :3904 for all addresses)")
    m.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    m.add_argument("--web-config", metavar="FILE",
                   help="TLS and basic auth for /metrics (Prometheus exporter-toolkit web-config.yml format)")
    m.add_argument("--live", dest="live", action="store_true", default=None,
                   help="show the live view (default: when stderr is a terminal and not --quiet)")
    m.add_argument("--no-live", dest="live", action="store_false")
    h = p.add_argument_group("history")
    h.add_argument("--archive", nargs="?", const="", default=None, metavar="DIR",
                   help="also keep every event in the Parquet archive (default DIR: <state dir>/archive); "
                        "`logscope report --from-archive` reads it")
    d = p.add_argument_group("DMARC and SMTP TLS reports")
    d.add_argument("--dmarc-dir", action="append", default=[], metavar="DIR",
                   help="also watch DIR (a directory or Maildir) for DMARC aggregate and SMTP TLS reports and count "
                        "each new one into the logscope_dmarc_*/logscope_tlsrpt_* metrics; repeatable "
                        "(config: dmarc_dirs, re-read on SIGHUP); with no log file, tail watches only the reports")
    d.add_argument("--dmarc-domain", action="append", default=[], metavar="DOMAIN",
                   help="a policy domain of yours: the policy_domain label of the DMARC metrics is one of these, "
                        "anything else 'other'; repeatable (config: dmarc_domains, re-read on SIGHUP; "
                        "default: the first 20 domains seen)")
    a = p.add_argument_group("alerts")
    a.add_argument("--alerts", metavar="RULES", default=None,
                   help="alert rules file (TOML; default: the bundled default rules, see `logscope alerts show-default`)")
    a.add_argument("--no-alerts", action="store_true", help="do not evaluate alert rules")
    common(p)
    p.set_defaults(func=run, start=None)


def build_inputs(args, log, reports_only: bool = False) -> list[Input]:
    """The inputs named on the command line, in order. ``reports_only``: none is fine (DMARC report
    directories are watched)."""
    inputs: list[Input] = []
    if args.inputs.count("-") > 1:
        raise UsageError("stdin (-) can be given only once")
    for spec in args.inputs:
        inputs.append(StdinInput() if spec == "-" else FileInput(spec, log, args.rotate_wait))
    if wants_journal(args):
        for m in args.journal_match:
            if "=" not in m or not m.split("=", 1)[0]:
                raise UsageError(f"--journal-match {m!r}: use FIELD=VALUE, e.g. _SYSTEMD_UNIT=postfix@-.service")
        exe = find_journalctl()
        if exe is None:
            raise UsageError("--journal needs journalctl (systemd), which is not installed")
        for f in args.journal_file:
            if not Path(f).is_file():
                raise UsageError(f"{f}: no such journal file")
        if args.journal_dir and not Path(args.journal_dir).is_dir():
            raise UsageError(f"{args.journal_dir}: no such directory")
        inputs.append(JournalInput(args.journal or (), args.journal_match, args.journal_file, args.journal_dir,
                                   follow=not args.once, log=log, journalctl=exe))
    if not inputs and not reports_only:
        raise UsageError("nothing to follow: give files, globs, - or --journal (or --dmarc-dir)")
    return inputs


def wants_journal(args) -> bool:
    return args.journal is not None or bool(args.journal_match or args.journal_file or args.journal_dir)


class MetricsFeed:
    """Adapter between the tail loop and the metrics sink: events, plus the self-metrics
    (lines and bytes per input, checkpoint age, lag, rotations, read errors)."""

    name = "metrics"  # no state() of its own: the Prometheus counters live in memory

    def __init__(self, sink):
        self.sink = sink
        self.tail = None

    def add_batch(self, events, batch) -> None:
        self.sink.add(events)
        self.sink.lines_read(batch.input, len(batch.lines) if batch.lines is not None else events.height, batch.nbytes)

    def on_commit(self) -> None:
        self.sink.checkpoint_written()
        if self.tail is not None:
            self.sink.input_status(self.tail.last_status)


def build_sinks(args, classes=None) -> list:
    """The sinks events go to. The stats sink is always there (its counts are part of the state)."""
    from ..tail import StatsSink
    sinks: list = [StatsSink(args.stats_file)]
    if not args.no_metrics:
        from ..sinks.metrics import MetricsSink
        sinks.append(MetricsFeed(MetricsSink(classes=classes)))
    if args.archive is not None:
        from ..archive import ArchiveError, ArchiveSink
        try:
            sinks.append(ArchiveSink(args.archive or None))
        except ArchiveError as exc:
            raise UsageError(str(exc)) from None
    live = args.live if args.live is not None else (sys.stderr.isatty() and not args.quiet and not args.once)
    if live:
        from ..sinks.live import LiveView
        sinks.append(LiveView(classes=classes))
    return sinks


def build_alerts(args, inputs, sinks, classes, log):
    """The alert engine as a sink: rules from --alerts (or the defaults), metrics in the same
    registry, state changes shown in the live view."""
    from ..alerts import default_rules_path, engine_from_file
    engine = engine_from_file(args.alerts or str(default_rules_path()), log=log, classes=classes)
    engine.watch_inputs([inp.spec for inp in inputs])
    if args.once:  # one pass (cron): evaluate after every batch, not every eval_interval
        engine.defaults.eval_interval = 0
    feed = next((s for s in sinks if isinstance(s, MetricsFeed)), None)
    if feed is not None:
        engine.register(feed.sink.registry)
    live = next((s for s in sinks if type(s).__name__ == "LiveView"), None)
    if live is not None:
        tick = engine.tick

        def tick_and_show(now=None):
            changes = tick(now)
            for t in changes:
                labels = t.alert.payload()["labels"]
                summary = t.alert.payload()["annotations"].get("summary") or labels.get("alertname", "")
                live.alert(f"{t.status}: {summary}")
            return changes
        engine.tick = tick_and_show
    return engine


def dmarc_dirs(args, conf) -> list[str]:
    """The DMARC report directories to watch: the flags, else the config's."""
    return list(args.dmarc_dir) or list(getattr(conf, "dmarc_dirs", None) or [])


def dmarc_domains(args, conf) -> list[str]:
    """The DMARC policy domains: the flags, else the config's."""
    return list(args.dmarc_domain) or list(getattr(conf, "dmarc_domains", None) or [])


def absolute_dirs(dirs) -> list[str]:
    """Absolute paths (as the ledger keeps them: a relative --dmarc-dir is relative to the start directory)."""
    return [str(Path(d).absolute()) for d in dirs]


def build_dmarc(args, conf, store: StateStore, log, check: bool = True):
    """The DMARC report watcher (a sink), or None without report directories. ``check``: a missing
    directory is a usage error (at start; after a SIGHUP it is watched for instead)."""
    dirs = dmarc_dirs(args, conf)
    if not dirs:
        return None
    for d in dirs if check else ():
        if not Path(d).is_dir():
            raise UsageError(f"--dmarc-dir {d}: no such directory")
    from ..sinks.dmarc import DmarcSink
    return DmarcSink(absolute_dirs(dirs), store.dir / f"{store.name}.dmarc.json", log,
                     domains=dmarc_domains(args, conf), start=args.start or "end", poll=args.poll)


class DmarcReload:
    """SIGHUP (a ``Tail.reload_hooks`` entry): the config's ``dmarc_dirs`` and ``dmarc_domains``, each
    unless given as flags (flags win over the config). Added directories start being watched, removed
    ones stop (see ``DmarcSink.set_dirs``); the first directory listed starts the report watcher, as a
    restart with that config would. ``reloaded`` holds the config read by this SIGHUP (None: unreadable)."""

    def __init__(self, args, reloaded: dict, tail: Tail, store: StateStore, log, dmarc=None,
                 registry=None, alerts=None):
        self.args = args
        self.reloaded = reloaded
        self.tail = tail
        self.store = store
        self.log = log
        self.dmarc = dmarc
        self.registry = registry  # the metrics sink's, for a watcher started by a SIGHUP
        self.alerts = alerts

    def __call__(self) -> None:
        conf = self.reloaded.get("conf")
        if conf is None:  # the parser reload said why
            if self.dmarc is not None:
                what = " and ".join(w for w, flags in (("report directories", self.args.dmarc_dir),
                                                      ("policy domains", self.args.dmarc_domain)) if not flags)
                self.log("info", f"SIGHUP: DMARC {what} unchanged (the config could not be read)")
            return
        if self.dmarc is None:
            self.dmarc = self.start(conf)
            return
        if not self.args.dmarc_domain:
            self.dmarc.set_domains(conf.dmarc_domains or [])
        if not self.args.dmarc_dir:
            self.dmarc.set_dirs(absolute_dirs(conf.dmarc_dirs or []))

    def start(self, conf):
        """The report watcher of a config that lists directories for the first time, or None."""
        dmarc = build_dmarc(self.args, conf, self.store, self.log, check=False)
        if dmarc is None:
            return None
        attach_dmarc(dmarc, self.tail.sinks, self.registry, self.alerts)
        dmarc.wakeup = self.tail.wakeup
        dmarc.open()
        self.log("info", "SIGHUP: watching DMARC report directories " + ", ".join(dmarc.dirs))
        self.tail.wakeup.set()
        return dmarc


def attach_dmarc(dmarc, sinks: list, registry, alerts) -> None:
    """Put the report watcher among ``sinks`` before the alert engine (its tick sees the new records),
    its families in the metrics registry."""
    at = next((i for i, s in enumerate(sinks) if s is alerts), len(sinks))
    sinks.insert(at, dmarc)
    if registry is not None:
        dmarc.register(registry)
    dmarc.alerts = alerts


class TimingsFile:
    """Writes where the time went (``Tail.timings``) as JSON after every checkpoint, for ``bench_follow``."""

    name = "timings"

    def __init__(self, path: str):
        self.path = Path(path)
        self.tail: Tail | None = None

    def add(self, events) -> None:
        pass

    def on_commit(self) -> None:
        if self.tail is not None:
            data = {"lines": self.tail.lines, "batches": self.tail.batches, "stages": self.tail.timings.to_dict()}
            write_atomic(self.path, json.dumps(data, indent=1).encode(), durable=False)


def run(args) -> int:
    from ..cli import header_options, parsers_from_args
    from ..tail import Tail, TailOptions, make_logger
    conf = cfg.load(args.config)
    header = header_options(args, conf)
    parsers = parsers_from_args(args, conf)
    if args.poll is not None and args.poll <= 0:
        raise UsageError("--poll needs a positive number of seconds")
    log = make_logger(args.quiet)
    inputs = build_inputs(args, log, reports_only=bool(dmarc_dirs(args, conf)))
    store = StateStore(Path(args.state_dir) if args.state_dir else default_state_dir(), args.state_name)
    if args.batch_bytes < 1024:
        raise UsageError("--batch-bytes must be at least 1024")
    options = TailOptions(start=args.start or "end", once=args.once, poll=args.poll, batch_bytes=args.batch_bytes)

    reloaded: dict = {}  # the config as read by this SIGHUP (read once; a broken one is reported once)

    def reload_parsers():
        reloaded["conf"] = None
        reloaded["conf"] = cfg.load(args.config)
        return parsers_from_args(args, reloaded["conf"])

    from ..classify import classes_from_args
    classes = classes_from_args(args, conf)
    sinks = build_sinks(args, classes)
    feed = next((s for s in sinks if isinstance(s, MetricsFeed)), None)
    registry = feed.sink.registry if feed is not None else None
    dmarc = build_dmarc(args, conf, store, log)
    if dmarc is not None:
        attach_dmarc(dmarc, sinks, registry, None)
    alerts = None
    if not args.no_alerts:
        alerts = build_alerts(args, inputs, sinks, classes, log)
        sinks.append(alerts)
        if dmarc is not None:
            dmarc.alerts = alerts
    timings = None
    if args.timings_file:
        timings = TimingsFile(args.timings_file)
        sinks.append(timings)
    # classify rejects once per batch: metrics, live view and alerts all read reject_class
    tail = Tail(inputs, parsers, header, sinks, store, options, log, reload_parsers, enrich=classes.classify)
    if timings is not None:
        timings.tail = tail
    try:
        tail.restore()
    except StateError as exc:
        for inp in inputs:
            inp.close()
        raise UsageError(str(exc)) from None
    if dmarc is not None:  # the state directory is locked now: the ledger next to the state is ours
        dmarc.wakeup = tail.wakeup
        dmarc.open(watch=not args.once)
        if args.once:
            dmarc.scan()
    if not args.once and not (args.dmarc_dir and args.dmarc_domain):  # SIGHUP: what the flags do not fix
        tail.reload_hooks.append(DmarcReload(args, reloaded, tail, store, log, dmarc, registry, alerts))
    server = None
    if feed is not None:
        from ..sinks.http import DEFAULT_LISTEN, MetricsServer
        feed.tail = tail
        try:
            server = MetricsServer(feed.sink.registry, args.listen or DEFAULT_LISTEN, args.web_config).start()
        except UsageError:
            for inp in inputs:
                inp.close()
            raise
        tail.reload_hooks.append(server.reload)
        if not args.once:
            log("info", f"metrics on {server.scheme}://{server.address[0]}:{server.address[1]}/metrics")
    tail.install_signals()
    if not args.once:
        what = ", ".join(i.spec for i in inputs) or "no log (only DMARC reports in " + ", ".join(dmarc.dirs) + ")"
        log("info", f"following {what}; checkpoints in {store.path}")
    try:
        return tail.run()
    except Exception as exc:  # a sink failed: nothing after the last checkpoint is lost, a restart re-reads it
        log("error", f"stopped: {exc!r}; the last batch was not committed and is read again on restart")
        return 1
    finally:
        if server is not None:
            server.stop()
        if args.once and not args.quiet:
            reports = f", {dmarc.files_read:,} report files" if dmarc is not None else ""
            print(f"logscope: {tail.lines:,} lines read{reports}", file=sys.stderr)
