"""``logscope alerts``: check a rules file; replay history through it (``alerts test``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import config as cfg
from ..cli import header_options, parsers_from_args
from ..errors import ErrorLog, UsageError

DESCRIPTION = """Alert rules: `check` validates a rules file (TOML); `test` replays log files (and DMARC
reports) through it and prints which alerts would have fired when and when they resolved, like
`promtool test rules`. Exit status of `test`: 1 if any alert fired, 0 if none, 2 on errors.
RULES may be `default` for the bundled rules (see `logscope alerts show-default`)."""


def add_parser(sub, common) -> None:
    p = sub.add_parser("alerts", help="check alert rules; replay logs through them (alerts test)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    asub = p.add_subparsers(dest="alerts_command", metavar="ACTION")
    asub.required = True
    t = asub.add_parser("test", help="replay log files through the rules; exit 1 if any alert fired",
                        description="Replay FILEs (plain, .gz, .bz2, .xz, - for stdin; rotated sets in any order) "
                                    "through RULES, evaluating every --step of log time, and print every alert "
                                    "that fired and when it resolved.")
    t.add_argument("rules", metavar="RULES", help="rules file (TOML) or 'default'")
    t.add_argument("files", nargs="*", metavar="FILE", help="log files")
    t.add_argument("--dmarc", action="append", default=[], metavar="PATH",
                   help="DMARC reports (files, directories, Maildir, mbox) for 'from = \"dmarc\"' rules; repeatable")
    t.add_argument("--step", metavar="DURATION", help="evaluation interval in log time (default: the rules' "
                                                      "[defaults] step, 1m)")
    t.add_argument("--rule", action="append", default=[], metavar="NAME", help="only this rule; repeatable")
    t.add_argument("--format", choices=["text", "json"], default="text")
    common(t)
    t.set_defaults(func=run_test)
    c = asub.add_parser("check", help="validate a rules file", description="Load and compile RULES; print its "
                        "rules, or one error line file:line:column and exit 2.")
    c.add_argument("rules", metavar="RULES", help="rules file (TOML) or 'default'")
    c.set_defaults(func=run_check)
    s = asub.add_parser("show-default", help="print the bundled default rules file (documented)")
    s.set_defaults(func=run_show_default)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _rules_path(spec: str) -> Path:
    from ..alerts.rules import default_rules_path
    return default_rules_path() if spec == "default" else Path(spec)


def _load(spec: str):
    from ..alerts.rules import load
    return load(_rules_path(spec))


def run_check(args) -> int:
    rules = _load(args.rules)
    from ..alerts.expr import format_duration
    for r in rules.rules:
        group = f" by {', '.join(r.group_by)}" if r.group_by else ""
        print(f"{r.name}: {r.severity}, from {r.source}{group}, window {format_duration(r.window)}"
              f"{', for ' + format_duration(r.for_) if r.for_ else ''}: {r.condition_text}")
    kinds = ", ".join(n["type"] for n in rules.notifiers) or "none (alerts go to the log)"
    print(f"{_rules_path(args.rules)}: {len(rules.rules)} rules OK; notifiers: {kinds}")
    return 0


def run_show_default(args) -> int:
    sys.stdout.write(_rules_path("default").read_text(encoding="utf-8"))
    return 0


def run_test(args) -> int:
    from ..alerts.engine import AlertEngine
    from ..alerts.expr import parse_duration
    rules = _load(args.rules)
    if args.rule:
        unknown = sorted(set(args.rule) - {r.name for r in rules.rules})
        if unknown:
            raise UsageError(f"--rule {unknown[0]}: no such rule in {args.rules}")
        rules.rules = [r for r in rules.rules if r.name in args.rule]
    step = None
    if args.step:
        try:
            step = parse_duration(args.step)
        except ValueError as exc:
            raise UsageError(f"--step: {exc}") from None
        if step <= 0:
            raise UsageError("--step must be positive")
    if not args.files and not args.dmarc:
        raise UsageError("nothing to replay: give log files and/or --dmarc reports")
    conf = cfg.load(args.config)
    on_error = ErrorLog()

    def log(level: str, msg: str) -> None:
        print(f"logscope: {level}: {msg}", file=sys.stderr)

    engine = AlertEngine(rules, notifiers=[], replay=True, log=log)
    if args.files:
        header = header_options(args, conf)
        parsers = parsers_from_args(args, conf)
        from ..pipeline import ReadOptions, iter_events
        for events in iter_events(args.files, parsers, ReadOptions(header), on_error):
            engine.add(events)
    if args.dmarc:
        from ..dmarc.collect import read_reports
        ds = read_reports(args.dmarc, lambda origin, text: on_error(f"{origin}: {text}"))
        engine.add_dmarc(ds.records)
    transitions = engine.replay(step)
    firing_at_end = {(tr.alert.rule, tr.alert.key) for tr in transitions}
    still = [a for a in engine.active() if a.state == "firing" and (a.rule, a.key) in firing_at_end]
    if args.format == "json":
        out = [{"at": _iso(tr.at), "status": tr.status, "rule": tr.alert.rule,
                "labels": {k: v for k, v in tr.alert.labels.items() if k != "alertname"},
                "value": tr.alert.value if tr.status == "firing" else None,
                "summary": tr.alert.annotations.get("summary", "") if tr.status == "firing" else ""}
               for tr in transitions]
        print(json.dumps({"transitions": out, "firing_at_end": [
            {"rule": a.rule, "labels": {k: v for k, v in a.labels.items() if k != "alertname"},
             "since": _iso(a.fired_at)} for a in still]}, indent=2))
    else:
        _print_text(transitions, still)
    fired = any(tr.status == "firing" for tr in transitions)
    return 2 if on_error else 1 if fired else 0


def _iso(t: float | None) -> str:
    from ..alerts.engine import to_dt
    return "" if t is None else to_dt(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def _print_text(transitions, still) -> None:
    if not transitions:
        print("no alert fired")
        return
    width = max(len(tr.alert.rule) for tr in transitions)
    for tr in transitions:
        a = tr.alert
        labels = " ".join(f"{k}={v}" for k, v in a.labels.items() if k not in ("alertname", "severity")
                          and k not in _rule_labels(a))
        text = a.annotations.get("summary", "") if tr.status == "firing" else ""
        status = "FIRING" if tr.status == "firing" else "resolved"
        print(f"{_iso(tr.at)}  {status:8}  {a.rule:{width}}  {labels}{'  ' + text if text else ''}".rstrip())
    rules = sorted({tr.alert.rule for tr in transitions if tr.status == "firing"})
    fired = sum(1 for tr in transitions if tr.status == "firing")
    print(f"{fired} alert{'s' if fired != 1 else ''} fired ({', '.join(rules)}); "
          f"{len(still)} still firing at the end")


def _rule_labels(alert) -> set[str]:
    # the static labels of the rule are the same on every line: only the group keys are shown
    return set(alert.labels) - set(alert.labels.keys() & set(_group_keys(alert)))


def _group_keys(alert) -> list[str]:
    keys = [k for k in alert.labels if k not in ("alertname", "severity")]
    return keys[len(keys) - len(alert.key):] if alert.key else []
