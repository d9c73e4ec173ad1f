"""Files → parse events, in input order, on several cores when there are many files.

Parsing a report is pure Python plus expat, so one process does one core's
worth; with many small files (a year of reports) the files are cut into chunks
parsed by a process pool. Events come back in input order either way, so the
output (and which copy of a duplicate wins) does not depend on ``jobs``.
Nothing here imports polars: workers stay light.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Iterator

from . import aggregate, tlsrpt
from .aggregate import ReportError
from .inputs import Limits, read_path, walk

# An event: ("error", origin, why) | ("note", origin, text) | ("dmarc", origin, Aggregate) | ("tls", origin, TlsReport)
Event = tuple

PARALLEL_MIN_FILES = 200  # below this, starting workers costs more than it saves
CHUNK_FILES = 100


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
    if jobs <= 1 or len(files) < PARALLEL_MIN_FILES or "-" in files:
        for f in files:
            yield from parse_file(f, limits)
        return
    chunks = [files[i:i + CHUNK_FILES] for i in range(0, len(files), CHUNK_FILES)]
    # fork is cheap and safe here: polars has run nothing yet and the workers never call it
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=min(jobs, len(chunks)), mp_context=ctx) as pool:
        for events in pool.map(_parse_chunk, chunks, [limits] * len(chunks)):
            yield from events
