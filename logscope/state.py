"""The checkpoint store of ``logscope tail``: one JSON file, replaced atomically.

The state directory is ``--state-dir``, else ``$XDG_STATE_HOME/logscope``
(``~/.local/state/logscope``); a service uses ``/var/lib/logscope``
(systemd: ``StateDirectory=logscope``). In it, ``<name>.json`` holds every
input's checkpoint and the state of sinks that persist theirs (the stats
sink's counts), all in one file so that they change together: a reader of the
file never sees counts that do not belong to the offsets next to them.

A write is: write ``<name>.json.tmp``, fsync it, rename it over ``<name>.json``,
fsync the directory. After a crash (even power loss) the file is the old or
the new version, never a mix. ``<name>.lock`` (flock) keeps two processes from
sharing one state file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

STATE_VERSION = 1


class StateError(Exception):
    """The state directory or file cannot be used; the message says why."""


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/logscope``, else ``~/.local/state/logscope``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "logscope"


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` by ``data``: temp file, fsync, rename, fsync of the directory.

    On any error (a full disk: ENOSPC, EDQUOT, EFBIG) ``path`` is untouched and
    the partial temp file is removed, so a failed write does not hold on to the
    space that a retry needs.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class StateStore:
    """``<dir>/<name>.json``: load once at start, ``save`` after every batch.

    Opening takes an exclusive lock; a second ``logscope tail`` on the same
    state file gets a ``StateError`` instead of silently corrupting it.
    """

    def __init__(self, directory: Path | str, name: str = "tail"):
        self.dir = Path(directory)
        self.name = name
        self.path = self.dir / f"{name}.json"
        self._lock_fd: int | None = None

    def open(self) -> dict[str, Any]:
        """Check the directory is writable, take the lock, return the saved state ({} if none)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / f".{self.name}.probe"
            write_atomic(probe, b"", durable=False)
            probe.unlink()
        except OSError as exc:
            raise StateError(f"state directory {self.dir} is not writable: {exc.strerror or exc} "
                             "(use --state-dir)") from None
        fd = os.open(self.dir / f"{self.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateError(f"{self.path} is in use by another logscope tail "
                                 "(give this one its own --state-name or --state-dir)") from None
            raise StateError(f"{self.dir}: cannot lock: {exc.strerror or exc}") from None
        self._lock_fd = fd
        return self.load()

    def load(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise StateError(f"{self.path}: not a logscope state file (remove it to start over)") from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise StateError(f"{self.path}: unknown state version (remove it to start over)")
        return data

    def save(self, state: dict[str, Any]) -> None:
        state = {"version": STATE_VERSION, **state}
        write_atomic(self.path, json.dumps(state, separators=(",", ":"), sort_keys=True).encode())

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
