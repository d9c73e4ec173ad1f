"""Golden tests: every ``# expect:`` annotation in sample_logs/ holds."""

from __future__ import annotations

import pytest

from logscope.samples import check_sample, read_expectations
from logscope.schema import KINDS_BY_SOURCE

from .conftest import SAMPLES

# At least this many annotated lines per source sample.
MINIMUM = {"postfix": 40, "dovecot": 20, "exim": 20, "rspamd": 20, "cisco_asa": 20}


@pytest.mark.parametrize("source", sorted(MINIMUM))
def test_sample_expectations_hold(source, parser_set):
    path = SAMPLES / f"{source}.log"
    problems = check_sample(path, parser_set)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source", sorted(MINIMUM))
def test_sample_covers_every_kind(source):
    _, expectations = read_expectations(SAMPLES / f"{source}.log")
    assert len(expectations) >= MINIMUM[source]
    seen = {e.fields.get("kind", e.fields.get("event")) for e in expectations}
    missing = set(KINDS_BY_SOURCE[source]) - seen
    assert not missing, f"kinds without an annotated sample line: {sorted(missing)}"
