"""Coverage-guided fuzzing of what reads hostile input (atheris, libFuzzer).

    python -m logscope.fuzz engine --seconds 60     # header + every parser file
    python -m logscope.fuzz dmarc --seconds 60      # containers (gzip/zip/mail) + DMARC XML + TLS-RPT JSON
    python -m logscope.fuzz report --seconds 60     # events -> report views -> text and HTML rendering
    python -m logscope.fuzz rules --seconds 60      # the alert rule language (when logscope.alerts exists)

Each target states what must hold (one event per input line, only the
documented errors, no raw control characters or tags in rendered output);
anything else raises and libFuzzer stops with the input that broke it. At the
end one line reports how many inputs were tried. Needs ``pip install atheris``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

TRIED = [0]


def _engine():
    from .engine import parse_lines
    from .header import HeaderOptions
    from .parsers import load
    from .sources.files import lines_frame
    parsers, opts = load(), HeaderOptions(tz="Europe/Berlin")

    def one(data: bytes) -> None:
        frame = lines_frame(data + b"\n")
        events = parse_lines(frame, parsers, opts)
        assert events.height == frame.height == (data + b"\n").count(b"\n"), "one event per line"
        assert events["kind"].null_count() == 0
    return one


def _dmarc():
    from .dmarc.aggregate import ReportError, parse_aggregate
    from .dmarc.inputs import InputError, Limits, _Budget, _expand
    from .dmarc.tlsrpt import parse_tlsrpt
    limits = Limits()

    def one(data: bytes) -> None:
        errors: list[str] = []
        for payload in _expand("fuzz", data, 0, _Budget(limits), lambda o, why: errors.append(why)):
            try:
                (parse_tlsrpt if payload.kind == "json" else parse_aggregate)(payload.data)
            except (ReportError, InputError, ValueError):
                pass  # documented: "not a report", with a reason
    return one


def _report():
    from .classify import load_classes
    from .engine import parse_lines
    from .header import HeaderOptions
    from .parsers import load
    from .render import html, text
    from .report import Report
    parsers, opts, classes = load(), HeaderOptions(tz="UTC", year=2025), load_classes()
    # Structure the input: each fuzzed line goes behind a real header, so rejects, sessions and
    # deliveries with hostile field values reach the views.
    heads = [b"Mar  1 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from ", b"Mar  1 10:00:00 mx postfix/smtpd[1]: ",
             b"Mar  1 10:00:01 mx postfix/smtp[2]: 4F3A21C0D2: to=<", b"Mar  1 10:00:00 mx dovecot: imap-login: Login: user=<"]

    def one(data: bytes) -> None:
        lines = [heads[i % len(heads)] + part for i, part in enumerate(data.split(b"\n")[:50])]
        events = parse_lines([ln.decode("utf-8", "replace") for ln in lines], parsers, opts)
        report = Report(classes)
        report.add(events)
        doc = report.build(top=5, blocklist=True)
        out = text(doc)
        assert not any(c in out for c in "\x1b\x00\r"), "control characters reach the terminal"
        page = html(doc)
        assert "<script" not in page.lower() and "onerror=" not in page.lower().replace("onerror=&", "")
    return one


def _rules():
    try:
        from .alerts import rules as alert_rules  # type: ignore[attr-defined]
    except ImportError:
        raise SystemExit("logscope.fuzz: the rules target needs logscope.alerts") from None
    parse = alert_rules.loads
    error = getattr(alert_rules, "RulesError", ValueError)

    def one(data: bytes) -> None:
        try:
            parse(data.decode("utf-8", "replace"))
        except error:
            pass
    return one


TARGETS = {"engine": _engine, "dmarc": _dmarc, "report": _report, "rules": _rules}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m logscope.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("target", choices=sorted(TARGETS))
    ap.add_argument("--seconds", type=int, default=60, help="stop after this long (default 60)")
    ap.add_argument("--max-len", type=int, default=4096, help="longest input in bytes")
    ap.add_argument("corpus", nargs="*", help="libFuzzer corpus directories (optional)")
    args = ap.parse_args(argv)
    try:
        import atheris
    except ImportError:
        print("logscope.fuzz: atheris is not installed (pip install atheris)", file=sys.stderr)
        return 2
    import polars  # noqa: F401  (instrument logscope only: polars' own Python layer is not the target)
    with atheris.instrument_imports(include=["logscope"]):
        one = TARGETS[args.target]()

    deadline = time.monotonic() + args.seconds

    def test_one(data: bytes) -> None:
        # libFuzzer leaves through C exit(), past Python's atexit: report and stop here instead.
        if time.monotonic() > deadline:
            print(f"logscope.fuzz {args.target}: {TRIED[0]:,} inputs tried in {args.seconds} s, none failed",
                  file=sys.stderr, flush=True)
            os._exit(0)
        TRIED[0] += 1
        one(data)

    atheris.Setup([sys.argv[0], f"-max_total_time={args.seconds + 60}", f"-max_len={args.max_len}",
                   "-print_final_stats=0", *args.corpus], test_one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
