"""Reliability and security of ``logscope tail`` against hostile input, faults and exposure.

Every test runs the real command (or the real ``Tail`` loop) on real files,
real file systems and real servers on 127.0.0.1, and prints its figures
(``pytest -s`` shows them):

* a cardinality attack (200,000 lines with unique domains, IPs, HELO names,
  users, reply texts, ciphers, ...) exports exactly the series benign input
  does, in no more memory (``python -m logscope.sources.bench_hostile`` runs
  the 1,000,000-line version);
* a full disk while checkpointing (a real ENOSPC from a 512 KiB tmpfs; a file
  size limit set from outside with prlimit where mounting is not allowed):
  the old checkpoint stays valid, reading goes on, checkpoints resume when
  space returns, and a kill -9 while full still counts every line once;
* a sink whose storage is full holds the inputs and loses nothing;
* a state directory without write permission is one error line, exit 2;
* SMTP, webhook and Alertmanager down or hanging never slow ingestion;
* the metrics endpoint binds 127.0.0.1 by default and answers 405 to
  anything but GET/HEAD; passwords and tokens never reach stderr.

The long tests (kill -9 twenty times over 1,000,000 lines, a 10x burst, the
soak) are in ``tests/test_soak.py``.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from logscope.engine import parse_lines
from logscope.generate import generate
from logscope.header import HeaderOptions
from logscope.sinks.http import DEFAULT_LISTEN, DEFAULT_PORT, MetricsServer, parse_listen
from logscope.sinks.metrics import MetricsSink
from logscope.sources import bench_hostile
from logscope.sources.follow import FileInput
from logscope.state import StateStore
from logscope.tail import StatsSink, Tail, TailOptions

from . import test_tail
from .conftest import SAMPLES
from .test_alerts import cert  # noqa: F401  (fixture: a self-signed certificate for 127.0.0.1)
from .test_prometheus import basic, bcrypt_hash, fetch, free_port, write_web_config

HEADER = HeaderOptions(tz="UTC", year=2025)


# ------------------------------------------------------------------ helpers

def tail_cmd(*args: str, port: int | None = None) -> list[str]:
    """The real ``logscope tail`` (metrics on 127.0.0.1:port, or none)."""
    metrics = ["--listen", f"127.0.0.1:{port}"] if port else ["--no-metrics"]
    return [sys.executable, "-m", "logscope", "tail", "--tz", "UTC", "--year", "2025", "--quiet", *metrics, *args]


def read_stats(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def wait_for(cond, timeout: float = 30.0, what: str = "condition", proc: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = cond()
        except (OSError, http.client.HTTPException):  # the endpoint is not up yet
            value = None
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"logscope tail exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def samples(text: bytes | str) -> list[tuple[str, dict, float]]:
    """Exposition text -> [(sample name, labels, value)]."""
    text = text.decode() if isinstance(text, bytes) else text
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def metric(port: int, name: str, headers: dict | None = None, **labels) -> float:
    """Sum of the samples of ``name`` with these labels, scraped from the running tail."""
    got = samples(fetch(f"http://127.0.0.1:{port}/metrics", headers)[2])
    return sum(v for n, lab, v in got if n == name and all(lab.get(k) == x for k, x in labels.items()))


def expected(lines: list[str], parser_set) -> tuple[dict, int]:
    """Counts per source and kind and the message digest of a one-shot parse."""
    sink = StatsSink()
    for start in range(0, len(lines), 100_000):
        sink.add(parse_lines(lines[start:start + 100_000], parser_set, HEADER))
    return sink.to_dict()["sources"], sink.digest


class Stderr:
    """A child's stderr read through a pipe (not a file: a file-size limit on the child must not cut it)."""

    def __init__(self, proc: subprocess.Popen):
        self.chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for chunk in iter(lambda: stream.read1(65536), b""):
            self.chunks.append(chunk)

    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")


def append(path: Path, lines: list[str]) -> None:
    with open(path, "a") as fh:
        fh.write("".join(x + "\n" for x in lines))


@pytest.fixture(scope="module")
def gen_lines(tmp_path_factory) -> list[str]:
    path = tmp_path_factory.mktemp("gen") / "gen.log"
    generate(path, lines=30_000, seed=5)
    return path.read_text().splitlines()


# ------------------------------------------------------------------ cardinality

def test_cardinality_attack_through_tail_adds_no_series_and_no_memory(tmp_path):
    n = 200_000
    benign, hostile = bench_hostile.run(n, tmp_path)
    print("\n" + bench_hostile.report(benign, hostile))
    for r in (benign, hostile):
        assert r.scrapes[-1][0] == n and len(r.scrapes) >= 3, r.scrapes
    # constant along the stream, and the same series as benign input of the same shape
    assert len({s for _, s in hostile.scrapes}) == 1, hostile.scrapes
    assert bench_hostile.compare(benign, hostile) == {}
    assert hostile.final_series == benign.final_series
    # the attack reached the labelled families, and none of its values did
    got = samples(hostile.exposition.encode())
    tls = [(lab, v) for name, lab, v in got if name == "postfix_smtpd_tls_connections_total"]
    assert tls == [({"trust": "Anonymous", "protocol": "other", "cipher": "other", "secret_bits": "other",
                     "algorithm_bits": "other"}, n // bench_hostile.TEMPLATES)]
    head = list(bench_hostile.attack_lines(64, hostile=True))
    tokens = {t for line in head for t in re.findall(r"\b(?:h|u|zq|s)[0-9a-z]{8,}\b", line)
              if any(c.isdigit() for c in t)}
    tokens |= {bench_hostile._ip(i) for i in range(1, 64) if i % 5}
    assert len(tokens) > 50 and not [t for t in tokens if t in hostile.exposition]
    # memory: the hostile run stays within the benign run's peak (+20 % for allocator noise)
    assert hostile.peak_rss_mb <= benign.peak_rss_mb * 1.2, (benign.peak_rss_mb, hostile.peak_rss_mb)


# ------------------------------------------------------------------ disk full

def _fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte (a real ENOSPC afterwards)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 16, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def small_fs(tmp_path):
    """A 512 KiB tmpfs (mount needs root); skipped where it cannot be mounted."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for a real ENOSPC needs root (the prlimit variant runs instead)")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0755", "logscope-test", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


class FileSizeLimit:
    """The other way to make writes fail for real without root: RLIMIT_FSIZE of the tail
    process, set from outside (prlimit). Writes past the limit fail with EFBIG
    (Python ignores SIGXFSZ); raising it again is "space returns"."""

    def __init__(self, pid: int):
        self.pid = pid

    def full(self) -> None:
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (64, resource.RLIM_INFINITY))

    def free(self) -> None:
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


@pytest.mark.parametrize("how", ["tmpfs", "prlimit"])
def test_disk_full_while_checkpointing_keeps_the_old_checkpoint_and_resumes(tmp_path, gen_lines, parser_set,
                                                                            how, request):
    lines = gen_lines[:30_000]
    log, stats = tmp_path / "mail.log", tmp_path / "stats.json"
    if how == "tmpfs":
        state = request.getfixturevalue("small_fs") / "state"
    else:
        state = tmp_path / "state"
    port = free_port()
    append(log, lines[:10_000])
    args = [str(log), "--from-start", "--state-dir", str(state), "--stats-file", str(stats), "--batch-bytes", "262144"]

    proc = subprocess.Popen(tail_cmd(*args, port=port), stderr=subprocess.PIPE)
    err = Stderr(proc)
    filler = None
    limit = FileSizeLimit(proc.pid)

    def disk_full() -> None:
        nonlocal filler
        if how == "tmpfs":
            filler = _fill(state.parent)
        else:
            limit.full()

    def disk_free() -> None:
        if how == "tmpfs":
            filler.unlink()
        else:
            limit.free()

    try:
        wait_for(lambda: read_stats(stats).get("lines") == 10_000, 60, "the first 10,000 lines", proc)
        disk_full()
        saved = (state / "tail.json").read_bytes()
        append(log, lines[10_000:20_000])
        # reading goes on: the in-memory metrics count the lines, the process is alive
        wait_for(lambda: metric(port, "logscope_input_lines_total") == 20_000, 60, "lines read while full", proc)
        time.sleep(1.5)  # idle retries (every second) fail too
        assert (state / "tail.json").read_bytes() == saved  # the previous checkpoint, untouched and valid
        assert json.loads(saved)["sinks"]["stats"]["lines"] == 10_000
        assert read_stats(stats)["lines"] == 10_000  # --stats-file: the counts of the last checkpoint
        assert metric(port, "logscope_checkpoint_age_seconds") >= 1.0
        text = err.text()
        reason = "No space left on device" if how == "tmpfs" else "File too large"
        assert text.count("cannot write the checkpoint") == 1 and reason in text, text
        assert not list(state.glob("*.tmp"))  # a failed write leaves no partial temp file behind
        # space returns: the next (idle) retry writes the checkpoint
        disk_free()
        wait_for(lambda: read_stats(stats).get("lines") == 20_000, 30, "checkpoint after space returned", proc)
        saved = json.loads((state / "tail.json").read_text())
        assert saved["sinks"]["stats"]["lines"] == 20_000
        assert "checkpoint written again" in err.text()
        # full again, more lines, then kill -9 before space returns
        disk_full()
        append(log, lines[20_000:])
        wait_for(lambda: metric(port, "logscope_input_lines_total") == 30_000, 60, "lines read while full", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if how == "tmpfs" and filler is not None and filler.exists():
            filler.unlink()
    assert json.loads((state / "tail.json").read_text())["sinks"]["stats"]["lines"] == 20_000
    done = subprocess.run(tail_cmd(str(log), "--once", "--state-dir", str(state), "--stats-file", str(stats)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sources, digest = expected(lines, parser_set)
    got = read_stats(stats)
    print(f"\n{how}: 30,000 lines, disk full twice, kill -9 while full: counted {got['lines']:,}, "
          f"digest {'equal' if got['digest'] == digest else 'DIFFERENT'}")
    assert got["lines"] == 30_000 and got["sources"] == sources and got["digest"] == digest


class DiskSink:
    """A sink that appends every message to a file (like the archive writes part files)."""

    name = "disk"

    def __init__(self, path: Path):
        self.path = path

    def add(self, events: pl.DataFrame) -> None:
        """All of the batch or nothing: a short write (the last free pages) is cut off again."""
        data = memoryview("".join(m + "\n" for m in events["message"].to_list()).encode())
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        size = os.fstat(fd).st_size
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError:
            os.ftruncate(fd, size)
            raise
        finally:
            os.close(fd)


class Collect(test_tail.Collect):
    def count(self) -> int:
        with self.lock:
            return len(self.messages)


def test_sink_with_full_storage_holds_the_inputs_and_loses_nothing(small_fs, tmp_path, gen_lines, parser_set):
    log = tmp_path / "mail.log"
    out = small_fs / "out.txt"
    lines = gen_lines[:4000]
    append(log, lines[:1000])
    logged: list[tuple[str, str]] = []
    collect = Collect()
    store = StateStore(tmp_path / "state")
    tail = Tail([FileInput(str(log))], parser_set, HEADER,
                [collect, DiskSink(out)], store, TailOptions(start="start", batch_bytes=16384, min_interval=0.05),
                log=lambda lvl, m: logged.append((lvl, m)))
    tail.restore()
    thread = threading.Thread(target=tail.run, daemon=True)
    thread.start()
    filler = None
    try:
        wait_for(lambda: collect.count() == 1000, 30, "the first lines")
        filler = _fill(small_fs)
        append(log, lines[1000:])
        wait_for(lambda: any("holding the inputs" in m for _, m in logged), 30, "the sink to refuse")
        time.sleep(1.0)
        held = collect.count()
        assert held < 1200  # the inputs wait for the refused batch: the first sink saw only that one more
        state = json.loads(store.path.read_text())
        offset = state["inputs"][f"file:{log}"]["paths"][str(log)]["files"][0]["offset"]
        assert offset == len("".join(x + "\n" for x in lines[:1000]).encode())  # the held batch is not committed
        filler.unlink()
        wait_for(lambda: collect.count() == 4000, 30, "every line after space returned")
        wait_for(lambda: len(out.read_text().splitlines()) == 4000, 10, "the sink's file")
        assert any("taking lines again" in m for _, m in logged)
        messages = parse_lines(lines, tail.parsers, HEADER)["message"].to_list()
        assert out.read_text().splitlines() == messages  # each line once, in order
        assert collect.messages == messages
        print(f"\nsink on a full tmpfs: held at {held:,} of 4,000 lines, then all 4,000 once each")
    finally:
        tail.stop()
        thread.join(15)
        if filler is not None and filler.exists():
            filler.unlink()
    assert not thread.is_alive()


def test_stop_while_a_sink_is_full_commits_nothing_more(small_fs, tmp_path, gen_lines, parser_set):
    log = tmp_path / "mail.log"
    append(log, gen_lines[:500])
    store = StateStore(tmp_path / "state")
    stats = StatsSink()
    tail = Tail([FileInput(str(log))], parser_set, HEADER, [stats, DiskSink(small_fs / "out.txt")], store,
                TailOptions(start="start", min_interval=0.05), log=lambda *a: None)
    tail.restore()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(tail.run()), daemon=True)
    thread.start()
    filler = None
    try:
        wait_for(lambda: stats.lines == 500, 30, "the first lines")
        wait_for(lambda: json.loads(store.path.read_text())["sinks"]["stats"]["lines"] == 500, 10, "a checkpoint")
        filler = _fill(small_fs)
        append(log, gen_lines[500:800])
        wait_for(lambda: stats.lines == 800, 30, "the stats sink to take the held batch")
        tail.stop()
        thread.join(15)
    finally:
        if filler is not None and filler.exists():
            filler.unlink()
    assert result == [1]
    saved = json.loads(store.path.read_text())
    assert saved["sinks"]["stats"]["lines"] == 500  # the held batch is read again on restart, not lost


# ------------------------------------------------------------------ state directory

def test_state_directory_without_write_permission_is_one_error_line(tmp_path):
    from .test_tail import _drop_dac_capabilities

    log, state = tmp_path / "mail.log", tmp_path / "state"
    log.write_text("")
    state.mkdir()
    os.chmod(state, 0o555)
    preexec = _drop_dac_capabilities if os.geteuid() == 0 else None
    if preexec is not None:
        try:
            subprocess.run([sys.executable, "-c", "0"], preexec_fn=preexec, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"cannot drop CAP_DAC_OVERRIDE here, so root writes anywhere: {exc}")
    res = subprocess.run([sys.executable, "-m", "logscope", "tail", str(log), "--once", "--no-metrics",
                          "--state-dir", str(state)], capture_output=True, text=True, timeout=60, preexec_fn=preexec)
    assert res.returncode == 2
    assert res.stderr == (f"logscope: state directory {state} is not writable: Permission denied "
                          "(use --state-dir)\n"), res.stderr


# ------------------------------------------------------------------ notifiers down

def test_unreachable_notifiers_never_slow_ingestion(tmp_path):
    """SMTP and Alertmanager refuse connections, a webhook accepts and never answers (30 s timeout):
    tail reads everything at once, retries in the background, keeps each queue bounded."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)
    closed = free_port()
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-Notifier-pw\n")
    rules = tmp_path / "rules.toml"
    rules.write_text(f'''
[defaults]
eval_interval = "100ms"
repeat_interval = "1s"

[[rule]]
name = "every_failure"
where = 'kind == "sasl_auth_failed"'
group_by = ["client_ip"]
window = "100000d"
condition = "count() > 0"
severity = "warning"
summary = "{{{{ client_ip }}}}"

[[notifier]]
type = "smtp"
host = "127.0.0.1"
port = {closed}
from = "logscope@example.org"
to = ["postmaster@example.org"]
username = "alerts"
password_file = "{secret}"
max_queue = 4
retry_initial = "100ms"

[[notifier]]
type = "webhook"
url = "http://127.0.0.1:{blackhole.getsockname()[1]}/hook"
timeout = "30s"
max_queue = 4

[[notifier]]
type = "alertmanager"
url = "http://127.0.0.1:{closed}/"
username = "am"
password_file = "{secret}"
max_queue = 4
retry_initial = "100ms"
''')
    log, stats, err = tmp_path / "mail.log", tmp_path / "stats.json", tmp_path / "stderr"
    lines = [f"Mar  1 10:00:{i % 60:02d} mx1 postfix/smtpd[1]: warning: x{i}.example[198.51.{i // 250}.{i % 250}]: "
             f"SASL LOGIN authentication failed: UGFzc3dvcmQ6" for i in range(20_000)]
    port = free_port()
    with open(err, "wb") as fh:
        proc = subprocess.Popen(tail_cmd(str(log), "--from-start", "--state-dir", str(tmp_path / "state"),
                                         "--stats-file", str(stats), "--alerts", str(rules), "--batch-bytes", "65536",
                                         port=port), stderr=fh)
    try:
        wait_for(lambda: (tmp_path / "state" / "tail.json").exists(), 30, "tail to start", proc)
        started = time.monotonic()
        for k in range(10):  # ten appends: ten evaluations that notify
            append(log, lines[k * 2000:(k + 1) * 2000])
            time.sleep(0.2)
        wait_for(lambda: read_stats(stats).get("lines") == 20_000, 25, "every line despite the notifiers", proc)
        took = time.monotonic() - started
        wait_for(lambda: metric(port, "logscope_alert_notifications_total", notifier="alertmanager",
                                result="failed") >= 2, 20, "alertmanager retries", proc)
        # a notification a second (repeat_interval), the SMTP one stuck in back-off: its queue overflows
        wait_for(lambda: metric(port, "logscope_alert_notifications_total", notifier="smtp", result="dropped") >= 1,
                 30, "the smtp queue to overflow", proc)
        got = {(lab["notifier"], lab["result"]): v for n, lab, v in
               samples(fetch(f"http://127.0.0.1:{port}/metrics")[2]) if n == "logscope_alert_notifications_total"}
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        stop_took = time.monotonic() - stopping
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        blackhole.close()
    text = err.read_text()
    print(f"\nnotifiers down: 20,000 lines in {took:.1f} s, SIGTERM exit after {stop_took:.1f} s; "
          f"notifications {dict(sorted(got.items()))}")
    assert took < 20  # a blocking 30 s webhook timeout would have shown here
    assert stop_took < 15  # closing waits a bounded time for the queues
    assert got[("smtp", "failed")] >= 2 and got[("alertmanager", "failed")] >= 2
    assert got[("smtp", "sent")] == got[("webhook", "sent")] == got[("alertmanager", "sent")] == 0
    assert got[("smtp", "dropped")] > 0  # more notifications than the queue holds: the oldest go, memory stays
    for name in ("smtp", "alertmanager"):
        assert text.count(f"notifier {name}: delivery failed") == 1, text  # warned once, retried quietly
    assert "s3cr3t-Notifier-pw" not in text and "Traceback" not in text


# ------------------------------------------------------------------ exposure

def _listening(port: int) -> list[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6), as hex."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                out.append(addr)
    return out


def test_metrics_listen_on_loopback_unless_told_otherwise(tmp_path):
    assert parse_listen(DEFAULT_LISTEN) == ("127.0.0.1", DEFAULT_PORT)
    if _listening(DEFAULT_PORT):
        pytest.skip(f"port {DEFAULT_PORT} is in use on this machine")
    log = tmp_path / "mail.log"
    log.write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "logscope", "tail", str(log), "--state-dir", str(tmp_path / "s"),
                             "--quiet", "--no-alerts"], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _listening(DEFAULT_PORT), 30, "the metrics socket", proc)
        assert _listening(DEFAULT_PORT) == ["0100007F"]  # 127.0.0.1 and nothing else
        assert fetch(f"http://127.0.0.1:{DEFAULT_PORT}/metrics")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert f"metrics on http://127.0.0.1:{DEFAULT_PORT}/metrics" in proc.stderr.read()
    # all addresses only when asked: ":PORT"
    with MetricsServer(MetricsSink().registry, f":{free_port()}") as srv:
        assert set(_listening(srv.address[1])) <= {"00000000", "00000000000000000000000000000000"}


def _raw(port: int, method: str, path: str, headers: dict | None = None, body: bytes = b"") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body or None, headers=headers or {})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_only_get_and_head_are_answered(tmp_path, parser_set):
    sink = MetricsSink()
    sink.add(parse_lines((SAMPLES / "maillog").read_text().splitlines()[:200], parser_set, HEADER))
    conf = write_web_config(tmp_path, f"basic_auth_users:\n  prometheus: {bcrypt_hash('right pass')}\n")
    with MetricsServer(sink.registry, "127.0.0.1:0", conf) as srv:
        port = srv.address[1]
        auth = basic("prometheus", "right pass")
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "FOO"):
            for path in ("/metrics", "/", "/nothing"):
                for headers in ({}, auth):
                    resp = _raw(port, method, path if method != "CONNECT" else "127.0.0.1:80", headers,
                                b"x=1" * 100 if method in ("POST", "PUT", "PATCH") else b"")
                    assert resp.status == 405, (method, path, resp.status)
                    assert resp.getheader("Allow") == "GET, HEAD"
                    assert resp.getheader("Connection") == "close"
        assert _raw(port, "GET", "/metrics").status == 401
        assert _raw(port, "GET", "/metrics", auth).status == 200
        resp = _raw(port, "HEAD", "/metrics", auth)
        assert resp.status == 200 and int(resp.getheader("Content-Length")) > 1000
        # a POST with a body on a kept-alive connection cannot smuggle a second request
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        inner = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        s.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(inner), inner))
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        s.close()
        assert answer.startswith(b"HTTP/1.1 405") and answer.count(b"HTTP/1.1") == 1


def test_credentials_never_reach_the_logs(tmp_path, cert):
    """Basic-auth attempts with wrong and right passwords, an SMTP notifier whose login is refused by a real
    server, an Alertmanager with a password and a webhook with a token that are down, and report --email with
    a refused password: none of the secrets appears on stderr or stdout."""
    pytest.importorskip("aiosmtpd", reason="the SMTP part needs aiosmtpd (pip install aiosmtpd)")
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    class Inbox:
        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    import ssl
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert / "cert.pem", cert / "key.pem")
    smtp_port = free_port()
    ctl = Controller(Inbox(), hostname="127.0.0.1", port=smtp_port, tls_context=ctx, require_starttls=True,
                     auth_require_tls=True, authenticator=lambda *a: AuthResult(success=False, handled=False))
    ctl.start()
    secrets = {"smtp": "Smtp-Secret-4711", "am": "Am-Secret-0815", "token": "Bearer-Secret-1234",
               "web_wrong": "Web-Wrong-Secret", "web_right": "Web-Right-Secret", "mail": "Mail-Secret-2718"}
    for key, value in secrets.items():
        (tmp_path / key).write_text(value + "\n")
    closed = free_port()
    rules = tmp_path / "rules.toml"
    rules.write_text(f'''
[defaults]
eval_interval = "100ms"

[[rule]]
name = "any_failure"
where = 'kind == "sasl_auth_failed"'
window = "100000d"
condition = "count() > 0"
severity = "warning"
summary = "failures"

[[notifier]]
name = "smtp_login"
type = "smtp"
host = "127.0.0.1"
port = {smtp_port}
security = "starttls"
ca_file = "{cert / 'cert.pem'}"
from = "a@example.org"
to = ["b@example.org"]
username = "alerts"
password_file = "{tmp_path / 'smtp'}"
retry_initial = "100ms"

[[notifier]]
type = "alertmanager"
url = "http://127.0.0.1:{closed}/"
username = "am"
password_file = "{tmp_path / 'am'}"
retry_initial = "100ms"

[[notifier]]
type = "webhook"
url = "http://127.0.0.1:{closed}/hook"
bearer_token_env = "HOOK_TOKEN"
retry_initial = "100ms"
''')
    conf = write_web_config(tmp_path, f"basic_auth_users:\n  prometheus: {bcrypt_hash(secrets['web_right'])}\n")
    log, err = tmp_path / "mail.log", tmp_path / "stderr"
    append(log, [f"Mar  1 10:00:00 mx1 postfix/smtpd[1]: warning: x.example[192.0.2.{i}]: SASL LOGIN authentication "
                 "failed: UGFzc3dvcmQ6" for i in range(5)])
    port = free_port()
    env = dict(os.environ, HOOK_TOKEN=secrets["token"])
    with open(err, "wb") as fh:
        proc = subprocess.Popen(tail_cmd(str(log), "--from-start", "--state-dir", str(tmp_path / "state"),
                                         "--alerts", str(rules), "--web-config", str(conf), port=port),
                                stderr=fh, stdout=fh, env=env)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_for(lambda: fetch(url, basic("prometheus", secrets["web_right"]))[0] == 200, 30, "the endpoint", proc)
        assert fetch(url, basic("prometheus", secrets["web_wrong"]))[0] == 401
        assert fetch(url, basic(secrets["web_wrong"], secrets["web_wrong"]))[0] == 401

        def failed(name: str) -> float:
            return metric(port, "logscope_alert_notifications_total", basic("prometheus", secrets["web_right"]),
                          notifier=name, result="failed")
        for name in ("smtp_login", "alertmanager", "webhook"):
            wait_for(lambda: failed(name) >= 2, 30, f"{name} to fail twice", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    mail = subprocess.run([sys.executable, "-m", "logscope", "report", str(SAMPLES / "maillog"), "--tz", "UTC",
                           "--email", "a@example.org", "--from", "b@example.org", "--smtp", f"127.0.0.1:{smtp_port}",
                           "--smtp-ca-file", str(cert / "cert.pem"), "--smtp-user", "reports",
                           "--smtp-password-file", str(tmp_path / "mail")],
                          capture_output=True, text=True, timeout=120)
    ctl.stop()
    text = err.read_text() + mail.stdout + mail.stderr
    print("\nstderr of tail and report --email:\n" + text)
    assert "notifier smtp_login: delivery failed" in text  # the refused login was reported ...
    for value in secrets.values():  # ... without any secret
        assert value not in text
    assert "Traceback" not in text
