"""Errors that end a command with status 2 and one message line (no traceback)."""


class UsageError(Exception):
    """A user error: bad flag, missing file, unwritable output. Exit status 2."""
