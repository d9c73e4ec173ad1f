"""``logscope bench``: parse speed and peak memory, measured from the outside.

Generates (once, cached in the temp dir) a seeded mixed maillog, then runs
``python -m logscope parse FILE --format json`` several times under
``/usr/bin/time -v`` (or, where that is missing, timing the child process and
reading its peak RSS from ``getrusage``) and prints each run and the medians.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _generated(lines: int) -> Path:
    path = Path(tempfile.gettempdir()) / f"logscope-bench-{lines}.log"
    if not path.exists() or path.stat().st_size == 0:
        from .generate import generate
        print(f"generating {lines:,} lines into {path} ...", file=sys.stderr)
        tmp = path.with_suffix(".tmp")
        generate(tmp, lines=lines, seed=42)
        tmp.replace(path)
    return path


def _run_once(path: Path, cmd: list[str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one run of ``cmd`` (default: ``logscope parse``)."""
    cmd = cmd or [sys.executable, "-m", "logscope", "parse", str(path), "--format", "json", "--tz", "UTC"]
    timer = shutil.which("time") if os.path.exists("/usr/bin/time") else None
    if timer:
        proc = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        h, m, s = wall.groups()
        return int(h or 0) * 3600 + int(m) * 60 + float(s), int(rss.group(1)) / 1024
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024


def run(lines: int, runs: int, file: str | None) -> int:
    path = Path(file) if file else _generated(lines)
    if file:
        with open(path, "rb") as fh:
            lines = sum(1 for _ in fh)
    size_mb = path.stat().st_size / 1e6
    print(f"input: {path} ({lines:,} lines, {size_mb:.0f} MB); {runs} runs of logscope parse")
    walls, rss = [], []
    for i in range(runs):
        w, r = _run_once(path)
        walls.append(w)
        rss.append(r)
        print(f"  run {i + 1}: {w:6.2f} s  {lines / w:12,.0f} lines/s  peak RSS {r:6.0f} MB")
    w, r = statistics.median(walls), statistics.median(rss)
    print(f"median: {w:.2f} s, {lines / w:,.0f} lines/s, {size_mb / w:.0f} MB/s, peak RSS {r:.0f} MB")
    return 0


def run_report(lines: int, runs: int, file: str | None) -> int:
    """``logscope report`` against pflogsumm on the same file, alternating, with medians and the ratio."""
    path = Path(file) if file else _generated(lines)
    pflogsumm = shutil.which("pflogsumm") or ("/usr/sbin/pflogsumm" if os.path.exists("/usr/sbin/pflogsumm") else None)
    ours = [sys.executable, "-m", "logscope", "report", str(path), "--format", "json", "--tz", "UTC"]
    print(f"input: {path}; {runs} alternating runs of logscope report" + (" and pflogsumm" if pflogsumm else
                                                                          " (pflogsumm not installed: apt-get install pflogsumm)"))
    res: dict[str, list[tuple[float, float]]] = {"logscope": [], "pflogsumm": []}
    for i in range(runs):
        res["logscope"].append(_run_once(path, ours))
        if pflogsumm:
            res["pflogsumm"].append(_run_once(path, [pflogsumm, str(path)]))
        print(f"  run {i + 1}: " + "  ".join(f"{k} {v[-1][0]:6.2f} s {v[-1][1]:5.0f} MB" for k, v in res.items() if v))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for k, v in res.items() if v}
    for k, (w, r) in med.items():
        print(f"median {k}: {w:.2f} s, peak RSS {r:.0f} MB")
    if "pflogsumm" in med:
        print(f"speed-up: {med['pflogsumm'][0] / med['logscope'][0]:.1f}x")
    return 0
