"""Cardinality attack on a real ``logscope tail``: series and memory, benign vs hostile.

    python -m logscope.sources.bench_hostile              # 1,000,000 lines of each
    python -m logscope.sources.bench_hostile -n 200000 --keep /tmp/hostile

Writes two logs of the same shape (:func:`attack_lines`): *benign*, where
every free field has one realistic value, and *hostile*, where every sender
domain, client IP, HELO name, user, reply text, cipher, protocol, SMTP stage,
SASL method, master.cf service, rspamd action, ASA message id, program and
host name is new on every line, and 5,000 attacker addresses each guess
passwords often enough to fire an alert. Each log is read by its own
``logscope tail --from-start`` (default sinks: metrics, the bundled alert
rules) under ``/usr/bin/time -v``; ``/metrics`` is scraped after every fifth
of the lines. Printed per input: seconds, exported series after each fifth,
series per family that differ, peak RSS.

The timestamps end at the time of writing, so the alert windows hold them as
they would hold a live attack.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from random import Random
from typing import Iterator

from .bench_follow import _child_pid

from prometheus_client.parser import text_string_to_metric_families

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
TEMPLATES = 16
LINES_PER_SECOND = 1000  # of log time: 1,000,000 lines span about 17 minutes
ATTACKERS = 5000  # addresses that each fail more than 10 logins in 10 minutes (auth_password_guessing)
# the reject-class family may differ: random replies are class "other", the benign one is not
REJECTS_FAMILY = "logscope_rejects"


def _b36(n: int) -> str:
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + out
        if not n:
            return out


def _ip(n: int) -> str:
    # an odd multiplier permutes 32-bit numbers: distinct n, distinct address
    v = (n * 2654435761 + 0x5BD1E995) & 0xFFFFFFFF
    return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"


def attack_lines(n: int, hostile: bool, seed: int = 1, end: float | None = None) -> Iterator[str]:
    """``n`` syslog lines over 16 templates that reach every labelled metric family.

    ``hostile``: every free field is unique (the line number is part of it);
    otherwise one realistic value per field. Timestamps (BSD, UTC) advance
    ``LINES_PER_SECOND`` lines per second and end at ``end`` (default now).
    """
    r = Random(seed)
    end = time.time() if end is None else end
    t0 = int(end) - n // LINES_PER_SECOND
    stamp_at, stamp = -1, ""
    for i in range(n):
        sec = t0 + i // LINES_PER_SECOND
        if sec != stamp_at:
            d = datetime.fromtimestamp(sec, timezone.utc)
            stamp_at, stamp = sec, f"{_MONTHS[d.month - 1]} {d.day:2d} {d:%H:%M:%S}"
        k = i % TEMPLATES
        qid = f"{i:011X}"
        if hostile:
            u = _b36(i) + _b36(r.getrandbits(30))  # unique per line
            dom = f"{u}.{_b36(r.getrandbits(15))}"
            ip = _ip(i) if i % 5 else f"2001:db8:{i >> 16:x}:{i & 0xffff:x}::{r.getrandbits(16):x}"
            helo = f"h{u}.{dom}"
            user = f"u{u}"
            text = f"{u} {_b36(r.getrandbits(40))} no <script>{_b36(i)}</script> rejected"
            cipher, proto, bits = "X" + u.upper(), "TLSv" + u[:4], str(1000 + i)
            stage, sasl, mech = "Z" + re.sub(r"[0-9]", "Q", u).upper(), "M" + u.upper(), "N" + u.upper()
            svc, action, prog, host = "s" + u, "a" + re.sub(r"[0-9]", "q", u), f"zq{i}{r.getrandbits(20)}", "h" + u
            asa, code, zone = str(900000 + i % 99999), str(600 + i % 399), f"{u}.zone.example"
            attacker = _ip(10_000_000 + (i // TEMPLATES) % ATTACKERS)
        else:
            dom, helo, user = "mail.example.net", "mail.example.net", "alice"
            ip = "192.0.2.1" if i % 5 else "2001:db8::1"
            text = "Recipient address rejected: User unknown in local recipient table"
            cipher, proto, bits = "TLS_AES_256_GCM_SHA384", "TLSv1.3", "256"
            stage, sasl, mech = "RCPT", "PLAIN", "PLAIN"
            svc, action, prog, host = "submission", "no action", "smtpd", "mx1"
            asa, code, zone = "106023", "550", "zen.spamhaus.org"
            attacker = "203.0.113.7"
        head = f"{stamp} mx1"
        if k == 0:
            yield f"{head} postfix/smtpd[1]: connect from {dom}[{ip}]"
        elif k == 1:
            yield (f"{head} postfix/smtpd[1]: Anonymous TLS connection established from {dom}[{ip}]: "
                   f"{proto} with cipher {cipher} ({bits}/{bits} bits)")
        elif k == 2:
            yield (f"{head} postfix/smtpd[1]: NOQUEUE: reject: RCPT from {dom}[{ip}]: {code} 5.1.1 <{user}@{dom}>: "
                   f"{text}; from=<{user}@{dom}> to=<{user}@example.org> proto=ESMTP helo=<{helo}>")
        elif k == 3:
            yield f"{head} postfix/smtpd[1]: lost connection after {stage} from {dom}[{ip}]"
        elif k == 4:
            yield f"{head} postfix/smtpd[1]: {qid}: client={dom}[{ip}], sasl_method={sasl}, sasl_username={user}"
        elif k == 5:
            yield f"{head} postfix/{svc}/smtpd[1]: disconnect from {dom}[{ip}] ehlo=1 starttls=1 quit=1 commands=3"
        elif k == 6:
            yield (f"{head} postfix/smtp[2]: {qid}: to=<{user}@{dom}>, relay={helo}[{ip}]:25, delay=1.2, "
                   f"delays=0.1/0/0.5/0.6, dsn=4.0.0, status=deferred (host {helo}[{ip}] said: {text})")
        elif k == 7:
            yield (f"{head} dovecot: imap-login: Login: user=<{user}>, method={mech}, rip={ip}, lip=192.0.2.10, "
                   f"mpid=1, TLS, session=<{qid}>")
        elif k == 8:
            yield (f"{head} dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<{user}>, "
                   f"method={mech}, rip={attacker}, lip=192.0.2.10, TLS, session=<{qid}>")
        elif k == 9:
            yield f"{head} postfix/smtpd[1]: warning: {dom}[{attacker}]: SASL {sasl} authentication failed: {text}"
        elif k == 10:
            yield (f"{stamp} fw1 : %ASA-4-{asa}: Deny tcp src outside:{ip}/1234 dst inside:10.0.0.1/25 "
                   f"by access-group \"{text}\" [0x0, 0x0]")
        elif k == 11:
            yield (f"{head} rspamd[3]: (normal) <{qid[-6:]}>; task; rspamd_task_write_log: id: <{qid}@{dom}>, "
                   f"qid: <{qid}>, ip: {ip}, from: <{user}@{dom}>, (default: F ({action}): [1.5/15.00] "
                   f"[{text[:40]}(1.0){{}}]), len: 100, time: 5.0ms")
        elif k == 12:
            yield (f"{head} exim[4]: H=({helo}) [{ip}] F=<{user}@{dom}> rejected RCPT <{user}@example.org>: {text}")
        elif k == 13:
            yield (f"{head} postfix/postscreen[5]: NOQUEUE: reject: RCPT from [{ip}]:40001: 550 5.7.1 Service "
                   f"unavailable; client [{ip}] blocked using {zone}; from=<{user}@{dom}>, to=<{user}@example.org>, "
                   f"proto=ESMTP, helo=<{helo}>")
        elif k == 14:  # a postfix daemon (service label of the unsupported-lines family), or any program
            yield f"{head} {'postfix/' + prog if (i // TEMPLATES) % 2 else prog + 'x'}[6]: {text}"
        else:
            yield f"{stamp} {host} postfix/smtpd[1]: connect from {dom}[{ip}]"


def write_lines(path: Path, n: int, hostile: bool, seed: int = 1) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        buf: list[str] = []
        for line in attack_lines(n, hostile, seed):
            buf.append(line)
            if len(buf) >= 10_000:
                fh.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            fh.write("\n".join(buf) + "\n")
    return path


def series(exposition: bytes | str) -> Counter:
    """Exported series (samples) per metric family."""
    text = exposition.decode() if isinstance(exposition, bytes) else exposition
    return Counter({fam.name: len(fam.samples) for fam in text_string_to_metric_families(text)})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stats_lines(path: Path) -> int:
    try:
        return int(json.loads(path.read_text()).get("lines", 0))
    except (OSError, ValueError):
        return 0


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class TailRun:
    """What one ``logscope tail`` over one log showed."""

    label: str
    lines: int
    seconds: float = 0.0
    scrapes: list[tuple[int, int]] = field(default_factory=list)  # (lines counted, series exported)
    families: Counter = field(default_factory=Counter)  # series per family at the end
    exposition: str = ""  # the last scrape
    peak_rss_mb: float = 0.0
    stderr_lines: int = 0

    @property
    def final_series(self) -> int:
        return self.scrapes[-1][1] if self.scrapes else 0


def run_tail(log: Path, lines: int, workdir: Path, label: str, scrapes: int = 5, timeout: float = 600.0) -> TailRun:
    """Read ``log`` (``lines`` lines) with a real ``logscope tail --from-start``; scrape /metrics along the way."""
    state, stats, err = workdir / f"{label}.state", workdir / f"{label}.stats.json", workdir / f"{label}.stderr"
    timed = workdir / f"{label}.time"
    port = _free_port()
    cmd = [sys.executable, "-m", "logscope", "tail", str(log), "--from-start", "--tz", "UTC",
           "--year", str(datetime.now(timezone.utc).year), "--state-dir", str(state), "--stats-file", str(stats),
           "--listen", f"127.0.0.1:{port}", "--quiet"]
    use_time = os.access("/usr/bin/time", os.X_OK)
    if use_time:
        cmd = ["/usr/bin/time", "-v", "-o", str(timed), *cmd]
    out = TailRun(label, lines)
    started = time.monotonic()
    with open(err, "wb") as errf:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf)
    pid = _child_pid(proc.pid) if use_time else proc.pid
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        marks = [lines * (j + 1) // scrapes for j in range(scrapes)]
        deadline = started + timeout
        while marks:
            if proc.poll() is not None:
                raise RuntimeError(f"logscope tail exited with {proc.returncode}: {err.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: {_stats_lines(stats):,} of {lines:,} lines after {timeout:.0f} s")
            done = _stats_lines(stats)
            if done >= marks[0]:
                if done >= lines:
                    out.seconds = time.monotonic() - started
                with urllib.request.urlopen(url, timeout=30) as resp:
                    out.exposition = resp.read().decode()
                fams = series(out.exposition)
                out.scrapes.append((done, sum(fams.values())))
                out.families = fams
                while marks and done >= marks[0]:
                    marks.pop(0)
                continue
            time.sleep(0.05)
        if not use_time:
            out.peak_rss_mb = _status_kb(pid, "VmHWM") / 1024
        os.kill(pid, signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    if use_time:
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timed.read_text())
        out.peak_rss_mb = int(m.group(1)) / 1024 if m else 0.0
    out.stderr_lines = len(err.read_text(errors="replace").splitlines())
    return out


def compare(benign: TailRun, hostile: TailRun) -> dict[str, tuple[int, int]]:
    """Families whose series count differs: {family: (benign, hostile)}."""
    names = set(benign.families) | set(hostile.families)
    return {f: (benign.families.get(f, 0), hostile.families.get(f, 0)) for f in sorted(names)
            if benign.families.get(f, 0) != hostile.families.get(f, 0)}


def run(n: int, workdir: Path, seed: int = 1, scrapes: int = 5) -> tuple[TailRun, TailRun]:
    """Write both logs into ``workdir`` and read each with its own tail: (benign, hostile)."""
    results = []
    for label, hostile in (("benign", False), ("hostile", True)):
        log = write_lines(workdir / f"{label}.log", n, hostile, seed)
        results.append(run_tail(log, n, workdir, label, scrapes))
    return results[0], results[1]


def report(benign: TailRun, hostile: TailRun) -> str:
    rows = []
    for r in (benign, hostile):
        along = " ".join(f"{s:,}" for _, s in r.scrapes)
        rows.append(f"  {r.label:8s} {r.lines:>10,} {r.seconds:8.1f} {r.lines / max(r.seconds, 1e-9):>10,.0f}"
                    f"   {along:24s} {r.peak_rss_mb:8.0f}")
    diff = compare(benign, hostile)
    lines = ["input         lines  seconds    lines/s   series after each fifth   peak RSS MB", *rows]
    lines.append("families whose series differ (benign, hostile): "
                 + (", ".join(f"{k} {a}->{b}" for k, (a, b) in diff.items()) or "none"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m logscope.sources.bench_hostile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--lines", type=int, default=1_000_000, help="lines per input (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep the logs (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="logscope-hostile-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        benign, hostile = run(args.lines, workdir, args.seed)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report(benign, hostile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
