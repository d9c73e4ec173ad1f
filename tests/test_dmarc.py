"""`logscope dmarc`: the shared corpus (every file), report quirks, views, outputs and the command.

Hostile inputs are in test_dmarc_hostile.py; the builders here are shared with it.
"""

from __future__ import annotations

import email
import email.encoders
import gzip
import io
import json
import quopri
import zipfile
from datetime import date, datetime, timezone
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.mime.text import MIMEText
from pathlib import Path

import polars as pl
import pytest

from logscope.cli import main as cli_main
from logscope.dmarc import views
from logscope.dmarc.collect import read_reports
from logscope.dmarc.inputs import Limits

from .conftest import CORPUS

DMARC = CORPUS / "dmarc"
TLSRPT = CORPUS / "tlsrpt"
needs_corpus = pytest.mark.skipif(not DMARC.is_dir() or not TLSRPT.is_dir(),
                                  reason=f"shared corpus not found at {CORPUS} (it lives outside the repo)")


# ---------------------------------------------------------------- builders (also used by test_dmarc_hostile)

def record(ip="192.0.2.1", count=1, disposition="none", dkim="pass", spf="pass", header_from="example.org") -> str:
    return (f"<record><row><source_ip>{ip}</source_ip><count>{count}</count><policy_evaluated>"
            f"<disposition>{disposition}</disposition><dkim>{dkim}</dkim><spf>{spf}</spf></policy_evaluated></row>"
            f"<identifiers><header_from>{header_from}</header_from></identifiers><auth_results>"
            f"<dkim><domain>{header_from}</domain><selector>s1</selector><result>{dkim}</result></dkim>"
            f"<spf><domain>{header_from}</domain><scope>mfrom</scope><result>{spf}</result></spf>"
            f"</auth_results></record>")


def report(records=None, org="Example Reporter", report_id="r-1", begin=1700000000, end=1700086399,
           domain="example.org", policy="<adkim>r</adkim><aspf>r</aspf><p>none</p><sp>none</sp><pct>100</pct>",
           root_attrs="", head="", metadata_extra="") -> str:
    """A DMARC aggregate report; ``records`` are XML strings (default: one passing record)."""
    records = [record()] if records is None else records
    org_el = "" if org is None else f"<org_name>{org}</org_name>"
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<feedback{root_attrs}>{head}<report_metadata>{org_el}'
            f"<email>dmarc@reporter.example</email><report_id>{report_id}</report_id>{metadata_extra}"
            f"<date_range><begin>{begin}</begin><end>{end}</end></date_range></report_metadata>"
            f"<policy_published><domain>{domain}</domain>{policy}</policy_published>\n"
            + "\n".join(records) + "\n</feedback>\n")


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zipped(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def report_mail(payload: bytes, ctype="application/gzip", filename="report.xml.gz", cte="base64",
                subject="Report Domain: example.org") -> bytes:
    """A report e-mail as reporters send it: a text part and the report attached (base64 or quoted-printable)."""
    msg = MIMEMultipart()
    msg["From"] = "dmarc@reporter.example"
    msg["To"] = "dmarc-rua@example.org"
    msg["Subject"] = subject
    msg.attach(MIMEText("This is an aggregate report.\n"))
    maintype, subtype = ctype.split("/")
    if cte == "base64":
        part = MIMEApplication(payload, subtype) if maintype == "application" else MIMENonMultipart(maintype, subtype)
        if maintype != "application":
            part.set_payload(payload)
            email.encoders.encode_base64(part)
    else:
        part = MIMENonMultipart(maintype, subtype)
        part.set_payload(quopri.encodestring(payload).decode("ascii"))
        part["Content-Transfer-Encoding"] = "quoted-printable"
    part.add_header("Content-Disposition", "attachment", filename=filename)
    msg.attach(part)
    return msg.as_bytes()


def forward(inner: bytes, subject="Fwd: report") -> bytes:
    """A message that carries ``inner`` as a message/rfc822 attachment."""
    msg = EmailMessage()
    msg["From"] = "admin@example.org"
    msg["To"] = "postmaster@example.org"
    msg["Subject"] = subject
    msg.set_content("forwarded report below\n")
    msg.add_attachment(email.message_from_bytes(inner))
    return msg.as_bytes()


def read(*paths, **limits):
    """read_reports over paths: (dataset, error lines, note lines), each line 'origin: text'."""
    errors, notes = [], []
    ds = read_reports([str(p) for p in paths], lambda o, w: errors.append(f"{o}: {w}"),
                      lambda o, w: notes.append(f"{o}: {w}"), Limits(**limits))
    return ds, errors, notes


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``logscope ARGS`` in this process: (exit status, stdout, stderr)."""
    status = cli_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def by_domain(ds) -> dict[str, int]:
    return dict(ds.records.group_by("domain").agg(pl.col("count").sum()).iter_rows())


def one(ds, **where) -> dict:
    rows = ds.records.filter(**where).to_dicts() if where else ds.records.to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


# ---------------------------------------------------------------- the shared corpus

def corpus_files(kind):
    base = CORPUS / kind
    return sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []


@needs_corpus
@pytest.mark.parametrize("path", corpus_files("dmarc") + corpus_files("tlsrpt"), ids=lambda p: p.name)
def test_every_corpus_file_reads_without_error(path):
    ds, errors, notes = read(path)
    assert errors == []
    assert ds.reports.height + ds.tls_policies.select(pl.struct("reporter", "report_id").n_unique()).item() == 1
    if path.name == "test_empty.xml":  # its only record has an empty source_ip and count 0
        assert ds.records.height == 0 and ds.skipped_records == 1
        assert notes == [f"{path}: record 1 skipped: source_ip '' is not an IP address"]
    else:
        assert notes == []
        assert ds.records.height + ds.tls_policies.height > 0


# Message totals per policy domain, verified by reading the files by hand (and equal to parsedmarc's):
# test.xml 5+2 (its .gz, .gz.gz, .zip, test2.xml and test_empty.xml repeat org "Test Inc." / id "1.id.0"),
# example.com 2 (acme) + 1 (msimerson; its .gz and .zip are duplicates), outlook.xml 1+2, ...
CORPUS_MESSAGES = {"test.net": 7, "example.com": 3, "random.net": 3, "bix-business.com": 2, "foo-bar.io": 1,
                   "myserver.com": 1, "mydomain.org": 1, "foobar.de": 1, "random.org": 1, "website.com": 1,
                   "foobar.com": 1}


@needs_corpus
def test_corpus_totals_and_duplicates():
    ds, errors, notes = read(DMARC, TLSRPT)
    assert errors == [] and notes == []
    assert ds.reports.height == 12 and ds.records.height == 14
    # 5 repeats of Test Inc. 1.id.0, 2 of msimerson, invalid_casing.xml = hardfail.xml's id, rfc-example = full-example
    assert ds.duplicates == 9
    assert by_domain(ds) == CORPUS_MESSAGES
    assert ds.records.get_column("count").sum() == 22


@needs_corpus
def test_corpus_fields_by_hand():
    ds, _, _ = read(DMARC)
    acme = one(ds, reporter="acme.com")
    assert acme["override_reasons"] == ["other: DMARC Policy overridden for incoherent example."]
    assert acme["dkim_selectors"] == ["ExamplesSelector"] and acme["spf_scopes"] == ["helo"]
    assert acme["fo"] == "1" and acme["envelope_to"] == "acme.com" and acme["schema"] == "draft"
    assert acme["dkim_aligned"] == "fail" and acme["spf_aligned"] == "pass" and acme["dmarc_pass"]
    gmx = one(ds, reporter="GMX")  # RFC 9990 namespace
    assert (gmx["schema"], gmx["discovery_method"], gmx["testing"]) == ("rfc9990", "psl", "n")
    google = one(ds, reporter="google.com")  # np without the namespace: still the new format
    assert (google["schema"], google["np"], google["spf_scopes"]) == ("rfc9990", "reject", [None])
    assert one(ds, reporter="AOL")["schema"] == "draft" and one(ds, reporter="AOL")["dkim_selectors"] == [None]
    outlook = ds.records.filter(reporter="Outlook.com").sort("count")
    assert outlook.get_column("count").to_list() == [1, 2] and outlook.get_column("schema").to_list() == ["rfc7489"] * 2
    assert outlook.get_column("envelope_to").to_list() == ["live.de", "outlook.de"]
    yahoo = one(ds, reporter="Yahoo")  # no <sp>: sp defaults to p
    assert (yahoo["p"], yahoo["sp"], yahoo["pct"]) == ("reject", "reject", 100)
    mailru = one(ds, reporter="Mail.Ru")  # one line, no final newline, no DKIM result at all
    assert (mailru["disposition"], mailru["dkim_results"], mailru["spf_results"]) == ("reject", [], ["softfail"])
    hard = one(ds, reporter="reporting org")  # CRLF; empty <domain/> and <selector/>
    assert hard["dkim_domains"] == [None] and hard["spf_results"] == ["hardfail"] and hard["disposition"] == "quarantine"
    test = ds.records.filter(reporter="Test Inc.").sort("count")
    assert test.get_column("count").to_list() == [2, 5]
    assert test.get_column("end").to_list()[0] == datetime(2018, 4, 20, 23, 59, 59, tzinfo=timezone.utc)  # "1524268799 "
    five = test.row(1, named=True)
    assert five["dkim_domains"] == ["test1.net", "test2.net"] and five["dkim_results"] == ["fail", "pass"]


@needs_corpus
def test_mixed_case_results_are_lowercased():
    ds, errors, _ = read(DMARC / "cry-inc_dmarc-report-viewer" / "invalid_casing.xml")
    assert errors == []
    assert one(ds)["spf_results"] == ["none", "neutral", "pass", "fail", "hardfail", "softfail", "temperror", "permerror"]


@needs_corpus
@pytest.mark.parametrize("name", ["test.xml.gz", "test.xml.gz.gz", "test.xml.zip"])
def test_compressed_corpus_files_equal_the_plain_one(name):
    plain, _, _ = read(DMARC / "tierpod_dmarc-report-converter" / "test.xml")
    packed, errors, _ = read(DMARC / "tierpod_dmarc-report-converter" / name)
    assert errors == []
    assert packed.records.drop("file").equals(plain.records.drop("file"))


@needs_corpus
def test_corpus_tls_reports():
    ds, errors, _ = read(TLSRPT)
    assert errors == [] and ds.duplicates == 1  # rfc-example.json repeats full-example.json's org and id
    dom = {r["policy_domain"]: r for r in views.tls_domain_summary(ds.tls_policies).to_dicts()}
    assert (dom["company-y.example"]["successful"], dom["company-y.example"]["failed"]) == (5326, 303)
    assert dom["random.net"]["policy_types"] == ["sts", "tlsa"] and dom["random.net"]["successful"] == 4
    assert dom["foo-bar.io"]["policy_types"] == ["no-policy-found", "sts"] and dom["foo-bar.io"]["reports"] == 2
    assert (dom["xxxxxxxx.xx"]["successful"], dom["xxxxxxxx.xx"]["failed"]) == (0, 3)
    fails = {(r["policy_domain"], r["result_type"]): r["failed"] for r in views.tls_failure_summary(ds.tls_failures).to_dicts()}
    assert fails == {("company-y.example", "starttls-not-supported"): 200, ("company-y.example", "certificate-expired"): 100,
                     ("company-y.example", "validation-failure"): 3, ("xxxxxxxx.xx", "sts-policy-fetch-error"): 3}
    nc = ds.tls_policies.filter(report_id="123_456").row(0, named=True)
    assert nc["contact"] is None and nc["reporter"] == "server.com" and nc["mx_host"] == "mx: mx.server.com"


@needs_corpus
def test_corpus_views():
    ds, _, _ = read(DMARC)
    src = views.source_summary(ds.records)
    cats = dict(zip(src.get_column("source_ip"), src.get_column("category").cast(pl.String)))
    assert {ip for ip, c in cats.items() if c == "spf_not_dkim"} == {"72.150.241.94", "203.0.113.209"}
    assert {ip for ip, c in cats.items() if c == "fails_both"} == {"10.1.1.1", "118.41.204.2", "42.42.42.42"}
    assert src.get_column("category").cast(pl.String).to_list()[:5] == ["spf_not_dkim"] * 2 + ["fails_both"] * 3
    row = src.filter(source_ip="1.2.3.4").row(0, named=True)  # seen by four reporters for four domains
    assert row["messages"] == 6 and row["reporters"] == ["Outlook.com", "Test Sender", "Yahoo", "google.com"]
    dom = {r["domain"]: r for r in views.domain_summary(ds.records).to_dicts()}
    assert dom["test.net"]["dmarc_pass"] == 5 and dom["test.net"]["fails_both"] == 2
    assert dom["example.com"]["dkim_aligned_pass"] == 1 and dom["example.com"]["spf_aligned_pass"] == 3
    assert (dom["foobar.de"]["reject"], dom["mydomain.org"]["quarantine"]) == (1, 1)
    pol = {r["domain"]: r for r in views.policy_summary(ds.records, min_days=2).to_dicts()}
    assert pol["example.com"]["recommendation"].endswith("consider p=quarantine")  # 3/3 compliant on 2 days
    assert pol["bix-business.com"]["recommendation"] is None  # one day only
    assert pol["test.net"]["recommendation"] is None  # 2 of 7 fail


@needs_corpus
def test_cli_on_the_corpus_every_format(capsys, tmp_path):
    status, out, err = run_cli(capsys, "dmarc", DMARC, TLSRPT)
    assert status == 0 and err == ""
    assert "passes SPF but fails DKIM" in out and "72.150.241.94" in out and "company-y.example" in out
    status, out, _ = run_cli(capsys, "dmarc", DMARC, TLSRPT, "--format", "json")
    summary = json.loads(out)
    assert {d["domain"]: d["messages"] for d in summary["domains"]} == CORPUS_MESSAGES
    assert summary["totals"]["duplicates"] == 9 and summary["totals"]["tls_reports"] == 6
    for fmt in ("markdown", "html"):
        status, out, _ = run_cli(capsys, "dmarc", DMARC, "--format", fmt)
        assert status == 0 and "bix-business.com" in out


# ---------------------------------------------------------------- formats and real-world quirks

def write(tmp_path, name, data) -> Path:
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def test_rfc9990_namespace_and_new_fields(tmp_path):
    xml = report(root_attrs=' xmlns="urn:ietf:params:xml:ns:dmarc-2.0"', head="<version>1.0</version>",
                 metadata_extra="<generator>Example MTA 1.2</generator>",
                 policy="<discovery_method>treewalk</discovery_method><p>quarantine</p><sp>reject</sp><np>none</np>"
                        "<testing>y</testing>")
    ds, errors, _ = read(write(tmp_path, "new.xml", xml))
    r = one(ds)
    assert errors == []
    assert (r["schema"], r["p"], r["sp"], r["np"], r["testing"], r["discovery_method"]) == \
        ("rfc9990", "quarantine", "reject", "none", "y", "treewalk")
    assert ds.reports.row(0, named=True)["generator"] == "Example MTA 1.2"
    assert r["adkim"] == "r" and r["pct"] == 100


def test_rfc7489_namespace_and_prefixed_elements(tmp_path):
    xml = ('<?xml version="1.0"?><d:feedback xmlns:d="http://dmarc.org/dmarc-xml/0.1"><d:version>1.0</d:version>'
           "<d:report_metadata><d:org_name>Pfx</d:org_name><d:email>a@b.example</d:email><d:report_id>p1</d:report_id>"
           "<d:date_range><d:begin>1700000000</d:begin><d:end>1700086399</d:end></d:date_range></d:report_metadata>"
           "<d:policy_published><d:domain>example.org</d:domain><d:p>reject</d:p></d:policy_published>"
           "<d:record><d:row><d:source_ip>192.0.2.9</d:source_ip><d:count>4</d:count><d:policy_evaluated>"
           "<d:disposition>reject</d:disposition><d:dkim>fail</d:dkim><d:spf>fail</d:spf></d:policy_evaluated></d:row>"
           "<d:identifiers><d:header_from>example.org</d:header_from></d:identifiers></d:record></d:feedback>")
    ds, errors, _ = read(write(tmp_path, "ns.xml", xml))
    r = one(ds)
    assert errors == [] and (r["schema"], r["count"], r["disposition"], r["sp"]) == ("rfc7489", 4, "reject", "reject")


def test_real_world_quirks(tmp_path):
    quirky = """<record><row><source_ip> 2001:DB8::1 </source_ip><count>3</count><policy_evaluated>
      <disposition>None</disposition><dkim>Pass</dkim><spf>FAIL</spf><reason></reason>
      <reason><type>forwarded</type><comment/></reason></policy_evaluated></row>
      <identities><header_from lang="en">Example.ORG</header_from></identities>
      <auth_results><dkim><domain>example.org</domain><result>pass</result></dkim>
      <spf><domain>bounce.example.net</domain><result>softfail</result></spf></auth_results></record>"""
    xml = report([quirky], org=None, report_id="&lt;abc123@reporter.example&gt;", begin="1700000000.0",
                 end="1700086399.5", policy="<p>none</p>", head="<xs:schema xmlns:xs='http://www.w3.org/2001/XMLSchema'/>")
    ds, errors, notes = read(write(tmp_path, "quirks.xml", xml))
    assert errors == [] and notes == []
    r = one(ds)
    assert r["reporter"] == "reporter.example"  # no org_name: the e-mail's domain
    assert r["report_id"] == "abc123"
    assert r["begin"] == datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    assert (r["adkim"], r["aspf"], r["sp"], r["np"], r["pct"], r["fo"]) == ("r", "r", "none", "none", 100, "0")
    assert (r["source_ip"], r["source_net"]) == ("2001:db8::1", "2001:db8::/64")
    assert (r["disposition"], r["dkim_aligned"], r["spf_aligned"], r["dmarc_pass"]) == ("none", "pass", "fail", True)
    assert r["override_reasons"] == ["forwarded"] and r["header_from"] == "example.org" and r["envelope_from"] is None
    assert r["dkim_selectors"] == [None] and r["spf_scopes"] == [None] and r["spf_results"] == ["softfail"]


def test_pre_rfc_draft_without_version(tmp_path):
    ds, _, _ = read(write(tmp_path, "draft.xml", report()))
    assert one(ds)["schema"] == "draft"


def test_bad_record_is_skipped_the_rest_kept_and_said(tmp_path, capsys):
    bad = record(ip="192.0.2.2", count="many")
    noip = record(ip="not-an-ip", count=4)
    xml = report([record(ip="192.0.2.1", count=2), bad, noip, record(ip="192.0.2.3", count=5)])
    f = write(tmp_path, "partly-bad.xml", xml)
    ds, errors, notes = read(f)
    assert errors == [] and ds.skipped_records == 2
    assert ds.records.get_column("count").to_list() == [2, 5]
    assert notes == [f"{f}: record 2 skipped: count 'many' is not a message count",
                     f"{f}: record 3 skipped: source_ip 'not-an-ip' is not an IP address"]
    status, out, err = run_cli(capsys, "dmarc", f)
    assert status == 0  # the report was read; the skipped records are warnings
    assert f"logscope: {f}: warning: record 2 skipped" in err and "records skipped: 2" in out


def test_crlf_and_no_final_newline(tmp_path):
    xml = report([record(count=2), record(ip="192.0.2.7", count=3)]).replace("\n", "\r\n").rstrip("\r\n")
    ds, errors, _ = read(write(tmp_path, "crlf.xml", xml))
    assert errors == [] and ds.records.get_column("count").sum() == 5


def test_invalid_utf8_is_replaced_and_the_report_kept(tmp_path):
    xml = report(org="Bad\xffName").encode("latin-1")  # a raw 0xFF byte in a document declared UTF-8
    ds, errors, notes = read(write(tmp_path, "latin.xml", xml))
    assert errors == [] and one(ds)["reporter"] == "Bad\ufffdName"
    assert len(notes) == 1 and "repaired broken XML (invalid UTF-8 replaced" in notes[0]


def test_declared_latin1_encoding_is_honoured(tmp_path):
    xml = report(org="Café").replace('encoding="UTF-8"', 'encoding="ISO-8859-1"').encode("latin-1")
    ds, errors, notes = read(write(tmp_path, "l1.xml", xml))
    assert errors == [] and notes == [] and one(ds)["reporter"] == "Café"


@pytest.mark.parametrize("damage, said", [
    (lambda x: x.replace("Example Reporter", "Smith & Sons"), "bare & escaped"),
    (lambda x: x + "\n--\nsent by a broken mailer\n", "junk after </feedback> dropped"),
    (lambda x: x[: x.rindex("</record>") + len("</record>")] + "\n<record><row><source_ip>19", "truncated report closed"),
    (lambda x: "\ufeff  \n" + x, None),
])
def test_recoverable_broken_xml(tmp_path, damage, said):
    xml = damage(report([record(count=2), record(ip="192.0.2.8", count=3)]))
    ds, errors, notes = read(write(tmp_path, "broken.xml", xml))
    assert errors == [] and ds.records.get_column("count").sum() == 5
    if said:
        assert len(notes) == 1 and said in notes[0]


def test_unrecoverable_xml_is_one_error(tmp_path):
    f = write(tmp_path, "bad.xml", "<feedback><report_metadata><org_name>x</org_name></report_metadata")
    ds, errors, _ = read(f)
    assert ds.reports.height == 0 and len(errors) == 1 and errors[0].startswith(f"{f}: not well-formed XML")


def test_duplicate_report_counted_once(tmp_path):
    xml = report([record(count=7)], report_id="dup-1").encode()
    a = write(tmp_path, "a.xml", xml)
    b = write(tmp_path, "b.eml", report_mail(gz(xml)))
    c = write(tmp_path, "c.xml", report([record(count=7)], report_id="dup-1", org="Other Org"))  # other reporter
    ds, errors, _ = read(a, b, c)
    assert errors == [] and ds.duplicates == 1 and ds.reports.height == 2
    assert ds.records.get_column("count").sum() == 14


# ---------------------------------------------------------------- containers and mail

def test_zip_with_several_members_and_gzip_inside(tmp_path):
    data = zipped({"one.xml": report(report_id="z1").encode(), "two.xml.gz": gz(report(report_id="z2").encode()),
                   "dir/": b""})
    ds, errors, _ = read(write(tmp_path, "r.zip", data))
    assert errors == [] and sorted(ds.reports.get_column("report_id")) == ["z1", "z2"]


@pytest.mark.parametrize("ctype, payload, cte", [
    ("application/gzip", "gz", "base64"), ("application/zip", "zip", "base64"),
    ("application/xml", "xml", "base64"), ("text/xml", "xml", "quoted-printable"),
    ("application/octet-stream", "gz", "base64"), ("application/x-zip-compressed", "zip", "base64"),
])
def test_report_mail_attachments(tmp_path, ctype, payload, cte):
    xml = report([record(count=3)], org="Mail Reporter=Corp").encode()  # '=' is escaped by quoted-printable
    data = {"gz": gz(xml), "zip": zipped({"r.xml": xml}), "xml": xml}[payload]
    ds, errors, _ = read(write(tmp_path, "m.eml", report_mail(data, ctype, cte=cte)))
    assert errors == [] and one(ds)["reporter"] == "Mail Reporter=Corp" and one(ds)["count"] == 3


def test_report_in_a_message_in_a_message(tmp_path):
    inner = report_mail(gz(report([record(count=9)]).encode()))
    f = write(tmp_path, "fwd.eml", forward(forward(inner)))
    ds, errors, _ = read(f)
    assert errors == [] and one(ds)["count"] == 9
    assert "report.xml.gz" in one(ds)["file"]


def test_mbox_and_maildir(tmp_path):
    m1 = report_mail(gz(report([record(count=1)], report_id="m1").encode()))
    m2 = report_mail(zipped({"x.xml": report([record(count=2)], report_id="m2").encode()}), "application/zip", "x.zip")
    mbox = b"".join(b"From dmarc@reporter.example Mon Jan  1 00:00:00 2024\n" + m + b"\n" for m in (m1, m2))
    ds, errors, _ = read(write(tmp_path, "reports.mbox", mbox))
    assert errors == [] and sorted(ds.records.get_column("count").to_list()) == [1, 2]

    md = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp", ".Reports/cur", ".Reports/new", ".Reports/tmp"):
        (md / sub).mkdir(parents=True)
    (md / "new" / "1.host").write_bytes(m1)
    (md / ".Reports" / "cur" / "2.host:2,S").write_bytes(m2)
    (md / "tmp" / "3.host").write_bytes(b"half-delivered garbage")  # tmp/ is never read
    (md / "dovecot-uidlist").write_bytes(b"3 V1 N2\n")  # nor the server's own files
    ds, errors, _ = read(md)
    assert errors == [] and sorted(ds.records.get_column("count").to_list()) == [1, 2]


def test_tls_report_gzipped_and_attached(tmp_path):
    tls = json.dumps({"organization-name": "Reporter Inc.", "report-id": "t-1", "contact-info": "tls@reporter.example",
                      "date-range": {"start-datetime": "2025-01-01T00:00:00Z", "end-datetime": "2025-01-01T23:59:59Z"},
                      "policies": [{"policy": {"policy-type": "sts", "policy-domain": "example.org"},
                                    "summary": {"total-successful-session-count": 10, "total-failure-session-count": 2},
                                    "failure-details": [{"result-type": "certificate-host-mismatch", "failed-session-count": 2,
                                                         "receiving-mx-hostname": "mx.example.org"}]},
                                   "not a policy"]}).encode()
    f = write(tmp_path, "tls.eml", report_mail(gz(tls), "application/tlsrpt+gzip", "tls.json.gz"))
    g = write(tmp_path, "tls.json.gz", gz(tls.replace(b"t-1", b"t-2")))
    ds, errors, notes = read(f, g)
    assert errors == [] and ds.tls_policies.height == 2
    assert notes == [f"{f}: attachment tls.json.gz: policy 2 skipped: no \"policy\" object",
                     f"{g}: policy 2 skipped: no \"policy\" object"]
    row = views.tls_domain_summary(ds.tls_policies).row(0, named=True)
    assert (row["policy_domain"], row["successful"], row["failed"], row["reports"]) == ("example.org", 20, 4, 2)
    assert views.tls_failure_summary(ds.tls_failures).row(0, named=True)["failed"] == 4


# ---------------------------------------------------------------- views

def test_views_categories_networks_days_and_recommendation(tmp_path):
    day = 86400
    files = []
    for i in range(3):  # three daily reports, every message compliant under p=none
        recs = [record(ip="198.51.100.7", count=10), record(ip="198.51.100.9", count=5, dkim="fail"),
                record(ip="2001:db8:1:2::5", count=1, spf="fail")]
        files.append(write(tmp_path, f"d{i}.xml", report(recs, report_id=f"d{i}", begin=1700006400 + i * day,
                                                         end=1700006400 + (i + 1) * day - 1)))
    ds, errors, _ = read(*files)
    assert errors == []
    src = views.source_summary(ds.records)
    assert src.select("source_ip", pl.col("category").cast(pl.String), "messages").rows() == [
        ("198.51.100.9", "spf_not_dkim", 15), ("2001:db8:1:2::5", "dkim_not_spf", 3), ("198.51.100.7", "passes_both", 30)]
    nets = views.network_summary(ds.records)
    assert nets.filter(source_net="198.51.100.0/24").row(0, named=True)["sources"] == 2
    assert nets.filter(source_net="2001:db8:1:2::/64").row(0, named=True)["messages"] == 3
    daily = views.daily_summary(ds.records)
    assert daily.get_column("day").to_list() == [date(2023, 11, 15), date(2023, 11, 16), date(2023, 11, 17)]
    assert daily.get_column("messages").to_list() == [16, 16, 16]
    rec = views.policy_summary(ds.records, min_days=3).row(0, named=True)["recommendation"]
    assert rec == "100% of 48 messages DMARC-compliant over 3 days under p=none: consider p=quarantine"
    assert views.policy_summary(ds.records, min_days=4).row(0, named=True)["recommendation"] is None
    spoof = write(tmp_path, "s.xml", report([record(ip="203.0.113.66", count=1, dkim="fail", spf="fail")], report_id="s"))
    ds2, _, _ = read(*files, spoof)
    assert views.policy_summary(ds2.records, min_days=3).row(0, named=True)["recommendation"] is None
    assert views.source_summary(ds2.records).row(1, named=True)["category"] == "fails_both"


def test_views_on_no_records():
    ds, _, _ = read()
    for view in (views.domain_summary, views.domain_reporter_summary, views.source_summary, views.network_summary,
                 views.daily_summary, views.policy_summary):
        assert view(ds.records).height == 0
    assert views.tls_domain_summary(ds.tls_policies).height == 0


# ---------------------------------------------------------------- the command

@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".ndjson"])
def test_records_export(tmp_path, capsys, suffix):
    f = write(tmp_path, "r.xml", report([record(count=2), record(ip="192.0.2.5", count=3, dkim="fail")]))
    out = tmp_path / f"records{suffix}"
    status, stdout, err = run_cli(capsys, "dmarc", f, "-o", out)
    assert status == 0 and stdout == "" and "2 records of 1 reports written" in err
    df = {".parquet": pl.read_parquet, ".csv": pl.read_csv, ".ndjson": pl.read_ndjson}[suffix](out)
    assert df.height == 2 and df.get_column("count").to_list() == [2, 3]
    sel = df.get_column("dkim_results").to_list()
    assert sel == (["pass", "fail"] if suffix == ".csv" else [["pass"], ["fail"]])


def test_unknown_output_suffix_is_a_usage_error(tmp_path, capsys):
    status, _, err = run_cli(capsys, "dmarc", tmp_path, "-o", tmp_path / "x.txt")
    assert status == 2 and "unknown output format" in err


def test_failed_inputs_exit_2_and_the_rest_is_read(tmp_path, capsys):
    good = write(tmp_path, "good.xml", report([record(count=4)]))
    empty = write(tmp_path, "empty.xml", b"")
    status, out, err = run_cli(capsys, "dmarc", good, empty, tmp_path / "missing.xml", "--format", "json")
    assert status == 2
    assert err.splitlines() == [f"logscope: {empty}: empty file", f"logscope: {tmp_path / 'missing.xml'}: no such file"]
    assert json.loads(out)["totals"]["messages"] == 4


def test_stdin(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(gz(report([record(count=6)]).encode()))))
    status, out, _ = run_cli(capsys, "dmarc", "-", "--format", "json")
    assert status == 0 and json.loads(out)["totals"]["messages"] == 6


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["dmarc", "--help"])
    assert exc.value.code == 0 and "usage: logscope dmarc" in capsys.readouterr().out


def test_parallel_parsing_gives_the_same_result(tmp_path):
    from logscope.dmarc.worker import PARALLEL_MIN_FILES
    n = PARALLEL_MIN_FILES + 50
    junk = dups = sum(i % 50 == 7 for i in range(n))  # every 50 files: one junk file, one duplicate
    for i in range(n):
        recs = [record(ip=f"192.0.2.{i % 250}", count=i % 7, dkim=("pass", "fail")[i % 2])]
        name = f"{i:04d}.xml"
        if i % 50 == 7:
            write(tmp_path, name, b"junk")  # failures come back in input order too
        elif i % 50 == 9:
            write(tmp_path, name + ".gz", gz(report(recs, report_id=f"id{i - 1}").encode()))  # a duplicate
        else:
            write(tmp_path, name, report(recs, report_id=f"id{i}", domain=f"d{i % 5}.example"))
    results = []
    for jobs in (1, 2, 3):
        errors, notes = [], []
        ds = read_reports([str(tmp_path)], lambda o, w: errors.append(f"{o}: {w}"), lambda o, w: notes.append(o),
                          Limits(), jobs=jobs)
        results.append((ds, errors, notes))
    (a, ea, na), *parallel = results
    for b, eb, nb in parallel:
        assert a.records.equals(b.records) and a.reports.equals(b.reports)
        assert ea == eb and na == nb and b.duplicates == dups
    assert len(ea) == junk and a.duplicates == dups and a.records.height == n - junk - dups


@pytest.mark.parametrize("variant", ["utf16", "doctype", "comment"])
def test_documents_off_the_fast_path_still_parse(tmp_path, variant):
    # UTF-16, a DTD without entities and comments all go through defusedxml rather than the plain C parser
    xml = report([record(count=4)], org="Zürich Mail")
    if variant == "utf16":
        data = xml.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    elif variant == "doctype":
        data = xml.replace("\n<feedback>", "\n<!DOCTYPE feedback>\n<feedback>").encode()
    else:
        data = xml.replace("<feedback>", "<feedback><!-- generated by a reporter -->").encode()
    ds, errors, notes = read(write(tmp_path, "r.xml", data))
    assert errors == [] and notes == [] and (one(ds)["reporter"], one(ds)["count"]) == ("Zürich Mail", 4)


NS9990 = ' xmlns="urn:ietf:params:xml:ns:dmarc-2.0"'


@pytest.mark.parametrize("variant", [
    "default namespace", "single quotes and spaces", "namespace on a child", "prefix declarations only",
    "xmlns in a text", "prefixed elements", "two namespaces",
])
def test_namespaces_in_every_place_are_matched_by_local_name(variant):
    from logscope.dmarc import aggregate
    xml = report([record(), record(ip="2001:db8::7", dkim="fail")], head="<version>1.0</version>")
    xml = {
        "default namespace": xml.replace("<feedback>", f"<feedback{NS9990}>"),
        "single quotes and spaces": xml.replace("<feedback>", "<feedback xmlns = 'http://dmarc.org/dmarc-xml/0.1' >"),
        "namespace on a child": xml.replace("<policy_published>", f"<policy_published{NS9990}>"),
        "prefix declarations only": xml.replace("<feedback>", '<feedback xmlns:xsi="http://www.w3.org/2001/'
                                                'XMLSchema-instance" xsi:noNamespaceSchemaLocation="rua.xsd">'),
        "xmlns in a text": xml.replace("<feedback>", f"<feedback{NS9990}>")
                              .replace("<org_name>Example Reporter", '<org_name>Example xmlns="x" Reporter'),
        "prefixed elements": xml.replace("<feedback>", f'<feedback{NS9990} xmlns:x="urn:x">')
                                .replace("<version>1.0</version>", "<x:version>1.0</x:version>"),
        "two namespaces": xml.replace("<feedback>", f"<feedback{NS9990}>")
                             .replace("<record>", '<record xmlns="http://dmarc.org/dmarc-xml/0.1">', 1),
    }[variant].encode()
    agg = aggregate.parse_aggregate(xml)
    assert agg.notes == [] and [r[:5] for r in agg.records] == [
        ("192.0.2.1", 1, "none", "pass", "pass"), ("2001:db8::7", 1, "none", "fail", "pass")]
    assert agg.report[0] == ('Example xmlns="x" Reporter' if "text" in variant else "Example Reporter")
    assert agg.report[8] == "example.org" and agg.report[6] == "1.0"
    root_ns = NS9990 in xml.decode().split("<feedback", 1)[1].split(">", 1)[0]
    assert agg.report[5] == ("rfc9990" if root_ns else "rfc7489")


def test_a_worker_failure_is_raised_not_hung(tmp_path):
    """An exception in a parsing process (a bug on some input) reaches the caller; nothing waits forever."""
    from logscope.dmarc.worker import _Shared
    good = write(tmp_path, "r.xml", report())
    chunks = [[good]] * 6 + [[None]] + [[good]] * 6  # os.open(None): TypeError, in whichever process takes it
    with pytest.raises(TypeError):
        list(_Shared(chunks, Limits(), 3))
