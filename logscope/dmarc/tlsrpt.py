"""SMTP TLS reports (RFC 8460 JSON) → one report tuple, policy tuples and failure tuples.

Optional members may be absent or null (``contact-info``, ``policy-string``,
``mx-host`` as a string or a list, ``failure-details``); a policy that cannot be
read is skipped with a note and the rest of the report is kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .aggregate import MAX_COUNT, ReportError, _email_domain

REPORT_FIELDS = ("reporter", "report_id", "begin", "end", "contact")
POLICY_FIELDS = ("policy_type", "policy_domain", "policy_string", "mx_host", "successful", "failed")
FAILURE_FIELDS = ("policy_type", "policy_domain", "result_type", "sending_mta_ip", "receiving_mx_hostname",
                  "receiving_mx_helo", "receiving_ip", "failed", "failure_reason_code", "additional_information")


@dataclass
class TlsReport:
    report: tuple
    policies: list[tuple]
    failures: list[tuple]
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return self.report[0], self.report[1]


def parse_tlsrpt(data: bytes) -> TlsReport:
    """Parse one RFC 8460 report; raise :class:`ReportError` if it is none."""
    try:
        obj = json.loads(data.decode("utf-8", errors="replace").lstrip("\ufeff"))
    except RecursionError:
        raise ReportError("JSON nested too deeply") from None
    except ValueError as exc:
        raise ReportError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("policies"), list):
        raise ReportError("JSON but not an SMTP TLS report (no \"policies\" list)")
    notes: list[str] = []
    contact = _str(obj.get("contact-info"))
    org = _str(obj.get("organization-name")) or _email_domain(contact) or "unknown"
    report_id = _str(obj.get("report-id"))
    if not report_id:
        raise ReportError("SMTP TLS report without report-id")
    dr = obj.get("date-range") if isinstance(obj.get("date-range"), dict) else {}
    begin, end = _time(dr.get("start-datetime")), _time(dr.get("end-datetime"))
    if begin is None or end is None:
        notes.append("report without a valid date-range")
    policies, failures = [], []
    for n, item in enumerate(obj["policies"], 1):
        try:
            pol, fails = _policy(item)
        except ReportError as exc:
            notes.append(f"policy {n} skipped: {exc}")
            continue
        policies.append(pol)
        failures += fails
    return TlsReport((org, report_id, begin, end, contact), policies, failures, notes)


def _policy(item) -> tuple[tuple, list[tuple]]:
    if not isinstance(item, dict) or not isinstance(item.get("policy"), dict):
        raise ReportError("no \"policy\" object")
    pol = item["policy"]
    summary = item.get("summary") if isinstance(item.get("summary"), dict) else {}
    ptype = (_str(pol.get("policy-type")) or "unknown").lower()
    domain = (_str(pol.get("policy-domain")) or "").lower().rstrip(".") or None
    if domain is None:
        raise ReportError("no policy-domain")
    ok = _count(summary.get("total-successful-session-count"))
    bad = _count(summary.get("total-failure-session-count"))
    if ok is None or bad is None:
        raise ReportError("session counts missing or not numbers")
    fails = []
    details = item.get("failure-details")
    for d in details if isinstance(details, list) else []:
        if not isinstance(d, dict):
            continue
        n = _count(d.get("failed-session-count"))
        fails.append((ptype, domain, (_str(d.get("result-type")) or "unknown").lower(), _str(d.get("sending-mta-ip")),
                      _str(d.get("receiving-mx-hostname")), _str(d.get("receiving-mx-helo")),
                      _str(d.get("receiving-ip")), n or 0, _str(d.get("failure-reason-code")),
                      _str(d.get("additional-information"))))
    return (ptype, domain, _join(pol.get("policy-string")), _join(pol.get("mx-host")), ok, bad), fails


def _str(v) -> str | None:
    if isinstance(v, str):
        return v.strip() or None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return None


def _join(v) -> str | None:
    if isinstance(v, list):
        return "; ".join(s for s in (_str(x) for x in v) if s) or None
    return _str(v)


def _count(v) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v.strip())
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return v if isinstance(v, int) and 0 <= v < MAX_COUNT else None


def _time(v) -> int | None:
    if not isinstance(v, str):
        return None
    try:
        t = datetime.fromisoformat(v.strip())
    except ValueError:
        return None
    if t.tzinfo is None:  # RFC 8460 times are UTC
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp())
