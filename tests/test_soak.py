"""The long reliability tests of ``logscope tail``: minutes each, bounded, run in CI.

* kill -9 at 20 random points while 1,000,000 lines are being written (with a
  rotation in the middle): every line counted exactly once over all restarts;
* a 10x burst for 60 s on top of a steady rate: no line lost, lag bounded;
* a soak: a file written at a steady rate for 3 minutes (with rotations and
  scrapes): flat memory, no growth in open file descriptors or threads.

Every test runs the real command and prints its figures (``pytest -s``).
``LOGSCOPE_SOAK_SECONDS`` and ``LOGSCOPE_BURST_SECONDS`` shorten the soak and
the burst while developing; CI runs the defaults (about 6 minutes for the file).
"""

from __future__ import annotations

import bisect
import os
import random
import signal
import statistics
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from logscope.generate import generate

from .test_reliability import expected, fetch, free_port, metric, read_stats, tail_cmd, wait_for

pytestmark = pytest.mark.slow

MILLION = 1_000_000
SOAK_SECONDS = float(os.environ.get("LOGSCOPE_SOAK_SECONDS", 180))
BURST_SECONDS = float(os.environ.get("LOGSCOPE_BURST_SECONDS", 60))
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@pytest.fixture(scope="module")
def million(tmp_path_factory) -> tuple[Path, list[str]]:
    """The generated 1,000,000-line maillog (seed 11): its path and its lines."""
    path = tmp_path_factory.mktemp("million") / "gen.log"
    generate(path, lines=MILLION, seed=11)
    return path, path.read_text().splitlines()


def now_stamp() -> str:
    """The BSD syslog timestamp of now (UTC), as rsyslog writes it."""
    d = datetime.now(timezone.utc)
    return f"{_MONTHS[d.month - 1]} {d.day:2d} {d:%H:%M:%S}"


def status(pid: int) -> dict[str, int]:
    """VmRSS (kB), threads and open file descriptors of a process."""
    out = {"fds": len(os.listdir(f"/proc/{pid}/fd"))}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out


class RateWriter(threading.Thread):
    """Appends ``lines`` to ``path`` at ``phases`` = [(seconds, lines per second)], in 50 ms steps,
    with the timestamp of the moment it is written; ``rotate_every`` seconds a logrotate-style
    rotation (path.1 -> path.2, path -> path.1) and a new file. ``timeline`` records (time, lines written)."""

    def __init__(self, path: Path, lines: list[str], phases: list[tuple[float, float]],
                 rotate_every: float | None = None, rotate_until: float | None = None):
        super().__init__(daemon=True)
        self.path, self.lines, self.phases = path, lines, phases
        self.rotate_every, self.rotate_until = rotate_every, rotate_until
        self.timeline: list[tuple[float, int]] = []
        self.written: list[str] = []
        self.rotations = 0
        self.started_at = 0.0
        self.error: BaseException | None = None

    def due(self, elapsed: float) -> int:
        total, start = 0.0, 0.0
        for seconds, rate in self.phases:
            total += rate * min(max(elapsed - start, 0.0), seconds)
            start += seconds
        return min(int(total), len(self.lines))

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _run(self) -> None:
        duration = sum(s for s, _ in self.phases)
        self.started_at = time.monotonic()
        n = 0
        next_rotation = self.rotate_every
        while True:
            elapsed = time.monotonic() - self.started_at
            if next_rotation is not None and elapsed >= next_rotation and elapsed < (self.rotate_until or 1e9):
                self.rotations += 1
                for k in range(self.rotations - 1, 0, -1):  # as logrotate numbers them: .1 is the newest
                    os.rename(f"{self.path}.{k}", f"{self.path}.{k + 1}")
                os.rename(self.path, f"{self.path}.1")
                self.path.touch()
                next_rotation += self.rotate_every
            target = self.due(elapsed)
            if target > n:
                stamp = now_stamp()
                chunk = [stamp + x[15:] for x in self.lines[n:target]]
                with open(self.path, "a") as fh:
                    fh.write("".join(x + "\n" for x in chunk))
                self.written += chunk
                n = target
                self.timeline.append((time.monotonic(), n))
            if elapsed >= duration or n >= len(self.lines):
                return
            time.sleep(0.05)

    def written_at(self, count: int) -> float:
        """When the ``count``-th line (1-based) was written."""
        i = bisect.bisect_left([c for _, c in self.timeline], count)
        return self.timeline[i][0]

    def written_by(self, t: float) -> int:
        i = bisect.bisect_right([x for x, _ in self.timeline], t)
        return self.timeline[i - 1][1] if i else 0


def start_tail(args: list[str], port: int | None, err: Path) -> subprocess.Popen:
    with open(err, "ab") as fh:
        return subprocess.Popen(tail_cmd(*args, port=port), stderr=fh)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ------------------------------------------------------------------ kill -9, twenty times

def test_kill_9_twenty_times_during_a_million_lines_counts_every_line_once(tmp_path, million, parser_set):
    gen, lines = million
    data = gen.read_bytes()
    rotate_at = len("".join(x + "\n" for x in lines[:MILLION // 2]).encode())  # a line boundary
    log, state, stats, err = tmp_path / "mail.log", tmp_path / "state", tmp_path / "stats.json", tmp_path / "stderr"
    log.touch()
    duration = 50.0  # longer than the 20 restarts take (about 30 s): every kill lands mid-stream
    progress = {"bytes": 0}

    def writer() -> None:
        """Arbitrary chunk boundaries (half lines too); one rename rotation at line 500,000."""
        started, pos = time.monotonic(), 0
        fh = open(log, "ab")
        try:
            while pos < len(data):
                target = min(len(data), int(len(data) * (time.monotonic() - started) / duration))
                if pos < rotate_at <= target:
                    fh.write(data[pos:rotate_at])
                    fh.close()
                    os.rename(log, f"{log}.1")
                    fh = open(log, "ab")
                    pos = rotate_at
                fh.write(data[pos:target])
                fh.flush()
                pos = progress["bytes"] = target
                time.sleep(0.01)
        finally:
            fh.close()

    w = threading.Thread(target=writer, daemon=True)
    rng = random.Random(20)
    args = [str(log), "--state-dir", str(state), "--stats-file", str(stats), "--from-start"]
    kills: list[tuple[float, int, int]] = []  # (seconds up, lines committed, bytes written) at each kill
    w.start()
    for k in range(20):
        before = read_stats(stats).get("lines", 0)
        started = time.monotonic()
        proc = start_tail(args, None, err)
        if k % 2 == 0:  # any time after the start: some land while it restores or parses its first batch
            time.sleep(rng.uniform(0.2, 1.5))
        else:  # after it committed something: lands between commits, wherever tail is in the stream
            wait_for(lambda: read_stats(stats).get("lines", 0) > before or not w.is_alive(), 60, "a commit", proc)
            time.sleep(rng.uniform(0.0, 0.8))
        kills.append((time.monotonic() - started, read_stats(stats).get("lines", 0), progress["bytes"]))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    w.join(120)
    assert not w.is_alive()
    done = subprocess.run(tail_cmd(*args, "--once"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = read_stats(stats)
    sources, digest = expected(lines, parser_set)
    print("\nkill -9 at (seconds after start, lines committed, MB written): "
          + ", ".join(f"({u:.1f}s, {n:,}, {b / 1e6:.0f})" for u, n, b in kills))
    print(f"after 20 kills and a final --once: {got['lines']:,} lines counted of {MILLION:,}, digest "
          f"{'equal' if got['digest'] == digest else 'DIFFERENT'} to a one-shot parse")
    # every kill while tail was still working through the stream: some during a start or a
    # first batch (nothing committed since the kill before), most between commits further on
    assert kills[-1][1] < MILLION
    assert len({n for _, n, _ in kills}) >= 10
    assert got["lines"] == MILLION and got["sources"] == sources and got["digest"] == digest
    assert "Traceback" not in err.read_text()


# ------------------------------------------------------------------ a 10x burst

def _lags(w: RateWriter, samples: list[tuple[float, int]], t0: float, t1: float) -> list[float]:
    """Age of the oldest line written but not yet counted, at every sample in [t0, t1)."""
    out = []
    for t, counted in samples:
        if t0 <= t < t1:
            out.append(max(0.0, t - w.written_at(counted + 1)) if counted < w.written_by(t) else 0.0)
    return out


def test_ten_times_burst_for_a_minute_loses_nothing_and_lag_stays_bounded(tmp_path, million, parser_set):
    steady, burst = 1000.0, 10_000.0
    phases = [(10.0, steady), (BURST_SECONDS, burst), (10.0, steady)]
    total = int(sum(s * r for s, r in phases))
    log, stats, err = tmp_path / "mail.log", tmp_path / "stats.json", tmp_path / "stderr"
    log.touch()
    port = free_port()
    proc = start_tail([str(log), "--state-dir", str(tmp_path / "state"), "--stats-file", str(stats)], port, err)
    samples: list[tuple[float, int]] = []
    try:
        wait_for(lambda: read_stats(stats), 30, "tail to start", proc)
        w = RateWriter(log, million[1][:total], phases)
        w.start()
        while True:
            samples.append((time.monotonic(), read_stats(stats).get("lines", 0)))
            if not w.is_alive() and (samples[-1][1] >= total or samples[-1][0] - w.timeline[-1][0] > 60):
                break
            time.sleep(0.1)
        assert w.error is None, w.error
        drained = samples[-1][0] - w.timeline[-1][0]
        lag_at_end = metric(port, "logscope_input_lag_bytes")
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    start = w.started_at
    windows = {"steady before": (start, start + 10), "burst": (start + 10, start + 10 + BURST_SECONDS),
               "steady after": (start + 10 + BURST_SECONDS, start + 20 + BURST_SECONDS + 30)}
    print(f"\n{total:,} lines: {steady:,.0f}/s for 10 s, {burst:,.0f}/s for {BURST_SECONDS:.0f} s, {steady:,.0f}/s "
          f"for 10 s; all counted {drained:.2f} s after the last write")
    worst = 0.0
    for name, (t0, t1) in windows.items():
        lags = sorted(_lags(w, samples, t0, t1))
        worst = max(worst, lags[-1])
        print(f"  lag {name:13s}: median {statistics.median(lags):.2f} s, "
              f"p95 {lags[int(0.95 * (len(lags) - 1))]:.2f} s, max {lags[-1]:.2f} s ({len(lags)} samples)")
    got = read_stats(stats)
    sources, digest = expected(w.written, parser_set)
    assert got["lines"] == total and got["sources"] == sources and got["digest"] == digest  # no loss, no double
    assert worst < 5.0  # bounded: tail reads about 6x the burst rate while catching up
    assert drained < 5.0
    assert lag_at_end == 0


# ------------------------------------------------------------------ soak

def test_soak_steady_rate_with_rotations_flat_memory_and_descriptors(tmp_path, million, parser_set):
    rate, rotate_wait = 2000.0, 5.0
    rotate_every = min(60.0, SOAK_SECONDS / 3)
    total = int(rate * SOAK_SECONDS)
    warmup = min(30.0, SOAK_SECONDS / 4)
    log, stats, err = tmp_path / "mail.log", tmp_path / "stats.json", tmp_path / "stderr"
    log.touch()
    port = free_port()
    proc = start_tail([str(log), "--state-dir", str(tmp_path / "state"), "--stats-file", str(stats),
                       "--rotate-wait", str(rotate_wait)], port, err)
    rows: list[tuple[float, dict]] = []
    try:
        wait_for(lambda: fetch(f"http://127.0.0.1:{port}/metrics")[0] == 200, 30, "tail to start", proc)
        # rotations stop 20 s before the end: the last rotated file is closed when the final sample is taken
        w = RateWriter(log, million[1][:total], [(SOAK_SECONDS, rate)], rotate_every, SOAK_SECONDS - 20)
        w.start()
        scrape_at = 0.0
        while w.is_alive():
            now = time.monotonic()
            rows.append((now - w.started_at, status(proc.pid)))
            if now - scrape_at >= 5:  # Prometheus-like scrapes belong to a soak
                assert fetch(f"http://127.0.0.1:{port}/metrics")[0] == 200
                scrape_at = now
            assert proc.poll() is None, "logscope tail died"
            time.sleep(1.0)
        assert w.error is None, w.error
        wait_for(lambda: read_stats(stats).get("lines") == total, 30, "every line", proc)
        time.sleep(2.0)
        rows.append((time.monotonic() - w.started_at, status(proc.pid)))
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def at(t0: float, t1: float, key: str) -> list[int]:
        return [r[key] for t, r in rows if t0 <= t < t1]

    # after warm-up, before the first rotation; and the end (after the last rotated file was closed)
    rss_warm = statistics.median(at(warmup, warmup + 15, "VmRSS")) / 1024
    rss_end = statistics.median(at(SOAK_SECONDS - 15, SOAK_SECONDS + 60, "VmRSS")) / 1024
    rss_max = max(at(warmup, SOAK_SECONDS + 60, "VmRSS")) / 1024
    fds_warm, fds_end = max(at(warmup, warmup + 15, "fds")), rows[-1][1]["fds"]
    thr_warm, thr_max = max(at(warmup, warmup + 15, "Threads")), max(at(warmup, SOAK_SECONDS + 60, "Threads"))
    thr_end = rows[-1][1]["Threads"]
    got = read_stats(stats)
    sources, digest = expected(w.written, parser_set)
    print(f"\nsoak: {SOAK_SECONDS:.0f} s at {rate:,.0f} lines/s ({total:,} lines), {w.rotations} rotations, "
          f"a scrape every 5 s")
    print(f"  RSS after {warmup:.0f} s warm-up {rss_warm:.1f} MB, at the end {rss_end:.1f} MB "
          f"({rss_end - rss_warm:+.1f} MB), highest {rss_max:.1f} MB")
    print(f"  open fds {fds_warm} -> {fds_end}, threads {thr_warm} -> {thr_end} (at most {thr_max}); "
          f"counted {got['lines']:,}, digest {'equal' if got['digest'] == digest else 'DIFFERENT'}")
    assert w.rotations >= 1
    assert got["lines"] == total and got["sources"] == sources and got["digest"] == digest
    assert rss_end <= rss_warm * 1.10 + 10, (rss_warm, rss_end)  # flat: within 10 % + 10 MB of warm
    assert fds_end <= fds_warm, (fds_warm, fds_end)
    # threads come and go (a scrape's connection, the second parse worker): bounded, not growing
    assert thr_max <= thr_warm + 3, (thr_warm, thr_max)
    assert "Traceback" not in err.read_text()
