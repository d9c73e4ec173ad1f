"""Sources -> events: read inputs chunk by chunk and parse each chunk.

The one place where files, header options and parsers meet; ``parse``,
``bench`` and later ``report``/``tail`` all read events through here.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import polars as pl

from .engine import parse_lines
from .header import HeaderOptions
from .parsers import ParserSet
from .sources.files import (CHUNK_BYTES, SourceError, file_anchor, head_bytes, order_rotated, overlap,
                           read_chunks, rotation_key)


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
    on_note: Callable[[str], None] | None = None,
) -> Iterator[pl.DataFrame]:
    """Yield one events frame per chunk of every input, oldest rotated file first, in order.

    A file that cannot be opened or read is reported through ``on_error`` (one
    line naming it) and the other inputs are still processed. Chunks are parsed
    ``options.workers`` at a time in threads (polars releases the GIL), which
    keeps both cores of a small mail host busy; memory grows by one chunk per
    extra worker.

    Read once: a file named twice (same device and inode) is skipped, and the
    lines at the start of a rotated file that repeat the end of the file
    rotated before it (copytruncate) are skipped; both through ``on_note``.
    """
    workers = max(1, options.workers)
    note = on_note or _note
    seen: dict[tuple[int, int], str] = {}
    prev_path, tail = None, bytearray()
    with ThreadPoolExecutor(workers) as pool:
        for path in order_rotated(paths):
            ident = _identity(path)
            if ident is not None and ident in seen:
                note(f"{path}: same file as {seen[ident]}; read once")
                continue
            if ident is not None:
                seen[ident] = path
            # Lines the previous file of the same rotated set ends with, repeated here.
            skip, first_line = 0, 1
            if prev_path is not None and rotation_key(prev_path)[0] == rotation_key(path)[0] and tail:
                head = head_bytes(path, len(tail))
                skip = overlap(bytes(tail), head)
                if skip:
                    first_line += head[:skip].count(b"\n")
                    note(f"{path}: its first {first_line - 1:,} lines repeat the end of {prev_path}; counted once")
            prev_path, tail = path, bytearray()
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
                for chunk in read_chunks(path, options.chunk_bytes, skip, first_line, tail):
                    pending.append((chunk, pool.submit(parse, chunk)))
                    while len(pending) > workers or (pending and pending[0][1].done()):
                        events, last_source = _settle(pending.popleft(), last_source, parse)
                        yield events
            except SourceError as exc:
                on_error(str(exc))
            while pending:
                events, last_source = _settle(pending.popleft(), last_source, parse)
                yield events


def _note(msg: str) -> None:
    print(f"logscope: {msg}", file=sys.stderr)


def _identity(path: str) -> tuple[int, int] | None:
    """Device and inode: the same file named twice (or through a link) is read once."""
    if path == "-":
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


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
