"""Correlate: stitch lines into the units operators reason about, chunk by chunk, with bounded state.

* ``PostfixMessages``: per (host, queue id) what is known of a message (how it
  entered, sender, size, nrcpt, client, rspamd action) until qmgr logs
  ``removed`` or the entry is older than ``max_age`` (postfix's default
  maximal_queue_lifetime is 5 days).
* ``SmtpdSessions``: postfix smtpd sessions, keyed by host, program (so
  ``postfix/submission/smtpd`` is its own service) and process id, from
  ``connect from`` to ``disconnect from``; lines of sessions still open at
  the end of a chunk are carried into the next one, and sessions never closed
  expire after ``max_age``.

* ``SmtpTls``: postfix smtp deliveries with the TLS session their process
  established to the same relay just before; the last session per process is
  carried across chunks.
* ``SpamVerdicts``: rspamd's spam verdicts that the MTA did not itself reject
  (no milter-reject of the same queue id), held for one chunk so that a
  verdict and its reject on either side of a chunk boundary still meet.

All tolerate input that starts or ends in the middle of a unit and count
what they could not attribute instead of guessing.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

_KEY = ["host", "queue_id"]
# what PostfixMessages reads of the events (a filter copies every column of its frame: narrow first)
_MESSAGE_COLUMNS = ["ts", "host", "source", "kind", "daemon", "queue_id", "sender", "size", "client_host",
                    "client_ip", "relay_host", "relay_ip", "status", "transport", "reply", "dsn", "recipient",
                    "delay", "delays", "action"]
_MSG_KINDS = ["smtpd_client", "pickup", "qmgr_from", "qmgr_removed", "cleanup_message_id"]


def _kind_is(*kinds: str) -> pl.Expr:
    return pl.col("kind").is_in(list(kinds))


_TLS_COLS = {"_tls_relay": "relay_host", "_trust": "tls_trust", "_proto": "tls_protocol", "_cipher": "tls_cipher"}


class SpamVerdicts:
    """rspamd verdicts that flag spam, minus those the MTA rejected (counted once, as the MTA's reject).

    ``feed(verdicts, rejected_ids)`` takes a chunk's flagged verdicts and the
    queue ids of the MTA's rejects in the same chunk, and returns the verdicts
    of the chunk before that no reject of either chunk claimed. rspamd and the
    MTA log the two lines milliseconds apart, in either order, so one chunk of
    hold suffices; state is one chunk's verdicts and reject ids.
    """

    def __init__(self):
        self.held: pl.DataFrame | None = None
        self.prev_ids = pl.Series("queue_id", [], dtype=pl.String)

    def feed(self, verdicts: pl.DataFrame, rejected_ids: pl.Series, final: bool = False) -> pl.DataFrame | None:
        ids = rejected_ids.drop_nulls().unique().alias("queue_id")
        out = self._unclaimed(self.held, ids)
        both = pl.concat([self.prev_ids, ids]).unique()
        self.held, self.prev_ids = self._unclaimed(verdicts, both), ids
        if final:
            rest, self.held = self.held, None
            out = rest if out is None else (out if rest is None else pl.concat([out, rest]))
        return out

    @staticmethod
    def _unclaimed(verdicts: pl.DataFrame | None, ids: pl.Series) -> pl.DataFrame | None:
        if verdicts is None or not verdicts.height:
            return None
        return verdicts.filter(pl.col("queue_id").is_null() | ~pl.col("queue_id").is_in(ids.implode()))


class SmtpTls:
    """Outbound smtp deliveries with ``tls_trust``/``tls_protocol``/``tls_cipher`` (null = plaintext).

    postfix logs ``Trusted TLS connection established to mx[ip]:25: TLSv1.3 ...``
    once per connection and then the deliveries over it, all from the same
    smtp process; a delivery to that relay by that process used that session.
    The session of each process is carried into the next chunk (the TLS line
    may end one chunk and the delivery start the next) and forgotten after
    ``max_age`` without use, so state stays bounded by live smtp processes.
    """

    def __init__(self, max_age: timedelta = timedelta(hours=1)):
        self.max_age = max_age
        self.last = pl.DataFrame(schema={"host": pl.String, "pid": pl.Int64, **{c: pl.String for c in _TLS_COLS},
                                         "_seen": pl.Datetime("us", "UTC")})

    def feed(self, events: pl.DataFrame) -> pl.DataFrame:
        rows = events.select(
            "ts", "host", "pid", pl.col("kind").cast(pl.String), "relay_host", "relay_ip",
            pl.col("tls_trust").cast(pl.String), "tls_protocol", "tls_cipher", "status", "transport", "source", "daemon",
        ).filter((pl.col("source") == "postfix") & (pl.col("daemon") == "smtp")
                 & _kind_is("tls_out", "delivery")).drop("source", "daemon")
        if rows.height == 0:
            return rows
        is_tls = pl.col("kind") == "tls_out"
        rows = rows.with_row_index("_i").with_columns(
            *(pl.when(is_tls).then(pl.col(src)).alias(dst) for dst, src in _TLS_COLS.items()),
            pl.when(is_tls).then(pl.col("ts")).alias("_seen"))
        # the carried sessions go first in each process's run, so forward fill continues them
        carried = self.last.with_columns(pl.lit(None, pl.UInt32).alias("_i"))
        both = pl.concat([carried, rows], how="diagonal_relaxed").with_columns(
            *(pl.col(c).forward_fill().over(["host", "pid"]) for c in [*_TLS_COLS, "_seen"]))
        both = both.with_columns(pl.when(pl.col("kind") == "delivery").then(pl.col("ts")).otherwise(pl.col("_seen"))
                                 .forward_fill().over(["host", "pid"]).alias("_used"))
        newest = both["ts"].max()
        self.last = (both.filter(pl.col("_tls_relay").is_not_null()).group_by("host", "pid").agg(
            *(pl.col(c).last() for c in _TLS_COLS), pl.col("_used").max().alias("_seen"))
            .filter(pl.col("_seen") >= newest - self.max_age if newest is not None else pl.lit(True)))
        same = pl.col("_tls_relay") == pl.col("relay_host")
        return both.filter(pl.col("_i").is_not_null() & (pl.col("kind") == "delivery")).sort("_i").with_columns(
            pl.when(same).then(pl.col("_trust")).alias("tls_trust"),
            pl.when(same).then(pl.col("_proto")).alias("tls_protocol"),
            pl.when(same).then(pl.col("_cipher")).alias("tls_cipher"),
        ).select(rows.columns[1:12])


class PostfixMessages:
    """Bounded per-queue-id state; ``feed`` returns what each chunk adds to the traffic totals."""

    def __init__(self, max_age: timedelta = timedelta(days=6)):
        self.max_age = max_age
        self.state = pl.DataFrame(schema={
            "host": pl.String, "queue_id": pl.String, "received": pl.Boolean, "sender": pl.String,
            "size": pl.Int64, "counted": pl.Boolean, "first_seen": pl.Datetime("us", "UTC"),
            "last_seen": pl.Datetime("us", "UTC")})
        self.expired = 0  # queue ids dropped without "removed" (older than max_age)
        self.completed = 0  # messages seen through to "removed"

    def feed(self, events: pl.DataFrame) -> dict[str, pl.DataFrame]:
        """Update the state with one chunk of events (any sources).

        Returns ``received_bytes`` (one row per message counted as received:
        sender, size; the pflogsumm definition: a message whose ``client=`` or
        pickup line and qmgr ``from=<..>, size=`` line were both seen) and
        ``deliveries`` (the chunk's delivery events with the message's size,
        null where the message started before the input).
        """
        pf = events.select(_MESSAGE_COLUMNS).filter((pl.col("source") == "postfix") & pl.col("queue_id").is_not_null())
        info = pf.filter(_kind_is(*_MSG_KINDS)).group_by(_KEY).agg(
            _kind_is("smtpd_client", "pickup").any().alias("received"),
            pl.col("sender").filter(pl.col("kind") == "qmgr_from").first().alias("sender"),
            pl.col("size").filter(pl.col("kind") == "qmgr_from").first().cast(pl.Int64).alias("size"),
            pl.lit(False).alias("counted"),
            pl.col("ts").min().alias("first_seen"), pl.col("ts").max().alias("last_seen"),
        )
        state = pl.concat([self.state, info], how="vertical_relaxed").group_by(_KEY, maintain_order=True).agg(
            pl.col("received").any(), pl.col("sender").drop_nulls().first(), pl.col("size").drop_nulls().first(),
            pl.col("counted").any(), pl.col("first_seen").min(), pl.col("last_seen").max(),
        )
        newly = (pl.col("received") & pl.col("size").is_not_null() & ~pl.col("counted"))
        received = state.filter(newly).select("sender", "size", "first_seen")
        state = state.with_columns((pl.col("counted") | newly).alias("counted"))
        deliveries = pf.filter(pl.col("kind") == "delivery").join(
            state.select(_KEY + [pl.col("size").alias("msg_size")]), on=_KEY, how="left")
        removed = pf.filter(pl.col("kind") == "qmgr_removed").select(_KEY).unique()
        self.completed += removed.height
        state = state.join(removed, on=_KEY, how="anti")
        newest = events["ts"].max()
        if newest is not None:
            old = state["last_seen"] < newest - self.max_age
            self.expired += int(old.sum())
            state = state.filter(~old)
        self.state = state
        return {"received_bytes": received, "deliveries": deliveries}

    @property
    def open(self) -> int:
        """Messages still in the queue at the end of the input (or whose end is not in it)."""
        return self.state.height


_SESSION_KINDS = ["smtpd_connect", "smtpd_disconnect", "tls_in", "smtpd_client", "reject",
                  "sasl_auth_failed", "smtpd_lost_connection", "smtpd_timeout"]
_SKEY = ["host", "program", "pid"]


class SmtpdSessions:
    """postfix smtpd sessions, one row each, across chunk boundaries."""

    def __init__(self, max_age: timedelta = timedelta(hours=1)):
        self.max_age = max_age
        self.carry: pl.DataFrame | None = None
        self.seq = 0

    def _rows(self, events: pl.DataFrame) -> pl.DataFrame:
        rows = events.select(
            "ts", "host", "program", "pid", "service", pl.col("kind").cast(pl.String), "client_host", "client_ip",
            "tls_protocol", "tls_cipher", "tls_trust", "sasl_method", "sasl_username", "commands", "source", "daemon",
        ).filter((pl.col("source") == "postfix") & (pl.col("daemon") == "smtpd")
                 & _kind_is(*_SESSION_KINDS)).drop("source", "daemon")
        rows = rows.with_columns(pl.int_range(self.seq, self.seq + rows.height, dtype=pl.Int64).alias("_seq"))
        self.seq += rows.height
        return rows

    def feed(self, events: pl.DataFrame, final: bool = False) -> pl.DataFrame:
        """Sessions that ended (or expired) in this chunk; ``final`` flushes the open ones too."""
        rows = self._rows(events)
        if self.carry is not None and self.carry.height:
            rows = pl.concat([self.carry, rows], how="vertical_relaxed")
        if rows.height == 0:
            return pl.DataFrame()
        rows = rows.sort(_SKEY + ["_seq"], nulls_last=True).with_columns(
            (pl.col("kind") == "smtpd_connect").cum_sum().over(_SKEY).alias("_n"))
        sessions = rows.group_by(_SKEY + ["_n"]).agg(
            pl.col("service").first(),
            pl.col("ts").filter(pl.col("kind") == "smtpd_connect").first().alias("start"),
            pl.col("ts").min().alias("first_seen"), pl.col("ts").max().alias("last_seen"),
            pl.col("_seq").max().alias("_last_seq"),
            pl.col("client_host").drop_nulls().first(), pl.col("client_ip").drop_nulls().first(),
            (pl.col("kind") == "tls_in").any().alias("tls"),
            pl.col("tls_protocol").drop_nulls().first(), pl.col("tls_cipher").drop_nulls().first(),
            pl.col("tls_trust").drop_nulls().first(),
            pl.col("sasl_method").drop_nulls().first(), pl.col("sasl_username").drop_nulls().first(),
            (pl.col("kind") == "smtpd_client").sum().cast(pl.Int64).alias("messages"),
            (pl.col("kind") == "reject").sum().cast(pl.Int64).alias("rejects"),
            (pl.col("kind") == "sasl_auth_failed").sum().cast(pl.Int64).alias("auth_failures"),
            pl.col("commands").filter(pl.col("kind") == "smtpd_disconnect").last(),
            (pl.col("kind") == "smtpd_disconnect").any().alias("closed"),
        ).with_columns(
            (pl.col("_n") == 0).alias("started_before_input"),
            # command counts: "auth=1" or "auth=0/1" (failed/attempted): SASL was used when the first number > 0
            pl.col("commands").str.extract(r"\bauth=(\d+)").cast(pl.Int64, strict=False).alias("auth_ok"),
            pl.col("commands").str.contains(r"\bstarttls=[1-9]").fill_null(False).alias("starttls"),
        )
        newest = rows["ts"].max()
        # A session is over at its disconnect, or when a newer session of the same process started.
        latest = pl.col("_n") == pl.col("_n").max().over(_SKEY)
        stale = pl.col("last_seen") < (newest - self.max_age) if newest is not None else pl.lit(False)
        done = pl.col("closed") | ~latest | stale | pl.lit(final)
        finished = sessions.filter(done)
        still = sessions.filter(~done).select(_SKEY + ["_n"])
        self.carry = rows.join(still, on=_SKEY + ["_n"], how="semi").drop("_n")
        return finished.drop("_n", "_last_seq")


class Units:
    """Generic stitching by a key until a closing line: exim messages, dovecot login sessions.

    ``aggs`` are polars aggregations over a unit's lines; a unit is emitted when
    one of its lines is of a ``closing`` kind, when it is older than
    ``max_age``, or at the end (``final``). Open units' lines are carried.
    """

    def __init__(self, source: str, key: list[str], kinds: list[str], closing: list[str],
                 aggs: list[pl.Expr], max_age: timedelta):
        self.source, self.key, self.kinds, self.closing, self.aggs, self.max_age = source, key, kinds, closing, aggs, max_age
        self.carry: pl.DataFrame | None = None
        # the columns the unit reads: narrowed before the filter, which copies every column it keeps
        used = {c for a in aggs for c in a.meta.root_names()}
        self.columns = list(dict.fromkeys(["ts", "source", "kind", *key, *sorted(used)]))

    def feed(self, events: pl.DataFrame, final: bool = False) -> pl.DataFrame:
        rows = events.select(self.columns).filter(
            (pl.col("source") == self.source) & _kind_is(*self.kinds) & pl.col(self.key[-1]).is_not_null())
        # exim's own log files carry no host: the key's host part is then empty
        rows = rows.with_columns(pl.col("kind").cast(pl.String), pl.col("source").cast(pl.String),
                                 *(pl.col(k).fill_null("") for k in self.key[:-1]))
        if self.carry is not None and self.carry.height:
            rows = pl.concat([self.carry, rows], how="diagonal_relaxed")
        if rows.height == 0:
            return pl.DataFrame()
        units = rows.group_by(self.key, maintain_order=True).agg(
            *self.aggs, pl.col("ts").min().alias("first_seen"), pl.col("ts").max().alias("last_seen"),
            pl.col("kind").is_in(self.closing).any().alias("closed"))
        newest = rows["ts"].max()
        stale = (pl.col("last_seen") < newest - self.max_age) if newest is not None else pl.lit(False)
        done = pl.col("closed") | stale | pl.lit(final)
        self.carry = rows.join(units.filter(~done).select(self.key), on=self.key, how="semi")
        return units.filter(done)


def exim_messages() -> Units:
    """exim messages by message id: arrival (sender, size, client, TLS), per-recipient outcomes, Completed."""
    k = pl.col("kind")
    return Units("exim", ["host", "queue_id"],
                 ["exim_arrival", "exim_delivery", "exim_deferral", "exim_failure", "exim_completed"],
                 ["exim_completed"],
                 [pl.col("sender").filter(k == "exim_arrival").first(), pl.col("size").filter(k == "exim_arrival").first(),
                  pl.col("client_ip").filter(k == "exim_arrival").first(),
                  pl.col("tls_cipher").filter(k == "exim_arrival").first(),
                  (k == "exim_arrival").any().alias("arrived"),
                  (k == "exim_delivery").sum().cast(pl.Int64).alias("delivered"),
                  (k == "exim_deferral").sum().cast(pl.Int64).alias("deferrals"),
                  (k == "exim_failure").sum().cast(pl.Int64).alias("failed")],
                 timedelta(days=8))


def dovecot_sessions() -> Units:
    """dovecot login sessions by session id: login (user, protocol, TLS, method) -> logout."""
    k = pl.col("kind")
    return Units("dovecot", ["host", "session_id"], ["dovecot_login", "dovecot_logout"], ["dovecot_logout"],
                 [pl.col("user").drop_nulls().first(), pl.col("proto").drop_nulls().first(),
                  pl.col("client_ip").drop_nulls().first(), pl.col("method").drop_nulls().first(),
                  pl.col("tls").cast(pl.String).drop_nulls().first(),
                  (k == "dovecot_login").any().alias("logged_in"),
                  pl.col("ts").filter(k == "dovecot_login").first().alias("login"),
                  pl.col("ts").filter(k == "dovecot_logout").last().alias("logout")],
                 timedelta(days=1))
