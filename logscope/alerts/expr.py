"""The alert expression language: a small pyparsing grammar compiled to polars expressions.

Two places use it. A rule's ``where`` is a *row* expression, evaluated on
every event (``kind in ("sasl_auth_failed", "exim_auth_failed") and
client_ip is not null``). Its ``condition`` is an *aggregate* expression,
evaluated per group over the rows of the window (``count() > 10``,
``share(not tls) > 30%``, ``rate() > 3 * baseline(24h)``).

Grammar (lowest precedence first)::

    expr     := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | cmp
    cmp      := sum [ ("==" | "!=" | "<" | "<=" | ">" | ">=") sum
                    | ["not"] "in" "(" literal ("," literal)* ")"
                    | "~" string                      (regular expression search)
                    | "is" ["not"] "null" ]
    sum      := product (("+" | "-") product)*
    product  := unary (("*" | "/") unary)*
    unary    := "-" unary | atom
    atom     := number | number "%" | duration (30s 10m 24h 7d) | string | true | false
              | name "(" [expr ("," expr)*] ")" | name | "(" expr ")"

Row functions: ``lower upper contains startswith endswith coalesce len``.
Aggregate functions (``condition`` only): ``count() count(cond) share(cond)
rate() rate(cond) sum(x) avg(x) min(x) max(x) distinct(x) baseline(duration)``.
``rate`` is per second over the rule's window; ``baseline(D)`` is the rate
per second of the same group over the last ``D`` (over less while less
history has been seen, never less than the window), so
``rate() > 3 * baseline(24h)`` means "three times the daily average".

Compilation turns every aggregate's argument into a row expression computed
once when events arrive (column ``_r<i>``); the aggregate itself becomes a
column ``_a<i>`` of the per-group table and the condition an expression over
those columns. Errors are :class:`ExprError` with the offset in the source.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import polars as pl
import pyparsing as pp

from .. import classify, schema

# --------------------------------------------------------------------- durations

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")


def parse_duration(text: str | int | float) -> float:
    """``"10m"`` → 600.0 seconds; a bare number is seconds. ValueError when malformed or negative."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"negative duration: {text!r}")
        return float(text)
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 10m, 24h, 7d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def format_duration(seconds: float) -> str:
    """600 → ``10m``; the largest unit that divides the value."""
    for unit in ("w", "d", "h", "m", "s"):
        n = seconds / _UNITS[unit]
        if n >= 1 and n == int(n):
            return f"{int(n)}{unit}"
    return f"{seconds:g}s"


class ExprError(ValueError):
    """A syntax or type error at ``offset`` (0-based) of the expression text."""

    def __init__(self, message: str, offset: int = 0):
        super().__init__(message)
        self.message = message
        self.offset = offset


# --------------------------------------------------------------------- syntax tree

@dataclass
class Node:
    loc: int


@dataclass
class Lit(Node):
    value: Any  # str, float, bool, None
    text: str = ""


@dataclass
class Col(Node):
    name: str


@dataclass
class Call(Node):
    name: str
    args: list
    text: str = ""  # the call as written, for templates and output


@dataclass
class Unary(Node):
    op: str  # "-" | "not"
    x: Node


@dataclass
class Bin(Node):
    op: str  # arithmetic, comparison, and, or
    a: Node
    b: Node


@dataclass
class In(Node):
    x: Node
    values: list
    negate: bool


@dataclass
class Match(Node):
    x: Node
    regex: str


@dataclass
class IsNull(Node):
    x: Node
    negate: bool


def _grammar() -> pp.ParserElement:
    """Built with pyparsing's usual whitespace skipping, whatever the process-wide default is
    (logscope.patterns sets it to none for its whitespace-exact pattern language)."""
    old = pp.ParserElement.DEFAULT_WHITE_CHARS
    pp.ParserElement.set_default_whitespace_chars(" \t\r\n")
    try:
        return _build_grammar()
    finally:
        pp.ParserElement.set_default_whitespace_chars(old)


def _build_grammar() -> pp.ParserElement:
    kw = {k: pp.Keyword(k) for k in ("and", "or", "not", "in", "is", "null", "true", "false")}
    reserved = pp.MatchFirst(kw.values())
    ident = (~reserved + pp.Regex(r"[A-Za-z_][A-Za-z0-9_]*")).set_name("name")
    duration = pp.Regex(r"\d+(?:\.\d+)?(?:ms|s|m|h|d|w)\b").set_name("duration")
    percent = pp.Regex(r"\d+(?:\.\d+)?%").set_name("percentage")
    number = pp.Regex(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?").set_name("number")
    string = (pp.QuotedString('"', esc_char="\\", unquote_results=True)
              | pp.QuotedString("'", esc_char="\\", unquote_results=True)).set_name("string")
    LP, RP = pp.Suppress("("), pp.Suppress(")")
    expr = pp.Forward().set_name("expression")

    def lit(kind):
        def act(s, loc, t):
            raw = t[0]
            if kind == "dur":
                return Lit(loc, parse_duration(raw), raw)
            if kind == "pct":
                return Lit(loc, float(raw[:-1]) / 100.0, raw)
            if kind == "num":
                return Lit(loc, float(raw), raw)
            if kind == "str":
                return Lit(loc, raw, repr(raw))
            return Lit(loc, {"true": True, "false": False, "null": None}[raw], raw)
        return act

    literal = (duration.copy().set_parse_action(lit("dur")) | percent.copy().set_parse_action(lit("pct"))
               | number.copy().set_parse_action(lit("num")) | string.copy().set_parse_action(lit("str"))
               | (kw["true"] | kw["false"] | kw["null"]).set_parse_action(lit("kw")))
    neg_literal = (pp.Literal("-") + literal).set_parse_action(
        lambda s, loc, t: Lit(loc, -t[1].value, "-" + t[1].text) if isinstance(t[1].value, float) else t[1])

    def call_act(s, loc, t):
        loc = _skip(s, loc)
        return Call(loc, t[0], list(t[1:]), _call_text(s, loc))

    call = (ident + LP + pp.Optional(pp.DelimitedList(expr)) + RP).set_parse_action(call_act)
    column = ident.copy().set_parse_action(lambda s, loc, t: Col(_skip(s, loc), t[0]))
    atom = (literal | call | column | (LP + expr + RP)).set_name("value")
    unary = pp.Forward()
    unary <<= (pp.Literal("-") + unary).set_parse_action(lambda s, loc, t: Unary(_skip(s, loc), "-", t[1])) | atom

    def left(ops):
        def act(s, loc, t):
            node = t[0]
            for i in range(1, len(t), 2):
                node = Bin(node.loc, t[i], node, t[i + 1])
            return node
        return act

    product = (unary + pp.ZeroOrMore(pp.one_of("* /") + unary)).set_parse_action(left("*/"))
    summ = (product + pp.ZeroOrMore(pp.one_of("+ -") + product)).set_parse_action(left("+-"))
    cmp_op = pp.one_of("== != <= >= < >")
    lit_list = LP + pp.DelimitedList(literal | neg_literal) + RP
    in_tail = (pp.Optional(kw["not"]) + kw["in"] - pp.Group(lit_list))
    match_tail = pp.Literal("~") - string
    null_tail = kw["is"] - pp.Optional(kw["not"]) + kw["null"]

    def cmp_act(s, loc, t):
        if len(t) == 1:
            return t[0]
        x = t[0]
        if t[1] in ("==", "!=", "<", "<=", ">", ">="):
            return Bin(x.loc, t[1], x, t[2])
        if t[1] == "~":
            return Match(x.loc, x, t[2])
        if t[1] == "is":
            return IsNull(x.loc, x, negate=len(t) == 4)
        negate = t[1] == "not"
        return In(x.loc, x, list(t[-1]), negate)

    cmp = (summ + pp.Optional(cmp_op + summ | in_tail | match_tail | null_tail)).set_parse_action(cmp_act)
    notx = pp.Forward()
    notx <<= (kw["not"] + notx).set_parse_action(lambda s, loc, t: Unary(_skip(s, loc), "not", t[1])) | cmp
    andx = (notx + pp.ZeroOrMore(kw["and"] + notx)).set_parse_action(left("and"))
    orx = (andx + pp.ZeroOrMore(kw["or"] + andx)).set_parse_action(left("or"))
    expr <<= orx
    # offsets must count a tab as one character (pyparsing expands tabs by default)
    return (expr + pp.StringEnd()).parse_with_tabs()


def _skip(s: str, loc: int) -> int:
    """``loc`` moved past whitespace (pyparsing reports some matches from before it)."""
    while loc < len(s) and s[loc] in " \t\r\n":
        loc += 1
    return loc


def _call_text(s: str, loc: int) -> str:
    """The text of the call starting at ``loc``: up to its balanced closing parenthesis."""
    depth, quote, i = 0, "", loc
    while i < len(s):
        c = s[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return s[loc:i + 1]
        i += 1
    return s[loc:]


_GRAMMAR: pp.ParserElement | None = None
_GRAMMAR_LOCK = threading.Lock()


def parse(text: str) -> Node:
    """Expression text → syntax tree; :class:`ExprError` with the offset on a syntax error."""
    global _GRAMMAR
    with _GRAMMAR_LOCK:
        if _GRAMMAR is None:
            _GRAMMAR = _grammar()
    if not text.strip():
        raise ExprError("empty expression", 0)
    try:
        return _GRAMMAR.parse_string(text, parse_all=True)[0]
    except pp.ParseBaseException as exc:
        loc = exc.loc
        found = text[loc:loc + 12].split("\n")[0]
        what = f"unexpected {found!r}" if found else "unexpected end of expression"
        raise ExprError(f"syntax error: {what}", loc) from None
    except ValueError as exc:  # a malformed duration inside a literal
        raise ExprError(str(exc), 0) from None


# --------------------------------------------------------------------- column spaces

@dataclass(frozen=True)
class Column:
    """A name an expression can use: its polars expression, type and (for closed sets) values."""

    name: str
    expr: Callable[[], pl.Expr]
    type: str  # "str" | "num" | "bool" | "time"
    values: tuple[str, ...] | None = None  # closed set: literals compared with it are checked
    doc: str = ""
    needs_classes: bool = False  # needs logscope.classify's reject_class/rbl_zone columns


def _dtype_type(dt: pl.DataType) -> str:
    if dt == pl.Boolean:
        return "bool"
    if dt.is_numeric():
        return "num"
    if isinstance(dt, pl.Datetime):
        return "time"
    return "str"


def _raw(name: str, dt: pl.DataType, doc: str = "") -> Column:
    values = tuple(dt.categories.to_list()) if isinstance(dt, pl.Enum) else None
    return Column(name, lambda: pl.col(name), _dtype_type(dt), values, doc)


_STARTTLS = r"(?:^|\s)starttls=0*[1-9]"
_AUTH = r"(?:^|\s)auth=0*[1-9]"
WRAPPER_TLS_SERVICES = ("smtps", "submissions")
SMTPD_SERVICES = {"smtp": "smtp", "25": "smtp", "submission": "submission", "587": "submission",
                  "smtps": "smtps", "465": "smtps", "submissions": "submissions"}


def _kind_is(*kinds: str) -> pl.Expr:
    return pl.col("kind").is_in(list(kinds)).fill_null(False)


def tls_expr() -> pl.Expr:
    """The connection of this event was encrypted (see :data:`VIRTUAL_DOCS`)."""
    commands = pl.col("commands").str.contains(_STARTTLS).fill_null(False)
    wrapper = pl.col("service").is_in(list(WRAPPER_TLS_SERVICES)).fill_null(False)
    exim = (pl.col("source").cast(pl.String) == "exim").fill_null(False) & (
        pl.col("tls_cipher").is_not_null() | pl.col("tls_protocol").is_not_null())
    return ((_kind_is("smtpd_disconnect") & (commands | wrapper))
            | _kind_is("tls_in", "tls_out")
            | pl.col("tls").cast(pl.String).is_in(["TLS", "secured"]).fill_null(False)
            | exim)


def sasl_expr() -> pl.Expr:
    """A client authenticated in this SMTP session (postfix auth=N>0 or SASL on the client line, exim A=)."""
    return ((_kind_is("smtpd_disconnect") & pl.col("commands").str.contains(_AUTH).fill_null(False))
            | (_kind_is("smtpd_client") & pl.col("sasl_method").is_not_null())
            | (_kind_is("exim_arrival") & pl.col("sasl_username").is_not_null()))


# The event kinds of the rows where a Boolean derived column can be true (see where_kinds).
VIRTUAL_KINDS: dict[str, frozenset[str]] = {
    "sasl": frozenset({"smtpd_disconnect", "smtpd_client", "exim_arrival"}),
    "is_reject": frozenset(classify.REJECT_ACTIONS),
    "failed_delivery": frozenset({"delivery", *classify.DELIVERY_REPLY_KINDS}),
}


def smtpd_service_expr() -> pl.Expr:
    s = pl.col("service").cast(pl.String)
    return pl.when(s.is_null()).then(pl.lit("smtp")).otherwise(
        s.replace_strict(SMTPD_SERVICES, default="other", return_dtype=pl.String))


# name -> (expression, type, closed values, meaning, needs classification)
_VIRTUAL: dict[str, tuple[Callable[[], pl.Expr], str, tuple[str, ...] | None, str, bool]] = {
    "tls": (tls_expr, "bool", None,
            "the connection was encrypted: postfix smtpd_disconnect with starttls=N>0 or on smtps/submissions, "
            "tls_in/tls_out, dovecot logins with TLS or 'secured', exim lines with X=", False),
    "sasl": (sasl_expr, "bool", None,
             "a client authenticated in the SMTP session: smtpd_disconnect with auth=N>0, smtpd_client with "
             "sasl_method, exim arrival with A=", False),
    "login_tls": (lambda: pl.col("tls"), "str", schema.LOGIN_TLS,
                  "dovecot's TLS state of a login: TLS, secured, plaintext, TLS handshaking (the raw 'tls' column)",
                  False),
    "smtpd_service": (smtpd_service_expr, "str", ("smtp", "submission", "smtps", "submissions", "other"),
                      "postfix master.cf service of an smtpd line (plain smtpd is smtp)", False),
    "is_reject": (lambda: classify.reject_rows(), "bool", None,
                  "a rejection by this host (postfix/postscreen/milter/cleanup rejects and warnings, exim ACL "
                  "rejects, rspamd reject/soft reject/greylist)", False),
    "failed_delivery": (lambda: classify.delivery_rows(), "bool", None,
                        "a deferred/bounced/expired delivery, or a remote server's reply to one", False),
    "reject_class": (lambda: pl.col("reject_class").cast(pl.String), "str", classify.CLASSES,
                     "the reject reason class (logscope.classify) of a reject or failed delivery", True),
    "rbl_zone": (lambda: pl.col("rbl_zone"), "str", None,
                 "the DNS blocklist zone a reject or failed delivery names", True),
}
VIRTUAL_DOCS = {k: v[3] for k, v in _VIRTUAL.items()}


def events_columns() -> dict[str, Column]:
    """Every name an events rule can use: the schema's columns and the derived ones above."""
    out = {name: _raw(name, dt) for name, dt in schema.COLUMNS.items()}
    for name, (expr, typ, values, doc, needs) in _VIRTUAL.items():
        out[name] = Column(name, expr, typ, values, doc, needs)
    return out


def inputs_columns() -> dict[str, Column]:
    """Rules ``from = "inputs"``: one row per batch of lines read from an input."""
    return {"ts": Column("ts", lambda: pl.col("ts"), "time"),
            "input": Column("input", lambda: pl.col("input"), "str", doc="the input as configured"),
            "lines": Column("lines", lambda: pl.col("lines"), "num", doc="lines read")}


DMARC_COLUMNS = {
    "reporter": "str", "report_id": "str", "domain": "str", "source_ip": "str", "source_net": "str",
    "count": "num", "disposition": "str", "dkim_aligned": "str", "spf_aligned": "str", "dmarc_pass": "bool",
    "header_from": "str", "envelope_from": "str", "envelope_to": "str", "p": "str", "sp": "str",
}


def dmarc_columns() -> dict[str, Column]:
    """Rules ``from = "dmarc"``: one row per DMARC aggregate report record (time: the report's end)."""
    out = {"ts": Column("ts", lambda: pl.col("end"), "time")}
    for name, typ in DMARC_COLUMNS.items():
        out[name] = Column(name, (lambda n=name: pl.col(n)), typ)
    return out


# --------------------------------------------------------------------- compilation

ROW_FUNCTIONS = {"lower": 1, "upper": 1, "len": 1, "contains": 2, "startswith": 2, "endswith": 2, "coalesce": -2}
AGG_FUNCTIONS = ("count", "share", "rate", "sum", "avg", "min", "max", "distinct", "baseline")


@dataclass
class Typed:
    expr: pl.Expr
    type: str  # str | num | bool | time | any (null)
    values: tuple[str, ...] | None = None
    const: Any = ...  # the literal value, when a literal


@dataclass
class Aggregate:
    """One aggregate call of a condition: ``column`` of the per-group table."""

    column: str  # _a<i> or _b<i>
    func: str
    arg: pl.Expr | None  # row expression (column _r<i> of the buffer), None for count()/rate()
    arg_column: str | None
    text: str  # as written, e.g. "share(not tls)"
    seconds: float = 0.0  # baseline(D): D; rate(): the window

    def agg(self, weight: str = "_w") -> pl.Expr:
        """The polars aggregation over a group's buffered rows.

        ``weight``: how many source rows each buffered row stands for (the engine keeps equal rows
        of one second as one row with their count); 0 on the probe rows replay adds at the times it
        evaluates, whose arguments are null, so min/max/distinct ignore them too.
        """
        a = pl.col(self.arg_column) if self.arg_column else None
        w = pl.col(weight)
        f = self.func
        n = w.sum()
        if f in ("count", "rate"):
            out = n if a is None else (a.fill_null(False).cast(pl.Int64) * w).sum()
            if f == "rate":
                out = out / self.seconds
        elif f == "share":
            out = (a.fill_null(False).cast(pl.Float64) * w).sum() / pl.when(n > 0).then(n)
        elif f == "sum":
            out = (a * w).sum()
        elif f == "avg":
            den = w.filter(a.is_not_null()).sum()
            out = (a * w).sum() / pl.when(den > 0).then(den)
        elif f == "min":
            out = a.min()
        elif f == "max":
            out = a.max()
        elif f == "distinct":
            out = a.drop_nulls().n_unique()
        else:  # baseline: computed by the engine
            raise AssertionError(f)
        return out.cast(pl.Float64).alias(self.column)


@dataclass
class Condition:
    """A compiled aggregate condition."""

    expr: pl.Expr  # over the _a/_b columns → Boolean
    aggregates: list[Aggregate] = field(default_factory=list)
    baselines: list[Aggregate] = field(default_factory=list)
    row_exprs: dict[str, pl.Expr] = field(default_factory=dict)  # _r<i> → row expression
    needs_classes: bool = False
    value_column: str | None = None  # the first aggregate: an alert's "value"


class Compiler:
    """Compiles syntax trees against one column space; ``window`` is the rule's window in seconds."""

    def __init__(self, columns: dict[str, Column], window: float = 0.0):
        self.columns = columns
        self.window = window
        self.needs_classes = False
        self._cond: Condition | None = None

    # -------------------------------------------------------------- entry points

    def row(self, node: Node) -> pl.Expr:
        """A ``where`` expression → Boolean row filter (null counts as false)."""
        t = self._compile(node, agg=False)
        self._want(t, "bool", node, "a where expression must be true or false (a comparison, in, ~, and/or)")
        return t.expr.fill_null(False)

    def condition(self, node: Node) -> Condition:
        self._cond = Condition(pl.lit(True))
        t = self._compile(node, agg=True)
        self._want(t, "bool", node, "a condition must be true or false, e.g. count() > 10")
        if not self._cond.aggregates and not self._cond.baselines:
            raise ExprError("a condition needs an aggregate: count(), share(...), rate(), sum(...), ...", node.loc)
        cond = self._cond
        cond.expr = t.expr.fill_null(False)
        cond.needs_classes = self.needs_classes
        first = (cond.aggregates or cond.baselines)[0]
        cond.value_column = first.column
        return cond

    # -------------------------------------------------------------- nodes

    def _want(self, t: Typed, typ: str, node: Node, msg: str) -> None:
        if t.type not in (typ, "any"):
            raise ExprError(msg, node.loc)

    def _compile(self, node: Node, agg: bool) -> Typed:
        if isinstance(node, Lit):
            v = node.value
            if v is None:
                return Typed(pl.lit(None), "any", const=None)
            typ = "bool" if isinstance(v, bool) else "num" if isinstance(v, float) else "str"
            return Typed(pl.lit(v), typ, const=v)
        if isinstance(node, Col):
            col = self.columns.get(node.name)
            if col is None:
                raise ExprError(f"unknown column {node.name!r}{_suggest(node.name, self.columns)}", node.loc)
            if agg:
                raise ExprError(f"column {node.name!r} outside an aggregate: filter in 'where', or aggregate it "
                                f"(count({node.name} ...), sum({node.name}), ...)", node.loc)
            self.needs_classes |= col.needs_classes
            return Typed(col.expr(), col.type, col.values)
        if isinstance(node, Call):
            return self._call(node, agg)
        if isinstance(node, Unary):
            x = self._compile(node.x, agg)
            if node.op == "-":
                self._want(x, "num", node.x, "'-' needs a number")
                return Typed(-x.expr, "num", const=-x.const if isinstance(x.const, float) else ...)
            self._want(x, "bool", node.x, "'not' needs something true or false")
            return Typed(~x.expr, "bool")
        if isinstance(node, Bin):
            return self._binary(node, agg)
        if isinstance(node, In):
            x = self._compile(node.x, agg)
            values = []
            for lit in node.values:
                v = lit.value
                if x.type == "num" and not isinstance(v, float):
                    raise ExprError(f"{lit.text} is not a number", lit.loc)
                if x.type == "str" and not isinstance(v, str):
                    raise ExprError(f"{lit.text} is not a string", lit.loc)
                if x.values is not None and v not in x.values:
                    raise ExprError(f"{v!r} is not one of the values of this column{_suggest(v, x.values)}", lit.loc)
                values.append(v)
            if x.type == "num":
                expr = x.expr.cast(pl.Float64).is_in([float(v) for v in values])
            else:
                expr = x.expr.cast(pl.String).is_in([str(v) for v in values])
            expr = pl.when(x.expr.is_null()).then(pl.lit(None, pl.Boolean)).otherwise(expr)
            return Typed(~expr if node.negate else expr, "bool")
        if isinstance(node, Match):
            x = self._compile(node.x, agg)
            self._want(x, "str", node.x, "'~' searches text: use it on a text column")
            try:
                re.compile(node.regex)
            except re.error as exc:
                raise ExprError(f"bad regular expression: {exc}", node.loc) from None
            return Typed(x.expr.cast(pl.String).str.contains(node.regex), "bool")
        if isinstance(node, IsNull):
            x = self._compile(node.x, agg)
            return Typed(x.expr.is_not_null() if node.negate else x.expr.is_null(), "bool")
        raise ExprError("unsupported expression", node.loc)

    def _binary(self, node: Bin, agg: bool) -> Typed:
        a, b = self._compile(node.a, agg), self._compile(node.b, agg)
        op = node.op
        if op in ("and", "or"):
            self._want(a, "bool", node.a, f"'{op}' needs something true or false on its left")
            self._want(b, "bool", node.b, f"'{op}' needs something true or false on its right")
            return Typed(a.expr & b.expr if op == "and" else a.expr | b.expr, "bool")
        if op in "+-*/":
            self._want(a, "num", node.a, f"'{op}' needs numbers")
            self._want(b, "num", node.b, f"'{op}' needs numbers")
            ea, eb = a.expr.cast(pl.Float64), b.expr.cast(pl.Float64)
            expr = {"+": ea + eb, "-": ea - eb, "*": ea * eb, "/": ea / eb}[op]
            return Typed(expr, "num")
        # comparison
        types = {a.type, b.type} - {"any"}
        if len(types) > 1:
            raise ExprError(f"cannot compare {a.type} with {b.type}", node.b.loc)
        for x, y, yn in ((a, b, node.b), (b, a, node.a)):
            if x.values is not None and isinstance(y.const, str) and y.const not in x.values:
                raise ExprError(f"{y.const!r} is not one of the values of this column{_suggest(y.const, x.values)}",
                                yn.loc)
        if types and types <= {"str"} and op not in ("==", "!="):
            pass  # text ordering is allowed (lexicographic)
        if types == {"bool"} and op not in ("==", "!="):
            raise ExprError(f"'{op}' does not order true/false", node.loc)
        ea, eb = a.expr, b.expr
        if types == {"str"}:
            ea, eb = ea.cast(pl.String), eb.cast(pl.String)
        elif types == {"num"}:
            ea, eb = ea.cast(pl.Float64), eb.cast(pl.Float64)
        expr = {"==": ea == eb, "!=": ea != eb, "<": ea < eb, "<=": ea <= eb, ">": ea > eb, ">=": ea >= eb}[op]
        return Typed(expr, "bool")

    def _call(self, node: Call, agg: bool) -> Typed:
        name = node.name
        if name in AGG_FUNCTIONS:
            if not agg:
                raise ExprError(f"{name}() is an aggregate: use it in the condition, not in 'where'", node.loc)
            return self._aggregate(node)
        if name not in ROW_FUNCTIONS:
            known = list(ROW_FUNCTIONS) + list(AGG_FUNCTIONS)
            raise ExprError(f"unknown function {name!r}{_suggest(name, known)}", node.loc)
        arity = ROW_FUNCTIONS[name]
        if (arity >= 0 and len(node.args) != arity) or (arity < 0 and len(node.args) < -arity):
            n = f"at least {-arity}" if arity < 0 else str(arity)
            raise ExprError(f"{name}() takes {n} argument{'s' if abs(arity) != 1 else ''}", node.loc)
        args = [self._compile(a, agg) for a in node.args]
        if name == "coalesce":
            types = {a.type for a in args} - {"any"}
            if len(types) > 1:
                raise ExprError("coalesce() needs arguments of one type", node.loc)
            typ = types.pop() if types else "any"
            exprs = [a.expr.cast(pl.Float64) if typ == "num" else a.expr.cast(pl.String) if typ == "str" else a.expr
                     for a in args]
            return Typed(pl.coalesce(exprs), typ)
        for a, n in zip(args, node.args):
            self._want(a, "str", n, f"{name}() works on text")
        s = args[0].expr.cast(pl.String)
        if name == "lower":
            return Typed(s.str.to_lowercase(), "str")
        if name == "upper":
            return Typed(s.str.to_uppercase(), "str")
        if name == "len":
            return Typed(s.str.len_chars().cast(pl.Float64), "num")
        lit = node.args[1]
        if not isinstance(lit, Lit) or not isinstance(lit.value, str):
            raise ExprError(f"the second argument of {name}() must be a string literal", lit.loc)
        if name == "contains":
            return Typed(s.str.contains(lit.value, literal=True), "bool")
        if name == "startswith":
            return Typed(s.str.starts_with(lit.value), "bool")
        return Typed(s.str.ends_with(lit.value), "bool")

    def _aggregate(self, node: Call) -> Typed:
        cond = self._cond
        assert cond is not None
        name, args = node.name, node.args
        text = node.text or f"{name}()"
        if name == "baseline":
            if len(args) != 1 or not isinstance(args[0], Lit) or not isinstance(args[0].value, float) \
                    or not args[0].text[-1:].isalpha():
                raise ExprError("baseline() takes one duration, e.g. baseline(24h)", node.loc)
            seconds = args[0].value
            if seconds < self.window:
                raise ExprError("the baseline period must be at least the rule's window", args[0].loc)
            a = Aggregate(f"_b{len(cond.baselines)}", "baseline", None, None, text, seconds)
            cond.baselines.append(a)
            return Typed(pl.col(a.column), "num")
        if name in ("count", "rate") and not args:
            arg = None
        else:
            if len(args) != 1:
                raise ExprError(f"{name}() takes one argument", node.loc)
            inner = self._compile(args[0], agg=False)
            if name in ("count", "rate", "share"):
                self._want(inner, "bool", args[0], f"{name}() counts the rows where its argument is true")
            elif name in ("sum", "avg", "min", "max"):
                self._want(inner, "num", args[0], f"{name}() needs a number column")
            arg = inner.expr
        i = len(cond.aggregates)
        arg_column = None
        if arg is not None:
            arg_column = f"_r{len(cond.row_exprs)}"
            cond.row_exprs[arg_column] = arg
        # rate: the count per second of the window (the value templates show, too)
        a = Aggregate(f"_a{i}", name, arg, arg_column, text, max(self.window, 1e-9) if name == "rate" else 0.0)
        cond.aggregates.append(a)
        return Typed(pl.col(a.column), "num")


def _suggest(name: str, known) -> str:
    import difflib
    # ts is no use in expressions (times are the window's business): never suggest it
    close = difflib.get_close_matches(str(name), [str(k) for k in known if k != "ts"], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def where_kinds(node: Node) -> frozenset[str] | None:
    """The event kinds of the rows where a ``where`` can hold (None: any kind).

    Lets a sink skip a rule for a batch without these kinds. Sound because
    ``and`` and ``or`` keep "false or null" (a filtered-out row) when both
    sides have it: ``kind == "x"`` and ``kind in (...)`` name their kinds,
    ``and`` intersects, ``or`` unites, ``false`` and ``null`` have none, the
    derived columns of ``VIRTUAL_KINDS`` theirs; anything else, ``not``
    included, may hold for any kind.
    """
    if isinstance(node, Lit):
        return None if node.value is True else frozenset()
    if isinstance(node, Col):
        return VIRTUAL_KINDS.get(node.name)
    if isinstance(node, In) and not node.negate and isinstance(node.x, Col) and node.x.name == "kind":
        return frozenset(v.value for v in node.values if isinstance(v.value, str))
    if isinstance(node, Bin):
        if node.op in ("and", "or"):
            a, b = where_kinds(node.a), where_kinds(node.b)
            if node.op == "and":
                return b if a is None else a if b is None else a & b
            return None if a is None or b is None else a | b
        if node.op == "==":
            for x, y in ((node.a, node.b), (node.b, node.a)):
                if isinstance(x, Col) and x.name == "kind" and isinstance(y, Lit) and isinstance(y.value, str):
                    return frozenset({y.value})
    return None


def compile_where(text: str, columns: dict[str, Column]) -> tuple[pl.Expr, bool]:
    """``where`` text → (Boolean row expression, needs reject classification)."""
    c = Compiler(columns)
    expr = c.row(parse(text))
    return expr, c.needs_classes


def compile_condition(text: str, columns: dict[str, Column], window: float) -> Condition:
    """``condition`` text → :class:`Condition`."""
    return Compiler(columns, window).condition(parse(text))
