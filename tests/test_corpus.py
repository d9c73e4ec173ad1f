"""Conformance: the shared real-world corpus, written by people outside this project.

Every line must become exactly one event, nothing may raise, and the unparsed
share per source must stay under its target. Skips (visibly) where ../shared
is absent, e.g. on a user's machine.
"""

from __future__ import annotations

import pytest

from logscope.conformance import CEILINGS, LOG_SOURCES, TARGETS, run_source

from .conftest import CORPUS

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not found at {CORPUS}")


@pytest.mark.parametrize("source", LOG_SOURCES)
def test_corpus_source(source, parser_set, capsys):
    res = run_source(CORPUS, source, parser_set)
    assert res.files > 0 and res.lines > 0
    assert res.events == res.lines, "every line must be exactly one event"
    with capsys.disabled():
        print(f"\n[conformance] {source}: {res.lines} lines in {res.files} files, "
              f"unparsed {res.unparsed} ({res.share:.2%}, target < {TARGETS[source]:.0%}, enforced < {CEILINGS[source]:.1%})")
    assert res.share < CEILINGS[source], "unparsed lines:\n" + "\n".join(res.unparsed_lines[:40])


# Real exim messages among the test suite's debug output: the unparsed share alone would hide
# one of these falling back to unparsed behind a thousand debug lines.
EXIM_MESSAGES = [
    ("log/0314.log", "refused connection from", "exim_reject"),
    ("log/0576.log", "queue run: pid=", "exim_queue_run"),
    ("log/0188.log", "ETRN #some.random.domain received from", "exim_queue_run"),
    ("rejectlog/3800.log", "Cyrus SASL permanent failure", "exim_panic"),
    ("log/4600.log", "SPF=temperror temporarily rejected RCPT", "exim_reject"),
    ("log/2114.log", "SSL verify error", "exim_tls_error"),
    ("log/0566.log", "ignoring AUTH=", "exim_protocol_error"),
]


@pytest.mark.parametrize("path,text,kind", EXIM_MESSAGES)
def test_exim_production_messages_are_events(path, text, kind, parser_set):
    import polars as pl

    from logscope.header import HeaderOptions
    from logscope.pipeline import ReadOptions, iter_events
    frames = iter_events([str(CORPUS / "exim" / "exim-testsuite" / path)], parser_set,
                         ReadOptions(HeaderOptions(tz="UTC", year=2025)), pytest.fail)
    lines = pl.concat(list(frames)).filter(pl.col("message").str.contains(text, literal=True))
    assert lines.height and lines["kind"].unique().to_list() == [kind], lines.select("kind", "message").rows()
