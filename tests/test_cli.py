"""The command line as a user runs it: subcommands, inputs, outputs, exit codes."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from logscope.header import HeaderOptions
from logscope.pipeline import ReadOptions, iter_events

from .conftest import REPO, SAMPLES

LINES = [
    "Mar  1 10:00:00 mx postfix/smtpd[11]: connect from a.example[192.0.2.1]",
    "Mar  1 10:00:01 mx postfix/smtpd[11]: disconnect from a.example[192.0.2.1] ehlo=1 quit=1 commands=2",
    "Mar  1 10:00:02 mx postfix/qmgr[12]: 4F3A21C0D2: removed",
    "this is not a log line",
]


def run(*args, stdin=None, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "logscope", *args], input=stdin, capture_output=True,
                          text=True, env=env, cwd=cwd or REPO)


def write_log(path: Path, lines=LINES, opener=open):
    with opener(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("cmd", [[], ["parse"], ["generate"], ["parsers"], ["bench"]])
def test_help_for_every_subcommand(cmd):
    r = run(*cmd, "--help")
    assert r.returncode == 0 and "usage: logscope" in r.stdout


def test_unknown_subcommand_is_a_usage_error():
    r = run("frobnicate")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_parse_prints_summary_with_unparsed_share(tmp_path):
    # a header-less line continues the entry above it; with nothing above, its source is unknown
    f = write_log(tmp_path / "mail.log", [LINES[3]] + LINES)
    r = run("parse", str(f), "--tz", "UTC")
    assert r.returncode == 0, r.stderr
    assert "smtpd_connect" in r.stdout
    assert "postfix             4  unparsed 1 (25.00%)" in r.stdout
    assert "unknown             1  unparsed 1 (100.00%)" in r.stdout
    assert r.stdout.strip().splitlines()[-1].split() == ["total", "5"]


def test_missing_file_is_one_error_line_and_the_rest_is_parsed(tmp_path):
    f = write_log(tmp_path / "mail.log")
    r = run("parse", str(tmp_path / "nope.log"), str(f), "--format", "json")
    assert r.returncode == 2
    assert r.stderr.strip() == f"logscope: {tmp_path / 'nope.log'}: no such file"
    assert '"lines": 4' in r.stdout


def test_unreadable_directory_and_corrupt_gzip(tmp_path):
    bad = tmp_path / "broken.gz"
    bad.write_bytes(gzip.compress(("\n".join(LINES) + "\n").encode())[:40])
    r = run("parse", str(tmp_path), str(bad), "--format", "json")
    assert r.returncode == 2
    errs = r.stderr.strip().splitlines()
    assert len(errs) == 2 and "is a directory" in errs[0] and str(bad) in errs[1]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("opener, suffix", [(gzip.open, ".gz"), (bz2.open, ".bz2"), (lzma.open, ".xz")])
def test_compressed_inputs(tmp_path, opener, suffix):
    f = write_log(tmp_path / f"mail.log.1{suffix}", opener=opener)
    out = tmp_path / "ev.ndjson"
    r = run("parse", str(f), "-o", str(out), "--tz", "UTC")
    assert r.returncode == 0, r.stderr
    ev = pl.read_ndjson(out)
    assert ev.height == 4 and ev["kind"].to_list()[:3] == ["smtpd_connect", "smtpd_disconnect", "qmgr_removed"]


def test_stdin(tmp_path):
    r = run("parse", "-", "--format", "json", stdin="\n".join(LINES) + "\n")
    assert r.returncode == 0 and '"lines": 4' in r.stdout


def test_rotated_set_is_read_oldest_first(tmp_path):
    write_log(tmp_path / "maillog.2.gz", [LINES[0].replace("10:00:00", "08:00:00")], gzip.open)
    write_log(tmp_path / "maillog.1", [LINES[0].replace("10:00:00", "09:00:00")])
    write_log(tmp_path / "maillog", [LINES[0]])
    out = tmp_path / "ev.csv"
    r = run("parse", *(str(tmp_path / n) for n in ("maillog", "maillog.1", "maillog.2.gz")), "-o", str(out), "--year", "2025")
    assert r.returncode == 0, r.stderr
    files = [Path(p).name for p in pl.read_csv(out)["file"].to_list()]
    assert files == ["maillog.2.gz", "maillog.1", "maillog"]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".ndjson"])
def test_output_formats_hold_every_line(tmp_path, suffix):
    out = tmp_path / f"events{suffix}"
    r = run("parse", str(SAMPLES / "postfix.log"), "-o", str(out), "--tz", "UTC")
    assert r.returncode == 0, r.stderr
    reader = {".parquet": pl.read_parquet, ".csv": lambda f: pl.read_csv(f, infer_schema=False),
              ".ndjson": lambda f: pl.read_ndjson(f, infer_schema_length=None)}[suffix]
    n_lines = sum(1 for _ in open(SAMPLES / "postfix.log"))
    assert reader(out).height == n_lines


def test_bad_parser_dir_is_a_usage_error(tmp_path):
    d = tmp_path / "parsers"
    d.mkdir()
    (d / "x.toml").write_text('[source]\nname = "postfix"\n[[event]]\nkind = "warning"\nmatch = "%{NOPE}"\n')
    r = run("parse", "--parsers-dir", str(d), str(SAMPLES / "postfix.log"))
    assert r.returncode == 2
    assert r.stderr.startswith(f"logscope: {d / 'x.toml'}:5:") and "unknown pattern" in r.stderr


def test_chunked_reading_gives_the_same_events(tmp_path, parser_set):
    f = write_log(tmp_path / "m.log", LINES * 50)
    opts = HeaderOptions(tz="UTC", year=2025)
    one = pl.concat(iter_events([str(f)], parser_set, ReadOptions(opts), print))
    many = list(iter_events([str(f)], parser_set, ReadOptions(opts, chunk_bytes=333), print))
    assert len(many) > 10
    assert pl.concat(many).equals(one)
    assert one["line"].to_list() == list(range(1, 201))


def test_generate_is_seeded(tmp_path):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    assert run("generate", "-n", "2000", "--seed", "7", "-o", str(a)).returncode == 0
    assert run("generate", "-n", "2000", "--seed", "7", "-o", str(b)).returncode == 0
    assert a.read_bytes() == b.read_bytes() and len(a.read_text().splitlines()) == 2000


def test_corrupt_gzip_is_one_error_line_and_the_rest_is_parsed(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + b"junk" * 10)
    proc = run("parse", str(bad), str(SAMPLES / "maillog"), "--format", "json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if "bad.gz" in ln]
    assert '"lines": 5000' in proc.stdout


def _kinds(paths, parser_set, notes):
    frames = list(iter_events([str(p) for p in paths], parser_set, ReadOptions(HeaderOptions(tz="UTC", year=2025), chunk_bytes=64 * 1024),
                              lambda m: pytest.fail(m), notes.append))
    return pl.concat(frames).select("kind", "message", "line")


def test_overlapping_rotated_files_count_each_line_once(tmp_path, parser_set):
    """copytruncate leaves maillog.1's last lines again at the top of maillog: they count once."""
    lines = (SAMPLES / "maillog").read_text().splitlines(keepends=True)
    half = len(lines) // 2
    with gzip.open(tmp_path / "maillog.1.gz", "wt") as f:
        f.writelines(lines[:half])
    (tmp_path / "maillog").write_text("".join(lines[half - 25:]))
    (tmp_path / "whole").write_text("".join(lines))
    notes: list[str] = []
    rotated = _kinds([tmp_path / "maillog", tmp_path / "maillog.1.gz"], parser_set, notes)
    whole = _kinds([tmp_path / "whole"], parser_set, [])
    assert rotated.height == whole.height == len(lines)
    assert rotated.select("kind", "message").equals(whole.select("kind", "message"))
    assert notes == [f"{tmp_path / 'maillog'}: its first 25 lines repeat the end of {tmp_path / 'maillog.1.gz'}; counted once"]
    # line numbers stay those of the file: the first line read from maillog is its 26th
    assert rotated["line"][half] == 26


def test_rotated_files_without_overlap_and_the_same_file_twice(tmp_path, parser_set):
    lines = (SAMPLES / "maillog").read_text().splitlines(keepends=True)
    (tmp_path / "maillog.1").write_text("".join(lines[:100]))
    (tmp_path / "maillog").write_text("".join(lines[100:]))
    notes: list[str] = []
    assert _kinds([tmp_path / "maillog.1", tmp_path / "maillog"], parser_set, notes).height == len(lines)
    assert notes == []
    os.link(tmp_path / "maillog", tmp_path / "hardlink")
    assert _kinds([tmp_path / "maillog", tmp_path / "hardlink", tmp_path / "maillog"], parser_set, notes).height == len(lines) - 100
    assert len(notes) == 2 and all("same file as" in n for n in notes)
