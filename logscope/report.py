"""``logscope report``: feed events chunk by chunk, merge the views' partial tables, build one document.

The document (``Report.build()``) is plain JSON-able data, documented in
README ("Report JSON"); the text, markdown and HTML renderers only format it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import polars as pl

from . import __version__
from .correlate import PostfixMessages, SmtpdSessions, SmtpTls, SpamVerdicts, dovecot_sessions, exim_messages
from .views import insights, merge, rejects, tls, traffic

_MERGE_EVERY = 8  # partial tables kept per view before they are added up


@dataclass
class Window:
    """Which events count: a time range (UTC) and optionally one host."""

    since: datetime | None = None
    until: datetime | None = None
    host: str | None = None

    def apply(self, events: pl.DataFrame) -> pl.DataFrame:
        cond = pl.lit(True)
        if self.since is not None:
            cond = cond & (pl.col("ts") >= self.since)
        if self.until is not None:
            cond = cond & (pl.col("ts") < self.until)
        if self.host is not None:
            cond = cond & (pl.col("host") == self.host)
        if self.since is None and self.until is None and self.host is None:
            return events
        return events.filter(cond.fill_null(False))


class Report:
    """Running state of one report: correlation, partial tables, line counts."""

    def __init__(self, classes, window: Window | None = None, insight_options: insights.Options | None = None):
        self.classes = classes
        self.window = window or Window()
        self.insight_options = insight_options or insights.Options()
        self.messages = PostfixMessages()
        self.sessions = SmtpdSessions()
        self.smtp_tls = SmtpTls()
        self.verdicts = SpamVerdicts()
        self.exim = exim_messages()
        self.imap = dovecot_sessions()
        self.units = {"exim_messages": [], "dovecot_sessions": []}
        self.partials: dict[str, dict[str, list[pl.DataFrame]]] = {"traffic": {}, "tls": {}, "rejects": {}, "insights": {}}
        self.lines = 0
        self.counted = 0
        self.unparsed: dict[str, int] = {}
        self.per_source: dict[str, int] = {}
        self.first: datetime | None = None  # events in the window
        self.last: datetime | None = None
        self.input_first: datetime | None = None  # every event read, in the window or not
        self.input_last: datetime | None = None

    def _keep(self, view: str, tables: dict[str, pl.DataFrame]) -> None:
        store = self.partials[view]
        for name, df in tables.items():
            lst = store.setdefault(name, [])
            if df is not None and df.height:
                lst.append(df)
            if len(lst) > _MERGE_EVERY:
                store[name] = [merge(lst)]

    def add(self, events: pl.DataFrame) -> None:
        """Feed one chunk of events to the correlation and the views."""
        self.lines += events.height
        lo, hi = events["ts"].min(), events["ts"].max()
        if lo is not None:
            self.input_first = lo if self.input_first is None else min(self.input_first, lo)
            self.input_last = hi if self.input_last is None else max(self.input_last, hi)
        events = self.window.apply(events)
        self.counted += events.height
        if events.height == 0:
            return
        lo, hi = events["ts"].min(), events["ts"].max()
        if lo is not None:
            self.first = lo if self.first is None else min(self.first, lo)
            self.last = hi if self.last is None else max(self.last, hi)
        for src, kind, n in events.group_by(pl.col("source").cast(pl.String), pl.col("kind") == "unparsed").len().iter_rows():
            self.per_source[src] = self.per_source.get(src, 0) + n
            if kind:
                self.unparsed[src] = self.unparsed.get(src, 0) + n
        tracked = self.messages.feed(events)
        sessions = self.sessions.feed(events)
        self._units(events)
        self._keep("traffic", traffic.partial(events, tracked))
        outbound = self.smtp_tls.feed(events)
        self._keep("tls", tls.partial(events, sessions, outbound))
        self._keep("rejects", rejects.partial(events, self.classes, self.verdicts))
        self._keep("insights", insights.partial(events, sessions, self.insight_options, outbound))

    def _units(self, events: pl.DataFrame, final: bool = False) -> None:
        """exim messages and dovecot sessions, reduced at once to additive counts."""
        ex = self.exim.feed(events, final)
        if ex.height:
            self.units["exim_messages"].append(ex.select(
                pl.len().alias("messages"), pl.col("closed").sum().alias("completed"),
                (~pl.col("arrived")).sum().alias("started_before_input"),
                (pl.col("failed") > 0).sum().alias("with_failures"), (pl.col("deferrals") > 0).sum().alias("deferred"),
                pl.col("tls_cipher").is_not_null().sum().alias("arrived_with_tls")))
        dv = self.imap.feed(events, final)
        if dv.height:
            secs = (pl.col("logout") - pl.col("login")).dt.total_seconds()
            self.units["dovecot_sessions"].append(dv.select(
                pl.len().alias("sessions"), pl.col("closed").sum().alias("logged_out"),
                (~pl.col("logged_in")).sum().alias("started_before_input"),
                secs.sum().alias("seconds"), secs.is_not_null().sum().alias("timed")))

    def build(self, top: int = 10, blocklist: bool = False) -> dict:
        # sessions still open at the end of the input count too (flagged by their missing disconnect)
        open_sessions = self.sessions.feed(_empty_like(), final=True)
        self._keep("tls", tls.partial(_empty_like(), open_sessions))
        self._keep("insights", insights.partial(_empty_like(), open_sessions, self.insight_options))
        self._units(_empty_like(), final=True)
        self._keep("rejects", rejects.partial(_empty_like(), self.classes, self.verdicts, final=True))
        merged = {view: {name: merge(lst) for name, lst in tables.items()} for view, tables in self.partials.items()}
        units = {name: (merge(lst).row(0, named=True) if lst else None) for name, lst in self.units.items()}
        if units["dovecot_sessions"]:
            d = units["dovecot_sessions"]
            d["mean_seconds"] = round(d.pop("seconds") / d["timed"], 1) if d["timed"] else None
            d.pop("timed")
        for view, names in _EXPECTED.items():
            for name in names:
                merged[view].setdefault(name, pl.DataFrame())
        t = traffic.finish(merged["traffic"], top)
        return {
            "logscope_version": __version__,
            "generated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "period": {"first_event": _iso(self.first), "last_event": _iso(self.last),
                       "since": _iso(self.window.since), "until": _iso(self.window.until), "host": self.window.host},
            "input": {"lines": self.lines, "events_in_period": self.counted,
                      "sources": {s: {"events": n, "unparsed": self.unparsed.get(s, 0),
                                      "unparsed_pct": round(100 * self.unparsed.get(s, 0) / n, 2) if n else 0.0}
                                  for s, n in sorted(self.per_source.items())}},
            "traffic": t,
            "tls": tls.finish(merged["tls"], top),
            "rejects": rejects.finish(merged["rejects"], top, blocklist),
            "insights": insights.finish(merged["insights"], top, self.insight_options),
            "correlation": units,
            "unattributed": {
                "deliveries_without_message_start": t["totals"]["deliveries_without_message_start"],
                "messages_open_at_end": self.messages.open,
                "messages_expired": self.messages.expired,
            },
        }


_EXPECTED = {
    "traffic": ["totals", "per_day", "per_hour", "deferred_ids", "senders", "recipients", "delays",
                "deferral_reasons", "bounce_reasons", "problems", "exim"],
    "tls": [], "rejects": [], "insights": [],
}


def _empty_like() -> pl.DataFrame:
    from .schema import COLUMNS
    return pl.DataFrame(schema={k: (pl.String if k in ("source", "kind") else v) for k, v in COLUMNS.items()})


def _iso(ts: datetime | None) -> str | None:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ") if ts is not None else None
