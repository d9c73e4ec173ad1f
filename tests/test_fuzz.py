"""Fuzzing: coverage-guided (atheris, bounded time, inputs counted) and grammar-aware property tests.

Everything that reads attacker-written text must never raise, and every input
line must stay exactly one event.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from logscope.engine import parse_lines
from logscope.header import HeaderOptions
from logscope.parsers import load

from .conftest import REPO

SECONDS = {"engine": 20, "dmarc": 15, "report": 20, "rules": 15}


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed (pip install atheris)")
@pytest.mark.parametrize("target", sorted(SECONDS))
def test_atheris_target_runs_clean(target, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "logscope.fuzz", target, "--seconds", str(SECONDS[target])],
                          capture_output=True, text=True, cwd=tmp_path, timeout=SECONDS[target] + 120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("logscope.fuzz")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    tried = int(re.search(r"([\d,]+) inputs tried", line[-1]).group(1).replace(",", ""))
    print(f"\n[fuzz] {line[-1]}")
    assert tried > 10 and not list(tmp_path.glob("crash-*"))


# -- grammar-aware: random mixes of the literal pieces of every pattern of a source, behind its header
PARSERS = load()
HEADERS = {"postfix": "Mar  1 10:00:00 mx postfix/smtpd[1]: ", "dovecot": "Mar  1 10:00:00 mx dovecot: imap-login: ",
           "exim": "2024-01-01 10:00:00 ", "rspamd": "2024-01-01 10:00:00 #1(normal) <abc>; task; ",
           "cisco_asa": "Mar  1 10:00:00 fw : %ASA-6-302013: "}


def _pieces(source: str) -> list[str]:
    out = set()
    for ev in PARSERS.sources[source].events:
        for kind, value, _, _ in ev.compiled.tree:
            if kind == "lit" and value.strip():
                out.add(value)
    return sorted(out)


@pytest.mark.parametrize("source", sorted(HEADERS))
def test_pattern_pieces_in_random_order(source):
    pieces = _pieces(source)
    hostile = ["\x1b[31m", "\x00", "\r", "<script>", "%{", "[", "]", "<", ">", "=", ",", " ", "é", "\udcff"]

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.lists(st.sampled_from(pieces + hostile) | st.text(max_size=12), max_size=12), min_size=1, max_size=30))
    def run(parts):
        lines = [HEADERS[source] + "".join(p).replace("\n", " ") for p in parts]
        lines = [ln.encode("utf-8", "replace").decode("utf-8", "replace") for ln in lines]
        ev = parse_lines(lines, PARSERS, HeaderOptions(tz="UTC", year=2025))
        assert ev.height == len(lines) and ev["kind"].null_count() == 0

    run()
