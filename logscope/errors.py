"""Errors that end a command with status 2 and one message line (no traceback)."""

import sys


class UsageError(Exception):
    """A user error: bad flag, missing file, unwritable output. Exit status 2."""


class ErrorLog:
    """Input errors of one command: each printed as one ``logscope: ...`` line, and kept (exit status 2)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, msg: str) -> None:
        self.errors.append(msg)
        print(f"logscope: {msg}", file=sys.stderr)

    def __bool__(self) -> bool:
        return bool(self.errors)
