"""The pattern language of ``parsers/*.toml`` and its compiler to regular expressions.

A pattern is literal text with a few escapes (grok-like, but literal by
default so ``host[ip]`` needs no backslashes)::

    connect from %{HOST:client_host}[%{IP:client_ip}]%{?:%{PORT:client_port}}

``%{NAME}``            a named sub-pattern (built in, or from the file's ``[patterns]``)
``%{NAME:column}``     the same, captured into an events column
``%{?...}``            an optional part, which may nest
``%{/regex/}``         raw regular expression (``%{/regex/:column}`` captures it)
a space                one or more spaces

The grammar is a pyparsing grammar; a pattern compiles once to a regular
expression anchored at the start of the message, which polars then runs
vectorized. Errors carry the column within the pattern string so the loader
can point at file, line and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pyparsing as pp

# Built-in named sub-patterns (Rust regex syntax, no capture groups).
BUILTINS: dict[str, str] = {
    "WORD": r"\w+",
    "NOTSPACE": r"\S+",
    "INT": r"[+-]?\d+",
    "NUMBER": r"[+-]?\d+(?:\.\d+)?",
    "PORT": r"\d{1,5}",
    "IP": r"[0-9A-Fa-f]*:[0-9A-Fa-f:.]*(?:%\w+)?|\d{1,3}(?:\.\d{1,3}){3}",
    "HOST": r"[^\s\[\]]+",
    "IPORHOST": r"[^\s\[\]/,;()]+",
    "ADDR": r"[^<>]*",  # inside <...>: may be empty, may hold quoted spaces
    "QUEUEID": r"[0-9A-F]{5,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]{10,12}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]+",
    "EXIMID": r"[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}",
    "DSN": r"\d\.\d{1,3}\.\d{1,3}",
    "DATA": r".*?",
    "GREEDYDATA": r".*",
    "END": r"$",
}

_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]*$")


class PatternError(ValueError):
    """A mistake in a pattern; ``col`` is the 1-based column in the pattern text."""

    def __init__(self, msg: str, col: int = 1):
        super().__init__(msg)
        self.msg = msg
        self.col = col


@dataclass
class Compiled:
    """A compiled pattern: the regex and which group fills which column."""

    regex: str
    groups: dict[str, str] = field(default_factory=dict)  # group name -> column

    @property
    def columns(self) -> set[str]:
        return set(self.groups.values())


def _grammar() -> pp.ParserElement:
    """pattern := (optional | inline | ref | literal)*, parsed into plain tuples."""
    pp.ParserElement.set_default_whitespace_chars("")
    name = pp.Regex(r"[A-Za-z_][A-Za-z0-9_]*")
    column = pp.Optional(pp.Suppress(":") + name, default=None)
    ref = pp.Located(pp.Suppress("%{") + name + column + pp.Suppress("}"))
    ref.set_parse_action(lambda t: ("ref", t[1][0], t[1][1], t[0]))
    inline = pp.Located(
        pp.Suppress("%{/")
        + pp.Regex(r"(?:[^/]|/(?!\}|:[A-Za-z_]\w*\}))+")
        + pp.Suppress("/")
        + column
        + pp.Suppress("}")
    )
    inline.set_parse_action(lambda t: ("re", t[1][0], t[1][1], t[0]))
    body = pp.Forward()
    optional = pp.Located(pp.Suppress("%{?") + pp.Group(body) + pp.Suppress("}"))
    optional.set_parse_action(lambda t: ("opt", list(t[1][0]), None, t[0]))

    def literal(regex: str) -> pp.ParserElement:
        el = pp.Located(pp.Regex(regex))
        el.set_parse_action(lambda t: ("lit", t[1][0], None, t[0]))
        return el

    body <<= pp.ZeroOrMore(optional | inline | ref | literal(r"(?:[^%}]|%(?!\{))+"))
    return pp.ZeroOrMore(optional | inline | ref | literal(r"(?:[^%]|%(?!\{))+")) + pp.StringEnd()


_GRAMMAR = _grammar()


def _literal_regex(text: str) -> str:
    # A space in a pattern matches a run of spaces: syslog relays and
    # padding differ, the words do not.
    return " +".join(re.escape(part) for part in text.split(" "))


class PatternCompiler:
    """Compiles patterns against a set of named sub-patterns and known columns."""

    def __init__(self, columns: set[str] | tuple[str, ...], named: dict[str, str] | None = None):
        self.columns = set(columns)
        self.named = dict(BUILTINS)
        for key, regex in (named or {}).items():
            if not _NAME_RE.match(key):
                raise PatternError(f"pattern name {key!r} must be UPPER_CASE")
            self.named[key] = regex

    def compile(self, text: str) -> Compiled:
        try:
            tree = _GRAMMAR.parse_string(text, parse_all=True)
        except pp.ParseException as exc:
            raise PatternError(f"cannot parse pattern: {exc.msg}", exc.col) from None
        out = Compiled(regex="")
        out.regex = "^" + self._emit(tree, out, text)
        try:
            re.compile(out.regex)
        except re.error as exc:
            raise PatternError(f"invalid regular expression: {exc.msg}", 1) from None
        return out

    def _emit(self, nodes, out: Compiled, text: str) -> str:
        parts = []
        for kind, value, column, loc in nodes:
            if kind == "lit":
                parts.append(_literal_regex(value))
                continue
            if kind == "opt":
                parts.append("(?:" + self._emit(value, out, text) + ")?")
                continue
            if kind == "ref":
                if value not in self.named:
                    raise PatternError(f"unknown pattern %{{{value}}}", loc + 3)
                regex = self.named[value]
            else:
                regex = value
                try:
                    re.compile(regex)
                except re.error as exc:
                    raise PatternError(f"invalid regular expression: {exc.msg}", loc + 4 + (exc.pos or 0)) from None
            if column is None:
                parts.append(f"(?:{regex})")
                continue
            if column not in self.columns:
                raise PatternError(f"unknown column {column!r}", text.find(":" + column, loc) + 2)
            group, n = column, 2
            while group in out.groups:  # the same column captured in two places
                group, n = f"{column}__{n}", n + 1
            out.groups[group] = column
            parts.append(f"(?P<{group}>{regex})")
        return "".join(parts)
