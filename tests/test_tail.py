"""``logscope tail``: the live loop with inotify, rotation under a running writer, signals,
checkpoints across SIGKILL, permission denied, stdin, state directory errors.

In-process tests run ``Tail`` in a thread with a sink that keeps every message,
so "exactly once" is checked line by line. Subprocess tests run the real
command and read its ``--stats-file`` (counts + a digest of all messages).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from logscope.engine import parse_lines
from logscope.header import HeaderOptions
from logscope.sources.follow import FileInput
from logscope.state import StateStore
from logscope.tail import StatsSink, Tail, TailOptions

HEADER = HeaderOptions(tz="UTC", year=2025)


def lines(a: int, b: int, tag: str = "m") -> list[str]:
    return [f"Jan  1 00:00:00 mx1 postfix/smtpd[1]: connect from {tag}{i}.example[192.0.2.1]" for i in range(a, b)]


def message(line: str) -> str:
    return line.split(": ", 1)[1]


def append(path, items: list[str]) -> None:
    with open(path, "a") as f:
        f.write("".join(x + "\n" for x in items))


def wait_for(cond, timeout: float = 15.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Collect:
    """A sink that keeps every message (thread-safe)."""

    def __init__(self):
        self.messages: list[str] = []
        self.lock = threading.Lock()

    def add(self, events):
        with self.lock:
            self.messages += events["message"].to_list()

    def snapshot(self) -> list[str]:
        with self.lock:
            return list(self.messages)


class LiveTail:
    def __init__(self, tmp_path: Path, specs: list[str], parser_set, **opts):
        self.sink = Collect()
        self.log: list[tuple[str, str]] = []
        rotate_wait = opts.pop("rotate_wait", 2.0)
        inputs = [FileInput(s, lambda lvl, m: self.log.append((lvl, m)), rotate_wait) for s in specs]
        self.tail = Tail(inputs, parser_set, HEADER, [self.sink], StateStore(tmp_path / "state"),
                         TailOptions(**{"start": "start", **opts}), log=lambda lvl, m: self.log.append((lvl, m)))
        self.tail.restore()
        self.thread = threading.Thread(target=self.tail.run, daemon=True)
        self.thread.start()

    def wait_count(self, n: int, timeout: float = 15.0) -> list[str]:
        try:
            wait_for(lambda: len(self.sink.snapshot()) >= n, timeout, "events")
        except AssertionError:
            raise AssertionError(f"waited for {n} events, have {len(self.sink.snapshot())}; "
                                 f"log: {self.log[-5:]}; status: {self.tail.status()}") from None
        time.sleep(0.3)  # anything extra (a duplicate) would show up now
        return self.sink.snapshot()

    def stop(self) -> None:
        self.tail.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


def test_inotify_wakes_the_loop_without_polling(tmp_path, parser_set):
    p = tmp_path / "mail.log"
    p.touch()
    live = LiveTail(tmp_path, [str(p)], parser_set, safety_interval=60.0)  # no timer: only inotify can wake it
    try:
        time.sleep(0.5)
        append(p, lines(0, 3))
        assert live.wait_count(3, timeout=10) == [message(x) for x in lines(0, 3)]
        append(p, lines(3, 4))
        assert live.wait_count(4, timeout=10)[3:] == [message(x) for x in lines(3, 4)]
    finally:
        live.stop()


def test_poll_mode(tmp_path, parser_set):
    p = tmp_path / "mail.log"
    live = LiveTail(tmp_path, [str(p)], parser_set, poll=0.1, safety_interval=60.0)
    try:
        append(p, lines(0, 2))  # the file did not exist at the start
        assert live.wait_count(2) == [message(x) for x in lines(0, 2)]
    finally:
        live.stop()


def _rotate(style: str, p: Path) -> None:
    """Do to ``p`` what a rotation of this style does (the writer reopens afterwards)."""
    if style in ("rename", "copytruncate"):
        for n in range(8, 0, -1):  # logrotate shifts the older ones first: .1 -> .2, ...
            if os.path.exists(f"{p}.{n}"):
                os.rename(f"{p}.{n}", f"{p}.{n + 1}")
    if style == "rename":
        os.rename(p, f"{p}.1")
        p.touch()
    elif style == "delete":
        os.unlink(p)
        p.touch()
    elif style == "symlink":
        target = Path(os.path.realpath(p))
        new = target.with_name(target.name + ".next")
        new.touch()
        tmp = p.with_name(p.name + ".tmp")
        os.symlink(new, tmp)
        os.rename(tmp, p)
    elif style == "copytruncate":
        shutil.copyfile(p, f"{p}.1")
        os.truncate(p, 0)


@pytest.mark.parametrize("style", ["rename", "delete", "symlink", "copytruncate"])
def test_rotation_under_a_running_writer_counts_every_line_once(tmp_path, parser_set, style):
    """A writer logs 3000 lines in bursts; the log is rotated twice meanwhile.

    rename/delete/symlink: the writer goes on writing into the old file for a
    while after the rotation (a daemon that has not reopened yet). copytruncate
    is racy by design (lines written between copy and truncate are lost), so
    the writer holds still during the copy, as with any copytruncate setup.
    rename and copytruncate happen twice within ~0.1 s, faster than the
    reader looks: the rotated siblings (.2, .1) are found and read.
    """
    p = tmp_path / "mail.log"
    if style == "symlink":
        (tmp_path / "real.log").touch()
        os.symlink(tmp_path / "real.log", p)
    else:
        p.touch()
    live = LiveTail(tmp_path, [str(p)], parser_set, rotate_wait=1.0)
    total = 3000
    try:
        out = open(p, "a")
        for i in range(total):
            out.write(lines(i, i + 1)[0] + "\n")
            if i % 100 == 99:
                out.flush()
                time.sleep(0.005)
            if i in (1000, 2000):
                out.flush()
                if style in ("delete", "symlink"):
                    # a file deleted (or a link target swapped out) before the follower ever
                    # opened it is gone for every reader: only these styles wait for it
                    live.wait_count(i + 1 + (20 if i == 2000 else 0))
                elif i == 1000:  # a file that was empty at the last look has no identity to find it by
                    wait_for(lambda: live.sink.snapshot(), what="a first line")
                _rotate(style, p)
                if style != "copytruncate":
                    for j in range(20):  # still written to the old file after the rotation
                        out.write(f"Jan  1 00:00:00 mx1 postfix/smtpd[1]: connect from late{i}-{j}.example[192.0.2.1]\n")
                    out.flush()
                    out.close()
                    out = open(p, "a")  # the writer reopens
        out.close()
        late = 0 if style == "copytruncate" else 40
        got = live.wait_count(total + late, timeout=30)
    finally:
        live.stop()
    expected = [message(x) for x in lines(0, total)]
    counts = Counter(got)
    assert len(got) == total + late
    assert all(counts[m] == 1 for m in expected), [m for m in expected if counts[m] != 1][:5]
    assert max(counts.values()) == 1


def test_sigterm_like_stop_commits_and_restart_resumes(tmp_path, parser_set):
    p = tmp_path / "mail.log"
    append(p, lines(0, 100))
    live = LiveTail(tmp_path, [str(p)], parser_set)
    live.wait_count(100)
    live.stop()
    append(p, lines(100, 150))
    again = LiveTail(tmp_path, [str(p)], parser_set, start="end")  # the checkpoint wins over --from-end
    try:
        assert again.wait_count(50) == [message(x) for x in lines(100, 150)]
    finally:
        again.stop()


# -- the real command in a child process -------------------------------------------

def logscope_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "logscope", "tail", "--tz", "UTC", "--year", "2025", "--no-metrics", *args]


def read_stats(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def expected_stats(all_lines: list[str], parser_set) -> tuple[dict, int]:
    events = parse_lines(all_lines, parser_set, HEADER)
    sink = StatsSink()
    sink.add(events)
    return sink.to_dict()["sources"], sink.digest


def test_sigkill_mid_stream_then_rotation_while_down_counts_every_line_once(tmp_path, parser_set):
    from logscope.generate import generate

    gen = tmp_path / "gen.log"
    generate(gen, lines=40_000, seed=7)
    all_lines = gen.read_text().splitlines()
    p, state, stats = tmp_path / "mail.log", tmp_path / "state", tmp_path / "stats.json"
    append(p, all_lines[:30_000])
    cmd = logscope_cmd(str(p), "--state-dir", str(state), "--stats-file", str(stats), "--from-start",
                       "--batch-bytes", "131072", "--quiet")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:  # small batches, so the kill lands between many commits
        wait_for(lambda: read_stats(stats).get("lines", 0) >= 3000, timeout=60, what="3000 lines read")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    killed_at = read_stats(stats)["lines"]
    assert 3000 <= killed_at < 30_000, "the reader was not killed mid-stream"
    written = 30_000
    # while it is down: more lines, then a rename rotation, then lines in the new file
    append(p, all_lines[written:35_000])
    os.rename(p, f"{p}.1")
    append(p, all_lines[35_000:])
    done = subprocess.run(logscope_cmd(str(p), "--state-dir", str(state), "--stats-file", str(stats), "--once",
                                       "--quiet"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = read_stats(stats)
    sources, digest = expected_stats(all_lines, parser_set)
    assert got["lines"] == len(all_lines)
    assert got["sources"] == sources
    assert got["digest"] == digest


def test_sigterm_finishes_and_commits_sighup_reloads_parsers(tmp_path):
    p, state, stats, conf = tmp_path / "mail.log", tmp_path / "state", tmp_path / "stats.json", tmp_path / "c.toml"
    conf.write_text('tz = "UTC"\n')
    line = "Jan  1 00:00:00 mx1 mta/smtpd[1]: connect from a{}.example[192.0.2.1]"
    append(p, [line.format(0)])
    proc = subprocess.Popen(logscope_cmd(str(p), "--config", str(conf), "--state-dir", str(state),
                                         "--stats-file", str(stats), "--from-start"),
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: read_stats(stats).get("lines") == 1, what="first line")
        assert read_stats(stats)["sources"] == {"unknown": {"unparsed": 1}}
        conf.write_text('tz = "UTC"\nsyslog_names = ["mta"]\n')  # mta is a postfix instance after all
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        append(p, [line.format(1)])
        wait_for(lambda: read_stats(stats).get("lines") == 2, what="second line")
        assert read_stats(stats)["sources"]["postfix"] == {"smtpd_connect": 1}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert "parsers reloaded" in err
    saved = json.loads((state / "tail.json").read_text())
    (entry,) = saved["inputs"].values()
    assert entry["paths"][str(p)]["files"][0]["offset"] == p.stat().st_size


def _drop_dac_capabilities() -> None:
    """Make a root child subject to file permissions (no CAP_DAC_OVERRIDE/READ_SEARCH)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone after exec
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_permission_denied_warns_once_then_reads(tmp_path):
    # Root reads any file, so the child runs without the capabilities that let it:
    # a real EACCES, not a stand-in.
    p, state, stats = tmp_path / "mail.log", tmp_path / "state", tmp_path / "stats.json"
    append(p, lines(0, 3))
    os.chmod(p, 0)
    preexec = _drop_dac_capabilities if os.geteuid() == 0 else None
    if preexec is not None:
        try:
            subprocess.run([sys.executable, "-c", "0"], preexec_fn=preexec, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"cannot drop CAP_DAC_OVERRIDE here, so root reads anything: {exc}")
    proc = subprocess.Popen(logscope_cmd(str(p), "--state-dir", str(state), "--stats-file", str(stats),
                                         "--from-start", "--poll", "0.05"),
                            stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
    try:
        time.sleep(1.5)  # about 30 polls, all denied
        assert read_stats(stats).get("lines") == 0
        os.chmod(p, 0o644)
        wait_for(lambda: read_stats(stats).get("lines") == 3, what="lines after chmod")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert err.count("permission denied") == 1, err
    assert "readable again" in err


def test_stdin_is_read_to_its_end(tmp_path):
    stats = tmp_path / "stats.json"
    data = "".join(x + "\n" for x in lines(0, 500)) + lines(500, 501)[0]  # no newline at the very end
    done = subprocess.run(logscope_cmd("-", "--state-dir", str(tmp_path / "state"), "--stats-file", str(stats)),
                          input=data, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert read_stats(stats)["sources"] == {"postfix": {"smtpd_connect": 501}}


def test_unwritable_state_dir_and_second_process_are_usage_errors(tmp_path):
    p = tmp_path / "mail.log"
    p.touch()
    bad = subprocess.run(logscope_cmd(str(p), "--once", "--state-dir", "/dev/null/state"),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.startswith("logscope: state directory /dev/null/state is not writable")
    assert "Traceback" not in bad.stderr
    first = subprocess.Popen(logscope_cmd(str(p), "--state-dir", str(tmp_path / "st")), stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (tmp_path / "st" / "tail.json").exists(), what="state file")
        second = subprocess.run(logscope_cmd(str(p), "--once", "--state-dir", str(tmp_path / "st")),
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "in use by another logscope tail" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(15) == 0


def test_once_from_end_then_only_new_lines(tmp_path):
    p, state, stats = tmp_path / "mail.log", tmp_path / "state", tmp_path / "stats.json"
    append(p, lines(0, 10))
    args = [str(p), "--state-dir", str(state), "--stats-file", str(stats), "--once"]
    first = subprocess.run(logscope_cmd(*args), capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and "starting at its end" in first.stderr
    assert read_stats(stats)["lines"] == 0
    append(p, lines(10, 13))
    assert subprocess.run(logscope_cmd(*args), capture_output=True, timeout=60).returncode == 0
    assert read_stats(stats)["lines"] == 3


def test_continuation_lines_across_batches_parsed_ahead(tmp_path, parser_set):
    """Batches are parsed two at a time; a batch that starts inside a multi-line entry
    still gets the source of the entry above it."""
    p = tmp_path / "mail.log"
    text = []
    for i in range(300):
        text.append(lines(i, i + 1)[0])
        text += [f"  continued {i}.{j}" for j in range(3)]  # header-less: part of the entry above
    append(p, text)
    stats = StatsSink()
    tail = Tail([FileInput(str(p))], parser_set, HEADER, [stats], StateStore(tmp_path / "state"),
                TailOptions(start="start", once=True, batch_bytes=1024))
    assert tail.run() == 0
    assert tail.batches > 20
    whole = StatsSink()
    whole.add(parse_lines(text, parser_set, HEADER))
    assert stats.to_dict()["sources"] == whole.to_dict()["sources"]
    assert stats.to_dict()["sources"]["postfix"]["unparsed"] == 900
    assert stats.digest == whole.digest


class Batches:
    """A sink that checks every batch follows the one before it in its file (in order, no gap, no overlap)."""

    name = "batches"

    def __init__(self):
        self.ends: dict = {}
        self.count = 0

    def add(self, events):
        pass

    def add_batch(self, events, batch):
        assert batch.start == self.ends.get(batch.path, 0), (batch.start, self.ends.get(batch.path))
        assert events.height == batch.lines.height
        self.ends[batch.path] = batch.end
        self.count += 1


def test_lines_arriving_during_a_parse_are_parsed_meanwhile_and_settled_in_order(tmp_path, parser_set):
    """Lines written while a batch is being parsed are read and parsed in the other thread at once (not
    after that batch is through), never more than ``workers`` at a time; the sinks and the checkpoints
    still get the batches one after the other, every line once (also under a steady stream)."""
    p = tmp_path / "mail.log"
    p.touch()
    live = LiveTail(tmp_path, [str(p)], parser_set, min_interval=0.005, batch_bytes=16 << 20)
    order = Batches()
    live.tail.sinks.append(order)
    running, most, lock = 0, 0, threading.Lock()
    parse = live.tail._parse

    def counting_parse(batch, continues):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return parse(batch, continues)
        finally:
            with lock:
                running -= 1
    live.tail._parse = counting_parse
    try:
        append(p, lines(0, 40_000))  # one big batch: its parse takes a while
        wait_for(lambda: running == 1, 10, "the parse of the big batch")
        append(p, lines(40_000, 40_010))  # arrives while it is parsed
        wait_for(lambda: most == 2 or len(live.sink.snapshot()) >= 40_000, 30, "a second parse")
        assert most == 2  # read and parsed before the big batch was through
        for k in range(100):  # then a steady stream: 1000 lines in 100 writes, 5 ms apart
            append(p, lines(40_010 + 10 * k, 40_020 + 10 * k))
            time.sleep(0.005)
        got = live.wait_count(41_010, timeout=60)
    finally:
        live.stop()
    assert got == [message(x) for x in lines(0, 41_010)]
    assert most == 2  # never more than the two parse threads
    assert order.count > 5 and order.ends[str(p)] == p.stat().st_size
    [saved] = json.loads((tmp_path / "state" / "tail.json").read_text())["inputs"].values()
    [file] = saved["paths"][str(p)]["files"]
    assert (file["offset"], file["line"]) == (p.stat().st_size, 41_011)  # the last commit: after every line
