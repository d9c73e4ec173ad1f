"""Lines -> events: the vectorized parse of one batch of raw lines.

1. ``header.parse_header`` splits the syslog header off every line.
2. Each line gets a source: from its program name (globs of the parser
   files), from the line format (exim mainlog, rspamd file log), or from a
   marker in the message (``%ASA-``).
3. Per source, an optional prefix is stripped, then the lines are split by
   daemon and each event pattern runs (``str.contains`` to find the rows,
   ``str.extract_groups`` on those rows only). First match wins; whatever no
   pattern takes is an ``unparsed`` event. Every input line yields exactly one
   event.

A small batch (``SMALL_ROWS``: ``tail`` under a trickle) does step 3 line by
line in Python's ``re`` with the same regexes (``_prepare_few``, ``_match_few``):
polars' fixed cost per call outweighs its speed on a few rows.
"""

from __future__ import annotations

import functools
import re

import polars as pl

from .header import HeaderOptions, parse_header
from .parsers import ParserSet, SourceDef
from .patterns import ascii_classes

_PROG_BASE = r"^([^/\[(<]+)"
_DAEMON = r"([^/\[(<]+)(?:\(.*|<.*)?$"


def _program_source(prog_base: pl.Expr, parsers: ParserSet) -> pl.Expr:
    expr = None
    for name, sdef in parsers.sources.items():
        regex = sdef.program_regex
        if regex is None:
            continue
        cond = prog_base.str.contains(regex)
        expr = pl.when(cond).then(pl.lit(name)) if expr is None else expr.when(cond).then(pl.lit(name))
    return expr.otherwise(None) if expr is not None else pl.lit(None, dtype=pl.String)


def _marker_source(message: pl.Expr, parsers: ParserSet) -> pl.Expr:
    expr = None
    for name, sdef in parsers.sources.items():
        for marker in sdef.markers:
            cond = message.str.contains(marker, literal=True)
            expr = pl.when(cond).then(pl.lit(name)) if expr is None else expr.when(cond).then(pl.lit(name))
    return expr.otherwise(None) if expr is not None else pl.lit(None, dtype=pl.String)


def _guess_source(program: pl.Expr, parsers: ParserSet) -> pl.Expr:
    """For lines no source claims: a source whose name appears in the program name."""
    low = program.str.to_lowercase()
    expr = pl.when(low.str.contains("asa|pix|ftd")).then(pl.lit("cisco_asa"))
    for name in parsers.sources:
        expr = expr.when(low.str.contains(name.split("_")[-1], literal=True)).then(pl.lit(name))
    return expr.otherwise(pl.lit("unknown"))


def assign_sources(df: pl.DataFrame, parsers: ParserSet, default_program: str | None,
                   continues: str | None = None) -> pl.DataFrame:
    """Settle program, pid, message and source of every line."""
    bare_src = _program_source(pl.col("_bare_program").str.extract(_PROG_BASE), parsers)
    # "prog: msg" without header counts only when prog names a known source.
    known = pl.col("_bare") & bare_src.is_not_null()
    updates = []
    if df["_bare_program"].null_count() < df.height:
        updates = [
            pl.when(known).then(pl.col("_bare_program")).otherwise(pl.col("program")).alias("program"),
            pl.when(known).then(pl.col("_bare_pid")).otherwise(pl.col("pid")).alias("pid"),
            pl.when(known).then(pl.col("_bare_message")).otherwise(pl.col("message")).alias("message"),
        ]
    if default_program is not None:
        df = df.with_columns(updates).with_columns(
            pl.when(pl.col("_bare") & pl.col("program").is_null()).then(pl.lit(default_program))
            .otherwise(pl.col("program")).alias("program"))
    elif updates:
        df = df.with_columns(updates)
    df = df.drop("_bare_program", "_bare_pid", "_bare_message", "_bare")
    df = df.join(_program_table(df["program"], parsers), on="program", how="left",
                 maintain_order="left", nulls_equal=True)
    src = pl.coalesce(pl.col("_psrc"), pl.col("hint"))
    if any(s.markers for s in parsers.sources.values()):
        src = pl.coalesce(src, _marker_source(pl.col("message"), parsers))
    df = df.with_columns(src.alias("_src")).drop("_psrc")
    # Lines without any header continue the entry above them (exim's multi-line
    # entries, rejectlog envelope and header lines): they belong to its source.
    headerless = pl.col("ts").is_null() & pl.col("program").is_null() & pl.col("_src").is_null()
    df = df.with_columns(
        pl.when(headerless).then(pl.col("_src").forward_fill().fill_null(pl.lit(continues, dtype=pl.String))).otherwise(pl.col("_src")).alias("_src")
    )
    return df.drop("hint")


def _program_table(programs: pl.Series, parsers: ParserSet) -> pl.DataFrame:
    """Per distinct program name: its source, base name, daemon and service.

    A chunk has a few dozen distinct programs, so the regex work on program
    names runs on those only and is joined back.
    """
    base = pl.col("program").str.extract(_PROG_BASE)
    return programs.unique().to_frame("program").with_columns(
        _program_source(base, parsers).alias("_psrc"),
        base.alias("_pbase"),
        pl.col("program").str.split("/").list.last().str.extract(_DAEMON).fill_null("").alias("daemon"),
        pl.col("program").str.extract(r"^[^/]+/(.+)/[^/]+$").alias("service"),
    )


def _full(value, n: int, dtype) -> pl.Series:
    """A column of ``n`` times ``value`` (``new_from_index``: 30x cheaper than ``pl.repeat``)."""
    return pl.Series("", [value], dtype=dtype).new_from_index(0, n)


def _update_rows(df: pl.DataFrame, rows: pl.Series, new: pl.DataFrame) -> pl.DataFrame:
    """``df`` with the columns of ``new`` set at ``rows`` (null values in ``new`` keep the old one)."""
    cols = []
    for name in new.columns:
        value = new[name]
        if name in df.columns:
            old = df[name].gather(rows)
            value = value.cast(old.dtype, strict=False).fill_null(old)
            cols.append(df[name].scatter(rows, value))
        else:
            cols.append(_full(None, df.height, value.dtype).scatter(rows, value).alias(name))
    return df.with_columns(cols)


# A batch of at most SMALL_ROWS lines (``tail`` under a trickle) is prepared and
# matched line by line in Python's ``re``: the vectorized steps cost about 110
# polars calls per batch whatever its size (~15 ms for a few lines). Python's
# ``re`` backtracks where Rust's regex is linear, so lines longer than
# SMALL_LINE bytes, which an attacker could craft, always take the vectorized
# path (the worst pattern found costs ~13 ms on a crafted 1 KB line).
SMALL_ROWS = 256
SMALL_LINE = 1024


def _few(messages: pl.Series, rows: int) -> bool:
    """Whether ``messages`` (at most ``rows`` of them, none longer than SMALL_LINE) go to Python's ``re``."""
    return messages.len() <= rows and (messages.len() == 0 or (messages.str.len_bytes().max() or 0) <= SMALL_LINE)


def _prefix_regex(regex: str) -> str:
    """A source's prefix pattern with the whole prefix as group ``_prefix`` (its length is cut off)."""
    return "^(?P<_prefix>" + regex[1:] + ")"


def _prepare_few(df: pl.DataFrame, parsers: ParserSet) -> pl.DataFrame:
    """``_prepare`` line by line in Python's ``re`` (a small batch: ~10 polars calls per source saved)."""
    n = df.height
    new: dict[str, list] = {}
    for r, (src, prog, pbase, msg) in enumerate(zip(df["_src"].to_list(), df["program"].to_list(),
                                                      df["_pbase"].to_list(), df["message"].to_list())):
        sdef = parsers.sources.get(src) if src is not None else None
        if sdef is None or not (sdef.main_programs or sdef.prefix is not None):
            continue
        if sdef.main_programs and prog is not None and pbase is not None and pbase not in sdef.main_programs:
            msg = prog + ": " + msg if msg is not None else None
        values = {"message": msg}
        if sdef.prefix is not None and msg is not None:
            m = _py_regex(_prefix_regex(sdef.prefix.regex)).match(msg)
            if m is not None:
                values["message"] = msg[len(m.group("_prefix")):]
                for group, column in sdef.prefix.groups.items():
                    if values.get(column) is None:
                        values[column] = m.group(group)
            else:
                for column in sdef.prefix.groups.values():
                    values.setdefault(column, None)
        for column, value in values.items():
            new.setdefault(column, [None] * n)[r] = value
    # as _update_rows: a null new value keeps the old one
    have = df.schema
    return df.with_columns(
        pl.coalesce(pl.lit(pl.Series(c, v, dtype=pl.String).cast(have[c], strict=False)), pl.col(c)).alias(c)
        if c in have else pl.Series(c, v, dtype=pl.String)
        for c, v in new.items()).drop("_pbase")


def _prepare(df: pl.DataFrame, parsers: ParserSet) -> pl.DataFrame:
    """Per source, on its rows only: main_programs rule, prefix strip (captures become columns).

    ``daemon`` (last part of the program name) and ``service`` (the middle of
    ``postfix/submission/smtpd``) come from the program table; a prefix that
    captures them wins. Work on one source's rows is done on those rows only
    (gathered, then scattered back): when/then would evaluate every row.
    """
    if _few(df["message"], SMALL_ROWS):
        return _prepare_few(df, parsers)
    msg = pl.col("message")
    for name, sdef in parsers.sources.items():
        if not sdef.main_programs and sdef.prefix is None:
            continue
        rows = df.select((pl.col("_src") == name).arg_true())[:, 0]
        if not rows.len():
            continue
        sub = df[rows]
        if sdef.main_programs:
            other = ~pl.col("_pbase").is_in(list(sdef.main_programs)) & pl.col("program").is_not_null()
            sub = sub.with_columns(pl.when(other).then(pl.col("program") + ": " + msg).otherwise(msg).alias("message"))
        new = sub.select(msg)
        if sdef.prefix is not None:
            groups = sub.select(msg.str.extract_groups(
                ascii_classes(_prefix_regex(sdef.prefix.regex))).alias("g")).unnest("g")
            # one column may be captured under two group names (user, user__2): first non-null wins
            merged = {"message": sub["message"].str.slice(groups["_prefix"].str.len_chars().fill_null(0))}
            for group, column in sdef.prefix.groups.items():
                merged[column] = groups[group] if column not in merged else merged[column].fill_null(groups[group])
            new = pl.DataFrame(merged)
        df = _update_rows(df, rows, new)
    return df.drop("_pbase")


def _candidates(parsers: ParserSet, src: str | None, daemon: str, token: str) -> tuple[tuple[str, int], ...]:
    """The events (source, index), in file order, that a line of this source, daemon and token can match."""
    sdef = parsers.sources.get(src) if src is not None else None
    return () if sdef is None else tuple(
        (src, i) for i, ev in enumerate(sdef.events)
        if (not ev.daemons or daemon in ev.daemons) and (ev.leads is None or token in ev.leads))


def _dispatch_classes(df: pl.DataFrame, parsers: ParserSet) -> tuple[pl.Series, list[list[tuple[str, int]]]]:
    """Group the lines by the events they can match: (class per row, events per class).

    A line's key is its source, daemon and the first token of its message
    (after the source's ``dispatch_skip``); an event is a candidate for a key
    when its daemons allow the daemon and its lead tokens
    (``patterns.lead_tokens``) contain the token. Lines with the same candidate
    list form one class, so each line meets only the few patterns that could
    match it, in file order. Lines of no known source get an empty class.
    """
    tok = None
    for name, sdef in parsers.sources.items():
        t = pl.when(pl.col("_src") == name).then(pl.col("message")).str.extract(sdef.token_regex, 1)
        tok = t if tok is None else pl.coalesce(tok, t)
    keyed = df.select(pl.col("_src"), pl.col("daemon"), (tok if tok is not None else pl.lit(None, pl.String)).fill_null("").alias("_tok"))
    keys = keyed.unique()
    classes: dict[tuple[tuple[str, int], ...], int] = {}
    key_class = []
    for src, daemon, token in keys.iter_rows():
        key_class.append(classes.setdefault(_candidates(parsers, src, daemon, token), len(classes)))
    keys = keys.with_columns(pl.Series("_cls", key_class, dtype=pl.UInt32))
    cls = keyed.join(keys, on=["_src", "daemon", "_tok"], how="left", maintain_order="left", nulls_equal=True)["_cls"]
    return cls, [list(c) for c in classes]


_EXTRACT: dict[str, pl.Expr] = {}


def _extract(regex: str) -> pl.Expr:
    """The extract_groups expression of a pattern, built once per process.

    Building one compiles the regex (about 0.5 ms); per chunk and pattern that
    added up to a tenth of the parse.
    """
    expr = _EXTRACT.get(regex)
    if expr is None:
        expr = _EXTRACT[regex] = pl.col("message").str.extract_groups(ascii_classes(regex)).alias("g")
    return expr


# Below this many candidate lines (none longer than SMALL_LINE) an event runs in
# Python's ``re`` (compiled once per process) instead of polars, which compiles
# the regex again on every call (about 0.6 ms): rare events cost more to compile
# than to run.
SMALL_BATCH = 48


@functools.lru_cache(maxsize=None)
def _py_regex(regex: str) -> re.Pattern:
    return re.compile(ascii_classes(regex))


def _extract_few(messages: pl.Series, regex: str) -> pl.DataFrame:
    """``extract_groups`` for a handful of rows, with the same nulls (non-participating groups)."""
    rx = _py_regex(regex)
    found = [rx.search(m) if m is not None else None for m in messages.to_list()]
    return pl.DataFrame({g: pl.Series(g, [m.group(g) if m else None for m in found], dtype=pl.String)
                         for g in rx.groupindex})


def _match_few(df: pl.DataFrame, parsers: ParserSet) -> tuple[pl.Series, dict[str, pl.Series]]:
    """``_match`` for a small batch: each line tries its candidate events in order, first match wins."""
    n = df.height
    kinds = ["unparsed"] * n
    fields: dict[str, list] = {}
    cand_cache: dict[tuple, list] = {}
    for r, (src, daemon, msg) in enumerate(zip(df["_src"].to_list(), df["daemon"].to_list(),
                                                 df["message"].to_list())):
        sdef = parsers.sources.get(src) if src is not None else None
        if sdef is None or msg is None:
            continue
        tm = _py_regex(sdef.token_regex).search(msg)
        key = (src, daemon, (tm.group(1) if tm else None) or "")
        events = cand_cache.get(key)
        if events is None:
            events = cand_cache[key] = [sdef.events[i] for _, i in _candidates(parsers, *key)]
        for ev in events:
            m = _py_regex(ev.probe_regex).search(msg)
            if m is None:
                continue
            kinds[r] = ev.kind
            # one column may be captured under two group names: first non-null wins, then the constants
            for column, value in [*((c, m.group(g)) for g, c in ev.compiled.groups.items()), *ev.constants.items()]:
                col = fields.get(column)
                if col is None:
                    col = fields[column] = [None] * n
                if col[r] is None:
                    col[r] = value
            break
    return (pl.Series("kind", kinds, dtype=pl.String),
            {c: pl.Series(c, v, dtype=pl.String) for c, v in fields.items()})


def _match(df: pl.DataFrame, parsers: ParserSet) -> tuple[pl.Series, dict[str, pl.Series]]:
    """Every line's event kind, and the captured fields as full-length columns.

    Events run in file order, each once per batch over the pending lines of all
    dispatch classes that list it (one regex run per event, however many
    classes); first match wins; what is left is ``unparsed``. Each field is
    scattered into its column by row number, so no wide frame is sorted.
    """
    n = df.height
    if _few(df["message"], SMALL_ROWS):
        return _match_few(df, parsers)
    cls, candidates = _dispatch_classes(df, parsers)
    work = df.select("_row", "message").with_columns(cls)
    pending = {c: part.drop("_cls") for (c,), part in work.partition_by("_cls", as_dict=True).items()}
    users: dict[tuple[str, int], list[int]] = {}
    for c, cand in enumerate(candidates):
        if c in pending:
            for key in cand:
                users.setdefault(key, []).append(c)
    rank = {name: n for n, name in enumerate(parsers.sources)}
    kinds: list[str] = []
    kind_rows: list[pl.Series] = []
    pieces: dict[str, list[tuple[pl.Series, pl.Series]]] = {}
    for src, i in sorted(users, key=lambda k: (rank[k[0]], k[1])):
        live = [c for c in users[(src, i)] if pending[c].height]
        if not live:
            continue
        ev = parsers.sources[src].events[i]
        batch = pl.concat([pending[c] for c in live]) if len(live) > 1 else pending[live[0]]
        # The empty sentinel group is non-null exactly on matching rows.
        groups = (_extract_few(batch["message"], ev.probe_regex) if _few(batch["message"], SMALL_BATCH)
                  else batch.select(_extract(ev.probe_regex)).unnest("g"))
        hit = groups["__m"].is_not_null()
        k = hit.sum()
        if not k:
            continue
        offset = 0
        for c in live:
            size = pending[c].height
            pending[c] = pending[c].filter(~hit.slice(offset, size))
            offset += size
        every = k == batch.height
        rows = batch["_row"] if every else batch["_row"].filter(hit)
        kinds.append(ev.kind)
        kind_rows.append(rows)
        cols: dict[str, pl.Series] = {}
        for group, column in ev.compiled.groups.items():
            s = groups[group] if every else groups[group].filter(hit)
            cols[column] = s if column not in cols else cols[column].fill_null(s)
        for column, value in ev.constants.items():
            const = _full(value, k, pl.String)
            cols[column] = cols[column].fill_null(const) if column in cols else const
        for column, s in cols.items():
            pieces.setdefault(column, []).append((rows, s))
    # kind: one small u32 code per row, then a lookup into the names.
    names = kinds + ["unparsed"]
    code = _full(len(kinds), n, pl.UInt32)
    for j, rows in enumerate(kind_rows):
        code = code.scatter(rows, j)
    kind = pl.Series("kind", names, dtype=pl.String).gather(code)
    fields = {}
    for column, parts in pieces.items():
        rows = pl.concat([r for r, _ in parts]) if len(parts) > 1 else parts[0][0]
        vals = pl.concat([v for _, v in parts]) if len(parts) > 1 else parts[0][1]
        fields[column] = _full(None, n, vals.dtype).scatter(rows, vals).alias(column)
    return kind, fields


_DOMAIN = ascii_classes(r"@([^@\s>]+)$")


def _finish(df: pl.DataFrame, target: pl.Schema) -> pl.DataFrame:
    """Derive domains and cast every column to the schema."""
    for addr in ("sender", "recipient"):
        if addr in df.columns:
            derived = pl.col(addr).str.extract(_DOMAIN).str.to_lowercase()
            if f"{addr}_domain" in df.columns:
                derived = pl.coalesce(pl.col(f"{addr}_domain"), derived)
            df = df.with_columns(derived.alias(f"{addr}_domain"))
    if "level" in df.columns:
        df = df.with_columns(pl.col("level").str.to_lowercase().replace({"warn": "warning"}))
    exprs = []
    have = df.schema  # built anew on every access of df.schema: once per column cost 2 ms per batch
    for name, dtype in target.items():
        if name not in have:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
        elif have[name] == dtype:
            exprs.append(pl.col(name))
        else:
            exprs.append(pl.col(name).cast(dtype, strict=False))
    return df.select(exprs)


def parse_lines(
    lines: pl.DataFrame | pl.Series | list[str],
    parsers: ParserSet,
    opts: HeaderOptions | None = None,
    file: str | None = None,
    first_line: int = 1,
    continues: str | None = None,
) -> pl.DataFrame:
    """Parse raw lines (a ``line`` column) into an events frame of the schema.

    ``continues`` is the source of the line before this batch (the previous
    chunk of the same file), for header-less continuation lines at its start.
    """
    opts = opts or HeaderOptions()
    if not isinstance(lines, pl.DataFrame):
        lines = pl.DataFrame({"line": pl.Series("line", lines, dtype=pl.String)})
    target = parsers.schema()
    if lines.height == 0:
        return pl.DataFrame(schema=target)
    df = parse_header(lines.select(pl.col("line").cast(pl.String)), opts)
    df = assign_sources(df, parsers, opts.default_program, continues).with_row_index("_row")
    df = _prepare(df, parsers)
    kind, found = _match(df, parsers)
    # A field an event captured wins over the same column from header or prefix.
    out = df.with_columns(
        kind,
        *(pl.coalesce(s, pl.col(c)).alias(c) for c, s in found.items() if c in df.columns),
        *(s for c, s in found.items() if c not in df.columns),
    )
    known = pl.col("_src").is_not_null()
    guess = _guess_source(pl.when(~known).then(pl.col("program")).fill_null(""), parsers)
    out = out.with_columns(
        pl.when(known).then(pl.col("_src")).otherwise(guess).alias("source"),
        pl.lit(file, dtype=pl.String).alias("file"),
        (pl.col("_row").cast(pl.Int64) + first_line).alias("line"),
    )
    return _finish(out, target)
