"""dashboards/: the Grafana dashboard and the alert rules against a real Prometheus scraping
`logscope tail` fed with the sample logs. Every PromQL expression must be valid; every dashboard
panel expression must return data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import yaml

from .conftest import REPO, SAMPLES
from .test_prometheus import PROMETHEUS, fetch, free_port, need, wait_for

DASHBOARD = REPO / "dashboards" / "logscope.json"
RULES = REPO / "dashboards" / "alerts.rules.yml"
SCRAPE = REPO / "dashboards" / "prometheus.yml"
LOGS = ("maillog", "postfix.log", "dovecot.log", "exim.log", "rspamd.log", "cisco_asa.log")
# sample_logs/dmarc: the first day's reports are there at the start, the second day's arrive later
REPORTS = SAMPLES / "dmarc"
REPORTS_LATER = ("mbp.example!example.org!1735776000!1735862399.xml", "mbp.example!example.org!2025-01-02!tlsrpt.json.gz")
REPORTED_MESSAGES = 139 + 32 + 116
# what Grafana substitutes before it sends a query
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "5m", '"$instance"': '".+"'}


def panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out += [p] if p["type"] != "row" else p.get("panels", [])
    return [p for p in out if p["type"] != "row"]


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables substituted) of every panel target."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for p in panels(dash):
        for t in p["targets"]:
            q = t["expr"]
            for var, val in GRAFANA_VARS.items():
                q = q.replace(var, val)
            assert "$" not in q, (p["title"], q)
            out.append((p["title"], q))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in doc["groups"] for r in g["rules"]]


def exported_names() -> set[str]:
    from logscope.sinks import dmarc
    from logscope.sinks.metrics import MetricsSink
    from prometheus_client.parser import text_string_to_metric_families
    sink = MetricsSink()
    dmarc.DmarcSink([], Path(os.devnull), print).register(sink.registry)  # tail --dmarc-dir
    return {f.name for f in text_string_to_metric_families(sink.exposition().decode())}


def test_dashboard_is_importable_and_uses_only_exported_metrics():
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ps = panels(dash)
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    for p in ps:
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
    names = exported_names()
    used = set()
    for title, q in dashboard_exprs():
        for m in re.findall(r"\b((?:logscope|postfix)_[a-z_]+)", q):
            base = re.sub(r"_(bucket|sum|count|total|created)$", "", m)
            assert base in names or m in names, (title, m)
            used.add(base)
    # the panels: traffic, TLS, rejects, auth, dovecot, exim, rspamd, ASA, logscope's health
    for family in ("logscope_postfix_deliveries", "logscope_smtpd_sessions", "postfix_smtp_tls_connections",
                   "logscope_rejects", "logscope_auth_failures", "logscope_dovecot_logins", "logscope_exim_arrivals",
                   "logscope_rspamd_actions", "logscope_asa_events", "logscope_input_lines",
                   "logscope_unparsed_lines", "logscope_checkpoint_age_seconds", "logscope_dmarc_messages",
                   "logscope_tlsrpt_sessions", "logscope_tlsrpt_failures", "logscope_dmarc_files",
                   "logscope_dmarc_newest_report_timestamp_seconds"):
        assert family in used, family


def test_every_expression_runs_on_prometheus_scraping_tail(tmp_path):
    need(PROMETHEUS, "prometheus")
    logs = tmp_path / "logs"
    logs.mkdir()
    texts = {}
    for name in LOGS:  # the first half now, the rest while Prometheus scrapes: rates become non-zero
        texts[name] = (SAMPLES / name).read_text()
        (logs / name).write_text(texts[name][: len(texts[name]) // 2].rsplit("\n", 1)[0] + "\n")
    reports = tmp_path / "reports"
    reports.mkdir()
    for path in REPORTS.iterdir():
        if path.name not in REPORTS_LATER:
            shutil.copy(path, reports)
    mport, pport = free_port(), free_port()
    tail = subprocess.Popen([sys.executable, "-m", "logscope", "tail", *(str(logs / n) for n in LOGS), "--from-start",
                             "--tz", "UTC", "--state-dir", str(tmp_path / "state"), "--listen", f"127.0.0.1:{mport}",
                             "--no-live", "--no-alerts", "--dmarc-dir", str(reports)],
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stderr=subprocess.PIPE, text=True)
    # the shipped example, pointed at the test's tail, scraping every second
    conf = yaml.safe_load(SCRAPE.read_text())
    conf["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    conf["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{mport}"]}]
    shutil.copy(RULES, tmp_path / conf["rule_files"][0])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(conf))
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{pport}",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def api(q: str) -> dict:
            url = f"http://127.0.0.1:{pport}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            return json.loads(fetch(url)[2])

        def total(q: str) -> float | None:
            res = api(q)["data"]["result"]
            return float(res[0]["value"][1]) if res else None

        first = sum(len((logs / n).read_text().splitlines()) for n in LOGS)
        wait_for(lambda: total("sum(logscope_input_lines_total)") == first, 60, "the first halves in Prometheus")
        wait_for(lambda: total("sum(logscope_dmarc_files_total)") == 3, 60, "the first day's reports in Prometheus")
        time.sleep(2)  # a few scrapes of the first state
        for name in LOGS:
            with open(logs / name, "a") as fh:
                fh.write(texts[name][len((logs / name).read_text()):])
        for name in REPORTS_LATER:
            shutil.copy(REPORTS / name, reports)
        lines = sum(len(t.splitlines()) for t in texts.values())
        wait_for(lambda: total("sum(logscope_input_lines_total)") == lines, 60, "every line in Prometheus")
        wait_for(lambda: total("sum(logscope_dmarc_messages_total)") == REPORTED_MESSAGES, 60,
                 "every report in Prometheus")
        time.sleep(3)  # series born in the second halves need two samples for rate()
        # the rule file was loaded: Prometheus evaluates the same expressions
        rules = json.loads(fetch(f"http://127.0.0.1:{pport}/api/v1/rules")[2])["data"]["groups"]
        assert sum(len(g["rules"]) for g in rules) == len(rule_exprs())

        empty, nan = [], []
        for title, q in dashboard_exprs():
            res = api(q)
            assert res["status"] == "success", (title, q, res)
            if not res["data"]["result"]:
                empty.append((title, q))
            elif not any(s["value"][1] not in ("NaN", "+Inf", "-Inf") for s in res["data"]["result"]):
                nan.append((title, q))
        assert not empty, f"panel expressions without data: {empty}"
        assert not nan, f"panel expressions with only NaN/Inf: {nan}"
        for name, q in rule_exprs():
            res = api(q)
            assert res["status"] == "success", (name, q, res)
        # a wrong expression is really reported as such (the checks above can fail)
        assert api("sum(rate(logscope_events_total[1m])")["status"] == "error"
    finally:
        prom.terminate()
        tail.send_signal(signal.SIGTERM)
        assert tail.wait(30) == 0, tail.stderr.read()
        prom.wait(30)
