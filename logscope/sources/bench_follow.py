"""Benchmark of ``logscope tail`` on a followed file, measured from the outside.

    python -m logscope.sources.bench_follow [-n 1000000] [--runs 3] [--idle 10] [--rate LINES_PER_S]

Per run: start ``logscope tail FILE --from-start`` (under ``/usr/bin/time -v``)
on an empty file, measure its idle CPU, append the generated maillog
(``logscope generate -n N --seed 42``, cached in the temp dir) as fast as the
disk takes it (or at a steady ``--rate``), and time until the
``--stats-file`` shows every line processed. Then the end-to-end latency of
single lines (written -> counted), the idle CPU after the load, and the peak
RSS when it exits on SIGTERM.
Prints each run and the medians, and where tail's time went (wall seconds
per stage, from its hidden ``--timings-file``: reading, parsing in the parse
threads, waiting for a parse, each sink, the checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..bench import _generated


def _child_pid(pid: int) -> int:
    """The logscope process under /usr/bin/time (or ``pid`` itself)."""
    for _ in range(100):
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return pid
        if kids:
            return int(kids[0])
        time.sleep(0.01)
    return pid


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _lines(stats: Path) -> int:
    try:
        return json.loads(stats.read_text()).get("lines", 0)
    except (OSError, ValueError):
        return -1


def _wait_lines(stats: Path, n: int, timeout: float) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if _lines(stats) >= n:
            return time.monotonic()
        time.sleep(0.002)
    raise TimeoutError(f"tail did not reach {n:,} lines in {timeout:.0f} s (has {_lines(stats):,})")


def _stages(path: Path) -> dict[str, float]:
    """tail's wall seconds per stage so far, and its number of batches (its ``--timings-file``, rewritten
    after every checkpoint)."""
    try:
        data = json.loads(path.read_text())
        return {"batches": data["batches"], **{k: v["seconds"] for k, v in data["stages"].items()}}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _rss_mb(pid: int) -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1]) / 1024


def _idle_cpu(pid: int, seconds: float) -> float:
    """Share of one core used while nothing is written."""
    c0, t0 = _cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (_cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def _append(source: Path, followed: Path, rate: float | None, lines: int) -> None:
    """Append ``source`` to ``followed``: as fast as the disk takes it, or at ``rate`` lines/s (in 20 ms
    steps of whole lines, as a busy mail server writes)."""
    with open(source, "rb") as src, open(followed, "ab") as dst:
        if not rate:
            shutil.copyfileobj(src, dst, 1 << 20)
            return
        step = max(1, int(source.stat().st_size / lines * rate * 0.02))
        t0, carry, k = time.monotonic(), b"", 0
        while block := src.read(step):
            block = carry + block
            cut = block.rfind(b"\n") + 1
            dst.write(block[:cut])
            dst.flush()
            carry = block[cut:]
            k += 1
            time.sleep(max(0.0, t0 + k * 0.02 - time.monotonic()))
        dst.write(carry)


def run_once(source: Path, lines: int, idle: float, batch_bytes: int | None = None, repeat: int = 1,
             rate: float | None = None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="logscope-bench-follow-"))
    try:
        followed, stats, timings = tmp / "mail.log", tmp / "stats.json", tmp / "timings.json"
        followed.touch()
        cmd = [sys.executable, "-m", "logscope", "tail", str(followed), "--from-start", "--quiet",
               "--state-dir", str(tmp / "state"), "--stats-file", str(stats), "--tz", "UTC",
               "--timings-file", str(timings)]
        if batch_bytes:
            cmd += ["--batch-bytes", str(batch_bytes)]
        timer = os.path.exists("/usr/bin/time")
        proc = subprocess.Popen((["/usr/bin/time", "-v"] if timer else []) + cmd,
                                stderr=subprocess.PIPE, text=True)
        pid = _child_pid(proc.pid) if timer else proc.pid
        _wait_lines(stats, 0, 60)
        idle_before = _idle_cpu(pid, idle)
        cpu0 = _cpu_seconds(pid)
        t0 = time.monotonic()
        _append(source, followed, rate, lines)
        t_written = time.monotonic()
        t_done = _wait_lines(stats, lines, 600)
        cpu_load = _cpu_seconds(pid) - cpu0
        stages_load = _stages(timings)
        rss_steps = [_rss_mb(pid)]
        for k in range(2, repeat + 1):  # memory must stay flat however much goes through
            with open(source, "rb") as src, open(followed, "ab") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            _wait_lines(stats, lines * k, 600)
            rss_steps.append(_rss_mb(pid))
        total = lines * repeat
        latencies = []
        with open(followed, "a") as out:
            for i in range(10):
                time.sleep(0.5)
                out.write(f"Jan  1 00:00:00 mx1 postfix/smtpd[1]: connect from probe{i}.example[192.0.2.1]\n")
                out.flush()
                start = time.monotonic()
                latencies.append(_wait_lines(stats, total + i + 1, 30) - start)
        idle_after = _idle_cpu(pid, idle)
        rss_now = _rss_mb(pid)
        os.kill(pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
        peak = int(m[1]) / 1024 if m else float("nan")
        return {"stages": stages_load, "seconds": t_done - t0, "lag_at_end": t_done - t_written,
                "write_seconds": t_written - t0, "lines_per_s": lines / (t_done - t0),
                "cpu_seconds": cpu_load, "latency_median": statistics.median(latencies),
                "latency_max": max(latencies), "idle_cpu_before": idle_before, "idle_cpu_after": idle_after,
                "rss_mb_after": rss_now, "peak_rss_mb": peak, "exit": proc.returncode, "rss_steps": rss_steps}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_exporter_once(source: Path, exporter: str, rate: float | None = None, lines: int = 0) -> dict:
    """Debian's prometheus-postfix-exporter on the same appended file: seconds until its
    ``postfix_qmgr_messages_removed_total`` shows every ``removed`` line (the last kind of line
    each message writes, so all lines before it were read), and its peak RSS."""
    import socket
    import urllib.request
    expected = 0
    with open(source, "rb") as fh:
        for line in fh:
            if b"/qmgr[" in line and line.rstrip().endswith(b": removed"):
                expected += 1
    tmp = Path(tempfile.mkdtemp(prefix="logscope-bench-exporter-"))
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    followed = tmp / "mail.log"
    followed.touch()
    # its stderr (a line per unsupported entry) goes to a file: an undrained pipe would stall it
    timing = tmp / "time.txt"
    proc = subprocess.Popen(["/usr/bin/time", "-v", "-o", str(timing), exporter, f"--postfix.logfile_path={followed}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "exporter.err", "w"))

    def removed() -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                for ln in resp.read().decode().splitlines():
                    if ln.startswith("postfix_qmgr_messages_removed_total "):
                        return float(ln.split()[1])
        except OSError:
            return -1.0
        return 0.0
    try:
        deadline = time.monotonic() + 30
        while removed() < 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # it opens the file and seeks to its end on start
        t0 = time.monotonic()
        _append(source, followed, rate, lines)
        while removed() < expected and time.monotonic() - t0 < 900:
            time.sleep(0.1)
        seconds = time.monotonic() - t0
        got = removed()
    finally:
        os.kill(_child_pid(proc.pid), signal.SIGTERM)  # the exporter; /usr/bin/time then reports and exits
        proc.wait(timeout=60)
        err = timing.read_text() if timing.exists() else ""
        shutil.rmtree(tmp, ignore_errors=True)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    return {"seconds": seconds, "complete": got >= expected, "peak_rss_mb": int(m[1]) / 1024 if m else float("nan")}


def _stage_line(stages: dict[str, float]) -> str:
    """'parse 12.1 s, wait 4.0 s, ...': tail's wall seconds per stage over the load, largest first."""
    stages = dict(stages)
    batches = stages.pop("batches", 0)
    parts = [f"{k} {v:.2f}" for k, v in sorted(stages.items(), key=lambda kv: -kv[1]) if v >= 0.005]
    return (f"{batches:.0f} batches; wall seconds per stage (parse and enrich summed over the parse threads, "
            "wait: the loop waiting for a parse): " + ", ".join(parts))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--lines", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement (before and after)")
    ap.add_argument("--rate", type=float, metavar="LINES_PER_S",
                    help="append at this steady rate instead of all at once (then: does tail keep up, and its "
                         "lag after the last write)")
    ap.add_argument("--batch-bytes", type=int, help="tail's largest batch (default: its own, 6 MB)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="append the file this many times in all (RSS is printed after each): memory must stay flat")
    ap.add_argument("--no-exporter", action="store_true",
                    help="skip the side-by-side run of prometheus-postfix-exporter (Debian package)")
    args = ap.parse_args(argv)
    source = _generated(args.lines)
    results, exporter_results = [], []
    exporter = None if args.no_exporter else shutil.which("prometheus-postfix-exporter")
    for i in range(args.runs):
        r = run_once(source, args.lines, args.idle, args.batch_bytes, args.repeat, args.rate)
        results.append(r)
        print(f"run {i + 1}: {r['lines_per_s']:,.0f} lines/s ({r['seconds']:.2f} s; "
              f"appending took {r['write_seconds']:.2f} s, "
              f"done {r['lag_at_end']:.2f} s after the last write), "
              f"CPU {r['cpu_seconds']:.1f} s, latency median {r['latency_median'] * 1000:.0f} ms "
              f"(max {r['latency_max'] * 1000:.0f} ms), idle CPU {r['idle_cpu_before']:.2%} before / "
              f"{r['idle_cpu_after']:.2%} after, RSS {r['rss_mb_after']:.0f} MB after, peak {r['peak_rss_mb']:.0f} MB, "
              f"exit {r['exit']}", flush=True)
        if r["stages"]:
            print("  " + _stage_line(r["stages"]), flush=True)
        if args.repeat > 1:
            print(f"  RSS after each {args.lines:,} lines: " + ", ".join(f"{m:.0f}" for m in r["rss_steps"]) + " MB")
        if exporter:
            e = run_exporter_once(source, exporter, args.rate, args.lines)
            exporter_results.append(e)
            print(f"  prometheus-postfix-exporter: {args.lines / e['seconds']:,.0f} lines/s ({e['seconds']:.2f} s, "
                  f"{'complete' if e['complete'] else 'INCOMPLETE'}), peak RSS {e['peak_rss_mb']:.0f} MB", flush=True)
    med = {k: statistics.median(r[k] for r in results) for k in results[0] if k not in ("rss_steps", "stages")}
    print(f"median of {args.runs}: {med['lines_per_s']:,.0f} lines/s, {med['seconds']:.2f} s for the first {args.lines:,} lines, "
          f"latency {med['latency_median'] * 1000:.0f} ms, idle CPU {med['idle_cpu_after']:.2%} of a core, "
          f"peak RSS {med['peak_rss_mb']:.0f} MB")
    names = {k for r in results for k in r["stages"]}
    if names:
        print("median " + _stage_line({k: statistics.median(r["stages"].get(k, 0.0) for r in results) for k in names}))
    if exporter_results:
        e = statistics.median(r["seconds"] for r in exporter_results)
        print(f"prometheus-postfix-exporter median: {args.lines / e:,.0f} lines/s ({e:.2f} s); "
              f"logscope is {e / med['seconds']:.2f}x its speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
