"""File sources: plain, gzip, bzip2 and xz files and stdin, read in bounded chunks.

A chunk is a run of whole lines (at most about ``chunk_bytes`` of input), so
memory does not grow with the file. Compression is recognised by its magic
bytes, not the file name. Rotated sets given in any order
(``maillog maillog.1 maillog.2.gz``) are read oldest first.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
import sys
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import BinaryIO, Iterator

import polars as pl

CHUNK_BYTES = 6 * 1024 * 1024  # about 36,000 lines: each regex warms up once per chunk, so not smaller; peak RSS ~420 MB with 2 workers
# A line longer than this is cut into pieces (each still an event) so memory stays bounded.
MAX_LINE_BYTES = 64 * 1024 * 1024
_MAGIC = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}
_COMPRESSED_SUFFIX = re.compile(r"\.(gz|bz2|xz)$")
_ROTATION = re.compile(r"^(?P<base>.*?)(?:[.-](?P<n>\d{1,3})|[.-](?P<date>\d{8}(?:\d{2})?))?$")


class SourceError(Exception):
    """A file that cannot be read; the message names the file and the problem."""


@dataclass
class Chunk:
    """Whole lines of one input, with where they start."""

    path: str
    lines: pl.DataFrame  # one String column "line"
    first_line: int  # 1-based number of the first line in its file
    end_offset: int  # bytes of (decompressed) input consumed after this chunk


def rotation_key(path: str) -> tuple[str, int, str]:
    """Sort key putting a rotated set oldest first: maillog.3.gz, maillog.2.gz, maillog.1, maillog."""
    name = _COMPRESSED_SUFFIX.sub("", os.path.basename(path))
    m = _ROTATION.match(name)
    assert m is not None  # the pattern matches any string
    base = os.path.join(os.path.dirname(path), m["base"])
    if m["n"] is not None:
        return base, -int(m["n"]), ""
    if m["date"] is not None:  # dateext: older dates first, the live file last
        return base, -1000, m["date"]
    return base, 0, ""


def order_rotated(paths: list[str]) -> list[str]:
    """Order each rotated set chronologically; sets keep their command-line order."""
    groups: dict[str, list[str]] = {}
    for p in paths:
        groups.setdefault(rotation_key(p)[0], []).append(p)
    out: list[str] = []
    for members in groups.values():
        out += sorted(members, key=lambda p: rotation_key(p)[1:])
    return out


def open_binary(path: str) -> BinaryIO:
    """Open a file (or ``-`` for stdin) for reading, decompressing by magic bytes."""
    if path == "-":
        return sys.stdin.buffer
    try:
        f = open(path, "rb")
    except IsADirectoryError:
        raise SourceError(f"{path}: is a directory") from None
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except PermissionError:
        raise SourceError(f"{path}: permission denied") from None
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror or exc}") from None
    head = f.peek(6)[:6] if hasattr(f, "peek") else b""
    for magic, opener in _MAGIC.items():
        if head.startswith(magic):
            return opener(f)  # type: ignore[return-value]
    return f


def file_anchor(path: str) -> datetime:
    """The time the last line of a file was written: its mtime (now for stdin)."""
    if path == "-":
        return datetime.now(timezone.utc)
    try:
        return datetime.fromtimestamp(os.stat(path).st_mtime, timezone.utc)
    except OSError:
        return datetime.now(timezone.utc)


def lines_frame(data: bytes) -> pl.DataFrame:
    """Split a block of whole lines into a one-column frame, in Rust.

    ``read_csv`` with a separator that is not in the data and no quoting is the
    fastest splitter polars has; invalid UTF-8 becomes U+FFFD, ``\\r\\n`` ends a
    line, and blank lines stay as (empty) rows so line numbers hold.
    """
    if not data:
        return pl.DataFrame({"line": pl.Series([], dtype=pl.String)})
    if b"\x1f" in data:  # the separator itself occurs: split in Python instead
        text = data.decode("utf-8", errors="replace")
        rows = text.split("\n")
        if rows and rows[-1] == "":
            rows.pop()
        return pl.DataFrame({"line": pl.Series([r.removesuffix("\r") for r in rows], dtype=pl.String)})
    df = pl.read_csv(
        io.BytesIO(data), has_header=False, separator="\x1f", quote_char=None,
        encoding="utf8-lossy", new_columns=["line"], infer_schema=False,
        truncate_ragged_lines=True, raise_if_empty=False,
    )
    return df.with_columns(pl.col("line").fill_null(""))


def read_chunks(path: str, chunk_bytes: int = CHUNK_BYTES, start_offset: int = 0,
                first_line: int = 1, tail: bytearray | None = None) -> Iterator[Chunk]:
    """Yield the file's lines in chunks of whole lines; a last line without newline is kept.

    ``tail``, when given, ends up holding the file's last ``OVERLAP_BYTES``
    (whole lines), for ``overlap`` with the next file of a rotated set.
    """
    f = open_binary(path)
    try:
        if start_offset:
            f.seek(start_offset)
        offset, line_no, carry = start_offset, first_line, b""
        while True:
            try:
                block = f.read(chunk_bytes)
            except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError) as exc:
                raise SourceError(f"{path}: read error after {offset} bytes: {exc}") from None
            if not block:
                break
            data = carry + block
            cut = data.rfind(b"\n")
            if cut < 0 and len(data) < MAX_LINE_BYTES:
                carry = data
                continue
            if cut < 0:  # a runaway line: emit what we have as a line of its own
                cut = len(data) - 1
            whole, carry = data[: cut + 1], data[cut + 1:]
            frame = lines_frame(whole)
            offset += len(whole)
            if tail is not None:
                _keep_tail(tail, whole)
            yield Chunk(path, frame, line_no, offset)
            line_no += frame.height
        if carry:
            frame = lines_frame(carry)
            offset += len(carry)
            if tail is not None:
                _keep_tail(tail, carry + b"\n")
            yield Chunk(path, frame, line_no, offset)
    finally:
        if f is not sys.stdin.buffer:
            f.close()


# How far back a rotated file's end is compared with the start of the next one.
OVERLAP_BYTES = 4 * 1024 * 1024


def _keep_tail(tail: bytearray, data: bytes) -> None:
    tail += data
    if len(tail) > OVERLAP_BYTES:
        del tail[: len(tail) - OVERLAP_BYTES]


def head_bytes(path: str, n: int = OVERLAP_BYTES) -> bytes:
    """The first ``n`` (decompressed) bytes of a file; empty when it cannot be read."""
    try:
        f = open_binary(path)
    except SourceError:
        return b""
    try:
        return f.read(n)
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError):
        return b""
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def overlap(prev_tail: bytes, head: bytes) -> int:
    """Bytes at the start of ``head`` (whole lines) that repeat the end of ``prev_tail``.

    copytruncate, and copies made while the log was written, leave the last
    lines of ``maillog.1`` again at the start of ``maillog``. The overlap is the
    longest run of whole lines that ends ``prev_tail`` and starts ``head``; it
    must contain the previous file's last line, which carries its timestamp.
    """
    if not prev_tail.endswith(b"\n") or not head:
        return 0
    last_start = prev_tail.rfind(b"\n", 0, len(prev_tail) - 1) + 1
    last = prev_tail[last_start:]
    best, pos = 0, head.find(last)
    while pos >= 0:
        end = pos + len(last)
        if (pos == 0 or head[pos - 1] == 0x0A) and end <= len(prev_tail) and prev_tail.endswith(head[:end]):
            best = end
        pos = head.find(last, pos + 1)
    return best
