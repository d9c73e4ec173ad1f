"""`logscope tail --dmarc-dir`: a real tail process watches a directory (and a Maildir) of DMARC aggregate and
SMTP TLS reports; reports dropped while it runs show up in /metrics, a restart (also after SIGKILL) counts
nothing twice, a broken file is one warning line, labels stay bounded.

The reports are the synthetic ones in sample_logs/dmarc/ (example.org/example.net, documentation IPs).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from logscope.sinks.dmarc import DEFAULT_MAX_DOMAINS, OTHER, DomainLabels

from .conftest import REPO, SAMPLES
from .test_dmarc import record, report
from .test_prometheus import fetch, free_port, wait_for

REPORTS = SAMPLES / "dmarc"
ORG_DAY1 = "mbp.example!example.org!1735689600!1735775999.xml"  # example.org: 120 + 15 + 4 messages
ORG_DAY2 = "mbp.example!example.org!1735776000!1735862399.xml"  # example.org: 98 + 11 + 7
NET_DAY1 = "other-reporter.example!example.net!1735689600!1735775999.xml.gz"  # example.net: 30 + 2 (RFC 9990)
TLS_DAY1 = "mbp.example!example.org!2025-01-01!tlsrpt.json"  # example.org: 140 ok, 3 failed
TLS_DAY2 = "mbp.example!example.org!2025-01-02!tlsrpt.json.gz"  # example.org: 120 ok, 1 failed


class Tail:
    """A `logscope tail` process with /metrics on a free port; stderr goes to a file.
    ``follow_log=False``: no log file on the command line, only the reports."""

    def __init__(self, tmp: Path, *args: str, follow_log: bool = True):
        self.port = free_port()
        self.err_path = tmp / f"stderr-{self.port}.txt"
        log = tmp / "mail.log"
        if follow_log and not log.exists():
            log.write_text("".join((SAMPLES / "maillog").read_text().splitlines(keepends=True)[:20]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logscope", "tail", *([str(log)] if follow_log else []), "--tz", "UTC",
             "--state-dir", str(tmp / "state"),
             "--listen", f"127.0.0.1:{self.port}", "--no-live", "--no-alerts", *args],
            env=dict(os.environ, PYTHONPATH=str(REPO)), stderr=open(self.err_path, "w"), stdout=subprocess.DEVNULL)
        wait_for(lambda: self.metrics() is not None, 30, "tail's /metrics")

    def metrics(self) -> dict[tuple, float] | None:
        """{(sample name, sorted labels...): value} of the DMARC and TLS-RPT families, or None if not up."""
        status, _, body = fetch(f"http://127.0.0.1:{self.port}/metrics")
        if status != 200:
            return None
        out = {}
        for fam in text_string_to_metric_families(body.decode()):
            if fam.name.startswith(("logscope_dmarc", "logscope_tlsrpt")):
                for s in fam.samples:
                    out[(s.name, *sorted(s.labels.items()))] = s.value
        return out

    def value(self, name: str, **labels) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(v for (n, *ls), v in (self.metrics() or {}).items()
                   if n == name and all((k, v2) in ls for k, v2 in labels.items()))

    def messages(self, **labels) -> float:
        return self.value("logscope_dmarc_messages_total", **labels)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(30)

    def stderr(self) -> str:
        return self.err_path.read_text()


def drop(src: Path, dest: Path) -> None:
    """A report arriving by a plain (non-atomic) copy, as a user or a fetch script does it."""
    shutil.copyfile(src, dest)


def test_reports_dropped_while_tail_runs_count_once_across_restarts(tmp_path):
    rep = tmp_path / "reports"
    rep.mkdir()
    drop(REPORTS / ORG_DAY1, rep / ORG_DAY1)  # there before the first start: history, like old log lines
    args = ("--dmarc-dir", str(rep), "--dmarc-domain", "example.org", "--dmarc-domain", "example.net")
    tail = Tail(tmp_path, *args)
    try:
        time.sleep(1.5)  # a tick or two
        assert tail.messages() == 0 and tail.value("logscope_dmarc_files_total") == 0

        t0 = time.monotonic()
        drop(REPORTS / ORG_DAY2, rep / ORG_DAY2)
        wait_for(lambda: tail.messages() == 98 + 11 + 7, 15, "the dropped report in /metrics")
        latency = time.monotonic() - t0
        assert latency < 5, f"a dropped report took {latency:.1f} s to reach /metrics"
        assert tail.messages(policy_domain="example.org", disposition="quarantine", dkim_aligned="fail",
                             spf_aligned="fail") == 7
        assert tail.messages(dkim_aligned="fail", spf_aligned="pass") == 11
        assert tail.value("logscope_dmarc_reports_total", policy_domain="example.org") == 1
        assert tail.value("logscope_dmarc_newest_report_timestamp_seconds") == 1735862399

        (rep / "notes.xml").write_text("these are my notes, not a report\n")
        (rep / "truncated.xml.gz").write_bytes(gzip.compress(b"<feedback><report_metadata>")[:-12])
        drop(REPORTS / ORG_DAY2, rep / "copy-of-day2.xml")  # the same report delivered twice
        wait_for(lambda: tail.value("logscope_dmarc_files_total", result="error") == 2, 15, "the bad files")
        wait_for(lambda: tail.value("logscope_dmarc_duplicate_reports_total") == 1, 15, "the duplicate")
        assert tail.messages() == 98 + 11 + 7

        os.rename(rep / ORG_DAY2, rep / "renamed.xml")  # same inode: not read again
        drop(REPORTS / TLS_DAY1, rep / TLS_DAY1)
        wait_for(lambda: tail.value("logscope_tlsrpt_sessions_total", result="success") == 140, 15, "the TLS report")
        assert tail.value("logscope_tlsrpt_sessions_total", policy_domain="example.org", result="failure") == 3
        assert tail.value("logscope_tlsrpt_failures_total", result_type="certificate-expired") == 2
        assert tail.value("logscope_tlsrpt_failures_total", result_type="starttls-not-supported") == 1
        assert tail.value("logscope_dmarc_files_total", result="ok") == 3  # day 2, its copy, the TLS report
        before = tail.metrics()
    finally:
        status = tail.stop(signal.SIGKILL)  # no chance to save anything on the way out
    assert status == -signal.SIGKILL
    warnings = [ln for ln in tail.stderr().splitlines() if "warning" in ln]
    assert len(warnings) == 2, warnings  # one line per bad file, nothing else
    assert sum("notes.xml" in ln and "not a report" in ln for ln in warnings) == 1
    assert sum("truncated.xml.gz" in ln for ln in warnings) == 1

    tail = Tail(tmp_path, *args)  # the counters continue from the ledger: no reset, nothing twice
    try:
        time.sleep(2.5)  # rescans of the directory
        assert tail.metrics() == before
        drop(REPORTS / NET_DAY1, rep / NET_DAY1)
        drop(REPORTS / TLS_DAY2, rep / TLS_DAY2)
        (rep / "example.com.xml").write_text(report([record(count=5, header_from="example.com")],
                                                   domain="example.com", report_id="com-1"))
        wait_for(lambda: tail.messages(policy_domain="example.net") == 32, 15, "the RFC 9990 report")
        wait_for(lambda: tail.messages(policy_domain=OTHER) == 5, 15, "an unlisted domain as 'other'")
        wait_for(lambda: tail.value("logscope_tlsrpt_sessions_total", result="success") == 260, 15, "TLS day 2")
        assert tail.messages(policy_domain="example.org") == 98 + 11 + 7
        assert tail.messages(policy_domain="example.net", dkim_aligned="fail", spf_aligned="fail") == 2
        assert not any(("policy_domain", "example.com") in k for k in tail.metrics())
    finally:
        assert tail.stop() == 0
    assert "warning" not in tail.stderr()


def mail_with_report(path: Path, name: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "dmarc-noreply@mbp.example"
    msg["To"] = "dmarc@example.org"
    msg["Subject"] = f"Report Domain: example.org Submitter: mbp.example Report-ID: {name}"
    msg.set_content("DMARC aggregate report attached.")
    msg.add_attachment(gzip.compress(path.read_bytes(), mtime=0), maintype="application", subtype="gzip",
                       filename=name + ".gz")
    return msg.as_bytes()


def test_maildir_message_moved_from_new_to_cur_counts_once(tmp_path):
    md = tmp_path / "Maildir" / ".DMARC"
    for sub in ("tmp", "new", "cur"):
        (md / sub).mkdir(parents=True)
    tail = Tail(tmp_path, "--from-start", "--dmarc-dir", str(md))
    try:
        (md / "tmp" / "1735.M1.mx").write_bytes(mail_with_report(REPORTS / ORG_DAY1, ORG_DAY1))
        time.sleep(1.5)
        assert tail.messages() == 0  # a delivery in progress (tmp/) is not read
        os.rename(md / "tmp" / "1735.M1.mx", md / "new" / "1735.M1.mx")  # the MDA's atomic delivery
        wait_for(lambda: tail.messages() == 139, 15, "the delivered message")
        os.rename(md / "new" / "1735.M1.mx", md / "cur" / "1735.M1.mx:2,S")  # the user read it
        (md / "tmp" / "1736.M2.mx").write_bytes(mail_with_report(REPORTS / ORG_DAY2, ORG_DAY2))
        os.rename(md / "tmp" / "1736.M2.mx", md / "new" / "1736.M2.mx")
        wait_for(lambda: tail.messages() == 139 + 116, 15, "the second message")
        time.sleep(1.5)
        assert tail.messages() == 139 + 116
        assert tail.value("logscope_dmarc_files_total", result="ok") == 2
        assert tail.value("logscope_dmarc_duplicate_reports_total") == 0
        # without --dmarc-domain, domains are labelled as seen (up to a bound)
        assert tail.messages(policy_domain="example.org") == 139 + 116
    finally:
        assert tail.stop() == 0
    assert "warning" not in tail.stderr()


def run_once(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    log = tmp_path / "mail.log"
    log.touch()
    return subprocess.run([sys.executable, "-m", "logscope", "tail", str(log), "--once", "--no-metrics",
                           "--no-alerts", "--state-dir", str(tmp_path / "state"), *args],
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=120)


def test_once_reads_the_directory_and_keeps_the_ledger(tmp_path):
    rep = tmp_path / "reports"
    shutil.copytree(REPORTS, rep)
    first = run_once(tmp_path, "--from-start", "--dmarc-dir", str(rep))
    assert first.returncode == 0, first.stderr
    assert "5 report files" in first.stderr
    ledger = json.loads((tmp_path / "state" / "tail.dmarc.json").read_text())
    counters = {tuple(row[:-1]): row[-1] for row in ledger["counters"]["logscope_dmarc_messages_total"]}
    assert sum(counters.values()) == 139 + 116 + 32
    assert counters[("example.net", "none", "fail", "fail")] == 2
    assert len(ledger["files"]) == 5 and len(ledger["dmarc_reports"]) == 3 and len(ledger["tls_reports"]) == 2
    again = run_once(tmp_path, "--dmarc-dir", str(rep))
    assert again.returncode == 0 and "0 report files" in again.stderr, again.stderr
    assert json.loads((tmp_path / "state" / "tail.dmarc.json").read_text())["counters"] == ledger["counters"]


def test_first_run_from_end_takes_existing_reports_as_read(tmp_path):
    rep = tmp_path / "reports"
    shutil.copytree(REPORTS, rep)
    proc = run_once(tmp_path, "--dmarc-dir", str(rep))
    assert proc.returncode == 0 and "0 report files" in proc.stderr, proc.stderr
    ledger = json.loads((tmp_path / "state" / "tail.dmarc.json").read_text())
    assert len(ledger["files"]) == 5 and not ledger["dmarc_reports"]


def test_missing_report_directory_is_a_usage_error(tmp_path):
    proc = run_once(tmp_path, "--dmarc-dir", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"logscope: --dmarc-dir {tmp_path / 'nope'}: no such directory"]


def test_domain_labels_are_bounded():
    fixed = DomainLabels(["Example.org.", "example.net"])
    assert [fixed(d) for d in ("example.org", "example.net", "example.com", None, "")] == \
        ["example.org", "example.net", OTHER, OTHER, OTHER]
    seen = DomainLabels()
    hostile = ["evil\ndomain", "a" * 300, 'x"} 1\nfake_metric{a="', "ünïcode.example", "other", "..", "-"]
    assert {seen(d) for d in hostile} == {OTHER}
    names = [f"d{i}.example" for i in range(DEFAULT_MAX_DOMAINS + 50)]
    labels = [seen(d) for d in names]
    assert labels[:DEFAULT_MAX_DOMAINS] == names[:DEFAULT_MAX_DOMAINS]
    assert set(labels[DEFAULT_MAX_DOMAINS:]) == {OTHER}
    assert seen(names[0]) == names[0]  # the first ones keep their label


def test_config_keys(tmp_path):
    """dmarc_dirs and dmarc_domains in the config file (logscope.config.Config needs both fields)."""
    rep = tmp_path / "reports"
    shutil.copytree(REPORTS, rep)
    conf = tmp_path / "config.toml"
    conf.write_text(f'dmarc_dirs = ["{rep}"]\ndmarc_domains = ["example.net"]\n')
    proc = run_once(tmp_path, "--from-start", "--config", str(conf))
    assert proc.returncode == 0 and "5 report files" in proc.stderr, proc.stderr
    ledger = json.loads((tmp_path / "state" / "tail.dmarc.json").read_text())
    counters = {tuple(row[:-1]): row[-1] for row in ledger["counters"]["logscope_dmarc_messages_total"]}
    assert {k[0] for k in counters} == {"example.net", OTHER}
    assert sum(v for k, v in counters.items() if k[0] == OTHER) == 139 + 116


def test_reports_only_without_a_log_runs_until_sigterm(tmp_path):
    """`tail --dmarc-dir DIR` and no log file (and no --journal): it keeps watching the reports."""
    rep = tmp_path / "reports"
    rep.mkdir()
    tail = Tail(tmp_path, "--dmarc-dir", str(rep), follow_log=False)
    try:
        time.sleep(2.5)  # two safety wake-ups of the loop with no input to read
        assert tail.proc.poll() is None, tail.stderr()
        drop(REPORTS / ORG_DAY1, rep / ORG_DAY1)
        wait_for(lambda: tail.messages(policy_domain="example.org") == 139, 15, "the report in /metrics")
        drop(REPORTS / TLS_DAY1, rep / TLS_DAY1)
        wait_for(lambda: tail.value("logscope_tlsrpt_sessions_total", result="success") == 140, 15, "the TLS report")
        assert tail.proc.poll() is None
    finally:
        status = tail.stop()
    assert status == 0, tail.stderr()
    assert "only DMARC reports in" in tail.stderr()
    assert "warning" not in tail.stderr() and "error" not in tail.stderr()
    ledger = json.loads((tmp_path / "state" / "tail.dmarc.json").read_text())
    assert len(ledger["dmarc_reports"]) == 1 and len(ledger["tls_reports"]) == 1


def test_no_log_and_no_report_directory_is_still_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "logscope", "tail", "--state-dir", str(tmp_path / "state")],
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("logscope: nothing to follow"), proc.stderr


def test_sighup_reloads_dmarc_domains_from_the_config(tmp_path):
    """SIGHUP re-reads dmarc_domains: counters are relabelled as a restart would (a domain no longer listed
    moves to 'other', nothing is lost), new reports get the new labels; a broken config keeps the old list."""
    rep = tmp_path / "reports"
    rep.mkdir()
    conf = tmp_path / "config.toml"
    conf.write_text('dmarc_domains = ["example.net"]\n')
    tail = Tail(tmp_path, "--config", str(conf), "--dmarc-dir", str(rep))
    try:
        drop(REPORTS / NET_DAY1, rep / NET_DAY1)
        drop(REPORTS / ORG_DAY2, rep / ORG_DAY2)
        wait_for(lambda: tail.messages() == 32 + 116, 15, "two reports")
        assert tail.messages(policy_domain="example.net") == 32
        assert tail.messages(policy_domain=OTHER) == 116  # example.org is not listed (yet)

        conf.write_text('dmarc_domains = ["example.org"]\n')
        tail.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "DMARC policy domains now example.org" in tail.stderr(), 15, "the reload")
        assert tail.messages(policy_domain=OTHER) == 32 + 116  # example.net's counts moved, none lost
        assert not any(("policy_domain", "example.net") in k for k in tail.metrics())
        assert tail.value("logscope_dmarc_reports_total", policy_domain=OTHER) == 2
        drop(REPORTS / ORG_DAY1, rep / ORG_DAY1)
        wait_for(lambda: tail.messages(policy_domain="example.org") == 139, 15, "example.org under its name")
        assert tail.messages() == 32 + 116 + 139

        conf.write_text('dmarc_domains = "example.net"  # not a list\n')
        tail.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "DMARC policy domains unchanged" in tail.stderr(), 15, "the refused reload")
        assert tail.messages(policy_domain="example.org") == 139  # the old list stays
        assert tail.proc.poll() is None
        after = tail.metrics()
    finally:
        assert tail.stop() == 0
    errors = [ln for ln in tail.stderr().splitlines() if "error" in ln]
    assert len(errors) == 1 and "config.toml" in errors[0], errors

    conf.write_text('dmarc_domains = ["example.org"]\n')
    tail = Tail(tmp_path, "--config", str(conf), "--dmarc-dir", str(rep))  # the ledger has the relabelled counts
    try:
        assert tail.metrics() == after
    finally:
        assert tail.stop() == 0


def test_sighup_reloads_dmarc_dirs_from_the_config(tmp_path):
    """SIGHUP re-reads dmarc_dirs, as a restart with the new config would: the first directory listed starts
    the report watcher, an added directory is watched (reports already in it are history, as on a first start),
    a removed one is not read any more and keeps its counts; a report counted before is never counted again;
    a restart after SIGKILL continues the counters."""
    first, second = tmp_path / "reports-a", tmp_path / "reports-b"
    first.mkdir()
    second.mkdir()
    conf = tmp_path / "config.toml"
    domains = 'dmarc_domains = ["example.org", "example.net"]\n'

    def config(*dirs: Path) -> None:
        conf.write_text(domains + "dmarc_dirs = [" + ", ".join(f'"{d}"' for d in dirs) + "]\n")

    def hup(expected: str) -> None:
        tail.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: tail.stderr().count(expected) == 1, 15, f"the reload ({expected})")

    config()
    tail = Tail(tmp_path, "--config", str(conf))
    try:
        assert tail.metrics() == {}  # no report directory yet: no report watcher, no families
        drop(REPORTS / ORG_DAY1, first / ORG_DAY1)  # there before the directory is listed: history
        config(first)
        hup(f"SIGHUP: watching DMARC report directories {first}")
        drop(REPORTS / ORG_DAY2, first / ORG_DAY2)
        wait_for(lambda: tail.messages() == 116, 15, "a report in the first directory listed")
        assert tail.messages(policy_domain="example.org") == 116

        drop(REPORTS / NET_DAY1, second / NET_DAY1)  # history too
        config(second)
        hup(f"SIGHUP: DMARC report directories added {second}; no longer watched {first}")
        drop(REPORTS / TLS_DAY1, first / TLS_DAY1)  # no longer watched: not read
        drop(REPORTS / ORG_DAY2, second / "day2-again.xml")  # a report counted before, in the new directory
        drop(REPORTS / TLS_DAY2, second / TLS_DAY2)
        wait_for(lambda: tail.value("logscope_tlsrpt_sessions_total", result="success") == 120, 15,
                 "a report in the added directory")
        wait_for(lambda: tail.value("logscope_dmarc_duplicate_reports_total") == 1, 15, "the duplicate")
        time.sleep(1.5)  # time enough for a report in the removed directory to show up if it were read
        assert tail.value("logscope_tlsrpt_sessions_total", result="success") == 120
        assert tail.messages() == 116  # the removed directory's counts stay; history and the duplicate do not count
        assert tail.value("logscope_dmarc_files_total", result="ok") == 3

        config(first, second)  # back: what it holds now (its counted report, the one dropped meanwhile) is history
        hup(f"SIGHUP: DMARC report directories added {first}")
        (first / "com.xml").write_text(report([record(count=5, header_from="example.com")],
                                              domain="example.com", report_id="com-1"))
        wait_for(lambda: tail.messages(policy_domain=OTHER) == 5, 15, "a report in the directory listed again")
        time.sleep(1.5)
        assert tail.messages() == 116 + 5
        assert tail.value("logscope_tlsrpt_sessions_total", result="success") == 120
        before = tail.metrics()
    finally:
        status = tail.stop(signal.SIGKILL)
    assert status == -signal.SIGKILL
    assert "warning" not in tail.stderr() and "error" not in tail.stderr(), tail.stderr()
    ledger = json.loads((tmp_path / "state" / "tail.dmarc.json").read_text())
    assert ledger["dirs"] == [str(first), str(second)]

    tail = Tail(tmp_path, "--config", str(conf))  # the ledger has the counters and the directories
    try:
        assert tail.metrics() == before
        time.sleep(2.5)  # rescans: nothing in either directory is new
        assert tail.metrics() == before
    finally:
        assert tail.stop() == 0
    assert "warning" not in tail.stderr()
