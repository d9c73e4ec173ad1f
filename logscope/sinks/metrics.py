"""Prometheus metrics from events frames.

``MetricsSink.add(events)`` turns one events frame into counter and histogram
increments: every family is one vectorized polars query (filter, label
expressions, ``group_by``), all queries of a frame run together in
``pl.collect_all``, and only the small grouped results are merged into the
running totals. A scrape reads the totals through a prometheus-client
collector registered in ``sink.registry``.

Counters cost per batch, not per line. Every counter reads only columns
with few distinct values (source, kind, daemon, service, TLS protocol, ...,
and a few flags ``add`` derives from the free-text columns: ``GROUP_COLUMNS``).
The frame is grouped by those columns once (36,000 lines of a mail log make
about a hundred groups). What a group adds to which counter under which
labels is computed once, by the counters' polars queries over the groups not
seen before, and remembered (at most ``PLAN_CAP`` groups); a batch then costs
one ``group_by`` and a dictionary look-up per group. A batch of many groups
(``PLAN_NEW_MAX``: hostile input) runs the counters' queries on its groups,
weighted by their sizes, instead. Histograms read values of every line and
run as queries on the lines; the gauge of the newest time stamp comes with
the groups.

A small frame (``tail`` reads a few lines at a time; at most
``classify.KINDS_MAX_ROWS`` rows) costs one polars query instead: its group
keys and the histograms' values, counted in Python, histograms whose event
kinds are absent left out. A polars query has a fixed cost of ~0.5 ms however
few its rows. A histogram's ``_sum`` adds the batch's values in row order,
as polars' default engine does unless it splits the batch; it may split it
differently from one run to the next, and then the last bits of a sum of
fractions differ.

Why a collector and not ``prometheus_client.Counter``/``Histogram``: a
histogram there takes one ``observe()`` per value (a Python call per line),
counters expose an extra ``_created`` series each, and postfix_exporter's
``postfix_smtp_status_deferred`` has no ``_total`` suffix, which a
prometheus-client counter cannot reproduce.

Every label value comes from a closed set: a value outside the set becomes
``other``. The only open labels (the pipe relay of postfix_exporter, the
input names of the self-metrics, a reject class without a declared class
list) are capped: the first N distinct values are kept, later ones become
``other``. An attacker who sends a million distinct domains, ciphers or reply
texts adds no series.

The ``postfix_*`` families reproduce postfix_exporter's names, label names
and bucket bounds (checked against Debian's prometheus-postfix-exporter
0.3.0, see tests/test_prometheus.py), so existing dashboards keep working.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import polars as pl
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)

from ..classify import kinds_in
from ..schema import SCHEMA

OTHER = "other"

# ------------------------------------------------------------ closed label sets

TLS_PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
TLS_BITS = ("0", "40", "56", "64", "112", "128", "168", "192", "256")
# OpenSSL names as postfix logs them ("with cipher X"), the TLS 1.3 suites and
# the TLS 1.2 and legacy suites still seen on mail servers (opportunistic TLS
# accepts old and anonymous ones). Anything else is "other".
TLS_CIPHERS = (
    "TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384",
    "ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-CCM", "ECDHE-ECDSA-AES128-CCM", "ECDHE-ECDSA-AES256-CCM8", "ECDHE-ECDSA-AES128-CCM8",
    "ECDHE-ECDSA-CAMELLIA256-SHA384", "ECDHE-RSA-CAMELLIA256-SHA384",
    "ECDHE-ECDSA-CAMELLIA128-SHA256", "ECDHE-RSA-CAMELLIA128-SHA256",
    "ECDHE-ECDSA-ARIA256-GCM-SHA384", "ECDHE-ARIA256-GCM-SHA384",
    "ECDHE-ECDSA-ARIA128-GCM-SHA256", "ECDHE-ARIA128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES256-SHA256", "DHE-RSA-AES128-SHA256", "DHE-RSA-AES256-SHA", "DHE-RSA-AES128-SHA",
    "DHE-RSA-AES256-CCM", "DHE-RSA-AES128-CCM", "DHE-RSA-AES256-CCM8", "DHE-RSA-AES128-CCM8",
    "DHE-RSA-CAMELLIA256-SHA256", "DHE-RSA-CAMELLIA128-SHA256",
    "DHE-RSA-CAMELLIA256-SHA", "DHE-RSA-CAMELLIA128-SHA",
    "DHE-DSS-AES256-GCM-SHA384", "DHE-DSS-AES128-GCM-SHA256", "DHE-DSS-AES256-SHA", "DHE-DSS-AES128-SHA",
    "AES256-GCM-SHA384", "AES128-GCM-SHA256", "AES256-SHA256", "AES128-SHA256", "AES256-SHA", "AES128-SHA",
    "CAMELLIA256-SHA", "CAMELLIA128-SHA", "SEED-SHA", "IDEA-CBC-SHA",
    "DES-CBC3-SHA", "ECDHE-RSA-DES-CBC3-SHA", "EDH-RSA-DES-CBC3-SHA", "DES-CBC-SHA", "RC4-SHA", "RC4-MD5",
    "ADH-AES256-GCM-SHA384", "ADH-AES128-GCM-SHA256", "ADH-AES256-SHA256", "ADH-AES128-SHA256",
    "ADH-AES256-SHA", "ADH-AES128-SHA", "AECDH-AES256-SHA", "AECDH-AES128-SHA", "ADH-CAMELLIA256-SHA",
)
TLS_TRUST = ("Anonymous", "Untrusted", "Trusted", "Verified")
# SMTP commands and states a postfix smtpd "lost connection after X" names.
SMTP_STAGES = (
    "CONNECT", "HELO", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "BDAT", "END-OF-MESSAGE",
    "RSET", "NOOP", "VRFY", "ETRN", "QUIT", "XCLIENT", "XFORWARD", "UNKNOWN", "HELP",
)
SASL_METHODS = (
    "", "PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "NTLM", "GSSAPI", "XOAUTH2", "OAUTHBEARER",
    "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "EXTERNAL", "ANONYMOUS", "OTP",
)
# SMTP reply codes of rejects (RFC 5321, 3463 usage); any other 3-digit code is "other".
REPLY_CODES = (
    "421", "450", "451", "452", "454", "455", "500", "501", "502", "503", "504", "521", "523",
    "530", "534", "535", "538", "550", "551", "552", "553", "554", "555", "556",
)
# Postfix daemons (the last part of the program name), for the service label
# of postfix_unsupported_log_entries_total.
POSTFIX_DAEMONS = (
    "anvil", "bounce", "cleanup", "defer", "discard", "dnsblog", "error", "flush", "lmtp", "local",
    "master", "oqmgr", "pickup", "pipe", "postalias", "postcat", "postconf", "postdrop", "postfix",
    "postfix-script", "postkick", "postlock", "postlog", "postmap", "postmulti", "postqueue",
    "postscreen", "postsuper", "proxymap", "qmgr", "qmqpd", "retry", "scache", "sendmail", "showq",
    "smtp", "smtpd", "spawn", "tlsmgr", "tlsproxy", "trace", "trivial-rewrite", "verify", "virtual",
)
POSTFIX_TRANSPORTS = ("smtp", "lmtp", "local", "virtual", "pipe", "error", "retry", "discard")
# master.cf service -> label of logscope_smtpd_sessions_total; a plain
# postfix/smtpd (no service part) is the port-25 "smtp" service.
SMTPD_SERVICES = {"smtp": "smtp", "25": "smtp", "submission": "submission", "587": "submission",
                  "smtps": "smtps", "465": "smtps", "submissions": "submissions"}
# Services whose sessions are TLS from the first byte (wrapper mode).
WRAPPER_TLS_SERVICES = ("smtps", "submissions")
DOVECOT_PROTOCOLS = ("imap", "pop3", "managesieve", "submission", "lmtp")
LOGIN_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "XOAUTH2",
                    "OAUTHBEARER", "EXTERNAL", "GSSAPI", "NTLM", "OTP", "ANONYMOUS")
DOVECOT_TLS = {"TLS": "tls", "secured": "secured", "plaintext": "plaintext", "TLS handshaking": "handshaking"}
RSPAMD_ACTIONS = {"no action": "no_action", "greylist": "greylist", "add header": "add_header",
                  "rewrite subject": "rewrite_subject", "soft reject": "soft_reject", "reject": "reject",
                  "discard": "discard", "quarantine": "quarantine"}
EXIM_DELIVERY_STATUSES = ("delivered", "additional", "cutthrough", "suppressed", "deferred", "bounced")
EXIM_REJECT_ACTIONS = ("reject", "defer", "drop", "discard")
# Cisco ASA message ids the cisco_asa parser knows (parsers/cisco_asa.toml);
# every other id is counted as "other".
ASA_MESSAGE_IDS = tuple(str(i) for i in (
    105003, 105004, 105005, 105006, 105007, 105008, 105009,
    106001, 106006, 106007, 106010, 106014, 106015, 106016, 106017, 106020, 106021, 106022, 106023, 106100,
    109005, 109006, 109007, 109008,
    111001, 111002, 111003, 111004, 111005, 111006, 111007, 111008, 111009, 111010,
    113004, 113005, 113006,
    302013, 302014, 302015, 302016, 302018, 302020, 302021, 302023,
    305011, 305012, 313001, 313004, 313005, 419002, 605004, 605005, 611101, 611102, 611103,
    710003, 710005, 733100,
))
ASA_SEVERITIES = tuple(str(i) for i in range(8))

# postfix_exporter's bucket bounds.
DELAY_BUCKETS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 60.0, 3600.0, 86400.0, 172800.0)
NRCPT_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
SIZE_BUCKETS = (1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9)
RSPAMD_SCORE_BUCKETS = (-10.0, -5.0, -2.0, 0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0)
# delays=a/b/c/d, in postfix_exporter's stage names.
DELAY_STAGES = ("before_queue_manager", "queue_manager", "connection_setup", "transmission")

# Columns that take few distinct values in a batch: closed sets, program-derived names, enums, and the
# columns ``_derive`` makes from free text. A counter reading only these runs on the frame grouped by
# them. A hostile value (a made-up cipher name) only adds a group; the labels still come from closed sets.
GROUP_COLUMNS = frozenset({
    "source", "kind", "daemon", "service", "proto", "tls", "method", "sasl_method", "stage", "reply_code",
    "action", "status", "transport", "tls_trust", "tls_protocol", "tls_cipher", "tls_bits", "asa_id",
    "severity", "reject_class", "_what", "_peer_v6", "_alg_bits", "_starttls", "_fcrdns", "_timed_out",
})
# Groups whose counter increments are remembered; past this (hostile variety) the memory starts over
# with the groups of the batch at hand.
PLAN_CAP = 4096
# A batch of more groups than this (hostile variety) is counted by the counters' queries on its groups in
# polars, and nothing is remembered (a Python loop over that many groups costs more).
PLAN_NEW_MAX = 512

# Caps of the open labels.
PIPE_RELAY_CAP = 16
INPUT_CAP = 64
REJECT_CLASS_CAP = 32


# ------------------------------------------------------------ label helpers

def one_of(expr: pl.Expr, allowed: Iterable[str], null: str = OTHER) -> pl.Expr:
    """``expr`` as a string label when it is in ``allowed``, else "other" (``null`` for nulls)."""
    s = expr.cast(pl.String)
    return (pl.when(s.is_null()).then(pl.lit(null))
            .when(s.is_in(list(allowed))).then(s)
            .otherwise(pl.lit(OTHER)))


def mapped(expr: pl.Expr, mapping: dict[str, str], null: str = OTHER) -> pl.Expr:
    """``expr`` translated through ``mapping``; unmapped values become "other"."""
    s = expr.cast(pl.String)
    return pl.when(s.is_null()).then(pl.lit(null)).otherwise(
        s.replace_strict(mapping, default=OTHER, return_dtype=pl.String))


def yes_no(cond: pl.Expr) -> pl.Expr:
    return pl.when(cond).then(pl.lit("yes")).otherwise(pl.lit("no"))


class LabelCap:
    """Keeps the first ``limit`` distinct values of an open label; later ones map to "other"."""

    def __init__(self, limit: int):
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) < self.limit and value != OTHER:
            self.seen.add(value)
            return value
        return OTHER


# ------------------------------------------------------------ families

def go_float(x: float) -> str:
    """A bucket bound as Go exporters write it ("60", "0.001", "1e+06"), so ``le`` values match theirs."""
    s = "%g" % x
    return s if float(s) == x else repr(x)


@dataclass
class Family:
    """One metric family and its running values, keyed by the tuple of label values."""

    name: str
    doc: str
    type: str  # counter | gauge | untyped | histogram
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    caps: dict[str, LabelCap] = field(default_factory=dict)
    values: dict[tuple[str, ...], float] = field(default_factory=dict)
    # histograms: cumulative bucket counts (one per bound), sum, count
    hist: dict[tuple[str, ...], list[float]] = field(default_factory=dict)

    def key(self, values: Iterable) -> tuple[str, ...]:
        out = []
        for name, v in zip(self.labels, values):
            v = "" if v is None else str(v)
            cap = self.caps.get(name)
            out.append(cap(v) if cap else v)
        return tuple(out)

    def inc(self, labels: Iterable = (), amount: float = 1.0) -> None:
        k = self.key(labels)
        self.values[k] = self.values.get(k, 0.0) + amount

    def set(self, labels: Iterable, value: float) -> None:
        self.values[self.key(labels)] = value

    def observe_counts(self, labels: Iterable, cumulative: list[float], total: float, count: float) -> None:
        k = self.key(labels)
        cur = self.hist.get(k)
        if cur is None:
            cur = self.hist[k] = [0.0] * (len(self.buckets) + 2)
        for i, c in enumerate(cumulative):
            cur[i] += c
        cur[-2] += total
        cur[-1] += count

    def empty(self) -> Metric:
        """The family without samples (for the registry's name check)."""
        return Family(self.name, self.doc, self.type, self.labels, self.buckets).metric()

    def metric(self, values: dict[tuple[str, ...], float] | None = None) -> Metric:
        """The prometheus-client family with the current samples (or ``values`` instead)."""
        labels = list(self.labels)
        if self.type == "histogram":
            m = HistogramMetricFamily(self.name, self.doc, labels=labels)
            for k, v in sorted(self.hist.items()):
                bounds = [(go_float(b), c) for b, c in zip(self.buckets, v)]
                bounds.append(("+Inf", v[-1]))
                m.add_metric(list(k), bounds, v[-2])
            return m
        cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "untyped": UnknownMetricFamily}[self.type]
        m = cls(self.name, self.doc, labels=labels)
        for k, v in sorted((values if values is not None else self.values).items()):
            m.add_metric(list(k), v)
        return m


@dataclass
class Spec:
    """How one family is derived from an events frame.

    ``query`` maps the frame (lazy) to one row per counted event with one
    string column per label, plus the observed value ``_v`` for histograms
    and gauges (a gauge keeps the maximum). ``grouped`` (counters): the
    query reads only ``GROUP_COLUMNS`` and gets the frame grouped by them,
    a row per group, and keeps the group's number ``_g`` beside the labels
    (``weighted``: its size ``_n``).
    """

    family: Family
    query: Callable[[pl.LazyFrame], pl.LazyFrame]
    grouped: bool = False
    reads: frozenset[str] = frozenset()  # the columns a grouped query reads
    weighted: Callable[[pl.LazyFrame], pl.LazyFrame] | None = None  # grouped: keeps ``_n`` instead of ``_g``


@dataclass
class Hist:
    """How one histogram family is observed: for each row where ``where`` holds, every non-null
    value of ``values`` under the labels ``labels``. One value has the key None; several have
    as keys the values of the label ``value_label`` (postfix_exporter's ``stage``).

    A big frame runs ``query`` in polars; a small one evaluates ``where``, the labels and the
    values in the sink's one query of the frame and observes them in Python (``add``).
    """

    family: Family
    where: pl.Expr
    values: dict[str | None, pl.Expr]
    labels: dict[str, pl.Expr] = field(default_factory=dict)
    value_label: str = "stage"
    kinds: frozenset[str] = frozenset()  # the event kinds of the rows where ``where`` can hold

    def query(self, lf: pl.LazyFrame) -> pl.LazyFrame:
        """One row per observation: the labels and the value ``_v``."""
        lf = lf.filter(self.where).select(*[e.alias(n) for n, e in self.labels.items()],
                                          *[e.alias("_v" if k is None else k) for k, e in self.values.items()])
        if None not in self.values:
            lf = lf.unpivot(on=list(self.values), index=list(self.labels), variable_name=self.value_label,
                            value_name="_v")
        return lf.drop_nulls("_v")

    def columns(self, i: int) -> list[pl.Expr]:
        """``where``, the labels and the values as columns ``_h<i>_...`` of one query of a frame."""
        return ([self.where.alias(f"_h{i}")] + [e.alias(f"_h{i}_l{n}") for n, e in self.labels.items()]
                + [e.alias(f"_h{i}_v{j}") for j, e in enumerate(self.values.values())])

    def observe(self, rows: list[tuple], at: int, acc: dict[tuple, list]) -> None:
        """Add the observations of ``rows`` (``columns`` from position ``at``) to ``acc``: label
        values -> [cumulative bucket counts..., sum, count], sums in row order."""
        fam = self.family
        names = list(self.labels)
        keys = list(self.values)
        nl = len(names)
        for row in rows:
            if not row[at]:
                continue
            labels = dict(zip(names, row[at + 1:at + 1 + nl]))
            for k, v in zip(keys, row[at + 1 + nl:at + 1 + nl + len(keys)]):
                if v is None:
                    continue
                if k is not None:
                    labels[self.value_label] = k
                key = tuple(labels[n] for n in fam.labels)
                cur = acc.get(key)
                if cur is None:
                    cur = acc[key] = [0] * len(fam.buckets) + [0.0, 0]
                for b, bound in enumerate(fam.buckets):
                    cur[b] += v <= bound
                cur[-2] += v
                cur[-1] += 1


def _roots(*exprs: pl.Expr) -> set[str]:
    """The columns the expressions read."""
    return {name for e in exprs for name in e.meta.root_names()}


def _kind(*kinds: str) -> pl.Expr:
    return pl.col("kind").is_in(list(kinds)) if len(kinds) > 1 else pl.col("kind") == kinds[0]


def _daemon(*daemons: str) -> pl.Expr:
    return pl.col("daemon").is_in(list(daemons))


def _tls_labels() -> dict[str, pl.Expr]:
    """postfix_exporter's TLS labels from a tls_in/tls_out event."""
    return {
        "trust": one_of(pl.col("tls_trust"), TLS_TRUST),
        "protocol": one_of(pl.col("tls_protocol"), TLS_PROTOCOLS),
        "cipher": one_of(pl.col("tls_cipher"), TLS_CIPHERS),
        "secret_bits": one_of(pl.col("tls_bits"), TLS_BITS),
        # the second number of "(256/256 bits)" has no column: _derive extracts it
        "algorithm_bits": one_of(pl.col("_alg_bits"), TLS_BITS),
    }


# delays=a/b/c/d: each stage's delay
_DELAY_PARTS = {s: pl.col("delays").str.split("/").list.get(i, null_on_oob=True).cast(pl.Float64, strict=False)
                for i, s in enumerate(DELAY_STAGES)}


def _select(where: pl.Expr, *keep: pl.Expr, **labels: pl.Expr) -> Callable[[pl.LazyFrame], pl.LazyFrame]:
    """The rows where ``where`` holds, with the ``keep`` and ``labels`` columns."""
    def query(lf: pl.LazyFrame) -> pl.LazyFrame:
        lf = lf.filter(where)
        return lf.select(*keep, **labels) if keep or labels else lf
    return query


def _default_reject_class() -> tuple[Callable[[pl.Expr], pl.Expr] | None, tuple[str, ...] | None]:
    """The reject classes of ``logscope.classify``: ``add`` classifies each frame first
    (column ``reject_class``), so the class expression just reads that column."""
    from .. import classify
    return (lambda _text: pl.col("reject_class").cast(pl.String)), tuple(classify.CLASSES)


# ------------------------------------------------------------ the sink

class MetricsSink:
    """Running Prometheus metrics over every events frame given to ``add``.

    ``registry``: where the metrics are registered (default: a new registry
    that also carries the process_* and python_info metrics).
    ``reject_class``: maps the reject text expression to a class expression
    (default: the classes of ``logscope.classify``, from ``classes`` or the
    bundled rules); ``reject_classes``: its closed list of classes.

    Thread safe: ``add`` and the self-metric hooks may run in the tail thread
    while the HTTP server scrapes.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 reject_class: Callable[[pl.Expr], pl.Expr] | None = None,
                 reject_classes: Iterable[str] | None = None, classes=None):
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        self.registry = registry
        self._lock = threading.Lock()
        # ``classes``: a loaded logscope.classify.RejectClasses (user rules included)
        self._classifier = None
        if reject_class is None:
            from ..classify import load_classes
            self._classifier = classes or load_classes()
            reject_class, default_classes = _default_reject_class()
            if reject_classes is None:
                reject_classes = default_classes
        self._reject_class = reject_class
        self._reject_classes = tuple(reject_classes) if reject_classes is not None else None
        self._families: dict[str, Family] = {}
        self._specs: list[Spec] = []
        self._hists: list[Hist] = []
        self._checkpoint_at: float | None = None
        self._define()
        registry.register(_Collector(self))

    # -------------------------------------------------------- definitions

    def _family(self, name: str, doc: str, type: str = "counter", labels: tuple[str, ...] = (),
                buckets: tuple[float, ...] = (), caps: dict[str, LabelCap] | None = None) -> Family:
        fam = Family(name, doc, type, labels, buckets, caps or {})
        # like the Go client: a family without labels is exported (as 0) from the start
        if not labels and type == "histogram":
            fam.observe_counts((), [0.0] * len(buckets), 0.0, 0.0)
        elif not labels and type != "gauge":
            fam.inc((), 0.0)
        self._families[name] = fam
        return fam

    def _spec(self, fam: Family, query: Callable[[pl.LazyFrame], pl.LazyFrame]) -> None:
        self._specs.append(Spec(fam, query))

    def _hist(self, fam: Family, where: pl.Expr, values: dict[str | None, pl.Expr], kinds: Iterable[str],
              **labels: pl.Expr) -> None:
        self._hists.append(Hist(fam, where, values, labels, kinds=frozenset(kinds)))

    def _count(self, fam: Family, where: pl.Expr, labels: dict[str, pl.Expr]) -> None:
        """A counter spec: rows where ``where`` holds, by ``labels``; on the groups when it can."""
        reads = _roots(where, *labels.values())
        if reads <= GROUP_COLUMNS:
            self._specs.append(Spec(fam, _select(where, pl.col("_g"), **labels), True, frozenset(reads),
                                    _select(where, pl.col("_n"), **labels)))
        else:  # a user's reject classifier over the reply text
            self._spec(fam, _select(where, **labels))

    def _counter(self, name: str, doc: str, where: pl.Expr, type: str = "counter",
                 caps: dict[str, LabelCap] | None = None, **labels: pl.Expr) -> Family:
        fam = self._family(name, doc, type, tuple(labels), caps=caps)
        self._count(fam, where, labels)
        return fam

    def _define(self) -> None:
        self._define_postfix()
        self._define_logscope()
        self._define_self()
        self._raw = [spec for spec in self._specs if not spec.grouped]
        self._grouped = [spec for spec in self._specs if spec.grouped]
        # what the grouped specs read (only what they read: every extra key column multiplies the groups)
        self._group_keys: list[str] = sorted(set().union(*(spec.reads for spec in self._grouped)) | {"source"})
        # group key -> [(family, label values)] it adds its size to; see the module doc
        self._plan: dict[tuple, list[tuple[Family, tuple]]] = {}

    def _define_postfix(self) -> None:
        """postfix_exporter's families (names, labels, buckets as in postfix_exporter 0.3.0)."""
        pf = pl.col("source") == "postfix"
        smtpd = pf & _daemon("smtpd")
        c = self._counter
        c("postfix_smtpd_connects_total", "Total number of incoming connections.",
          smtpd & _kind("smtpd_connect"))
        c("postfix_smtpd_disconnects_total", "Total number of incoming disconnections.",
          smtpd & _kind("smtpd_disconnect"))
        c("postfix_smtpd_connections_lost_total", "Total number of connections lost.",
          smtpd & _kind("smtpd_lost_connection"), after_stage=one_of(pl.col("stage"), SMTP_STAGES))
        c("postfix_smtpd_messages_processed_total", "Total number of messages processed.",
          smtpd & _kind("smtpd_client"), sasl_method=one_of(pl.col("sasl_method"), SASL_METHODS, null=""))
        c("postfix_smtpd_messages_rejected_total",
          "Total number of NOQUEUE rejects (smtpd rejects at the RCPT stage).",
          smtpd & _kind("reject") & (pl.col("action") == "reject") & (pl.col("stage") == "RCPT"),
          code=one_of(pl.col("reply_code"), REPLY_CODES))
        c("postfix_smtpd_sasl_authentication_failures_total", "Total number of SASL authentication failures.",
          smtpd & _kind("sasl_auth_failed"))
        c("postfix_smtpd_tls_connections_total", "Total number of incoming TLS connections.",
          smtpd & _kind("tls_in"), **_tls_labels())
        c("postfix_smtpd_forward_confirmed_reverse_dns_errors_total",
          "Total number of connections for which forward-confirmed DNS cannot be resolved.",
          smtpd & _kind("warning") & pl.col("_fcrdns"))
        smtp = pf & _daemon("smtp")
        c("postfix_smtp_tls_connections_total", "Total number of outgoing TLS connections.",
          smtp & _kind("tls_out"), **_tls_labels())
        deferred = pf & _kind("delivery") & (pl.col("transport") == "smtp") & (pl.col("status") == "deferred")
        c("postfix_smtp_status_deferred", "Total number of messages deferred (untyped: postfix_exporter's "
          "name has no _total suffix).", deferred, type="untyped")
        c("postfix_smtp_deferred_messages_total", "Total number of messages that have been deferred on SMTP.",
          deferred)
        c("postfix_smtp_connection_timed_out_total", "Total number of messages that have been deferred on SMTP "
          "(connect to the remote server timed out).",
          smtp & _kind("connect_failed") & pl.col("_timed_out"))
        for transport, label in (("smtp", "SMTP"), ("lmtp", "LMTP")):
            fam = self._family(f"postfix_{transport}_delivery_delay_seconds",
                               f"{label} message processing time in seconds.", "histogram", ("stage",),
                               DELAY_BUCKETS)
            self._hist(fam, pf & _kind("delivery") & (pl.col("transport") == transport), _DELAY_PARTS,
                       kinds=("delivery",))
        fam = self._family("postfix_pipe_delivery_delay_seconds", "Pipe message processing time in seconds.",
                           "histogram", ("relay", "stage"), DELAY_BUCKETS, caps={"relay": LabelCap(PIPE_RELAY_CAP)})
        self._hist(fam, pf & _kind("delivery") & (pl.col("transport") == "pipe"), _DELAY_PARTS,
                   kinds=("delivery",), relay=pl.col("relay_host").fill_null(""))
        qmgr_from = pf & _kind("qmgr_from")
        fam = self._family("postfix_qmgr_messages_inserted_receipients",
                           "Number of receipients per message inserted into the mail queues.", "histogram",
                           buckets=NRCPT_BUCKETS)
        self._hist(fam, qmgr_from, {None: pl.col("nrcpt").cast(pl.Float64)}, kinds=("qmgr_from",))
        fam = self._family("postfix_qmgr_messages_inserted_size_bytes",
                           "Size of messages inserted into the mail queues in bytes.", "histogram",
                           buckets=SIZE_BUCKETS)
        self._hist(fam, qmgr_from, {None: pl.col("size").cast(pl.Float64)}, kinds=("qmgr_from",))
        c("postfix_qmgr_messages_removed_total", "Total number of messages removed from mail queues.",
          pf & _kind("qmgr_removed"))
        cleanup = pf & _daemon("cleanup")
        c("postfix_cleanup_messages_processed_total", "Total number of messages processed by cleanup.",
          cleanup & _kind("cleanup_message_id"))
        c("postfix_cleanup_messages_rejected_total", "Total number of messages rejected by cleanup.",
          cleanup & _kind("cleanup_action") & (pl.col("action") == "reject"))
        c("postfix_cleanup_messages_not_accepted_total",
          "Total number of messages not accepted by cleanup (milter-reject).",
          cleanup & _kind("milter_action") & (pl.col("action") == "milter-reject"))
        c("postfix_unsupported_log_entries_total", "Log entries that could not be processed.",
          pf & _kind("unparsed"), service=one_of(pl.col("daemon"), POSTFIX_DAEMONS, null=""))

    def _define_logscope(self) -> None:
        """What postfix_exporter does not export: sessions by TLS, reject classes, other daemons."""
        c = self._counter
        src = pl.col("source")
        c("logscope_events_total", "Events parsed, by source and event kind.", pl.lit(True),
          source=src.cast(pl.String), kind=pl.col("kind").cast(pl.String))
        c("logscope_unparsed_lines_total", "Lines no parser recognised, by source (guessed from the program).",
          _kind("unparsed"), source=src.cast(pl.String))
        # from each batch's groups (source is a group column) and their newest time stamp: see add
        self._newest = self._family("logscope_last_event_timestamp_seconds",
                                    "Time stamp of the newest event seen, by source (Unix seconds).", "gauge",
                                    ("source",))

        # postfix smtpd sessions: TLS when STARTTLS succeeded at least once
        # ("starttls=1", "starttls=2/2"; "starttls=0/1" failed) or the service
        # is TLS-wrapped (smtps, submissions).
        service = mapped(pl.col("service"), SMTPD_SERVICES, null="smtp")
        tls = pl.col("_starttls").fill_null(False) | service.is_in(list(WRAPPER_TLS_SERVICES))
        c("logscope_smtpd_sessions_total", "Postfix smtpd sessions (at disconnect), by master.cf service and "
          "whether the session used TLS (STARTTLS or a TLS-wrapped service).",
          (src == "postfix") & _daemon("smtpd") & _kind("smtpd_disconnect"), service=service, tls=yes_no(tls))

        # rejects by reason class (the classifier comes from logscope.classify)
        action = pl.col("action")
        is_reject = (
            ((src == "postfix") & _kind("reject") & action.is_in(["reject", "proxy-reject"]))
            | ((src == "postfix") & _kind("milter_action") & (action == "milter-reject"))
            | ((src == "postfix") & _kind("cleanup_action") & (action == "reject"))
            | ((src == "exim") & _kind("exim_reject") & action.is_in(list(EXIM_REJECT_ACTIONS)))
        )
        text = pl.coalesce(pl.col("reply"), pl.col("reason"))
        if self._reject_class is None:
            klass = pl.lit("unclassified")
            caps = None
        elif self._reject_classes is not None:
            klass = one_of(self._reject_class(text), self._reject_classes + ("unclassified",),
                           null="unclassified")
            caps = None
        else:
            klass = self._reject_class(text).cast(pl.String).fill_null("unclassified")
            caps = {"class": LabelCap(REJECT_CLASS_CAP)}
        fam = self._family("logscope_rejects_total", "Rejected SMTP transactions (postfix smtpd, postscreen, "
                           "milter and cleanup rejects; exim ACL rejects), by source and reject reason class.",
                           labels=("source", "class"), caps=caps)
        self._count(fam, is_reject, {"source": src.cast(pl.String), "class": klass})

        # authentication failures by service
        auth_service = (
            pl.when(src == "postfix").then(mapped(pl.col("service"), SMTPD_SERVICES, null="smtp"))
            .when(src == "dovecot").then(one_of(pl.col("proto"), DOVECOT_PROTOCOLS))
            .when(src == "exim").then(pl.lit("smtp"))
            .otherwise(pl.lit(OTHER))
        )
        is_auth_failure = (
            ((src == "postfix") & _daemon("smtpd") & _kind("sasl_auth_failed"))
            | ((src == "dovecot") & _kind("dovecot_login_failed"))
            | ((src == "exim") & _kind("exim_auth_failed"))
        )
        c("logscope_auth_failures_total", "Failed client authentications: postfix smtpd SASL failures, dovecot "
          "logins that ended with failed authentication, exim authenticator failures; by source and service.",
          is_auth_failure, source=src.cast(pl.String), service=auth_service)

        c("logscope_dovecot_logins_total", "Successful dovecot logins, by protocol and how the connection was "
          "protected (tls, secured = trusted network, plaintext).",
          (src == "dovecot") & _kind("dovecot_login"),
          protocol=one_of(pl.col("proto"), DOVECOT_PROTOCOLS), tls=mapped(pl.col("tls"), DOVECOT_TLS))

        exim_tls = yes_no(pl.col("tls_cipher").is_not_null() | pl.col("tls_protocol").is_not_null())
        exim = src == "exim"
        c("logscope_exim_arrivals_total", "Messages received by exim, by TLS.", exim & _kind("exim_arrival"),
          tls=exim_tls)
        c("logscope_exim_deliveries_total", "Exim delivery attempts by outcome and TLS.",
          exim & _kind("exim_delivery", "exim_deferral", "exim_failure"),
          status=one_of(pl.col("status"), EXIM_DELIVERY_STATUSES), tls=exim_tls)
        c("logscope_exim_rejects_total", "Exim ACL rejects by action and TLS (unknown: exim's reject lines "
          "carry no TLS details).", exim & _kind("exim_reject") & action.is_in(list(EXIM_REJECT_ACTIONS)),
          action=one_of(action, EXIM_REJECT_ACTIONS),
          tls=pl.when(pl.col("tls_cipher").is_not_null() | pl.col("tls_protocol").is_not_null())
          .then(pl.lit("yes")).otherwise(pl.lit("unknown")))

        # operator insights (issue 9): numbers worth graphing, closed label sets only
        tls_line = _kind("tls_in", "tls_out") & (src == "postfix")
        c("logscope_tls_connections_total", "Postfix TLS connections by direction (in: smtpd, out: smtp/lmtp) "
          "and protocol version: the input of a 'require TLS 1.2' decision.", tls_line,
          direction=pl.when(_kind("tls_in")).then(pl.lit("in")).otherwise(pl.lit("out")),
          protocol=one_of(pl.col("tls_protocol"), TLS_PROTOCOLS, null="unknown"))
        c("logscope_logins_total", "Successful dovecot logins by protocol, authentication mechanism and "
          "TLS state (cleartext mechanisms without TLS are the ones to retire).",
          (src == "dovecot") & _kind("dovecot_login"),
          protocol=one_of(pl.col("proto"), DOVECOT_PROTOCOLS),
          mechanism=one_of(pl.col("method").str.to_uppercase(), LOGIN_MECHANISMS, null="unknown"),
          tls=mapped(pl.col("tls"), DOVECOT_TLS))
        family = pl.when(pl.col("_peer_v6")).then(pl.lit("ipv6")).otherwise(pl.lit("ipv4"))
        self._counter("logscope_ip_family_total", "Inbound SMTP connections, outbound deliveries and IMAP/POP3 "
                      "logins by IP family.", pl.col("_peer_v6").is_not_null() & pl.col("_what").is_not_null(),
                      what=pl.col("_what"), family=family)
        c("logscope_postfix_deliveries_total", "Postfix delivery status lines, by transport and status.",
          (src == "postfix") & _kind("delivery"),
          transport=one_of(pl.col("transport"), POSTFIX_TRANSPORTS, null="none"),
          status=one_of(pl.col("status"), ("sent", "deferred", "bounced", "expired", "undeliverable",
                                           "deliverable")))

        rspamd = (src == "rspamd") & _kind("rspamd_verdict")
        c("logscope_rspamd_actions_total", "Messages scanned by rspamd, by action.", rspamd,
          action=mapped(pl.col("action"), RSPAMD_ACTIONS))
        # negative bounds: prometheus-client then leaves out _sum and _count (OpenMetrics forbids a
        # _sum over negative observations); the +Inf bucket is the count
        fam = self._family("logscope_rspamd_score", "Spam score of the messages rspamd scanned (no _sum/_count: "
                           "scores can be negative; the +Inf bucket is the count).", "histogram",
                           buckets=RSPAMD_SCORE_BUCKETS)
        score = pl.col("score")
        self._hist(fam, rspamd, {None: pl.when(score.is_finite()).then(score)}, kinds=("rspamd_verdict",))

        c("logscope_asa_events_total", "Cisco ASA messages, by message id (ids the parser knows, others as "
          "'other') and severity.", (src == "cisco_asa") & pl.col("asa_id").is_not_null(),
          message_id=one_of(pl.col("asa_id"), ASA_MESSAGE_IDS), severity=one_of(pl.col("severity"), ASA_SEVERITIES))

    def _define_self(self) -> None:
        """Self-metrics: filled by the tail loop through the hooks below."""
        cap = LabelCap(INPUT_CAP)
        f = self._family
        self._lines = f("logscope_input_lines_total", "Lines read, by input.", labels=("input",),
                        caps={"input": cap})
        self._bytes = f("logscope_input_bytes_total", "Bytes read, by input.", labels=("input",),
                        caps={"input": cap})
        # one checkpoint file holds every input's position, written atomically: one age
        self._age = f("logscope_checkpoint_age_seconds", "Seconds since the checkpoint (every input's position) "
                      "was last written.", "gauge")
        self._lag = f("logscope_input_lag_bytes", "Bytes written to an input but not read yet.", "gauge",
                      ("input",), caps={"input": cap})
        self._rotations = f("logscope_input_rotations_total", "Rotations, truncations and replacements of an "
                            "input seen.", labels=("input",), caps={"input": cap})
        self._errors = f("logscope_input_read_errors_total", "Errors opening or reading an input.",
                         labels=("input",), caps={"input": cap})

    # -------------------------------------------------------- events

    def add(self, events: pl.DataFrame) -> None:
        """Count one events frame (schema of ``logscope.schema``) into the metrics."""
        if events.height == 0:
            return
        have = set(events.columns)
        missing = [c for c in SCHEMA if c not in have]
        if missing:
            events = events.with_columns(pl.lit(None, dtype=SCHEMA[c]).alias(c) for c in missing)
        if self._classifier is not None and "reject_class" not in have:
            events = self._classifier.classify(events)
        kinds = kinds_in(events)  # None: a big frame
        batch, updates = self._queries(events) if kinds is None else self._small(events, kinds)
        keys, new = self._unplanned(batch)
        counted: list[pl.DataFrame] = []
        if keys is None:  # a hostile variety of values: count these groups in polars, remember none
            weighted = batch.frame().lazy()
            counted = pl.collect_all([_aggregate(s.family, s.weighted(weighted), weighted=True)
                                      for s in self._grouped])
        elif new:  # groups not seen before: what they count, through the counters' queries
            fresh = batch.frame(new).drop("_n").with_columns(pl.Series("_g", new, pl.UInt32)).lazy()
            counted = pl.collect_all([s.query(fresh) for s in self._grouped])
            self._remember(keys, new, counted)
        with self._lock:
            for update in updates:
                update()
            self._merge_newest(batch)
            if keys is None:
                for spec, res in zip(self._grouped, counted):
                    _merge(spec.family, res)
            else:
                for key, n in zip(keys, batch.sizes()):
                    for fam, labels in self._plan[key]:
                        fam.inc(labels, n)

    def _queries(self, events: pl.DataFrame) -> tuple[_Groups, list[Callable[[], None]]]:
        """A big frame's groups, and its histograms and other specs as updates of their families:
        polars queries, run together."""
        lf = events.with_columns(*_derived(events, None), _alg_bits(events)).lazy()
        specs = [(h.family, h.query) for h in self._hists] + [(s.family, s.query) for s in self._raw]
        *results, groups = pl.collect_all(
            [_aggregate(fam, query(lf)) for fam, query in specs]
            + [lf.group_by(self._group_keys).agg(pl.len().alias("_n"), _TS_US.max())])
        updates = [functools.partial(_merge, fam, res) for (fam, _), res in zip(specs, results)]
        return _Groups.of_frame(groups, len(self._group_keys)), updates

    def _small(self, events: pl.DataFrame, kinds: frozenset[str]) -> tuple[_Groups, list[Callable[[], None]]]:
        """``_queries`` for a few rows: one query of the group keys and the histograms' columns,
        counted in Python (a polars query costs ~0.5 ms, a group_by ~1 ms, even on 25 rows);
        histograms whose kinds are absent skipped."""
        derived = _derived(events, kinds)
        # "(256/256 bits)" on the TLS lines: on a few rows a masked regex costs less than picking them
        alg_bits = _ALG_BITS_MASKED if not kinds.isdisjoint(_TLS_KINDS) else pl.lit(None, pl.String)
        by_name = {e.meta.output_name(): e for e in derived} | {"_alg_bits": alg_bits.alias("_alg_bits")}
        columns = [by_name.get(k, pl.col(k)) for k in self._group_keys] + [_TS_US]
        hists = []  # (histogram, position of its columns)
        for i, h in enumerate(h for h in self._hists if h.kinds & kinds):
            hists.append((h, len(columns)))
            columns += h.columns(i)
        frame = events.select_seq(columns)  # on a few rows, polars' threads cost more than they share
        rows = frame.rows()
        updates = []
        for h, at in hists:
            acc: dict[tuple, list] = {}
            h.observe(rows, at, acc)
            updates += [functools.partial(h.family.observe_counts, key, cur[:-2], cur[-2], cur[-1])
                        for key, cur in acc.items()]
        if self._raw:  # a user's reject classifier: on polars' in-memory engine (less fixed cost per query)
            lf = events.with_columns(*derived, _alg_bits(events)).lazy()
            results = pl.collect_all([s.query(lf) for s in self._raw], engine="in-memory")
            updates += [functools.partial(_merge_rows, s.family, res) for s, res in zip(self._raw, results)]
        return _Groups.of_rows(frame, rows, len(self._group_keys)), updates

    def _merge_newest(self, batch: _Groups) -> None:
        """The gauge of the newest time stamp per source, from the batch's groups."""
        newest: dict[str, int] = {}
        for source, ts in zip(batch.column("source"), batch.newest()):
            if ts is not None:
                k = "" if source is None else str(source)
                newest[k] = max(newest.get(k, ts), ts)
        fam = self._newest
        for source, ts in newest.items():
            k, v = fam.key((source,)), ts / 1e6
            if k not in fam.values or v > fam.values[k]:
                fam.values[k] = v

    def _unplanned(self, batch: _Groups) -> tuple[list[tuple] | None, list[int]]:
        """The batch's group keys and the indexes of those not remembered yet (None: too many groups)."""
        if batch.count() > PLAN_NEW_MAX:
            return None, []
        keys = batch.keys()
        new = [i for i, k in enumerate(keys) if k not in self._plan]
        if new and len(self._plan) + len(new) > PLAN_CAP:  # start over with this batch's groups
            self._plan.clear()
            new = list(range(len(keys)))
        return keys, new

    def _remember(self, keys: list[tuple], new: list[int], counted: list[pl.DataFrame]) -> None:
        """Note what each new group adds to which counter (``counted``: the grouped specs' rows by ``_g``)."""
        for i in new:
            self._plan[keys[i]] = []
        for spec, res in zip(self._grouped, counted):
            for g, *labels in res.iter_rows():
                self._plan[keys[g]].append((spec.family, tuple(labels)))

    # -------------------------------------------------------- self-metric hooks

    def lines_read(self, input: str, lines: int, nbytes: int) -> None:
        """``lines`` complete lines of ``nbytes`` bytes were read from ``input``.

        ``input`` should be the input as configured (path or glob given on the
        command line, "-", "journal"), not the name of a rotated file.
        """
        with self._lock:
            self._lines.inc((input,), lines)
            self._bytes.inc((input,), nbytes)

    def checkpoint_written(self, at: float | None = None) -> None:
        """The checkpoint was persisted at ``at`` (Unix time, default now)."""
        with self._lock:
            self._checkpoint_at = time.time() if at is None else at

    def on_commit(self) -> None:
        """``tail``'s hook after every checkpoint write."""
        self.checkpoint_written()

    def input_status(self, rows: Iterable[dict]) -> None:
        """Lag, rotations and read errors from ``Tail.status()`` rows.

        A row has ``input`` (the configured spec), ``lag`` (bytes of one file
        not read yet) and the input's running totals ``rotations`` and
        ``errors``. Lag is summed over an input's files; the totals replace
        the counters' values (never lowering them). Use this or the
        incremental ``rotation``/``read_error``/``input_lag`` hooks, not both.
        """
        lag: dict[str, float] = {}
        totals: dict[str, tuple[float, float]] = {}
        for row in rows:
            name = str(row.get("input"))
            lag[name] = lag.get(name, 0.0) + float(row.get("lag") or 0)
            rot, err = totals.get(name, (0.0, 0.0))
            totals[name] = (max(rot, float(row.get("rotations") or 0)), max(err, float(row.get("errors") or 0)))
        with self._lock:
            for name, v in lag.items():
                self._lag.set((name,), v)
            for name, (rot, err) in totals.items():
                for fam, total in ((self._rotations, rot), (self._errors, err)):
                    k = fam.key((name,))
                    fam.values[k] = max(fam.values.get(k, 0.0), total)

    def input_lag(self, input: str, lag_bytes: int) -> None:
        """``lag_bytes`` bytes of ``input`` are written but not yet read (file size minus offset)."""
        with self._lock:
            self._lag.set((input,), float(lag_bytes))

    def rotation(self, input: str) -> None:
        """``input`` was rotated, truncated or replaced."""
        with self._lock:
            self._rotations.inc((input,))

    def read_error(self, input: str) -> None:
        """Opening or reading ``input`` failed."""
        with self._lock:
            self._errors.inc((input,))

    # -------------------------------------------------------- output

    def families(self) -> list[Metric]:
        """The current value of every family (what a scrape shows)."""
        now = time.time()
        with self._lock:
            out = []
            for fam in self._families.values():
                if fam is self._age:
                    at = self._checkpoint_at
                    out.append(fam.metric({} if at is None else {(): max(0.0, now - at)}))
                else:
                    out.append(fam.metric())
            return out

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def family_names(self) -> list[str]:
        return list(self._families)

    def family(self, name: str) -> Family:
        """A family by its name (a counter also without its ``_total`` suffix)."""
        return self._families.get(name) or self._families[name + "_total"]


# each group's newest time stamp (the gauge logscope_last_event_timestamp_seconds)
_TS_US = pl.col("ts").dt.epoch("us").alias("_ts_us")


class _Groups:
    """A batch grouped by ``GROUP_COLUMNS``: each group's key, size and newest time stamp (µs).

    From polars' ``group_by`` (``of_frame``) or, for a few rows, counted in
    Python (``of_rows``): a ``group_by`` costs ~1 ms even on 25 rows. The
    first ``n`` columns of ``frame`` are the keys.
    """

    def __init__(self, frame: pl.DataFrame, n: int, at: list[int] | None = None, keys: list[tuple] | None = None,
                 sizes: list[int] | None = None, newest: list[int | None] | None = None):
        self._frame, self._n, self._at = frame, n, at  # at: a row of each group (of_rows)
        self._keys, self._sizes, self._newest = keys, sizes, newest

    @classmethod
    def of_frame(cls, groups: pl.DataFrame, n: int) -> _Groups:
        """From one row per group: the keys, the size ``_n`` and the newest ``_ts_us``."""
        return cls(groups, n)

    @classmethod
    def of_rows(cls, frame: pl.DataFrame, rows: list[tuple], n: int) -> _Groups:
        """From one row per event: the keys and ``_ts_us`` (then anything), and ``frame.rows()``."""
        index: dict[tuple, int] = {}
        at: list[int] = []
        sizes: list[int] = []
        newest: list[int | None] = []
        for i, row in enumerate(rows):
            key, ts = row[:n], row[n]
            g = index.get(key)
            if g is None:
                index[key] = len(at)
                at.append(i)
                sizes.append(1)
                newest.append(ts)
            else:
                sizes[g] += 1
                if ts is not None and (newest[g] is None or ts > newest[g]):
                    newest[g] = ts
        return cls(frame, n, at, list(index), sizes, newest)

    def count(self) -> int:
        return self._frame.height if self._at is None else len(self._at)

    def keys(self) -> list[tuple]:
        if self._keys is None:
            self._keys = self._frame.select(self._frame.columns[:self._n]).rows()
        return self._keys

    def sizes(self) -> list[int]:
        return self._frame.get_column("_n").to_list() if self._sizes is None else self._sizes

    def newest(self) -> list[int | None]:
        return self._frame.get_column("_ts_us").to_list() if self._newest is None else self._newest

    def column(self, name: str) -> list:
        """A key column, one value per group."""
        if self._keys is None:
            return self._frame.get_column(name).to_list()
        i = self._frame.columns.index(name)
        return [k[i] for k in self._keys]

    def frame(self, groups: list[int] | None = None) -> pl.DataFrame:
        """The key columns and the size ``_n`` of the groups at these positions (None: all)."""
        if self._at is None and groups is None:
            return self._frame.drop("_ts_us")
        groups = list(range(self.count())) if groups is None else groups
        rows = groups if self._at is None else [self._at[g] for g in groups]
        sizes = self.sizes()
        return (self._frame[rows].select(self._frame.columns[:self._n])
                .with_columns(pl.Series("_n", [sizes[g] for g in groups], pl.UInt32)))


_TLS_KINDS = ["tls_in", "tls_out"]
_ALG_BITS = r"\(\d+/(\d+) bits\)"
# the columns of few distinct values derived from free text (GROUP_COLUMNS) but _alg_bits, built once
_DERIVED = [
    pl.when((pl.col("kind") == "smtpd_connect") & (pl.col("daemon") == "smtpd")).then(pl.lit("smtp_in"))
    .when((pl.col("kind") == "delivery") & (pl.col("transport") == "smtp")).then(pl.lit("smtp_out"))
    .when(pl.col("kind") == "dovecot_login").then(pl.lit("login")).alias("_what"),
    pl.coalesce(pl.col("client_ip"), pl.col("relay_ip")).str.contains(":", literal=True).alias("_peer_v6"),
    # smtpd sessions: STARTTLS succeeded at least once ("starttls=1", "starttls=2/2"; not "starttls=0/1")
    pl.col("commands").str.contains(r"(?:^|\s)starttls=0*[1-9]").alias("_starttls"),
    (pl.col("reason") == "hostname does not resolve to address").alias("_fcrdns"),
    pl.col("reply").str.starts_with("Connection timed out").alias("_timed_out"),
]
_ALG_BITS_MASKED = pl.when(pl.col("kind").is_in(_TLS_KINDS)).then(pl.col("message").str.extract(_ALG_BITS))
# a frame without smtpd session commands: the same columns without the regex
_DERIVED_NO_COMMANDS = [pl.lit(None, pl.Boolean).alias("_starttls") if e.meta.output_name() == "_starttls" else e
                        for e in _DERIVED]


def _alg_bits(events: pl.DataFrame) -> pl.Series:
    """The second number of "(256/256 bits)", extracted on the TLS lines only (a regex over every
    message would cost more than all the counters together)."""
    alg_bits = pl.Series("_alg_bits", [None], pl.String).extend_constant(None, events.height - 1)
    tls_rows = events.select(pl.col("kind").is_in(_TLS_KINDS)).to_series().arg_true()
    if tls_rows.len():
        alg_bits = alg_bits.scatter(tls_rows, events.get_column("message").gather(tls_rows).str.extract(_ALG_BITS))
    return alg_bits


def _derived(events: pl.DataFrame, kinds: frozenset[str] | None) -> list[pl.Expr]:
    """The columns but ``_alg_bits`` that counters read instead of free text (``GROUP_COLUMNS``);
    ``kinds``: the frame's (``kinds_in``), None for a big frame."""
    if kinds is not None and events.get_column("commands").null_count() == events.height:
        return _DERIVED_NO_COMMANDS  # the regex would be compiled again (~0.1 ms) for no value
    return _DERIVED


def _aggregate(fam: Family, lf: pl.LazyFrame, weighted: bool = False) -> pl.LazyFrame:
    """Group a spec's rows by the family's labels into counts, sums or bucket counts.

    ``weighted`` (counters): a row stands for ``_n`` events (a group of ``GROUP_COLUMNS``).
    """
    labels = list(fam.labels)
    aggs, keep = _aggregations("weighted" if weighted else fam.type, fam.buckets)
    if labels:
        return lf.group_by(labels).agg(aggs)
    return lf.select(aggs) if keep is None else lf.select(aggs).filter(keep)


@functools.lru_cache(maxsize=None)
def _aggregations(how: str, buckets: tuple[float, ...]) -> tuple[list[pl.Expr], pl.Expr | None]:
    """``_aggregate``'s aggregations for a family type (or "weighted"), and the filter that drops
    the one row of a family without labels when it counted nothing (None: keep it), built once."""
    if how == "weighted":
        return [pl.col("_n").sum()], pl.col("_n") > 0
    if how == "histogram":
        v = pl.col("_v")
        aggs = [(v <= b).sum().alias(f"_b{i}") for i, b in enumerate(buckets)]
        return aggs + [v.sum().alias("_sum"), pl.len().alias("_count")], pl.col("_count") > 0
    if how == "gauge":
        return [pl.col("_v").max()], None
    return [pl.len().alias("_n")], pl.col("_n") > 0


def _merge(fam: Family, res: pl.DataFrame) -> None:
    """Add one grouped result into the family's running values (rows: distinct label values)."""
    n = len(fam.labels)
    if fam.type == "histogram":
        nb = len(fam.buckets)
        for row in res.iter_rows():
            fam.observe_counts(row[:n], list(row[n:n + nb]), row[n + nb] or 0.0, row[n + nb + 1])
    elif fam.type == "gauge":
        for row in res.iter_rows():
            k = fam.key(row[:n])
            old = fam.values.get(k)
            if row[n] is not None and (old is None or row[n] > old):
                fam.values[k] = row[n]
    else:
        for row in res.iter_rows():
            fam.inc(row[:n], row[n])


def _merge_rows(fam: Family, rows: pl.DataFrame) -> None:
    """``_merge(fam, _aggregate(fam, rows))`` for the few rows of a counter spec, in Python."""
    if fam.type not in ("counter", "untyped"):
        _merge(fam, _aggregate(fam, rows.lazy()).collect())
        return
    at = [rows.columns.index(label) for label in fam.labels]
    counts: dict[tuple, int] = {}
    for row in rows.iter_rows():
        key = tuple(row[i] for i in at)
        counts[key] = counts.get(key, 0) + 1
    for key, n in counts.items():
        fam.inc(key, n)


class _Collector:
    """prometheus-client collector over a sink's families."""

    def __init__(self, sink: MetricsSink):
        self._sink = sink

    def describe(self) -> Iterator[Metric]:
        for fam in self._sink._families.values():
            yield fam.empty()

    def collect(self) -> Iterator[Metric]:
        yield from self._sink.families()


# Every family's name, for the README and the tests.
def family_names() -> list[str]:
    return MetricsSink(CollectorRegistry()).family_names()


__all__ = ["MetricsSink", "LabelCap", "one_of", "mapped", "family_names"]
