"""The local event archive: hive-partitioned Parquet that outlives log rotation.

Layout under the archive directory (default ``<state dir>/archive``)::

    day=YYYY-MM-DD/host=HOST/part-<sha>.parquet   events of one UTC day and syslog host
    _ledger.json                                  what was archived already (files, tail batches)
    _lock                                         flock: one writer at a time

Part files hold the columns of ``logscope.schema`` except ``host`` (it is the
partition value, percent-encoded; a null host or a line without timestamp goes
to ``__HIVE_DEFAULT_PARTITION__``, the Hive null marker), so DuckDB, Spark or
polars read the tree as a plain Hive dataset. A part's name is a hash of where
its lines came from, so writing the same lines again replaces the part instead
of adding a copy.

Parts become visible only together with the ledger entry that accounts for
them (:meth:`Archive._commit`): they are written as hidden temp files
(``.part-<sha>.parquet.tmp``, which no ``*.parquet`` scan sees), then the ledger
is saved with the change *and* a redo list of the renames, then the renames are
done. A full disk (ENOSPC) or a crash before the ledger is saved leaves nothing
visible and nothing recorded (the temp files are removed, at once or on the
next open), so a later run archives those lines again; a crash after it is
rolled forward on the next open.

Reading (:func:`iter_pieces`) streams the events in time order in pieces of
about :data:`PIECE_ROWS` events (consecutive minutes of one day), so memory
does not grow with the size of a day.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import lzma
import os
import zlib
import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

import polars as pl

from .config import ARCHIVE_RETENTION_DAYS
from .schema import SCHEMA
from .sources.files import SourceError, open_binary
from .sources.follow import HEAD_BYTES, _COMPRESSED_MAGIC, head_of
from .state import default_state_dir

LEDGER = "_ledger.json"
LEDGER_VERSION = 1
NULL_PART = "__HIVE_DEFAULT_PARTITION__"
DEFAULT_RETENTION_DAYS = ARCHIVE_RETENTION_DAYS
PART_GLOB = "day=*/host=*/*.parquet"
TMP_GLOB = "day=*/host=*/.*.tmp"
# events per compacted part file: compaction holds one such file in memory (about 400 bytes an event, twice
# while sorting), so a busy host's day of millions of events is never read at once
COMPACT_ROWS = 500_000
PIECE_ROWS = 32_768  # events per piece read back (about one 6 MB read chunk of a log file)
ROW_GROUP_ROWS = 16_384  # rows per Parquet row group: a piece decodes only the row groups of its minutes
FILE_COLUMNS = [c for c in SCHEMA.names() if c != "host"]


# what a broken compressed file raises while read (sources.files.read_chunks lets zlib.error through)
_DECODE_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)


class ArchiveError(Exception):
    """The archive cannot be used; the message says why (one line).

    ``transient``: the disk, quota or file-size limit is full; writing can work
    again once space is freed (``tail`` then holds the batch and offers it again).
    """

    transient = False


_STORAGE_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _write_error(cls: type, msg: str, exc: OSError) -> "ArchiveError":
    err = cls(msg)
    err.transient = exc.errno in _STORAGE_FULL
    return err


def default_archive_dir() -> Path:
    return default_state_dir() / "archive"


def _sha(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]


def _part_value(value: str | None) -> str:
    """A partition directory value: percent-encoded so no host name can escape its directory."""
    return NULL_PART if value is None or value == "" else quote(value, safe="")


class Archive:
    """One archive directory, opened for writing: ``with Archive(dir) as a: a.ingest_file(...)``."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root else default_archive_dir()
        self.ledger: dict[str, Any] = {}
        self._lock_fd: int | None = None

    # -- open / close --------------------------------------------------------
    def __enter__(self) -> "Archive":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        """Check the directory is writable, lock it, load the ledger, finish an interrupted compaction."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".probe"
            probe.write_bytes(b"")
            probe.unlink()
            fd = os.open(self.root / "_lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ArchiveError(f"archive directory {self.root} is not writable: {exc.strerror or exc} "
                               "(use --archive DIR)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ArchiveError(f"archive {self.root} is in use by another logscope process") from None
            raise ArchiveError(f"{self.root}: cannot lock: {exc.strerror or exc}") from None
        self._lock_fd = fd
        self.ledger = self._load_ledger()
        self._finish_commit()
        self._finish_compaction()
        self._remove_stale_temp_files()

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load_ledger(self) -> dict[str, Any]:
        path = self.root / LEDGER
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {"version": LEDGER_VERSION, "files": {}, "batches": {}}
        except (OSError, ValueError) as exc:
            raise ArchiveError(f"{path}: not a readable archive ledger ({exc})") from None
        if not isinstance(data, dict) or data.get("version") != LEDGER_VERSION:
            raise ArchiveError(f"{path}: unknown ledger version")
        data.setdefault("files", {})
        data.setdefault("batches", {})
        return data

    def _save_ledger(self) -> None:
        """Replace the ledger file (temp file, fsync, rename); :class:`LedgerNotSaved` when the old one stays."""
        path = self.root / LEDGER
        tmp = path.with_name(path.name + ".tmp")
        try:
            _write_file(tmp, json.dumps(self.ledger, sort_keys=True, indent=1).encode())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _write_error(LedgerNotSaved, f"{path}: cannot write: {exc.strerror or exc}", exc) from None
        try:
            dfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:  # the new ledger is in place, only its durability is in doubt
            raise ArchiveError(f"{self.root}: cannot sync: {exc.strerror or exc}") from None

    def _remove_stale_temp_files(self) -> None:
        """Temp parts of a run that died before its commit (we hold the lock: nobody is writing them)."""
        for tmp in [*self.root.glob(TMP_GLOB), *self.root.glob("day=*/host=*/*.parquet.tmp")]:
            tmp.unlink(missing_ok=True)

    # -- writing -------------------------------------------------------------
    def write_events(self, events: pl.DataFrame, origin: str) -> int:
        """Write ``events`` into their day/host partitions; ``origin`` names the lines (idempotent part names)."""
        self._commit(self._stage(events, origin), {})
        return events.height

    def _stage(self, events: pl.DataFrame, origin: str) -> list[tuple[Path, Path]]:
        """Write each day/host group of ``events`` to a hidden temp file; the (temp, final) paths.

        On any error nothing stays behind (a full disk keeps no partial file) and ArchiveError is raised.
        """
        if events.height == 0:
            return []
        # a line without timestamp belongs to the day of the line before it (continuations, odd headers)
        keyed = events.with_columns(
            pl.col("ts").dt.date().forward_fill().backward_fill().cast(pl.String).alias("_day"))
        staged: list[tuple[Path, Path]] = []
        ddir = self.root
        try:
            for (day, host), part in keyed.group_by("_day", "host", maintain_order=True):
                ddir = self.root / f"day={day or NULL_PART}" / f"host={_part_value(host)}"
                final = ddir / f"part-{_sha(origin, day, host)}.parquet"
                tmp = ddir / f".{final.name}.tmp"
                staged.append((tmp, final))
                ddir.mkdir(parents=True, exist_ok=True)
                _write_parquet(part.select(FILE_COLUMNS), tmp)
        except OSError as exc:
            _discard(staged)
            raise _write_error(ArchiveError, f"{ddir}: cannot write: {exc.strerror or exc}", exc) from None
        return staged

    def _commit(self, staged: list[tuple[Path, Path]], changes: dict[tuple[str, str], Any]) -> None:
        """Make staged parts visible together with ledger ``changes`` ({(section, key): value}).

        The ledger is saved first, with the changes and the list of renames still to do; then the
        renames run. If that save fails (a full disk) the changes are undone and the temp files
        removed: nothing is visible, nothing recorded. A crash after it is finished by the next open.
        """
        if not staged and not changes:
            return
        before = {(sec, key): self.ledger[sec].get(key, _MISSING) for sec, key in changes}
        for (sec, key), value in changes.items():
            self.ledger[sec][key] = value
        if staged:
            self.ledger["committing"] = [[str(t.relative_to(self.root)), str(f.relative_to(self.root))]
                                         for t, f in staged]
        try:
            self._save_ledger()
        except LedgerNotSaved:
            for (sec, key), value in before.items():
                if value is _MISSING:
                    self.ledger[sec].pop(key, None)
                else:
                    self.ledger[sec][key] = value
            self.ledger.pop("committing", None)
            _discard(staged)
            raise
        if staged:
            self._finish_commit()

    def _finish_commit(self) -> None:
        """Do the renames of a saved commit (again: each is done at most once, a missing temp file was)."""
        job = self.ledger.get("committing")
        if not job:
            return
        try:
            for tmp, final in job:
                if (self.root / tmp).exists():
                    os.replace(self.root / tmp, self.root / final)
        except OSError as exc:
            raise ArchiveError(f"{self.root}: cannot rename archived parts: {exc.strerror or exc}") from None
        self.ledger.pop("committing", None)
        self._save_ledger()

    def ingest_file(self, path: str, parsers, header, on_error: Callable[[str], None]) -> int:
        """Archive the lines of ``path`` not archived before; the number of events added.

        A file is known by inode + hash of its first line (a compressed one by
        the hash of its first decompressed line + size, or, rotated from a plain
        file already archived, by its first line alone); the ledger keeps how many
        lines of it are archived, so a grown file adds only its new lines.
        """
        from .pipeline import ReadOptions, iter_events
        try:
            ident = file_identity(path)
        except SourceError as exc:
            on_error(str(exc))
            return 0
        files = self.ledger["files"]
        prior = files.get(ident["key"])
        if prior is None and ident["compressed"]:
            prior = next((e for e in files.values() if e.get("head") == ident["head"]), None)
        done = prior["lines"] if prior else 0
        limit = ident["lines"]  # complete lines now (None: all, a compressed file does not grow)
        if limit is not None and limit <= done:
            return 0
        failed: list[str] = []

        def err(msg: str) -> None:
            failed.append(msg)
            on_error(msg)

        entry = {"path": os.path.abspath(path), "head": ident["head"], "lines": done, "size": ident["size"],
                 "archived_at": datetime.now().astimezone().isoformat()}
        # chunk by chunk (memory: one chunk), each chunk's parts committed with the line count they reach,
        # so a run stopped by an error (a full disk) keeps what it archived and the next run goes on from there
        added = 0
        try:
            for events in iter_events([path], parsers, ReadOptions(header), err):
                cond = pl.col("line") > done
                if limit is not None:
                    cond = cond & (pl.col("line") <= limit)
                events = events.filter(cond)
                if events.height:
                    lo, hi = events["line"].min(), events["line"].max()
                    staged = self._stage(events, f"file|{ident['key']}|{lo}|{hi}")
                    entry = dict(entry, lines=max(entry["lines"], hi))
                    self._commit(staged, {("files", ident["key"]): entry})
                    added += events.height
        except _DECODE_ERRORS as exc:
            err(f"{path}: read error: {exc}")
        last = limit if limit is not None and not failed else entry["lines"]
        if last == done and prior is not None:
            return added
        if files.get(ident["key"]) != dict(entry, lines=last):
            self._commit([], {("files", ident["key"]): dict(entry, lines=last)})
        return added

    # -- retention and compaction -------------------------------------------
    def days(self) -> list[date]:
        out = []
        for d in self.root.glob("day=*"):
            try:
                out.append(date.fromisoformat(d.name[4:]))
            except ValueError:
                continue
        return sorted(out)

    def apply_retention(self, days: int) -> list[str]:
        """Remove day partitions more than ``days`` days older than the newest; their names."""
        if days <= 0:
            return []
        known = self.days()
        if not known:
            return []
        cutoff = known[-1] - timedelta(days=days)
        removed = []
        for d in known:
            if d < cutoff:
                shutil.rmtree(self.root / f"day={d.isoformat()}")
                removed.append(f"day={d.isoformat()}")
        return removed

    def compact(self) -> tuple[int, int]:
        """Merge the part files of each partition into files of at most ``COMPACT_ROWS`` events (one file
        for a quiet host's day); (files before, files after). Memory: one merged file at a time."""
        before = after = 0
        for ddir in sorted({p.parent for p in self.root.glob(PART_GLOB)}):
            found = sorted(ddir.glob("part-*.parquet"))
            before += len(found)
            for group in _compact_groups(found):
                after += 1
                if len(group) > 1:
                    self._merge_parts(ddir, group)
        return before, after

    def _merge_parts(self, ddir: Path, parts: list[Path]) -> None:
        """Replace ``parts`` (of one partition) by one file sorted by time, crash-safe through the ledger."""
        merged = pl.read_parquet(parts).sort("ts", "file", "line", nulls_last=True, maintain_order=True)
        name = ddir / f"part-{_sha('compact', *[p.name for p in parts])}.parquet"
        tmp = ddir / f".{name.name}.tmp"
        try:
            _write_parquet(merged, tmp)
        except OSError as exc:
            raise ArchiveError(f"{ddir}: cannot compact: {exc.strerror or exc}") from None
        # record the swap first: a crash between rename and unlink must not leave both
        self.ledger["compacting"] = {"new": str(name.relative_to(self.root)),
                                     "old": [str(p.relative_to(self.root)) for p in parts]}
        self._save_ledger()
        os.replace(tmp, name)
        self._finish_compaction()

    def _finish_compaction(self) -> None:
        job = self.ledger.get("compacting")
        if not job:
            return
        if (self.root / job["new"]).exists():
            for old in job["old"]:
                if old != job["new"]:
                    (self.root / old).unlink(missing_ok=True)
        self.ledger.pop("compacting", None)
        self._save_ledger()


def _compact_groups(parts: list[Path]) -> list[list[Path]]:
    """The parts of a partition in time order (by their first event), cut into runs of at most
    ``COMPACT_ROWS`` events; a part larger than that is a run of its own."""
    info = []
    for p in parts:
        row = pl.scan_parquet(p).select(pl.len().alias("n"), pl.col("ts").min().alias("first")).collect().row(0)
        info.append((row[1] is None, row[1] or datetime.min.replace(tzinfo=timezone.utc), p.name, p, row[0]))
    info.sort(key=lambda x: x[:3])
    groups: list[list[Path]] = []
    size = 0
    for *_, p, n in info:
        if not groups or size + n > COMPACT_ROWS:
            groups.append([])
            size = 0
        groups[-1].append(p)
        size += n
    return groups


def file_identity(path: str) -> dict[str, Any]:
    """Identity of a log file and its number of complete lines (None for compressed: all of them)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        st = os.stat(path)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if os.path.isdir(path):
        raise SourceError(f"{path}: is a directory")
    compressed = magic.startswith(_COMPRESSED_MAGIC)
    lines = None if compressed else 0
    try:
        with open_binary(path) as f:
            first = f.read(HEAD_BYTES)
            if not compressed:
                lines = first.count(b"\n")
                while block := f.read(1 << 20):
                    lines += block.count(b"\n")
    except _DECODE_ERRORS as exc:
        raise SourceError(f"{path}: cannot read: {exc}") from None
    head = head_of(first) or hashlib.sha256(first).hexdigest()[:20]
    key = f"z:{head}:{st.st_size}" if compressed else f"{st.st_dev}:{st.st_ino}:{head}"
    return {"key": key, "head": head, "size": st.st_size, "lines": lines, "compressed": compressed}


_MISSING = object()


class LedgerNotSaved(ArchiveError):
    """The ledger could not be replaced; the one on disk is unchanged."""


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    """``df`` as a zstd Parquet file, fsynced; OSError (with errno, e.g. ENOSPC) on failure, no file left.

    polars is given a memory buffer (it reports a full disk as a ComputeError and leaves a partial file);
    the bytes are written here so the error is the operating system's.
    """
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    _write_file(path, buf.getvalue())


def _write_file(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data``, fsynced; on any error (ENOSPC) no file is left."""
    view = memoryview(data)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _discard(staged: list[tuple[Path, Path]]) -> None:
    """Remove staged temp files and the partition directories left empty."""
    for tmp, _ in staged:
        tmp.unlink(missing_ok=True)
    for ddir in {t.parent for t, _ in staged}:
        for d in (ddir, ddir.parent):
            try:
                d.rmdir()
            except OSError:  # not empty (other parts), or gone: both fine
                pass


class ArchiveSink:
    """A ``logscope tail`` sink that archives every batch once.

    Idempotent by (batch.input, batch.identity, batch.end): a batch that ends
    at or before the last one archived for the same file is skipped (a replay
    after a crash between archive write and checkpoint); journal batches by cursor.
    """

    def __init__(self, root: Path | str | None = None, retention_days: int = DEFAULT_RETENTION_DAYS):
        self.archive = Archive(root)
        self.archive.open()
        self.retention_days = retention_days

    def add_batch(self, events: pl.DataFrame, batch) -> None:
        ident = batch.identity or {}
        key = f"{batch.input}|{ident.get('dev')}:{ident.get('ino')}:{ident.get('head')}"
        seen = self.archive.ledger["batches"].get(key)
        if batch.cursor is not None:
            if seen == batch.cursor:
                return
            mark: Any = batch.cursor
        else:
            if seen is not None and batch.end <= seen:
                return
            mark = batch.end
        self.archive._commit(self.archive._stage(events, f"batch|{key}|{mark}"), {("batches", key): mark})

    def close(self) -> None:
        self.archive.apply_retention(self.retention_days)
        self.archive.close()


# -- reading -------------------------------------------------------------------

def _empty() -> pl.LazyFrame:
    return pl.DataFrame(schema=SCHEMA).lazy()


def _scan_raw(root: Path, since, until, host) -> pl.LazyFrame | None:
    if not any(root.glob(PART_GLOB)):
        return None
    lf = pl.scan_parquet(str(root / PART_GLOB), hive_partitioning=True,
                         hive_schema={"day": pl.Date, "host": pl.String})
    if since is not None:
        lf = lf.filter(pl.col("day") >= since.date(), pl.col("ts") >= since)
    if until is not None:
        lf = lf.filter(pl.col("day") <= until.date(), pl.col("ts") < until)
    if host is not None:
        lf = lf.filter(pl.col("host") == host)
    return lf


def _events(lf: pl.LazyFrame) -> pl.LazyFrame:
    return lf.sort("ts", "file", "line", nulls_last=True, maintain_order=True).select(
        [pl.col(c).cast(t) for c, t in SCHEMA.items()])


def scan(root: Path | str | None = None, since: datetime | None = None, until: datetime | None = None,
         host: str | None = None) -> pl.LazyFrame:
    """The archived events (schema of ``logscope.schema``) in [since, until), optionally one host, by time.

    Day and host filters prune partitions: only the part files that can hold
    matching events are read.
    """
    lf = _scan_raw(Path(root) if root else default_archive_dir(), since, until, host)
    return _empty() if lf is None else _events(lf)


def iter_pieces(root: Path | str | None = None, since: datetime | None = None, until: datetime | None = None,
                host: str | None = None, rows: int = PIECE_ROWS) -> Iterator[pl.DataFrame]:
    """The events of ``scan`` in time order, in pieces of about ``rows`` events.

    A piece is a run of whole minutes of one day (a minute with more events is
    a piece of its own), so memory is one piece plus the Parquet row groups it
    touches, whatever the size of the day. Per day, a first pass reads only
    ``ts`` to count events per minute. Lines without a timestamp come after
    their day's pieces (the partition with no day at all last), and only when
    no period is given (as ``Window`` drops them too).
    """
    root = Path(root) if root else default_archive_dir()
    if not root.is_dir():
        raise ArchiveError(f"{root}: no archive here (run `logscope ingest` first or give --from-archive DIR)")
    days = sorted({d for p in root.glob("day=*") if (d := _day_of(p.name)) is not None})
    untimed = since is None and until is None
    for day in days:
        if (since and day < since.date()) or (until and day > until.date()):
            continue
        lf = _scan_day(root / f"day={day.isoformat()}", since, until, host)
        if lf is not None:
            yield from _pieces(lf, rows, untimed)
    if untimed:
        lf = _scan_day(root / f"day={NULL_PART}", None, None, host)
        if lf is not None:
            yield from _pieces(lf, rows, True)


iter_days = iter_pieces  # the name of the first version


def _scan_day(ddir: Path, since, until, host) -> pl.LazyFrame | None:
    """One day directory's events, filtered (host partitions and ts row-group statistics prune the reads)."""
    glob = "host=*/*.parquet" if host is None else f"host={_part_value(host)}/*.parquet"
    if not any(ddir.glob(glob)):
        return None
    lf = pl.scan_parquet(str(ddir / "host=*" / "*.parquet"), hive_partitioning=True,
                         hive_schema={"day": pl.Date, "host": pl.String})
    if since is not None:
        lf = lf.filter(pl.col("ts") >= since)
    if until is not None:
        lf = lf.filter(pl.col("ts") < until)
    if host is not None:
        lf = lf.filter(pl.col("host") == host)
    return lf


def _pieces(lf: pl.LazyFrame, rows: int, untimed: bool) -> Iterator[pl.DataFrame]:
    """``lf`` (one day) in time order: runs of whole minutes of at most ``rows`` events, then the untimed rows."""
    minutes = (lf.select(pl.col("ts").dt.truncate("1m").alias("minute"))
               .group_by("minute").len().sort("minute", nulls_last=True).collect())
    bounds: list[tuple[datetime, datetime]] = []
    start, n = None, 0
    for minute, count in minutes.filter(pl.col("minute").is_not_null()).iter_rows():
        if start is not None and n + count > rows:
            bounds.append((start, minute))
            start, n = None, 0
        if start is None:
            start = minute
        n += count
    if start is not None:
        bounds.append((start, minute + timedelta(minutes=1)))
    for lo, hi in bounds:
        yield _events(lf.filter(pl.col("ts") >= lo, pl.col("ts") < hi)).collect()
    if untimed and minutes.filter(pl.col("minute").is_null()).height:
        yield _events(lf.filter(pl.col("ts").is_null())).collect()


def _day_of(name: str) -> date | None:
    try:
        return date.fromisoformat(name.removeprefix("day="))
    except ValueError:
        return None
