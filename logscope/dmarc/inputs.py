"""Every way a report reaches an operator, reduced to payloads of report bytes.

A path is a report file, a directory (read recursively), an e-mail message
(``.eml``), an mbox file or a Maildir. What a file *is* comes from its content,
never its name: gzip, zip, bzip2 and xz are opened (nested as deep as
:attr:`Limits.max_depth`), an e-mail message is searched for report
attachments (base64 and quoted-printable decoded, messages inside messages
followed), and what is left must start like XML (a DMARC aggregate report) or
JSON (an SMTP TLS report).

Every byte comes from a stranger, so decompression is bounded
(:class:`Limits`): a zip bomb costs at most ``max_bytes`` of memory per member
and ``max_total`` per input file. Anything that is not a report is reported
through ``on_error(origin, why)`` and reading goes on with the next input.
"""

from __future__ import annotations

import bz2
import email
import email.policy
import io
import lzma
import os
import re
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

MiB = 1024 * 1024

OnError = Callable[[str, str], None]

# Attachment types reporters use (RFC 7489 7.2.1.1, RFC 8460 5.3, and what is seen in the wild).
REPORT_TYPES = frozenset({
    "application/gzip", "application/x-gzip", "application/zip", "application/x-zip",
    "application/x-zip-compressed", "application/xml", "text/xml", "application/octet-stream",
    "application/tlsrpt+gzip", "application/tlsrpt+json", "application/json", "application/x-xz",
    "application/x-bzip2", "message/rfc822",
})
_HEADER_LINE = re.compile(rb"[!-9;-~]+:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Limits:
    """Bounds on what one hostile input may cost."""

    max_bytes: int = 64 * MiB  # one decompressed payload (a report, a zip member, a message)
    max_total: int = 512 * MiB  # everything decompressed from one input path
    max_members: int = 1000  # members read from one zip archive
    max_depth: int = 8  # archives and messages nested in each other


@dataclass
class Payload:
    """The bytes of one report and where they came from."""

    origin: str  # file, plus member / message / attachment names
    data: bytes
    kind: str  # "xml" (DMARC aggregate) or "json" (SMTP TLS report)
    notes: list[str] = field(default_factory=list)  # recoverable damage seen on the way


class InputError(Exception):
    """Why an input (or part of one) is not a report; the caller adds the origin."""


def clean(text: str, limit: int = 200) -> str:
    """A hostile string made safe for a terminal line: no control characters, bounded length."""
    text = _CONTROL.sub("?", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Budget:
    """Decompressed bytes left for one input path."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.left = limits.max_total

    def cap(self) -> int:
        return max(0, min(self.limits.max_bytes, self.left))

    def spend(self, n: int) -> None:
        self.left -= n

    def too_big(self, cap: int) -> str:
        """Why ``cap`` bytes were not enough; an exhausted budget stays exhausted (one line per archive)."""
        if cap < self.limits.max_bytes:
            self.left = 0
            return f"more than {self.limits.max_total:,} bytes decompressed from this input (limit)"
        return f"decompresses to more than {cap:,} bytes (limit)"


def iter_payloads(paths: list[str], on_error: OnError, limits: Limits = Limits()) -> Iterator[Payload]:
    """Yield every report payload found under ``paths``, in a stable order."""
    for path in paths:
        if path != "-" and os.path.isdir(path):
            for file in walk(path, on_error):
                yield from read_path(file, on_error, limits)
        else:
            yield from read_path(path, on_error, limits)


def read_path(path: str, on_error: OnError, limits: Limits = Limits()) -> Iterator[Payload]:
    """The report payloads of one file (or ``-``, standard input)."""
    if path != "-":
        yield from _read_file(path, limits, on_error)
        return
    data = sys.stdin.buffer.read(limits.max_total + 1)
    if len(data) > limits.max_total:
        on_error("-", f"standard input larger than {limits.max_total:,} bytes (limit)")
    elif data.startswith(b"From "):
        yield from _read_mbox("-", io.BytesIO(data), limits, on_error)
    else:
        yield from _expand("-", data, 0, _Budget(limits), on_error)


def walk(top: str, on_error: OnError | None = None) -> Iterator[str]:
    """Files under a directory, sorted; in a Maildir only the messages (``cur``, ``new``).

    Symbolic links to directories are not followed (no loops); unreadable directories go to ``on_error``.
    """
    def error(exc: OSError) -> None:
        if on_error:
            on_error(exc.filename or top, f"cannot read directory: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(top, onerror=error):
        dirnames.sort()
        if "cur" in dirnames and "new" in dirnames:  # a Maildir (or Maildir++ folder)
            for sub in ("new", "cur"):
                d = os.path.join(dirpath, sub)
                try:
                    names = sorted(os.listdir(d))
                except OSError:
                    continue
                yield from (os.path.join(d, n) for n in names if os.path.isfile(os.path.join(d, n)))
            dirnames[:] = [d for d in dirnames if d not in ("cur", "new", "tmp")]
            continue
        for name in sorted(filenames):
            yield os.path.join(dirpath, name)


def _read_file(path: str, limits: Limits, on_error: OnError) -> Iterator[Payload]:
    try:
        # os.open/os.read, not open(): a year of reports is many small files, and a file object
        # costs as much as the read itself
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            size = os.fstat(fd).st_size
            if size > limits.max_total:  # only an mbox may be this large: it is read message by message
                with open(fd, "rb", buffering=0, closefd=False) as fh:
                    if fh.read(5) == b"From ":
                        fh.seek(0)
                        yield from _read_mbox(path, io.BufferedReader(fh), limits, on_error)
                    else:
                        on_error(path, f"file of {size:,} bytes is larger than the {limits.max_total:,}-byte limit")
                return
            data = _read_all(fd, size)
        finally:
            os.close(fd)
    except FileNotFoundError:
        on_error(path, "no such file")
        return
    except PermissionError:
        on_error(path, "permission denied")
        return
    except OSError as exc:
        on_error(path, exc.strerror or str(exc))
        return
    if data.startswith(b"From "):
        yield from _read_mbox(path, io.BytesIO(data), limits, on_error)
    else:
        yield from _expand(path, data, 0, _Budget(limits), on_error)


def _read_all(fd: int, size: int) -> bytes:
    """The rest of ``fd``: a regular file in one read (plus the one that sees its end)."""
    data = os.read(fd, size + 1 if size else 65536)
    if not data:
        return data
    parts = [data]
    while chunk := os.read(fd, 65536):  # grew while read, or not a regular file (a pipe)
        parts.append(chunk)
    return b"".join(parts) if len(parts) > 1 else data


def _read_mbox(path: str, fh, limits: Limits, on_error: OnError) -> Iterator[Payload]:
    """Split an mbox at ``From `` lines (after a blank line) without loading the whole file."""
    n, buf, size, too_big, prev_blank = 0, [], 0, False, True

    def flush():
        if n and not too_big:
            yield from _expand(f"{path}: message {n}", b"".join(buf), 1, _Budget(limits), on_error)
        elif n:
            on_error(f"{path}: message {n}", f"message larger than the {limits.max_bytes:,}-byte limit")

    for line in fh:
        if line.startswith(b"From ") and prev_blank:
            yield from flush()
            n, buf, size, too_big = n + 1, [], 0, False
        elif not too_big:
            size += len(line)
            if size > limits.max_bytes:
                too_big, buf = True, []
            else:
                buf.append(line)
        prev_blank = line in (b"\n", b"\r\n")
    yield from flush()
    if n == 0:
        on_error(path, "empty mbox")


def _expand(origin: str, data: bytes, depth: int, budget: _Budget, on_error: OnError,
            notes: list[str] | None = None) -> Iterator[Payload]:
    """Recursively open containers until XML or JSON report bytes remain."""
    notes = notes or []
    if depth > budget.limits.max_depth:
        on_error(origin, f"nested deeper than {budget.limits.max_depth} archives/messages (limit)")
        return
    try:
        kind = sniff(data)
        if kind in ("gzip", "bzip2", "xz"):
            inner, note = _decompress(kind, data, budget)
            yield from _expand(origin, inner, depth + 1, budget, on_error, notes + ([note] if note else []))
        elif kind == "zip":
            yield from _zip_members(origin, data, depth, budget, on_error)
        elif kind == "message":
            yield from _attachments(origin, data, depth, budget, on_error)
        elif kind in ("xml", "json"):
            yield Payload(origin, data, kind, notes)
        else:
            raise InputError(kind)
    except InputError as exc:
        on_error(origin, str(exc))


def sniff(data: bytes) -> str:
    """What ``data`` is, from its first bytes; for non-reports, why not (a phrase)."""
    if not data:
        return "empty file"
    if data[:2] == b"\x1f\x8b":
        return "gzip"
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if data[:3] == b"BZh":
        return "bzip2"
    if data[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 with a BOM: expat reads it
        return "xml" if data[2:].lstrip(b"\x00 \t\r\n")[:1] == b"<" else "not a report: UTF-16 text that is not XML"
    head = data[:65536].removeprefix(b"\xef\xbb\xbf").lstrip()
    if head[:1] == b"<":
        return "xml"
    if head[:1] in (b"{", b"["):
        return "json"
    if head.startswith(b"From ") or (_HEADER_LINE.match(head) and (b"\n\n" in head or b"\n\r\n" in head)):
        return "message"
    if not head:
        return "not a report: only white space"
    if b"\x00" in head[:1024]:
        return "not a report: binary data that is not gzip, zip, bzip2 or xz"
    return "not a report: text that is neither XML, JSON nor an e-mail message"


def _decompress(kind: str, data: bytes, budget: _Budget) -> tuple[bytes, str | None]:
    """Decompress at most the budget's cap; a truncated stream keeps what was readable."""
    cap = budget.cap()
    note = None
    if kind == "gzip":
        out, note = _gunzip(data, cap)
    else:
        dec = bz2.BZ2Decompressor() if kind == "bzip2" else lzma.LZMADecompressor()
        try:
            out = dec.decompress(data, max_length=cap + 1)
        except (OSError, lzma.LZMAError, EOFError, ValueError) as exc:
            raise InputError(f"corrupt {kind} data: {exc}") from None
        if not dec.eof and len(out) <= cap:
            note = f"truncated {kind} data: read what was there"
    if len(out) > cap:
        raise InputError(budget.too_big(cap))
    budget.spend(len(out))
    return out, note


def _gunzip(data: bytes, cap: int) -> tuple[bytes, str | None]:
    out = bytearray()
    rest = data
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += d.decompress(rest, cap + 1 - len(out))
        except zlib.error as exc:
            if out:  # garbage after a complete member: keep what we have
                return bytes(out), f"junk after gzip data ignored ({exc})"
            raise InputError(f"corrupt gzip data: {exc}") from None
        if len(out) > cap:
            return bytes(out), None  # the caller reports the limit
        if not d.eof:
            return bytes(out), "truncated gzip data: read what was there"
        rest = d.unused_data.lstrip(b"\x00")  # some writers pad members with NULs
    return bytes(out), None


def _zip_members(origin: str, data: bytes, depth: int, budget: _Budget, on_error: OnError) -> Iterator[Payload]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in zf.infolist() if not i.filename.endswith("/") and not i.filename.startswith("__MACOSX/")]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise InputError(f"corrupt zip archive: {exc}") from None
    limits = budget.limits
    if not infos:
        raise InputError("zip archive without files")
    if len(infos) > limits.max_members:
        on_error(origin, f"zip archive has {len(infos):,} members; only the first {limits.max_members:,} read (limit)")
        infos = infos[: limits.max_members]
    for n, info in enumerate(infos):
        where = f"{origin}[{info.filename}]"
        cap = budget.cap()
        if cap == 0:
            on_error(origin, f"more than {limits.max_total:,} bytes decompressed from this input (limit); "
                             f"{len(infos) - n:,} zip members not read")
            return
        try:
            with zf.open(info) as member:
                out = member.read(cap + 1)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error, lzma.LZMAError,
                OSError, EOFError, ValueError) as exc:
            on_error(where, f"unreadable zip member: {exc}")
            continue
        if len(out) > cap:
            on_error(where, budget.too_big(cap))
            continue
        budget.spend(len(out))
        yield from _expand(where, out, depth + 1, budget, on_error)


def _attachments(origin: str, data: bytes, depth: int, budget: _Budget, on_error: OnError) -> Iterator[Payload]:
    """Report attachments of an e-mail message (any MIME depth, messages inside messages)."""
    if data.startswith(b"From "):  # a single message saved with its mbox separator line
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    try:
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        parts = list(_leaves(msg, depth, budget.limits.max_depth))
    except RecursionError:
        raise InputError("MIME structure nested too deeply") from None
    found = 0
    for n, (part, level) in enumerate(parts):
        ctype = part.get_content_type()
        try:
            name = part.get_filename()
        except (ValueError, LookupError, TypeError):
            name = None
        if ctype not in REPORT_TYPES and not name and not ctype.startswith("application/"):
            continue  # the message's own text
        try:
            payload = part.get_payload(decode=True)
        except (ValueError, LookupError, TypeError, AssertionError):
            payload = None
        if not payload:
            continue
        found += 1
        label = f"attachment {name!s}" if name else f"part {n} ({ctype})"
        yield from _expand(f"{origin}: {label}", payload, level + 1, budget, on_error)
    if not found:
        raise InputError("e-mail message without a report attachment")


MAX_MIME_PARTS = 10_000


def _leaves(part, depth: int, max_depth: int, mime_depth: int = 0) -> Iterator[tuple]:
    """The non-multipart parts of a message with their nesting depth; messages inside messages count
    towards ``max_depth`` like archives do."""
    if depth > max_depth:
        raise InputError(f"nested deeper than {max_depth} archives/messages (limit)")
    if mime_depth > 4 * max_depth:
        raise InputError(f"MIME parts nested deeper than {4 * max_depth} (limit)")
    if not part.is_multipart():
        yield part, depth
        return
    inner = depth + (part.get_content_maintype() == "message")
    subparts = part.get_payload()
    if len(subparts) > MAX_MIME_PARTS:
        raise InputError(f"more than {MAX_MIME_PARTS:,} MIME parts (limit)")
    for sub in subparts:
        yield from _leaves(sub, inner, max_depth, mime_depth + 1)
