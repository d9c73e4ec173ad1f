"""`logscope tail` end to end: a real Prometheus scrapes it while it follows the sample logs; the live view."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import urllib.parse

import polars as pl

from logscope.engine import parse_lines
from logscope.header import HeaderOptions
from logscope.sinks.live import LiveView

from .conftest import REPO, SAMPLES
from .test_prometheus import PROMETHEUS, fetch, free_port, need, wait_for


def test_prometheus_scrapes_tail_fed_with_the_samples(tmp_path):
    need(PROMETHEUS, "prometheus")
    log = tmp_path / "maillog"
    sample = (SAMPLES / "maillog").read_text()
    log.write_text(sample[: len(sample) // 2].rsplit("\n", 1)[0] + "\n")
    mport, pport = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    tail = subprocess.Popen([sys.executable, "-m", "logscope", "tail", str(log), "--from-start", "--tz", "UTC",
                             "--state-dir", str(tmp_path / "state"), "--listen", f"127.0.0.1:{mport}", "--no-live"],
                            env=env, stderr=subprocess.PIPE, text=True)
    (tmp_path / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: logscope
    static_configs: [{{targets: ["127.0.0.1:{mport}"]}}]
""")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{pport}",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def query(q: str) -> float | None:
            url = f"http://127.0.0.1:{pport}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            res = json.loads(fetch(url)[2])["data"]["result"]
            return float(res[0]["value"][1]) if res else None

        total = len(sample.splitlines())
        first = len(log.read_text().splitlines())
        wait_for(lambda: query("sum(logscope_events_total)") == first, 60, "the first half in Prometheus")
        with open(log, "a") as fh:  # the rest arrives while tail runs
            fh.write(sample[len(log.read_text()):])
        wait_for(lambda: query("sum(logscope_events_total)") == total, 60, "every line in Prometheus")
        wait_for(lambda: query("sum(logscope_input_lines_total)") == total, 30, "the self-metrics")
        events = parse_lines(sample.splitlines(), __import__("logscope.parsers", fromlist=["load"]).load(),
                             HeaderOptions(tz="UTC"))
        connects = events.filter((pl.col("kind") == "smtpd_connect") & (pl.col("daemon") == "smtpd")).height
        assert query("sum(postfix_smtpd_connects_total)") == connects
        assert query("sum(logscope_smtpd_sessions_total)") > 0
        assert 0 < query('sum(logscope_smtpd_sessions_total{tls="yes"}) / sum(logscope_smtpd_sessions_total)') < 1
        assert query("sum(logscope_rejects_total)") > 0
    finally:
        prom.terminate()
        tail.send_signal(signal.SIGTERM)
        assert tail.wait(30) == 0, tail.stderr.read()
        prom.wait(30)


def test_live_view_counts_and_neutralises_text(parser_set):
    from logscope.classify import load_classes
    out = io.StringIO()
    view = LiveView(stream=out, classes=load_classes())
    lines = (SAMPLES / "maillog").read_text().splitlines()
    view.add(parse_lines(lines, parser_set, HeaderOptions(tz="UTC")))
    view.alert("password guessing from 192.0.2.1 \x1b[2J\x07<b>")
    snap = view.snapshot()
    assert snap["total"] == len(lines) and snap["sessions"] > 0 and 0 < snap["tls_pct"] < 100
    assert snap["rejects"] and snap["rejects"][0][1] >= snap["rejects"][-1][1]
    view.draw()
    screen = out.getvalue()
    assert screen.startswith("\x1b[H\x1b[J") and "SMTP" in screen and "rejects" in screen
    assert "\x1b[2J" not in screen and "\x07" not in screen  # only our own cursor codes reach the terminal


def test_tail_fires_alerts_to_a_webhook(tmp_path):
    """The alert engine runs inside tail: a rule over the sample fires and reaches a real HTTP receiver."""
    import http.server
    import threading

    from .test_alerts import Hook

    class H(Hook):
        received = []
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rules = tmp_path / "rules.toml"
    rules.write_text(f'''
[[rule]]
name = "many_rejects"
where = 'kind == "reject"'
window = "100000d"
condition = "count() > 3"
severity = "warning"
summary = "{{{{ value }}}} rejects"

[[notifier]]
type = "webhook"
url = "http://127.0.0.1:{port}/hook"
''')
    env = dict(os.environ, PYTHONPATH=str(REPO))
    try:
        proc = subprocess.run([sys.executable, "-m", "logscope", "tail", str(SAMPLES / "maillog"), "--from-start", "--once",
                               "--tz", "UTC", "--no-metrics", "--state-dir", str(tmp_path / "state"), "--alerts", str(rules)],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        wait_for(lambda: H.received, 15, "the webhook")
        body = H.received[0][1]
        assert body["alerts"][0]["labels"]["alertname"] == "many_rejects" and body["status"] == "firing"
        bad = subprocess.run([sys.executable, "-m", "logscope", "tail", str(SAMPLES / "maillog"), "--once", "--no-metrics",
                              "--state-dir", str(tmp_path / "state2"), "--alerts", str(tmp_path / "nope.toml")],
                             env=env, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "nope.toml" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        server.shutdown()
