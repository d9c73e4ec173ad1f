"""Alerting cost, measured: ``python -m logscope.alerts.bench [-n LINES] [--runs N]``.

1. ``logscope alerts test default FILE`` against ``logscope parse FILE`` on the
   same generated log (seeded, cached in the temp dir), alternating, each
   under ``/usr/bin/time -v``: wall time and peak RSS per run and the medians.
   The difference is what replaying the 11 default rules costs.
2. The live engine: every event of the file added batch by batch as ``tail``
   would (each batch at its own time), then all rules evaluated at the end:
   seconds to add, milliseconds per evaluation (``tick``), rows kept.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time


def _timed(cmd: list[str]) -> tuple[float, float]:
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if proc.returncode not in (0, 1):  # alerts test: 1 = alerts fired
        raise SystemExit(proc.stderr[-2000:])
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    h, m, s = wall.groups()
    return int(h or 0) * 3600 + int(m) * 60 + float(s), int(rss.group(1)) / 1024


def replay_vs_parse(path: str, runs: int) -> None:
    base = [sys.executable, "-m", "logscope"]
    cmds = {"parse": base + ["parse", path, "--format", "json", "--tz", "UTC"],
            "alerts test": base + ["alerts", "test", "default", path, "--tz", "UTC", "--format", "json"]}
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
    for i in range(runs):
        for name, cmd in cmds.items():
            w, r = _timed(cmd)
            results[name].append((w, r))
            print(f"  run {i + 1} {name:11}: {w:6.2f} s  peak RSS {r:5.0f} MB")
    for name, vals in results.items():
        print(f"median {name:11}: {statistics.median(v[0] for v in vals):6.2f} s  "
              f"peak RSS {statistics.median(v[1] for v in vals):5.0f} MB")


def live(path: str) -> None:
    from ..header import HeaderOptions
    from ..parsers import load as load_parsers
    from ..pipeline import ReadOptions, iter_events
    from .engine import AlertEngine
    from .rules import default_rules_path, load
    frames = list(iter_events([path], load_parsers(), ReadOptions(HeaderOptions(tz="UTC")), print))
    clock = [0.0]
    engine = AlertEngine(load(default_rules_path()), notifiers=[], clock=lambda: clock[0])
    added = 0.0
    for f in frames:  # each batch arrives when its newest line was written
        clock[0] = f.get_column("ts").max().timestamp()
        t = time.perf_counter()
        engine.add(f)
        added += time.perf_counter() - t
    end = clock[0]
    ticks = []
    for i in range(6):
        t = time.perf_counter()
        engine.evaluate(end + i * 10)
        ticks.append(time.perf_counter() - t)
    n = sum(f.height for f in frames)
    kept = sum(r.buffer().height if r.buffer() is not None else 0 for r in engine.runs)
    print(f"live: {n:,} events in {len(frames)} batches added in {added:.2f} s ({n / added:,.0f} events/s); "
          f"evaluation of all rules: first {ticks[0] * 1000:.0f} ms (prunes), median of the next 5 "
          f"{statistics.median(ticks[1:]) * 1000:.0f} ms; {kept:,} rows kept (the last hour or day per rule)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m logscope.alerts.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--lines", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--file", help="use this log instead of a generated one")
    args = ap.parse_args(argv)
    from ..bench import _generated
    path = args.file or str(_generated(args.lines))
    print(f"input: {path}")
    replay_vs_parse(path, args.runs)
    live(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
