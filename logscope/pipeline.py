"""Sources -> events: read inputs chunk by chunk and parse each chunk.

The one place where files, header options and parsers meet; ``parse``,
``bench`` and later ``report``/``tail`` all read events through here.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import polars as pl

from .engine import parse_lines
from .header import HeaderOptions
from .parsers import ParserSet
from .sources.files import CHUNK_BYTES, SourceError, file_anchor, order_rotated, read_chunks


@dataclass
class ReadOptions:
    header: HeaderOptions
    chunk_bytes: int = CHUNK_BYTES
    keep_file: bool = True  # fill the events' ``file`` column
    workers: int = 2  # chunks parsed at the same time


def iter_events(
    paths: list[str],
    parsers: ParserSet,
    options: ReadOptions,
    on_error: Callable[[str], None],
) -> Iterator[pl.DataFrame]:
    """Yield one events frame per chunk of every input, oldest rotated file first, in order.

    A file that cannot be opened or read is reported through ``on_error`` (one
    line naming it) and the other inputs are still processed. Chunks are parsed
    ``options.workers`` at a time in threads (polars releases the GIL), which
    keeps both cores of a small mail host busy; memory grows by one chunk per
    extra worker.
    """
    workers = max(1, options.workers)
    with ThreadPoolExecutor(workers) as pool:
        for path in order_rotated(paths):
            header = options.header
            if header.year is None:
                header = replace(header, anchor=file_anchor(path))
            file = path if options.keep_file else None

            def parse(chunk, continues=None, header=header, file=file):
                return parse_lines(chunk.lines, parsers, header, file=file,
                                   first_line=chunk.first_line, continues=continues)

            last_source = None
            pending: deque = deque()
            try:
                for chunk in read_chunks(path, options.chunk_bytes):
                    pending.append((chunk, pool.submit(parse, chunk)))
                    while len(pending) > workers or (pending and pending[0][1].done()):
                        events, last_source = _settle(pending.popleft(), last_source, parse)
                        yield events
            except SourceError as exc:
                on_error(str(exc))
            while pending:
                events, last_source = _settle(pending.popleft(), last_source, parse)
                yield events


def _settle(item, last_source, parse):
    """The events of a chunk parsed ahead of time; re-parsed with the source of the
    chunk before it when its first lines continue that chunk's last entry."""
    chunk, future = item
    events = future.result()
    if last_source is not None and events.height and events["ts"][0] is None and events["program"][0] is None:
        events = parse(chunk, last_source)
    if events.height:
        last_source = events["source"][-1]
    return events, last_source
