"""The file follower, one test per file-system situation (mtail-style).

Each test follows a path in a temp dir, writes lines, does to the file what
logrotate (or an admin) does, reads everything that is there and asserts that
every line came out exactly once. The follower is driven step by step
(``drain``), so the interleavings are exact; ``test_tail.py`` runs the same
situations through the live loop with inotify.
"""

from __future__ import annotations

import gzip
import os
import shutil

import pytest

from logscope.sources.follow import (
    FileInput, OpenFile, PathFollower, cut_lines, head_of, rotated_siblings,
)


def lines(a: int, b: int, tag: str = "m") -> list[str]:
    return [f"Jan  1 00:00:00 mx1 postfix/smtpd[1]: connect from {tag}{i}.example[192.0.2.1]" for i in range(a, b)]


def append(path, items: list[str]) -> None:
    with open(path, "a") as f:
        f.write("".join(x + "\n" for x in items))


def drain(src, max_bytes: int = 1 << 20) -> list[str]:
    """Everything the follower hands out now."""
    out: list[str] = []
    while (batch := src.read_batch(max_bytes)) is not None:
        assert batch.lines.height == batch.lines["line"].len()
        out += batch.lines["line"].to_list()
    return out


class Log(list):
    def __call__(self, level: str, msg: str) -> None:
        self.append((level, msg))


def follower(path, pool=None, mode="start", rotate_wait=0.0, log=None) -> PathFollower:
    fol = PathFollower(str(path), str(path), log if log is not None else Log(), rotate_wait=rotate_wait)
    fol.restore(pool if pool is not None else [], mode)
    return fol


def pool_of(fol: PathFollower) -> list[dict]:
    return list(fol.checkpoint()["files"])


def test_cut_lines_whole_lines_only_and_bounded():
    assert cut_lines(b"a\nb\nc", 10, False) == 4
    assert cut_lines(b"abc", 10, False) == 0
    assert cut_lines(b"abc", 10, True) == 3  # a full read without newline: a runaway line is cut
    data = b"".join(b"%d\n" % i for i in range(1000))
    cut = cut_lines(data, 100, False)
    assert data[:cut].count(b"\n") <= 100 and data[:cut].endswith(b"\n") and cut > 0


def test_partial_last_line_is_held_until_its_newline(tmp_path):
    p = tmp_path / "mail.log"
    p.write_text("first\nsec")
    fol = follower(p)
    assert drain(fol) == ["first"]
    assert drain(fol) == []
    with open(p, "a") as f:
        f.write("ond\nthi")
    assert drain(fol) == ["second"]
    with open(p, "a") as f:
        f.write("rd\n")
    assert drain(fol) == ["third"]
    assert fol.current.offset == p.stat().st_size


def test_big_file_comes_in_bounded_batches(tmp_path):
    p = tmp_path / "mail.log"
    append(p, lines(0, 5000))
    fol = follower(p)
    sizes = []
    while (b := fol.read_batch(64 * 1024, 1000)) is not None:
        sizes.append(b.lines.height)
        assert b.end - b.start == b.nbytes <= 64 * 1024
    assert sum(sizes) == 5000 and max(sizes) <= 1000 and len(sizes) >= 5


def test_file_not_existing_yet_is_read_from_its_start(tmp_path):
    p = tmp_path / "mail.log"
    log = Log()
    fol = follower(p, mode="end", log=log)  # --from-end applies to files that exist at the start only
    assert drain(fol) == [] and drain(fol) == []
    append(p, lines(0, 3))
    assert drain(fol) == lines(0, 3)
    assert not [m for lvl, m in log if lvl == "warning"]


def test_from_end_skips_existing_lines_and_counts_their_numbers(tmp_path):
    p = tmp_path / "mail.log"
    append(p, lines(0, 10))
    with open(p, "a") as f:
        f.write("partial")
    fol = follower(p, mode="end")
    assert drain(fol) == []
    with open(p, "a") as f:
        f.write(" line\n")
    append(p, lines(10, 12))
    batch = fol.read_batch(1 << 20)
    assert batch.lines["line"].to_list() == ["partial line"] + lines(10, 12)
    assert batch.first_line == 11  # line numbers stay true after a skip


def test_rename_and_recreate_drains_the_old_file_burst_included(tmp_path):
    p = tmp_path / "mail.log"
    append(p, lines(0, 10))
    fol = follower(p, rotate_wait=60)
    assert drain(fol) == lines(0, 10)
    writer = open(p, "a")  # a daemon that has not reopened its log yet
    writer.write("".join(x + "\n" for x in lines(10, 20)))
    writer.flush()
    os.rename(p, str(p) + ".1")  # logrotate: rename, create
    append(p, lines(20, 25))
    writer.write("".join(x + "\n" for x in lines(25, 30)))  # burst into the old file after the rename
    writer.flush()
    got = drain(fol)
    assert sorted(got) == sorted(lines(10, 30)) and len(got) == 20
    assert got[:10] == lines(10, 20)  # the old file is finished first
    writer.write(lines(30, 31)[0] + "\n")  # still written before the daemon reopens: not lost
    writer.close()
    append(p, lines(31, 33))
    assert sorted(drain(fol)) == sorted(lines(30, 33))
    assert fol.rotations == 1


def test_rotated_file_is_closed_after_rotate_wait(tmp_path):
    p = tmp_path / "mail.log"
    append(p, lines(0, 2))
    fol = follower(p, rotate_wait=0.0)
    drain(fol)
    os.rename(p, str(p) + ".1")
    append(p, lines(2, 3))
    assert drain(fol) == lines(2, 3)
    assert fol.retired == [] and fol.current.path == str(p)


def test_copytruncate_finishes_the_unread_lines_from_the_copy(tmp_path):
    p = tmp_path / "mail.log"
    append(p, lines(0, 10))
    fol = follower(p)
    assert drain(fol) == lines(0, 10)
    append(p, lines(10, 15))  # written, not read yet
    shutil.copyfile(p, str(p) + ".1")  # logrotate copytruncate
    os.truncate(p, 0)
    append(p, lines(15, 18))
    assert drain(fol) == lines(10, 18)
    assert fol.retired == [] and fol.rotations == 1


def test_copytruncate_into_a_compressed_copy(tmp_path):
    p = tmp_path / "mail.log"
    append(p, lines(0, 10))
    fol = follower(p)
    drain(fol)
    append(p, lines(10, 15))
    with open(p, "rb") as src, gzip.open(str(p) + ".1.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.truncate(p, 0)
    append(p, lines(15, 16))
    assert drain(fol) == lines(10, 16)


def shift(p) -> None:
    """logrotate's numbering: .1 -> .2 -> ..."""
    for n in range(8, 0, -1):
        if os.path.exists(f"{p}.{n}"):
            os.rename(f"{p}.{n}", f"{p}.{n + 1}")


def test_two_copytruncates_between_two_looks(tmp_path):
    p = tmp_path / "mail.log"
    append(p, lines(0, 10))
    fol = follower(p)
    drain(fol)
    append(p, lines(10, 12))
    for a, b in ((12, 15), (15, 17)):
        shift(p)
        shutil.copyfile(p, str(p) + ".1")
        os.truncate(p, 0)
        append(p, lines(a, b))
    assert drain(fol) == lines(10, 17)  # rest of .2, all of .1, the live file


def test_two_renames_between_two_looks(tmp_path):
    p = tmp_path / "mail.log"
    append(p, lines(0, 10))
    fol = follower(p, rotate_wait=60)
    drain(fol)
    append(p, lines(10, 12))
    for a, b in ((12, 15), (15, 17)):
        shift(p)
        os.rename(p, str(p) + ".1")
        append(p, lines(a, b))
    assert drain(fol) == lines(10, 17)
    assert drain(fol) == []


def test_truncation_in_place(tmp_path):
    p = tmp_path / "mail.log"
    append(p, lines(0, 10))
    fol = follower(p)
    drain(fol)
    with open(p, "w"):
        pass  # > mail.log
    assert drain(fol) == []
    append(p, lines(10, 12))
    assert drain(fol) == lines(10, 12)


def test_truncated_and_regrown_past_the_offset_is_noticed_by_its_first_line(tmp_path):
    p = tmp_path / "mail.log"
    append(p, lines(0, 3))
    fol = follower(p)
    drain(fol)
    with open(p, "w") as f:  # truncated and longer than before when we look again
        f.write("".join(x + "\n" for x in lines(100, 120, tag="new")))
    assert drain(fol) == lines(100, 120, tag="new")


def test_symlink_pointed_to_a_new_file(tmp_path):
    a, b, link = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "mail.log"
    append(a, lines(0, 5))
    os.symlink(a, link)
    fol = follower(link, rotate_wait=60)
    assert drain(fol) == lines(0, 5)
    append(a, lines(5, 7))
    append(b, lines(7, 10))
    tmp_link = tmp_path / "mail.log.new"
    os.symlink(b, tmp_link)
    os.rename(tmp_link, link)  # atomic switch, as deploy tools do
    assert drain(fol) == lines(5, 10)
    append(b, lines(10, 11))
    assert drain(fol) == lines(10, 11)


def test_deletion_then_recreation(tmp_path):
    p = tmp_path / "mail.log"
    append(p, lines(0, 5))
    fol = follower(p, rotate_wait=0.0)
    drain(fol)
    append(p, lines(5, 8))
    os.unlink(p)
    assert drain(fol) == lines(5, 8)  # the deleted file is still read to its end
    append(p, lines(8, 10))
    assert drain(fol) == lines(8, 10)


def test_unreadable_path_warns_once_and_retries(tmp_path):
    # Tests run as root, for whom permission bits do not count: a directory in the
    # file's place is unreadable as a log for everyone. (test_tail.py has a real
    # EACCES, in a child without CAP_DAC_OVERRIDE.)
    p = tmp_path / "mail.log"
    p.mkdir()
    log = Log()
    fol = follower(p, log=log)
    for _ in range(5):
        assert drain(fol) == []
    warnings = [m for lvl, m in log if lvl == "warning"]
    assert len(warnings) == 1 and "is a directory" in warnings[0]
    p.rmdir()
    append(p, lines(0, 2))
    assert drain(fol) == lines(0, 2)
    assert ("info", f"{p}: readable again") in log


def test_restart_resumes_exactly_at_the_checkpoint(tmp_path):
    p = tmp_path / "mail.log"
    append(p, lines(0, 10))
    fol = follower(p)
    assert drain(fol) == lines(0, 10)
    saved = pool_of(fol)
    fol.close()
    append(p, lines(10, 15))
    fol2 = follower(p, pool=saved, mode="resume")
    assert drain(fol2) == lines(10, 15)


def test_restart_finds_the_file_renamed_while_down(tmp_path):
    p = tmp_path / "mail.log"
    append(p, lines(0, 10))
    fol = follower(p)
    drain(fol)
    saved = pool_of(fol)
    fol.close()
    append(p, lines(10, 15))  # written while logscope was down
    os.rename(p, str(p) + ".1")
    append(p, lines(15, 20))
    fol2 = follower(p, pool=saved, mode="resume")
    assert drain(fol2) == lines(10, 20)
    assert saved == []  # the checkpointed file was found and used


@pytest.mark.parametrize("compress", [False, True])
def test_restart_after_two_rotations_while_down(tmp_path, compress):
    p = tmp_path / "mail.log"
    append(p, lines(0, 10))
    fol = follower(p)
    drain(fol)
    saved = pool_of(fol)
    fol.close()
    append(p, lines(10, 12))
    os.rename(p, str(p) + ".1")
    append(p, lines(12, 15))  # a whole file logscope never saw
    os.rename(str(p) + ".1", str(p) + ".2")
    os.rename(p, str(p) + ".1")
    append(p, lines(15, 17))
    if compress:  # delaycompress off: rotated files are gzipped at once
        with open(str(p) + ".2", "rb") as src, gzip.open(str(p) + ".2.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.unlink(str(p) + ".2")
    assert rotated_siblings(str(p))[-1] == str(p) + ".1"
    fol2 = follower(p, pool=saved, mode="resume")
    assert drain(fol2) == lines(10, 17)


def test_restart_does_not_reread_old_rotated_files(tmp_path):
    p = tmp_path / "mail.log"
    append(str(p) + ".2", lines(0, 3, tag="old"))
    append(str(p) + ".1", lines(3, 6, tag="old"))
    append(p, lines(0, 4))
    fol = follower(p, mode="end")
    append(p, lines(4, 6))
    assert drain(fol) == lines(4, 6)
    saved = pool_of(fol)
    fol.close()
    append(p, lines(6, 7))
    fol2 = follower(p, pool=saved, mode="resume")
    assert drain(fol2) == lines(6, 7)


def test_identity_is_inode_plus_first_line(tmp_path):
    p = tmp_path / "mail.log"
    append(p, ["one", "two"])
    f = OpenFile.open(str(p))
    assert f.head == head_of(b"one\ntwo\n") != head_of(b"uno\ntwo\n")
    saved = f.saved()
    assert f.matches(saved)
    assert not f.matches({**saved, "head": head_of(b"uno\n")})  # inode reused by another file
    assert not f.matches({**saved, "ino": saved["ino"] + 1})
    f.close()


def test_glob_picks_up_new_files_and_follows_renames_into_the_glob(tmp_path):
    d = tmp_path / "asa"
    d.mkdir()
    append(d / "fw1.log", lines(0, 3, tag="fw1-"))
    inp = FileInput(str(d / "*.log"), Log(), rotate_wait=60)
    inp.restore(None, "start")
    inp.RESCAN = 0.0
    assert drain(inp) == lines(0, 3, tag="fw1-")
    append(d / "fw2.log", lines(0, 2, tag="fw2-"))  # appears later: read from its start
    append(d / "fw1.log", lines(3, 4, tag="fw1-"))
    assert sorted(drain(inp)) == sorted(lines(0, 2, tag="fw2-") + lines(3, 4, tag="fw1-"))
    # dateext-style rotation into a name the glob matches: not read twice
    os.rename(d / "fw1.log", d / "fw1-20250101.log")
    append(d / "fw1.log", lines(4, 5, tag="fw1-"))
    assert drain(inp) == lines(4, 5, tag="fw1-")
    append(d / "fw1-20250101.log", ["late line into the renamed file"])
    assert drain(inp) == ["late line into the renamed file"]
    # a restart with the checkpoint: nothing again, the new line only
    saved = inp.checkpoint()
    inp.close()
    append(d / "fw2.log", lines(2, 3, tag="fw2-"))
    inp2 = FileInput(str(d / "*.log"), Log(), rotate_wait=60)
    inp2.restore(saved, "start")
    assert drain(inp2) == lines(2, 3, tag="fw2-")
