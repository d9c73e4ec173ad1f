"""Property tests: arbitrary text and bytes never raise, and every line is exactly one event."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from logscope.engine import parse_lines
from logscope.header import HeaderOptions
from logscope.sources.files import lines_frame

OPTS = HeaderOptions(tz="Europe/Berlin")
PREFIXES = ["", "Mar  1 10:00:00 mx postfix/smtpd[1]: ", "2024-01-01T00:00:00+01:00 mx dovecot: imap-login: ",
            "2017-07-30 18:51:05.712 ", "<190>", "%ASA-6-302013: ", "@400000004c91b044077a9e94 ", "#1(normal): "]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PREFIXES), st.text(max_size=200)), min_size=1, max_size=40))
def test_arbitrary_text_one_event_per_line(parser_set, items):
    lines = [p + t.replace("\n", " ").replace("\r", " ") for p, t in items]
    ev = parse_lines(lines, parser_set, OPTS)
    assert ev.height == len(lines)
    assert ev["kind"].null_count() == 0 and ev["source"].null_count() == 0
    assert ev["line"].to_list() == list(range(1, len(lines) + 1))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_one_event_per_line(parser_set, data):
    frame = lines_frame(data + b"\n")
    expected = (data + b"\n").count(b"\n")
    assert frame.height == expected
    ev = parse_lines(frame, parser_set, OPTS)
    assert ev.height == expected


def test_huge_lines_nul_bytes_and_cut_lines(parser_set):
    big = "Mar  1 10:00:00 mx postfix/smtpd[1]: connect from " + "a" * 1_000_000 + "[1.2.3.4]"
    lines = [big, "Mar  1 10:00:00 mx postfix/smtpd[1]: conn\x00ect from x[1.2.3.4]",
             "Mar  1 10:00:00 mx postfix/smtpd[1]: disconnect from x[1.2.", "Mar  1 10:0", "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace")]
    ev = parse_lines(lines, parser_set, OPTS)
    assert ev.height == len(lines)
    frame = lines_frame(b"\xff\xfe\x00bad\nok\r\nlast-without-newline")
    assert frame["line"].to_list()[1:] == ["ok", "last-without-newline"] and frame.height == 3
