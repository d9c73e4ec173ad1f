"""Sources -> events: read inputs chunk by chunk and parse each chunk.

The one place where files, header options and parsers meet; ``parse``,
``bench`` and later ``report``/``tail`` all read events through here.
"""

from __future__ import annotations

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


def iter_events(
    paths: list[str],
    parsers: ParserSet,
    options: ReadOptions,
    on_error: Callable[[str], None],
) -> Iterator[pl.DataFrame]:
    """Yield one events frame per chunk of every input, oldest rotated file first.

    A file that cannot be opened or read is reported through ``on_error`` (one
    line naming it) and the other inputs are still processed.
    """
    for path in order_rotated(paths):
        header = options.header
        if header.year is None:
            header = replace(header, anchor=file_anchor(path))
        last_source = None
        try:
            for chunk in read_chunks(path, options.chunk_bytes):
                events = parse_lines(chunk.lines, parsers, header, file=path if options.keep_file else None,
                                     first_line=chunk.first_line, continues=last_source)
                if events.height:
                    last_source = events["source"][-1]
                yield events
        except SourceError as exc:
            on_error(str(exc))
