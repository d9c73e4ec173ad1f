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
"""

from __future__ import annotations

import polars as pl

from .header import HeaderOptions, parse_header
from .parsers import ParserSet, SourceDef

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
    prog_base = pl.col("program").str.extract(_PROG_BASE)
    src = pl.coalesce(_program_source(prog_base, parsers), pl.col("hint"))
    if any(s.markers for s in parsers.sources.values()):
        src = pl.coalesce(src, pl.when(pl.col("program").is_null() | src.is_null()).then(_marker_source(pl.col("message"), parsers)))
    df = df.with_columns(src.alias("_src"))
    # Lines without any header continue the entry above them (exim's multi-line
    # entries, rejectlog envelope and header lines): they belong to its source.
    headerless = pl.col("ts").is_null() & pl.col("program").is_null() & pl.col("_src").is_null()
    df = df.with_columns(
        pl.when(headerless).then(pl.col("_src").forward_fill().fill_null(pl.lit(continues, dtype=pl.String))).otherwise(pl.col("_src")).alias("_src")
    )
    return df.drop("hint")


def _prepare(part: pl.DataFrame, sdef: SourceDef) -> pl.DataFrame:
    """Per source: main_programs rule, prefix strip (its captures become columns), daemon, service."""
    msg = pl.col("message")
    if sdef.main_programs:
        base = pl.col("program").str.extract(_PROG_BASE)
        part = part.with_columns(
            pl.when(pl.col("program").is_not_null() & ~base.is_in(list(sdef.main_programs)))
            .then(pl.col("program") + ": " + msg).otherwise(msg).alias("message")
        )
    captured: dict[str, pl.Series] = {}
    if sdef.prefix is not None:
        regex = "^(?P<_prefix>" + sdef.prefix.regex[1:] + ")"
        groups = part.select(msg.str.extract_groups(regex).alias("g")).unnest("g")
        part = part.with_columns(msg.str.slice(groups["_prefix"].str.len_chars().fill_null(0)).alias("message"))
        for group, column in sdef.prefix.groups.items():
            s = groups[group].alias(column)
            captured[column] = s if column not in captured else captured[column].fill_null(s)
    daemon = pl.col("program").str.split("/").list.last().str.extract(_DAEMON).fill_null("")
    if "daemon" in captured:
        daemon = pl.coalesce(pl.lit(captured.pop("daemon")), daemon)
    part = part.with_columns(
        daemon.alias("daemon"),
        pl.col("program").str.extract(r"^[^/]+/(.+)/[^/]+$").alias("service"),
    )
    # prefix captures of header columns (pid) fill gaps; others are new columns.
    return part.with_columns(
        pl.coalesce(pl.lit(s), pl.col(c)).alias(c) if c in part.columns else pl.lit(s)
        for c, s in captured.items()
    )


def _match_source(part: pl.DataFrame, sdef: SourceDef) -> list[pl.DataFrame]:
    """Run the events of one source over its lines: matched frames + the unmatched rest."""
    out: list[pl.DataFrame] = []
    daemon_groups = part.partition_by("daemon", as_dict=True, maintain_order=False)
    for (daemon,), pending in daemon_groups.items():
        for ev in sdef.events:
            if pending.height == 0:
                break
            if ev.daemons and daemon not in ev.daemons:
                continue
            hit = pending.select(pl.col("message").str.contains(ev.compiled.regex).fill_null(False)).to_series()
            n = hit.sum()
            if not n:
                continue
            matched = pending.filter(hit)
            pending = pending.filter(~hit) if n < pending.height else pending.clear()
            groups = matched.select(pl.col("message").str.extract_groups(ev.compiled.regex).alias("g")).unnest("g")
            cols = {"_row": matched["_row"], "kind": pl.Series("kind", [ev.kind] * matched.height)}
            for group, column in ev.compiled.groups.items():
                s = groups[group]
                cols[column] = s if column not in cols else cols[column].fill_null(s)
            frame = pl.DataFrame(cols)
            if ev.constants:
                frame = frame.with_columns(
                    *(pl.lit(v).alias(k) for k, v in ev.constants.items() if k not in ev.compiled.columns),
                    *(pl.col(k).fill_null(pl.lit(v)) for k, v in ev.constants.items() if k in ev.compiled.columns),
                )
            out.append(frame)
        if pending.height:
            out.append(pending.select("_row").with_columns(pl.lit("unparsed").alias("kind")))
    return out


def _finish(df: pl.DataFrame, target: pl.Schema) -> pl.DataFrame:
    """Derive domains and cast every column to the schema."""
    for addr in ("sender", "recipient"):
        if addr in df.columns:
            derived = pl.col(addr).str.extract(r"@([^@\s>]+)$").str.to_lowercase()
            if f"{addr}_domain" in df.columns:
                derived = pl.coalesce(pl.col(f"{addr}_domain"), derived)
            df = df.with_columns(derived.alias(f"{addr}_domain"))
    if "level" in df.columns:
        df = df.with_columns(pl.col("level").str.to_lowercase().replace({"warn": "warning"}))
    exprs = []
    for name, dtype in target.items():
        if name not in df.columns:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
        elif df.schema[name] == dtype:
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
    prepared: list[pl.DataFrame] = []
    fields: list[pl.DataFrame] = []
    for (src,), part in df.partition_by("_src", as_dict=True).items():
        sdef = parsers.sources.get(src) if src is not None else None
        if sdef is None:
            prepared.append(part)
            fields.append(part.select("_row", pl.lit("unparsed").alias("kind")))
            continue
        part = _prepare(part, sdef)
        prepared.append(part)
        fields.extend(_match_source(part.select("_row", "daemon", "message"), sdef))
    base = pl.concat(prepared, how="diagonal_relaxed")
    found = pl.concat(fields, how="diagonal_relaxed")
    # A field an event captured wins over the same column from header or prefix.
    shared = [c for c in found.columns if c in base.columns and c != "_row"]
    out = base.join(found, on="_row", how="left", suffix="_ev").with_columns(
        pl.coalesce(pl.col(f"{c}_ev"), pl.col(c)).alias(c) for c in shared
    ).drop([f"{c}_ev" for c in shared]).sort("_row")
    src = pl.coalesce(pl.col("_src"), _guess_source(pl.col("program").fill_null(""), parsers))
    out = out.with_columns(
        src.alias("source"),
        pl.lit(file, dtype=pl.String).alias("file"),
        (pl.col("_row").cast(pl.Int64) + first_line).alias("line"),
    )
    return _finish(out, target)
