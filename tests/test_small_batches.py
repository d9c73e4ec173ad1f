"""The few-lines paths of reject classification, metrics and alerts (``logscope tail`` under a trickle).

``tail`` reads a handful of lines every 0.25 s. For a frame of at most
``classify.KINDS_MAX_ROWS`` rows the three stages take cheaper paths than for
a big frame (Python where polars has a fixed cost per query; queries skipped
for absent event kinds; rules on a thread of their own). Each test runs both
paths on the same real input and asserts the same result.
"""

from __future__ import annotations

import itertools
import math
import threading

import polars as pl
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from logscope import classify, schema
from logscope.alerts import expr as E
from logscope.alerts.engine import AlertEngine
from logscope.alerts.rules import default_rules_path, loads
from logscope.engine import parse_lines
from logscope.samples import SAMPLE_OPTIONS
from logscope.sinks import metrics as M

from .conftest import CORPUS, SAMPLES


@pytest.fixture(scope="module")
def classes():
    return classify.load_classes()


@pytest.fixture(scope="module")
def sample_lines():
    return [ln for p in sorted(SAMPLES.glob("*.log")) for ln in p.read_text().splitlines()]


def batches(lines: list[str], parser_set, size: int, opts=SAMPLE_OPTIONS) -> list[pl.DataFrame]:
    return [parse_lines(lines[i:i + size], parser_set, opts) for i in range(0, len(lines), size)]


@pytest.fixture(scope="module")
def sample_batches(parser_set, sample_lines):
    """The sample logs parsed in batches of ``size`` lines (cached: parsing dominates these tests)."""
    cache: dict[int, list[pl.DataFrame]] = {}

    def get(size: int) -> list[pl.DataFrame]:
        if size not in cache:
            cache[size] = batches(sample_lines, parser_set, size)
        return cache[size]
    return get


@pytest.fixture
def path(monkeypatch):
    """Force a path: "big" (every frame as if large), "first_match" (classify: every frame small and
    the first matching rule found in Python), "rows" (classify: small frames, rules in polars)."""
    def force(which: str) -> None:
        monkeypatch.setattr(classify, "KINDS_MAX_ROWS", -1 if which == "big" else 10**9)
        monkeypatch.setattr(classify, "FIRST_MATCH_MAX_ROWS", 0 if which == "rows" else 10**9)
    return force


# --- reject classification ----------------------------------------------------

def _classified(frames: list[pl.DataFrame], classes) -> pl.DataFrame:
    return pl.concat([classes.classify(f) for f in frames], how="vertical_relaxed")


def test_classify_paths_agree_on_the_samples(classes, sample_batches, path):
    for size in (7, 25, 10**6):
        frames = sample_batches(size)
        results = {}
        for which in ("big", "first_match", "rows"):
            path(which)
            results[which] = _classified(frames, classes)
        assert results["big"].equals(results["first_match"]) and results["big"].equals(results["rows"]), size
        assert results["big"].schema["reject_class"] == classify.RejectClassEnum
    out = results["big"]
    # the samples have rejects of many classes, zones and failed deliveries: the paths were exercised
    assert out["reject_class"].drop_nulls().n_unique() >= 10 and out["rbl_zone"].drop_nulls().len() >= 1


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not found at {CORPUS}")
def test_classify_paths_agree_on_the_corpus(parser_set, classes, path):
    from logscope.conformance import is_log_line
    from logscope.header import HeaderOptions
    lines = []
    for source in ("postfix", "exim", "rspamd"):
        for p in sorted((CORPUS / source).rglob("*")):
            if p.is_file():
                lines += [ln for ln in p.read_bytes().decode("utf-8", "replace").splitlines() if is_log_line(ln)]
    frames = batches(lines, parser_set, 200, HeaderOptions(tz="UTC", year=2025))
    path("big")
    big = _classified(frames, classes)
    path("first_match")
    assert _classified(frames, classes).equals(big)
    assert big["reject_class"].drop_nulls().len() >= 100


def test_scope_in_python_agrees_with_polars():
    """``_scope_of`` (a few rows, in Python) against ``_scope`` (polars) on every combination that matters."""
    kinds = [None, *schema.KINDS]
    actions = [None, "other", *{a for acts in classify.REJECT_ACTIONS.values() if acts for a in acts}]
    daemons = [None, "postscreen", "dnsblog", "smtpd"]
    statuses = [None, "sent", *classify.FAILED_STATUSES]
    rows = list(itertools.product(kinds, actions, daemons, statuses))
    df = pl.DataFrame(rows, schema={"kind": pl.String, "action": pl.String, "daemon": pl.String,
                                    "status": pl.String}, orient="row")
    want = df.select(classify._scope().alias("s"))["s"].to_list()
    assert [classify._scope_of(*r) for r in rows] == want
    assert want.count(1) > 0 and want.count(2) > 0


def test_merged_rules_match_where_one_of_them_matches(classes):
    """Adjacent rules of one class run as one alternation; each part keeps its own (?i)."""
    merged = classify._merged(classes.rules)
    assert len([x for _, _, x in merged if x]) < len([r for r in classes.rules if r.regex])
    texts = pl.Series(["user unknown", "USER UNKNOWN", "mailbox unavailable", "unknown recipient",
                       "client host rejected", "client host x.example blocked", "greylisted, try again later",
                       "nothing at all", "", "hits=7.5 required=5", "\u212a", "\u017fpam", "helo command rejected",
                       "bad helo", "ehlo xyz is invalid here"])
    ends = [i for i, _, _ in merged[1:]] + [len(classes.rules)]
    alternations = 0
    for (first, rule, regex), end in zip(merged, ends):
        members = classes.rules[first:end]
        assert all(classify._same_outcome(rule, r) for r in members[1:])
        if len(members) < 2:
            continue
        alternations += 1
        want = pl.Series([False] * len(texts))
        for r in members:
            want = want | texts.str.contains(classify._engine_regex(r.regex))
        assert texts.str.contains(regex).to_list() == want.to_list(), rule.name
    assert alternations >= 3


def test_rules_with_the_same_group_name_stay_apart(tmp_path, parser_set):
    (tmp_path / classify.FILENAME).write_text(
        '[[class]]\nname = "spam"\nmatch = ["(?P<why>junk) one", "(?P<why>junk) two"]\n')
    classes = classify.load_classes([tmp_path])
    apart = [classify._engine_regex(r) for r in ("(?P<why>junk) one", "(?P<why>junk) two")]
    assert [x for _, r, x in classify._merged(classes.rules)][:2] == apart
    line = ("Jun  3 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[192.0.2.1]: 554 5.7.1 "
            "junk two; from=<a@b.example> to=<c@d.example> proto=ESMTP helo=<x>")
    out = classes.classify(parse_lines([line], parser_set, SAMPLE_OPTIONS))
    assert out["reject_class"].to_list() == ["spam"]


def test_small_frames_run_the_rules_on_their_own_thread():
    assert classify._RULES_THREAD.run(lambda: threading.current_thread().name).startswith("logscope-classify")


# --- metrics ------------------------------------------------------------------

def _exposition(frames, classes) -> list[str]:
    sink = M.MetricsSink(CollectorRegistry(), classes=classes)
    for f in frames:
        sink.add(f)
    return generate_latest(sink.registry).decode().splitlines()


def _same_metrics(a: list[str], b: list[str]) -> None:
    """Equal expositions; a histogram's _sum of fractions may differ in its last bits, because polars
    adds a big frame's values in an order of its own (see MetricsSink.add)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if x != y:
            (nx, vx), (ny, vy) = x.rsplit(" ", 1), y.rsplit(" ", 1)
            assert nx == ny and nx.split("{")[0].endswith("_sum"), (x, y)
            assert math.isclose(float(vx), float(vy), rel_tol=1e-12), (x, y)


def test_metrics_paths_agree(classes, sample_batches, path):
    for size in (7, 25, 10**6):
        frames = [classes.classify(f) for f in sample_batches(size)]
        path("big")
        big = _exposition(frames, classes)
        path("first_match")
        small = _exposition(frames, classes)
        _same_metrics(small, big)
    assert any(ln.startswith("postfix_smtp_delivery_delay_seconds_bucket") and not ln.endswith(" 0.0") for ln in small)
    assert any(ln.startswith("logscope_last_event_timestamp_seconds{") for ln in small)


def test_metrics_small_frames_of_many_groups(parser_set, classes):
    """More groups than PLAN_NEW_MAX in a small frame (hostile variety): counted in polars, as in a big one."""
    lines = [f"Jun  3 10:00:{i % 60:02d} mx postfix/smtpd[{i}]: connect from h{i}.example[192.0.2.{i % 250}]"
             for i in range(M.PLAN_NEW_MAX + 200)]
    frame = parse_lines(lines, parser_set, SAMPLE_OPTIONS).with_columns(
        daemon=pl.Series([f"d{i}" for i in range(len(lines))]))  # a distinct group per line
    assert frame.height <= classify.KINDS_MAX_ROWS
    exp = _exposition([classes.classify(frame)], classes)
    assert f'logscope_events_total{{kind="smtpd_connect",source="postfix"}} {float(len(lines))}' in exp


# --- alerts -------------------------------------------------------------------

WHERES = [
    'kind == "reject"', '"reject" == kind', 'kind in ("delivery", "qmgr_from")', 'kind not in ("delivery")',
    'kind != "delivery"', 'not (kind == "delivery")', 'is_reject', 'failed_delivery', 'sasl', 'tls',
    'is_reject or kind == "qmgr_removed"', 'sasl and not tls', 'false', 'null', 'true',
    'false or (kind == "delivery" and status == "sent")', '(kind == "delivery" and status == "deferred") or '
    'kind == "exim_deferral"', 'kind == "smtpd_disconnect" and sasl', 'source != "unknown"',
]


@pytest.fixture(scope="module")
def all_kinds_frame():
    """Every kind, with values that make the derived columns true where they can be."""
    base = {"commands": "ehlo=1 starttls=1 auth=1 mail=1 quit=1", "sasl_method": "PLAIN", "sasl_username": "u",
            "daemon": "postscreen", "status": "deferred", "tls": "TLS", "service": "smtps",
            "tls_cipher": "X", "source": "exim"}
    actions = sorted({a for acts in classify.REJECT_ACTIONS.values() if acts for a in acts}) + [None]
    rows = [dict(base, kind=k, action=a) for k in [*schema.KINDS, None] for a in actions]
    df = pl.DataFrame(rows, schema={c: pl.String for c in rows[0]})
    return schema.empty_events().vstack(
        df.select(pl.col(c).cast(schema.SCHEMA[c]) for c in df.columns)
        .with_columns(pl.lit(None, dtype=schema.SCHEMA[c]).alias(c) for c in schema.SCHEMA if c not in df.columns)
        .select(schema.SCHEMA.keys()))


@pytest.mark.parametrize("where", WHERES)
def test_where_kinds_are_sound(where, all_kinds_frame):
    kinds = E.where_kinds(E.parse(where))
    expr, _ = E.compile_where(where, E.events_columns())
    hold = set(all_kinds_frame.filter(expr)["kind"].cast(pl.String).to_list())
    if kinds is not None:
        assert hold <= kinds, (where, hold - kinds)


def test_where_kinds_narrow_the_default_rules():
    rules = {r.name: r for r in loads(default_rules_path().read_text()).rules}
    assert rules["auth_password_guessing"].kinds == {"sasl_auth_failed", "dovecot_login_failed", "exim_auth_failed"}
    assert rules["reject_class_surge"].kinds == frozenset(classify.REJECT_ACTIONS)
    assert rules["unparsed_share"].kinds is None and rules["logging_stopped"].kinds is None


def _alerts(frames, text, classes, replay: bool):
    clock = 0.0
    if not replay:
        newest = max(f["ts"].max() for f in frames if f.height and f["ts"].max() is not None)
        clock = newest.timestamp() + 30
    eng = AlertEngine(loads(text), notifiers=[], replay=replay, classes=classes, clock=lambda: clock)
    for f in frames:
        eng.add(f)
    out = eng.replay() if replay else eng.evaluate(clock)
    buffers = {r.rule.name: (None if r.buffer() is None else (r.buffer().schema, r.buffer().rows())) for r in eng.runs}
    return [(t.at, t.status, t.alert.rule, t.alert.key, t.alert.values) for t in out], buffers


def test_alert_paths_agree(classes, sample_batches, path):
    text = default_rules_path().read_text() + "".join(
        f'\n[[rule]]\nname = "w{i}"\nwhere = \'{w}\'\ngroup_by = ["source"]\nwindow = "1h"\ncondition = "count() > 0"\n'
        for i, w in enumerate(WHERES))
    for size in (7, 25):
        frames = sample_batches(size)
        for replay in (False, True):
            path("big")
            big = _alerts(frames, text, classes, replay)
            path("first_match")
            small = _alerts(frames, text, classes, replay)
            assert small == big, (size, replay)
    # replayed (nothing pruned): most rules buffered rows, and alerts fired
    assert len(big[0]) >= 10 and sum(b is not None for b in big[1].values()) >= 15
