"""Notifiers: standard output/log, e-mail (SMTP), webhook (JSON POST), Alertmanager (v2 API).

Every notifier delivers from its own background thread, so evaluation and
ingestion never wait for a mail server or an HTTP endpoint. Notifications wait
in a bounded queue (``max_queue``, default 1000; when full the oldest is
dropped and counted). A failed delivery is retried with exponential back-off
(``retry_initial`` doubling up to ``retry_max``) until it succeeds, so an
endpoint that is down loses nothing it comes back for; only an answer that
can never succeed (HTTP 4xx other than 408/429, SMTP 5xx) drops the
notification. ``stats()`` counts ``sent``, ``failed`` (attempts) and
``dropped``.

Configured as ``[[notifier]]`` tables in the rules file::

    [[notifier]]
    type = "smtp"                 # stdout | smtp | webhook | alertmanager
    host = "mail.example.org"
    security = "starttls"         # starttls (port 587) | tls (implicit, 465) | none (25, no login)
    from = "logscope@example.org"
    to = ["postmaster@example.org"]
    username = "logscope"
    password_file = "/etc/logscope/smtp-password"   # or password_env = "LOGSCOPE_SMTP_PASSWORD"

Secrets come from a file or an environment variable, never from the command
line (where ``ps`` shows them to every user) nor from the rules file itself.
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Callable

from .engine import Notification, iso
from .expr import parse_duration

Log = Callable[[str, str], None]

TYPES = ("stdout", "smtp", "webhook", "alertmanager")
COMMON = {"type": str, "name": str, "severities": list, "rules": list, "max_queue": int,
          "retry_initial": "duration", "retry_max": "duration", "timeout": "duration"}
KEYS: dict[str, dict[str, Any]] = {
    "stdout": {"stream": str, "format": str},
    "smtp": {"host": str, "port": int, "security": str, "from": str, "to": list, "username": str,
             "password_file": str, "password_env": str, "ca_file": str, "verify": bool, "subject_prefix": str},
    "webhook": {"url": str, "headers": dict, "bearer_token_file": str, "bearer_token_env": str, "ca_file": str,
                "verify": bool},
    "alertmanager": {"url": str, "resend_interval": "duration", "username": str, "password_file": str,
                     "password_env": str, "bearer_token_file": str, "bearer_token_env": str, "ca_file": str,
                     "verify": bool},
}
REQUIRED = {"smtp": ("host", "from", "to"), "webhook": ("url",), "alertmanager": ("url",)}


class PermanentError(Exception):
    """A delivery the receiver refused for good: retrying cannot help."""


def check_config(conf: dict[str, Any]) -> None:
    """Check one ``[[notifier]]`` table; ValueError(message, key) on a mistake."""
    kind = conf.get("type")
    if kind not in TYPES:
        raise ValueError(f"'type' must be one of {', '.join(TYPES)}", "type" if "type" in conf else None)
    allowed = COMMON | KEYS[kind]
    for key, value in conf.items():
        want = allowed.get(key)
        if want is None:
            raise ValueError(f"unknown key {key!r} for a {kind} notifier", key)
        if want == "duration":
            try:
                parse_duration(value)
            except ValueError as exc:
                raise ValueError(str(exc), key) from None
        elif want is int and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ValueError(f"{key!r} must be a positive whole number", key)
        elif want is not int and not isinstance(value, want):
            raise ValueError(f"{key!r} must be a {want.__name__}", key)
    for key in REQUIRED.get(kind, ()):
        if key not in conf:
            raise ValueError(f"needs {key!r}", None)
    for key in ("url",):
        if key in conf and urllib.parse.urlsplit(conf[key]).scheme not in ("http", "https"):
            raise ValueError(f"{key!r} must be an http:// or https:// URL", key)
    if kind == "smtp":
        if conf.get("security", "starttls") not in ("starttls", "tls", "none"):
            raise ValueError("'security' must be starttls, tls or none", "security")
        if conf.get("security") == "none" and "username" in conf:
            raise ValueError("a login needs TLS: security = starttls or tls", "security")
        if not conf["to"] or not all(isinstance(a, str) and "@" in a for a in conf["to"]):
            raise ValueError("'to' must be a list of addresses", "to")
    if "password_file" in conf and "password_env" in conf:
        raise ValueError("give password_file or password_env, not both", "password_env")
    if kind == "stdout" and conf.get("stream", "stdout") not in ("stdout", "stderr", "log"):
        raise ValueError("'stream' must be stdout, stderr or log", "stream")
    if kind == "stdout" and conf.get("format", "text") not in ("text", "json"):
        raise ValueError("'format' must be text or json", "format")


def read_secret(conf: dict[str, Any], prefix: str) -> str | None:
    """``<prefix>_file`` (first line, whitespace stripped) or ``<prefix>_env``; ValueError when missing."""
    path, env = conf.get(f"{prefix}_file"), conf.get(f"{prefix}_env")
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.readline().strip()
        except OSError as exc:
            raise ValueError(f"{prefix}_file {path}: {exc.strerror or exc}") from None
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ValueError(f"{prefix}_env: the environment variable {env} is not set")
        return value
    return None


def build_notifiers(configs: list[dict[str, Any]], log: Log) -> list["Notifier"]:
    """Notifiers from ``[[notifier]]`` tables; without any, one that writes to the log."""
    if not configs:
        return [StdoutNotifier({"type": "stdout", "stream": "log"}, log)]
    out = []
    for conf in configs:
        conf = {k: v for k, v in conf.items() if not k.startswith("_")}
        check_config(conf)
        cls = {"stdout": StdoutNotifier, "smtp": SmtpNotifier, "webhook": WebhookNotifier,
               "alertmanager": AlertmanagerNotifier}[conf["type"]]
        out.append(cls(conf, log))
    return out


def _ssl_context(conf: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=conf.get("ca_file"))
    if conf.get("verify", True) is False:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# --------------------------------------------------------------------- the delivery thread

class Notifier:
    """Base: a bounded queue and a delivery thread with retries. Subclasses implement ``send``."""

    kind = "base"

    def __init__(self, conf: dict[str, Any], log: Log):
        self.conf = conf
        self.log = log
        self.name = conf.get("name") or conf.get("type") or self.kind
        self.severities = set(conf.get("severities") or ())
        self.rules = set(conf.get("rules") or ())
        self.max_queue = int(conf.get("max_queue", 1000))
        self.retry_initial = parse_duration(conf.get("retry_initial", "1s"))
        self.retry_max = parse_duration(conf.get("retry_max", "5m"))
        self.timeout = parse_duration(conf.get("timeout", "10s"))
        self.sent = self.failed = self.dropped = 0
        self._queue: deque = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._busy = False
        self._logged_failure = False

    # -------------------------------------------------------------- producer side (never blocks)

    def wants(self, note: Notification) -> bool:
        return (not self.severities or note.severity in self.severities) and (not self.rules or note.rule in self.rules)

    def notify(self, note: Notification) -> None:
        self._put(note)

    def _put(self, item: Any) -> None:
        with self._cond:
            if self._closing:
                self.dropped += 1
                return
            if len(self._queue) >= self.max_queue:
                self._queue.popleft()
                self.dropped += 1
                if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, 8, ...: a long outage does not flood the log
                    self.log("warning", f"notifier {self.name}: queue full ({self.max_queue}); "
                                        f"{self.dropped} oldest notifications dropped so far")
            self._queue.append(item)
            self._ensure_thread()
            self._cond.notify_all()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"logscope-notify-{self.name}", daemon=True)
            self._thread.start()

    # -------------------------------------------------------------- consumer side

    def _next(self) -> Any:
        """The item to deliver, or None when closing with nothing left. Called with the lock held."""
        while not self._queue:
            if self._closing:
                return None
            self._cond.wait()
        return self._queue[0]

    def _delivered(self, item: Any) -> None:
        """Called with the lock held after ``item`` was delivered or dropped for good."""
        if self._queue and self._queue[0] is item:
            self._queue.popleft()

    def _run(self) -> None:
        delay = self.retry_initial
        while True:
            with self._cond:
                item = self._next()
                if item is None:
                    return
                self._busy = True
            try:
                self.send(item)
            except PermanentError as exc:
                with self._cond:
                    self.failed += 1
                    self.dropped += 1
                    self._delivered(item)
                    self._busy = False
                    self._cond.notify_all()
                self.log("error", f"notifier {self.name}: refused, not retried: {exc}")
                continue
            except Exception as exc:  # down, timeout, TLS, 5xx: retry with back-off
                with self._cond:
                    self.failed += 1
                    self._busy = False
                    self._cond.notify_all()
                if not self._logged_failure:
                    self.log("warning", f"notifier {self.name}: delivery failed ({_short(exc)}); retrying")
                    self._logged_failure = True
                deadline = time.monotonic() + delay
                with self._cond:  # new notifications must not cut the back-off short
                    while not self._closing and (left := deadline - time.monotonic()) > 0:
                        self._cond.wait(left)
                    if self._closing:
                        return
                delay = min(delay * 2, self.retry_max)
                continue
            with self._cond:
                self.sent += 1
                self._delivered(item)
                self._busy = False
                self._cond.notify_all()
            if self._logged_failure:
                self.log("info", f"notifier {self.name}: delivering again")
                self._logged_failure = False
            delay = self.retry_initial

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued is delivered (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy or self._has_work():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def _has_work(self) -> bool:
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Try to deliver what is queued for up to ``timeout`` seconds, then stop the thread."""
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(1.0)

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped,
                    "queued": len(self._queue)}

    def send(self, item: Any) -> None:
        raise NotImplementedError


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


# --------------------------------------------------------------------- text rendering

def alert_lines(note: Notification) -> list[str]:
    """One line per alert: STATUS rule {labels} summary."""
    out = []
    for a in note.alerts:
        labels = ", ".join(f"{k}={v}" for k, v in a["labels"].items() if k not in ("alertname", "severity"))
        status = a["status"].upper()
        out.append(f"{status} {note.rule} [{a['labels'].get('severity', '')}]"
                   f"{' {' + labels + '}' if labels else ''}: {a['annotations'].get('summary', '')}")
    return out


def mail_text(note: Notification) -> str:
    firing = [a for a in note.alerts if a["status"] == "firing"]
    resolved = [a for a in note.alerts if a["status"] == "resolved"]
    out = [f"logscope alert {note.rule} ({note.severity}) at {iso(note.at)}", ""]
    for title, group in (("Firing", firing), ("Resolved", resolved)):
        if not group:
            continue
        out.append(f"{title}: {len(group)}")
        for a in group:
            out.append(f"- {a['annotations'].get('summary', '')}")
            labels = ", ".join(f"{k}={v}" for k, v in a["labels"].items())
            out.append(f"  labels: {labels}")
            out.append(f"  since: {a['startsAt']}" + (f"  resolved: {a['endsAt']}" if a["status"] == "resolved" else ""))
            if a["annotations"].get("description"):
                out.append("  " + a["annotations"]["description"].replace("\n", "\n  "))
        out.append("")
    return "\n".join(out)


def _header_safe(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)[:200]


# --------------------------------------------------------------------- notifiers

class StdoutNotifier(Notifier):
    """One line per alert on standard output (or stderr, or the tail log); ``format = "json"``: the webhook JSON."""

    kind = "stdout"

    def send(self, note: Notification) -> None:
        if self.conf.get("format") == "json":
            lines = [json.dumps(note.to_json(self.name), sort_keys=True)]
        else:
            lines = ["logscope alert: " + line for line in alert_lines(note)]
        stream = self.conf.get("stream", "stdout")
        if stream == "log":
            for line in lines:
                self.log("warning" if note.status == "firing" else "info", line)
            return
        out = sys.stderr if stream == "stderr" else sys.stdout
        for line in lines:
            print(line, file=out, flush=True)


class SmtpNotifier(Notifier):
    """E-mail through an SMTP server: STARTTLS (default), implicit TLS, or none (no login then)."""

    kind = "smtp"

    def __init__(self, conf: dict[str, Any], log: Log):
        super().__init__(conf, log)
        self.security = conf.get("security", "starttls")
        self.port = conf.get("port") or {"starttls": 587, "tls": 465, "none": 25}[self.security]
        self.password = read_secret(conf, "password") if conf.get("username") else None
        if conf.get("username") and self.password is None:
            raise ValueError(f"notifier {self.name}: username needs password_file or password_env")
        self.context = _ssl_context(conf) if self.security != "none" else None

    def message(self, note: Notification) -> EmailMessage:
        msg = EmailMessage()
        n = sum(1 for a in note.alerts if a["status"] == "firing")
        status = f"FIRING:{n}" if note.status == "firing" else "RESOLVED"
        prefix = self.conf.get("subject_prefix", "[logscope]")
        first = note.alerts[0]["annotations"].get("summary", "") if note.alerts else ""
        msg["Subject"] = _header_safe(f"{prefix} {status} {note.rule}: {first}")
        msg["From"] = self.conf["from"]
        msg["To"] = ", ".join(self.conf["to"])
        msg["Date"] = formatdate(note.at, localtime=False)
        msg["Message-ID"] = make_msgid(domain=self.conf["from"].rsplit("@", 1)[-1] or None)
        msg["X-Logscope-Alert"] = note.rule
        msg.set_content(mail_text(note))
        return msg

    def send(self, note: Notification) -> None:
        msg = self.message(note)
        host = self.conf["host"]
        try:
            if self.security == "tls":
                smtp = smtplib.SMTP_SSL(host, self.port, timeout=self.timeout, context=self.context)
            else:
                smtp = smtplib.SMTP(host, self.port, timeout=self.timeout)
            with smtp:
                smtp.ehlo()
                if self.security == "starttls":
                    smtp.starttls(context=self.context)
                    smtp.ehlo()
                if self.conf.get("username"):
                    smtp.login(self.conf["username"], self.password or "")
                smtp.send_message(msg, self.conf["from"], list(self.conf["to"]))
        except smtplib.SMTPResponseException as exc:
            if 500 <= exc.smtp_code < 600 and not isinstance(exc, smtplib.SMTPAuthenticationError):
                raise PermanentError(f"{exc.smtp_code} {exc.smtp_error!r}") from None
            raise


def _http_post(url: str, body: bytes, headers: dict[str, str], timeout: float, context: ssl.SSLContext | None) -> int:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "logscope", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            resp.read(65536)
            return resp.status
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace")
        if 400 <= exc.code < 500 and exc.code not in (408, 425, 429):
            raise PermanentError(f"HTTP {exc.code}: {detail}") from None
        raise OSError(f"HTTP {exc.code}: {detail}") from None


def _auth_headers(conf: dict[str, Any]) -> dict[str, str]:
    token = read_secret(conf, "bearer_token")
    if token:
        return {"Authorization": f"Bearer {token}"}
    if conf.get("username"):
        import base64
        password = read_secret(conf, "password") or ""
        return {"Authorization": "Basic " + base64.b64encode(f"{conf['username']}:{password}".encode()).decode()}
    return {}


class WebhookNotifier(Notifier):
    """A JSON POST per notification, in Alertmanager's webhook format (version 4)."""

    kind = "webhook"

    def __init__(self, conf: dict[str, Any], log: Log):
        super().__init__(conf, log)
        self.headers = {str(k): str(v) for k, v in (conf.get("headers") or {}).items()} | _auth_headers(conf)
        self.context = _ssl_context(conf) if conf["url"].startswith("https:") else None

    def send(self, note: Notification) -> None:
        body = json.dumps(note.to_json(self.name)).encode()
        _http_post(self.conf["url"], body, self.headers, self.timeout, self.context)


class AlertmanagerNotifier(Notifier):
    """Alertmanager's ``POST /api/v2/alerts``: routing, grouping, silences and inhibition happen there.

    Like Prometheus, it sends the state, not events: every firing alert (with
    ``endsAt`` a few resend intervals ahead, so Alertmanager resolves it if
    logscope stops) whenever something changes and at least every
    ``resend_interval`` (default 1m), and each resolved alert (``endsAt`` its
    resolution) until Alertmanager took it. The newest state per alert waits
    in a dict (bounded by the rules' ``max_alerts``), so nothing is lost while
    Alertmanager is down.
    """

    kind = "alertmanager"

    def __init__(self, conf: dict[str, Any], log: Log):
        super().__init__(conf, log)
        self.url = conf["url"].rstrip("/") + "/api/v2/alerts"
        self.resend = parse_duration(conf.get("resend_interval", "1m"))
        self.headers = _auth_headers(conf)
        self.context = _ssl_context(conf) if self.url.startswith("https:") else None
        self._latest: dict[str, dict[str, Any]] = {}
        self._dirty = False
        self._last_push = 0.0

    def notify(self, note: Notification) -> None:  # the state goes through sync()
        pass

    def sync(self, alerts: list[dict[str, Any]], at: float, changed: bool) -> None:
        """Every evaluation: the firing alerts and those resolved now."""
        with self._cond:
            if self._closing:
                return
            current = set()
            for a in alerts:
                a = dict(a)
                a.pop("value", None)
                a.pop("fingerprint", None)
                a.pop("status", None)
                fp = alerts_fp(a)
                current.add(fp)
                if a["endsAt"] == iso(None):
                    a["endsAt"] = iso(at + 4 * self.resend)
                    a["_firing"] = True
                self._latest[fp] = a
            # firing alerts no longer reported (rule removed on reload) resolve now
            for fp, a in list(self._latest.items()):
                if fp not in current and a.get("_firing"):
                    self._latest[fp] = dict(a, endsAt=iso(at), _firing=False)
                    changed = True
            if self._latest and (changed or at - self._last_push >= self.resend):
                self._dirty = True
                self._last_push = at
                self._ensure_thread()
                self._cond.notify_all()

    def _has_work(self) -> bool:
        return self._dirty

    def _next(self) -> Any:
        while not self._dirty:
            if self._closing:
                return None
            self._cond.wait()
        snapshot = dict(self._latest)
        self._dirty = False
        return snapshot

    def _delivered(self, item: Any) -> None:
        for fp, a in item.items():
            if not a.get("_firing") and self._latest.get(fp) is a:
                del self._latest[fp]

    def send(self, item: dict[str, dict[str, Any]]) -> None:
        try:
            body = json.dumps([{k: v for k, v in a.items() if not k.startswith("_")} for a in item.values()])
            _http_post(self.url, body.encode(), self.headers, self.timeout, self.context)
        except Exception:
            with self._cond:
                self._dirty = True  # deliver the newest state on the retry
            raise

    def stats(self) -> dict[str, int]:
        s = super().stats()
        with self._cond:
            s["queued"] = len(self._latest) if self._dirty else 0
        return s


def alerts_fp(alert: dict[str, Any]) -> str:
    return json.dumps(sorted(alert["labels"].items()))
