"""Following live files: whole lines, in batches, with checkpoints, across rotations.

An input (``FileInput`` for a path or glob, ``StdinInput`` for ``-``, and
``logscope.sources.journal.JournalInput``) hands out ``Batch`` es of complete
lines. A line without its newline yet is not handed out: the bytes stay in the
file and are read again, whole, once the newline is there. A batch's ``end``
is the byte offset after its last line; the caller commits it (see
``logscope.tail``), and ``checkpoint()`` describes the position after the last
batch handed out.

A file is known by its identity: inode plus a hash of its first line (as
fail2ban does), so a re-used inode is not mistaken for the old file. A
checkpoint is, per followed path, the list of open files (rotated-away files
still being drained, then the live one) with identity, offset and line number.

Rotation, as seen from one path (each has an integration test):

* rename + re-create (logrotate's default), deletion + re-creation, path made a
  symlink to another file: the path's inode changes. The old file stays open
  and is drained first (lines written to it until the writer reopens are not
  lost); it is closed once idle for ``rotate_wait`` seconds.
* copytruncate and truncation in place: the file shrinks below our offset, or
  its first line changes. Lines not yet read are looked for in a rotated
  sibling with the same first line (the copy); then the file is read from 0.
* a path that does not exist yet or cannot be read: one warning, then retried
  on every poll; a file that appears after the start is read from its start.

On restart, each checkpointed file is looked up by identity among the path
and its rotated siblings (``mail.log.1``, ``mail.log-20250101``, also
compressed ``.gz``/``.bz2``/``.xz`` by first line), read from its offset, then
every newer sibling from 0, then the live file: lines written while logscope
was down are counted, once.
"""

from __future__ import annotations

import glob
import hashlib
import os
import stat
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Callable

import polars as pl

from .files import CHUNK_BYTES, SourceError, lines_frame, open_binary, order_rotated, rotation_key

HEAD_BYTES = 4096  # the first line (at most this much) identifies a file
ROTATE_WAIT = 30.0  # seconds a rotated-away file stays open after its last growth
MAX_BATCH_LINES = 200_000

Log = Callable[[str, str], None]  # log(level, message); level: "info", "warning", "error"


def _no_log(level: str, msg: str) -> None:
    pass


@dataclass
class Batch:
    """Complete lines of one input with their provenance.

    ``identity`` + ``end`` (files) or ``cursor`` (journal) name the position
    after this batch: what a persistent sink keys on to stay idempotent.
    """

    input: str  # the input as given: a path, a glob, "-", "journal"
    path: str | None  # file read (None for the journal)
    lines: pl.DataFrame  # one String column "line"
    first_line: int = 1  # line number of the first line in its file
    start: int = 0  # byte offset of the first line
    end: int = 0  # byte offset after the last line
    identity: dict[str, Any] | None = None  # {"ino", "dev", "head"} of the file
    cursor: str | None = None  # journal cursor of the last entry
    mtime: float | None = None  # file mtime (BSD timestamps get their year from it)
    nbytes: int = 0

    @property
    def key(self) -> tuple:
        """Where the lines came from: consecutive batches of one file share it (continuation lines)."""
        return (self.input, self.path, (self.identity or {}).get("ino"))


class Input:
    """What the tail loop reads from; subclasses implement the methods below."""

    spec: str = ""
    key: str | None = None  # checkpoint key in the state file; None: not checkpointed
    finished: bool = False  # no more data will ever come (stdin at EOF, journal --once done)
    wakeup: threading.Event | None = None  # set by inputs fed from threads when data arrives

    def restore(self, saved: dict | None, start: str) -> None:
        """Position the input: at ``saved`` (its last checkpoint), or at ``start`` ("start"/"end") on a first run."""

    def read_batch(self, max_bytes: int, max_lines: int = MAX_BATCH_LINES) -> Batch | None:
        """The next batch of complete lines, or None if nothing is there now."""
        raise NotImplementedError

    def checkpoint(self) -> dict | None:
        """JSON state after the last batch handed out."""
        return None

    def watch_dirs(self) -> set[str]:
        """Directories whose changes may bring new data (for inotify)."""
        return set()

    def status(self) -> list[dict]:
        """Per file: path, offset, size, lag (bytes not read yet), rotations, errors (self-metrics)."""
        return []

    def close(self) -> None:
        pass


def cut_lines(data: bytes, max_lines: int, full_read: bool) -> int:
    """Length of the longest prefix of ``data`` made of whole lines, at most ``max_lines`` of them.

    A read that filled its whole buffer without any newline is a runaway line:
    it is cut there (still one event each piece) so memory stays bounded.
    """
    return cut_and_count(data, max_lines, full_read)[0]


def cut_and_count(data: bytes, max_lines: int, full_read: bool) -> tuple[int, int]:
    """``cut_lines`` and the number of newlines before the cut (counting 6 MB twice costs 2.5 ms)."""
    cut = data.rfind(b"\n") + 1
    if cut == 0:
        return (len(data) if full_read else 0), 0
    n = data.count(b"\n", 0, cut)
    while n > max_lines:  # shrink proportionally, then back to a line end
        cut = data.rfind(b"\n", 0, max(1, cut * max_lines // n)) + 1
        if cut == 0:
            cut = data.find(b"\n") + 1
        n = data.count(b"\n", 0, cut)
    return cut, n


def _head_hash(first: bytes) -> str:
    return hashlib.sha256(first).hexdigest()[:20]


def head_of(data: bytes) -> str | None:
    """Identity hash of a file starting with ``data`` (its first HEAD_BYTES); None: first line not complete."""
    nl = data.find(b"\n", 0, HEAD_BYTES)
    if nl >= 0:
        return _head_hash(data[: nl + 1])
    if len(data) >= HEAD_BYTES:
        return _head_hash(data[:HEAD_BYTES])
    return None


def _count_newlines(fd: int, end: int) -> int:
    n, pos = 0, 0
    while pos < end:
        block = os.pread(fd, min(CHUNK_BYTES, end - pos), pos)
        if not block:
            break
        n += block.count(b"\n")
        pos += len(block)
    return n


class OpenFile:
    """One open file: a live plain file read with pread, or a compressed rotated one streamed."""

    def __init__(self, path: str, fd: int | None = None, stream: IO[bytes] | None = None,
                 st: os.stat_result | None = None, head: str | None = None):
        self.path = path  # where it was found (it may have moved since)
        self.fd = fd
        self.stream = stream  # compressed: read sequentially, never grows
        self.dev = st.st_dev if st else 0
        self.ino = st.st_ino if st else 0
        self.head = head
        self.offset = 0  # after the last line handed out
        self.line = 1  # number of the next line
        self.last_growth = time.monotonic()
        self.final = stream is not None  # a file that will not grow: close at EOF (flush a last partial line)
        self._carry = b""  # compressed streams: read but not yet handed out

    @classmethod
    def open(cls, path: str) -> "OpenFile":
        """Open a plain regular file; OSError/SourceError says why not."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise SourceError(f"{path}: {'is a directory' if stat.S_ISDIR(st.st_mode) else 'not a regular file'}")
            f = cls(path, fd=fd, st=st)
            f.head = head_of(os.pread(fd, HEAD_BYTES, 0))
            return f
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def open_compressed(cls, path: str) -> "OpenFile":
        """Open a gzip/bzip2/xz rotated file; it is matched by its first line only (new inode)."""
        try:
            with open_binary(path) as probe:
                first = probe.read(HEAD_BYTES)
            st = os.stat(path)
        except (OSError, EOFError, ValueError) as exc:
            raise SourceError(f"{path}: cannot read: {exc}") from None
        f = cls(path, stream=open_binary(path), st=st, head=head_of(first) or (_head_hash(first) if first else None))
        f.ino = 0
        return f

    @property
    def identity(self) -> dict[str, Any]:
        return {"dev": self.dev, "ino": self.ino, "head": self.head}

    def saved(self) -> dict[str, Any]:
        return {**self.identity, "path": self.path, "offset": self.offset, "line": self.line}

    def matches(self, saved: dict) -> bool:
        """Is this the checkpointed file ``saved``? Inode (plain files) and first line must agree."""
        if self.stream is not None:
            return saved.get("head") is not None and saved.get("head") == self.head
        if saved.get("ino") != self.ino:
            return False
        return saved.get("head") == self.head or (saved.get("head") is None and not saved.get("offset"))

    def size(self) -> int:
        if self.fd is None:
            return self.offset
        try:
            return os.fstat(self.fd).st_size
        except OSError:
            return self.offset

    def seek_to(self, offset: int, line: int | None = None) -> None:
        """Resume at ``offset`` (a checkpoint), or at the end of its last whole line (--from-end)."""
        if self.stream is not None:
            lines = 0
            while self.offset < offset:
                block = self.stream.read(min(CHUNK_BYTES, offset - self.offset))
                if not block:
                    break
                self.offset += len(block)
                lines += block.count(b"\n")
            self.line = line or lines + 1
            return
        self.offset = offset
        self.line = line if line is not None else _count_newlines(self.fd, offset) + 1

    def seek_end(self) -> None:
        size = self.size()
        tail = os.pread(self.fd, min(size, 1 << 20), max(0, size - (1 << 20)))
        nl = tail.rfind(b"\n")
        self.seek_to(size - len(tail) + nl + 1 if nl >= 0 else (0 if size < (1 << 20) else size))

    def changed(self) -> str | None:
        """'truncated' if the file shrank below our offset, 'replaced' if its first line changed."""
        if self.fd is None:
            return None
        if self.size() < self.offset:
            return "truncated"
        if self.head is not None:
            now = head_of(os.pread(self.fd, HEAD_BYTES, 0))
            if now != self.head:
                return "replaced"
        return None

    def restart(self) -> None:
        """Read the (truncated) file again from its start."""
        self.offset, self.line = 0, 1
        self.head = head_of(os.pread(self.fd, HEAD_BYTES, 0)) if self.fd is not None else None

    def read(self, max_bytes: int, max_lines: int, flush: bool = False) -> tuple[bytes, int, int]:
        """Whole lines after ``offset`` (b"" if none): (data, start offset, first line number).

        ``flush`` also returns a last line without newline (the file is done).
        A compressed file is done at the end of its stream.
        """
        start, line = self.offset, self.line
        if self.stream is not None:
            try:
                more = self.stream.read(max(0, max_bytes - len(self._carry)))
            except (OSError, EOFError, ValueError) as exc:
                raise SourceError(f"{self.path}: read error after {self.offset} bytes: {exc}") from None
            data = self._carry + more
            flush = flush or not more
        else:
            data = os.pread(self.fd, max_bytes, self.offset)
        full = len(data) >= max_bytes
        cut, newlines = cut_and_count(data, max_lines, full)
        if flush and not full and cut == data.rfind(b"\n") + 1:
            cut = len(data)
        whole = data[:cut] if cut < len(data) else data
        if self.stream is not None:
            self._carry = data[cut:]
        if whole:
            self.offset += len(whole)
            self.line += newlines + (0 if whole.endswith(b"\n") else 1)
            self.last_growth = time.monotonic()
            if self.head is None and self.fd is not None:
                self.head = head_of(os.pread(self.fd, HEAD_BYTES, 0))
        return whole, start, line

    def deleted(self) -> bool:
        try:
            return self.fd is not None and os.fstat(self.fd).st_nlink == 0
        except OSError:
            return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.stream is not None:
            self.stream.close()
            self.stream = None


def rotated_siblings(path: str) -> list[str]:
    """Rotated files of ``path`` (``path.1``, ``path.2.gz``, ``path-20250101``), oldest first."""
    esc = glob.escape(path)
    found = {p for p in glob.glob(esc + ".*") + glob.glob(esc + "-*")
             if rotation_key(p)[0] == path and os.path.isfile(p)}
    return order_rotated(sorted(found))


_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


def _open_any(path: str) -> OpenFile:
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(_COMPRESSED_MAGIC):
        return OpenFile.open_compressed(path)
    return OpenFile.open(path)


class PathFollower:
    """Follows one path (``tail -F``): its live file plus rotated-away files still being drained."""

    def __init__(self, spec: str, path: str, log: Log = _no_log, rotate_wait: float = ROTATE_WAIT):
        self.spec = spec
        self.path = path
        self.log = log
        self.rotate_wait = rotate_wait
        self.current: OpenFile | None = None
        self.retired: list[OpenFile] = []  # oldest first; drained before the current file
        self.rotations = 0
        self.errors = 0
        self._problem: str | None = None  # the warning already given for this path

    # -- start ---------------------------------------------------------------
    def restore(self, pool: list[dict], mode: str) -> None:
        """Position at the checkpointed files in ``pool`` (entries used are removed from it).

        ``mode``: "resume" (the input ran before: a file not in the pool is new,
        read it from 0), "start" or "end" (first run: where to start an existing file).
        """
        live = self._open_path(quiet_missing=True)
        if live is not None:
            saved = self._take(pool, live)
            if saved is not None:
                live.seek_to(saved["offset"], saved.get("line"))
            elif mode == "end":
                live.seek_end()
                if live.offset:
                    self.log("info", f"{self.path}: no checkpoint, starting at its end "
                                     f"({live.offset:,} bytes skipped; --from-start reads them)")
        if pool:
            found = False
            for sib in rotated_siblings(self.path):
                try:
                    f = _open_any(sib)
                except (OSError, SourceError):
                    continue
                if live is not None and f.stream is None and f.ino == live.ino:
                    f.close()
                    continue
                saved = self._take(pool, f)
                if saved is not None:
                    found = True
                    f.seek_to(saved["offset"], saved.get("line"))
                    self.log("info", f"{self.path}: resuming in rotated {sib} at byte {f.offset:,}")
                elif found:  # rotated after the checkpoint, never seen: all of it is new
                    self.log("info", f"{self.path}: reading rotated {sib}, written while logscope was down")
                else:
                    f.close()
                    continue
                self.retired.append(f)  # kept open until idle: a writer may not have reopened yet
        self.current = live

    @staticmethod
    def _take(pool: list[dict], f: OpenFile) -> dict | None:
        for i, saved in enumerate(pool):
            if f.matches(saved):
                return pool.pop(i)
        return None

    def _open_path(self, quiet_missing: bool = False) -> OpenFile | None:
        try:
            f = OpenFile.open(self.path)
        except FileNotFoundError:
            self._warn("does not exist (yet); waiting for it", quiet=quiet_missing, level="info")
            return None
        except PermissionError:
            self._warn("permission denied; retrying")
            return None
        except SourceError as exc:
            self._warn(str(exc).removeprefix(f"{self.path}: ") + "; retrying")
            return None
        except OSError as exc:
            self._warn(f"{exc.strerror or exc}; retrying")
            return None
        if self._problem is not None:
            self.log("info", f"{self.path}: readable again")
            self._problem = None
        return f

    def _warn(self, problem: str, quiet: bool = False, level: str = "warning") -> None:
        if problem != self._problem:
            self._problem = problem
            if level != "info":
                self.errors += 1
            if not quiet:
                self.log(level, f"{self.path}: {problem}")

    # -- reading ---------------------------------------------------------------
    def read_batch(self, max_bytes: int, max_lines: int = MAX_BATCH_LINES) -> Batch | None:
        for _ in range(4):  # after a switch, read again at once
            batch = self._read_retired(max_bytes, max_lines)
            if batch is not None:
                return batch
            if self.current is None:
                self.current = self._open_path()
                if self.current is None:
                    return None
            cur = self.current
            try:
                why = cur.changed()
                if why is not None:
                    self._truncated(cur, why)
                    continue  # the copy (if any) is now retired: read it first
                batch = self._batch(cur, max_bytes, max_lines)
            except OSError as exc:
                self._warn(f"read error: {exc.strerror or exc}; retrying", level="error")
                return None
            if batch is not None:
                return batch
            if not self._switch_if_rotated():
                return None
        return None

    def _batch(self, f: OpenFile, max_bytes: int, max_lines: int, flush: bool = False) -> Batch | None:
        data, start, line = f.read(max_bytes, max_lines, flush)
        if not data:
            return None
        mtime = None
        try:
            mtime = os.fstat(f.fd).st_mtime if f.fd is not None else os.stat(f.path).st_mtime
        except OSError:
            pass
        return Batch(self.spec, f.path, lines_frame(data), first_line=line, start=start, end=f.offset,
                     identity=f.identity, mtime=mtime, nbytes=len(data))

    def _read_retired(self, max_bytes: int, max_lines: int) -> Batch | None:
        """Drain rotated-away files (oldest first); close those that are done."""
        for f in list(self.retired):
            try:
                batch = self._batch(f, max_bytes, max_lines)
                if batch is not None:
                    return batch
                if not (f.final or time.monotonic() - f.last_growth >= self.rotate_wait):
                    continue  # the writer may not have reopened yet
                batch = self._batch(f, max_bytes, max_lines, flush=True)  # a last line without newline
                if batch is not None:
                    return batch
            except (OSError, SourceError) as exc:
                self.errors += 1
                self.log("error", f"{f.path}: {exc}; giving up on this rotated file")
            f.close()
            self.retired.remove(f)
        return None

    def _newer_siblings(self, is_ours: Callable[[OpenFile], bool]) -> tuple[OpenFile | None, list[OpenFile]]:
        """Find our file among the rotated siblings; also open every sibling newer than it.

        Several rotations can happen between two looks (``mail.log.1`` shifted
        to ``.2``, a whole new ``.1`` in between): those newer siblings were
        never read, so they are read from their start. Files already open are
        left out. Returns (our file or None, newer unseen files, oldest first).
        """
        open_inodes = {f.ino for f in self.files() if f.stream is None}
        ours: OpenFile | None = None
        newer: list[OpenFile] = []
        for sib in reversed(rotated_siblings(self.path)):  # newest first
            try:
                f = _open_any(sib)
            except (OSError, SourceError):
                continue
            if is_ours(f):
                ours = f
                break
            if f.stream is None and f.ino in open_inodes:
                f.close()
                continue
            newer.append(f)
        if ours is None:
            for f in newer:
                f.close()
            return None, []
        return ours, newer[::-1]

    def _truncated(self, cur: OpenFile, why: str) -> None:
        """copytruncate / truncation in place: finish the copy if we find it, then read from 0."""
        self.rotations += 1
        copy, newer = None, []
        if cur.head is not None:  # (an empty file has no identity yet: nothing to look for)
            copy, newer = self._newer_siblings(
                lambda f: f.head == cur.head and (f.stream is not None or (f.ino != cur.ino and f.size() >= cur.offset)))
        if copy is not None:
            copy.seek_to(cur.offset, cur.line)
            copy.final = True
            self.retired += [copy] + newer
            self.log("info", f"{self.path}: {why} (copytruncate); finishing the copy {copy.path}"
                             + (f" and {len(newer)} newer rotated file(s)" if newer else "") + ", then reading from the start")
        else:
            self.log("info", f"{self.path}: {why}; reading from the start")
        cur.restart()

    def _switch_if_rotated(self) -> bool:
        """The path now names another file (rename, delete + create, symlink change): switch to it.

        The old file becomes retired and is still drained until idle.
        """
        cur = self.current
        assert cur is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if cur.deleted() and time.monotonic() - cur.last_growth >= self.rotate_wait:
                self._close_current()
            return False
        except OSError:
            return False
        if (st.st_dev, st.st_ino) == (cur.dev, cur.ino):
            return False
        new = self._open_path()
        if new is None:
            return False
        if (new.dev, new.ino) == (cur.dev, cur.ino):
            new.close()
            return False
        self.rotations += 1
        self.current = new  # (excluded from the siblings below by inode)
        found, newer = self._newer_siblings(lambda f: f.stream is None and f.ino == cur.ino)
        if found is not None:
            found.close()  # we hold it open already
        self.retired += [cur] + newer
        self.log("info", f"{self.path}: rotated (now inode {new.ino}); draining the old file"
                         + (f" and {len(newer)} newer rotated file(s) never seen" if newer else "")
                         + ", then reading the new one")
        return True

    def _close_current(self) -> None:
        cur = self.current
        if cur is not None:
            cur.final = True
            self.retired.append(cur)  # flushes a partial last line, then closes
            self.current = None

    # -- state -----------------------------------------------------------------
    def files(self) -> list[OpenFile]:
        return self.retired + ([self.current] if self.current is not None else [])

    def checkpoint(self) -> dict:
        return {"files": [f.saved() for f in self.files()]}

    def status(self) -> list[dict]:
        out = []
        for f in self.files():
            size = f.size()
            out.append({"input": self.spec, "path": self.path, "file": f.path, "offset": f.offset, "size": size,
                        "lag": max(0, size - f.offset), "rotations": self.rotations, "errors": self.errors})
        if not out:
            out.append({"input": self.spec, "path": self.path, "file": None, "offset": 0, "size": 0, "lag": 0,
                        "rotations": self.rotations, "errors": self.errors})
        return out

    def idle_and_empty(self) -> bool:
        return not self.retired and self.current is None

    def close(self) -> None:
        for f in self.files():
            f.close()
        self.retired, self.current = [], None


class FileInput(Input):
    """A path or a glob (``/var/log/asa/*.log``); files matching later are picked up, from their start."""

    RESCAN = 0.5  # seconds between glob expansions

    def __init__(self, spec: str, log: Log = _no_log, rotate_wait: float = ROTATE_WAIT):
        self.spec = spec
        self.key = f"file:{os.path.abspath(spec)}"
        self.log = log
        self.rotate_wait = rotate_wait
        self.is_glob = glob.has_magic(spec)
        self.followers: dict[str, PathFollower] = {}
        self._next = 0
        self._last_scan = 0.0

    def _expand(self) -> list[str]:
        if not self.is_glob:
            return [os.path.abspath(self.spec)]
        return sorted(os.path.abspath(p) for p in glob.glob(self.spec) if not os.path.isdir(p))

    def restore(self, saved: dict | None, start: str) -> None:
        pool = []
        for path, entry in ((saved or {}).get("paths") or {}).items():
            for f in entry.get("files", []):
                pool.append({**f, "path": f.get("path") or path})
        mode = "resume" if saved is not None else start
        for path in self._expand():
            fol = PathFollower(self.spec, path, self.log, self.rotate_wait)
            fol.restore(pool, mode)
            self.followers[path] = fol
        for f in pool:
            self.log("warning", f"{f.get('path')}: checkpointed file (inode {f.get('ino')}) not found any more; "
                                "lines written to it after the last checkpoint could not be read")
        self._last_scan = time.monotonic()

    def _rescan(self) -> None:
        now = time.monotonic()
        if not self.is_glob or now - self._last_scan < self.RESCAN:
            return
        self._last_scan = now
        current = set(self._expand())
        for path in sorted(current - set(self.followers)):
            fol = PathFollower(self.spec, path, self.log, self.rotate_wait)
            taken = self._adopt(path)
            if taken is self._SAME:
                continue  # a second name (hard link) of a file followed under its own name
            if taken is not None:
                fol.current = taken  # renamed into the glob (asa.log -> asa-20250101.log): keep its offset
            self.followers[path] = fol
            if taken is None:
                self.log("info", f"{path}: new file matching {self.spec}; reading it from the start")
        for path in list(self.followers):
            if path not in current and self.followers[path].idle_and_empty():
                del self.followers[path]

    _SAME: Any = object()

    def _adopt(self, path: str) -> Any:
        """An already open file now known under ``path`` (renamed into the glob): move it there, offset and all.

        Returns the file, None (not open anywhere) or ``_SAME`` (still open
        under its old name too: a hard link, or a rename not noticed yet).
        """
        try:
            st = os.stat(path)
        except OSError:
            return None
        for fol in self.followers.values():
            for f in fol.files():
                if f.fd is None or (f.dev, f.ino) != (st.st_dev, st.st_ino):
                    continue
                if f is fol.current:
                    try:
                        here = os.stat(fol.path)
                        if (here.st_dev, here.st_ino) == (f.dev, f.ino):
                            return self._SAME
                    except OSError:
                        pass
                    fol.current = None  # its path now names another file (or none): reopened there
                else:
                    fol.retired.remove(f)
                f.path = path
                return f
        return None

    def read_batch(self, max_bytes: int, max_lines: int = MAX_BATCH_LINES) -> Batch | None:
        self._rescan()
        fols = list(self.followers.values())
        for i in range(len(fols)):  # round robin: one busy file does not starve the others
            fol = fols[(self._next + i) % len(fols)]
            batch = fol.read_batch(max_bytes, max_lines)
            if batch is not None:
                self._next = (self._next + i + 1) % len(fols)
                return batch
        return None

    def checkpoint(self) -> dict:
        return {"paths": {p: f.checkpoint() for p, f in self.followers.items()}}

    def watch_dirs(self) -> set[str]:
        dirs = {os.path.dirname(os.path.abspath(self.spec))}
        for path in self.followers:
            dirs.add(os.path.dirname(path))
            real = os.path.realpath(path)
            if real != path:
                dirs.add(os.path.dirname(real))  # a symlink's target changes where it lives
        return {d for d in dirs if os.path.isdir(d)}

    def status(self) -> list[dict]:
        return [s for f in self.followers.values() for s in f.status()]

    def close(self) -> None:
        for f in self.followers.values():
            f.close()


class StdinInput(Input):
    """Standard input (``-``): a thread reads it; no checkpoint (a pipe cannot be re-read)."""

    MAX_BUFFER = 64 * 1024 * 1024

    def __init__(self, stream: IO[bytes] | None = None):
        self.spec = "-"
        self.key = None
        self._stream = stream or sys.stdin.buffer
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._eof = False
        self._line = 1
        self._offset = 0
        self._thread = threading.Thread(target=self._reader, name="logscope-stdin", daemon=True)
        self._started = False

    def restore(self, saved: dict | None, start: str) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def _reader(self) -> None:
        fd = self._stream.fileno()
        while True:
            try:
                block = os.read(fd, 1 << 20)
            except OSError:
                block = b""
            with self._cond:
                while len(self._buf) > self.MAX_BUFFER:  # back-pressure on the writer
                    self._cond.wait()
                if block:
                    self._buf += block
                else:
                    self._eof = True
                self._cond.notify_all()
            if self.wakeup is not None:
                self.wakeup.set()
            if not block:
                return

    def read_batch(self, max_bytes: int, max_lines: int = MAX_BATCH_LINES) -> Batch | None:
        with self._cond:
            data = bytes(self._buf[:max_bytes])
            cut = cut_lines(data, max_lines, len(data) >= max_bytes)
            if cut == 0 and self._eof and data:
                cut = len(data)  # the last line without newline
            if cut == 0:
                if self._eof and not self._buf:
                    self.finished = True
                return None
            del self._buf[:cut]
            self._cond.notify_all()
        whole = data[:cut]
        start, line = self._offset, self._line
        self._offset += cut
        self._line += whole.count(b"\n") + (0 if whole.endswith(b"\n") else 1)
        return Batch("-", "-", lines_frame(whole), first_line=line, start=start, end=self._offset, nbytes=cut)

    def status(self) -> list[dict]:
        return [{"input": "-", "path": "-", "file": "-", "offset": self._offset, "size": self._offset + len(self._buf),
                 "lag": len(self._buf), "rotations": 0, "errors": 0}]
