"""The live view of ``logscope tail`` on a terminal: one screen, redrawn in place, never scrolling.

Shows lines/s per source, SMTP sessions and their TLS share, the top reject
classes, authentication failures and the latest alerts, over a sliding window.
Everything shown is either a number or comes from a closed set; alert summaries
are cleaned of control characters (``render.clean``) before they reach the terminal.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, deque

import polars as pl

from ..render import clean

WINDOW = 60.0  # seconds the rates and shares look back


class LiveView:
    """A sink: ``add`` counts, ``on_commit`` (after every batch) redraws at most once a second."""

    def __init__(self, stream=None, classes=None, window: float = WINDOW):
        self.out = stream or sys.stderr
        self.window = window
        self.samples: deque = deque()  # (time, Counter) per batch
        self.alerts: deque = deque(maxlen=5)
        self.classes = classes
        self.started = time.monotonic()
        self.total = 0
        self._drawn = 0.0

    def add(self, events: pl.DataFrame) -> None:
        c: Counter = Counter()
        self.total += events.height
        for src, n in events.group_by(pl.col("source").cast(pl.String)).len().iter_rows():
            c[("lines", src)] += n
        kind = pl.col("kind").cast(pl.String)
        disc = events.filter((kind == "smtpd_disconnect") & (pl.col("source") == "postfix"))
        if disc.height:
            tls = disc.select((pl.col("commands").str.contains(r"starttls=[1-9]").fill_null(False)
                               | pl.col("service").is_in(["smtps", "submissions"]).fill_null(False)).sum()).item()
            c[("sessions", "all")] += disc.height
            c[("sessions", "tls")] += int(tls)
        if self.classes is not None or "reject_class" in events.columns:
            from ..classify import reject_rows
            rj = events.filter(reject_rows())
            if rj.height:
                if "reject_class" not in rj.columns:
                    rj = self.classes.classify(rj)
                for cls, n in rj.group_by(pl.col("reject_class").cast(pl.String)).len().iter_rows():
                    c[("reject", cls or "other")] += n
        auth = events.filter(kind.is_in(["sasl_auth_failed", "dovecot_auth_failed", "dovecot_login_failed", "exim_auth_failed"]))
        for src, n in auth.group_by(pl.col("source").cast(pl.String)).len().iter_rows():
            c[("auth", src)] += n
        self.samples.append((time.monotonic(), c))

    def alert(self, text: str) -> None:
        """Show an alert line (state change) in the latest-alerts box."""
        self.alerts.append(f"{time.strftime('%H:%M:%S')} {clean(text, 100)}")

    def on_commit(self) -> None:
        now = time.monotonic()
        if now - self._drawn >= 1.0:
            self._drawn = now
            self.draw(now)

    def snapshot(self, now: float | None = None) -> dict:
        """The numbers on screen (tests read this)."""
        now = now or time.monotonic()
        while self.samples and self.samples[0][0] < now - self.window:
            self.samples.popleft()
        total: Counter = Counter()
        for _, c in self.samples:
            total.update(c)
        span = max(1.0, min(self.window, now - self.started))
        rates = {src: total[("lines", src)] / span for (what, src) in total if what == "lines"}
        sessions, tls = total[("sessions", "all")], total[("sessions", "tls")]
        rejects = sorted(((k[1], n) for k, n in total.items() if k[0] == "reject"), key=lambda x: -x[1])[:5]
        auth = {k[1]: n for k, n in total.items() if k[0] == "auth"}
        return {"rates": rates, "sessions": sessions, "tls_pct": round(100 * tls / sessions, 1) if sessions else None,
                "rejects": rejects, "auth": auth, "alerts": list(self.alerts), "total": self.total}

    def draw(self, now: float | None = None) -> None:
        s = self.snapshot(now)
        lines = [f"logscope tail  {time.strftime('%H:%M:%S')}  {s['total']:,} lines since start  (last {int(self.window)} s)", ""]
        lines.append("lines/s   " + "  ".join(f"{src} {r:,.1f}" for src, r in sorted(s["rates"].items())) if s["rates"] else "lines/s   -")
        tls = f"{s['tls_pct']}% TLS" if s["tls_pct"] is not None else "-"
        lines.append(f"SMTP      {s['sessions']:,} sessions, {tls}")
        lines.append("rejects   " + ("  ".join(f"{cls} {n:,}" for cls, n in s["rejects"]) or "-"))
        lines.append("auth fail " + ("  ".join(f"{src} {n:,}" for src, n in sorted(s["auth"].items())) or "-"))
        lines.append("alerts    " + (s["alerts"][-1] if s["alerts"] else "-"))
        lines += ["          " + a for a in list(s["alerts"])[-2::-1][:4]]
        try:
            # home, clear to end of screen: one screen redrawn in place
            self.out.write("\x1b[H\x1b[J" + "\n".join(lines) + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass
