"""The metrics sink: exact counts on the samples, bounded labels, self-metrics.

Expected values are computed independently of the sink: with regular
expressions over the raw sample lines (what an operator would grep), or with
prometheus-client's own Histogram for the bucket arithmetic.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter

import polars as pl
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from logscope.engine import parse_lines
from logscope.samples import SAMPLE_OPTIONS, read_expectations
from logscope.sinks import metrics as metrics_module
from logscope.sinks.metrics import (
    ASA_MESSAGE_IDS,
    DELAY_BUCKETS,
    DELAY_STAGES,
    NRCPT_BUCKETS,
    TLS_CIPHERS,
    LabelCap,
    MetricsSink,
    go_float,
)

from .conftest import SAMPLES

SOURCES = ("postfix", "dovecot", "exim", "rspamd", "cisco_asa")


def sample_lines() -> list[str]:
    """Every log line of the annotated samples (comments dropped) and the generated maillog."""
    lines: list[str] = []
    for source in SOURCES:
        lines += read_expectations(SAMPLES / f"{source}.log")[0]
    return lines + (SAMPLES / "maillog").read_text(encoding="utf-8").splitlines()


def samples(text: str | bytes) -> dict[tuple[str, tuple], float]:
    """Exposition text -> {(sample name, sorted labels): value}."""
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def by_label(values: dict, name: str, label: str) -> dict[str, float]:
    """{label value: sample value} of one sample name with one label."""
    return {dict(k[1])[label]: v for k, v in values.items() if k[0] == name}


def value(values: dict, name: str, **labels) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def grep(pattern: str, lines: list[str]) -> list[re.Match]:
    rx = re.compile(pattern)
    return [m for m in map(rx.search, lines) if m]


# postfix program of any instance and service: postfix/smtpd, postfix/submission/smtpd, postfix-mx2/smtpd
def PF(daemon: str) -> str:  # noqa: N802
    return rf"(?:^|\s)postfix(?:-[\w-]+)?/(?:[\w-]+/)?{daemon}\[\d+\]: "


@pytest.fixture(scope="module")
def lines():
    return sample_lines()


@pytest.fixture(scope="module")
def events(lines, parser_set):
    return parse_lines(lines, parser_set, SAMPLE_OPTIONS)


@pytest.fixture(scope="module")
def fed(events):
    sink = MetricsSink()
    sink.add(events)
    return samples(sink.exposition())


# ------------------------------------------------------------------ postfix_* families

def test_smtpd_connects_and_disconnects(lines, fed):
    assert value(fed, "postfix_smtpd_connects_total") == len(grep(PF("smtpd") + "connect from ", lines)) == 352
    assert value(fed, "postfix_smtpd_disconnects_total") == len(grep(PF("smtpd") + "disconnect from ", lines))


def test_lost_connections_by_stage(lines, fed):
    want = Counter(m[1] for m in grep(PF("smtpd") + r"(?:NOQUEUE: )?lost connection after ([A-Z-]+)", lines))
    assert by_label(fed, "postfix_smtpd_connections_lost_total", "after_stage") == want


def test_messages_processed_by_sasl_method(lines, fed):
    want = Counter(m[1] or "" for m in grep(PF("smtpd") + r"\w+: client=[^,]*(?:, sasl_method=([^,\s]+))?", lines))
    assert by_label(fed, "postfix_smtpd_messages_processed_total", "sasl_method") == want
    assert want["PLAIN"] > 0 and want[""] > 0


def test_rejects_by_code(lines, fed):
    want = Counter(m[1] for m in grep(PF("smtpd") + r"(?:NOQUEUE|\w+): reject: RCPT from \S+: (\d{3}) ", lines))
    assert by_label(fed, "postfix_smtpd_messages_rejected_total", "code") == want
    assert sum(want.values()) == 51


def test_tls_connections(lines, fed):
    rx = r"(\w+) TLS connection established (?:from|to) \S+: (\S+) with cipher (\S+) \((\d+)/(\d+) bits\)"
    for daemon, name in (("smtpd", "postfix_smtpd_tls_connections_total"),
                         ("smtp", "postfix_smtp_tls_connections_total")):
        want = Counter(m.groups() for m in grep(PF(daemon) + rx, lines))
        got = {tuple(dict(k[1])[n] for n in ("trust", "protocol", "cipher", "secret_bits", "algorithm_bits")): v
               for k, v in fed.items() if k[0] == name}
        assert got == want and want


def test_qmgr_and_cleanup(lines, fed):
    assert value(fed, "postfix_qmgr_messages_removed_total") == len(grep(PF("qmgr") + r"\w+: removed$", lines))
    assert value(fed, "postfix_cleanup_messages_processed_total") == len(
        grep(PF("cleanup") + r"\w+: (?:resent-)?message-id=", lines))
    assert value(fed, "postfix_cleanup_messages_rejected_total") == len(grep(PF("cleanup") + r"\w+: reject: ", lines))
    assert value(fed, "postfix_cleanup_messages_not_accepted_total") == len(
        grep(PF("cleanup") + r"\w+: milter-reject: ", lines)) == 20
    assert value(fed, "postfix_smtpd_sasl_authentication_failures_total") == len(
        grep(PF("smtpd") + r"warning: \S+: SASL \S+ authentication failed", lines)) == 2
    assert value(fed, "postfix_smtpd_forward_confirmed_reverse_dns_errors_total") == len(
        grep(PF("smtpd") + "warning: hostname .* does not resolve to address", lines))
    assert value(fed, "postfix_smtp_connection_timed_out_total") == len(
        grep(PF("smtp") + r"connect to .*: Connection timed out", lines)) == 2
    deferred = len(grep(PF("smtp") + r"\w+: to=.*, status=deferred", lines))
    assert value(fed, "postfix_smtp_status_deferred") == value(fed, "postfix_smtp_deferred_messages_total") == deferred


def reference_histogram(name: str, bounds: tuple[float, ...], observations: dict[str, list[float]],
                        label: str | None = None) -> dict:
    """The same observations through prometheus-client's own Histogram, as samples."""
    reg = CollectorRegistry()
    h = Histogram(name, "reference", [label] if label else [], buckets=bounds, registry=reg)
    for key, vals in observations.items():
        child = h.labels(key) if label else h
        for v in vals:
            child.observe(v)
    ref = {}
    for k, v in samples(generate_latest(reg)).items():
        if k[0].endswith("_created"):
            continue
        labels = tuple((n, go_float(float(x)) if n == "le" and x != "+Inf" else x) for n, x in k[1])
        ref[(k[0], labels)] = v
    return ref


def test_delay_histograms_every_stage_filled(lines, fed):
    for transport in ("smtp", "lmtp"):
        name = f"postfix_{transport}_delivery_delay_seconds"
        obs: dict[str, list[float]] = {s: [] for s in DELAY_STAGES}
        for m in grep(PF(transport) + r"\w+: to=.*, delays=([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+), ", lines):
            for stage, v in zip(DELAY_STAGES, m.groups()):
                obs[stage].append(float(v))
        assert obs["transmission"], transport
        ref = reference_histogram(name, DELAY_BUCKETS, obs, "stage")
        got = {k: v for k, v in fed.items() if k[0].startswith(name)}
        assert got.keys() == ref.keys()
        for k in ref:
            assert got[k] == pytest.approx(ref[k]), k
        assert {dict(k[1])["stage"] for k in got} == set(DELAY_STAGES)


def test_qmgr_inserted_recipients_histogram(lines, fed):
    obs = {"": [float(m[1]) for m in grep(PF("qmgr") + r"\w+: from=<.*>, size=\d+, nrcpt=(\d+)", lines)]}
    name = "postfix_qmgr_messages_inserted_receipients"
    ref = reference_histogram(name, NRCPT_BUCKETS, obs)
    got = {k: v for k, v in fed.items() if k[0].startswith(name)}
    assert got == ref and ref[(name + "_count", ())] == 274


# ------------------------------------------------------------------ logscope_* families

def test_smtpd_sessions_by_service_and_tls(lines, fed):
    want: Counter = Counter()
    for m in grep(r"postfix(?:-[\w-]+)?/(?:([\w-]+)/)?smtpd\[\d+\]: disconnect from \S+(.*)", lines):
        service = m[1] or "smtp"
        tls = bool(re.search(r"\bstarttls=[1-9]", m[2])) or service in ("smtps", "submissions")
        want[(service, "yes" if tls else "no")] += 1
    got = {(dict(k[1])["service"], dict(k[1])["tls"]): v for k, v in fed.items()
           if k[0] == "logscope_smtpd_sessions_total"}
    assert got == want
    assert got[("smtp", "yes")] == 250 and got[("submission", "yes")] == 17


def test_dovecot_logins_by_protocol_and_tls(lines, fed):
    want: Counter = Counter()
    for m in grep(r"(imap|pop3|managesieve|submission)-login: (?:Info: )?Login: (.*)", lines):
        fields = m[2]
        tls = ("handshaking" if "TLS handshaking" in fields else "tls" if re.search(r", TLS\b", fields)
               else "secured" if ", secured" in fields else "plaintext")
        want[(m[1], tls)] += 1
    got = {(dict(k[1])["protocol"], dict(k[1])["tls"]): v for k, v in fed.items()
           if k[0] == "logscope_dovecot_logins_total"}
    assert got == want and sum(want.values()) == 53


def test_rspamd_actions_and_scores(lines, fed):
    verdicts = grep(r"rspamd_task_write_log: .*\(([a-z ]+)\): \[(-?[\d.]+)/", lines)
    want = Counter(m[1].replace(" ", "_") for m in verdicts)
    assert by_label(fed, "logscope_rspamd_actions_total", "action") == want
    # scores can be negative: no _sum/_count (OpenMetrics), the +Inf bucket is the count
    assert value(fed, "logscope_rspamd_score_bucket", le="+Inf") == len(verdicts)
    assert ("logscope_rspamd_score_sum", ()) not in fed
    for le in ("-5", "0", "6", "15"):
        assert value(fed, "logscope_rspamd_score_bucket", le=le) == sum(float(m[2]) <= float(le) for m in verdicts)


def test_asa_events_bounded_ids(lines, fed, events):
    want: Counter = Counter()
    for m in grep(r"%(?:ASA|PIX|FTD)-(?:[a-z]+-)?(\d)-(\d{6}):? ", lines):
        want[(m[2] if m[2] in ASA_MESSAGE_IDS else "other", m[1])] += 1
    got = {(dict(k[1])["message_id"], dict(k[1])["severity"]): v for k, v in fed.items()
           if k[0] == "logscope_asa_events_total"}
    assert got == want and got[("other", "4")] >= 1
    # every id a specific ASA event kind produces is in the fixed list
    known = events.filter((pl.col("source") == "cisco_asa") & (pl.col("kind") != "asa_event")
                          & pl.col("asa_id").is_not_null())["asa_id"].cast(pl.String).unique().to_list()
    assert set(known) <= set(ASA_MESSAGE_IDS)


def test_exim_and_auth_failures(lines, fed):
    arrivals = grep(r"^\S+ \S+ (?:\[\d+\] )?\S+ <= .*", lines)
    tls_arrivals = [m for m in arrivals if " X=" in m[0]]
    assert value(fed, "logscope_exim_arrivals_total", tls="yes") == len(tls_arrivals) == 2
    assert value(fed, "logscope_exim_arrivals_total", tls="no") == len(arrivals) - len(tls_arrivals)
    per_source: Counter = Counter()
    for k, v in fed.items():
        if k[0] == "logscope_auth_failures_total":
            per_source[dict(k[1])["source"]] += v
    assert per_source["postfix"] == len(grep(PF("smtpd") + r"warning: \S+: SASL \S+ authentication failed", lines))
    assert per_source["exim"] == len(grep(r"authenticator failed for ", lines))
    assert per_source["dovecot"] == len(grep(r"-login: .*?\((?:auth failed|\d+ authentication attempts)", lines))


def test_events_by_source_and_kind_cover_every_line(lines, events, fed):
    got = {(dict(k[1])["source"], dict(k[1])["kind"]): v for k, v in fed.items() if k[0] == "logscope_events_total"}
    assert sum(got.values()) == len(lines) == events.height
    want = {(s, k): n for s, k, n in events.group_by("source", "kind").len().iter_rows()}
    assert got == {(str(s), str(k)): float(n) for (s, k), n in want.items()}


def test_unparsed_lines_per_source(parser_set):
    # (a line without any header continues the entry above it: the garbage comes first)
    junk = ["complete garbage",
            "Mar  1 10:00:00 mx1 postfix/smtpd[1]: something postfix never wrote",
            "Mar  1 10:00:00 mx1 postfix/frobd[1]: a daemon nobody knows",
            "Mar  1 10:00:00 mx1 dovecot: imap(bob): something new"]
    sink = MetricsSink()
    sink.add(parse_lines(junk, parser_set, SAMPLE_OPTIONS))
    got = samples(sink.exposition())
    assert by_label(got, "logscope_unparsed_lines_total", "source") == {"postfix": 2, "dovecot": 1, "unknown": 1}
    assert by_label(got, "postfix_unsupported_log_entries_total", "service") == {"smtpd": 1, "other": 1}


# ------------------------------------------------------------------ mechanics

def test_batches_add_up_to_the_whole(events, fed):
    sink = MetricsSink()
    for chunk in events.iter_slices(777):
        sink.add(chunk)
    sink.add(events.clear())
    got = samples(sink.exposition())
    keys = [k for k in fed if k[0].startswith(("postfix_", "logscope_")) and "timestamp" not in k[0]]
    assert keys and all(got[k] == pytest.approx(fed[k]) for k in keys)


def test_counts_do_not_depend_on_the_remembered_groups(events, fed, monkeypatch):
    """Counters add group sizes through remembered per-group increments (``PLAN_CAP`` groups, or those
    of one batch): with room for only 5 groups (forgotten and recomputed again and again) every count
    is the same."""
    monkeypatch.setattr(metrics_module, "PLAN_CAP", 5)
    sink = MetricsSink()
    for chunk in events.iter_slices(50):
        sink.add(chunk)
        assert len(sink._plan) <= max(5, chunk.height)
    got = samples(sink.exposition())
    keys = [k for k in fed if k[0].startswith(("postfix_", "logscope_")) and "timestamp" not in k[0]]
    assert len(keys) > 100 and all(got[k] == pytest.approx(fed[k]) for k in keys)
    assert {k for k in got if k in keys} == set(keys)


def test_frame_with_only_some_columns(events):
    sink = MetricsSink()
    sink.add(events.select("source", "kind", "daemon"))
    got = samples(sink.exposition())
    assert value(got, "postfix_smtpd_connects_total") == 352


def test_reject_class_hook(events):
    def classify(text: pl.Expr) -> pl.Expr:
        return pl.when(text.str.contains("(?i)greylist")).then(pl.lit("greylisted")).otherwise(pl.lit("policy"))

    sink = MetricsSink(reject_class=classify, reject_classes=("greylisted", "policy"))
    sink.add(events)
    got = by_label(samples(sink.exposition()), "logscope_rejects_total", "class")
    assert set(got) == {"greylisted", "policy"} and got["greylisted"] > 0
    default = MetricsSink()  # the bundled classes of logscope.classify
    default.add(events)
    classes = by_label(samples(default.exposition()), "logscope_rejects_total", "class")
    from logscope.classify import CLASSES
    assert set(classes) <= set(CLASSES) | {"unclassified"} and classes.get("greylisting", 0) > 0
    def total(sink):  # over every source and class
        return sum(v for k, v in samples(sink.exposition()).items() if k[0] == "logscope_rejects_total")
    assert total(sink) == total(default) > 0


def test_reject_class_without_class_list_is_capped(events):
    sink = MetricsSink(reject_class=lambda text: text)  # a classifier that leaks the raw text
    sink.add(events)
    classes = by_label(samples(sink.exposition()), "logscope_rejects_total", "class")
    assert len(classes) <= 33 and "other" in classes


def test_label_cap():
    cap = LabelCap(2)
    assert [cap(v) for v in ("a", "b", "c", "a", "other", "d")] == ["a", "b", "other", "a", "other", "other"]


def test_self_metrics():
    sink = MetricsSink()
    sink.lines_read("/var/log/mail.log", 10, 1200)
    sink.lines_read("/var/log/mail.log", 5, 300)
    assert ("logscope_checkpoint_age_seconds", ()) not in samples(sink.exposition())  # no checkpoint yet
    sink.checkpoint_written(at=time.time() - 100)
    sink.input_lag("/var/log/mail.log", 4096)
    sink.input_lag("/var/log/mail.log", 512)
    sink.rotation("/var/log/mail.log")
    sink.read_error("/var/log/exim4/mainlog")
    for i in range(100):
        sink.lines_read(f"/var/log/asa/{i}.log", 1, 1)
    got = samples(sink.exposition())
    m = "/var/log/mail.log"
    assert value(got, "logscope_input_lines_total", input=m) == 15
    assert value(got, "logscope_input_bytes_total", input=m) == 1500
    assert 100 <= value(got, "logscope_checkpoint_age_seconds") < 110
    assert value(got, "logscope_input_lag_bytes", input=m) == 512
    assert value(got, "logscope_input_rotations_total", input=m) == 1
    assert value(got, "logscope_input_read_errors_total", input="/var/log/exim4/mainlog") == 1
    inputs = by_label(got, "logscope_input_lines_total", "input")
    # one cap for all self-metrics: mail.log, mainlog and the first 62 ASA files, then "other"
    assert len(inputs) == 64 and inputs["other"] == 100 - 62 and "/var/log/asa/61.log" in inputs


def test_input_status_rows():
    """The rows of ``Tail.status()``: per file of an input, the input's running totals."""
    sink = MetricsSink()
    rows = [{"input": "/var/log/asa/*.log", "file": "/var/log/asa/a.log", "lag": 100, "rotations": 2, "errors": 1},
            {"input": "/var/log/asa/*.log", "file": "/var/log/asa/b.log", "lag": 50, "rotations": 2, "errors": 1},
            {"input": "/var/log/mail.log", "file": None, "lag": 0, "rotations": 0, "errors": 3}]
    sink.input_status(rows)
    sink.input_status(rows[:2])  # the same totals again: counters stay
    sink.on_commit()
    got = samples(sink.exposition())
    assert by_label(got, "logscope_input_lag_bytes", "input") == {"/var/log/asa/*.log": 150, "/var/log/mail.log": 0}
    assert by_label(got, "logscope_input_rotations_total", "input") == {"/var/log/asa/*.log": 2,
                                                                         "/var/log/mail.log": 0}
    assert by_label(got, "logscope_input_read_errors_total", "input") == {"/var/log/asa/*.log": 1,
                                                                           "/var/log/mail.log": 3}
    assert 0 <= value(got, "logscope_checkpoint_age_seconds") < 5


def test_families_have_help_and_base_units():
    sink = MetricsSink()
    fams = [f for f in text_string_to_metric_families(sink.exposition().decode())
            if f.name.startswith(("postfix_", "logscope_"))]
    assert len(fams) == len(sink.family_names())
    for f in fams:
        assert f.documentation and f.documentation != "reference"
        assert not re.search(r"_(?:milliseconds|ms|kilobytes|minutes)\b", f.name)
        if f.type == "counter":
            assert any(s.name.endswith("_total") for s in f.samples) or not f.samples


# ------------------------------------------------------------------ hostile input

N_HOSTILE = 100_000


def _rnd(r: random.Random, n: int = 8, alphabet: str = "abcdefghijklmnopqrstuvwxyz0123456789") -> str:
    return "".join(r.choice(alphabet) for _ in range(n))


def _synthetic(n: int, hostile: bool, seed: int = 7) -> list[str]:
    """Lines of every family's input; with ``hostile`` every free field is unique junk."""
    r = random.Random(seed)
    out = []
    for i in range(n):
        h = hostile
        dom = f"{_rnd(r)}.{_rnd(r, 3)}" if h else "mail.example.net"
        ip = f"{r.randrange(1, 224)}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}" if h else "192.0.2.1"
        cipher = "X" + _rnd(r, 12).upper() if h else "TLS_AES_256_GCM_SHA384"
        proto = "TLSv" + _rnd(r, 3) if h else "TLSv1.3"
        text = _rnd(r, 30) if h else "Recipient address rejected: User unknown"
        stage = "Z" + _rnd(r, 5, "ABCDEFGHIJKLMNOPQRSTUVWXY") if h else "RCPT"  # the parser's STAGE: letters
        sasl = "M" + _rnd(r, 6).upper() if h else "PLAIN"
        svc = "s" + _rnd(r, 5) if h else "submission"
        asa = str(900000 + r.randrange(99999)) if h else "106023"
        action = "a" + _rnd(r, 6, "abcdefghijklmnopqrstuvwxyz") if h else "no action"
        qid = f"{i:010X}"
        t = f"Mar  1 10:{(i // 60) % 60:02d}:{i % 60:02d}"
        kind = i % 12
        if kind == 0:
            out.append(f"{t} mx1 postfix/smtpd[1]: connect from {dom}[{ip}]")
        elif kind == 1:
            out.append(f"{t} mx1 postfix/smtpd[1]: Anonymous TLS connection established from {dom}[{ip}]: "
                       f"{proto} with cipher {cipher} (256/256 bits)")
        elif kind == 2:
            out.append(f"{t} mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from {dom}[{ip}]: 550 5.1.1 <u@{dom}>: "
                       f"{text}; from=<s@{dom}> to=<u@{dom}> proto=ESMTP helo=<{dom}>")
        elif kind == 3:
            out.append(f"{t} mx1 postfix/smtpd[1]: lost connection after {stage} from {dom}[{ip}]")
        elif kind == 4:
            out.append(f"{t} mx1 postfix/smtpd[1]: {qid}: client={dom}[{ip}], sasl_method={sasl}, sasl_username=u@{dom}")
        elif kind == 5:
            out.append(f"{t} mx1 postfix/{svc}/smtpd[1]: disconnect from {dom}[{ip}] ehlo=1 starttls=1 quit=1 commands=3")
        elif kind == 6:
            out.append(f"{t} mx1 postfix/smtp[2]: {qid}: to=<u@{dom}>, relay={dom}[{ip}]:25, delay=1.2, "
                       f"delays=0.1/0/0.5/0.6, dsn=4.0.0, status=deferred ({text})")
        elif kind == 7:
            out.append(f"{t} mx1 dovecot: imap-login: Login: user=<u@{dom}>, method={sasl}, rip={ip}, "
                       f"lip=192.0.2.10, mpid=1, TLS, session=<{_rnd(r, 16) if h else 'abc'}>")
        elif kind == 8:
            out.append(f"{t} fw1 : %ASA-4-{asa}: Deny tcp src outside:{ip}/1234 dst inside:10.0.0.1/25 "
                       f"by access-group \"{text}\" [0x0, 0x0]")
        elif kind == 9:
            out.append(f"{t} mx1 rspamd[3]: (normal) <{_rnd(r, 6) if h else 'abcdef'}>; task; rspamd_task_write_log: "
                       f"id: <{qid}@{dom}>, qid: <{qid}>, ip: {ip}, from: <s@{dom}>, "
                       f"(default: F ({action}): [1.5/15.00] [{text}(1.0){{}}]), len: 100, time: 5.0ms")
        elif kind == 10:
            out.append(f"{t} mx1 postfix/{svc}/smtpd[1]: warning: {dom}[{ip}]: SASL {sasl} authentication failed: {text}")
        else:
            out.append(f"{t} mx1 postfix/{_rnd(r, 6) if h else 'frobd'}[1]: {text}")
    return out


def _series(sink: MetricsSink) -> dict[str, int]:
    counts: Counter = Counter()
    for fam in text_string_to_metric_families(sink.exposition().decode()):
        if fam.name.startswith(("postfix_", "logscope_")):
            counts[fam.name] += len(fam.samples)
    return dict(counts)


def test_hostile_input_adds_no_series(parser_set):
    benign, hostile = MetricsSink(), MetricsSink()
    benign_lines = _synthetic(N_HOSTILE, hostile=False)
    hostile_lines = _synthetic(N_HOSTILE, hostile=True)
    for sink, lines_ in ((benign, benign_lines), (hostile, hostile_lines)):
        for start in range(0, N_HOSTILE, 25_000):
            sink.add(parse_lines(lines_[start:start + 25_000], parser_set, SAMPLE_OPTIONS))
    b, h = _series(benign), _series(hostile)
    # reject texts pick a class of the closed set: that family may differ, bounded by the set's size
    from logscope.classify import CLASSES
    assert h.pop("logscope_rejects") <= len(CLASSES) and b.pop("logscope_rejects") <= len(CLASSES)
    assert h == b
    got = samples(hostile.exposition())
    # the input really reached the families whose labels it attacks
    def per(k: int) -> int:  # lines of template k
        return len(range(k, N_HOSTILE, 12))

    assert value(got, "postfix_smtpd_connects_total") == per(0)
    assert by_label(got, "postfix_smtpd_tls_connections_total", "cipher") == {"other": per(1)}
    assert by_label(got, "postfix_smtpd_connections_lost_total", "after_stage") == {"other": per(3)}
    assert by_label(got, "postfix_smtpd_messages_processed_total", "sasl_method") == {"other": per(4)}
    assert by_label(got, "logscope_smtpd_sessions_total", "service") == {"other": per(5)}
    assert value(got, "postfix_smtp_delivery_delay_seconds_count", stage="transmission") == per(6)
    assert by_label(got, "logscope_dovecot_logins_total", "protocol") == {"imap": per(7)}
    assert by_label(got, "logscope_asa_events_total", "message_id") == {"other": per(8)}
    assert by_label(got, "logscope_auth_failures_total", "service") == {"other": per(10)}
    assert by_label(got, "logscope_rspamd_actions_total", "action") == {"other": per(9)}
    assert by_label(got, "postfix_unsupported_log_entries_total", "service") == {"other": per(11)}
    text = hostile.exposition().decode()
    head = "\n".join(hostile_lines[:48])
    tokens = re.findall(r"[a-z0-9]{8}\.[a-z0-9]{3}|X[A-Z0-9]{12}|Z[A-Z]{5}|M[A-Z0-9]{6}|9\d{5}", head)
    assert len(tokens) > 40 and not any(tok in text for tok in tokens)
    assert "TLS_AES_256_GCM_SHA384" in benign.exposition().decode() and "TLS_AES_256_GCM_SHA384" in TLS_CIPHERS


def test_pipe_relay_label_is_capped(parser_set):
    lines = [f"Mar  1 10:00:00 mx1 postfix/pipe[1]: {i:010X}: to=<u@example.org>, relay=r{i}, delay=0.1, "
             f"delays=0.1/0/0/0, dsn=2.0.0, status=sent (delivered via r{i} service)" for i in range(40)]
    sink = MetricsSink()
    sink.add(parse_lines(lines, parser_set, SAMPLE_OPTIONS))
    relays = by_label(samples(sink.exposition()), "postfix_pipe_delivery_delay_seconds_count", "relay")
    assert len(relays) == 17 and relays["other"] == 24


def test_insight_families_match_the_events(parser_set):
    """TLS versions by direction, logins by mechanism and TLS, IP families: counted independently from the frame."""
    lines = (SAMPLES / "maillog").read_text().splitlines()
    ev = parse_lines(lines, parser_set, SAMPLE_OPTIONS)
    sink = MetricsSink()
    sink.add(ev)
    got = samples(sink.exposition())
    k = pl.col("kind").cast(pl.String)
    tin = ev.filter(k == "tls_in").group_by("tls_protocol").len()
    for proto, n in tin.iter_rows():
        assert value(got, "logscope_tls_connections_total", direction="in", protocol=proto) == n
    logins = ev.filter(k == "dovecot_login")
    assert sum(v for key, v in got.items() if key[0] == "logscope_logins_total") == logins.height
    v6_in = ev.filter((k == "smtpd_connect") & (pl.col("daemon") == "smtpd") & pl.col("client_ip").str.contains(":")).height
    assert value(got, "logscope_ip_family_total", what="smtp_in", family="ipv6") == v6_in > 0
