"""`logscope tail` under a trickle of lines (a mail server writing a line now and then): the lines are read
together at most every ``min_interval``, not one batch per parse. Every batch costs the parse and the sinks a
fixed ~0.1 s of CPU whatever its size, so one batch per parse kept a core busy at 100 lines/s."""

from __future__ import annotations

import threading
import time

from .test_tail import LiveTail, append, lines, message


class CountBatches:
    """A sink that counts the batches it gets."""

    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()

    def add(self, events):
        with self.lock:
            self.count += 1


def test_a_trickle_of_lines_is_read_at_most_every_min_interval(tmp_path, parser_set):
    p = tmp_path / "mail.log"
    p.touch()
    live = LiveTail(tmp_path, [str(p)], parser_set, min_interval=0.25)
    batches = CountBatches()
    live.tail.sinks.append(batches)
    t0 = time.monotonic()
    try:
        for k in range(150):  # 3 s, a line every 20 ms
            append(p, lines(k, k + 1))
            time.sleep(0.02)
        t_written = time.monotonic()
        got = live.wait_count(150)
        latency = time.monotonic() - t_written - 0.3  # wait_count waits 0.3 s for duplicates
    finally:
        live.stop()
    elapsed = time.monotonic() - t0
    assert got == [message(x) for x in lines(0, 150)]
    # reads at least min_interval apart: a parse of a few lines takes far less, so it would be one batch per parse
    assert 2 <= batches.count <= elapsed / 0.25 + 1, (batches.count, elapsed)
    assert latency < 1.0  # the last line still within the 1 s budget


def test_a_trickle_on_several_inputs_is_read_in_one_round(tmp_path, parser_set):
    """Each of ten inputs trickling: every input with new lines is read in the same round (not one round of
    ``min_interval`` per ``workers`` inputs), so every line is still counted within the second."""
    files = [tmp_path / f"mail{i}.log" for i in range(10)]
    for f in files:
        f.touch()
    live = LiveTail(tmp_path, [str(f) for f in files], parser_set, min_interval=0.25)
    seen: list[float] = []  # when each written line was counted, minus when it was written
    written: dict[str, float] = {}
    try:
        for k in range(150):  # 3 s: a line every 20 ms, in turn to each file
            line = lines(k, k + 1)[0]
            written[message(line)] = time.monotonic()
            append(files[k % 10], [line])
            time.sleep(0.02)
            for m in live.sink.snapshot()[len(seen):]:
                seen.append(time.monotonic() - written[m])
        got = live.wait_count(150)
    finally:
        live.stop()
    assert sorted(got) == sorted(message(x) for x in lines(0, 150))
    assert len(seen) >= 100 and max(seen) < 1.0, max(seen)  # two inputs a round: five rounds of 0.25 s
