"""Alert rules files (TOML): loading, checking, compiling; every error names file, line and column.

A rules file has optional ``[defaults]``, any number of ``[[rule]]`` tables
and optional ``[[notifier]]`` tables (see ``default_rules.toml`` for the
documented format and :mod:`logscope.alerts.notify` for the notifiers)::

    [[rule]]
    name = "auth_password_guessing"
    where = 'kind in ("sasl_auth_failed", "exim_auth_failed") and client_ip is not null'
    group_by = ["client_ip"]
    window = "10m"
    condition = "count() > 10"
    severity = "warning"
    summary = "{{ value|fmt }} failed logins from {{ client_ip }} in {{ window }}"

A mistake is reported as ``file:line:column: rule 'name': what is wrong``
(:class:`RulesError`, a :class:`~logscope.errors.UsageError`: exit status 2).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import polars as pl
from jinja2.sandbox import SandboxedEnvironment

from ..errors import UsageError
from . import expr as E

SOURCES = ("events", "inputs", "dmarc")
SEVERITIES = ("info", "warning", "critical")
RULE_KEYS = ("name", "from", "where", "group_by", "window", "condition", "for", "severity", "labels",
             "summary", "description", "repeat_interval", "max_alerts", "enabled")
DEFAULT_KEYS = ("repeat_interval", "eval_interval", "step", "max_alerts")
# Distinct active (pending or firing) alerts one rule may have: label values come from
# logs (client IPs, zones), so an attack from many addresses must not grow state without bound.
MAX_ALERTS = 100
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_LABELS = ("alertname", "severity")
_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")
_TABLE = re.compile(r"^\s*\[\[\s*(rule|notifier)\s*\]\]|^\s*\[\s*([A-Za-z_.]+)\s*\]")


class RulesError(UsageError):
    """A rules file that cannot be used; the message is ``file:line:column: what``."""


@dataclass
class Defaults:
    repeat_interval: float = 4 * 3600.0  # a firing group is notified again after this long
    eval_interval: float = 10.0  # live: rules are evaluated at most this often
    step: float = 60.0  # replay (alerts test): evaluation every step of event time
    max_alerts: int = MAX_ALERTS


@dataclass
class Rule:
    """One compiled rule."""

    name: str
    source: str  # events | inputs | dmarc
    where_text: str
    where: pl.Expr
    group_by: tuple[str, ...]
    group_exprs: dict[str, pl.Expr]
    window: float
    condition_text: str
    condition: E.Condition
    for_: float
    severity: str
    labels: dict[str, str]
    summary: jinja2.Template | None
    description: jinja2.Template | None
    repeat_interval: float
    max_alerts: int
    needs_classes: bool
    origin: str = ""  # file:line
    kinds: frozenset[str] | None = None  # the event kinds of the rows ``where`` can select (None: any)

    @property
    def span(self) -> float:
        """How much history the rule needs: its window or its longest baseline."""
        return max([self.window] + [b.seconds for b in self.condition.baselines])


@dataclass
class RuleSet:
    rules: list[Rule]
    notifiers: list[dict[str, Any]] = field(default_factory=list)  # raw [[notifier]] tables, with "_origin"
    defaults: Defaults = field(default_factory=Defaults)
    path: str = ""

    @property
    def needs_classes(self) -> bool:
        return any(r.needs_classes for r in self.rules)


def default_rules_path() -> Path:
    """The bundled, documented default rules file."""
    return Path(str(resources.files("logscope.alerts").joinpath("default_rules.toml")))


# ------------------------------------------------------------------ templates

def _fmt(value: Any) -> str:
    """A number as an operator reads it: 11, 0.35, 1.2e+03."""
    if value is None:
        return "-"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.3g}"


def _pct(value: Any) -> str:
    try:
        return f"{float(value) * 100:.1f}%"
    except (TypeError, ValueError):
        return "-"


def template_env() -> SandboxedEnvironment:
    """Jinja2 for summaries: sandboxed (rules files may come from elsewhere), plain text, no autoescape."""
    env = SandboxedEnvironment(autoescape=False, undefined=jinja2.ChainableUndefined, keep_trailing_newline=False)
    env.filters["fmt"] = _fmt
    env.filters["pct"] = _pct
    env.filters["duration"] = lambda s: E.format_duration(float(s))
    return env


_ENV = template_env()


# ------------------------------------------------------------------ positions

class _Positions:
    """Where tables and keys are in the file text, for error messages (tomllib keeps none)."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.tables: dict[str, list[int]] = {"rule": [], "notifier": []}
        self.starts: list[int] = []
        for i, line in enumerate(self.lines):
            m = _TABLE.match(line)
            if m:
                self.starts.append(i)
                if m.group(1):
                    self.tables[m.group(1)].append(i)

    def table(self, kind: str, index: int) -> int:
        """0-based line of the index-th ``[[kind]]`` header (0 when not found)."""
        lines = self.tables.get(kind, [])
        return lines[index] if index < len(lines) else 0

    def key(self, kind: str, index: int, key: str) -> tuple[int, int, int]:
        """(line, column) of the first character of the key's value, both 1-based, and the quote length."""
        start = self.table(kind, index)
        later = [s for s in self.starts if s > start]
        end = later[0] if later else len(self.lines)
        pat = re.compile(r"^\s*" + re.escape(key) + r"\s*=\s*")
        for i in range(start, end):
            m = pat.match(self.lines[i])
            if m:
                col = m.end()
                rest = self.lines[i][col:]
                for q in ('"""', "'''", '"', "'"):
                    if rest.startswith(q):
                        return i + 1, col + 1, len(q)
                return i + 1, col + 1, 0
        return start + 1, 1, 0

    def at_offset(self, kind: str, index: int, key: str, value: str, offset: int) -> tuple[int, int]:
        """(line, column) of ``offset`` inside the string value of ``key``."""
        line, col, quote = self.key(kind, index, key)
        if quote == 0:
            return line, col
        first = self.lines[line - 1][col - 1 + quote:] if line - 1 < len(self.lines) else ""
        if quote == 3 and first.strip() == "":  # a newline right after ''' is not part of the value
            line, col, quote = line + 1, 1, 0
        before = value[:offset]
        nl = before.count("\n")
        if nl:
            return line + nl, offset - before.rfind("\n")
        return line, col + quote + offset


# ------------------------------------------------------------------ loading

def load(path: str | Path) -> RuleSet:
    """Read, check and compile a rules file. :class:`RulesError` on any mistake."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RulesError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RulesError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return loads(text, str(path))


def loads(text: str, origin: str = "<rules>") -> RuleSet:
    """Like :func:`load`, from the file's text; ``origin`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_POS.search(str(exc))
        msg = _TOML_POS.sub("", str(exc)).strip()
        where = f"{m.group(1)}:{m.group(2)}" if m else "1:1"
        raise RulesError(f"{origin}:{where}: {msg}") from None
    pos = _Positions(text)

    def fail(msg: str, line: int = 1, col: int = 1):
        raise RulesError(f"{origin}:{line}:{col}: {msg}")

    for key in data:
        if key not in ("defaults", "rule", "notifier"):
            fail(f"unknown table {key!r} (expected [defaults], [[rule]], [[notifier]])",
                 *_top_key_pos(pos, key))
    defaults = _defaults(data.get("defaults", {}), pos, fail)
    entries = data.get("rule", [])
    if not isinstance(entries, list):
        fail("'rule' must be an array of tables: write [[rule]]")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        rule = _rule(entry, i, pos, defaults, origin)
        if rule is None:
            continue
        if rule.name in seen:
            line = pos.key("rule", i, "name")[:2]
            fail(f"rule {rule.name!r}: defined twice (first at line {seen[rule.name]})", *line)
        seen[rule.name] = pos.key("rule", i, "name")[0]
        rules.append(rule)
    notifiers = data.get("notifier", [])
    if not isinstance(notifiers, list):
        fail("'notifier' must be an array of tables: write [[notifier]]")
    checked = []
    from .notify import check_config
    for i, entry in enumerate(notifiers):
        if not isinstance(entry, dict):
            fail("a [[notifier]] must be a table", pos.table("notifier", i) + 1)
        try:
            check_config(entry)
        except ValueError as exc:
            key = exc.args[1] if len(exc.args) > 1 else None
            line, col = (pos.key("notifier", i, key)[:2] if key else (pos.table("notifier", i) + 1, 1))
            fail(f"notifier {entry.get('name') or entry.get('type') or i + 1}: {exc.args[0]}", line, col)
        checked.append(dict(entry, _origin=f"{origin}:{pos.table('notifier', i) + 1}"))
    return RuleSet(rules, checked, defaults, origin)


def _top_key_pos(pos: _Positions, key: str) -> tuple[int, int]:
    for i, line in enumerate(pos.lines):
        if re.match(r"^\s*\[*\s*" + re.escape(key) + r"\b", line):
            return i + 1, 1
    return 1, 1


def _defaults(d: Any, pos: _Positions, fail) -> Defaults:
    out = Defaults()
    if not isinstance(d, dict):
        fail("[defaults] must be a table")
    line0 = next((i for i, ln in enumerate(pos.lines) if re.match(r"^\s*\[\s*defaults\s*\]", ln)), 0)

    def where(key):
        for i in range(line0, len(pos.lines)):
            if re.match(r"^\s*" + key + r"\s*=", pos.lines[i]):
                return i + 1, pos.lines[i].index("=") + 2
        return line0 + 1, 1
    for key, value in d.items():
        if key not in DEFAULT_KEYS:
            fail(f"[defaults]: unknown key {key!r} (known: {', '.join(DEFAULT_KEYS)})", *where(key))
        if key == "max_alerts":
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10000:
                fail("[defaults]: max_alerts must be a whole number from 1 to 10000", *where(key))
            out.max_alerts = value
            continue
        try:
            seconds = E.parse_duration(value)
        except ValueError as exc:
            fail(f"[defaults]: {key}: {exc}", *where(key))
        if seconds <= 0:
            fail(f"[defaults]: {key} must be positive", *where(key))
        setattr(out, key, seconds)
    return out


def columns_for(source: str) -> dict[str, E.Column]:
    return {"events": E.events_columns, "inputs": E.inputs_columns, "dmarc": E.dmarc_columns}[source]()


def _rule(entry: Any, i: int, pos: _Positions, defaults: Defaults, origin: str) -> Rule | None:
    header = pos.table("rule", i) + 1
    if not isinstance(entry, dict):
        raise RulesError(f"{origin}:{header}:1: a [[rule]] must be a table")
    name = entry.get("name")
    label = f"rule {name!r}" if isinstance(name, str) else f"rule #{i + 1}"

    def fail(msg: str, key: str | None = None, offset: int | None = None, value: str = ""):
        if key is None:
            line, col = header, 1
        elif offset is None:
            line, col = pos.key("rule", i, key)[:2]
        else:
            line, col = pos.at_offset("rule", i, key, value, offset)
        raise RulesError(f"{origin}:{line}:{col}: {label}: {msg}")

    for key in entry:
        if key not in RULE_KEYS:
            fail(f"unknown key {key!r}{E._suggest(key, RULE_KEYS)}", key)
    if not isinstance(name, str) or not NAME.match(name):
        fail("needs a name of letters, digits and _ (it becomes the alert's alertname)", "name" if "name" in entry else None)

    def text(key: str, default: str | None = None) -> str:
        v = entry.get(key, default)
        if v is None:
            fail(f"needs {key!r}")
        if not isinstance(v, str):
            fail(f"{key!r} must be a string", key)
        return v

    def duration(key: str, default: float) -> float:
        if key not in entry:
            return default
        try:
            return E.parse_duration(entry[key])
        except ValueError as exc:
            fail(str(exc), key)

    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        fail("'enabled' must be true or false", "enabled")
    source = entry.get("from", "events")
    if source not in SOURCES:
        fail(f"'from' must be one of {', '.join(SOURCES)}", "from")
    columns = columns_for(source)
    window = duration("window", 300.0)
    if window <= 0:
        fail("'window' must be positive", "window")
    for_ = duration("for", 0.0)
    repeat = duration("repeat_interval", defaults.repeat_interval)
    if repeat <= 0:
        fail("'repeat_interval' must be positive", "repeat_interval")

    where_text = text("where", "true")
    try:
        where, where_classes = E.compile_where(where_text, columns)
    except E.ExprError as exc:
        fail(exc.message, "where", exc.offset, where_text)
    cond_text = text("condition")
    try:
        condition = E.compile_condition(cond_text, columns, window)
    except E.ExprError as exc:
        fail(exc.message, "condition", exc.offset, cond_text)

    group_by = entry.get("group_by", [])
    if isinstance(group_by, str):
        group_by = [group_by]
    if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
        fail("'group_by' must be a list of column names", "group_by")
    group_exprs: dict[str, pl.Expr] = {}
    for g in group_by:
        col = columns.get(g)
        if col is None or g == "ts":
            fail(f"group_by: unknown column {g!r}{E._suggest(g, columns)}", "group_by")
        if g in RESERVED_LABELS:
            fail(f"group_by: {g!r} is a reserved label name", "group_by")
        group_exprs[g] = col.expr()
        where_classes |= col.needs_classes
    if len(set(group_by)) != len(group_by):
        fail("group_by names a column twice", "group_by")

    severity = entry.get("severity", "warning")
    if severity not in SEVERITIES:
        fail(f"'severity' must be one of {', '.join(SEVERITIES)}", "severity")
    labels = entry.get("labels", {})
    if not isinstance(labels, dict):
        fail("'labels' must be a table of strings", "labels")
    for k, v in labels.items():
        if not NAME.match(k) or k in RESERVED_LABELS or k in group_by:
            fail(f"labels: {k!r} cannot be used as a label name here", "labels")
        if not isinstance(v, str):
            fail(f"labels: the value of {k!r} must be a string", "labels")
    max_alerts = entry.get("max_alerts", defaults.max_alerts)
    if not isinstance(max_alerts, int) or isinstance(max_alerts, bool) or not 1 <= max_alerts <= 10000:
        fail("'max_alerts' must be a whole number from 1 to 10000", "max_alerts")

    templates = {}
    for key in ("summary", "description"):
        if key not in entry:
            templates[key] = None
            continue
        src = text(key)
        try:
            templates[key] = _ENV.from_string(src)
        except jinja2.TemplateSyntaxError as exc:
            fail(f"template: {exc.message}", key, _line_offset(src, exc.lineno), src)
    if not enabled:
        return None
    return Rule(name=name, source=source, where_text=where_text, where=where, group_by=tuple(group_by),
                group_exprs=group_exprs, window=window, condition_text=cond_text, condition=condition, for_=for_,
                severity=severity, labels=dict(labels), summary=templates["summary"],
                description=templates["description"], repeat_interval=repeat, max_alerts=max_alerts,
                needs_classes=where_classes or condition.needs_classes, origin=f"{origin}:{header}",
                kinds=E.where_kinds(E.parse(where_text)) if source == "events" else None)


def _line_offset(text: str, lineno: int | None) -> int:
    """Offset of the start of 1-based ``lineno`` in ``text``."""
    off = 0
    for _ in range(max(0, (lineno or 1) - 1)):
        nl = text.find("\n", off)
        if nl < 0:
            break
        off = nl + 1
    return off
