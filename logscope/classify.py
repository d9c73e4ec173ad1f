"""Reject reason classes: reply text -> one class of a closed set, vectorized.

The mapping is data, like the parser patterns: ``parsers/reject_classes.toml``
(its format is documented at its top) plus a ``reject_classes.toml`` in each
user parser directory, whose rules go in front of the built-in ones.

``load_classes(dirs).classify(events)`` adds two columns to an events frame:

* ``reject_class`` (``pl.Enum(CLASSES)``): for every reject-like row (see
  ``reject_rows``) the class of the first matching rule, ``other`` if none
  matches; for failed deliveries (``delivery_rows``) the class of the first
  matching rule with scope ``delivery`` or ``any``, else null; null elsewhere;
* ``rbl_zone``: the blocklist zone (``zen.spamhaus.org``) where an rbl rule
  captured one, lower-cased and only if it looks like a host name.

The rules run as one expression (the smallest index of a matching rule) of
``str.contains`` over the lower-cased fields of the rows in scope only
(gathered, classified and scattered back), so the cost follows the number of
rejects, not of lines. Adjacent rules of one ``[[class]]`` entry run as one
regex. ``tail`` classifies a few lines at a time: a small frame without a
kind in scope skips the rules, one with a few rows in scope finds the first
matching rule in Python from one query of every regex, on a thread of its
own where the compiled regexes stay (``_OwnThread``).
"""

from __future__ import annotations

import re
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import polars as pl

from . import schema
from .errors import UsageError
from .parsers import ParserFileError, builtin_dir

# The closed set (Prometheus label values): keep it short, append only.
CLASSES = (
    "rbl", "relay_denied", "unknown_recipient", "unknown_client", "invalid_helo",
    "sender_domain_not_found", "spf", "dmarc", "spam", "greylisting", "rate_limit",
    "postscreen", "size_limit", "policy_service", "tls_required", "sender_rejected",
    "client_rejected", "header_body_check", "virus", "other",
)
RejectClassEnum = pl.Enum(CLASSES)

FILENAME = "reject_classes.toml"
SCOPES = ("reject", "delivery", "any")
# What a rule's regex can run over; "text" is reply and reason joined by a newline.
FIELDS = ("text", "reply", "reason", "symbols", "dsn", "message", "helo", "action", "stage")
CONSTRAINTS = ("kind", "source", "daemon", "stage", "action")
KEYS = ("name", "match", "field", "scope") + CONSTRAINTS
# Regexes see at most this many characters of a field: bounds the work a
# hostile 1 MB reply can cause (SMTP replies are far shorter).
MAX_TEXT = 4096

# Which events are rejections by this host: kind -> actions (None: any).
REJECT_ACTIONS: dict[str, tuple[str, ...] | None] = {
    "reject": ("reject", "reject_warning", "proxy-reject", "defer", "defer_if_permit", "defer_if_reject"),
    "milter_action": ("milter-reject", "milter-tempfail"),
    "cleanup_action": ("reject", "milter-header-reject", "milter-body-reject"),
    "postscreen_pregreet": None,
    "postscreen_violation": None,
    "postscreen_dnsbl": None,  # the "DNSBL rank" line of postscreen only, not dnsblog's lookups
    "postscreen_listed": ("DENYLISTED", "BLACKLISTED"),
    "exim_reject": ("reject", "defer", "drop"),
    "rspamd_verdict": ("reject", "soft reject", "greylist"),
}
# postscreen test results among the reject-like kinds: with the test's action
# "enforce" a "NOQUEUE: reject" line follows (rbl or "Protocol error"), with
# "drop" none does. A view that counts rejections, not findings, leaves these out.
POSTSCREEN_FINDINGS = ("postscreen_pregreet", "postscreen_violation", "postscreen_dnsbl")
# Failed deliveries: remote servers' replies to our mail.
FAILED_STATUSES = ("deferred", "bounced", "expired", "force-expired", "undeliverable")
DELIVERY_REPLY_KINDS = ("delivery_reply", "exim_failure", "exim_deferral")
# The kinds of the rows reject_rows and delivery_rows can select: a batch without them has none in scope.
SCOPE_KINDS = frozenset(REJECT_ACTIONS) | {"delivery"} | frozenset(DELIVERY_REPLY_KINDS)
# kinds_in reads the kinds of frames up to this height (a list of a few strings costs microseconds,
# polars' unique() ~0.15 ms at any height and ~1 ms at 100,000 rows, where it would rarely save work).
KINDS_MAX_ROWS = 1024
# Up to this many rows in scope, the first matching rule of each is found in Python (_Compiled.first_match).
FIRST_MATCH_MAX_ROWS = 64

# Columns the rules read besides their fields.
_INPUT_COLUMNS = ("kind", "source", "daemon", "stage", "action", "status", "reply", "reason")
_ZONE_SHAPE = r"^[a-z0-9_-]+(?:\.[a-z0-9_-]+)+$"
_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")
_CLASS_TABLE = re.compile(r"^\s*\[\[\s*class\s*\]\]")


class RejectClassError(ParserFileError):
    """A reject class file that cannot be used; the message names file, line and column."""


@dataclass(frozen=True)
class Rule:
    """One regex of one ``[[class]]`` entry, with the entry's constraints."""

    name: str
    regex: str | None = None
    field: str = "text"
    scope: str = "reject"
    kind: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    daemon: tuple[str, ...] = ()
    stage: tuple[str, ...] = ()
    action: tuple[str, ...] = ()
    zone: bool = False  # the regex captures (?P<zone>...)
    origin: str = ""  # file:line


def reject_rows() -> pl.Expr:
    """True for the events that are rejections by this host (``other`` when unclassified)."""
    # is_in, not ==: works on the kind Enum of any parser set and on plain strings, without a cast
    kind, action = pl.col("kind"), pl.col("action")
    cond = kind.is_in([k for k, actions in REJECT_ACTIONS.items() if actions is None])
    for k, actions in REJECT_ACTIONS.items():
        if actions is not None:
            cond = cond | (kind.is_in([k]) & action.is_in(actions))
    dnsblog = kind.is_in(["postscreen_dnsbl"]) & (pl.col("daemon") != "postscreen")
    return (cond & ~dnsblog).fill_null(False)


def kinds_in(events: pl.DataFrame) -> frozenset[str] | None:
    """The event kinds of a small frame (None for a frame of more than ``KINDS_MAX_ROWS`` rows).

    Lets the sinks skip, for the few lines ``tail`` reads at a time, the work
    whose kinds are absent: a polars query costs ~0.3 ms however few its rows.
    """
    if events.height > KINDS_MAX_ROWS:
        return None
    return frozenset(events.get_column("kind").to_list())


def delivery_rows() -> pl.Expr:
    """True for failed deliveries and remote replies to them (classified only by scope delivery/any rules)."""
    kind = pl.col("kind")
    return ((kind.is_in(["delivery"]) & pl.col("status").is_in(FAILED_STATUSES))
            | kind.is_in(DELIVERY_REPLY_KINDS)).fill_null(False)


def _scope() -> pl.Expr:
    """1 for reject-like rows, 2 for failed deliveries, null for the rest."""
    return pl.when(reject_rows()).then(pl.lit(1, pl.UInt8)).when(delivery_rows()).then(pl.lit(2, pl.UInt8))


def _scope_of(kind, action, daemon, status) -> int | None:
    """``_scope()`` of one row, in Python: for a few rows it costs less than a polars query.
    tests/test_small_batches.py checks that both agree."""
    if kind in REJECT_ACTIONS:
        actions = REJECT_ACTIONS[kind]
        if (actions is None or action in actions) and (kind != "postscreen_dnsbl" or daemon == "postscreen"):
            return 1
    if (kind == "delivery" and status in FAILED_STATUSES) or kind in DELIVERY_REPLY_KINDS:
        return 2
    return None


def _helpers(fields: Iterable[str]) -> dict[str, pl.Expr]:
    """Per-row inputs of the rules, each computed once: normalized constraints, lower-cased fields."""
    raw = {"text": pl.concat_str([pl.col("reply"), pl.col("reason")], separator="\n", ignore_nulls=True)}
    out = {
        "kind": pl.col("kind").cast(pl.String),
        "source": pl.col("source").cast(pl.String),
        "daemon": pl.col("daemon"),
        "stage": pl.col("stage").str.strip_chars("'\"").str.to_lowercase(),  # exim: dropped by 'connect' ACL
        "action": pl.col("action").str.to_lowercase(),
    }
    for f in fields:
        out[f"field_{f}"] = (raw[f] if f in raw else pl.col(f).cast(pl.String)).str.slice(0, MAX_TEXT).str.to_lowercase()
    return out


def _engine_regex(regex: str) -> str:
    """The regex as run over lower-cased fields.

    A pattern without upper-case letters matches lower-cased text as it would
    match the original case-insensitively, and runs ~2x faster without (?i);
    one with upper case (a literal, or an escape like \\S) gets (?i).
    """
    return "(?i)" + regex if re.search("[A-Z]", regex) else regex


class _Compiled:
    """A rule set's polars expressions, built once (see ``RejectClasses._compiled``)."""

    def __init__(self, rules: tuple[Rule, ...]):
        fields = list(dict.fromkeys(r.field for r in rules if r.regex is not None))
        self.columns = list(dict.fromkeys([*_INPUT_COLUMNS, *(f for f in fields if f != "text")]))
        self.scope = _scope().alias("__rc_scope")
        self.helpers = [e.alias(f"__rc_{n}") for n, e in _helpers(fields).items()]
        merged = _merged(rules)
        self.arm = _arm(merged).alias("__rc_arm")
        self.outputs = _outputs(rules)
        # first_match: the constraint helpers, then one Boolean column per regex (its index in checks)
        self.matrix = [pl.col(f"__rc_{c}") for c in CONSTRAINTS]
        self.checks: list[tuple[int, int | None, list[tuple[int, frozenset[str]]], int | None]] = []
        for i, rule, regex in merged:
            needs = [(k, frozenset(_constraint_values(rule, c)))
                     for k, c in enumerate(CONSTRAINTS) if getattr(rule, c)]
            hit = None
            if regex is not None:
                hit = len(self.matrix)
                self.matrix.append(pl.col(f"__rc_field_{rule.field}").str.contains(regex).alias(f"__rc_m{i}"))
            self.checks.append((i, {"reject": 1, "delivery": 2}.get(rule.scope), needs, hit))
        self.names = [r.name for r in rules]
        self.zones = {i: _clean_zone(_zone(r)).alias("z") for i, r in enumerate(rules) if r.zone}

    def rows(self, df: pl.DataFrame, seq: bool) -> pl.DataFrame:
        """The rows of ``df`` in scope: their row number ``__rc_i``, ``reject_class``, ``rbl_zone``.

        ``seq``: evaluate on the calling thread (``select_seq``), else on polars' threads.
        """
        select = pl.DataFrame.select_seq if seq else pl.DataFrame.select
        with_columns = pl.DataFrame.with_columns_seq if seq else pl.DataFrame.with_columns
        sub = select(df, pl.int_range(pl.len(), dtype=pl.UInt32).alias("__rc_i"), *self.columns, self.scope)
        sub = sub.filter(pl.col("__rc_scope").is_not_null())
        if sub.height == 0:  # polars would compile every regex for no row
            return sub
        return select(with_columns(with_columns(sub, self.helpers), self.arm), "__rc_i", *self.outputs)

    def first_match(self, rows: pl.DataFrame, scopes: list[int]) -> tuple[list[str | None], list[str | None]]:
        """``reject_class`` and ``rbl_zone`` of a few rows in scope (``scopes``: their ``_scope``).

        What ``rows`` computes, with the first matching rule found in Python from one query of
        every constraint and regex: its ~150 polars expressions cost ~3 ms even on one row.
        """
        helpers = rows.select_seq(self.helpers)
        matrix = helpers.select_seq(self.matrix).rows()
        classes: list[str | None] = []
        zone_rows: dict[int, list[int]] = {}
        for r, (values, scope) in enumerate(zip(matrix, scopes)):
            arm = next((i for i, want, needs, hit in self.checks
                        if (want is None or want == scope) and all(values[k] in v for k, v in needs)
                        and (hit is None or values[hit])), None)
            if arm is None:
                classes.append("other" if scope == 1 else None)
                continue
            classes.append(self.names[arm])
            if arm in self.zones:
                zone_rows.setdefault(arm, []).append(r)
        zones: list[str | None] = [None] * len(classes)
        for arm, at in zone_rows.items():
            for r, z in zip(at, helpers[at].select_seq(self.zones[arm]).get_column("z").to_list()):
                zones[r] = z
        return classes, zones


def _constraint_values(rule: Rule, col: str) -> list[str]:
    """The values a rule allows in a constraint column, as its helper column holds them."""
    values = getattr(rule, col)
    return [v.lower() for v in values] if col in ("stage", "action") else list(values)


def _zone(rule: Rule) -> pl.Expr:
    """The zone a zone rule's regex captures in its field (null where it does not match)."""
    return pl.col(f"__rc_field_{rule.field}").str.extract_groups(_engine_regex(rule.regex)).struct.field("zone")


def _clean_zone(zone: pl.Expr) -> pl.Expr:
    """A captured zone without its trailing dots, if it looks like a host name."""
    zone = zone.str.strip_chars_end(".")
    return pl.when(zone.str.contains(_ZONE_SHAPE) & (zone.str.len_bytes() <= 253)).then(zone)


def _same_outcome(a: Rule, b: Rule) -> bool:
    """Two regex rules that match the same rows the same way (one ``[[class]]`` entry's list)."""
    return (a.regex is not None and b.regex is not None and not a.zone and not b.zone
            and (a.name, a.field, a.scope) == (b.name, b.field, b.scope)
            and all(getattr(a, c) == getattr(b, c) for c in CONSTRAINTS))


def _merged(rules: tuple[Rule, ...]) -> list[tuple[int, Rule, str | None]]:
    """The rules with the regex they run (``_engine_regex``), consecutive ones of the same outcome
    as one whose regex is their alternation; each with the index of its first rule.

    The first rule that matches decides a row's class, so adjacent rules of the same class and
    constraints may be tried as one. Fewer regexes matter more than their size: polars keeps 32
    compiled regexes per thread, and compiling one costs ~0.1-0.3 ms.
    """
    groups: list[tuple[int, Rule, list[str]]] = []  # first index, first rule, engine regexes
    for i, rule in enumerate(rules):
        regex = None if rule.regex is None else _engine_regex(rule.regex)
        if groups and _same_outcome(groups[-1][1], rule):
            parts = groups[-1][2] + [regex]
            try:  # e.g. the same group name in two of them: keep this one apart
                pl.Series([""], dtype=pl.String).str.contains(_alternation(parts))
            except pl.exceptions.PolarsError:
                pass
            else:
                groups[-1][2].append(regex)
                continue
        groups.append((i, rule, [] if regex is None else [regex]))
    return [(i, rule, _alternation(parts) if parts else None) for i, rule, parts in groups]


def _alternation(regexes: list[str]) -> str:
    """One regex matching where any of ``regexes`` matches (each keeps its own flags)."""
    return regexes[0] if len(regexes) == 1 else "|".join(f"(?:{r})" for r in regexes)


def _arm(merged: list[tuple[int, Rule, str | None]]) -> pl.Expr:
    """Index of the first rule that matches each row (null: none), over the helper columns.

    The smallest index whose condition holds, not a ``pl.when`` chain: polars needs ~15 ms to
    prepare a chain of 45 rules for every frame, whatever its height; both evaluate every rule.
    """
    scope = pl.col("__rc_scope")
    arms = []
    for i, rule, regex in merged:
        cond = {"reject": scope == 1, "delivery": scope == 2}.get(rule.scope, scope.is_not_null())
        for col in CONSTRAINTS:
            if getattr(rule, col):
                cond = cond & pl.col(f"__rc_{col}").is_in(_constraint_values(rule, col))
        if regex is not None:
            cond = cond & pl.col(f"__rc_field_{rule.field}").str.contains(regex)
        arms.append(pl.when(cond).then(pl.lit(i, pl.UInt16)))
    return pl.min_horizontal(arms) if arms else pl.lit(None, pl.UInt16)


def _outputs(rules: tuple[Rule, ...]) -> list[pl.Expr]:
    """``reject_class`` and ``rbl_zone`` from the winning rule index ``__rc_arm``."""
    arm = pl.col("__rc_arm")
    names = [r.name for r in rules]
    cls = arm.replace_strict(list(range(len(names))), names, default=None, return_dtype=RejectClassEnum)
    cls = pl.when(arm.is_null() & (pl.col("__rc_scope") == 1)).then(pl.lit("other", RejectClassEnum)).otherwise(cls)
    # one winning rule per row: at most one of these is set (flat for the reason _arm gives)
    zones = [pl.when(arm == i).then(_zone(r)) for i, r in enumerate(rules) if r.zone]
    zone = _clean_zone(pl.coalesce(zones)) if zones else pl.lit(None, pl.String)
    return [cls.alias("reject_class"), zone.alias("rbl_zone")]


def _nulls(n: int, dtype: pl.DataType) -> pl.Series:
    """A column of ``n`` nulls (a Python list is the cheapest way for a few rows, not for many)."""
    return pl.Series([None] * n, dtype=dtype) if n <= 1024 else pl.repeat(None, n, dtype=dtype, eager=True)


class _OwnThread:
    """One long-lived thread that runs small queries, so that they find their regexes compiled.

    polars keeps compiled regexes per thread, 32 per thread, and compiles one
    again in 0.1-0.3 ms once it is evicted. An eager ``select_seq`` compiles
    and runs them on the thread that calls it. The parse of each batch runs
    hundreds of regexes on polars' threads and on the caller's, which evicts
    the built-in rules' 30 everywhere; on a thread of their own they stay.
    For a 25-line batch with a reject: ~1 ms instead of ~4 ms.
    """

    def __init__(self, name: str):
        self._name = name
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def run(self, fn, *args):
        """``fn(*args)`` on the thread, waiting for its result (here if the thread cannot run)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix=self._name)
            pool = self._pool
        try:
            future = pool.submit(fn, *args)
        except RuntimeError:  # interpreter shutdown
            return fn(*args)
        return future.result()


_RULES_THREAD = _OwnThread("logscope-classify")


class RejectClasses:
    """The ordered rules; ``classify`` adds ``reject_class`` and ``rbl_zone`` to an events frame."""

    def __init__(self, rules: Iterable[Rule]):
        self.rules = tuple(rules)
        self._exprs: _Compiled | None = None

    def _compiled(self) -> _Compiled:
        """The expressions, built once: polars compiles a regex when its expression is built, and
        the 45 built-in rules cost 25 ms per chunk to build again."""
        if self._exprs is None:
            self._exprs = _Compiled(self.rules)
        return self._exprs

    def classify(self, df: pl.DataFrame) -> pl.DataFrame:
        """``df`` with ``reject_class`` and ``rbl_zone`` added (replaced if present).

        Only the rows in scope (a few percent of a mail log) go through the
        rules; their results are scattered back into full-length columns.
        ``tail`` reads a few lines at a time: a small frame without a kind in
        scope skips the rules, and one with runs them on their own thread
        (``_OwnThread``).
        """
        kinds = kinds_in(df)
        if kinds is None:  # a big frame: on polars' threads (compiling the regexes again is nothing beside the work)
            return _scattered(df, self._compiled().rows(df, seq=False))
        if not kinds & SCOPE_KINDS:
            return _unclassified(df)
        return _RULES_THREAD.run(self._classify_small, df)

    def _classify_small(self, df: pl.DataFrame) -> pl.DataFrame:
        """``classify`` of a frame of at most ``KINDS_MAX_ROWS`` rows, on the rules' own thread."""
        scopes = [_scope_of(*row) for row in zip(*(df.get_column(c).to_list()
                                                   for c in ("kind", "action", "daemon", "status")))]
        idx = [i for i, s in enumerate(scopes) if s is not None]
        if not idx:
            return _unclassified(df)
        if len(idx) > FIRST_MATCH_MAX_ROWS:
            return _scattered(df, self._compiled().rows(df, seq=True))
        found, zones = self._compiled().first_match(df[idx], [scopes[i] for i in idx])
        classes: list[str | None] = [None] * df.height
        rbl: list[str | None] = [None] * df.height
        for i, k, z in zip(idx, found, zones):
            classes[i], rbl[i] = k, z
        return df.with_columns(reject_class=pl.Series(classes, dtype=RejectClassEnum),
                               rbl_zone=pl.Series(rbl, dtype=pl.String))


def _scattered(df: pl.DataFrame, res: pl.DataFrame) -> pl.DataFrame:
    """``df`` with the ``reject_class`` and ``rbl_zone`` of ``_Compiled.rows`` at their rows."""
    if res.height == 0:
        return _unclassified(df)
    idx = res.get_column("__rc_i")
    return df.with_columns(
        reject_class=_nulls(df.height, RejectClassEnum).scatter(idx, res.get_column("reject_class")),
        rbl_zone=_nulls(df.height, pl.String).scatter(idx, res.get_column("rbl_zone")))


def _unclassified(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with null ``reject_class`` and ``rbl_zone``: no row in scope."""
    return df.with_columns(reject_class=pl.lit(None, RejectClassEnum), rbl_zone=pl.lit(None, pl.String))


# ----------------------------------------------------------------- loading --

def builtin_file() -> Path:
    """The bundled ``reject_classes.toml`` (beside the bundled parser files)."""
    return builtin_dir() / FILENAME


def _locate(text: str, needle: str, start_line: int) -> tuple[int, int] | None:
    """1-based (line, column) of ``needle`` at or after a 0-based line, None if absent."""
    lines = text.splitlines()
    for i in range(start_line, len(lines)):
        col = lines[i].find(needle)
        if col >= 0:
            return i + 1, col + 1
    return None


def _strings(value, what: str) -> tuple[str, ...]:
    """A string or a non-empty list of non-empty strings, as a tuple; ValueError otherwise."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise ValueError(f"{what} must be a non-empty string or a list of them")
    return tuple(values)


def _regex_problem(exc: Exception, regex: str) -> tuple[str, int]:
    """What the engine says is wrong with a regex, and the 0-based offset it points at."""
    lines = str(exc).splitlines()
    what = next((ln.strip()[7:] for ln in lines if ln.strip().startswith("error: ")), lines[0].strip() if lines else "")
    for above, ln in zip(lines, lines[1:]):
        if ln.strip().startswith("^"):
            offset = ln.index("^") - (len(above) - len(above.lstrip())) - (len(_engine_regex(regex)) - len(regex))
            return what, max(0, offset)
    return what, 0


def _check_regex(regex: str) -> bool:
    """Compile with the engine that runs it; True if it captures a group named zone."""
    probe = pl.Series([""], dtype=pl.String)
    probe.str.contains(_engine_regex(regex))
    return "zone" in probe.str.extract_groups(_engine_regex(regex)).struct.fields


def _entry_rules(entry, path: Path, text: str, line0: int, number: int) -> list[Rule]:
    """The rules of one ``[[class]]`` table (one per regex), checked."""

    def fail(msg: str, needle: str | None = None, offset: int = 0):
        """Raise at ``needle`` (plus ``offset`` columns) in this entry, else at its [[class]] line."""
        pos = _locate(text, needle, line0) if needle else None
        line, col = (pos[0], pos[1] + offset) if pos else (line0 + 1, 1)
        raise RejectClassError(f"{path}:{line}:{col}: class entry {number}: {msg}")

    if not isinstance(entry, dict):
        fail("must be a table")
    for key in entry:
        if key not in KEYS:
            fail(f"unknown key {key!r} (known: {', '.join(KEYS)})", key)
    name = entry.get("name")
    if not isinstance(name, str):
        fail("needs a name (a string)")
    if name not in CLASSES:
        fail(f"unknown class {name!r} (the closed set: {', '.join(CLASSES)})", f'"{name}"')
    scope, field = entry.get("scope", "reject"), entry.get("field", "text")
    if scope not in SCOPES:
        fail(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}", "scope")
    if field not in FIELDS:
        fail(f"field must be one of {', '.join(FIELDS)}, not {field!r}", "field")
    constraints: dict[str, tuple[str, ...]] = {}
    for key in CONSTRAINTS:
        if key in entry:
            try:
                constraints[key] = _strings(entry[key], key)
            except ValueError as exc:
                fail(str(exc), key)
    for key, known in (("kind", schema.KINDS), ("source", schema.SOURCES)):
        for v in constraints.get(key, ()):
            if v not in known:
                fail(f"unknown {key} {v!r}", f'"{v}"')
    regexes: tuple[str | None, ...] = (None,)
    if "match" in entry:
        try:
            regexes = _strings(entry["match"], "match")
        except ValueError as exc:
            fail(str(exc), "match")
    elif not constraints:
        fail("has neither match nor a constraint, so it would match every row")
    rules = []
    for regex in regexes:
        zone = False
        if regex is not None:
            try:
                zone = _check_regex(regex)
            except pl.exceptions.PolarsError as exc:
                what, offset = _regex_problem(exc, regex)
                fail(f"invalid regular expression: {what}", regex[:40], offset)
            if zone and name != "rbl":
                fail("only rbl rules can capture (?P<zone>...)", regex[:40])
        rules.append(Rule(name=name, regex=regex, field=field, scope=scope, zone=zone,
                          origin=f"{path.name}:{line0 + 1}", **constraints))
    return rules


def read_rules(path: Path) -> list[Rule]:
    """The rules of one reject class file, in file order."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RejectClassError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        pos = _TOML_POS.search(msg)
        where = f"{pos.group(1)}:{pos.group(2)}" if pos else f"{max(1, len(text.splitlines()))}:1"  # at end of document
        msg = _TOML_POS.sub("", msg).replace("(at end of document)", "at end of file").strip()
        raise RejectClassError(f"{path}:{where}: invalid TOML: {msg}") from None
    for key in data:
        if key != "class":
            line, col = _locate(text, key, 0) or (1, 1)
            raise RejectClassError(f"{path}:{line}:{col}: unknown key {key!r} (only [[class]] tables)")
    entries = data.get("class", [])
    if not isinstance(entries, list):
        raise RejectClassError(f"{path}:1:1: 'class' must be an array of tables ([[class]])")
    starts = [i for i, ln in enumerate(text.splitlines()) if _CLASS_TABLE.match(ln)]
    rules: list[Rule] = []
    for n, entry in enumerate(entries):
        rules += _entry_rules(entry, Path(path), text, starts[n] if n < len(starts) else 0, n + 1)
    return rules


def load_classes(dirs: Iterable[Path | str] = ()) -> RejectClasses:
    """The bundled rules, with each directory's ``reject_classes.toml`` in front (later directories first)."""
    rules = read_rules(builtin_file())
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise RejectClassError(f"{d}: parser directory does not exist")
        if (d / FILENAME).is_file():
            rules[:0] = read_rules(d / FILENAME)
    return RejectClasses(rules)


def classes_from_args(args, conf) -> RejectClasses:
    """The rules for a command: config ``parsers_dirs`` then ``--parsers-dir``; a bad file exits 2."""
    try:
        return load_classes([Path(d) for d in conf.parsers_dirs + args.parsers_dir])
    except RejectClassError as exc:
        raise UsageError(str(exc)) from None
