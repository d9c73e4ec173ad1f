"""The Prometheus side: the /metrics endpoint (plain, TLS, basic auth), promtool, a real
Prometheus server scraping it, and name/label/value compatibility with Debian's
prometheus-postfix-exporter run on the same lines.

Real components only, all on 127.0.0.1; each test that needs a binary skips with
the Debian package to install when it is absent.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from logscope.engine import parse_lines
from logscope.errors import UsageError
from logscope.samples import SAMPLE_OPTIONS, read_expectations
from logscope.sinks.http import DEFAULT_PORT, MetricsServer, load_web_config, parse_listen
from logscope.sinks.metrics import MetricsSink

from .conftest import SAMPLES
from .test_metrics import PF, grep, sample_lines, samples, value

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
POSTFIX_EXPORTER = shutil.which("prometheus-postfix-exporter")
OPENSSL = shutil.which("openssl")


def need(binary: str | None, what: str) -> None:
    if binary is None:
        pytest.skip(f"{what} not installed (Debian: apt-get install {what})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, headers: dict | None = None, context: ssl.SSLContext | None = None,
          method: str = "GET") -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def wait_for(check, timeout: float = 30.0, what: str = "condition"):
    """Poll ``check()`` until it returns something truthy; its last value or a failure."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            pass
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def lines():
    return sample_lines()


@pytest.fixture(scope="module")
def sink(lines, parser_set):
    s = MetricsSink()
    s.add(parse_lines(lines, parser_set, SAMPLE_OPTIONS))
    return s


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A self-signed server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""
    need(OPENSSL, "openssl")
    d = tmp_path_factory.mktemp("certs")
    for name, cn in (("server", "127.0.0.1"), ("client", "scraper")):
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", f"/CN={cn}", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.crt")],
                       check=True, capture_output=True)
    return d


def bcrypt_hash(password: str) -> str:
    bcrypt = pytest.importorskip("bcrypt", reason="basic auth needs the bcrypt package")
    # cost 4 keeps the test fast; the format is exporter-toolkit's ($2y$ as htpasswd writes it)
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)


def write_web_config(d: Path, text: str) -> Path:
    p = d / "web-config.yml"
    p.write_text(text)
    return p


# ------------------------------------------------------------------ exposition

def test_promtool_accepts_the_exposition(sink):
    need(PROMTOOL, "prometheus")  # promtool ships in Debian's prometheus package
    res = subprocess.run([PROMTOOL, "check", "metrics"], input=sink.exposition(), capture_output=True, timeout=60)
    assert res.returncode == 0, (res.stdout + res.stderr).decode()


def test_endpoint_plain_http(sink):
    with MetricsServer(sink.registry, "127.0.0.1:0") as srv:
        host, port = srv.address
        base = f"http://127.0.0.1:{port}"
        status, headers, body = fetch(base + "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert value(samples(body), "postfix_smtpd_connects_total") == 352
        status, headers, body = fetch(base + "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
        assert headers["Content-Type"].startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
        status, headers, body = fetch(base + "/metrics", {"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip" and b"postfix_smtpd_connects_total 352" in gzip.decompress(body)
        assert fetch(base + "/nothing")[0] == 404
        status, headers, body = fetch(base + "/metrics", method="HEAD")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000


def test_idle_connections_cannot_exhaust_the_server(sink):
    with MetricsServer(sink.registry, "127.0.0.1:0") as srv:
        url = f"http://127.0.0.1:{srv.address[1]}/metrics"
        idle = [socket.create_connection(("127.0.0.1", srv.address[1])) for _ in range(40)]
        try:
            time.sleep(0.3)
            with pytest.raises((http.client.HTTPException, ConnectionError, urllib.error.URLError)):
                fetch(url)
        finally:
            for c in idle:
                c.close()
        assert wait_for(lambda: fetch(url)[0] == 200, timeout=10, what="server free again")


def test_endpoint_tls_and_basic_auth(sink, certs, tmp_path):
    conf = write_web_config(tmp_path, f"""
tls_server_config:
  cert_file: {certs / 'server.crt'}
  key_file: {certs / 'server.key'}
  min_version: TLS12
basic_auth_users:
  prometheus: {bcrypt_hash('s3cret pass')}
http_server_config:
  headers:
    X-Content-Type-Options: nosniff
""")
    ctx = ssl.create_default_context(cafile=str(certs / "server.crt"))
    with MetricsServer(sink.registry, "127.0.0.1:0", conf) as srv:
        url = f"https://127.0.0.1:{srv.address[1]}/metrics"
        status, headers, _ = fetch(url, context=ctx)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert fetch(url, basic("prometheus", "wrong"), ctx)[0] == 401
        assert fetch(url, basic("nobody", "s3cret pass"), ctx)[0] == 401
        assert fetch(url, {"Authorization": "Basic !!!"}, ctx)[0] == 401
        for _ in range(2):  # the second time from the verified-credentials cache
            status, headers, body = fetch(url, basic("prometheus", "s3cret pass"), ctx)
            assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
            assert value(samples(body), "postfix_smtpd_connects_total") == 352
        # plain HTTP to the TLS port gets no answer
        with pytest.raises((http.client.HTTPException, ConnectionError, urllib.error.URLError)):
            fetch(url.replace("https:", "http:"), basic("prometheus", "s3cret pass"))


def test_endpoint_requires_client_certificate(sink, certs, tmp_path):
    conf = write_web_config(tmp_path, """
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: client.crt
""")
    for name in ("server.crt", "server.key", "client.crt"):  # relative paths: to the config's directory
        shutil.copy(certs / name, tmp_path / name)
    with MetricsServer(sink.registry, "127.0.0.1:0", conf) as srv:
        url = f"https://127.0.0.1:{srv.address[1]}/metrics"
        ctx = ssl.create_default_context(cafile=str(certs / "server.crt"))
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError, http.client.HTTPException)):
            fetch(url, context=ctx)
        ctx.load_cert_chain(str(certs / "client.crt"), str(certs / "client.key"))
        assert fetch(url, context=ctx)[0] == 200


def test_web_config_reload(sink, tmp_path):
    conf = write_web_config(tmp_path, f"basic_auth_users:\n  a: {bcrypt_hash('one')}\n")
    with MetricsServer(sink.registry, "127.0.0.1:0", conf) as srv:
        url = f"http://127.0.0.1:{srv.address[1]}/metrics"
        assert fetch(url, basic("a", "one"))[0] == 200
        conf.write_text(f"basic_auth_users:\n  a: {bcrypt_hash('two')}\n")
        srv.reload()
        assert fetch(url, basic("a", "one"))[0] == 401
        assert fetch(url, basic("a", "two"))[0] == 200
        conf.write_text("basic_auth_users: [oops]\n")
        with pytest.raises(UsageError):
            srv.reload()
        assert fetch(url, basic("a", "two"))[0] == 200  # the old settings stay


@pytest.mark.parametrize("text, message", [
    ("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n", "cert_file: .*nope.crt: no such file"),
    ("tls_server_config:\n  key_file: x\n", "needs cert_file and key_file"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
     "cipher_suites is not supported"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequestClientCert\n",
     "client_auth_type 'RequestClientCert' is not supported"),
    ("basic_auth_users:\n  bob: plaintext-password\n", "basic_auth_users.bob: not a bcrypt hash"),
    ("basic_auth_user:\n  bob: x\n", "unknown setting 'basic_auth_user'"),
    ("http_server_config:\n  headers:\n    Set-Cookie: a=b\n", "'Set-Cookie' is not an allowed header"),
    ("tls_server_config: [\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_web_config_errors_name_the_file(tmp_path, text, message):
    conf = write_web_config(tmp_path, text)
    with pytest.raises(UsageError, match=f"^{re.escape(str(conf))}: .*{message}"):
        load_web_config(conf)


def test_web_config_missing_file(tmp_path):
    with pytest.raises(UsageError, match="cannot read web config"):
        load_web_config(tmp_path / "absent.yml")


def test_parse_listen():
    assert parse_listen("127.0.0.1:9999") == ("127.0.0.1", 9999)
    assert parse_listen(":3904") == ("", 3904)
    assert parse_listen("[::1]:80") == ("::1", 80)
    assert parse_listen("localhost:1") == ("localhost", 1)
    assert parse_listen("8080") == ("", 8080)
    for bad in ("", "host", "1.2.3.4:99999", "a:b:c", "[::1]"):
        with pytest.raises(UsageError):
            parse_listen(bad)
    assert DEFAULT_PORT not in (9154, 9166, 3903, 9090, 9093)


def test_port_in_use_is_a_usage_error(sink):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(UsageError, match="cannot listen on 127.0.0.1:"):
            MetricsServer(sink.registry, f"127.0.0.1:{s.getsockname()[1]}").start()


# ------------------------------------------------------------------ a real Prometheus

def test_prometheus_scrapes_plain_and_tls_endpoints(sink, lines, certs, tmp_path):
    need(PROMETHEUS, "prometheus")
    conf = write_web_config(tmp_path, f"""
tls_server_config:
  cert_file: {certs / 'server.crt'}
  key_file: {certs / 'server.key'}
basic_auth_users:
  prometheus: {bcrypt_hash('scrape-me')}
""")
    plain = MetricsServer(sink.registry, "127.0.0.1:0").start()
    secure = MetricsServer(sink.registry, "127.0.0.1:0", conf).start()
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: plain
    static_configs: [{{targets: ["127.0.0.1:{plain.address[1]}"]}}]
  - job_name: tls
    scheme: https
    tls_config: {{ca_file: "{certs / 'server.crt'}"}}
    basic_auth: {{username: prometheus, password: scrape-me}}
    static_configs: [{{targets: ["127.0.0.1:{secure.address[1]}"]}}]
""")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def query(q: str) -> dict[str, float]:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            data = json.loads(fetch(url)[2])
            assert data["status"] == "success", data
            return {",".join(f"{k}={v}" for k, v in sorted(r["metric"].items())): float(r["value"][1])
                    for r in data["data"]["result"]}

        connects = len(grep(PF("smtpd") + "connect from ", lines))
        got = wait_for(lambda: (r := query("sum by (job) (postfix_smtpd_connects_total)")) and len(r) == 2 and r,
                       what="both jobs scraped")
        assert got == {"job=plain": connects, "job=tls": connects}
        assert query("sum by (job) (up)") == {"job=plain": 1.0, "job=tls": 1.0}
        tls_share = query('sum(logscope_smtpd_sessions_total{job="tls",tls="yes"}) '
                          '/ sum(logscope_smtpd_sessions_total{job="tls"})')[""]
        assert tls_share == pytest.approx(267 / 351)
        assert query('sum by (stage) (postfix_lmtp_delivery_delay_seconds_count{job="plain"})') == {
            f"stage={s}": 314.0 for s in ("before_queue_manager", "queue_manager", "connection_setup", "transmission")}
        median = query('histogram_quantile(0.5, sum by (le) '
                       '(postfix_lmtp_delivery_delay_seconds_bucket{job="plain",stage="transmission"}))')[""]
        assert 0.1 < median <= 1.0
        assert query('postfix_smtp_status_deferred{job="tls"}') == {
            "__name__=postfix_smtp_status_deferred,instance=127.0.0.1:%d,job=tls" % secure.address[1]: 2.0}
        assert query('sum(logscope_rspamd_score_bucket{job="plain",le="+Inf"})')[""] == 297
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        plain.stop()
        secure.stop()


# ------------------------------------------------------------------ postfix_exporter compatibility

# Families whose values must equal postfix_exporter's on lines it understands.
SAME_VALUES = (
    "postfix_smtpd_connects_total", "postfix_smtpd_disconnects_total", "postfix_smtpd_messages_processed_total",
    "postfix_smtpd_messages_rejected_total", "postfix_smtpd_sasl_authentication_failures_total",
    "postfix_smtpd_tls_connections_total", "postfix_smtpd_forward_confirmed_reverse_dns_errors_total",
    "postfix_smtp_tls_connections_total", "postfix_smtp_connection_timed_out_total",
    "postfix_qmgr_messages_inserted_receipients", "postfix_qmgr_messages_inserted_size_bytes",
    "postfix_qmgr_messages_removed_total", "postfix_cleanup_messages_rejected_total",
    "postfix_lmtp_delivery_delay_seconds", "postfix_pipe_delivery_delay_seconds",
)


def family_labels(text: str) -> dict[str, tuple[str, set[str]]]:
    """{family: (type, label names)} of an exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        names = {n for s in fam.samples for n in s.labels if n != "le"}
        out[fam.name] = (fam.type, names)
    return out


def test_compatible_with_postfix_exporter(parser_set, tmp_path):
    need(POSTFIX_EXPORTER, "prometheus-postfix-exporter")
    lines = read_expectations(SAMPLES / "postfix.log")[0] + (SAMPLES / "maillog").read_text().splitlines()
    # what postfix_exporter 0.3.0 reads: BSD syslog lines of programs postfix/<daemon>
    # (it skips postfix/submission/smtpd, postfix-instance/..., RFC 3339 lines)
    lines = [ln for ln in lines if re.match(r"[A-Z][a-z]{2} [ \d]\d [\d:]{8} \S+ postfix/[a-z-]+\[\d+\]: ", ln)]
    log = tmp_path / "mail.log"
    log.write_text("")
    port = free_port()
    proc = subprocess.Popen([POSTFIX_EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
                             f"--postfix.logfile_path={log}", f"--postfix.showq_path={tmp_path / 'no-showq'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_for(lambda: fetch(url)[0] == 200, what="postfix_exporter listening")
        time.sleep(0.5)  # it follows the file from its end: let the follower start first
        with log.open("a") as fh:
            fh.write("\n".join(lines) + "\n")
        connects = len(grep(PF("smtpd") + "connect from ", lines))
        removed = len(grep(PF("qmgr") + r"\w+: removed$", lines))

        def caught_up():
            text = fetch(url)[2].decode()
            got = samples(text)
            return text if (value(got, "postfix_smtpd_connects_total") == connects
                            and value(got, "postfix_qmgr_messages_removed_total") == removed) else None

        ref_text = wait_for(caught_up, what="postfix_exporter read every line")
        time.sleep(0.5)
        ref_text = fetch(url)[2].decode()
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    sink = MetricsSink()
    sink.add(parse_lines(lines, parser_set, SAMPLE_OPTIONS))
    mine_text = sink.exposition().decode()
    ref, mine = samples(ref_text), samples(mine_text)

    # 1. every family of postfix_exporter (but postfix_up, its showq scrape) has the same name,
    #    type and label names here; postfix_smtp_status_deferred is untyped (no _total suffix)
    ref_fams, mine_fams = family_labels(ref_text), family_labels(mine_text)
    ref_fams = {k: v for k, v in ref_fams.items() if k.startswith("postfix_") and k != "postfix_up"}
    assert len(ref_fams) >= 20
    for name, (typ, labels) in ref_fams.items():
        assert name in mine_fams, name
        assert mine_fams[name][0] == ("unknown" if name == "postfix_smtp_status_deferred" else typ), name
        assert set(sink.family(name).labels) == labels, name

    # 2. the same series and values where both read the lines the same way
    for prefix in SAME_VALUES:
        ref_keys = {k for k in ref if k[0].startswith(prefix)}
        assert ref_keys and ref_keys == {k for k in mine if k[0].startswith(prefix)}, prefix
        for k in ref_keys:
            assert mine[k] == pytest.approx(ref[k]), k

    # the one counter without _total: the same sample name in both expositions
    deferred = [re.search(r"^postfix_smtp_status_deferred (\S+)$", t, re.M) for t in (ref_text, mine_text)]
    assert all(deferred) and float(deferred[0][1]) == float(deferred[1][1]) == len(
        grep(PF("smtp") + r"\w+: to=.*, status=deferred", lines))

    # 3. documented differences: delays have every stage label filled (postfix_exporter
    #    0.3.0 puts all four stages under stage=""), and "lost connection after DATA
    #    (N bytes)" counts as a lost connection
    for suffix in ("_count", "_sum"):
        name = "postfix_smtp_delivery_delay_seconds" + suffix
        total = sum(v for k, v in mine.items() if k[0] == name)
        assert total == pytest.approx(ref[(name, (("stage", ""),))])
    for k, v in ref.items():
        if k[0] == "postfix_smtp_delivery_delay_seconds_bucket":
            le = dict(k[1])["le"]
            assert sum(x for m, x in mine.items() if m[0] == k[0] and dict(m[1])["le"] == le) == v
    lost = "postfix_smtpd_connections_lost_total"
    data_bytes = len(grep(PF("smtpd") + r"lost connection after DATA \(\d+ bytes\)", lines))
    assert data_bytes >= 1
    for k, v in ref.items():
        if k[0] == lost:
            assert mine[k] == v + (data_bytes if dict(k[1])["after_stage"] == "DATA" else 0), k
