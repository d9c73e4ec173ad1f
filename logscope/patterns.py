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

from .asciire import ascii_classes  # noqa: F401  (re-exported: the engine and tests use it from here)

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
    tree: list = field(default_factory=list, repr=False)  # parsed nodes, for lead_tokens

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


def _build() -> pp.ParserElement:
    # Whitespace is significant in patterns; pyparsing's setting is process-wide, so
    # restore it for every other grammar (the alert rule language) once ours is built.
    saved = "".join(sorted(pp.ParserElement.DEFAULT_WHITE_CHARS))
    try:
        return _grammar()
    finally:
        pp.ParserElement.set_default_whitespace_chars(saved)


_GRAMMAR = _build()


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
        out = Compiled(regex="", tree=list(tree))
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


# --- dispatch: which leading token can a pattern's match start with? ---------
#
# The engine computes, for every message, its first token (after an optional
# per-source skip such as a postfix queue id) and runs only the events whose
# pattern can start with that token. TOKEN_RE is shared by both sides, so the
# guarantee is: if a pattern matches a message, the message's token is in the
# pattern's lead set (or the set is None: "any token").

TOKEN_RE = r"[A-Za-z0-9][\w-]*|[^\w\s]+"
_TOKEN = re.compile(TOKEN_RE)
_MAX_LANG = 64


def _language(regex: str) -> list[str] | None:
    """Every string a small finite regex matches (``30201[35]``, ``a|b``), else None."""
    if "(?" in regex.replace("(?:", "").replace("(?P<", ""):
        return None  # flags, lookaround: not worth modelling
    try:
        from re import _parser as sre  # type: ignore[attr-defined]
        from re import _constants as C  # type: ignore[attr-defined]
        parsed = sre.parse(regex)
    except Exception:
        return None

    def expand(items) -> list[str] | None:
        out = [""]
        for op, av in items:
            if op is C.LITERAL:
                opts = [chr(av)]
            elif op is C.IN:
                opts = []
                for cop, cav in av:
                    if cop is C.LITERAL:
                        opts.append(chr(cav))
                    elif cop is C.RANGE and cav[1] - cav[0] < _MAX_LANG:
                        opts.extend(chr(c) for c in range(cav[0], cav[1] + 1))
                    else:
                        return None
            elif op is C.SUBPATTERN:
                if av[1] or av[2]:
                    return None
                opts = expand(av[3])
            elif op is C.BRANCH:
                opts = []
                for branch in av[1]:
                    sub = expand(branch)
                    if sub is None:
                        return None
                    opts.extend(sub)
            elif op in (C.MAX_REPEAT, C.MIN_REPEAT) and av[1] <= 3:
                sub = expand(av[2])
                if sub is None:
                    return None
                opts, rep = [], [""]
                for n in range(av[1] + 1):
                    if n >= av[0]:
                        opts.extend(rep)
                    rep = [a + b for a in rep for b in sub]
                    if len(rep) > _MAX_LANG:
                        return None
            else:
                return None
            if opts is None:
                return None
            out = [a + b for a in out for b in opts]
            if len(out) > _MAX_LANG:
                return None
        return out

    return expand(parsed)


def lead_tokens(compiled: Compiled, named: dict[str, str], skip: Compiled | None = None) -> frozenset[str] | None:
    """The first tokens (TOKEN_RE, after ``skip``) a match of ``compiled`` can start with; None = any."""
    skip_nodes = skip.tree if skip is not None else []
    skip_re = re.compile(skip.regex) if skip is not None else None

    def strip_skip(seq: list) -> list | None:
        """``seq`` without a leading copy of the skip nodes, or None if it does not start with them."""
        if not skip_nodes or len(seq) < len(skip_nodes):
            return None
        for i, (kind, value, _, _) in enumerate(skip_nodes):
            k2, v2 = seq[i][0], seq[i][1]
            if kind != k2:
                return None
            if kind == "lit" and i == len(skip_nodes) - 1:
                if not v2.startswith(value):
                    return None
                return [("lit", v2[len(value):], None, 0)] + list(seq[i + 1:])
            if v2 != value:
                return None
        return list(seq[len(skip_nodes):])

    def first(seq: list, can_skip: bool) -> set[str] | None:
        if can_skip and skip_nodes:
            rest = strip_skip(seq)
            if rest is not None:
                return first(rest, False)
        if not seq:
            return None
        kind, value = seq[0][0], seq[0][1]
        rest = list(seq[1:])
        if kind == "lit":
            if value == "":
                return first(rest, can_skip)
            if can_skip and skip_re is not None and skip_re.match(value):
                return None  # the row side would strip this text as a skip
            m = _TOKEN.match(value)
            if m is None:
                return {""}
            if m.end() == len(value):
                if rest and rest[0][0] == "lit":
                    return first([("lit", value + rest[0][1], None, 0)] + rest[1:], can_skip)
                if rest and rest[0][:2] in (("ref", "END"), ("re", "$")):
                    return {m.group()}  # the message ends right after the token
                return None  # the token may run on into the next node
            return {m.group()}
        if kind == "opt":
            a = first(list(value) + rest, can_skip)
            b = first(rest, can_skip) if a is not None else None
            return None if a is None or b is None else a | b
        regex = named.get(value) if kind == "ref" else value
        lang = _language(regex) if regex is not None else None
        if lang is None:
            return None
        out: set[str] = set()
        for text in lang:
            sub = first([("lit", text, None, 0)] + rest, can_skip)
            if sub is None:
                return None
            out |= sub
        return out

    found = first(list(compiled.tree), True)
    return frozenset(found) if found is not None else None
