"""DMARC aggregate and SMTP TLS reports in ``logscope tail``: a report directory, counted into Prometheus.

``logscope tail ... --dmarc-dir DIR`` (config ``dmarc_dirs``) watches DIR (a
directory, read recursively, or a Maildir: only ``new/`` and ``cur/``) for
report files, reads each new one once with the parser of ``logscope dmarc``
and adds its records to these families (registered in the registry of the
metrics sink, so they are on the same ``/metrics``):

* ``logscope_dmarc_messages_total{policy_domain, disposition, dkim_aligned, spf_aligned}``
* ``logscope_dmarc_reports_total{policy_domain}``, ``logscope_dmarc_duplicate_reports_total``
* ``logscope_tlsrpt_sessions_total{policy_domain, result}`` (success | failure)
* ``logscope_tlsrpt_failures_total{policy_domain, result_type}`` (RFC 8460 result types)
* ``logscope_dmarc_files_total{result}`` (ok | error), ``logscope_dmarc_newest_report_timestamp_seconds``

Labels are bounded: ``policy_domain`` is one of the configured domains
(``--dmarc-domain``, config ``dmarc_domains``) or, without that list, one of
the first :data:`DEFAULT_MAX_DOMAINS` well-formed domains seen; anything else
is ``other``; SIGHUP re-reads the configured list (:meth:`DmarcSink.set_domains`)
and the directories (:meth:`DmarcSink.set_dirs`).
Dispositions, alignment results and TLS result types come from closed sets. No
source IP, reporter or free text becomes a label: reports come
from strangers.

Exactly once. Which files were read (by device and inode, so a Maildir message
moved from ``new/`` to ``cur/`` is not read again, with size and mtime, so a
file rewritten in place is), which reports were counted (reporter and report
id, for :data:`KEY_RETENTION_DAYS` days: the same report delivered twice counts
once) and the counters themselves are kept together in one ledger file next to
the tail state (``<state dir>/<state name>.dmarc.json``), replaced atomically
after every scan that read something. A restart, even after SIGKILL, resumes
from the last ledger: counters continue where they were (no counter reset) and
nothing is counted twice. The ledger is its own file, not part of the tail
state, because the tail state is rewritten after every batch of log lines and
a ledger of a Maildir of reports is too large for that.

The work happens in the tail thread, in :meth:`DmarcSink.tick` (called when
tail is idle): a watchfiles thread only marks the directories as changed and
wakes tail up. A file is read once it has not changed for :data:`SETTLE`
seconds (a writer may still be at it); at most :data:`FILES_PER_TICK` files
are read per tick, so a backlog does not hold up the log lines. A file that is
not a report (or a report with a bad record) gives one warning line.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, MutableSet
from pathlib import Path
from typing import Any, Callable

from ..dmarc.collect import collect
from ..dmarc.inputs import Limits, clean, walk
from ..dmarc.worker import parse_file
from ..state import write_atomic
from .metrics import OTHER, Family

Log = Callable[[str, str], None]

DEFAULT_MAX_DOMAINS = 20  # policy_domain label values kept without a configured list
SETTLE = 0.5  # seconds a file must be unchanged before it is read
RESCAN = 60.0  # seconds between full rescans when inotify says nothing (it can miss changes, e.g. on NFS)
FILES_PER_TICK = 500  # files read per tick; a backlog takes several ticks
KEY_RETENTION_DAYS = 90  # how long a counted report's key is kept to recognise a second delivery
LEDGER_VERSION = 1

DISPOSITIONS = ("none", "quarantine", "reject")
ALIGNMENT = ("pass", "fail")
# RFC 8460 section 4.3 (and the STS/DANE result types it lists)
TLSRPT_RESULT_TYPES = (
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired", "certificate-not-trusted",
    "validation-failure", "tlsa-invalid", "dnssec-invalid", "dane-required", "sts-policy-fetch-error",
    "sts-policy-invalid", "sts-webpki-invalid",
)
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")  # LDH labels (and _), as reports write them: punycode for IDNs


def _family(name: str, doc: str, labels: tuple[str, ...] = (), type: str = "counter") -> Family:
    return Family(name, doc, type, labels)


def new_families() -> dict[str, Family]:
    """The families this sink exports (empty), by name."""
    fams = [
        _family("logscope_dmarc_messages_total",
                "Messages in DMARC aggregate report records, by policy domain, disposition applied and "
                "aligned DKIM and SPF result.", ("policy_domain", "disposition", "dkim_aligned", "spf_aligned")),
        _family("logscope_dmarc_reports_total", "DMARC aggregate reports counted, by policy domain.",
                ("policy_domain",)),
        _family("logscope_dmarc_duplicate_reports_total",
                "DMARC and SMTP TLS reports not counted because the same report (reporter and report id) was."),
        _family("logscope_tlsrpt_sessions_total",
                "TLS sessions in SMTP TLS reports (RFC 8460), by policy domain and result (success, failure).",
                ("policy_domain", "result")),
        _family("logscope_tlsrpt_failures_total",
                "Failed TLS sessions in SMTP TLS report failure details, by policy domain and RFC 8460 result type.",
                ("policy_domain", "result_type")),
        _family("logscope_dmarc_files_total",
                "Report files read from the DMARC report directories, by result (ok, error: not a readable report "
                "or with problems, one warning line each).", ("result",)),
        _family("logscope_dmarc_newest_report_timestamp_seconds",
                "End of the period of the newest DMARC aggregate report counted (Unix seconds).", type="gauge"),
    ]
    for fam in fams:
        if not fam.labels and fam.type == "counter":
            fam.inc((), 0.0)  # like the Go client: exported as 0 from the start
    return {f.name: f for f in fams}


def family_names() -> list[str]:
    """Every family name, for the README and the tests."""
    return list(new_families())


class DomainLabels:
    """``policy_domain`` label values: a configured domain, else one of the first ``limit``
    well-formed domains seen (when no list is configured); everything else is "other"."""

    def __init__(self, domains: Iterable[str] = (), limit: int = DEFAULT_MAX_DOMAINS):
        self.fixed = {d.strip().lower().rstrip(".") for d in domains if d.strip()}
        self.limit = limit
        self.seen: dict[str, None] = {}  # insertion-ordered

    def __call__(self, domain: str | None) -> str:
        if not domain:
            return OTHER
        if self.fixed:
            return domain if domain in self.fixed else OTHER
        if domain in self.seen:
            return domain
        if len(self.seen) < self.limit and len(domain) <= 253 and domain != OTHER and _DOMAIN.fullmatch(domain):
            self.seen[domain] = None
            return domain
        return OTHER


class ReportKeys(MutableSet):
    """Keys (reporter, report id) of counted reports with the day they were counted; forgets
    keys older than ``retention_days`` on :meth:`prune`."""

    def __init__(self, items: Iterable = ()):
        self._days: dict[tuple[str, str], int] = {}
        for item in items:
            org, rid, day = item
            self._days[(str(org), str(rid))] = int(day)

    def __contains__(self, key) -> bool:
        return key in self._days

    def __iter__(self) -> Iterator:
        return iter(self._days)

    def __len__(self) -> int:
        return len(self._days)

    def add(self, key) -> None:
        self._days.setdefault(key, _today())

    def discard(self, key) -> None:
        self._days.pop(key, None)

    def prune(self, retention_days: int = KEY_RETENTION_DAYS) -> None:
        oldest = _today() - retention_days
        self._days = {k: d for k, d in self._days.items() if d >= oldest}

    def to_json(self) -> list:
        return [[org, rid, day] for (org, rid), day in self._days.items()]


def _today() -> int:
    return int(time.time() // 86400)


class DmarcSink:
    """Watches ``dirs`` for DMARC aggregate and SMTP TLS reports; a ``tail`` sink (only ``tick`` and
    ``close`` do something). Call :meth:`open` once the tail state is locked, :meth:`register` to
    export the families; set ``wakeup`` (tail's event) and ``alerts`` (the alert engine) if there."""

    def __init__(self, dirs: list[str], ledger: Path, log: Log, *, domains: Iterable[str] = (),
                 max_domains: int = DEFAULT_MAX_DOMAINS, start: str = "end", poll: float | None = None,
                 limits: Limits = Limits()):
        self.dirs = [str(d) for d in dirs]
        self.ledger_path = Path(ledger)
        self.log = log
        self.labels = DomainLabels(domains, max_domains)
        self.start = start
        self.poll = poll
        self.rescan = poll if poll else RESCAN
        self.limits = limits
        self.wakeup: threading.Event | None = None
        self.alerts = None  # an alert engine with add_dmarc(records)
        self._families = new_families()
        self._lock = threading.Lock()  # families: the tail thread writes, scrapes read
        self._files: dict[str, list[int]] = {}  # "dev:ino" -> [size, mtime_ns] of every file read
        self._dmarc_keys = ReportKeys()
        self._tls_keys = ReportKeys()
        self._dirty = True  # a scan is due
        self._last_scan = 0.0
        self._missing: set[str] = set()  # directories warned about
        self._rewatch = False  # a missing directory is back: inotify must include it
        self._watching = False  # open(watch=True): an inotify thread follows self.dirs
        self._stop = threading.Event()  # stops the current inotify thread
        self._thread: threading.Thread | None = None
        self.files_read = 0  # report files read since start (tests, --once summary)

    # -------------------------------------------------------- lifecycle

    def open(self, watch: bool = True) -> None:
        """Load the ledger; on a first run ``--from-end`` (the default), take the files already there as read.
        ``watch``: start the inotify thread (not for ``--once``)."""
        try:
            saved = json.loads(self.ledger_path.read_text())
        except FileNotFoundError:
            saved = None
        except (OSError, ValueError) as exc:
            self.log("warning", f"{self.ledger_path}: cannot read the DMARC ledger ({exc}); starting a new one")
            saved = None
        known: list[str] = []
        if saved is not None and saved.get("version") == LEDGER_VERSION:
            self._restore(saved)
            known = [str(d) for d in saved.get("dirs") or ()]
        if self.start == "end" and any(d not in known for d in self.dirs):
            # like log files on a first run: what is there already is history, not news
            self._mark_read([d for d in self.dirs if d not in known])
            self._save()
        self._watching = watch and not self.poll
        self._start_watch()

    def _mark_read(self, dirs: list[str]) -> None:
        for key, stat, _path in self._files_now(time.time(), 0.0, dirs):
            self._files[key] = stat

    def _start_watch(self) -> None:
        """(Re)start the inotify thread on the current directories, if watching."""
        self._stop_watch()
        if not self._watching:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(list(self.dirs), self._stop),
                                        name="logscope-dmarc-watch", daemon=True)
        self._thread.start()

    def _stop_watch(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None

    def _watch(self, dirs: list[str], stop: threading.Event) -> None:
        """inotify on ``dirs`` (recursive): a change marks a scan as due and wakes tail up."""
        dirs = [d for d in dirs if os.path.isdir(d)]
        if not dirs:
            return  # the rescan timer finds them
        try:
            import watchfiles
            for _ in watchfiles.watch(*dirs, watch_filter=None, recursive=True, debounce=200, step=50,
                                      stop_event=stop, raise_interrupt=False, rust_timeout=5000):
                self._dirty = True
                if self.wakeup is not None:
                    self.wakeup.set()
        except Exception as exc:  # inotify limits, a directory removed, odd file systems
            if not stop.is_set():
                self.log("warning", f"inotify stopped for the DMARC report directories ({exc}); "
                                    f"rescanning every {self.rescan:g} s")

    def register(self, registry) -> None:
        registry.register(_Collector(self))

    def close(self) -> None:
        self._watching = False
        self._stop_watch()

    # -------------------------------------------------------- the tail sink interface

    def add(self, events) -> None:
        """Log events are not this sink's business."""

    def tick(self) -> None:
        """Read new report files if a change was seen (or a rescan is due)."""
        now = time.time()
        # a listed directory that was missing is there now: scan it (and inotify it) without waiting for the rescan
        back = any(d in self._missing and os.path.isdir(d) for d in self.dirs)
        if self._dirty or back or now - self._last_scan >= self.rescan:
            try:
                self.scan(FILES_PER_TICK)
            except Exception as exc:  # a bug here must not stop the log following: say it, retry later
                self.log("error", f"reading DMARC reports failed: {exc!r}")

    def scan(self, budget: int | None = None) -> int:
        """Read up to ``budget`` new or changed files (None: all); returns how many were read."""
        now = time.time()
        self._dirty = False
        self._last_scan = now
        todo: list[tuple[str, list[int], str]] = []
        present: set[str] = set()
        backlog = False
        for key, stat, path in self._files_now(now, SETTLE):
            if key in present:  # a hard link, or a directory given twice
                continue
            present.add(key)
            if stat is None:  # changed less than SETTLE ago: look again at the next tick (within a second)
                self._dirty = True
            elif self._files.get(key) != stat:
                todo.append((key, stat, path))
        if budget is not None and len(todo) > budget:
            todo, self._dirty, backlog = todo[:budget], True, True
        gone = [k for k in self._files if k not in present]
        for k in gone:
            del self._files[k]
        if todo:
            self._read(todo)
        if todo or gone:
            self._dmarc_keys.prune()
            self._tls_keys.prune()
            self._save()
        if self._rewatch:
            self._rewatch = False
            self._start_watch()
        if backlog and self.wakeup is not None:
            self.wakeup.set()  # more to read: come back without waiting for the safety timer
        return len(todo)

    # -------------------------------------------------------- reading

    def _files_now(self, now: float, settle: float,
                   dirs: list[str] | None = None) -> Iterator[tuple[str, list[int] | None, str]]:
        """(identity, [size, mtime_ns] or None while settling, path) of every report file in the directories."""
        for d in self.dirs if dirs is None else dirs:
            if not os.path.isdir(d):
                if d not in self._missing:
                    self._missing.add(d)
                    self.log("warning", f"{clean(d)}: DMARC report directory missing; watching for it")
                continue
            if d in self._missing:  # back (or created after a SIGHUP listed it): inotify it from now on
                self._missing.discard(d)
                self._rewatch = True
            for path in walk(d, self._dir_error):
                if os.path.basename(path).startswith("."):  # editors' and rsync's temporary files
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # gone since listed
                key = f"{st.st_dev}:{st.st_ino}"
                fresh = now - st.st_mtime < settle
                yield key, (None if fresh else [st.st_size, st.st_mtime_ns]), path

    def _dir_error(self, origin: str, why: str) -> None:
        if origin not in self._missing:
            self._missing.add(origin)
            self.log("warning", f"{clean(origin)}: {clean(why)}")

    def _read(self, todo: list[tuple[str, list[int], str]]) -> None:
        events: list[tuple] = []
        ok = bad = 0
        for key, stat, path in todo:
            try:
                file_events = parse_file(path, self.limits)
            except Exception as exc:  # a parser bug on a hostile file: that file is bad, the others are not
                file_events = [("error", path, f"cannot read: {exc!r}")]
            problems = [(o, w) for kind, o, w in file_events if kind in ("error", "note")]
            if problems:
                bad += 1
                origin, why = problems[0]
                more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
                self.log("warning", f"{clean(origin, 300)}: {clean(str(why), 300)}{more}")
            else:
                ok += 1
            events += file_events
            self._files[key] = stat
        self.files_read += len(todo)
        ds = collect(events, _ignore, None, self._dmarc_keys, self._tls_keys)
        self._count(ds, ok, bad)
        if self.alerts is not None and ds.records.height:
            self.alerts.add_dmarc(ds.records)

    def _count(self, ds, ok: int, bad: int) -> None:
        """Add a dataset's records, reports and TLS sessions to the families."""
        f = self._families
        lab = self.labels
        with self._lock:
            for dom, disp, dkim, spf, n in (ds.records.group_by("domain", "disposition", "dkim_aligned", "spf_aligned")
                                             .agg(_sum("count")).iter_rows()):
                f["logscope_dmarc_messages_total"].inc(
                    (lab(dom), _one_of(disp, DISPOSITIONS), _one_of(dkim, ALIGNMENT), _one_of(spf, ALIGNMENT)), n)
            for dom, n in ds.reports.group_by("domain").len().iter_rows():
                f["logscope_dmarc_reports_total"].inc((lab(dom),), n)
            for dom, good, failed in (ds.tls_policies.group_by("policy_domain")
                                      .agg(_sum("successful"), _sum("failed")).iter_rows()):
                f["logscope_tlsrpt_sessions_total"].inc((lab(dom), "success"), good)
                f["logscope_tlsrpt_sessions_total"].inc((lab(dom), "failure"), failed)
            for dom, rtype, n in (ds.tls_failures.group_by("policy_domain", "result_type")
                                  .agg(_sum("failed")).iter_rows()):
                f["logscope_tlsrpt_failures_total"].inc((lab(dom), _one_of(rtype, TLSRPT_RESULT_TYPES)), n)
            f["logscope_dmarc_duplicate_reports_total"].inc((), ds.duplicates)
            for result, n in (("ok", ok), ("error", bad)):
                if n:
                    f["logscope_dmarc_files_total"].inc((result,), n)
            newest = ds.reports.get_column("end").max() if ds.reports.height else None
            if newest is not None:
                gauge = f["logscope_dmarc_newest_report_timestamp_seconds"]
                ts = newest.timestamp()
                if ts > gauge.values.get((), float("-inf")):
                    gauge.set((), ts)

    # -------------------------------------------------------- ledger

    def _save(self) -> None:
        with self._lock:
            counters = {name: [[*k, v] for k, v in fam.values.items()] for name, fam in self._families.items()}
        doc = {"version": LEDGER_VERSION, "dirs": self.dirs, "files": self._files,
               "dmarc_reports": self._dmarc_keys.to_json(), "tls_reports": self._tls_keys.to_json(),
               "counters": counters, "saved_at": time.time()}
        try:
            write_atomic(self.ledger_path, json.dumps(doc, separators=(",", ":")).encode())
        except OSError as exc:  # a full disk: the next scan tries again (until then a restart re-reads)
            self.log("error", f"{self.ledger_path}: cannot write the DMARC ledger: {exc.strerror or exc}")

    def _restore(self, saved: dict[str, Any]) -> None:
        self._files = {str(k): [int(v[0]), int(v[1])] for k, v in (saved.get("files") or {}).items()}
        self._dmarc_keys = ReportKeys(saved.get("dmarc_reports") or ())
        self._tls_keys = ReportKeys(saved.get("tls_reports") or ())
        self._load_counters(saved.get("counters") or {})

    def _load_counters(self, counters: dict[str, list]) -> None:
        """Add saved counter rows ``{family: [[*labels, value], ...]}``, their ``policy_domain``
        through the current domain list (a domain no longer listed is "other")."""
        for name, rows in counters.items():
            fam = self._families.get(name)
            if fam is None:
                continue
            for row in rows:
                *labels, value = row
                if len(labels) != len(fam.labels):
                    continue
                if name in _DOMAIN_LABELLED:
                    labels[0] = self.labels(labels[0]) if labels[0] != OTHER else OTHER
                if fam.type == "gauge":
                    fam.set(labels, float(value))
                else:
                    fam.inc(labels, float(value))

    def set_domains(self, domains: Iterable[str]) -> None:
        """A new ``policy_domain`` list (SIGHUP reloaded the config): the counters are relabelled as a
        restart would relabel them, so a domain no longer listed moves to "other" and nothing is lost;
        counts already under "other" stay there. A list equal to the current one changes nothing."""
        labels = DomainLabels(domains, self.labels.limit)
        if labels.fixed == self.labels.fixed:
            return
        with self._lock:
            counters = {name: [[*k, v] for k, v in fam.values.items()] for name, fam in self._families.items()}
            self._families = new_families()
            self.labels = labels
            self._load_counters(counters)
        self._save()
        listed = ", ".join(sorted(labels.fixed)) or f"the first {labels.limit} seen"
        self.log("info", f"SIGHUP: DMARC policy domains now {listed}")

    def set_dirs(self, dirs: Iterable[str]) -> None:
        """New report directories (SIGHUP reloaded the config), taken as a restart with that config
        would take them. An added directory's reports already there are history with ``start`` "end"
        (the default; files that arrive later are read), or read with "start" (a report counted before
        is then a duplicate, not counted again). A directory no longer listed is not read any more;
        what it counted stays in the counters. The same list changes nothing."""
        new = list(dict.fromkeys(str(d) for d in dirs))
        if set(new) == set(self.dirs):
            self.dirs = new
            return
        added = [d for d in new if d not in self.dirs]
        removed = [d for d in self.dirs if d not in new]
        self.dirs = new
        self._missing.clear()  # warn again about a directory still (or now) missing
        if self.start == "end" and added:
            self._mark_read(added)
        self._save()  # the ledger's directory list: a restart must not take the added ones as new again
        self._dirty = True  # the next tick scans: files of removed directories leave the ledger
        self._start_watch()
        # said once the new directories are watched: a report dropped after this line is read
        change = "; ".join(f"{what} {', '.join(clean(d) for d in ds)}"
                           for what, ds in (("added", added), ("no longer watched", removed)) if ds)
        self.log("info", f"SIGHUP: DMARC report directories {change}")
        if self.wakeup is not None:
            self.wakeup.set()


# families whose first label is policy_domain
_DOMAIN_LABELLED = frozenset({"logscope_dmarc_messages_total", "logscope_dmarc_reports_total",
                              "logscope_tlsrpt_sessions_total", "logscope_tlsrpt_failures_total"})


def _ignore(origin: str, why: str) -> None:
    """Problems were said per file already."""


def _sum(col: str):
    import polars as pl
    return pl.col(col).sum()


def _one_of(value: str | None, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else OTHER


class _Collector:
    """prometheus-client collector over the sink's families."""

    def __init__(self, sink: DmarcSink):
        self._sink = sink

    def describe(self):
        for fam in self._sink._families.values():
            yield fam.empty()

    def collect(self):
        with self._sink._lock:
            return [fam.metric() for fam in self._sink._families.values()]


__all__ = ["DmarcSink", "DomainLabels", "family_names", "new_families"]
