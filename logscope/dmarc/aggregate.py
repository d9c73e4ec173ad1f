"""DMARC aggregate report XML → one report tuple and its record tuples.

Reads the RFC 7489 format (namespace ``http://dmarc.org/dmarc-xml/0.1`` or none),
pre-RFC drafts without ``<version>``, and the RFC 9990 format (namespace
``urn:ietf:params:xml:ns:dmarc-2.0``; ``np``, ``testing``, ``discovery_method``,
``generator``), also when the new fields come without the namespace. Elements
are matched by local name, so namespaces and prefixes do not matter; unknown
elements are ignored.

No entity is ever expanded and nothing is fetched: a document that could hold
a DTD goes through defusedxml, which refuses entity declarations and external
references (see :func:`fromstring` for the fast path of documents that cannot).
Broken XML gets one repair attempt (invalid UTF-8 and control characters
replaced, bare ``&`` escaped, junk around the root dropped, a truncated report
closed after its last complete record), parsed the same safe way; the repair is
reported as a note. A record that cannot be read is skipped with a note; the
rest of the report is kept. Case, trailing dots and RFC defaults are applied
later in bulk (:func:`logscope.dmarc.collect.normalize_reports`, ``build_records``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from xml.etree.ElementTree import XMLParser as _CXMLParser

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring as _defused_fromstring

NS_RFC7489 = "http://dmarc.org/dmarc-xml/0.1"
NS_RFC9990 = "urn:ietf:params:xml:ns:dmarc-2.0"
SCHEMAS = ("draft", "rfc7489", "rfc9990")
_NEW_FIELDS = ("np", "testing", "discovery_method")
MAX_COUNT = 1 << 40  # a larger message count is a broken (or hostile) record, not traffic

REPORT_FIELDS = (
    "reporter", "reporter_email", "report_id", "begin", "end", "schema", "version", "generator",
    "domain", "adkim", "aspf", "p", "sp", "np", "pct", "fo", "testing", "discovery_method", "report_errors",
)
# The list-valued fields (auth results, reasons) come as LIST_SEP-joined strings.
RECORD_FIELDS = (
    "source_ip", "count", "disposition", "dkim_aligned", "spf_aligned", "override_reasons",
    "header_from", "envelope_from", "envelope_to",
    "dkim_domains", "dkim_selectors", "dkim_results", "spf_domains", "spf_scopes", "spf_results",
)


class ReportError(Exception):
    """The payload is not a usable DMARC aggregate report (the message says why)."""


@dataclass
class Aggregate:
    """One parsed report: ``report`` in REPORT_FIELDS order, ``records`` in RECORD_FIELDS order."""

    report: tuple
    records: list[tuple]
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return self.report[0], self.report[2]


def parse_aggregate(data: bytes) -> Aggregate:
    """Parse one aggregate report; raise :class:`ReportError` if it is none."""
    notes: list[str] = []
    root, ns = _parse_xml(data, notes)
    if root.tag != "feedback":
        inner = root.find(".//feedback")
        if inner is None:
            raise ReportError(f"not a DMARC aggregate report: root element is <{_short(root.tag)}>, not <feedback>")
        root = inner

    meta = root.find("report_metadata")
    pol = root.find("policy_published")
    if meta is None and pol is None:
        raise ReportError("not a DMARC aggregate report: <feedback> without <report_metadata> or <policy_published>")
    m = _fields(meta)
    pp = _fields(pol)
    email = m.get("email")
    org = m.get("org_name") or _email_domain(email)
    if not org:
        org = "unknown"
        notes.append("report without org_name or e-mail address")
    report_id = _report_id(m.get("report_id"))
    if not report_id:
        report_id = "sha1:" + hashlib.sha1(data).hexdigest()
        notes.append("report without report_id: identified by its content hash")
    dr = _fields(meta.find("date_range") if meta is not None else None)
    begin, end = _epoch(dr.get("begin")), _epoch(dr.get("end"))
    if begin is None or end is None:
        notes.append("report without a valid date_range")
    version = root.findtext("version")
    version = version.strip() or None if version else None
    generator = m.get("generator")
    if ns == NS_RFC9990 or generator or not pp.keys().isdisjoint(_NEW_FIELDS):
        schema = "rfc9990"
    elif version or ns == NS_RFC7489:
        schema = "rfc7489"
    else:
        schema = "draft"
    pct = _int(pp.get("pct"))
    errors = "; ".join(e.text.strip() for e in meta.findall("error") if e.text and e.text.strip()) \
        if meta is not None else None
    # Case, trailing dots and RFC defaults (adkim/aspf r, sp = p, np = sp, pct 100, fo 0) are applied in bulk
    # by the caller (collect.build_records), not here per report.
    report = (
        org, email, report_id, begin, end, schema, version, generator,
        pp.get("domain"), pp.get("adkim"), pp.get("aspf"), pp.get("p"), pp.get("sp"), pp.get("np"),
        pct if pct is not None and 0 <= pct <= 100 else None, pp.get("fo"),
        pp.get("testing"), pp.get("discovery_method"), errors or None,
    )
    records = []
    for n, rec in enumerate(root.findall("record"), 1):
        try:
            records.append(_record(rec))
        except ReportError as exc:
            notes.append(f"record {n} skipped: {exc}")
    return Aggregate(report, records, notes)


def _fields(el) -> dict[str, str | None]:
    """Child tag → its stripped text (None when empty) for the children of ``el`` (none for None)."""
    if el is None:
        return {}
    return {c.tag: (c.text.strip() or None) if c.text else None for c in el}


def _local_names(root) -> None:
    """Drop the namespace from every tag."""
    for el in root.iter():
        tag = el.tag
        if isinstance(tag, str) and "}" in tag:  # not a comment or processing instruction
            el.tag = tag.split("}", 1)[1]


# Encodings in which the bytes "<!" can only mean "<!" (ASCII supersets, one byte per ASCII char).
_ASCII_SUPERSET = re.compile(rb"(?:utf-?8|us-ascii|ascii|iso-8859-\d{1,2}|latin-?1|(?:windows|cp)-?125\d)$", re.I)


def fromstring(data: bytes):
    """Parse XML without ever expanding an entity or fetching anything.

    Entities can only be declared in a DTD, and a DTD starts with ``<!``. A
    document whose bytes have no ``<!`` and no NUL (so it is not UTF-16/32) in an
    ASCII-superset encoding therefore has no DTD, and expat's C parser reads it
    directly; every other document goes through defusedxml (pure-Python handlers,
    several times slower), which refuses entity declarations and external references.
    """
    if b"<!" not in data and b"\x00" not in data:
        m = _ENCODING.match(data)
        if m is None or _ASCII_SUPERSET.match(m.group(1)):
            parser = _CXMLParser()
            parser.feed(data)
            return parser.close()
    return _defused_fromstring(data)


def _parse_xml(data: bytes, notes: list[str]):
    """(root, namespace of the root element), every tag by its local name; broken XML repaired once."""
    try:
        return _localised(fromstring(data), data)
    except DefusedXmlException as exc:
        raise ReportError(f"refused: the XML {_defused_why(exc)} (entity expansion and external references are never processed)") from None
    except ParseError as exc:
        first = exc
    repaired, what = _repair(data)
    if repaired is None:
        raise ReportError(f"not well-formed XML: {first}")
    try:
        root = fromstring(repaired)
    except DefusedXmlException as exc:
        raise ReportError(f"refused: the XML {_defused_why(exc)}") from None
    except ParseError:
        raise ReportError(f"not well-formed XML: {first}") from None
    notes.append(f"repaired broken XML ({', '.join(what)}); parser said: {first}")
    return _localised(root, data)


def _localised(root, data: bytes):
    ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    if b"xmlns" in data:  # namespaced tags ("{ns}name") are matched by their local name
        _local_names(root)
    return root, ns


def _defused_why(exc: Exception) -> str:
    name = type(exc).__name__
    if name == "EntitiesForbidden":
        return "declares entities"
    if name == "ExternalReferenceForbidden":
        return "refers to an external resource"
    if name == "DTDForbidden":
        return "has a DTD"
    return "is unsafe"


_DECL = re.compile(r"""^\s*<\?xml[^>]*?\?>""")
_ENCODING = re.compile(rb"""^(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_BARE_AMP = re.compile(r"&(?!(?:amp|lt|gt|quot|apos|#\d{1,7}|#x[0-9A-Fa-f]{1,6});)")
_FEEDBACK_END = re.compile(r"</(?:[\w.-]+:)?feedback\s*>", re.I)
_RECORD_END = re.compile(r"</(?:[\w.-]+:)?record\s*>", re.I)


def _repair(data: bytes) -> tuple[bytes | None, list[str]]:
    """One best-effort repair of broken XML, or None when nothing is left to try."""
    what: list[str] = []
    m = _ENCODING.match(data)
    codec = m.group(1).decode("ascii").lower() if m else "utf-8"
    try:
        text = data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        text = data.decode("utf-8", errors="replace")
        what.append("invalid UTF-8 replaced")
    text = text.removeprefix("\ufeff")
    start = text.find("<")
    if start < 0:
        return None, what
    if start:
        what.append("text before the XML dropped" if text[:start].strip() else "white space before the XML dropped")
    text = _DECL.sub("", text[start:], count=1)  # the bytes are re-encoded as UTF-8 below
    cleaned = _BAD_CHARS.sub("\ufffd", text)
    if cleaned != text:
        what.append("control characters replaced")
    escaped = _BARE_AMP.sub("&amp;", cleaned)
    if escaped != cleaned:
        what.append("bare & escaped")
    text = escaped
    end = _FEEDBACK_END.search(text)
    if end:
        if text[end.end():].strip():
            what.append("junk after </feedback> dropped")
        text = text[: end.end()]
    else:
        last = None
        for last in _RECORD_END.finditer(text):
            pass
        if last is None:
            return None, what
        text = text[: last.end()] + "</feedback>"
        what.append("truncated report closed after its last complete record")
    if not what:
        return None, what
    return text.encode("utf-8"), what


def _record(rec) -> tuple:
    """One record as a tuple in RECORD_FIELDS order (text as reported: case is normalised in bulk later)."""
    row = rec.find("row")
    if row is None:
        raise ReportError("no <row>")
    r = _fields(row)
    ip = _ip(r.get("source_ip"))
    if ip is None:
        raise ReportError(f"source_ip {_short(r.get('source_ip') or '')!r} is not an IP address")
    count = _int(r.get("count"))
    if count is None or not 0 <= count < MAX_COUNT:
        raise ReportError(f"count {_short(r.get('count') or '')!r} is not a message count")
    pe_el = row.find("policy_evaluated")
    pe = _fields(pe_el)
    reasons = None
    if pe_el is not None:
        items = []
        for reason in pe_el.findall("reason"):
            f = _fields(reason)
            rtype, comment = (f.get("type") or "").lower(), f.get("comment")
            if rtype or comment:
                items.append(f"{rtype or 'other'}: {comment}" if comment else rtype)
        reasons = _joined(items)
    ids_el = rec.find("identifiers")
    ids = _fields(ids_el if ids_el is not None else rec.find("identities"))
    ar = rec.find("auth_results")
    dkim = _auth(ar.findall("dkim"), "selector") if ar is not None else _NO_AUTH
    spf = _auth(ar.findall("spf"), "scope") if ar is not None else _NO_AUTH
    return (ip, count, pe.get("disposition"), pe.get("dkim"), pe.get("spf"), reasons,
            ids.get("header_from"), ids.get("envelope_from"), ids.get("envelope_to"), *dkim, *spf)


_NO_AUTH = (None, None, None)


def _auth(results: list, middle: str) -> tuple:
    """(domains, ``middle`` values, results) of DKIM or SPF auth results, each LIST_SEP-joined."""
    if not results:
        return _NO_AUTH
    if len(results) == 1:  # the usual case, without building lists
        f = _fields(results[0])
        return f.get("domain") or "", f.get(middle) or "", f.get("result") or ""
    fs = [_fields(e) for e in results]
    return (_joined([f.get("domain") for f in fs]), _joined([f.get(middle) for f in fs]),
            _joined([f.get("result") for f in fs]))


LIST_SEP = "\x1f"  # cannot occur in XML 1.0 text, so it safely joins list items


def _joined(items: list) -> str | None:
    """A list as one string (split again in bulk by polars: far faster than building list columns)."""
    return LIST_SEP.join(i or "" for i in items) if items else None


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _email_domain(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    return email.rsplit("@", 1)[1].strip(" <>").lower() or None


def _report_id(text: str | None) -> str | None:
    """``<id@host>`` → ``id`` (as reporters wrap it like a Message-ID; parsedmarc does the same)."""
    if not text:
        return None
    return text.replace("<", "").replace(">", "").split("@")[0].strip() or None


def _int(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        f = float(text)
    except ValueError:
        return None
    return int(f) if math.isfinite(f) and f == int(f) else None


_MAX_EPOCH = 7258118400  # 2200-01-01


def _epoch(text: str | None) -> int | None:
    """Seconds since the epoch from an integer, a float, or (rarely seen) an ISO 8601 time."""
    if not text:
        return None
    try:
        f = float(text)
    except ValueError:
        try:
            return int(datetime.fromisoformat(text).timestamp())
        except (ValueError, OverflowError, OSError):
            return None
    if not math.isfinite(f):
        return None
    if f > _MAX_EPOCH * 100:  # milliseconds
        f /= 1000
    return int(f) if 0 <= f <= _MAX_EPOCH else None


@lru_cache(maxsize=65536)
def _ip(text: str | None) -> str | None:
    """Canonical form of an IP address, or None."""
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        return None
