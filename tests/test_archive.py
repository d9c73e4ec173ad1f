"""The local archive: ``logscope ingest``, ``report --from-archive``, ledger, retention, compaction."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from logscope import archive
from logscope.archive import Archive, ArchiveSink
from logscope.header import HeaderOptions
from logscope.parsers import load
from logscope.pipeline import ReadOptions, iter_events
from logscope.schema import SCHEMA
from logscope.sources.follow import Batch

from .conftest import SAMPLES
from .test_cli import run

MAILLOG = SAMPLES / "maillog"
FLAGS = ("--tz", "UTC", "--year", "2025")
HEADER = HeaderOptions(tz="UTC", year=2025)


def totals(*args) -> dict:
    proc = run("report", *args, "--format", "json", *FLAGS)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["traffic"]["totals"]


def ingest(arc: Path, *args):
    return run("ingest", "--archive", str(arc), *args, *FLAGS)


def parts(arc: Path) -> list[Path]:
    return sorted(arc.glob(archive.PART_GLOB))


def rows(arc: Path) -> int:
    return archive.scan(arc).select(pl.len()).collect().item()


def direct(path: Path) -> pl.DataFrame:
    return pl.concat(list(iter_events([str(path)], load(), ReadOptions(HEADER), print)))


@pytest.fixture(scope="module")
def maillog_archive(tmp_path_factory) -> Path:
    arc = tmp_path_factory.mktemp("arc") / "archive"
    proc = ingest(arc, str(MAILLOG))
    assert proc.returncode == 0, proc.stderr
    return arc


def test_report_from_archive_equals_report_on_file(maillog_archive):
    on_file = totals(str(MAILLOG))
    assert on_file["received"] > 0 and on_file["rejected"] > 0
    assert totals("--from-archive", str(maillog_archive)) == on_file
    # a period that covers the sample's day reads the same; one that does not reads nothing
    assert totals("--from-archive", str(maillog_archive), "--since", "2025-03-01", "--until", "2025-03-02") == on_file
    assert totals("--from-archive", str(maillog_archive), "--since", "2025-04-01")["received"] == 0


def test_layout_is_hive_and_schema_round_trips(maillog_archive):
    days = {p.parent.parent.name for p in parts(maillog_archive)}
    hosts = {p.parent.name for p in parts(maillog_archive)}
    assert days == {"day=2025-03-01"} and hosts == {"host=mx1", "host=fw1"}
    got = archive.scan(maillog_archive).collect()
    assert got.schema == SCHEMA
    want = direct(MAILLOG)
    key = ["file", "line"]
    assert got.sort(key).equals(want.sort(key))
    # pruning: the host filter reads only that host's partition
    plan = pl.scan_parquet(str(maillog_archive / archive.PART_GLOB), hive_partitioning=True).filter(
        pl.col("host") == "fw1").explain()
    assert "host=mx1" not in plan
    fw = archive.scan(maillog_archive, host="fw1").collect()
    assert fw.height == want.filter(pl.col("host") == "fw1").height > 0


def test_reingest_does_not_double_count(tmp_path):
    arc = tmp_path / "arc"
    assert ingest(arc, str(MAILLOG)).returncode == 0
    before, files = rows(arc), parts(arc)
    proc = ingest(arc, str(MAILLOG))
    assert proc.returncode == 0, proc.stderr
    assert "0 events archived" in proc.stderr
    assert rows(arc) == before == 5000 and parts(arc) == files


def test_grown_file_appends_only_new_lines(tmp_path):
    lines = MAILLOG.read_bytes().splitlines(keepends=True)
    log = tmp_path / "maillog"
    log.write_bytes(b"".join(lines[:3000]) + lines[3000].rstrip(b"\n"))  # last line still being written
    arc = tmp_path / "arc"
    with Archive(arc) as a:
        assert a.ingest_file(str(log), load(), HEADER, print) == 3000
    with open(log, "ab") as fh:
        fh.write(b"\n" + b"".join(lines[3001:]))
    with Archive(arc) as a:
        assert a.ingest_file(str(log), load(), HEADER, print) == 2000
        assert a.ingest_file(str(log), load(), HEADER, print) == 0
    got = archive.scan(arc).collect().sort("line")
    assert got["line"].to_list() == list(range(1, 5001))
    assert got.drop("file").equals(direct(MAILLOG).drop("file").sort("line"))


def test_rotated_and_compressed_copy_is_not_counted_again(tmp_path):
    log = tmp_path / "maillog"
    log.write_bytes(MAILLOG.read_bytes())
    arc = tmp_path / "arc"
    assert ingest(arc, str(log)).returncode == 0
    rotated = tmp_path / "maillog.1"
    log.rename(rotated)  # logrotate: same inode, new name
    gz = tmp_path / "maillog.2.gz"
    gz.write_bytes(gzip.compress(MAILLOG.read_bytes()))
    proc = ingest(arc, str(rotated), str(gz))
    assert proc.returncode == 0, proc.stderr
    assert rows(arc) == 5000


def test_unreadable_file_is_one_error_and_others_are_ingested(tmp_path):
    bad_gz = tmp_path / "broken.gz"
    bad_gz.write_bytes(b"\x1f\x8b\x08\x00" + b"not gzip at all" * 10)
    arc = tmp_path / "arc"
    adir = tmp_path / "a-directory"
    adir.mkdir()
    for bad in (tmp_path / "missing.log", adir, bad_gz):
        proc = ingest(arc, str(bad), str(MAILLOG))
        assert proc.returncode == 2
        errors = [ln for ln in proc.stderr.splitlines() if f"{bad}:" in ln]
        assert len(errors) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    assert rows(arc) == 5000


def test_archive_not_writable_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    proc = ingest(blocker / "arc", str(MAILLOG))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "not writable" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run("report", "--from-archive", str(tmp_path / "nothing-here"), *FLAGS)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def shifted(events: pl.DataFrame, days: int) -> pl.DataFrame:
    return events.with_columns(pl.col("ts") - timedelta(days=days))


def test_retention_drops_old_day_partitions(tmp_path):
    events = direct(MAILLOG)
    arc = tmp_path / "arc"
    with Archive(arc) as a:
        for age in (0, 10, 89, 91, 200):
            a.write_events(shifted(events, age), f"test|{age}")
        removed = a.apply_retention(90)
        newest = date(2025, 3, 1)
        assert removed == [f"day={newest - timedelta(days=age)}" for age in (200, 91)]
        assert a.days() == [newest - timedelta(days=age) for age in (89, 10, 0)]
        assert a.apply_retention(0) == []
    assert rows(arc) == 3 * events.height
    # via the command: --retention-days applies after the ingest
    proc = ingest(arc, "--compact", "--retention-days", "5")
    assert proc.returncode == 0, proc.stderr
    assert [d.isoformat() for d in Archive(arc).days()] == ["2025-03-01"]


def test_compaction_keeps_rows_and_reduces_files(tmp_path):
    lines = MAILLOG.read_bytes().splitlines(keepends=True)
    halves = [tmp_path / "a.log", tmp_path / "b.log"]
    halves[0].write_bytes(b"".join(lines[:2500]))
    halves[1].write_bytes(b"".join(lines[2500:]))
    arc = tmp_path / "arc"
    assert ingest(arc, *map(str, halves)).returncode == 0
    before = parts(arc)
    assert len(before) == 4
    proc = ingest(arc, "--compact")
    assert proc.returncode == 0, proc.stderr
    after = parts(arc)
    assert len(after) == 2 and not set(before) & set(after)
    assert rows(arc) == 5000
    assert totals("--from-archive", str(arc)) == totals(str(MAILLOG))


def test_compaction_of_a_busy_day_holds_a_bounded_number_of_events(tmp_path, monkeypatch):
    """A partition's parts are merged in time order into files of at most COMPACT_ROWS events, so compacting a
    day of millions of events never reads it at once; nothing is lost, and compacting again changes nothing."""
    monkeypatch.setattr(archive, "COMPACT_ROWS", 250)
    events = direct(MAILLOG).filter(pl.col("host") == "mx1").sort("ts").head(600)
    arc = tmp_path / "arc"
    with Archive(arc) as a:
        for i in reversed(range(6)):  # written newest first: the merge must order them by time
            a.write_events(events.slice(i * 100, 100), f"piece|{i}")
        assert len(parts(arc)) == 6
        assert a.compact() == (6, 3)
        assert a.compact() == (3, 3)
    files = parts(arc)
    assert len(files) == 3
    sizes = [pl.read_parquet(f).height for f in files]
    assert sorted(sizes) == [200, 200, 200]
    spans = sorted((pl.read_parquet(f)["ts"].min(), pl.read_parquet(f)["ts"].max()) for f in files)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # each file a run of time
    got = archive.scan(arc).collect().sort("ts", "line")
    assert got.select("ts", "line", "kind").equals(events.sort("ts", "line").select("ts", "line", "kind"))


def test_hostile_host_stays_inside_its_partition(tmp_path):
    events = direct(MAILLOG).head(10).with_columns(
        pl.Series("host", ["../../escape", "a/b", None, "x=y%", "mx1"] * 2))
    arc = tmp_path / "arc"
    with Archive(arc) as a:
        a.write_events(events, "hostile")
    assert all(arc in p.parents for p in tmp_path.rglob("*.parquet"))
    assert len({p.parent for p in parts(arc)}) == 5
    got = archive.scan(arc).collect()
    assert sorted(got["host"].to_list(), key=str) == sorted(events["host"].to_list(), key=str)
    assert archive.scan(arc, host="../../escape").collect().height == 2


def test_archive_sink_is_idempotent_per_batch(tmp_path):
    events = direct(MAILLOG)
    first, second = events.head(100), events.slice(100, 50)
    ident = {"dev": 1, "ino": 2, "head": "abc"}

    def batch(end, cursor=None, inp="/var/log/maillog"):
        return Batch(input=inp, path=inp, lines=pl.DataFrame({"line": []}, schema={"line": pl.String}),
                     end=end, identity=None if cursor else ident, cursor=cursor)

    sink = ArchiveSink(tmp_path / "arc")
    sink.add_batch(first, batch(1000))
    sink.add_batch(first, batch(1000))  # replayed after a crash before the checkpoint
    sink.add_batch(second, batch(1500))
    sink.add_batch(first, batch(1000))  # older than what is archived
    sink.add_batch(second, batch(0, cursor="s=1;i=2", inp="journal"))
    sink.add_batch(second, batch(0, cursor="s=1;i=2", inp="journal"))
    sink.close()
    assert rows(tmp_path / "arc") == 100 + 50 + 50


def test_multi_chunk_file_is_archived_whole_and_once(tmp_path):
    """A file of several read chunks is archived whole, once, with the same report as the file."""
    from logscope.generate import generate
    log = tmp_path / "big.log"
    n = generate(log, lines=60_000, seed=3)
    assert log.stat().st_size > 2 * 4 * 1024 * 1024 * 0.9  # at least two 4 MiB chunks
    arc = tmp_path / "arc"
    proc = ingest(arc, str(log))
    assert proc.returncode == 0, proc.stderr
    assert rows(arc) == n
    assert ingest(arc, str(log)).returncode == 0 and rows(arc) == n
    assert totals("--from-archive", str(arc)) == totals(str(log))


def test_tail_keeps_the_archive(tmp_path):
    """`tail --archive DIR` archives every line once; the report from the archive equals the report from the file."""
    import json
    import os
    import subprocess
    import sys

    from .conftest import REPO, SAMPLES
    env = dict(os.environ, PYTHONPATH=str(REPO))
    base = [sys.executable, "-m", "logscope"]
    arch = tmp_path / "arch"
    for _ in range(2):  # the second run finds nothing new: nothing is archived twice
        proc = subprocess.run(base + ["tail", str(SAMPLES / "maillog"), "--from-start", "--once", "--tz", "UTC",
                                      "--no-metrics", "--no-alerts", "--state-dir", str(tmp_path / "st"),
                                      "--archive", str(arch)], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    def totals(*args):
        out = subprocess.run(base + ["report", *args, "--format", "json", "--tz", "UTC"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["traffic"]["totals"]
    assert totals("--from-archive", str(arch)) == totals(str(SAMPLES / "maillog"))


# -- a full disk ------------------------------------------------------------------------------------------

PAGE = 4096


@pytest.fixture
def small_fs(tmp_path):
    """A real 16 MiB tmpfs (needs root and the right to mount; else the tests skip saying so)."""
    import os
    import subprocess
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full file system is simulated with a small tmpfs, which needs root and mount(8)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here (container without CAP_SYS_ADMIN?): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def fill(fs: Path, leave: int) -> Path:
    """Fill ``fs`` so that exactly ``leave`` bytes (whole pages) stay free; the filler file."""
    import os
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    assert free >= leave, (free, leave)
    filler = fs / "filler"
    with open(filler, "ab") as fh:
        fh.write(b"\0" * (free - leave))
    st = os.statvfs(fs)
    assert st.f_bavail * st.f_frsize == leave
    return filler


def pages(size: int) -> int:
    return -(-size // PAGE) * PAGE


def consistent(arc: Path) -> int:
    """What scans see is exactly what the ledger records: no temp file, rows == lines archived. The rows."""
    assert not [p for p in arc.rglob("*") if p.name.endswith(".tmp")]
    ledger = json.loads((arc / archive.LEDGER).read_text()) if (arc / archive.LEDGER).exists() else {"files": {}}
    n = rows(arc) if parts(arc) else 0
    assert n == sum(e["lines"] for e in ledger["files"].values())
    return n


def test_disk_full_while_ingesting_records_nothing_unwritten_and_a_later_run_catches_up(small_fs, tmp_path):
    """ENOSPC on a real file system at each step of a commit: before the parts, between parts and ledger,
    after the ledger. Nothing partial is visible, the ledger never claims lines that are not there, and
    once there is room again the next run archives the rest (the report equals the file's)."""
    log = tmp_path / "maillog"
    log.write_bytes(MAILLOG.read_bytes())  # one read chunk: one commit of two parts (hosts mx1 and fw1)
    roomy = tmp_path / "roomy"
    with Archive(roomy) as a:
        assert a.ingest_file(str(log), load(), HEADER, print) == 5000
    part_sizes = [pages(p.stat().st_size) for p in parts(roomy)]
    ledger = pages((roomy / archive.LEDGER).stat().st_size)
    assert len(part_sizes) == 2 and ledger == PAGE
    arc = small_fs / "arc"
    with Archive(arc):
        pass  # directory and lock file exist (no data pages)
    # free space: none; one part but not both; both parts but no ledger; parts and one ledger but not the
    # final save (the renames are done and recorded: the data is archived although the run fails)
    for leave, archived in [(0, 0), (min(part_sizes), 0), (sum(part_sizes), 0), (sum(part_sizes) + ledger, 5000)]:
        filler = fill(small_fs, leave)
        errors: list[str] = []
        with pytest.raises(archive.ArchiveError, match="No space left on device") as raised:
            with Archive(arc) as a:
                a.ingest_file(str(log), load(), HEADER, errors.append)
        assert errors == []
        assert raised.value.transient  # tail holds the batch and offers it again instead of stopping
        filler.unlink()
        assert consistent(arc) == archived, leave
        with Archive(arc) as a:  # room again: the same file is archived whole, once
            a.ingest_file(str(log), load(), HEADER, errors.append)
        assert consistent(arc) == 5000
        got = archive.scan(arc).collect().sort("line")
        assert got["line"].to_list() == list(range(1, 5001))
        for p in arc.iterdir():
            if p.name.startswith("day="):
                shutil.rmtree(p)
        (arc / archive.LEDGER).unlink()


def test_disk_full_command_is_one_line_and_the_next_run_completes(small_fs, tmp_path):
    """`logscope ingest A B` with room for A only: one error line, exit 2, A kept; with room, B is added."""
    from logscope.generate import generate
    first = tmp_path / "maillog"
    first.write_bytes(MAILLOG.read_bytes())
    big = tmp_path / "big.log"
    n = generate(big, lines=60_000, seed=3)
    roomy = tmp_path / "roomy"
    assert ingest(roomy, str(first)).returncode == 0
    need = sum(pages(p.stat().st_size) for p in roomy.rglob("*") if p.is_file())
    arc = small_fs / "arc"
    filler = fill(small_fs, need + 2 * PAGE)  # the ledger's temp copy, and one page to spare
    proc = ingest(arc, str(first), str(big))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"logscope: {arc}/day=2025-03-01/host=mx1: cannot write: "
                                                "No space left on device"], proc.stderr
    assert consistent(arc) == 5000
    filler.unlink()
    proc = ingest(arc, str(first), str(big))
    assert proc.returncode == 0, proc.stderr
    assert f"{n:,} events archived" in proc.stderr
    assert consistent(arc) == 5000 + n
    per_file = archive.scan(arc).group_by("file").agg(pl.len(), pl.col("line").n_unique().alias("lines")).collect()
    assert sorted(per_file.select("file", "len", "lines").rows()) == sorted(
        [(str(first), 5000, 5000), (str(big), n, n)])


def test_interrupted_commit_is_finished_and_stray_temp_files_removed(tmp_path):
    """A crash after the ledger recorded a commit but before its renames: the next open does them.
    A crash before that: the temp files are deleted and the lines are not recorded."""
    events = direct(MAILLOG)
    arc = tmp_path / "arc"
    with Archive(arc) as a:
        staged = a._stage(events, "crashed")
        a.ledger["files"]["k"] = {"lines": events.height}
        a.ledger["committing"] = [[str(t.relative_to(arc)), str(f.relative_to(arc))] for t, f in staged]
        a._save_ledger()  # ... and the process dies here
    assert parts(arc) == [] and len(staged) == 2
    with Archive(arc) as a:
        assert "committing" not in a.ledger
    assert len(parts(arc)) == 2 and consistent(arc) == events.height
    with Archive(arc) as a:
        stray = a._stage(events.head(10), "died before its commit")
    assert all(t.exists() for t, _ in stray)
    with Archive(arc):
        pass
    assert not any(t.exists() for t, _ in stray) and consistent(arc) == events.height
