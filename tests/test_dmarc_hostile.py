"""`logscope dmarc` on hostile input: entity attacks, bombs, junk, and markup in report fields.

Every hostile file is made here, in tmp_path. Each one must give one clear line
naming the file and the problem (or be read safely), and never stop the others.
"""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import zipfile
import zlib

import pytest

from logscope.dmarc.inputs import MiB

from .conftest import REPO
from .test_dmarc import forward, gz, read, record, report, report_mail, run_cli, write, zipped


def run_subprocess(*args, timeout=60):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "logscope", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE feedback [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
"""


def test_billion_laughs_is_refused_and_the_rest_read(tmp_path, capsys):
    bomb = write(tmp_path, "laughs.xml", BILLION_LAUGHS + report(org="&lol9;").split("\n", 1)[1])
    good = write(tmp_path, "good.xml", report([record(count=3)]))
    status, out, err = run_cli(capsys, "dmarc", bomb, good, "--format", "json")
    assert status == 2
    assert err == f"logscope: {bomb}: refused: the XML declares entities (entity expansion and external references are never processed)\n"
    assert json.loads(out)["totals"] == {"reports": 1, "records": 1, "messages": 3, "tls_reports": 0, "duplicates": 0,
                                         "skipped_records": 0, "failed_inputs": 1}


@pytest.mark.parametrize("doctype", [
    '<!DOCTYPE feedback [<!ENTITY xxe SYSTEM "file://{secret}">]>',
    '<!DOCTYPE feedback [<!ENTITY % xxe SYSTEM "file://{secret}"> %xxe;]>',
    '<!DOCTYPE feedback SYSTEM "file://{secret}">',
])
def test_external_entities_are_never_read(tmp_path, doctype):
    # The "secret" is a FIFO: anything that opened it for reading would block, and the run would time out.
    fifo = tmp_path / "secret-fifo"
    os.mkfifo(fifo)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-7f3a")
    for target in (fifo, secret):
        org = "&xxe;" if "ENTITY xxe" in doctype else "Org"
        xml = '<?xml version="1.0"?>\n' + doctype.format(secret=target) + "\n" + report(org=org).split("\n", 1)[1]
        f = write(tmp_path, "xxe.xml", xml)
        for fmt in ("json", "html"):
            r = run_subprocess("dmarc", f, "--format", fmt, timeout=60)
            assert "TOP-SECRET" not in r.stdout + r.stderr
            assert "Traceback" not in r.stderr
            if "ENTITY" in doctype:
                assert r.returncode == 2 and "refused: the XML declares entities" in r.stderr
            else:  # an external DTD without entities: parsed without ever fetching it, or refused
                assert r.returncode in (0, 2)


def _zero_bomb(path, size, kind):
    """``size`` bytes of zeros, compressed (gzip or a one-member zip), written in 1 MiB steps."""
    chunk = b"\0" * MiB
    if kind == "gzip":
        c = zlib.compressobj(1, zlib.DEFLATED, 31)
        with open(path, "wb") as fh:
            for _ in range(size // MiB):
                fh.write(c.compress(chunk))
            fh.write(c.flush())
    else:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            with zf.open("report.xml", "w", force_zip64=True) as m:
                for _ in range(size // MiB):
                    m.write(chunk)
    return path


@pytest.mark.parametrize("kind", ["gzip", "zip"])
def test_decompression_bomb_is_bounded(tmp_path, kind):
    bomb = _zero_bomb(tmp_path / f"bomb.{kind}", 512 * MiB, kind)
    assert bomb.stat().st_size < 3 * MiB
    good = write(tmp_path, "good.xml", report([record(count=2)]))
    r = run_subprocess("dmarc", bomb, good, "--format", "json", timeout=120)
    assert r.returncode == 2
    where = f"{bomb}[report.xml]" if kind == "zip" else str(bomb)
    assert r.stderr == f"logscope: {where}: decompresses to more than {64 * MiB:,} bytes (limit)\n"
    assert json.loads(r.stdout)["totals"]["messages"] == 2
    # The child read at most 64 MiB of the 512 MiB: its peak memory stays far below the bomb's size.
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 < 400 * MiB


def test_nested_zip_bomb_stops_at_the_budget(tmp_path):
    inner = zipped({"zeros.xml": b"\0" * (2 * MiB)})
    level = inner
    for _ in range(3):  # 16 ** 3 copies of 2 MiB = 8 GiB if fully unpacked
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for i in range(16):
                zf.writestr(f"{i}.zip", level)
        level = buf.getvalue()
    f = write(tmp_path, "42.zip", level)
    ds, errors, _ = read(f, max_bytes=4 * MiB, max_total=16 * MiB)
    assert ds.reports.height == 0
    # each 2 MiB member of zeros is one "not a report" line until 16 MiB are spent; then one line per archive level
    assert 5 < len(errors) < 40
    assert sum("bytes decompressed from this input (limit)" in e for e in errors) >= 3


def test_zip_member_count_is_capped(tmp_path, capsys):
    members = {f"r{i}.xml": report([record(count=1)], report_id=f"m{i}").encode() for i in range(12)}
    f = write(tmp_path, "many.zip", zipped(members))
    status, out, err = run_cli(capsys, "dmarc", f, "--max-members", "5", "--format", "json")
    assert status == 2 and err == f"logscope: {f}: zip archive has 12 members; only the first 5 read (limit)\n"
    assert json.loads(out)["totals"]["reports"] == 5


@pytest.mark.parametrize("name, data, why", [
    ("empty.xml", b"", "empty file"),
    ("notes.xml", b"this is not a report, just a note\nsecond line\n", "not a report: text that is neither XML, JSON nor an e-mail message"),
    ("blank.xml", b"\n \r\n\t\n", "not a report: only white space"),
    ("junk.xml.gz", b"\x1f\x8b\x08\x00garbage-garbage-garbage", "corrupt gzip data"),
    ("junk.zip", b"PK\x03\x04" + b"\x00" * 40, "corrupt zip archive"),
    ("page.xml", b"<!doctype html><html><body><script>x</script></body></html>", "not well-formed XML"),
    ("page2.xml", b"<html><body>hello</body></html>", "not a DMARC aggregate report: root element is <html>, not <feedback>"),
    ("other.json", b'{"hello": "world"}', 'JSON but not an SMTP TLS report (no "policies" list)'),
    ("deep.json", b"[" * 100000 + b"]" * 100000, "JSON nested too deeply"),
    ("binary.bin", bytes(range(256)) * 4, "not a report: binary data that is not gzip, zip, bzip2 or xz"),
    ("plain.eml", b"From: a@b.example\nSubject: hi\n\nno attachment here\n", "e-mail message without a report attachment"),
])
def test_non_reports_get_one_clear_line(tmp_path, capsys, name, data, why):
    bad = write(tmp_path, name, data)
    good = write(tmp_path, "good.xml", report([record(count=5)]))
    status, out, err = run_cli(capsys, "dmarc", bad, good, "--format", "json")
    assert status == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"logscope: {bad}: {why}"), lines
    assert json.loads(out)["totals"]["messages"] == 5


def test_message_nesting_is_bounded(tmp_path):
    msg = report_mail(gz(report().encode()))
    for _ in range(12):
        msg = forward(msg)
    ds, errors, _ = read(write(tmp_path, "deep.eml", msg))
    assert ds.reports.height == 0 and len(errors) == 1 and "nested deeper than 8" in errors[0]


def test_huge_and_negative_counts_are_bad_records(tmp_path):
    xml = report([record(count=10 ** 30), record(ip="192.0.2.4", count=-1), record(ip="192.0.2.5", count=8)])
    ds, errors, notes = read(write(tmp_path, "counts.xml", xml))
    assert errors == [] and ds.records.get_column("count").to_list() == [8] and len(notes) == 2


HOSTILE = "<script>alert(1)</script>"


def _hostile_inputs(tmp_path):
    xml = report([record(header_from="evil.example")], org=HOSTILE.replace("<", "&lt;").replace(">", "&gt;"),
                 domain="x.example&lt;img src=x onerror=alert(2)&gt;")
    tls = json.dumps({"organization-name": "\x1b[2J\x1b[31mTLS " + HOSTILE, "report-id": "t|1",
                      "date-range": {"start-datetime": "2025-01-01T00:00:00Z", "end-datetime": "2025-01-01T23:59:59Z"},
                      "policies": [{"policy": {"policy-type": "sts", "policy-domain": "*evil* | `x` [a](javascript:alert(3))"},
                                    "summary": {"total-successful-session-count": 1, "total-failure-session-count": 1}}]})
    return write(tmp_path, "h.xml", xml), write(tmp_path, "h.json", tls)


def test_html_output_escapes_report_fields(tmp_path, capsys):
    status, out, _ = run_cli(capsys, "dmarc", *_hostile_inputs(tmp_path), "--format", "html")
    assert status == 0
    assert HOSTILE not in out and "<img" not in out and "\x1b" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert out.count("<script") == 0  # the page itself has no scripts either


def test_markdown_and_text_outputs_neutralise_report_fields(tmp_path, capsys):
    files = _hostile_inputs(tmp_path)
    status, md, _ = run_cli(capsys, "dmarc", *files, "--format", "markdown")
    assert status == 0 and HOSTILE not in md and "<img" not in md and "\x1b" not in md
    assert r"\*evil\* \| \`x\` \[a\]\(javascript:alert\(3\)\)" in md
    status, text, _ = run_cli(capsys, "dmarc", *files)
    assert status == 0 and "\x1b" not in text and "?[2J?[31mTLS" in text
