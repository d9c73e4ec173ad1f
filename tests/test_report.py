"""``logscope report``: numbers agree with pflogsumm, formats, periods, hostile values."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from logscope.generate import generate

from .conftest import SAMPLES
from .test_cli import run

PFLOGSUMM = shutil.which("pflogsumm") or ("/usr/sbin/pflogsumm" if Path("/usr/sbin/pflogsumm").exists() else None)

# pflogsumm "Grand Totals" label -> key of our report's traffic.totals
PAIRS = {"received": "received", "delivered": "delivered", "forwarded": "forwarded", "deferred": "deferred",
         "bounced": "bounced", "rejected": "rejected", "reject warnings": "reject_warnings", "held": "held",
         "discarded": "discarded", "bytes received": "bytes_received", "bytes delivered": "bytes_delivered",
         "senders": "senders", "recipients": "recipients", "recipient hosts/domains": "recipient_domains"}


def pflogsumm_totals(path: Path) -> dict[str, float]:
    out = subprocess.run([PFLOGSUMM, "--problems-first", str(path)], capture_output=True, text=True, timeout=600).stdout
    grand = out.split("Grand Totals", 1)[1].split("Per-", 1)[0]
    found = {}
    for m in re.finditer(r"^\s+(\d+)([km]?)\s+([a-z /]+?)(?:\s+\(.*)?$", grand, re.M):
        n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2)]
        found[m.group(3).strip()] = (n, m.group(2))
    return found


def our_totals(path: Path) -> dict:
    proc = run("report", str(path), "--format", "json", "--tz", "UTC", "--year", "2025")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["traffic"]["totals"]


def assert_agree(path: Path):
    theirs, ours = pflogsumm_totals(path), our_totals(path)
    assert set(PAIRS) <= set(theirs), theirs
    for label, key in PAIRS.items():
        n, unit = theirs[label]
        if unit:  # pflogsumm rounds to k/m units: compare in its unit
            scale = {"k": 1024, "m": 1024 * 1024}[unit]
            assert int(ours[key] / scale) == n // scale, (label, ours[key], n)
        else:
            assert ours[key] == n, (label, ours[key], n)


@pytest.mark.skipif(PFLOGSUMM is None, reason="pflogsumm not installed (Debian package pflogsumm)")
def test_agrees_with_pflogsumm_on_bundled_sample():
    assert_agree(SAMPLES / "maillog")


@pytest.mark.skipif(PFLOGSUMM is None, reason="pflogsumm not installed (Debian package pflogsumm)")
def test_agrees_with_pflogsumm_on_generated_log(tmp_path):
    path = tmp_path / "maillog"
    generate(path, lines=40_000, seed=7)
    assert_agree(path)


# Lines pflogsumm does not read (documented in README "Agreement with pflogsumm"): other postfix instances'
# syslog names (it reads one, --syslog-name), delivery lines without "to=<" (a test fixture's), and a
# fixture's malformed "reject: Unsupported" placeholder (pflogsumm counts any "reject:").
PFLOGSUMM_BLIND = re.compile(r" postfix-[\w-]+/|NOQUEUE: reject: Unsupported$|"
                             r"^(?!.*\bto=<).*postfix/smtp\[\d+\]: \w+: .*status=")


@pytest.mark.skipif(PFLOGSUMM is None, reason="pflogsumm not installed (Debian package pflogsumm)")
def test_agrees_with_pflogsumm_on_every_corpus_postfix_log(tmp_path):
    """Real-world postfix logs (../shared/corpus): the same totals as pflogsumm, file by file."""
    from .conftest import CORPUS
    files = sorted((CORPUS / "postfix").rglob("*.log")) if CORPUS.is_dir() else []
    if not files:
        pytest.skip(f"no corpus at {CORPUS}")
    left_out = 0
    for i, f in enumerate(files):
        lines = f.read_text(errors="replace").splitlines()
        kept = [ln for ln in lines if not PFLOGSUMM_BLIND.search(ln)]
        left_out += len(lines) - len(kept)
        path = tmp_path / f"{i}.log"
        path.write_text("\n".join(kept) + "\n")
        assert_agree(path)
    assert left_out == 9  # 6 lines of other syslog names, 1 placeholder, 2 deliveries without to=<


def pflogsumm_table(path: Path, title: str) -> list[tuple[str, list[int]]]:
    """Rows of one pflogsumm table ("Per-Day Traffic Summary", "Per-Hour Traffic Summary") without empty ones."""
    out = subprocess.run([PFLOGSUMM, str(path)], capture_output=True, text=True, timeout=600).stdout
    body = out.split(title, 1)[1].split("\n\n", 1)[0]
    rows = []
    for m in re.finditer(r"^    (\S.*?)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", body, re.M):
        counts = [int(m.group(i)) for i in range(2, 7)]
        if any(counts):
            rows.append((m.group(1), counts))
    return rows


@pytest.mark.skipif(PFLOGSUMM is None, reason="pflogsumm not installed (Debian package pflogsumm)")
def test_per_day_and_per_hour_tables_agree_with_pflogsumm(tmp_path):
    """The per-day and per-hour tables (received, delivered, deferred, bounced, rejected) match pflogsumm's,
    over a log that crosses midnight and one that spans two hours of one day, and pflogsumm's per-hour daily
    averages of the log that crosses midnight."""
    from datetime import datetime

    def ours(path: Path, table: str) -> list[list[int]]:
        doc = json.loads(run("report", str(path), "--format", "json", "--tz", "UTC", "--year", "2025").stdout)
        return [[r["received"], r["delivered"], r["deferrals"], r["bounced"], r["rejected"]] for r in doc["traffic"][table]]

    two_days, one_day = tmp_path / "two-days", tmp_path / "one-day"
    generate(two_days, lines=40_000, seed=7, start=datetime(2025, 3, 1, 23, 30))
    generate(one_day, lines=40_000, seed=7, start=datetime(2025, 3, 1, 21, 30))
    days = pflogsumm_table(two_days, "Per-Day Traffic Summary")
    assert [d.split()[:2] for d, _ in days] == [["Mar", "1"], ["Mar", "2"]]
    assert ours(two_days, "per_day") == [c for _, c in days]
    hours = pflogsumm_table(one_day, "Per-Hour Traffic Summary")
    assert [h for h, _ in hours] == ["2100-2200", "2200-2300"]
    assert ours(one_day, "per_hour") == [c for _, c in hours]
    assert ours(one_day, "per_hour_average") == []  # one day: the sums are the averages
    # more than one day: pflogsumm prints daily averages per hour (rounded half up), as does per_hour_average
    averages = pflogsumm_table(two_days, "Per-Hour Traffic Daily Average")
    assert [h for h, _ in averages] == ["0000-0100", "2300-2400"]
    assert ours(two_days, "per_hour_average") == [c for _, c in averages]
    assert ours(two_days, "per_hour") != ours(two_days, "per_hour_average")


def test_formats_and_sections(tmp_path):
    sample = str(SAMPLES / "maillog")
    doc = json.loads(run("report", sample, "--format", "json", "--tz", "UTC").stdout)
    assert doc["input"]["lines"] == 5000
    assert doc["tls"]["inbound"]["sessions"] > 0 and 0 <= doc["tls"]["inbound"]["tls_pct"] <= 100
    assert doc["rejects"]["rejects_total"] > 0 and doc["rejects"]["reject_classes"]
    assert sum(r["count"] for r in doc["rejects"]["reject_classes"]) == doc["rejects"]["rejects_total"]
    assert doc["rejects"]["spam_domains"][0]["count"] >= doc["rejects"]["spam_domains"][-1]["count"]
    text = run("report", sample, "--tz", "UTC").stdout
    for title in ("Grand totals (postfix)", "Inbound SMTP sessions by service", "Reject reasons", "Top spammer domains",
                  "Authentication failures by client IP", "Parser health"):
        assert title in text
    assert text.index("Deferrals by reason") > text.index("Grand totals")
    first = run("report", sample, "--tz", "UTC", "--problems-first").stdout
    assert first.index("Deferrals by reason") < first.index("Grand totals")
    md = run("report", sample, "--format", "markdown", "--tz", "UTC").stdout
    assert md.startswith("# logscope report") and "| counter | value |" in md
    page = run("report", sample, "--format", "html", "--tz", "UTC").stdout
    assert page.startswith("<!doctype html>") and "<script" not in page and "http://" not in page.split("</style>")[0]
    bl = run("report", sample, "--tz", "UTC", "--blocklist").stdout
    assert "REJECT spam source (logscope)" in bl


def test_period_and_host_filters(tmp_path):
    log = tmp_path / "m.log"
    log.write_text(
        "Mar  1 10:00:00 mx1 postfix/smtpd[1]: 4F3A21C0D2: client=a.example[192.0.2.1]\n"
        "Mar  2 10:00:00 mx1 postfix/smtpd[1]: 5F3A21C0D2: client=a.example[192.0.2.1]\n"
        "Mar  2 11:00:00 mx2 postfix/smtpd[1]: 6F3A21C0D2: client=a.example[192.0.2.1]\n")
    def received(*extra):
        proc = run("report", str(log), "--format", "json", "--tz", "UTC", "--year", "2025", *extra)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["traffic"]["totals"]["received"]
    assert received() == 3
    assert received("--since", "2025-03-02") == 2
    assert received("--until", "2025-03-02") == 1
    assert received("--since", "2025-03-02", "--host", "mx2") == 1
    bad = run("report", str(log), "--since", "yesterday-ish")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "yesterday-ish" in bad.stderr
    assert run("report", str(log), "--last", "7x").returncode == 2


def test_hostile_values_are_escaped_and_bounded(tmp_path):
    helo = "h" * 10_000
    log = tmp_path / "evil.log"
    log.write_text(
        "Mar  1 10:00:00 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from x.example[192.0.2.9]: 554 5.7.1 "
        "<a@b.example>: Relay access denied; from=<x@<script>alert(1)</script>.example> to=<a@b.example> "
        f"proto=ESMTP helo=<\"><img src=x onerror=alert(1)>{helo}>\n"
        "Mar  1 10:00:01 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from x.example[192.0.2.9]: 554 5.7.1 "
        "<a@b.example>: Relay access denied\x1b[31mRED\x1b[0m; from=<x@<script>evil</script>.example> to=<a@b.example> "
        "proto=ESMTP helo=<h>\n")  # both lines hostile: either may be the class's example
    page = run("report", str(log), "--format", "html", "--tz", "UTC").stdout
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;" in page or "&lt;img" in page
    assert helo not in page  # cut to a bounded cell
    text = run("report", str(log), "--tz", "UTC").stdout
    assert "\x1b" not in text and helo not in text
    bl = run("report", str(log), "--tz", "UTC", "--blocklist", "--format", "json").stdout
    lines = json.loads(bl)["rejects"].get("blocklist", {}).get("postfix_check_sender_access", [])
    assert all("<" not in ln for ln in lines)


def test_missing_file_is_one_line_and_rest_is_reported(tmp_path):
    proc = run("report", str(tmp_path / "nope.log"), str(SAMPLES / "maillog"), "--format", "json", "--tz", "UTC")
    assert proc.returncode == 2 and "nope.log" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["input"]["lines"] == 5000


def test_report_is_the_same_whatever_the_chunking(tmp_path, parser_set):
    """Chunk boundaries and hash order must not change a report: ties in top lists and the example of a
    class are chosen by value, and correlation carries state across chunks."""
    import polars as pl

    from logscope.classify import load_classes
    from logscope.header import HeaderOptions
    from logscope.pipeline import ReadOptions, iter_events
    from logscope.report import Report

    from datetime import datetime

    log = tmp_path / "maillog"
    generate(log, lines=20_000, seed=7, start=datetime(2026, 3, 1, 23, 40))  # across midnight

    def build(chunk_bytes: int) -> str:
        rep = Report(load_classes())
        for events in iter_events([str(log)], parser_set, ReadOptions(HeaderOptions(tz="UTC", year=2026), chunk_bytes=chunk_bytes,
                                                                      keep_file=False), pytest.fail):
            rep.add(events)
        doc = rep.build(top=25)
        doc.pop("generated", None)
        hours = doc["traffic"]["per_hour"]
        assert [h["hour"] for h in hours] == ["00", "23"]
        assert sum(h["received"] for h in hours) == doc["traffic"]["totals"]["received"]
        return json.dumps(doc, sort_keys=True, default=str)

    whole = build(64 * 1024 * 1024)
    assert build(200 * 1024) == whole
    assert build(37 * 1024) == whole
    assert pl.__version__  # polars in use


def test_spam_message_rejected_by_milter_is_counted_once(parser_set):
    """rspamd's reject verdict and postfix's milter-reject of the same queue id are one spam message in the
    spammer table; a verdict the MTA did not act on (add header, or no MTA log) still counts."""
    import polars as pl

    from logscope.classify import load_classes
    from logscope.engine import parse_lines
    from logscope.header import HeaderOptions
    from logscope.report import Report

    verdict = ("Mar  1 00:00:19 mx1 rspamd[7311]: (normal) <585c86>; task; rspamd_task_write_log: id: <a@b>, "
               "qid: <{qid}>, ip: 192.0.2.7, from: <x@{dom}>, (default: T ({action}): [20.00/15.00] "
               "[FUZZY_DENIED(12.00){{}}]), len: 27845, time: 545.3ms real, 36.7ms virtual, dns req: 51, "
               "digest: <8c38>, rcpts: <anna@example.org>, mime_rcpts: <anna@example.org>")
    milter = ("Mar  1 00:00:19 mx1 postfix/cleanup[7369]: {qid}: milter-reject: END-OF-MESSAGE from "
              "mail.{dom}[192.0.2.7]: 5.7.1 Spam message rejected; from=<x@{dom}> to=<anna@example.org> "
              "proto=ESMTP helo=<mail.{dom}>")
    lines = [verdict.format(qid="9ECE85EEE8", dom="both.example", action="reject"),
             milter.format(qid="9ECE85EEE8", dom="both.example"),
             verdict.format(qid="738014C6D0", dom="flagged.example", action="add header"),
             verdict.format(qid="5A5A5A5A5A", dom="rspamd-only.example", action="reject")]
    events = parse_lines(pl.DataFrame({"line": lines}), parser_set, HeaderOptions(tz="UTC", year=2026))
    assert events["kind"].to_list() == ["rspamd_verdict", "milter_action", "rspamd_verdict", "rspamd_verdict"]
    for cut in (4, 1):  # one chunk; the verdict and the milter-reject in two chunks
        rep = Report(load_classes())
        rep.add(events.head(cut))
        rep.add(events.slice(cut))
        spam = {r["sender_domain"]: r for r in rep.build()["rejects"]["spam_domains"]}
        assert {d: r["count"] for d, r in spam.items()} == {"both.example": 1, "flagged.example": 1,
                                                            "rspamd-only.example": 1}
        assert spam["both.example"]["classes"] == ["spam"]


def test_empty_period_says_where_the_input_lies():
    """--last counts back from now: an old log gives an empty report and a note with the input's time range."""
    res = run("report", str(SAMPLES / "maillog"), "--last", "7d", "--tz", "UTC", "--format", "json")
    assert res.returncode == 0
    assert json.loads(res.stdout)["traffic"]["totals"]["received"] == 0
    assert "none of the 5,000 lines read falls into the period; the input runs from 2026-03-01 00:00" in res.stderr
    res = run("report", str(SAMPLES / "maillog"), "--since", "2026-03-01", "--tz", "UTC", "--format", "json")
    assert "falls into the period" not in res.stderr
