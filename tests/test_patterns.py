"""The pattern language and parser-file loading: compile results and error positions."""

from __future__ import annotations

import re

import polars as pl
import pytest

from logscope import parsers
from logscope.engine import parse_lines
from logscope.header import HeaderOptions
from logscope.patterns import PatternCompiler, PatternError
from logscope.schema import FIELD_COLUMNS

C = PatternCompiler(FIELD_COLUMNS)


def test_literal_text_needs_no_escaping_and_captures_fill_columns():
    c = C.compile("connect from %{HOST:client_host}[%{IP:client_ip}]%{?:%{PORT:client_port}}")
    m = re.match(c.regex, "connect from mail.example.com[2001:db8::1]:25")
    assert m and m["client_host"] == "mail.example.com" and m["client_ip"] == "2001:db8::1" and m["client_port"] == "25"
    assert c.columns == {"client_host", "client_ip", "client_port"}


def test_optional_parts_nest_and_a_column_may_repeat():
    c = C.compile("%{?a=%{WORD:user}%{?, b=%{WORD:method}}}; %{?u=%{WORD:user}}")
    assert re.match(c.regex, "; u=bob")["user__2"] == "bob"
    m = re.match(c.regex, "a=x, b=y; ")
    assert (m["user"], m["method"]) == ("x", "y")


@pytest.mark.parametrize("pattern, col, message", [
    ("x %{NOPE:user}", 5, "unknown pattern"),
    ("x %{WORD:nosuch}", 10, "unknown column"),
    ("ab %{/(/:user}", 7, "invalid regular expression"),
    ("ab %{?cd", 4, "cannot parse"),
])
def test_errors_carry_a_column(pattern, col, message):
    with pytest.raises(PatternError) as exc:
        C.compile(pattern)
    assert exc.value.col == col and message in exc.value.msg


def write(tmp_path, text):
    d = tmp_path / "p"
    d.mkdir(exist_ok=True)
    (d / "local.toml").write_text(text)
    return d


def test_pattern_file_error_names_file_line_and_column(tmp_path):
    d = write(tmp_path, '[source]\nname = "postfix"\n\n[[event]]\nkind = "warning"\nmatch = \'warning: %{WORD:bogus}\'\n')
    with pytest.raises(parsers.ParserFileError) as exc:
        parsers.load([d])
    assert re.search(r"local\.toml:6:\d+: unknown column 'bogus'", str(exc.value))
    col = int(str(exc.value).split(":")[2])
    assert "match = 'warning: %{WORD:bogus}'"[col - 1:].startswith("bogus")


def test_toml_syntax_and_unknown_kind_errors(tmp_path):
    d = write(tmp_path, '[source\nname = "x"\n')
    with pytest.raises(parsers.ParserFileError, match=r"local\.toml: .*line 1"):
        parsers.load([d])
    d = write(tmp_path, '[source]\nname = "postfix"\n[[event]]\nkind = "nonsense"\nmatch = "x"\n')
    with pytest.raises(parsers.ParserFileError, match=r"local\.toml:4:\d+: unknown event kind 'nonsense'"):
        parsers.load([d])


def test_user_file_adds_a_local_variant_and_a_new_source(tmp_path):
    d = write(tmp_path, """
[source]
name = "opendkim"
programs = ["opendkim"]
[kinds]
dkim_signed = "opendkim: DKIM-Signature field added"
[[event]]
kind = "dkim_signed"
match = '%{QUEUEID:queue_id}: DKIM-Signature field added (s=%{WORD:method}, d=%{NOTSPACE:sender_domain})'
""")
    ps = parsers.load([d])
    ev = parse_lines(["Mar  1 10:00:00 mx opendkim[77]: 4F3A21C0D2: DKIM-Signature field added (s=mail, d=example.org)"],
                     ps, HeaderOptions(year=2025))
    row = ev.row(0, named=True)
    assert (row["source"], row["kind"], row["queue_id"], row["sender_domain"]) == ("opendkim", "dkim_signed", "4F3A21C0D2", "example.org")
    assert ev.schema["source"] == pl.Enum(ps.source_names)


def test_ascii_classes_keeps_meaning_on_ascii():
    import re

    from logscope.patterns import ascii_classes
    rx = r"^(?P<n>\d+)\s+(?P<h>[^\s\[\],]+)\[(?P<ip>[\d.]+)\] \w+ \S+ \D []x\d]"
    out = ascii_classes(rx)
    assert "\\d" not in out and "\\s" not in out and "\\w" not in out
    assert out.count("(?P<") == rx.count("(?P<")
    for text in ["12  mx.example.org[192.0.2.1] word tok x ]", "7 a[1.2.3.4] _ y- z 5", "x no match"]:
        a, b = re.match(rx, text), re.match(out, text)
        assert (a and a.groupdict()) == (b and b.groupdict())
    # non-ASCII digits are no digits any more
    assert re.match(rx, "٣ a[1] b c d x") and not re.match(out, "٣ a[1] b c d x")
    assert ascii_classes(r"\\d\[\d\]") == r"\\d\[[0-9]\]"
