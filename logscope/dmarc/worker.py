"""Files → parse events, in input order, on several cores when there are many files.

Parsing a report is pure Python plus expat, so one process does one core's
worth; with many small files (a year of reports) the files are cut into chunks
that forked workers and this process take in turn (see :class:`_Shared`).
Events come back in input order either way, so the
output (and which copy of a duplicate wins) does not depend on ``jobs``.
Nothing here imports polars: workers stay light.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from typing import Iterator

from . import aggregate, tlsrpt
from .aggregate import ReportError
from .inputs import Limits, read_path, walk

# An event: ("error", origin, why) | ("note", origin, text) | ("dmarc", origin, Aggregate) | ("tls", origin, TlsReport)
Event = tuple

PARALLEL_MIN_FILES = 400  # below this, starting workers costs more than it saves (measured: bench)
CHUNK_FILES = 200  # files per chunk, at most ...
CHUNK_MIN_FILES = 25  # ... and at least


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def expand(paths: list[str], errors: list[Event] | None = None) -> list[str]:
    """Input paths with directories replaced by their files (see :func:`inputs.walk`);
    unreadable directories are appended to ``errors`` as error events."""
    out: list[str] = []

    def on_error(origin: str, why: str) -> None:
        if errors is not None:
            errors.append(("error", origin, why))

    for p in paths:
        out += walk(p, on_error) if p != "-" and os.path.isdir(p) else [p]
    return out


def parse_file(path: str, limits: Limits) -> list[Event]:
    """Every event of one input path (a file, ``-``), in order."""
    events: list[Event] = []
    for payload in read_path(path, lambda o, w: events.append(("error", o, w)), limits):
        events += [("note", payload.origin, n) for n in payload.notes]
        try:
            if payload.kind == "xml":
                events.append(("dmarc", payload.origin, aggregate.parse_aggregate(payload.data)))
            else:
                events.append(("tls", payload.origin, tlsrpt.parse_tlsrpt(payload.data)))
        except ReportError as exc:
            events.append(("error", payload.origin, str(exc)))
        except RecursionError:  # a pathologically deep document
            events.append(("error", payload.origin, "nested too deeply"))
    return events


def _parse_chunk(paths: list[str], limits: Limits) -> list[Event]:
    out: list[Event] = []
    for p in paths:
        out += parse_file(p, limits)
    return out


def iter_events(paths: list[str], limits: Limits = Limits(), jobs: int = 1) -> Iterator[Event]:
    """Events of every file under ``paths``, in order; ``jobs`` > 1 parses many files in parallel."""
    errors: list[Event] = []
    files = expand(paths, errors)
    yield from errors
    if jobs <= 1 or len(files) < PARALLEL_MIN_FILES or "-" in files \
            or "fork" not in multiprocessing.get_all_start_methods():
        for f in files:
            yield from parse_file(f, limits)
        return
    size = max(CHUNK_MIN_FILES, min(CHUNK_FILES, len(files) // (8 * jobs)))
    yield from _Shared([files[i:i + size] for i in range(0, len(files), size)], limits, jobs)


class _Shared:
    """Chunks of files parsed by ``jobs - 1`` forked workers and this process, which all take the next
    chunk from one shared counter; events come out in chunk order.

    This process is a worker too because it has to be awake anyway (to take results, and for the
    caller's work on them): the caller's share of the work is then simply fewer chunks parsed here,
    whatever the load on each core, and only the other workers' events are pickled. Fork is cheap
    and safe here: polars has run nothing yet and the workers never call it.
    """

    def __init__(self, chunks: list[list[str]], limits: Limits, jobs: int):
        self.chunks = chunks
        self.limits = limits
        ctx = multiprocessing.get_context("fork")
        self.next = ctx.Value("l", 0)
        self.results = ctx.Queue()
        self.workers = [ctx.Process(target=self._work, name=f"logscope-dmarc-{n}", daemon=True)
                        for n in range(jobs - 1)]

    def _take(self) -> int:
        with self.next.get_lock():
            i = self.next.value
            self.next.value = i + 1
        return i

    def _work(self) -> None:
        try:
            while (i := self._take()) < len(self.chunks):
                self.results.put((i, _parse_chunk(self.chunks[i], self.limits)))
        except BaseException as exc:  # a bug (or MemoryError) on some hostile file: the parent raises it
            self.results.put((-1, exc))
        finally:
            self.results.close()
            self.results.join_thread()

    def __iter__(self) -> Iterator[Event]:
        for w in self.workers:
            w.start()
        done: dict[int, list[Event]] = {}
        try:
            for want in range(len(self.chunks)):
                while want not in done:
                    self._collect(done, block=False)
                    if want in done:
                        break
                    i = self._take()
                    if i < len(self.chunks):
                        done[i] = _parse_chunk(self.chunks[i], self.limits)
                    else:  # every chunk is taken: wait for the workers'
                        self._collect(done, block=True)
                yield from done.pop(want)
        finally:
            with self.next.get_lock():
                self.next.value = len(self.chunks)  # an early stop: workers take nothing more
            for w in self.workers:
                w.join(5)
                if w.is_alive():
                    w.kill()

    def _collect(self, done: dict[int, list[Event]], block: bool) -> None:
        """Move finished chunks from the queue into ``done``; raise what a worker raised."""
        while True:
            try:
                i, events = self.results.get(timeout=1.0) if block else self.results.get_nowait()
            except queue.Empty:
                if not block:
                    return
                if not any(w.is_alive() for w in self.workers):
                    raise RuntimeError("a DMARC parsing worker died (killed, or out of memory)") from None
                continue
            if i < 0:
                raise events
            done[i] = events
            if block:
                return
