"""Syslog header parsing, once for every source, vectorized.

Splits each raw line into ``ts`` (UTC), ``host``, ``program``, ``pid``,
``message`` and a ``hint`` (a source known from the line format alone, e.g.
exim's own mainlog). Formats, by how the line starts:

* BSD/RFC 3164 ``Mmm dd HH:MM:SS host prog[pid]: msg`` (any day padding, with
  or without host, with the year as Cisco ASA writes it) and RFC 3339
  ``2016-03-20T13:30:53.57+01:00 host prog[pid]: msg``: the header ends at the
  first ``": "`` and only that short prefix goes through a regex;
* ``<PRI>`` prefixes and RFC 5424 ``<PRI>1 TS HOST APP PROCID MSGID SD MSG``;
* ``YYYY-MM-DD HH:MM:SS[.fff]`` files: exim mainlog (``[pid]`` optional),
  rspamd (``#pid(worker)``), dovecot ``log_path`` (``proc: Level:``), or a
  syslog header with an ISO date;
* daemontools TAI64N ``@4000...``, rspamd 1.x ``#pid(worker): Mmm dd ...``;
* anything else is a bare message (e.g. ``journalctl -o cat`` output), which
  gets ``default_program`` if one is given.

The year of BSD timestamps is the anchor's (file mtime, or ``--year``); a
timestamp more than a day after the anchor belongs to the year before, which
covers the Dec -> Jan rollover within a file and rotated files of past years.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import polars as pl

from .asciire import ascii_classes

MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

# The whole BSD time stamp is one group: it is taken apart once per distinct value (_BSD_PARTS).
# (the optional year is written so that one look at the next character decides: " 2025 10:" or " 10:")
_MON = r"(?P<bsd>(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d{1,2} \d\d(?:\d\d \d\d)?:\d\d:\d\d)(?:\.\d+)?"
_BSD_PARTS = r"^(?P<mon>\w{3}) +(?P<day>\d{1,2})(?: (?P<year>\d{4}))? (?P<time>\S+)$"
_ISO_T = r"(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
# program names: postfix/submission/smtpd, postfix-mx2/qmgr, auth-worker(123),
# auth(user,ip)<session>; never a Cisco tag (%ASA-...).
_PROG = r"(?P<prog>[A-Za-z0-9_][^\s\[:(%]*(?:\([^)]*\))?(?:<[^>]*>)?)(?:\[(?P<pid>\d+)\])?"
# The part of a BSD/RFC 3339 line before its first ": " is the time stamp, then "[host] program".
# The time stamp is matched on every line (_PRE), the rest (_HOST_PROG) once per distinct value:
# a chunk has few, one per host and process. Together they are what one regex
# (time stamp + _HOST_PROG) matches, at a third of its instructions: that regex had to try
# host-or-program on every line with the regex engine's slowest capture path.
_PRE = rf"^(?P<_ts>{_MON}|{_ISO_T})"
_HOST_PROG = rf"^(?P<_hp_ok>):?(?: (?:(?P<host>\S+) )?{_PROG})? ?$"  # _hp_ok: "" when it matches
# BSD lines whose header has no program (or no ": " at all).
_BSD_NOPROG = rf"^{_MON}:?(?: (?P<host>[^\s:]+))?(?: :)?(?: (?P<msg>.*))?$"
_ISO_SPACE = (
    r"^(?P<isos>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) +"
    r"(?:(?P<dprog>[a-z][\w-]*(?:\([^)]*\))?): (?P<dlevel>Info|Warning|Error|Fatal|Panic|Debug): "
    r"|(?P<host>[^\s\[\]]*[^\s\[\]:]) (?P<prog>[A-Za-z0-9_][^\s\[:(%]*)\[(?P<pid>\d+)\]: "
    r"|#(?P<rpid>\d+)(?P<worker>\(\w+\)) "
    r"|\[(?P<xpid>\d+)\] )?(?P<msg>.*)$"
)
_RFC5424 = (
    r"^1 (?P<iso>\S+) (?P<host>\S+) (?P<prog>\S+) (?P<pid>\S+) (?P<msgid>\S+) "
    r"(?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+) ?(?P<msg>.*)$"
)
_TAI = r"^@(?P<tai>[0-9a-f]{24}) +" + _PROG + r": (?P<msg>.*)$"
_RSPAMD1 = r"^#(?P<pid>\d+)(?P<worker>\(\w+\)): " + _MON + r" (?P<host>\S+) (?P<msg>.*)$"
# "prog: msg", or "host prog[pid]: msg" with the time stamp cut off by a relay.
_BARE_PROG = (r"^(?:(?P<host>[^\s:\[\]]+) (?P<hprog>[A-Za-z0-9_][^\s\[:(%]*)\[(?P<hpid>\d+)\]|"
              + _PROG + r"): (?P<msg>.*)$")

# ASCII \d \s \S: Unicode classes are large automata (the one prefix regex this replaced took
# 38% fewer instructions with ASCII ones). Headers are ASCII where these classes are used.
_PRE, _HOST_PROG, _BSD_NOPROG, _ISO_SPACE, _RFC5424, _TAI, _RSPAMD1, _BARE_PROG, _BSD_PARTS = map(
    ascii_classes, (_PRE, _HOST_PROG, _BSD_NOPROG, _ISO_SPACE, _RFC5424, _TAI, _RSPAMD1, _BARE_PROG, _BSD_PARTS))

_LEVELS = {"Info": "info", "Warning": "warning", "Error": "error", "Fatal": "fatal",
           "Panic": "panic", "Debug": "debug"}


@dataclass
class HeaderOptions:
    """How to read timestamps that carry no year or no zone."""

    tz: str = "UTC"  # IANA zone for zone-less timestamps
    anchor: datetime | None = None  # BSD year anchor (file mtime); None = now
    year: int | None = None  # explicit year for BSD timestamps (--year)
    default_program: str | None = None  # program for bare messages


def _groups(col: pl.Expr, mask: pl.Expr, regex: str) -> pl.Expr:
    """extract_groups on the rows of ``mask`` only (others are null, and skipped)."""
    return pl.when(mask).then(col).str.extract_groups(regex)


def _local_to_utc(naive: pl.Expr, tz: str) -> pl.Expr:
    if tz == "UTC":
        return naive.dt.replace_time_zone("UTC")
    return naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")


# days of each month outside leap years, by its name
_MDAYS = dict(zip(MONTHS, (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)))


def _bsd_fields(uniq: pl.DataFrame) -> pl.DataFrame:
    """Month, day, hour, minute, second of the BSD parts as small ints (``_mo`` ... ``_s``) and the
    month's days (``_mdays``): columns first, so that each later expression stays small (one nested
    expression for the whole date took polars ~13 ms per batch, however few rows)."""
    time_ = pl.col("time")
    return uniq.with_columns(
        pl.col("mon").replace_strict(MONTHS, default=None, return_dtype=pl.Int8).alias("_mo"),
        pl.col("mon").replace_strict(_MDAYS, default=None, return_dtype=pl.Int8).alias("_mdays"),
        pl.col("day").cast(pl.Int8, strict=False).alias("_d"),
        time_.str.slice(0, 2).cast(pl.Int8, strict=False).alias("_h"),
        time_.str.slice(3, 2).cast(pl.Int8, strict=False).alias("_mi"),
        time_.str.slice(6, 2).cast(pl.Int8, strict=False).alias("_s"),
    )


def _bsd_datetimes(uniq: pl.DataFrame, years: dict[str, pl.Expr]) -> pl.DataFrame:
    """Per ``name: year``, column ``name``: the naive datetime of the BSD fields (``_bsd_fields``) in
    that year; impossible dates (Feb 30) are null. A leap second is read as second 59."""
    uniq = uniq.with_columns(year.alias(f"_y{name}") for name, year in years.items())

    def ok(name: str) -> pl.Expr:
        y = pl.col(f"_y{name}")
        leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
        mdays = pl.when((pl.col("_mo") == 2) & leap).then(29).otherwise(pl.col("_mdays"))
        hms = pl.col("_h").is_between(0, 23) & pl.col("_mi").is_between(0, 59) & pl.col("_s").is_between(0, 60)
        return (pl.col("_d").is_between(1, mdays) & hms).alias(f"_ok{name}")

    def naive(name: str) -> pl.Expr:
        ok = pl.col(f"_ok{name}")
        # pl.datetime runs on every row: the rows that are not ok get a valid dummy date
        return pl.when(ok).then(pl.datetime(
            pl.when(ok).then(pl.col(f"_y{name}")).otherwise(2000), pl.when(ok).then(pl.col("_mo")).otherwise(1),
            pl.when(ok).then(pl.col("_d")).otherwise(1), pl.when(ok).then(pl.col("_h")).otherwise(0),
            pl.when(ok).then(pl.col("_mi")).otherwise(0), pl.when(ok).then(pl.col("_s").clip(0, 59)).otherwise(0),
            time_unit="us")).alias(name)

    uniq = uniq.with_columns(ok(name) for name in years)
    return uniq.with_columns(naive(name) for name in years)


def _iso_to_utc(iso: pl.Expr, tz: str) -> pl.Expr:
    """RFC 3339 / ISO 8601 with or without offset; zone-less ones are local."""
    iso = iso.str.replace(r"Z$", "+00:00").str.replace(r"([+-]\d\d)(\d\d)$", "$1:$2")
    with_zone = iso.str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%S%.f%:z", strict=False)
    naive = iso.str.replace("T", " ", literal=True).str.strptime(
        pl.Datetime("us"), "%Y-%m-%d %H:%M:%S%.f", strict=False)
    return pl.coalesce(with_zone, _local_to_utc(naive, tz))


def _timestamps(df: pl.DataFrame, opts: HeaderOptions, anchor: datetime) -> pl.Series:
    """UTC timestamps from the time stamp text (``_tstext``), computed once per run of equal values.

    Busy logs repeat the same second many times in a row, so the date
    arithmetic runs once per run (``rle``) and is gathered back by run id,
    which is cheaper than hashing every row for a unique-and-join. The text's
    shape says its format: a month name (BSD), ``T`` or a space after the date
    (RFC 3339, ISO with a space), 24 hex digits (TAI64N). A format no line of
    the batch has costs nothing.
    """
    text = df["_tstext"]
    run = text.rle_id()
    uniq = text.rle().struct.field("value").to_frame("_tstext")
    t = pl.col("_tstext")
    is_bsd = t.str.slice(0, 1).is_in(list("ADFJMNOS"))
    uniq = uniq.with_columns(
        pl.when(is_bsd).then(t).str.extract_groups(_BSD_PARTS).alias("_p"),
        pl.when(~is_bsd & (t.str.slice(10, 1) == "T")).then(t).alias("_iso"),
        pl.when(~is_bsd & (t.str.slice(10, 1) == " ")).then(t).alias("_isos_ts"),
        pl.when(~is_bsd & (t.str.len_bytes() == 24) & (t.str.slice(4, 1) != "-")).then(t).alias("_tai_ts"),
    ).unnest("_p").with_columns(pl.col("year").cast(pl.Int32, strict=False))
    found = [c for c in ("mon", "_iso", "_isos_ts", "_tai_ts") if uniq[c].null_count() < uniq.height]
    branches = []
    if "mon" in found:
        year_ = pl.col("year")
        uniq = _bsd_fields(uniq)
        if opts.year is not None:
            uniq = _bsd_datetimes(uniq, {"_this": pl.coalesce(year_, pl.lit(opts.year, dtype=pl.Int32))})
            bsd = _local_to_utc(pl.col("_this"), opts.tz)
        else:
            y = pl.lit(anchor.year, dtype=pl.Int32)
            uniq = _bsd_datetimes(uniq, {"_this": pl.coalesce(year_, y), "_last": y - 1})
            uniq = uniq.with_columns(_local_to_utc(pl.col("_this"), opts.tz).alias("_this"),
                                     _local_to_utc(pl.col("_last"), opts.tz).alias("_last"),
                                     pl.col("_this").is_null().alias("_no_date"))
            limit = pl.lit(anchor.astimezone(timezone.utc).replace(tzinfo=None)).dt.replace_time_zone("UTC") + pl.duration(days=1)
            # a Feb 29 that does not exist this year is last year's (a leap year); a local time in this
            # year's DST gap is not
            later = pl.col("_no_date") | (pl.col("_this") > limit)
            bsd = pl.when(year_.is_null() & later).then(pl.col("_last")).otherwise(pl.col("_this"))
        branches.append(pl.when(pl.col("mon").is_not_null()).then(bsd))
    if "_iso" in found:
        branches.append(pl.when(pl.col("_iso").is_not_null()).then(_iso_to_utc(pl.col("_iso"), opts.tz)))
    if "_isos_ts" in found:
        isos_ts = _local_to_utc(pl.col("_isos_ts").str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S%.f", strict=False), opts.tz)
        branches.append(pl.when(pl.col("_isos_ts").is_not_null()).then(isos_ts))
    if "_tai_ts" in found:
        tai_secs = pl.col("_tai_ts").str.slice(1, 15).str.to_integer(base=16, strict=False) - 10
        tai_ts = pl.from_epoch(tai_secs, time_unit="s").dt.cast_time_unit("us").dt.replace_time_zone("UTC")
        branches.append(pl.when(pl.col("_tai_ts").is_not_null()).then(tai_ts))
    if not branches:
        return pl.Series("ts", [None], dtype=pl.Datetime("us", "UTC")).new_from_index(0, len(text))
    return uniq.select(pl.coalesce(branches).cast(pl.Datetime("us", "UTC")).alias("ts"))["ts"].gather(run)


def parse_header(lines: pl.DataFrame, opts: HeaderOptions) -> pl.DataFrame:
    """Add ts, host, program, pid, message, level and hint columns to a frame with ``line``."""
    anchor = opts.anchor or datetime.now(timezone.utc)
    L = pl.col("_l")
    has_pri = pl.col("line").str.starts_with("<").fill_null(False)
    # <PRI> prefix: strip it, remember that the rest may be RFC 5424 (the replace copies every
    # string, so it runs only when the batch has such lines).
    line = pl.col("line").fill_null("")
    df = lines.select(line, has_pri.alias("_pri"))
    df = df.with_columns(pl.when(has_pri).then(line.str.replace(r"^<\d{1,3}>", "")).otherwise(line).alias("_l")
                         if df["_pri"].any() else line.alias("_l"))
    first = L.str.slice(0, 1)
    df = df.with_columns(
        (first.is_in(list("0123456789")) & (L.str.slice(10, 1) == " ") & L.str.contains(r"^\d{4}-\d\d-\d\d \d")).alias("_f_isos"),
        (pl.col("_pri") & L.str.starts_with("1 ")).alias("_f_5424"),
        (first == "@").alias("_f_tai"),
        (first == "#").alias("_f_rsp1"),
        L.str.find(": ", literal=True).alias("_cut"),
    )
    df = df.with_columns(L.str.slice(0, pl.col("_cut")).alias("_head"))  # the part before the first ": "
    present = df.select(pl.col("_f_isos", "_f_5424", "_f_tai", "_f_rsp1").any()).row(0, named=True)
    # BSD and RFC 3339: cut at the first ": " and match only the short prefix.
    synt = ~pl.col("_f_isos") & ~pl.col("_f_5424") & ~pl.col("_f_tai") & ~pl.col("_f_rsp1")
    df = df.with_columns(
        _groups(pl.col("_head"), synt & pl.col("_cut").is_not_null(), _PRE).alias("_pre"),
    ).unnest("_pre")
    df = df.with_columns(pl.col("_head").str.slice(pl.col("_ts").str.len_chars()).alias("_rest"))
    rest = df.select(pl.col("_rest").unique()).with_columns(
        pl.col("_rest").str.extract_groups(_HOST_PROG).alias("_hp")).unnest("_hp")
    df = df.join(rest, on="_rest", how="left", maintain_order="left")
    # a rest that is no "[host] program": the prefix does not match (the line is read otherwise)
    df = df.with_columns(pl.when(pl.col("_hp_ok").is_not_null()).then(pl.col(c)).alias(c) for c in ("bsd", "iso"))
    pre_ok = pl.col("bsd").is_not_null() | pl.col("iso").is_not_null()
    # "host : msg" (Cisco) leaves a trailing space before ": ": that token is the host.
    host_only = pre_ok & pl.col("host").is_null() & pl.col("_head").str.ends_with(" ")
    df = df.with_columns(
        pl.when(host_only).then(pl.col("prog")).otherwise(pl.col("host")).alias("host"),
        pl.when(host_only).then(None).otherwise(pl.col("prog")).alias("prog"),
        pl.when(pre_ok).then(L.str.slice(pl.col("_cut") + 2)).alias("msg"),
        (synt & ~pre_ok & first.is_in(list("ADFJMNOS"))).alias("_f_nop"),
    )
    present["_f_nop"] = df["_f_nop"].any()
    # The rarer formats: one regex each, only when the batch has such lines.
    extra = {"_f_nop": ("_nop", _BSD_NOPROG), "_f_isos": ("_isos", _ISO_SPACE), "_f_5424": ("_5424", _RFC5424),
             "_f_tai": ("_tai", _TAI), "_f_rsp1": ("_rsp1", _RSPAMD1)}
    df = df.with_columns(_groups(L, pl.col(flag), regex).alias(name)
                         for flag, (name, regex) in extra.items() if present[flag])
    have = {name for flag, (name, _) in extra.items() if present[flag]}

    def f(struct: str, field: str) -> pl.Expr:
        return pl.col(struct).struct.field(field) if struct in have else pl.lit(None, dtype=pl.String)

    none = pl.lit(None, dtype=pl.String)
    isos_worker = pl.when(f("_isos", "worker").is_not_null()).then(f("_isos", "worker") + " " + f("_isos", "msg")).otherwise(f("_isos", "msg"))
    rsp1_msg = pl.when(f("_rsp1", "worker").is_not_null()).then(f("_rsp1", "worker") + " " + f("_rsp1", "msg"))
    hint = (pl.when(f("_isos", "xpid").is_not_null() | (pl.col("_f_isos") & f("_isos", "prog").is_null() & f("_isos", "rpid").is_null() & f("_isos", "dprog").is_null()))
            .then(pl.lit("exim")).when(f("_isos", "dprog").is_not_null()).then(pl.lit("dovecot"))
            .when(f("_isos", "rpid").is_not_null() | f("_rsp1", "pid").is_not_null()).then(pl.lit("rspamd"))
            .otherwise(none)) if have & {"_isos", "_rsp1"} else none
    df = df.with_columns(
        pl.coalesce(pl.col("bsd"), f("_nop", "bsd"), f("_rsp1", "bsd"), pl.col("iso"), f("_5424", "iso"),
                    f("_isos", "isos"), f("_tai", "tai")).alias("_tstext"),
        pl.coalesce(pl.col("host"), f("_nop", "host"), f("_isos", "host"), f("_5424", "host"), f("_rsp1", "host")).alias("host"),
        pl.coalesce(pl.col("prog"), f("_isos", "prog"), f("_isos", "dprog"), f("_5424", "prog"), f("_tai", "prog"),
                    pl.when(f("_isos", "rpid").is_not_null() | f("_rsp1", "pid").is_not_null()).then(pl.lit("rspamd"))).alias("program"),
        pl.coalesce(pl.col("pid"), f("_isos", "pid"), f("_isos", "rpid"), f("_isos", "xpid"), f("_5424", "pid"),
                    f("_tai", "pid"), f("_rsp1", "pid")).cast(pl.Int64, strict=False).alias("pid"),
        pl.coalesce(pl.col("msg"), f("_nop", "msg"), isos_worker, f("_5424", "msg"), f("_tai", "msg"), rsp1_msg, L).alias("message"),
        f("_isos", "dlevel").replace_strict(_LEVELS, default=None, return_dtype=pl.String).alias("level"),
        hint.alias("hint"),
    )
    df = df.with_columns(_timestamps(df, opts, anchor).alias("ts"))
    # Bare messages: "prog: msg" where prog may be a known daemon (the engine decides).
    bare = pl.col("ts").is_null() & pl.col("program").is_null()
    df = df.with_columns(bare.alias("_bare"))
    out = df.select("line", "ts", "host", "program", "pid", "message", "level", "hint", "_bare")
    if not out["_bare"].any():
        return out.with_columns(pl.lit(None, dtype=pl.String).alias("_bare_program"),
                                pl.lit(None, dtype=pl.Int64).alias("_bare_pid"),
                                pl.lit(None, dtype=pl.String).alias("_bare_message"))
    b = _groups(pl.col("message"), pl.col("_bare"), _BARE_PROG).struct
    return out.with_columns(
        pl.coalesce(b.field("hprog"), b.field("prog")).alias("_bare_program"),
        pl.coalesce(b.field("hpid"), b.field("pid")).cast(pl.Int64, strict=False).alias("_bare_pid"),
        b.field("msg").alias("_bare_message"),
        pl.coalesce(pl.col("host"), b.field("host")).alias("host"),
    )
