"""The engine's dispatch by first token must never change which event a line gets.

Reference: every event of the line's source and daemon, tried in file order
(first match wins), with Python's ``re``, line by line — slow but obviously
right. The engine must agree on every annotated sample line and every line of
the real-world corpus.
"""

from __future__ import annotations

import re

import polars as pl
import pytest

from logscope import engine
from logscope.header import HeaderOptions, parse_header
from logscope.patterns import PatternCompiler, lead_tokens
from tests.conftest import CORPUS, SAMPLES

OPTS = HeaderOptions(tz="UTC", year=2025)


def _reference_kinds(lines: list[str], parsers) -> list[str]:
    df = parse_header(pl.DataFrame({"line": lines}), OPTS)
    df = engine.assign_sources(df, parsers, None).with_row_index("_row")
    df = engine._prepare(df, parsers)
    compiled: dict = {}
    kinds = []
    for src, daemon, message in df.select("_src", "daemon", "message").iter_rows():
        sdef = parsers.sources.get(src) if src else None
        kind = "unparsed"
        for ev in (sdef.events if sdef else []):
            if ev.daemons and daemon not in ev.daemons:
                continue
            rx = compiled.setdefault(ev.compiled.regex, re.compile(ev.compiled.regex))
            if message is not None and rx.match(message):
                kind = ev.kind
                break
        kinds.append(kind)
    return kinds


def _files() -> list:
    files = sorted(p for p in SAMPLES.iterdir() if p.is_file())
    if CORPUS.is_dir():
        for src in ("postfix", "dovecot", "exim", "rspamd", "cisco_asa"):
            files += sorted(p for p in (CORPUS / src).rglob("*") if p.is_file() and p.suffix not in (".md", ".json", ".tsv"))
    return files


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p).split("/")[-2] + "/" + p.name)
def test_dispatch_agrees_with_trying_every_event(path, parser_set):
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()][:3000]
    if not lines:
        pytest.skip("empty file")
    got = engine.parse_lines(lines, parser_set, OPTS)["kind"].cast(pl.String).to_list()
    want = _reference_kinds(lines, parser_set)
    diff = [(ln, g, w) for ln, g, w in zip(lines, got, want) if g != w]
    assert not diff, f"{len(diff)} lines differ, first: {diff[0]}"


def test_lead_tokens_of_typical_patterns():
    c = PatternCompiler({"queue_id", "action", "client_host"}, {"QID": r"[0-9A-F]{5,}", "ACT": "reject|defer|warn"})
    skip = c.compile("%{QID}: ")
    assert lead_tokens(c.compile("connect from %{HOST:client_host}"), c.named, skip) == {"connect"}
    assert lead_tokens(c.compile("%{QID:queue_id}: removed%{END}"), c.named, skip) == {"removed"}
    assert lead_tokens(c.compile("%{?NOQUEUE: }%{?%{QID:queue_id}: }%{ACT:action}: x"), c.named, skip) == {"NOQUEUE", "reject", "defer", "warn"}
    assert lead_tokens(c.compile("%{/30201[35]/}: Built"), c.named) == {"302013", "302015"}
    assert lead_tokens(c.compile("<= %{HOST}"), c.named) == {"<="}
    # may run on into the next node, or starts with an open pattern: any token
    assert lead_tokens(c.compile("remove%{HOST}"), c.named, skip) is None
    assert lead_tokens(c.compile("%{HOST:client_host}: x"), c.named, skip) is None
    # a literal that looks like the skipped queue id cannot be dispatched on
    assert lead_tokens(c.compile("ABCDEF: x"), c.named, skip) is None


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p).split("/")[-2] + "/" + p.name)
def test_small_batches_in_python_equal_polars(path, parser_set, monkeypatch):
    """Small batches match in Python's ``re`` (rare events below SMALL_BATCH rows, whole batches below
    SMALL_ROWS lines): every field of every line must come out as the vectorized match gives it."""
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()
             if not ln.startswith("#")][:3000]
    if not lines:
        pytest.skip("empty file")
    monkeypatch.setattr(engine, "SMALL_BATCH", 0)
    monkeypatch.setattr(engine, "SMALL_ROWS", 0)
    in_polars = engine.parse_lines(lines, parser_set, OPTS)
    monkeypatch.setattr(engine, "SMALL_BATCH", 10**9)
    in_python = engine.parse_lines(lines, parser_set, OPTS)
    monkeypatch.setattr(engine, "SMALL_ROWS", 10**9)
    line_by_line = engine.parse_lines(lines, parser_set, OPTS)
    assert in_python.height == line_by_line.height == len(lines)
    assert in_python.equals(in_polars)
    assert line_by_line.equals(in_polars)
