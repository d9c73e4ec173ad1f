"""A real Alertmanager (Debian's prometheus-alertmanager) on 127.0.0.1 receives logscope's alerts
through its v2 API; the tests read them back from /api/v2/alerts: firing, silenced, resolved, and
delivered after Alertmanager was down when the alert fired."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from logscope.alerts.engine import AlertEngine
from logscope.alerts.notify import AlertmanagerNotifier
from logscope.alerts.rules import loads
from logscope.engine import parse_lines
from logscope.header import HeaderOptions

from .test_alerts import free_port
from .test_prometheus import wait_for

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
pytestmark = pytest.mark.skipif(ALERTMANAGER is None, reason="Alertmanager not installed "
                                "(Debian: apt-get install prometheus-alertmanager)")

RULES = """
[defaults]
eval_interval = "1s"

[[rule]]
name = "auth_without_tls"
where = 'kind == "smtpd_disconnect" and sasl and not tls'
group_by = ["client_ip"]
window = "10m"
condition = "count() > 0"
severity = "critical"
labels = { team = "mail" }
summary = "{{ value|fmt }} authentications without TLS from {{ client_ip }}"
"""


def get(url: str):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read() or b"null")


def post(url: str, doc) -> dict:
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read() or b"null")




class Alertmanager:
    def __init__(self, tmp_path, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        conf = tmp_path / "alertmanager.yml"
        conf.write_text("route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n")
        (tmp_path / "data").mkdir(exist_ok=True)
        self.log = open(tmp_path / "alertmanager.log", "wb")
        self.proc = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={conf}", f"--storage.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200, what="alertmanager")

    def alerts(self) -> list[dict]:
        return get(f"{self.url}/api/v2/alerts")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def am(tmp_path):
    server = Alertmanager(tmp_path, free_port())
    yield server
    server.stop()


def session(t: datetime, ip: str) -> str:
    return (f"{t.strftime('%Y-%m-%dT%H:%M:%S')}+00:00 mx1 postfix/smtpd[2101]: disconnect from c.example[{ip}] "
            f"ehlo=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=6")


def engine_for(url: str, clock, window: str = "10m"):
    rules = loads(RULES.replace('window = "10m"', f'window = "{window}"') + f'\n[[notifier]]\ntype = "alertmanager"\nurl = "{url}"\nretry_initial = "100ms"\n'
                          f'retry_max = "500ms"\nresend_interval = "2s"\n')
    return AlertEngine(rules, clock=clock)


def add(engine, lines):
    from logscope.parsers import load
    engine.add(parse_lines(pl.DataFrame({"line": lines}), load(), HeaderOptions(tz="UTC")))


def ours(alerts):
    return [a for a in alerts if a["labels"].get("alertname") == "auth_without_tls"]


def test_alertmanager_receives_firing_silenced_and_resolved(am):
    # real time throughout: Alertmanager judges startsAt/endsAt by its own clock
    now = datetime.now(timezone.utc).replace(microsecond=0)
    clock = [now.timestamp()]
    engine = engine_for(am.url, lambda: clock[0], window="3s")
    try:
        add(engine, [session(now - timedelta(seconds=1), "203.0.113.7")])
        assert [tr.status for tr in engine.tick()] == ["firing"]
        (alert,) = wait_for(lambda: ours(am.alerts()), what="the alert in Alertmanager")
        assert alert["labels"] == {"alertname": "auth_without_tls", "severity": "critical", "team": "mail",
                                   "client_ip": "203.0.113.7"}
        assert alert["annotations"]["summary"] == "1 authentications without TLS from 203.0.113.7"
        assert alert["status"]["state"] == "active"
        assert datetime.fromisoformat(alert["startsAt"].replace("Z", "+00:00")) == now
        # silences are Alertmanager's business: a silence on the label suppresses it there
        post(f"{am.url}/api/v2/silences", {
            "matchers": [{"name": "client_ip", "value": "203.0.113.7", "isRegex": False, "isEqual": True}],
            "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "test", "comment": "known"})
        wait_for(lambda: ours(am.alerts())[0]["status"]["state"] == "suppressed", what="silenced")
        # the window passes: resolved, and Alertmanager no longer lists it as active
        time.sleep(max(0.0, now.timestamp() + 3 - time.time()))
        clock[0] = max(time.time(), now.timestamp() + 3)
        assert [tr.status for tr in engine.tick()] == ["resolved"]
        wait_for(lambda: ours(am.alerts()) == [], what="the alert resolved in Alertmanager")
        wait_for(lambda: engine.stats()["notifiers"]["alertmanager"]["sent"] >= 2, what="the sent count")
        assert engine.stats()["notifiers"]["alertmanager"]["failed"] == 0
    finally:
        engine.close(2)


def test_alertmanager_down_then_up_gets_the_alert(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    now = datetime.now(timezone.utc).replace(microsecond=0)
    clock = [now.timestamp()]
    engine = engine_for(url, lambda: clock[0])
    server = None
    try:
        add(engine, [session(now - timedelta(seconds=5), "198.51.100.9")])
        started = time.monotonic()
        assert [tr.status for tr in engine.tick()] == ["firing"]
        assert time.monotonic() - started < 1  # evaluation does not wait for the dead endpoint
        wait_for(lambda: engine.stats()["notifiers"]["alertmanager"]["failed"] >= 2, what="failed deliveries")
        assert engine.stats()["notifiers"]["alertmanager"]["sent"] == 0
        server = Alertmanager(tmp_path, port)
        (alert,) = wait_for(lambda: ours(server.alerts()), what="the retried alert")
        assert alert["labels"]["client_ip"] == "198.51.100.9"
        # Alertmanager lists it before our thread has read the response: wait for the count
        wait_for(lambda: engine.stats()["notifiers"]["alertmanager"]["sent"] >= 1, what="the sent count")
    finally:
        engine.close(2)
        if server is not None:
            server.stop()


def test_resolved_while_down_is_delivered_later(tmp_path):
    """Fired and resolved while Alertmanager was down: the resolution still reaches it (nothing stays active)."""
    port = free_port()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    n = AlertmanagerNotifier({"type": "alertmanager", "url": f"http://127.0.0.1:{port}", "retry_initial": "100ms",
                              "retry_max": "300ms"}, lambda *a: None)
    server = None
    try:
        firing = {"status": "firing", "labels": {"alertname": "auth_without_tls", "client_ip": "192.0.2.1"},
                  "annotations": {"summary": "x"}, "startsAt": now.isoformat().replace("+00:00", "Z"),
                  "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "f", "value": 1.0}
        n.sync([firing], now.timestamp(), True)
        resolved = dict(firing, status="resolved", endsAt=now.isoformat().replace("+00:00", "Z"))
        n.sync([resolved], now.timestamp() + 1, True)
        wait_for(lambda: n.stats()["failed"] >= 1, what="a failed delivery")
        server = Alertmanager(tmp_path, port)
        assert n.flush(15)
        time.sleep(0.5)
        assert ours(server.alerts()) == []
        assert n.stats()["sent"] == 1
    finally:
        n.close(1)
        if server is not None:
            server.stop()
