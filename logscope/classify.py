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

The rules run as one ``pl.when`` chain of ``str.contains`` over the
lower-cased fields of the rows in scope only (gathered, classified and
scattered back), so the cost follows the number of rejects, not of lines.
"""

from __future__ import annotations

import re
import tomllib
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


def delivery_rows() -> pl.Expr:
    """True for failed deliveries and remote replies to them (classified only by scope delivery/any rules)."""
    kind = pl.col("kind")
    return ((kind.is_in(["delivery"]) & pl.col("status").is_in(FAILED_STATUSES))
            | kind.is_in(DELIVERY_REPLY_KINDS)).fill_null(False)


def _scope() -> pl.Expr:
    """1 for reject-like rows, 2 for failed deliveries, null for the rest."""
    return pl.when(reject_rows()).then(pl.lit(1, pl.UInt8)).when(delivery_rows()).then(pl.lit(2, pl.UInt8))


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


class RejectClasses:
    """The ordered rules; ``classify`` adds ``reject_class`` and ``rbl_zone`` to an events frame."""

    def __init__(self, rules: Iterable[Rule]):
        self.rules = tuple(rules)
        self._exprs: tuple[pl.Expr, list[pl.Expr]] | None = None

    def _compiled(self) -> tuple[pl.Expr, list[pl.Expr]]:
        """``_arm`` and ``_outputs``, built once: polars compiles a regex when its expression is
        built, and the 45 built-in rules cost 25 ms per chunk to build again."""
        if self._exprs is None:
            self._exprs = (self._arm(), self._outputs())
        return self._exprs

    def _arm(self) -> pl.Expr:
        """Index of the first rule that matches each row (null: none), over the helper columns."""
        scope = pl.col("__rc_scope")
        chain = None
        for i, rule in enumerate(self.rules):
            cond = {"reject": scope == 1, "delivery": scope == 2}.get(rule.scope, scope.is_not_null())
            for col in CONSTRAINTS:
                values = getattr(rule, col)
                if values:
                    values = [v.lower() for v in values] if col in ("stage", "action") else list(values)
                    cond = cond & pl.col(f"__rc_{col}").is_in(values)
            if rule.regex is not None:
                cond = cond & pl.col(f"__rc_field_{rule.field}").str.contains(_engine_regex(rule.regex))
            then = pl.lit(i, pl.UInt16)
            chain = pl.when(cond).then(then) if chain is None else chain.when(cond).then(then)
        return pl.lit(None, pl.UInt16) if chain is None else chain.otherwise(pl.lit(None, pl.UInt16))

    def _outputs(self) -> list[pl.Expr]:
        """``reject_class`` and ``rbl_zone`` from the winning rule index ``__rc_arm``."""
        arm = pl.col("__rc_arm")
        names = [r.name for r in self.rules]
        cls = arm.replace_strict(list(range(len(names))), names, default=None, return_dtype=RejectClassEnum)
        cls = pl.when(arm.is_null() & (pl.col("__rc_scope") == 1)).then(pl.lit("other", RejectClassEnum)).otherwise(cls)
        zone = None
        for i, rule in enumerate(self.rules):
            if rule.zone:
                got = pl.col(f"__rc_field_{rule.field}").str.extract_groups(_engine_regex(rule.regex)).struct.field("zone")
                zone = pl.when(arm == i).then(got) if zone is None else zone.when(arm == i).then(got)
        if zone is None:
            zone = pl.lit(None, pl.String)
        else:
            zone = zone.otherwise(pl.lit(None, pl.String)).str.strip_chars_end(".")
            zone = pl.when(zone.str.contains(_ZONE_SHAPE) & (zone.str.len_bytes() <= 253)).then(zone)
        return [cls.alias("reject_class"), zone.alias("rbl_zone")]

    def classify(self, df: pl.DataFrame) -> pl.DataFrame:
        """``df`` with ``reject_class`` and ``rbl_zone`` added (replaced if present).

        Only the rows in scope (a few percent of a mail log) go through the
        rules; their results are scattered back into full-length columns.
        """
        fields = list(dict.fromkeys(r.field for r in self.rules if r.regex is not None))
        columns = list(dict.fromkeys([*_INPUT_COLUMNS, *(f for f in fields if f != "text")]))
        arm, outputs = self._compiled()
        scope = df.select(_scope()).to_series()
        in_scope = scope.is_not_null()
        res = (df.select(columns).with_columns(__rc_scope=scope).filter(in_scope)
               .with_columns(**{f"__rc_{n}": e for n, e in _helpers(fields).items()})
               .with_columns(__rc_arm=arm)
               .select(outputs))
        idx = in_scope.arg_true()
        full = lambda col, dtype: pl.repeat(None, df.height, dtype=dtype, eager=True).scatter(idx, res[col])  # noqa: E731
        return df.with_columns(reject_class=full("reject_class", RejectClassEnum), rbl_zone=full("rbl_zone", pl.String))


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
