"""The alert engine: rules over the event stream, live (``tail``) and replayed (``alerts test``).

One rule is evaluated per group (its ``group_by`` values) over the rows of a
sliding window that match its ``where``. Every evaluation runs the same state
machine per group::

    inactive --condition true--> pending --true for `for`--> firing --false--> resolved
                                   |                                (resolved notice)
                                   +--false--> inactive (nothing sent)

How the rows get there:

* ``add(events)`` (a ``tail`` sink, one call per parsed batch) filters every
  rule's ``where`` vectorized and keeps only the few columns the rule needs
  (time, group keys, one column per aggregate argument). ``lines_read`` and
  ``add_batch`` record lines per input (``from = "inputs"`` rules: logging
  stopped), ``add_dmarc`` DMARC report records (``from = "dmarc"``).
* ``tick(now)`` evaluates every rule at ``now`` (at most every
  ``eval_interval``), prunes rows older than the rule needs, and hands
  notifications to the notifiers (background threads: never blocks).
* ``replay(step)`` evaluates the whole history as if ``tick`` had run at every
  multiple of ``step`` of event time: one vectorized ``rolling`` pass per rule
  computes the values at the grid times where they can change (a row enters or
  leaves the window), and the same transitions follow (a test checks that both
  agree). What ``alerts test`` prints.

Windows are half-open, ``(t - window, t]``, in event time (the ``ts`` of the
events; live, ``now`` is the wall clock). Groups without rows in the window are
evaluated as an empty group when they have an active alert (so it resolves)
and, for a condition that is true on an empty group (``count() == 0``,
``sum(lines) == 0``: silence), for every group seen at least a window ago (at
most :data:`MAX_KNOWN` per rule).

Bounded state: at most ``max_alerts`` (default 100) active (pending or firing)
alerts per rule; further groups are counted in ``overflow`` (and logged) and
get an alert only when a slot frees, so an attack from 10,000 addresses cannot
grow the state or flood the notifiers. Rows are kept only as long as the
longest window or baseline of their rule.
Label values are cut to 200 characters, control characters removed.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import polars as pl

from ..classify import kinds_in
from ..schema import SCHEMA
from .expr import format_duration
from .rules import Rule, RuleSet, load as load_rules

Log = Callable[[str, str], None]
Key = tuple[str, ...]

MAX_KNOWN = 1000  # groups remembered per rule whose condition is true when they are silent
LABEL_MAX = 200
_CONTROL = dict.fromkeys(range(32), " ") | {127: " "}


def _quiet(level: str, msg: str) -> None:
    pass


_ONE = pl.lit(1, pl.Int64).alias("_w")  # a buffered row's weight: one source row


def _ts_us(ts: pl.Expr) -> pl.Expr:
    """A buffered row's time."""
    return ts.dt.cast_time_unit("us").alias("ts")


def to_dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def iso(t: float | None) -> str:
    """RFC 3339 UTC with a Z, as Alertmanager writes times."""
    if t is None:
        return "0001-01-01T00:00:00Z"
    return to_dt(t).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def clean_label(value: Any) -> str:
    """A label value from a log field: no control characters, at most LABEL_MAX characters."""
    s = "" if value is None else str(value)
    return s.translate(_CONTROL)[:LABEL_MAX]


@dataclass
class Alert:
    """One alert of one rule and group."""

    rule: str
    key: Key
    labels: dict[str, str]
    state: str  # pending | firing | resolved
    active_since: float
    fired_at: float | None = None
    resolved_at: float | None = None
    value: float | None = None
    values: dict[str, float | None] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""

    def snapshot(self) -> "Alert":
        """A copy that later evaluations do not change."""
        return replace(self, labels=dict(self.labels), values=dict(self.values), annotations=dict(self.annotations))

    def payload(self, ends_at: float | None = None) -> dict[str, Any]:
        """Alertmanager's alert object (also the webhook's, which follows Alertmanager's format)."""
        return {"status": "resolved" if self.state == "resolved" else "firing",
                "labels": dict(self.labels), "annotations": dict(self.annotations),
                "startsAt": iso(self.fired_at or self.active_since),
                "endsAt": iso(self.resolved_at if self.state == "resolved" else ends_at),
                "generatorURL": "", "fingerprint": self.fingerprint, "value": self.value}


@dataclass
class Transition:
    """An alert started firing or was resolved at ``at`` (what ``alerts test`` prints)."""

    at: float
    status: str  # firing | resolved
    alert: Alert


@dataclass
class Notification:
    """One message about one rule's alerts: the firing ones and those just resolved."""

    rule: str
    severity: str
    status: str  # firing (any firing) | resolved
    alerts: list[dict[str, Any]]
    at: float

    def to_json(self, receiver: str = "logscope") -> dict[str, Any]:
        """Alertmanager's webhook payload (version 4), so existing webhook receivers understand it."""
        common = dict(self.alerts[0]["labels"]) if self.alerts else {}
        for a in self.alerts[1:]:
            common = {k: v for k, v in common.items() if a["labels"].get(k) == v}
        return {"version": "4", "groupKey": f"{{}}:{{alertname=\"{self.rule}\"}}", "truncatedAlerts": 0,
                "status": self.status, "receiver": receiver, "groupLabels": {"alertname": self.rule},
                "commonLabels": common, "commonAnnotations": {}, "externalURL": "",
                "alerts": [{k: v for k, v in a.items() if k != "value"} for a in self.alerts]}


def fingerprint(labels: dict[str, str]) -> str:
    h = hashlib.sha256("\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items())).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------- one rule

RESOLUTION_US = 1_000_000  # compacted rows keep their time to the second (rounded up)
COMPACT_ABOVE = 20_000  # buffered rows of a rule before they are compacted


def compact(rows: pl.DataFrame) -> pl.DataFrame:
    """Equal rows of one second as one row with their count in ``_w``.

    A rule over every line (``unparsed_share``) or a day of rejects
    (``baseline(24h)``) would otherwise keep one row per line: a busy host's
    hour is millions. Weighted aggregates (``Aggregate.agg``) give the same
    values. Times are rounded up to the second, as replay rounds them up to
    its grid, so replay with a step of whole seconds is exact, and live a row
    counts at most a second late. Run when a rule's buffer passes
    ``COMPACT_ABOVE`` rows, so small buffers cost nothing.
    """
    ts_us = pl.col("ts").dt.epoch("us")
    up = ((ts_us + RESOLUTION_US - 1) // RESOLUTION_US * RESOLUTION_US)
    keys = [c for c in rows.columns if c != "_w"]
    return (rows.with_columns(pl.from_epoch(up, "us").dt.replace_time_zone("UTC").alias("ts"))
            .group_by(keys).agg(pl.col("_w").sum()))


class RuleRun:
    """A rule's buffered rows and alert states."""

    def __init__(self, rule: Rule, log: Log):
        self.rule = rule
        self.log = log
        self.keys = list(rule.group_by)
        self.frames: list[pl.DataFrame] = []
        self._compact_above = COMPACT_ABOVE
        self._rows = 0  # rows in self.frames
        self.active: dict[Key, Alert] = {}
        self.known: OrderedDict[Key, float] = OrderedDict()  # group -> first seen (Unix time)
        self.last_notified: float | None = None
        self.overflow = 0  # groups over max_alerts at the last evaluation
        self.grace_until = 0.0  # restored alerts are not resolved before the window has refilled
        self._overflow_logged = False
        cond = rule.condition
        self._columns = ([e.cast(pl.String).fill_null("").str.slice(0, LABEL_MAX).alias(k)
                          for k, e in rule.group_exprs.items()]
                         + [e.alias(c) for c, e in cond.row_exprs.items()])  # see columns
        self.aggs = [a.agg("_w") for a in cond.aggregates]
        self.value_columns = [a.column for a in cond.aggregates] + [b.column for b in cond.baselines]
        self.texts = {a.column: a.text.strip() for a in cond.aggregates + cond.baselines}
        empty = self._empty_values()
        self.empty_values = empty
        self.empty_true = bool(pl.DataFrame([empty]).select(cond.expr).item()) if empty else False

    # -------------------------------------------------------------- rows

    def schema(self) -> dict[str, pl.DataType]:
        out: dict[str, pl.DataType] = {"ts": pl.Datetime("us", "UTC")}
        out.update({k: pl.String for k in self.keys})
        out["_w"] = pl.Int64
        return out

    def select(self, lf: pl.LazyFrame, ts: pl.Expr) -> pl.LazyFrame:
        """Source rows → the rule's buffered rows (where applied, needed columns only)."""
        return lf.filter(self.rule.where).select(self.columns(ts)).filter(pl.col("ts").is_not_null())

    def columns(self, ts: pl.Expr) -> list[pl.Expr]:
        """The buffered columns of a source row: time, group keys, aggregate arguments."""
        return [_ts_us(ts), *self._columns]

    def append(self, df: pl.DataFrame | None) -> None:
        if df is not None and df.height:
            self.frames.append(df.with_columns(pl.lit(1, pl.Int64).alias("_w")) if "_w" not in df.columns else df)
            self._rows += df.height
            if self._rows > self._compact_above:  # replay adds everything before it evaluates
                self.buffer()
            if len(self.keys) and self.empty_true:
                for *key, first in df.group_by(self.keys).agg(pl.col("ts").min()).iter_rows():
                    self.remember(tuple(key), first.timestamp())

    def remember(self, key: Key, since: float) -> None:
        """``key`` is a group from ``since`` on: once silent for a window, it alerts (silence rules)."""
        if key in self.known:
            self.known[key] = min(self.known[key], since)
            self.known.move_to_end(key)
            return
        self.known[key] = since
        while len(self.known) > MAX_KNOWN:
            self.known.popitem(last=False)

    def buffer(self) -> pl.DataFrame | None:
        if not self.frames:
            return None
        if len(self.frames) > 1:
            self.frames = [pl.concat(self.frames, how="vertical_relaxed").rechunk()]
        self._rows = self.frames[0].height
        if self._rows > self._compact_above:
            self.frames = [compact(self.frames[0])]
            # rows that do not compress (one per client IP) are not compacted again until they double
            self._rows = self.frames[0].height
            self._compact_above = max(COMPACT_ABOVE, 2 * self._rows)
        return self.frames[0]

    def prune(self, before: float) -> None:
        buf = self.buffer()
        if buf is not None:
            buf = buf.filter(pl.col("ts") > to_dt(before))
            self.frames = [buf] if buf.height else []
            self._rows = buf.height

    def first_ts(self) -> datetime | None:
        buf = self.buffer()
        return buf.get_column("ts").min() if buf is not None and buf.height else None

    def last_ts(self) -> datetime | None:
        buf = self.buffer()
        return buf.get_column("ts").max() if buf is not None and buf.height else None

    def _empty_values(self) -> dict[str, Any]:
        schema = self.schema()
        for c, e in self.rule.condition.row_exprs.items():
            schema[c] = pl.Float64
        empty = pl.DataFrame(schema=schema)
        try:
            row = empty.select(self.aggs).row(0, named=True) if self.aggs else {}
        except Exception:
            row = {a.column: None for a in self.rule.condition.aggregates}
        for b in self.rule.condition.baselines:
            row[b.column] = 0.0
        return row

    # -------------------------------------------------------------- live evaluation

    def evaluate(self, t: float, origin: float) -> pl.DataFrame:
        """The groups whose condition is true at ``t``: keys, aggregate values."""
        rule = self.rule
        buf = self.buffer()
        if buf is None:
            buf = pl.DataFrame(schema=self.schema() | {c: pl.Float64 for c in rule.condition.row_exprs})
        now = pl.lit(to_dt(t))
        win = buf.filter((pl.col("ts") > to_dt(t - rule.window)) & (pl.col("ts") <= now))
        if self.keys:
            agg = win.group_by(self.keys).agg(self.aggs) if self.aggs else win.select(self.keys).unique()
        elif self.empty_true and win.height == 0 and t - origin < rule.window:
            # not observed for a whole window yet: no verdict on silence
            agg = (win.select(self.aggs) if self.aggs else pl.DataFrame({"_one": [1]})).clear()
        else:  # one row, also for an empty window (count() is 0 there)
            agg = win.select(self.aggs) if self.aggs else pl.DataFrame({"_one": [1]})
        for b in rule.condition.baselines:
            span = max(rule.window, min(b.seconds, t - origin))
            part = buf.filter((pl.col("ts") > to_dt(t - b.seconds)) & (pl.col("ts") <= now))
            if self.keys:
                counts = part.group_by(self.keys).agg((pl.col("_w").sum() / span).alias(b.column))
                agg = agg.join(counts, on=self.keys, how="left")
            else:
                agg = agg.with_columns(pl.lit(part["_w"].sum() / span).alias(b.column))
        agg = agg.with_columns([pl.col(b.column).cast(pl.Float64).fill_null(0.0) for b in rule.condition.baselines])
        if self.keys:
            agg = self._fill_silent(agg, self._silent_candidates(t))
        return agg.with_columns(rule.condition.expr.alias("_cond")).filter(pl.col("_cond"))

    def _silent_candidates(self, t: float) -> list[Key]:
        """Groups to evaluate even without rows: active ones, and, when silence is the alert,
        those known for at least a window."""
        cand = list(self.active)
        if self.empty_true:
            cand += [k for k, since in self.known.items() if k not in self.active and t - since >= self.rule.window]
        return cand

    def _fill_silent(self, agg: pl.DataFrame, keys: list[Key]) -> pl.DataFrame:
        if not keys:
            return agg
        present = set(agg.select(self.keys).iter_rows()) if agg.height else set()
        missing = [k for k in keys if k not in present]
        if not missing:
            return agg
        rows = pl.DataFrame([dict(zip(self.keys, k)) for k in missing], schema={k: pl.String for k in self.keys})
        rows = rows.with_columns(pl.lit(v, pl.Float64).alias(c) for c, v in self.empty_values.items())
        return pl.concat([agg.with_columns(pl.col(c).cast(pl.Float64) for c in self.value_columns), rows],
                         how="diagonal_relaxed")

    # -------------------------------------------------------------- replay evaluation

    def evaluate_changes(self, stop: datetime, step: float, origin: datetime) -> pl.DataFrame:
        """The group's values and condition at every grid time where they can change, up to ``stop``.

        A window aggregate changes only when a row enters the window (at the grid
        time ``ceil(ts)``) or leaves it (``ceil(ts + window)``; baselines likewise
        with their period). Probe rows at those times (null arguments, weight
        ``_w`` 0) are added to the rows and ``rolling`` computes every window ``(t -
        window, t]`` in one pass; the probes' rows are the result. Between two of
        them nothing changes, so the replay needs no dense grid: its cost follows
        the rows, not the length of the history. Columns: keys, ``t``, values, ``_cond``.
        """
        rule = self.rule
        keys = self.keys
        values = {c: pl.Float64 for c in self.value_columns}
        empty = pl.DataFrame(schema={k: pl.String for k in keys} | {"t": pl.Datetime("us", "UTC")} | values
                             | {"_cond": pl.Boolean})
        buf = self.buffer()
        if buf is None or buf.height == 0:
            return empty
        step_us = max(1, int(step * 1e6))
        stop_us = int(stop.timestamp() * 1e6)
        spans = [0, int(rule.window * 1e6)] + [int(b.seconds * 1e6) for b in rule.condition.baselines]
        ts_us = pl.col("ts").dt.epoch("us")
        probes = pl.concat([buf.select(*keys, ((ts_us + span + step_us - 1) // step_us * step_us).alias("_us"))
                            for span in spans]).unique().filter(pl.col("_us") <= stop_us)
        probes = probes.select(*keys, pl.from_epoch("_us", "us").dt.replace_time_zone("UTC").alias("ts"),
                               pl.lit(0, pl.Int64).alias("_w"))
        rows = pl.concat([buf, probes], how="diagonal_relaxed")
        rows = rows.sort([*keys, "ts"])
        aggs = [a.agg("_w") for a in rule.condition.aggregates] or [pl.col("_w").sum().alias("_n")]

        def rolling(period_us: int, exprs: list[pl.Expr]) -> pl.DataFrame:
            out = rows.rolling("ts", period=f"{period_us}us", closed="right", group_by=keys or None).agg(exprs)
            return (out.unique(subset=[*keys, "ts"], keep="first")
                    .filter(pl.col("ts").dt.epoch("us") % step_us == 0))

        out = rolling(spans[1], aggs)
        for b, span in zip(rule.condition.baselines, spans[2:]):
            counts = rolling(span, [pl.col("_w").sum().alias(b.column)])
            seen = ((pl.col("ts") - pl.lit(origin)).dt.total_microseconds() / 1e6).clip(rule.window, b.seconds)
            out = out.join(counts.with_columns(pl.col(b.column) / seen), on=[*keys, "ts"], how="left")
        out = out.rename({"ts": "t"}).with_columns(pl.col(c).cast(pl.Float64) for c in self.value_columns)
        return out.with_columns(rule.condition.expr.alias("_cond")).select(empty.columns).sort([*keys, "t"])

    def replay(self, frame: pl.DataFrame, step: float, stop: datetime) -> list[Transition]:
        """Transitions from :meth:`evaluate_changes`: the state machine per group, then the max_alerts cap.

        Values are constant between change points, so a pending alert fires at the
        first grid time ``for`` after it began unless a change point ends it first.
        """
        rule, keys = self.rule, self.keys
        step_us = max(1, int(step * 1e6))
        stop_us = int(stop.timestamp() * 1e6)
        for_us = int(rule.for_ * 1e6)
        prev = pl.col("_cond").shift(1).over(keys).fill_null(False) if keys else pl.col("_cond").shift(1).fill_null(False)
        edges = frame.with_columns(prev.alias("_prev")).filter(pl.col("_cond") != pl.col("_prev"))
        # true runs per group: [start, end) in µs; end None = still true at the end
        runs: list[tuple[int, Key, int | None]] = []
        open_: dict[Key, int] = {}
        for row in edges.select(*keys, pl.col("t").dt.epoch("us").alias("_us"), "_cond").iter_rows():
            key, t, cond = tuple(row[:-2]), row[-2], row[-1]
            if cond:
                open_[key] = t
            elif key in open_:
                runs.append((open_.pop(key), key, t))
        runs += [(start, key, None) for key, start in open_.items()]
        # fire times, and the cap: at most max_alerts runs active (pending or firing) at once. As in
        # the live engine, a group over the cap gets the first slot that frees while it is still true
        # (groups that start together take slots in key order).
        heapq.heapify(runs)
        active: list[int | float] = []  # end times of the accepted runs
        fires: list[tuple[Key, int, int | None]] = []
        over: set[Key] = set()
        while runs:
            start, key, end = heapq.heappop(runs)
            active = [e for e in active if e > start]
            if len(active) >= rule.max_alerts:
                free = min(active)
                over.add(key)
                if free != float("inf") and (end is None or free < end):
                    heapq.heappush(runs, (int(free), key, end))
                continue
            fire = -(-(start + for_us) // step_us) * step_us
            if (end is not None and fire >= end) or fire > stop_us:
                active.append(end if end is not None else float("inf"))
                continue
            active.append(end if end is not None else float("inf"))
            fires.append((key, fire, end))
        self.overflow = len(over)
        if over:
            self.log("warning", f"alert rule {rule.name}: {len(over)} groups waited for or got no alert of "
                                f"their own (more than {rule.max_alerts} active at once: max_alerts)")
        if not fires:
            return []
        # the values at each firing time (the last change point at or before it)
        cols = {k: pl.String for k in keys}
        want = pl.DataFrame([dict(zip(keys, key)) | {"_us": fire, "_i": i} for i, (key, fire, _) in enumerate(fires)],
                            schema=cols | {"_us": pl.Int64, "_i": pl.Int64})
        have = frame.with_columns(pl.col("t").dt.epoch("us").alias("_us")).sort("_us")
        vals = (want.sort("_us").join_asof(have, on="_us", by=keys or None, strategy="backward", check_sortedness=False)
                .sort("_i").select(self.value_columns).iter_rows(named=True))
        out: list[Transition] = []
        self.active = {}
        for (key, fire, end), values in zip(fires, vals):
            labels = {"alertname": rule.name, "severity": rule.severity, **rule.labels}
            labels.update({k: clean_label(v) for k, v in zip(keys, key)})
            alert = Alert(rule.name, key, labels, "firing", fire / 1e6, fired_at=fire / 1e6, values=values,
                          value=values.get(rule.condition.value_column), fingerprint=fingerprint(labels))
            self._annotate(alert)
            out.append(Transition(fire / 1e6, "firing", alert.snapshot()))
            if end is None:
                self.active[key] = alert
                continue
            alert.state, alert.resolved_at = "resolved", end / 1e6
            self._annotate(alert)
            out.append(Transition(end / 1e6, "resolved", alert.snapshot()))
        return out

    # -------------------------------------------------------------- the state machine

    def step(self, t: float, rows: Iterable[dict[str, Any]]) -> tuple[list[Transition], list[Alert]]:
        """Advance every group to time ``t``; ``rows``: the groups whose condition is true, with values.

        Returns the transitions (fired, resolved) and the alerts resolved now.
        """
        rule = self.rule
        out: list[Transition] = []
        true: dict[Key, dict[str, Any]] = {}
        for row in rows:
            true[tuple(row.get(k) or "" for k in self.keys)] = row
        resolved: list[Alert] = []
        for key in list(self.active):
            if key in true:
                continue
            alert = self.active[key]
            if t < self.grace_until:
                continue
            del self.active[key]
            if alert.state == "firing":
                alert.state, alert.resolved_at = "resolved", t
                self._annotate(alert)
                resolved.append(alert)
                out.append(Transition(t, "resolved", alert.snapshot()))
        over = 0
        for key, row in sorted(true.items()):
            alert = self.active.get(key)
            values = {c: row.get(c) for c in self.value_columns}
            if alert is None:
                if len(self.active) >= rule.max_alerts:
                    over += 1
                    continue
                labels = {"alertname": rule.name, "severity": rule.severity, **rule.labels}
                labels.update({k: clean_label(v) for k, v in zip(self.keys, key)})
                alert = Alert(rule.name, key, labels, "pending", t, fingerprint=fingerprint(labels))
                self.active[key] = alert
            alert.values = values
            alert.value = values.get(rule.condition.value_column)
            if alert.state == "pending" and t - alert.active_since >= rule.for_:
                alert.state, alert.fired_at = "firing", t
                self._annotate(alert)
                out.append(Transition(t, "firing", alert.snapshot()))
        self.overflow = over
        if over and not self._overflow_logged:
            self.log("warning", f"alert rule {rule.name}: more than {rule.max_alerts} groups match; "
                                f"{over} get no alert of their own (max_alerts)")
            self._overflow_logged = True
        elif not over:
            self._overflow_logged = False
        return out, resolved

    def _annotate(self, alert: Alert) -> None:
        rule = self.rule
        ctx = {"labels": alert.labels, "value": alert.value, "rule": rule.name, "severity": rule.severity,
               "window": format_duration(rule.window), "for": format_duration(rule.for_),
               "values": {self.texts[c]: v for c, v in alert.values.items() if c in self.texts},
               "state": alert.state}
        ctx.update({k: alert.labels.get(k, "") for k in self.keys})
        for name, tmpl in (("summary", rule.summary), ("description", rule.description)):
            if tmpl is None:
                continue
            try:
                alert.annotations[name] = tmpl.render(ctx)[:4000]
            except Exception as exc:  # a template error must not stop alerting
                alert.annotations[name] = f"{rule.name} (template error: {exc})"
        if "summary" not in alert.annotations:
            alert.annotations["summary"] = f"{rule.name}: {rule.condition_text}"

    def firing(self) -> list[Alert]:
        return [a for a in self.active.values() if a.state == "firing"]




# --------------------------------------------------------------------- the engine

class AlertEngine:
    """Rules over events; a ``tail`` sink. See the module docstring.

    ``notifiers``: objects with ``notify(Notification)`` (and optionally
    ``sync(alerts, at, changed)``, ``close(timeout)``, ``stats()``); None builds
    them from the rules file's ``[[notifier]]`` tables (standard output when
    there are none). ``clock``: wall time for live use. ``replay=True``: the
    lines per input come from the events' ``file`` column (``alerts test``).
    """

    name = "alerts"

    def __init__(self, rules: RuleSet, notifiers: list | None = None, *, log: Log | None = None,
                 clock: Callable[[], float] = time.time, replay: bool = False, classes=None,
                 path: str | None = None):
        self.log = log or _quiet
        self.clock = clock
        self.replay_mode = replay
        self.path = path or None
        self._classes = classes
        self.rules = rules
        self.runs = [RuleRun(r, self.log) for r in rules.rules]
        self.defaults = rules.defaults
        if notifiers is None:
            from .notify import build_notifiers
            from .rules import RulesError
            try:
                notifiers = build_notifiers(rules.notifiers, self.log)
            except ValueError as exc:  # a secret file or variable missing: a user error, exit 2
                raise RulesError(f"{rules.path}: {exc}") from None
        self.notifiers = list(notifiers)
        # when the engine began to observe (baselines; silence needs a whole window): live the start,
        # replayed the first row
        self.origin: float | None = None if replay else clock()
        self.last_eval: float | None = None
        self._inputs: list[tuple[datetime, str, int]] = []
        self.evaluations = 0
        self._warned_future = False

    # -------------------------------------------------------------- sink interface

    def add(self, events: pl.DataFrame) -> None:
        """One batch of parsed events (the schema of logscope.schema)."""
        if events.height == 0:
            return
        runs = [r for r in self.runs if r.rule.source == "events"]
        inputs = [r for r in self.runs if r.rule.source == "inputs"] if self.replay_mode else []
        if not runs and not inputs:
            return
        have = set(events.columns)
        missing = [c for c in SCHEMA if c not in have]
        if missing:
            events = events.with_columns(pl.lit(None, dtype=SCHEMA[c]).alias(c) for c in missing)
        kinds = kinds_in(events)  # None: a big frame
        if kinds is not None:  # a rule whose where holds only for absent kinds selects nothing
            runs = [r for r in runs if r.rule.kinds is None or not r.rule.kinds.isdisjoint(kinds)]
        if any(r.rule.needs_classes for r in runs) and "reject_class" not in have:
            events = self.classes().classify(events)
        lf = events.lazy()
        ts = pl.col("ts")
        if not self.replay_mode:
            # live, "now" is the wall clock: a line stamped in the future (a host's clock ahead, a wrong
            # --tz) counts from when it arrived instead of waiting, unseen, for its time to come
            now = self.clock()
            newest = events.get_column("ts").max()
            if newest is not None and newest.timestamp() > now + 300 and not self._warned_future:
                self.log("warning", f"alerts: events stamped {(newest.timestamp() - now) / 60:.0f} minutes in the "
                                    f"future (clock or --tz wrong?); counted as arriving now")
                self._warned_future = True
            ts = pl.min_horizontal(ts, pl.lit(to_dt(now)))
        if kinds is None:
            frames = pl.collect_all([r.select(lf, ts) for r in runs])
        else:  # a few rows: one query of every rule's where; then each rule's rows (~0.5 ms a query less)
            frames = self._small(events, runs, ts)
        for run, df in zip(runs, frames):
            run.append(df)
        if inputs:
            per = (events.lazy().filter(pl.col("ts").is_not_null())
                   .select("ts", pl.col("file").fill_null("-").alias("input"), pl.lit(1, pl.Int64).alias("lines")))
            for run in inputs:
                run.append(run.select(per, pl.col("ts")).collect())
        self._note_origin(events.get_column("ts").min())

    @staticmethod
    def _small(events: pl.DataFrame, runs: list[RuleRun], ts: pl.Expr) -> list[pl.DataFrame | None]:
        """``r.select(events.lazy(), ts).collect()`` for every run (None: no row), for a small frame:
        one query of every rule's ``where``, then one of each rule's columns at its rows."""
        if not runs:
            return []
        # select_seq: on a few rows, polars' threads cost more than they share
        rows = events.select_seq(_ts_us(ts), *[r.rule.where.alias(f"_m{i}") for i, r in enumerate(runs)]).rows()
        frames = []
        for i, run in enumerate(runs, 1):
            at = [j for j, row in enumerate(rows) if row[i] and row[0] is not None]
            # the columns are row by row: computed on every row, then taken at the selected ones
            frames.append(events.select_seq(*[e.gather(at) for e in run.columns(ts)], _ONE) if at else None)
        return frames

    def add_batch(self, events: pl.DataFrame, batch) -> None:
        """``tail``'s provenance hook: the events, and the lines read from ``batch.input``."""
        self.add(events)
        self.lines_read(batch.input, events.height)

    def lines_read(self, input: str, lines: int, at: float | None = None) -> None:
        """``lines`` lines were read from ``input`` (the input as configured) at ``at`` (default now).

        Call with 0 for every input at start, so an input that never writes a line alerts too.
        """
        t = self.clock() if at is None else at
        if lines <= 0:  # known from now on, no data
            for run in self.runs:
                if run.rule.source == "inputs" and run.keys == ["input"]:
                    run.remember((str(input)[:LABEL_MAX],), t)
            return
        self._inputs.append((to_dt(t), str(input), int(lines)))
        if len(self._inputs) > 100_000:
            self._flush_inputs()

    def watch_inputs(self, names: Iterable[str], at: float | None = None) -> None:
        """Inputs that should be writing: each alerts once silent for a window from ``at`` (default now) on
        (``from = "inputs"`` rules grouped by input), even if it never wrote a line."""
        for name in names:
            self.lines_read(name, 0, at)

    def add_dmarc(self, records: pl.DataFrame) -> None:
        """DMARC aggregate report records (``logscope.dmarc.collect.read_reports(...).records``)."""
        runs = [r for r in self.runs if r.rule.source == "dmarc"]
        if not runs or records.height == 0:
            return
        lf = records.lazy()
        for run, df in zip(runs, pl.collect_all([r.select(lf, pl.col("end")) for r in runs])):
            run.append(df)
        self._note_origin(records.get_column("begin").min())

    def on_commit(self) -> None:
        """``tail`` calls this after every checkpoint: evaluate when due."""
        self.tick()

    def tick(self, now: float | None = None) -> list[Transition]:
        """Evaluate every rule at ``now`` (default the clock) if ``eval_interval`` has passed."""
        now = self.clock() if now is None else now
        if self.last_eval is not None and now - self.last_eval < self.defaults.eval_interval:
            return []
        return self.evaluate(now)

    def evaluate(self, now: float) -> list[Transition]:
        """Evaluate every rule at ``now``, prune old rows, notify."""
        self._flush_inputs()
        if self.origin is None:
            self.origin = now
        self.last_eval = now
        self.evaluations += 1
        out: list[Transition] = []
        notes: list[Notification] = []
        sync: list[dict[str, Any]] = []
        changed = False
        for run in self.runs:
            try:
                rows = run.evaluate(now, self.origin).iter_rows(named=True)
                transitions, resolved = run.step(now, rows)
            except Exception as exc:  # one broken rule must not stop the others or the tail
                self.log("error", f"alert rule {run.rule.name}: evaluation failed: {exc!r}")
                continue
            run.prune(now - run.rule.span)
            out += transitions
            changed |= bool(transitions)
            firing = run.firing()
            due = bool(firing) and (run.last_notified is None or now - run.last_notified >= run.rule.repeat_interval)
            if transitions or due:
                alerts = [a.payload() for a in firing + resolved]
                if alerts:
                    notes.append(Notification(run.rule.name, run.rule.severity, "firing" if firing else "resolved",
                                              alerts, now))
                    run.last_notified = now if firing else None
            sync += [a.payload() for a in firing + resolved]
        for n in self.notifiers:
            try:
                if hasattr(n, "sync"):
                    n.sync(sync, now, changed)
                    continue
                for note in notes:
                    if n.wants(note):
                        n.notify(note)
            except Exception as exc:
                self.log("error", f"notifier {getattr(n, 'name', n)}: {exc!r}")
        return out

    # -------------------------------------------------------------- replay

    def replay(self, step: float | None = None, end: datetime | None = None) -> list[Transition]:
        """Evaluate all added history on a grid of ``step`` seconds; every firing and resolution, in time order.

        The grid runs up to the grid time after the last row (or ``end``); alerts firing then stay in
        :meth:`active`.
        """
        self._flush_inputs()
        step = step or self.defaults.step
        firsts = [t for t in (r.first_ts() for r in self.runs) if t is not None]
        lasts = [t for t in (r.last_ts() for r in self.runs) if t is not None]
        if not lasts:
            return []
        origin = min(firsts) if self.origin is None else min(min(firsts), to_dt(self.origin))
        stop = end or max(lasts)
        step_us = max(1, int(step * 1e6))
        stop_us = -(-int(stop.timestamp() * 1e6) // step_us) * step_us
        stop = datetime.fromtimestamp(stop_us / 1e6, timezone.utc)
        out: list[Transition] = []
        for run in self.runs:
            try:
                out += run.replay(run.evaluate_changes(stop, step, origin), step, stop)
            except Exception as exc:  # one broken rule must not hide what the others found
                self.log("error", f"alert rule {run.rule.name}: evaluation failed: {exc!r}")
        out.sort(key=lambda tr: (tr.at, tr.alert.rule, tr.status != "resolved"))
        return out

    # -------------------------------------------------------------- state, reload, metrics

    def _note_origin(self, ts: datetime | None) -> None:
        if ts is None:
            return
        if self.replay_mode:
            t = ts.timestamp()
            self.origin = t if self.origin is None else min(self.origin, t)

    def _flush_inputs(self) -> None:
        if not self._inputs:
            return
        rows, self._inputs = self._inputs, []
        df = pl.DataFrame(rows, schema={"ts": pl.Datetime("us", "UTC"), "input": pl.String, "lines": pl.Int64},
                          orient="row")
        lf = df.lazy()
        for run in self.runs:
            if run.rule.source == "inputs":
                run.append(run.select(lf, pl.col("ts")).collect())

    def classes(self):
        if self._classes is None:
            from ..classify import load_classes
            self._classes = load_classes()
        return self._classes

    def state(self) -> dict[str, Any]:
        """Active alerts and notification times: ``tail`` stores them with its checkpoints."""
        alerts = []
        for run in self.runs:
            for a in run.active.values():
                alerts.append({"rule": a.rule, "key": list(a.key), "state": a.state, "since": a.active_since,
                               "fired": a.fired_at, "value": a.value, "annotations": a.annotations})
        return {"alerts": alerts, "notified": {r.rule.name: r.last_notified for r in self.runs
                                               if r.last_notified is not None}}

    def restore_state(self, saved: dict | None) -> None:
        """Re-activate saved alerts (no second firing notice; resolved only once the window has refilled)."""
        if not saved:
            return
        now = self.clock()
        runs = {r.rule.name: r for r in self.runs}
        for d in saved.get("alerts", []):
            run = runs.get(d.get("rule"))
            if run is None or len(run.active) >= run.rule.max_alerts:
                continue
            key = tuple(str(k) for k in d.get("key", []))
            if len(key) != len(run.keys):
                continue
            rule = run.rule
            labels = {"alertname": rule.name, "severity": rule.severity, **rule.labels}
            labels.update({k: clean_label(v) for k, v in zip(run.keys, key)})
            run.active[key] = Alert(rule.name, key, labels, d.get("state", "pending"), float(d.get("since") or now),
                                    d.get("fired"), None, d.get("value"), {},
                                    {k: str(v) for k, v in (d.get("annotations") or {}).items()},
                                    fingerprint(labels))
            run.grace_until = now + rule.window
        for name, t in (saved.get("notified") or {}).items():
            if name in runs and t is not None:
                runs[name].last_notified = float(t)

    def reload(self, rules: RuleSet | None = None) -> bool:
        """SIGHUP: re-read the rules file (or take ``rules``); on an error keep the old rules and say so.

        Rules keep their alerts (and rows, when what they select is unchanged) by name.
        """
        if rules is None:
            if not self.path:
                return False
            try:
                rules = load_rules(self.path)
            except Exception as exc:
                self.log("error", f"alert rules not reloaded, keeping the old ones: {exc}")
                return False
        old = {r.rule.name: r for r in self.runs}
        runs = []
        for rule in rules.rules:
            run = RuleRun(rule, self.log)
            prev = old.get(rule.name)
            if prev is not None:
                p = prev.rule
                if (p.source, p.where_text, p.group_by, p.condition_text) == (
                        rule.source, rule.where_text, rule.group_by, rule.condition_text):
                    run.frames, run.known = prev.frames, prev.known
                else:
                    run.grace_until = self.clock() + rule.window
                if p.group_by == rule.group_by:
                    run.active, run.last_notified = prev.active, prev.last_notified
            runs.append(run)
        if rules.notifiers != self.rules.notifiers:
            from .notify import build_notifiers
            try:
                notifiers = build_notifiers(rules.notifiers, self.log)
            except Exception as exc:
                self.log("error", f"notifiers not reloaded, keeping the old ones: {exc}")
            else:
                for n in self.notifiers:
                    _close(n, 2.0)
                self.notifiers = notifiers
        self.rules, self.runs, self.defaults = rules, runs, rules.defaults
        self.log("info", f"alert rules reloaded: {len(runs)} rules")
        return True

    def active(self) -> list[Alert]:
        return [a for r in self.runs for a in r.active.values()]

    def stats(self) -> dict[str, Any]:
        """Counts for self-metrics and tests: alerts by state, per notifier sent/failed/dropped/queued."""
        states: dict[str, int] = {"pending": 0, "firing": 0}
        for a in list(self.active()):
            states[a.state] = states.get(a.state, 0) + 1
        return {"alerts": states, "overflow": {r.rule.name: r.overflow for r in self.runs if r.overflow},
                "notifiers": {getattr(n, "name", str(i)): n.stats() for i, n in enumerate(self.notifiers)
                              if hasattr(n, "stats")}}

    def collect(self):
        """prometheus-client metric families (register with :meth:`register`)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        g = GaugeMetricFamily("logscope_alerts", "Active alerts by rule and state (pending, firing).",
                              labels=["rule", "state"])
        for run in list(self.runs):
            alerts = list(run.active.values())  # a copy: collect() runs in the HTTP thread
            for state in ("pending", "firing"):
                g.add_metric([run.rule.name, state], sum(1 for a in alerts if a.state == state))
        yield g
        c = CounterMetricFamily("logscope_alert_notifications", "Alert notifications by notifier and result: "
                                "sent, failed (a delivery attempt failed; it is retried), dropped (queue full or "
                                "refused for good).", labels=["notifier", "result"])
        for i, n in enumerate(self.notifiers):
            if hasattr(n, "stats"):
                s = n.stats()
                for result in ("sent", "failed", "dropped"):
                    c.add_metric([getattr(n, "name", str(i)), result], s.get(result, 0))
        yield c

    def register(self, registry) -> None:
        """Export :meth:`collect` on a prometheus-client registry (e.g. ``MetricsSink.registry``)."""
        engine = self

        class _C:
            def collect(self):
                return engine.collect()
        registry.register(_C())

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout`` seconds in all), stop the notifier threads."""
        deadline = time.monotonic() + timeout
        for n in self.notifiers:
            _close(n, max(0.0, deadline - time.monotonic()))


def _close(notifier, timeout: float) -> None:
    close = getattr(notifier, "close", None)
    if close is not None:
        close(timeout)


def engine_from_file(path: str, **kwargs) -> AlertEngine:
    """Load ``path`` and build an engine that reloads it on ``reload()``."""
    return AlertEngine(load_rules(path), path=str(path), **kwargs)
