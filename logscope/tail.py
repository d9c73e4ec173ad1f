"""The ``logscope tail`` loop: inputs -> ``parse_lines`` -> sinks -> checkpoint commit.

Per batch, in order::

    batch = input.read_batch()        # whole lines + provenance; the input's position moves past them
    events = parse_lines(batch.lines)       # in a parse thread (two: polars releases the GIL)
    for sink in sinks: sink.add(events)     # the loop's thread, one batch after the other
    store.save(checkpoints + sink states)   # atomic: tmp, fsync, rename

The loop's thread reads and hands batches to the sinks; up to ``workers``
batches are parsed at the same time, the next ones while the sinks take the
one before. Whatever the parse order, the sinks and the commits get the
batches in the order they were read, and each commit writes the positions as
they were right after its batch was read.

Exactly once, precisely. The state file is replaced atomically after every
batch and holds, together, every input's position and the state of the sinks
that persist one (``state()``/``restore_state()``). A process killed at any
point (SIGKILL, power loss) restarts from the last file written:

* a sink that persists its state in the state file (the built-in
  ``StatsSink``) is exactly once: its counts and the positions change in the
  same rename, so a batch is either in both or in neither;
* an in-memory sink (the Prometheus metrics) dies with the process; its
  counters restart from zero, which Prometheus reads as a counter reset. The
  only lines it can see twice are those of the one batch whose ``add`` had
  returned when the kill came and whose commit had not completed; the commit
  directly follows the sinks to keep that window to one fsync;
* a persistent sink of its own (the Parquet archive, later) must be
  idempotent: it keys what it wrote by the batch's (input, file identity,
  end offset) or journal cursor (``add_batch`` gets the ``Batch``) and skips
  a batch it already has.

Nothing is lost: a position only reaches the disk after the sinks took the
lines before it. A sink that raises stops ``tail`` (exit 1) before the batch
is committed, so the next start reads it again.

A full disk stops nothing. A checkpoint that cannot be written (ENOSPC, a
read-only or vanished state directory) is warned about once; the previous
checkpoint stays as it was (``write_atomic``), lines keep being read and
counted, and every later commit (at least every second when idle) tries
again, with a notice when it works again. While it fails, ``on_commit`` hooks
do not run (``logscope_checkpoint_age_seconds`` grows, ``--stats-file`` keeps
the counts of the last checkpoint); ``tick`` hooks do, so alerts are still
evaluated. A sink that cannot take a batch because its storage is full
(``OSError`` ENOSPC/EDQUOT/EFBIG, or an exception with ``transient = True``)
holds the inputs instead: the same batch is offered to that sink again until
it takes it (back-off up to 5 s), since a later batch must not overtake a
missing one; such a sink must take a batch whole or not at all (the archive:
idempotent part files). Stopping while it waits commits nothing more: the restart reads
that batch again.

Wake-ups come from inotify (watchfiles, on the directories of the inputs),
from the journal and stdin reader threads, and from a safety timer (1 s, or
``--poll SECONDS`` where inotify is not available or not wanted). When idle
the process sleeps: no busy polling.

Signals: SIGTERM/SIGINT finish the batch in hand, commit, exit 0. SIGHUP
reloads the parsers and runs ``Tail.reload_hooks`` (config, DMARC report
directories and domains, alert rules plug in there), once no batch is pending:
a hook may add a sink to ``Tail.sinks``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections import Counter, OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import polars as pl

from .engine import parse_lines
from .header import HeaderOptions
from .parsers import ParserSet
from .sources.files import CHUNK_BYTES
from .sources.follow import MAX_BATCH_LINES, Batch, FileInput, Input, Log
from .state import StateStore, write_atomic

_PRIORITY = {"error": 3, "warning": 4, "info": 6}
_CONTROL = dict.fromkeys([*range(32), 127], " ")
# errors after which writing can work again once an operator frees space
_STORAGE_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
SINK_RETRY_MAX = 5.0  # seconds between two offers of a batch to a sink whose storage is full


def storage_full(exc: BaseException) -> bool:
    """Is ``exc`` a full disk/quota/file-size limit (worth waiting for), not a bug?"""
    if isinstance(exc, OSError):
        return exc.errno in _STORAGE_FULL
    return bool(getattr(exc, "transient", False))


class Sink(Protocol):
    """What ``tail`` hands events to. Only ``add`` is required.

    Optional: ``name`` + ``state() -> dict`` + ``restore_state(dict | None)``
    (state saved atomically with the checkpoints), ``add_batch(events, batch)``
    (used instead of ``add`` when present: provenance for idempotent sinks),
    ``on_commit()`` (after each checkpoint write), ``reload()`` (SIGHUP),
    ``close()``.
    """

    def add(self, events: pl.DataFrame) -> None: ...


def make_logger(quiet: bool, stream=None) -> Log:
    """stderr logger: ``<4>message`` lines journald reads as priorities (--quiet or
    under systemd), else ``logscope: warning: message``."""
    out = stream or sys.stderr
    journald = quiet or bool(os.environ.get("JOURNAL_STREAM"))
    lock = threading.Lock()  # notifier threads log too: one whole line per write, never interleaved

    def log(level: str, msg: str) -> None:
        msg = msg.translate(_CONTROL)  # one line, and no escape sequences from remote replies or file names
        if journald:
            line = f"<{_PRIORITY.get(level, 6)}>{msg}"
        else:
            line = f"logscope: {msg}" if level == "info" else f"logscope: {level}: {msg}"
        try:
            with lock:
                out.write(line + "\n")
                out.flush()
        except (OSError, ValueError):
            pass
    return log


class StatsSink:
    """Events per (source, kind), lines and bytes per input, and a digest of the messages.

    Its counts live in the state file next to the checkpoints, so they are
    exactly once across crashes. ``--stats-file`` also writes them as JSON
    after every commit (atomic rename, not fsynced: the state file is the
    durable copy). ``digest`` is the sum of a hash of every event's message
    (mod 2**64): the same multiset of lines gives the same digest, so a line
    lost and another counted twice do not cancel out as they would in a count.
    """

    name = "stats"

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.counts: Counter[tuple[str, str]] = Counter()
        self.inputs: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.lines = 0
        self.digest = 0
        self._dirty = True

    @staticmethod
    def message_digest(events: pl.DataFrame) -> int:
        if events.height == 0:
            return 0
        h = events.get_column("message").fill_null("").hash(seed=0)
        return int((h % (1 << 32)).sum()) + (int((h // (1 << 32)).sum()) << 32)

    def add_batch(self, events: pl.DataFrame, batch: Batch) -> None:
        self.add(events)
        self.inputs[batch.input] += events.height
        self.bytes[batch.input] += batch.nbytes

    def add(self, events: pl.DataFrame) -> None:
        self.lines += events.height
        for source, kind, n in events.group_by("source", "kind").len().iter_rows():
            self.counts[(str(source), str(kind))] += n
        self.digest = (self.digest + self.message_digest(events)) % (1 << 64)
        self._dirty = True

    def state(self) -> dict[str, Any]:
        return {"lines": self.lines, "digest": self.digest,
                "counts": [[s, k, n] for (s, k), n in sorted(self.counts.items())],
                "inputs": dict(self.inputs), "bytes": dict(self.bytes)}

    def restore_state(self, saved: dict | None) -> None:
        if not saved:
            return
        self.lines = int(saved.get("lines", 0))
        self.digest = int(saved.get("digest", 0))
        self.counts = Counter({(s, k): int(n) for s, k, n in saved.get("counts", [])})
        self.inputs = Counter({k: int(v) for k, v in saved.get("inputs", {}).items()})
        self.bytes = Counter({k: int(v) for k, v in saved.get("bytes", {}).items()})

    def to_dict(self) -> dict[str, Any]:
        sources: dict[str, dict[str, int]] = {}
        for (s, k), n in sorted(self.counts.items()):
            sources.setdefault(s, {})[k] = n
        return {"lines": self.lines, "digest": self.digest, "inputs": dict(sorted(self.inputs.items())),
                "bytes": dict(sorted(self.bytes.items())), "sources": sources}

    def on_commit(self) -> None:
        if self.path is not None and self._dirty:
            write_atomic(self.path, json.dumps(self.to_dict(), indent=1).encode(), durable=False)
            self._dirty = False


@dataclass
class TailOptions:
    start: str = "end"  # first run without checkpoint: "start" or "end" of existing files
    once: bool = False  # process what is there, commit, exit
    poll: float | None = None  # seconds between polls instead of inotify
    batch_bytes: int = CHUNK_BYTES
    batch_lines: int = MAX_BATCH_LINES
    safety_interval: float = 1.0  # wake-up without any event (inotify can miss e.g. NFS changes)
    # Live, wait at least this long between two parses so lines arriving one by one are parsed
    # together: a parse has a fixed cost, and the end-to-end latency budget is 1 s.
    min_interval: float = 0.25
    workers: int = 2  # batches parsed at the same time (polars releases the GIL)


class Timings:
    """Wall seconds per stage of the loop, summed over all batches: where tail spends its time.

    Stages: ``read`` (inputs -> lines), ``parse`` and ``enrich`` (in the parse
    threads), ``wait`` (the loop's thread waiting for a parse), ``sink:<name>``,
    ``commit`` (the state file) and ``on_commit`` (the sinks' hooks after it).
    Per batch, not per line: the cost is two clock reads and a lock.
    """

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()  # the parse threads add too

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            with self._lock:
                self.seconds[stage] += dt
                self.calls[stage] += 1

    def to_dict(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {k: {"seconds": round(v, 4), "calls": self.calls[k]} for k, v in self.seconds.most_common()}


class Watcher:
    """inotify through watchfiles on a set of directories; sets ``wakeup`` on any change."""

    def __init__(self, wakeup: threading.Event, log: Log):
        self.wakeup = wakeup
        self.log = log
        self.dirs: frozenset[str] = frozenset()
        self.failed = False
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def update(self, dirs: set[str]) -> None:
        dirs = frozenset(dirs)
        if dirs == self.dirs or self.failed:
            return
        self.stop()
        self.dirs = dirs
        if not dirs:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sorted(dirs), self._stop),
                                        name="logscope-watch", daemon=True)
        self._thread.start()

    def _run(self, dirs: list[str], stop: threading.Event) -> None:
        try:
            import watchfiles
            for _ in watchfiles.watch(*dirs, watch_filter=None, recursive=False, debounce=200, step=50,
                                      stop_event=stop, raise_interrupt=False, rust_timeout=5000):
                self.wakeup.set()
        except Exception as exc:  # inotify limits, odd file systems: fall back to the timer
            if not stop.is_set():
                self.failed = True
                self.log("warning", f"inotify unavailable ({exc}); polling every second instead")
                self.wakeup.set()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self._stop = self._thread = None
        self.dirs = frozenset()


class Tail:
    """Reads ``inputs`` into ``sinks`` until stopped, checkpointing in ``store`` after every batch."""

    def __init__(self, inputs: Sequence[Input], parsers: ParserSet, header: HeaderOptions,
                 sinks: Sequence[Any], store: StateStore, options: TailOptions | None = None,
                 log: Log | None = None, reload_parsers: Callable[[], ParserSet] | None = None,
                 enrich: Callable[[pl.DataFrame], pl.DataFrame] | None = None):
        self.inputs = list(inputs)
        self.parsers = parsers
        self.header = header
        self.sinks = list(sinks)
        self.store = store
        self.options = options or TailOptions()
        self.log = log or make_logger(False)
        self.reload_parsers = reload_parsers
        # derived columns every sink needs (reject classes), added once per batch in the parse thread
        self.enrich = enrich
        # SIGHUP: config, DMARC report directories, alert rules; run in the loop's thread when nothing is pending
        self.reload_hooks: list[Callable[[], None]] = []
        self.timings = Timings()
        self.wakeup = threading.Event()
        self.watcher = Watcher(self.wakeup, self.log)
        self.last_commit: float | None = None  # time.time() of the last checkpoint write
        # status() as of the last commit or idle wake-up: safe to read from another thread (a scrape)
        self.last_status: list[dict] = []
        self.lines = 0
        self.batches = 0
        self.parse_errors = 0
        self._saved_inputs: dict[str, Any] = {}
        self._stopping = False
        self._reload = False
        self._restored = False
        self._stop_event = threading.Event()
        self._last_parse = 0.0
        self._rr = 0
        self._read_from = 0  # the input of the last batch read
        self._continues: OrderedDict[tuple, str | None] = OrderedDict()
        self.commit_failures = 0  # checkpoint writes that failed since the last one that worked
        self._failing_since: float | None = None
        self._last_attempt = 0.0
        self._hook_failed: set[str] = set()  # sinks whose on_commit failed (warned once)
        self._abandoned = False  # stopped while a sink still refused a batch: commit nothing more
        for inp in self.inputs:
            inp.wakeup = self.wakeup

    # -- control (signal-safe: flags and an event) ----------------------------
    def stop(self) -> None:
        self._stopping = True
        self._stop_event.set()
        self.wakeup.set()

    def request_reload(self) -> None:
        self._reload = True
        self.wakeup.set()

    def install_signals(self) -> None:
        """SIGTERM/SIGINT: stop after the batch in hand; SIGHUP: reload. Main thread only."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    # -- the loop ------------------------------------------------------------------
    def restore(self) -> None:
        state = self.store.open()
        self._saved_inputs = dict(state.get("inputs") or {})
        sink_states = state.get("sinks") or {}
        for sink in self.sinks:
            if hasattr(sink, "restore_state") and getattr(sink, "name", None):
                sink.restore_state(sink_states.get(sink.name))
        for inp in self.inputs:
            inp.restore(self._saved_inputs.get(inp.key) if inp.key else None, self.options.start)
        self._restored = True
        self.commit()  # a first run --from-end fixes its start now: a crash must not skip further

    def run(self) -> int:
        """Restore (unless done), then loop until stopped (or, with ``once``, until all available is read)."""
        if not self._restored:
            self.restore()
        try:
            with ThreadPoolExecutor(max(1, self.options.workers), thread_name_prefix="logscope-parse") as pool:
                status = self._loop(pool)
            if self._abandoned:
                self.log("warning", "stopped while a sink could not take a batch; "
                                    "the restart reads the lines after the last checkpoint again")
                return 1
            # every batch handed out has been processed: the positions are final
            if not self.commit():
                self.log("error", "the last positions could not be saved; "
                                  "the restart reads the lines after the last checkpoint again")
                return 1
        finally:
            self.close()
        return status

    def _next_batch(self, skip: set[int] | frozenset[int] = frozenset()) -> Batch | None:
        """One batch from the next input that has one (round robin: a busy input starves none), not
        from the inputs numbered in ``skip``; ``_read_from`` is then the number of its input."""
        n = len(self.inputs)
        for i in range(n):
            k = (self._rr + i) % n
            if k in skip:
                continue
            batch = self.inputs[k].read_batch(self.options.batch_bytes, self.options.batch_lines)
            if batch is not None:
                self._read_from, self._rr = k, (k + 1) % n
                return batch
        return None

    def _loop(self, pool: ThreadPoolExecutor) -> int:
        """Read ahead up to ``workers`` batches, parse them in threads, settle them in order.

        Each batch carries the checkpoints as they were right after it was read,
        and that is what its commit writes: never a position past a batch the
        sinks have not had. On stop, the batches in hand are finished first.

        While a batch is being parsed, lines that arrive meanwhile are read and
        parsed in the other thread (a steady stream then keeps both parse
        threads busy, not only a backlog), but at most every ``min_interval``
        unless the last batch was big (a backlog): small batches cost their
        fixed parse cost each. The same holds once everything is settled: lines
        trickling in are read every ``min_interval``, not as soon as the parse
        before is through (that was one tiny batch per parse, a core busy at 100
        lines/s). One round reads every input that has new lines; only big
        batches count against ``workers``.
        """
        opts = self.options
        timeout = opts.poll if opts.poll else opts.safety_interval
        ahead = max(1, opts.workers)
        pending: deque[tuple[Batch, Future, dict]] = deque()
        last_read, backlog = 0.0, False
        last_tick = time.monotonic()
        while True:
            if self._reload and not pending:
                self._do_reload()
            if not pending and not backlog and not opts.once and not self._stopping:
                # lines trickling in (a few a second) are read together, not one batch per parse: every
                # batch costs the parse and the sinks a fixed ~0.1 s of CPU whatever its size
                rest = last_read + opts.min_interval - time.monotonic()
                if rest > 0:
                    self._stop_event.wait(rest)
            # a reload waits until every batch in hand is settled: read no more meanwhile
            if not self._reload and (not pending or backlog or time.monotonic() - last_read >= opts.min_interval):
                # every input with new lines is read in one round (a trickle on each of several inputs waits
                # min_interval, not one round per input), but at most ``ahead`` big batches are in hand
                caught_up: set[int] = set()  # inputs read to their end in this round
                backlog = False
                while not self._stopping and sum(self._big(b) for b, _, _ in pending) < ahead:
                    with self.timings("read"):
                        batch = self._next_batch(caught_up)
                    if batch is None:
                        break
                    last_read = time.monotonic()
                    if self._big(batch):
                        backlog = True
                    else:
                        caught_up.add(self._read_from)
                    future = pool.submit(self._parse, batch, None)
                    future.add_done_callback(lambda _: self.wakeup.set())
                    pending.append((batch, future, self._checkpoints()))
            if pending:
                if pending[0][1].done() or self._stopping:
                    if not self._settle(*pending.popleft()):
                        break  # stopped while a sink refused the batch: the rest is read again on restart
                    continue
                # a parse is running: wait for it, or for new lines to read ahead meanwhile
                with self.timings("wait"):
                    self.wakeup.wait(opts.min_interval)
                self.wakeup.clear()
                if time.monotonic() - last_tick >= opts.safety_interval:
                    last_tick = time.monotonic()
                    self._tick_sinks()
                continue
            # no input at all (only DMARC report directories): run until stopped
            if self._stopping or (self.inputs and all(inp.finished for inp in self.inputs)):
                break
            if opts.once and all(inp.finished or isinstance(inp, FileInput) for inp in self.inputs):
                break
            if self._failing_since is not None and time.monotonic() - self._last_attempt >= opts.safety_interval:
                self.commit()  # idle: every batch is settled, so the current positions are safe to save
            if not opts.poll:
                self.watcher.update(set().union(*(inp.watch_dirs() for inp in self.inputs)))
            self.last_status = self.status()
            self.wakeup.wait(timeout)
            pause = self._last_parse + opts.min_interval - time.monotonic()
            if pause > 0 and not self._stopping:
                self._stop_event.wait(pause)
            self.wakeup.clear()
            self._tick_sinks()
        return 0

    def _big(self, batch: Batch) -> bool:
        """A backlog batch (at least half the batch size), not the few lines written since the last read."""
        return batch.nbytes >= self.options.batch_bytes // 2 or len(batch.lines) >= self.options.batch_lines // 2

    def _header_for(self, batch: Batch) -> HeaderOptions:
        if self.header.year is not None or batch.mtime is None:
            return self.header
        return replace(self.header, anchor=datetime.fromtimestamp(batch.mtime, timezone.utc))

    def _parse(self, batch: Batch, continues: str | None) -> pl.DataFrame:
        with self.timings("parse"):
            events = parse_lines(batch.lines, self.parsers, self._header_for(batch), file=batch.path,
                                 first_line=batch.first_line, continues=continues)
        if self.enrich is None:
            return events
        with self.timings("enrich"):
            return self.enrich(events)

    def _settle(self, batch: Batch, parsed: Future, checkpoints: dict) -> bool:
        """Hand a parsed batch to every sink, then commit. A sink error propagates (nothing committed).

        False: stopped while a sink's storage was full (the batch is not committed).
        """
        self._last_parse = time.monotonic()
        before = self._continues.get(batch.key)
        try:
            with self.timings("wait"):
                events = parsed.result()
            # parsed ahead without knowing the batch before: a first line that continues
            # the previous entry (no header of its own) needs that entry's source
            if before is not None and events.height and events["ts"][0] is None and events["program"][0] is None:
                events = self._parse(batch, before)
        except Exception as exc:  # a parser bug must not stop a service: report, skip the batch
            self.parse_errors += 1
            self.log("error", f"{batch.path or batch.input}: cannot parse bytes {batch.start}-{batch.end}: {exc!r}")
            self.commit(checkpoints)
            return True
        if events.height:
            self._continues[batch.key] = events.get_column("source")[-1]
            self._continues.move_to_end(batch.key)
            while len(self._continues) > 1024:
                self._continues.popitem(last=False)
        for sink in self.sinks:
            if not self._deliver(sink, events, batch):
                self._abandoned = True
                return False
        self.lines += events.height
        self.batches += 1
        self.commit(checkpoints)
        return True

    def _deliver(self, sink: Any, events: pl.DataFrame, batch: Batch) -> bool:
        """``sink`` takes the batch; while its storage is full, offer it again (False: stopped meanwhile)."""
        add_batch = getattr(sink, "add_batch", None)
        delay, since = 0.5, None
        stage = "sink:" + _sink_name(sink)
        while True:
            try:
                with self.timings(stage):
                    if add_batch is not None:
                        add_batch(events, batch)
                    else:
                        sink.add(events)
            except Exception as exc:
                if not storage_full(exc):
                    raise
                if since is None:
                    since = time.monotonic()
                    self.log("warning", f"sink {_sink_name(sink)}: cannot take lines ({_reason(exc)}); "
                                        "holding the inputs and trying again until there is space")
                if self._stopping:
                    return False
                self._tick_sinks()
                self._stop_event.wait(delay)
                delay = min(delay * 2, SINK_RETRY_MAX)
                continue
            if since is not None:
                self.log("info", f"sink {_sink_name(sink)}: taking lines again after "
                                 f"{time.monotonic() - since:.0f} s")
            return True

    def _tick_sinks(self) -> None:
        for sink in self.sinks:  # time-driven work (alerts resolve, inputs go silent) needs no lines
            tick = getattr(sink, "tick", None)
            if tick is not None:
                tick()

    def _checkpoints(self) -> dict:
        return {inp.key: inp.checkpoint() for inp in self.inputs if inp.key}

    def commit(self, checkpoints: dict | None = None) -> bool:
        """Write the inputs' positions (now, or as given) and the sinks' states in one atomic replace.

        False if the state file could not be written (the previous one stays; see the module doc).
        """
        inputs = dict(self._saved_inputs)  # inputs not given this time keep their checkpoints
        inputs.update(self._checkpoints() if checkpoints is None else checkpoints)
        sinks = {s.name: s.state() for s in self.sinks if hasattr(s, "state") and getattr(s, "name", None)}
        self._last_attempt = time.monotonic()
        try:
            with self.timings("commit"):
                self.store.save({"inputs": inputs, "sinks": sinks, "saved_at": time.time()})
        except OSError as exc:
            self.commit_failures += 1
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                self.log("error", f"{self.store.path}: cannot write the checkpoint ({_reason(exc)}); "
                                  "the previous one stays valid, reading goes on and the next commits try again")
            self.last_status = self.status()
            self._tick_sinks()  # on_commit hooks wait for a real checkpoint; alerts must not
            return False
        if self._failing_since is not None:
            self.log("info", f"{self.store.path}: checkpoint written again (after {self.commit_failures} failed "
                             f"writes in {time.monotonic() - self._failing_since:.0f} s)")
            self._failing_since, self.commit_failures = None, 0
        self.last_commit = time.time()
        self.last_status = self.status()
        for sink in self.sinks:
            hook = getattr(sink, "on_commit", None)
            if hook is None:
                continue
            name = _sink_name(sink)
            try:
                with self.timings("on_commit"):
                    hook()
            except OSError as exc:  # e.g. --stats-file on a full disk: the checkpoint is safe, the next commit retries
                if name not in self._hook_failed:
                    self._hook_failed.add(name)
                    self.log("warning", f"sink {name}: after the checkpoint: {_reason(exc)}; trying again at the next one")
                continue
            if name in self._hook_failed:
                self._hook_failed.discard(name)
                self.log("info", f"sink {name}: works again after the checkpoint")
        return True

    def _do_reload(self) -> None:
        self._reload = False
        if self.reload_parsers is not None:
            try:
                self.parsers = self.reload_parsers()
                self.log("info", "SIGHUP: parsers reloaded")
            except Exception as exc:
                self.log("error", f"SIGHUP: parsers not reloaded, keeping the old ones: {exc}")
        for hook in self.reload_hooks:
            try:
                hook()
            except Exception as exc:
                self.log("error", f"SIGHUP: reload hook failed: {exc}")
        for sink in self.sinks:
            hook = getattr(sink, "reload", None)
            if hook is not None:
                hook()

    def status(self) -> list[dict]:
        """Per input file: offset, size, lag in bytes, rotations, errors (for self-metrics).

        Call it from the loop's thread (a sink's ``on_commit``); other threads read ``last_status``.
        """
        return [s for inp in self.inputs for s in inp.status()]

    def close(self) -> None:
        self.watcher.stop()
        for inp in self.inputs:
            inp.close()
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    self.log("error", "closing a sink failed: " + traceback.format_exc(limit=1).strip())
        self.store.close()


def _sink_name(sink: Any) -> str:
    return str(getattr(sink, "name", None) or type(sink).__name__)


def _reason(exc: BaseException) -> str:
    """One line: the OS error text and the file, else the exception's message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
