"""Running per-source, per-kind event counts of ``logscope parse`` and their table."""

from __future__ import annotations

from collections import Counter

import polars as pl

from .parsers import ParserSet


class Summary:
    """Counts events by (source, kind) over any number of chunks; memory stays tiny."""

    def __init__(self, parsers: ParserSet):
        self.order = parsers.source_names
        self.counts: Counter[tuple[str, str]] = Counter()
        self.lines = 0

    def add(self, events: pl.DataFrame) -> None:
        self.lines += events.height
        grouped = events.group_by("source", "kind").len()
        for source, kind, n in grouped.iter_rows():
            self.counts[(source, kind)] += n

    def per_source(self) -> list[tuple[str, int, int]]:
        """(source, events, unparsed) for every source that occurred, in schema order."""
        totals: Counter[str] = Counter()
        unparsed: Counter[str] = Counter()
        for (source, kind), n in self.counts.items():
            totals[source] += n
            if kind == "unparsed":
                unparsed[source] += n
        return [(s, totals[s], unparsed[s]) for s in self.order if totals[s]]

    def to_dict(self) -> dict:
        return {
            "lines": self.lines,
            "sources": {
                s: {"events": n, "unparsed": u, "unparsed_share": round(u / n, 6) if n else 0.0,
                    "kinds": {k: c for (src, k), c in sorted(self.counts.items(), key=lambda x: -x[1]) if src == s}}
                for s, n, u in self.per_source()
            },
        }


def format_table(summary: Summary) -> str:
    """An aligned plain-text table: each source with its unparsed share, then its kinds."""
    rows: list[tuple[str, str, str]] = []
    for source, n, u in summary.per_source():
        rows.append((source, f"{n:,}", f"unparsed {u:,} ({u / n:.2%})" if n else ""))
        kinds = sorted(((k, c) for (s, k), c in summary.counts.items() if s == source), key=lambda x: (-x[1], x[0]))
        for kind, c in kinds:
            rows.append((f"  {kind}", f"{c:,}", ""))
    rows.append(("total", f"{summary.lines:,}", ""))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows)
