"""Annotated sample logs: ``# expect: {json}`` above a line says what it must parse into.

Used by the golden tests and by ``logscope check-samples``; the samples in
``sample_logs/`` are the parsers' documentation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from .engine import parse_lines
from .header import HeaderOptions
from .parsers import ParserSet

EXPECT = "# expect:"
# Samples are read as if written in 2025, in UTC, so expectations are stable.
SAMPLE_OPTIONS = HeaderOptions(tz="UTC", year=2025)


_RSPAMD1 = re.compile(r"#\d+\(\w+\): ")


def is_comment(line: str) -> bool:
    """A ``#`` comment; ``#81123(fuzzy): ...`` (rspamd 1.x) is a log line."""
    return line.startswith("#") and not _RSPAMD1.match(line)


@dataclass
class Expectation:
    file: str
    line_no: int  # line of the log line in the sample file (1-based)
    line: str
    fields: dict


def read_expectations(path: Path) -> tuple[list[str], list[Expectation]]:
    """The log lines of a sample (comments and blank lines dropped) and its expectations."""
    logs: list[str] = []
    out: list[Expectation] = []
    pending: dict | None = None
    for no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if raw.startswith(EXPECT):
            pending = json.loads(raw[len(EXPECT):])
            continue
        if not raw.strip() or is_comment(raw):
            continue
        logs.append(raw)
        if pending is not None:
            out.append(Expectation(path.name, no, raw, pending))
            pending = None
    return logs, out


def _same(actual, expected) -> bool:
    if isinstance(actual, datetime):
        return actual.isoformat().replace("+00:00", "Z") == str(expected).replace("+00:00", "Z")
    if isinstance(actual, float) and isinstance(expected, (int, float)):
        return abs(actual - expected) < 1e-9
    return actual == expected


def check_sample(path: Path, parsers: ParserSet) -> list[str]:
    """Parse a sample and return one message per expectation that does not hold."""
    logs, expectations = read_expectations(path)
    events = parse_lines(pl.DataFrame({"line": logs}), parsers, SAMPLE_OPTIONS, file=path.name)
    by_line = {line: i for i, line in enumerate(logs)}
    problems = []
    for exp in expectations:
        row = events.row(by_line[exp.line], named=True)
        for key, want in exp.fields.items():
            key = "kind" if key == "event" else key
            if key not in row:
                problems.append(f"{exp.file}:{exp.line_no}: no column {key!r}")
            elif not _same(row[key], want):
                problems.append(f"{exp.file}:{exp.line_no}: {key} = {row[key]!r}, expected {want!r}")
    return problems
