"""Shared fixtures: the loaded parser set, paths of samples and corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from logscope import parsers

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_logs"
CORPUS = REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def parser_set():
    return parsers.load()
