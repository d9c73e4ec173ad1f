"""Views: pure functions from an events frame to small frames.

Every view here returns *partial* tables that can be added up: the report
(and later metrics, alerts and the weekly e-mail) feeds events chunk by chunk,
merges the partials with ``merge`` and finishes them once at the end, so
memory depends on the number of distinct keys, never on the number of lines.

Merge rule, by column name: ``first_seen``/``*_min`` take the minimum,
``last_seen``/``*_max`` the maximum, ``example`` the smallest value (the same on every run),
other numeric columns are summed, and every remaining column is a key.
"""

from __future__ import annotations

import polars as pl

_NUMERIC = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64,
            pl.Float32, pl.Float64)


def _agg_for(name: str, dtype: pl.DataType) -> pl.Expr | None:
    if name == "first_seen" or name.endswith("_min"):
        return pl.col(name).min()
    if name == "last_seen" or name.endswith("_max"):
        return pl.col(name).max()
    if name == "example":
        return pl.col(name).min()
    if isinstance(dtype, _NUMERIC) or dtype in _NUMERIC:
        return pl.col(name).sum()
    return None


def merge(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Add up partial tables of one view (same columns) by their key columns."""
    frames = [f for f in frames if f is not None and f.height]
    if not frames:
        return pl.DataFrame()
    df = pl.concat(frames, how="diagonal_relaxed")
    aggs, keys = [], []
    for name, dtype in df.schema.items():
        agg = _agg_for(name, dtype)
        (aggs if agg is not None else keys).append(agg if agg is not None else name)
    if not keys:
        return df.select(aggs)
    return df.group_by(keys, maintain_order=True).agg(aggs)


def count(df: pl.DataFrame, keys: list[str], name: str = "count") -> pl.DataFrame:
    """Rows per key (with first and last time seen)."""
    if df.height == 0:
        return pl.DataFrame()
    return df.group_by(keys).agg(pl.len().cast(pl.Int64).alias(name),
                                 pl.col("ts").min().alias("first_seen"), pl.col("ts").max().alias("last_seen"))


def ranked(df: pl.DataFrame, by: str = "count", top: int | None = None) -> pl.DataFrame:
    """Largest ``by`` first; ties in the order of the other (scalar) columns, so a report is the same on every run."""
    ties = [c for c, t in df.schema.items() if c != by and not isinstance(t, (pl.List, pl.Struct, pl.Array))]
    out = df.sort([by, *ties], descending=[True] + [False] * len(ties), nulls_last=True)
    return out if top is None else out.head(top)


def of_kind(events: pl.DataFrame, *kinds: str) -> pl.DataFrame:
    return events.filter(pl.col("kind").is_in(list(kinds)))


def network(ip: pl.Expr) -> pl.Expr:
    """The /24 of an IPv4 address or the /64 of an IPv6 address, as text (e.g. ``192.0.2.0/24``)."""
    v4 = ip.str.extract(r"^(\d{1,3}\.\d{1,3}\.\d{1,3})\.\d{1,3}$") + ".0/24"
    v6 = pl.when(ip.str.contains(":")).then(
        # groups before any "::" are the leading ones; the /64 is the first four
        ip.str.to_lowercase().str.split("::").list.first().str.split(":").list.head(4).list.join(":") + "::/64")
    return pl.coalesce(v4, v6)
