"""The systemd journal as an input: ``journalctl --follow --output=json``, the cursor as checkpoint.

On current Debian/Ubuntu the mail logs live only in the journal. Each entry
becomes a syslog-like line the header parser already reads::

    2025-01-01T00:00:00.000000+00:00 mx1 postfix/smtpd[123]: connect from ...

(``__REALTIME_TIMESTAMP`` as RFC 3339 UTC, ``_HOSTNAME``,
``SYSLOG_IDENTIFIER`` (else ``_COMM``), ``SYSLOG_PID`` (else ``_PID``),
``MESSAGE``). A MESSAGE that is not valid UTF-8 comes as a byte array and is
decoded with U+FFFD for bad bytes; newlines inside a message become ``#012``
as rsyslog writes them. The conversion is vectorized (polars JSON path
extraction); only entries with array-valued fields go through Python.

Filters follow journalctl: ``--journal UNIT...`` (``-u``, any of them),
``--journal-match FIELD=VALUE`` (same field: any; different fields: all).
``--journal-file``/``--journal-dir`` read other journals (tests, exported
journals). journalctl runs in a thread that feeds a bounded buffer; if it
exits while following, it is restarted after the last entry read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from typing import Sequence

import polars as pl

from .files import lines_frame
from .follow import MAX_BATCH_LINES, Batch, Input, Log, _no_log, cut_lines

_FIELDS = ("__REALTIME_TIMESTAMP", "_HOSTNAME", "SYSLOG_IDENTIFIER", "_COMM", "SYSLOG_PID", "_PID", "MESSAGE")
_ARRAY_FIELD = r'"(?:' + "|".join(_FIELDS[1:]) + r')"\s*:\s*\['
RESTART_DELAY = 5.0


def find_journalctl() -> str | None:
    return shutil.which("journalctl")


def _text(value) -> str | None:
    """A journal field value as text: strings as they are, byte arrays decoded, repeated fields: the first."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        if value and all(isinstance(b, int) for b in value):
            return bytes(b & 0xFF for b in value).decode("utf-8", errors="replace")
        return _text(value[0]) if value else ""
    return str(value)


def _fallback_row(raw: str) -> dict:
    try:
        entry = json.loads(raw)
    except ValueError:
        entry = {}
    if not isinstance(entry, dict):
        entry = {}
    return {k: _text(entry.get(k)) for k in _FIELDS}


def journal_to_lines(raw: pl.DataFrame) -> pl.DataFrame:
    """journalctl JSON lines (column ``line``) -> syslog-like lines (column ``line``), one per entry."""
    line = pl.col("line")
    fields = raw.select(
        *(line.str.json_path_match(f"$.{k}").alias(k) for k in _FIELDS),
        line.str.contains(_ARRAY_FIELD).alias("_arrays"),
    )
    odd = fields["_arrays"].arg_true()
    if len(odd):  # byte-array or repeated fields: decode those few entries in Python
        rows = [_fallback_row(raw["line"][i]) for i in odd.to_list()]
        patch = pl.DataFrame(rows, schema={k: pl.String for k in _FIELDS})
        fields = fields.with_row_index("_i")
        patch = patch.with_columns(pl.Series("_i", odd.cast(pl.UInt32)))
        fields = fields.update(patch, on="_i").drop("_i")
    us = pl.col("__REALTIME_TIMESTAMP").cast(pl.Int64, strict=False)
    ts = pl.from_epoch(us, time_unit="us").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
    ident = pl.coalesce(pl.col("SYSLOG_IDENTIFIER"), pl.col("_COMM"), pl.lit("journal")).str.replace_all(r"[\s:\[]", "_")
    pid = pl.coalesce(pl.col("SYSLOG_PID"), pl.col("_PID"))
    host = pl.col("_HOSTNAME").str.replace_all(r"\s", "_")
    msg = pl.col("MESSAGE").fill_null("").str.replace_all("\n", "#012", literal=True).str.replace_all("\r", "#015", literal=True)
    out = pl.concat_str(
        [
            pl.coalesce(ts, pl.lit("1970-01-01T00:00:00.000000+00:00")),
            pl.when(host.is_not_null()).then(pl.lit(" ") + host).otherwise(pl.lit("")),
            pl.lit(" "), ident,
            pl.when(pid.is_not_null()).then(pl.lit("[") + pid + pl.lit("]")).otherwise(pl.lit("")),
            pl.lit(": "), msg,
        ]
    )
    return fields.select(out.alias("line"))


def _cursor_of(raw_line: bytes) -> str | None:
    try:
        value = json.loads(raw_line).get("__CURSOR")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


class JournalInput(Input):
    """Entries of the systemd journal matching units/matches, in order, resumable at a cursor."""

    MAX_BUFFER = 64 * 1024 * 1024

    def __init__(self, units: Sequence[str] = (), matches: Sequence[str] = (), files: Sequence[str] = (),
                 directory: str | None = None, follow: bool = True, log: Log = _no_log,
                 journalctl: str | None = None):
        self.spec = "journal"
        self.units, self.matches, self.files, self.directory = list(units), list(matches), list(files), directory
        self.key = "journal:" + json.dumps({"units": sorted(self.units), "matches": sorted(self.matches),
                                            "files": sorted(os.path.abspath(f) for f in self.files),
                                            "dir": os.path.abspath(directory) if directory else None},
                                           sort_keys=True, separators=(",", ":"))
        self.follow = follow
        self.log = log
        self.journalctl = journalctl or find_journalctl() or "journalctl"
        self.cursor: str | None = None  # after the last entry handed out
        self._read_cursor: str | None = None  # after the last entry read from journalctl
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._eof = False
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._entries = 0
        self.errors = 0
        self.restarts = 0

    def _base_cmd(self) -> list[str]:
        cmd = [self.journalctl, "--output=json", "--all", "--no-pager", "--quiet"]
        cmd += [f"--file={f}" for f in self.files]
        if self.directory:
            cmd.append(f"--directory={self.directory}")
        for u in self.units:
            cmd += ["--unit", u]
        return cmd + list(self.matches)

    def _tail_cursor(self) -> str | None:
        """Cursor of the newest matching entry now (a first run --from-end starts after it)."""
        try:
            out = subprocess.run(self._base_cmd() + ["--lines=1"], capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.log("error", f"journal: cannot run {self.journalctl}: {exc}")
            return None
        lines = out.stdout.strip().splitlines()
        return _cursor_of(lines[-1]) if lines else None

    def restore(self, saved: dict | None, start: str) -> None:
        if saved is not None:
            self.cursor = saved.get("cursor")
        elif start == "end":
            self.cursor = self._tail_cursor()
            self.log("info", "journal: no checkpoint, starting after the newest entry (--from-start reads all)")
        self._read_cursor = self.cursor
        self._thread = threading.Thread(target=self._reader, name="logscope-journal", daemon=True)
        self._thread.start()

    def _command(self) -> list[str]:
        cmd = self._base_cmd()
        if self.follow:
            cmd.append("--follow")
        if self._read_cursor:
            cmd.append(f"--after-cursor={self._read_cursor}")
        else:
            cmd.append("--lines=all")  # nothing seen yet that matches: every entry is new
        return cmd

    def _reader(self) -> None:
        while not self._stop.is_set():
            try:
                proc = subprocess.Popen(self._command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, bufsize=0)
            except OSError as exc:
                self.errors += 1
                self.log("error", f"journal: cannot run {self.journalctl}: {exc.strerror or exc}")
                proc = None
            if proc is not None:
                self._proc = proc
                errs: list[bytes] = []
                t = threading.Thread(target=lambda: errs.append(proc.stderr.read()), daemon=True)
                t.start()
                self._pump(proc)
                rc = proc.wait()
                with self._cond:  # a half-written last entry: dropped, read again after the restart
                    del self._buf[self._buf.rfind(b"\n") + 1:]
                t.join(5)
                self._proc = None
                msg = b"".join(errs).decode("utf-8", "replace").strip().replace("\n", "; ")
                if rc != 0 and not self._stop.is_set():
                    self.errors += 1
                    self.log("error", f"journal: journalctl exited with status {rc}" + (f": {msg}" if msg else ""))
                elif msg and not self._stop.is_set():
                    self.log("warning", f"journal: {msg}")
            if not self.follow:
                break
            self.restarts += 1
            if self._stop.wait(RESTART_DELAY):
                break
        with self._cond:
            self._eof = True
            self._cond.notify_all()
        if self.wakeup is not None:
            self.wakeup.set()

    def _pump(self, proc: subprocess.Popen) -> None:
        fd = proc.stdout.fileno()
        while True:
            try:
                block = os.read(fd, 1 << 20)
            except OSError:
                block = b""
            if not block:
                return
            with self._cond:
                while len(self._buf) > self.MAX_BUFFER and not self._stop.is_set():
                    self._cond.wait(0.5)  # back-pressure: journalctl waits on its pipe
                self._buf += block
                end = self._buf.rfind(b"\n")
                if end > 0:
                    start = self._buf.rfind(b"\n", 0, end) + 1
                    self._read_cursor = _cursor_of(bytes(self._buf[start:end])) or self._read_cursor
            if self.wakeup is not None:
                self.wakeup.set()

    def read_batch(self, max_bytes: int, max_lines: int = MAX_BATCH_LINES) -> Batch | None:
        with self._cond:
            data = bytes(self._buf[:max_bytes])
            cut = cut_lines(data, max_lines, False)
            if cut == 0:
                if self._eof and not self._buf:
                    self.finished = True
                return None
            del self._buf[:cut]
            self._cond.notify_all()
        whole = data[:cut]
        raw = lines_frame(whole).filter(pl.col("line").str.starts_with("{"))
        last_nl = whole.rfind(b"\n", 0, len(whole) - 1) + 1
        self.cursor = _cursor_of(whole[last_nl:]) or self.cursor
        start = self._entries
        self._entries += raw.height
        return Batch("journal", None, journal_to_lines(raw), first_line=start + 1, start=start, end=self._entries,
                     cursor=self.cursor, nbytes=cut)

    def checkpoint(self) -> dict:
        return {"cursor": self.cursor}

    def status(self) -> list[dict]:
        return [{"input": "journal", "path": None, "file": None, "offset": self._entries, "size": None,
                 "lag": len(self._buf), "rotations": self.restarts, "errors": self.errors}]

    def close(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)
