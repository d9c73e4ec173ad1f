"""Serve ``/metrics`` over HTTP(S), optionally with basic auth.

TLS and basic auth are configured with the ``web-config.yml`` file format of
the Prometheus exporter-toolkit, so an operator can reuse the file of their
other exporters::

    tls_server_config:
      cert_file: /etc/logscope/tls.crt       # relative paths: to the file's directory
      key_file: /etc/logscope/tls.key
      client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
      client_ca_file: /etc/logscope/ca.crt
      min_version: TLS12                     # optional: TLS10 .. TLS13
    basic_auth_users:
      prometheus: $2y$10$...                 # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000

Settings the toolkit has but Python's ``ssl`` cannot honour (cipher_suites,
curve_preferences, RequestClientCert, ...) are refused with an error rather
than silently ignored. bcrypt verification needs the ``bcrypt`` package.

The server is a ``ThreadingHTTPServer``: TLS handshakes happen in the
connection's thread, so a slow client does not block the others.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import re
import socket
import socketserver
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ..errors import UsageError

# Not used by postfix_exporter (9154), dovecot_exporter (9166), mtail (3903) or
# any exporter in the Prometheus default port allocations list (9100-9999 is
# that list's range); next to mtail, the tool logscope replaces.
DEFAULT_PORT = 3904
# Loopback only unless told otherwise (``--listen :3904`` for all addresses): the
# metrics name hosts, services and volumes, and a fresh install must not publish them.
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
ALLOWED_METHODS = ("GET", "HEAD")

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
_UNSUPPORTED_TLS_KEYS = {"cipher_suites", "curve_preferences", "prefer_server_cipher_suites",
                         "client_allowed_sans", "cert", "key", "client_ca"}
# exporter-toolkit accepts only these response headers.
_HEADERS = {"Strict-Transport-Security", "X-Frame-Options", "X-Content-Type-Options", "X-XSS-Protection",
            "Content-Security-Policy"}
_BCRYPT = re.compile(r"^\$2[aby]?\$(\d\d)\$[./A-Za-z0-9]{53}$")


def parse_listen(spec: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``:PORT`` (all addresses), ``[v6]:PORT`` or ``PORT`` -> (host, port)."""
    spec = spec.strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.%\w]+)\]:(\d+)|([^:\[\]]*):(\d+)|(\d+)", spec)
    if not m:
        raise UsageError(f"--listen {spec!r}: expected ADDR:PORT, :PORT or [IPv6]:PORT")
    host = m.group(1) or m.group(3) or ""
    port = int(m.group(2) or m.group(4) or m.group(5))
    if not 0 <= port <= 65535:
        raise UsageError(f"--listen {spec!r}: port out of range")
    return host, port


@dataclass
class WebConfig:
    """The parts of an exporter-toolkit web-config.yml that logscope honours."""

    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: dict[str, str] = field(default_factory=dict)


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check a web-config.yml; every problem is a ``UsageError`` naming the file."""
    path = Path(path)
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - pyyaml is a dependency
        raise UsageError(f"{path}: reading a web config needs the pyyaml package") from exc
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read web config: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if data is None:
        return WebConfig()
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping at the top level")
    unknown = set(data) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise UsageError(f"{path}: unknown setting {sorted(unknown)[0]!r}")
    conf = WebConfig()
    tls = data.get("tls_server_config")
    if tls:
        conf.tls = _tls_context(path, tls)
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise UsageError(f"{path}: basic_auth_users must map user names to bcrypt hashes")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not _BCRYPT.match(hashed):
            raise UsageError(f"{path}: basic_auth_users.{user}: not a bcrypt hash ($2y$...)")
        conf.users[str(user)] = hashed.encode("ascii")
    if conf.users:
        try:
            import bcrypt  # noqa: F401  (checked here so that a missing package fails at start, not per request)
        except ImportError as exc:
            raise UsageError(f"{path}: basic_auth_users needs the bcrypt package (pip install bcrypt)") from exc
    http = data.get("http_server_config") or {}
    if not isinstance(http, dict):
        raise UsageError(f"{path}: http_server_config must be a mapping")
    extra = sorted(set(http) - {"http2", "headers"})  # http2: a preference; this server speaks HTTP/1.1
    if extra:
        raise UsageError(f"{path}: http_server_config.{extra[0]} is not supported")
    for name, value in (http.get("headers") or {}).items():
        if name not in _HEADERS:
            raise UsageError(f"{path}: http_server_config.headers: {name!r} is not an allowed header")
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise UsageError(f"{path}: http_server_config.headers.{name}: must be a one-line string")
        conf.headers[name] = value
    return conf


def _tls_context(path: Path, tls: object) -> ssl.SSLContext:
    if not isinstance(tls, dict):
        raise UsageError(f"{path}: tls_server_config must be a mapping")
    for key in tls:
        if key in _UNSUPPORTED_TLS_KEYS:
            raise UsageError(f"{path}: tls_server_config.{key} is not supported by logscope")
        if key not in _TLS_KEYS:
            raise UsageError(f"{path}: unknown setting tls_server_config.{key}")
    if not tls.get("cert_file") or not tls.get("key_file"):
        raise UsageError(f"{path}: tls_server_config needs cert_file and key_file")
    auth = str(tls.get("client_auth_type", "NoClientCert"))
    if auth not in _CLIENT_AUTH:
        raise UsageError(f"{path}: tls_server_config.client_auth_type {auth!r} is not supported "
                         f"(supported: {', '.join(_CLIENT_AUTH)})")
    if auth != "NoClientCert" and not tls.get("client_ca_file"):
        raise UsageError(f"{path}: client_auth_type {auth} needs client_ca_file")

    def file(key: str) -> str:
        p = Path(str(tls[key]))
        p = p if p.is_absolute() else path.parent / p
        if not p.is_file():
            raise UsageError(f"{path}: tls_server_config.{key}: {p}: no such file")
        return str(p)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(file("cert_file"), file("key_file"))
    except ssl.SSLError as exc:
        raise UsageError(f"{path}: cannot load certificate and key: {exc.reason or exc}") from exc
    for key, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if key in tls:
            version = _TLS_VERSIONS.get(str(tls[key]))
            if version is None:
                raise UsageError(f"{path}: tls_server_config.{key}: one of {', '.join(_TLS_VERSIONS)}")
            setattr(ctx, attr, version)
    ctx.verify_mode = _CLIENT_AUTH[auth]
    if auth != "NoClientCert":
        try:
            ctx.load_verify_locations(file("client_ca_file"))
        except ssl.SSLError as exc:
            raise UsageError(f"{path}: cannot load client_ca_file: {exc.reason or exc}") from exc
    return ctx


class _Auth:
    """Basic-auth check against bcrypt hashes, with a small cache of verified credentials.

    bcrypt is slow by design (tens of ms per check); Prometheus sends the same
    credentials on every scrape, so successful checks are remembered by a
    keyed digest of user and password (never the password itself).
    """

    CACHE = 64

    def __init__(self, users: dict[str, bytes]):
        import bcrypt

        self.users = users
        self._key = hashlib.sha256(repr(sorted(users.items())).encode()).digest()
        self._ok: dict[bytes, None] = {}
        self._lock = threading.Lock()
        # checked for unknown users, so that a wrong user name costs as much as a wrong password
        cost = max(4, min(16, int(_BCRYPT.match(next(iter(users.values())).decode()).group(1))))
        self._dummy = bcrypt.hashpw(b"logscope", bcrypt.gensalt(cost))

    def check(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        digest = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            if digest in self._ok:
                return True
        import bcrypt

        hashed = self.users.get(user)
        try:
            ok = bcrypt.checkpw(password.encode(), hashed or self._dummy) and hashed is not None
        except ValueError:
            ok = False
        if ok:
            with self._lock:
                if len(self._ok) >= self.CACHE:
                    self._ok.pop(next(iter(self._ok)))
                self._ok[digest] = None
        return ok


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    timeout = 30  # seconds a client may take to send its request
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - scrapes are not worth a log line each
        pass

    def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8",
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**self.server.config.headers, **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def __getattr__(self, name: str):
        # BaseHTTPRequestHandler looks up ``do_<METHOD>`` and answers 501 when it is missing;
        # every method but GET/HEAD (POST, PUT, OPTIONS, TRACE, made-up ones) gets 405 instead.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        # checked before authentication: costs no bcrypt round and reveals nothing.
        # The request body is never read, so the connection is closed after the answer.
        self.close_connection = True
        self._send(405, b"Method not allowed\n",
                   extra={"Allow": ", ".join(ALLOWED_METHODS), "Connection": "close"})

    def do_GET(self) -> None:  # noqa: N802
        auth = self.server.auth
        if auth is not None and not auth.check(self.headers.get("Authorization")):
            self._send(401, b"Unauthorized\n", extra={"WWW-Authenticate": 'Basic realm="logscope"'})
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, ctype = choose_encoder(self.headers.get("Accept"))
            body = encoder(self.server.registry)
            extra = {}
            if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                body = gzip.compress(body, compresslevel=1)
                extra["Content-Encoding"] = "gzip"
            self._send(200, body, ctype, extra)
        elif path == "/":
            self._send(200, b"logscope: metrics at /metrics\n")
        else:
            self._send(404, b"Not found\n")

    do_HEAD = do_GET


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # one thread per connection: more open connections than this are closed at once,
    # so idle or slow clients cannot pile up threads
    MAX_CONNECTIONS = 32
    request_queue_size = 64  # listen backlog (socketserver's default of 5 makes bursts of connects wait)

    def __init__(self, addr, registry: CollectorRegistry, config: WebConfig, family: int):
        self.address_family = family
        self.registry = registry
        self.config = config
        self.auth = _Auth(config.users) if config.users else None
        self._slots = threading.BoundedSemaphore(self.MAX_CONNECTIONS)
        super().__init__(addr, _Handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # ":PORT" listens on IPv4 and IPv6 alike
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # TCPServer's bind: HTTPServer's would look up the host's FQDN (a DNS query) for nothing
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address) -> None:
        ctx = self.config.tls
        if ctx is None:
            return super().finish_request(request, client_address)
        request.settimeout(_Handler.timeout)
        try:
            conn = ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # failed handshake (plain HTTP, bad client certificate, timeout): drop the connection
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()

    def handle_error(self, request, client_address) -> None:
        pass  # a client that goes away mid-response is not an error worth a traceback


class MetricsServer:
    """``/metrics`` of ``registry`` on ``listen`` (see ``parse_listen``), in a background thread."""

    def __init__(self, registry: CollectorRegistry, listen: str = DEFAULT_LISTEN,
                 web_config: str | Path | None = None):
        self.registry = registry
        self.listen = listen
        self.web_config = web_config
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (port 0 in ``listen`` picks a free one)."""
        assert self._server is not None, "server not started"
        return self._server.server_address[:2]

    @property
    def scheme(self) -> str:
        return "https" if self._server is not None and self._server.config.tls else "http"

    def start(self) -> "MetricsServer":
        host, port = parse_listen(self.listen)
        config = load_web_config(self.web_config) if self.web_config else WebConfig()
        family = socket.AF_INET6 if ":" in host or (host == "" and socket.has_ipv6) else socket.AF_INET
        try:
            self._server = _Server((host or ("::" if family == socket.AF_INET6 else ""), port),
                                   self.registry, config, family)
        except OSError as exc:
            if host == "" and family == socket.AF_INET6:
                # no IPv6 on this host: all IPv4 addresses
                try:
                    self._server = _Server(("", port), self.registry, config, socket.AF_INET)
                except OSError as exc4:
                    raise UsageError(f"cannot listen on {self.listen}: {exc4.strerror or exc4}") from exc4
            else:
                raise UsageError(f"cannot listen on {self.listen}: {exc.strerror or exc}") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="logscope-metrics",
                                        kwargs={"poll_interval": 0.5}, daemon=True)
        self._thread.start()
        return self

    def reload(self) -> None:
        """Re-read the web config (SIGHUP); on error the old settings stay and the error is raised."""
        if self._server is not None and self.web_config:
            config = load_web_config(self.web_config)
            self._server.config = config
            self._server.auth = _Auth(config.users) if config.users else None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "MetricsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
