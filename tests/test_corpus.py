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
