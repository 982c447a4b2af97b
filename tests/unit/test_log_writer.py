"""The broker's log lines are written on a thread of their own, many per write (logging_setup.LineWriter):
logging costs the caller the formatting only, never the write, and a flush waits for what came before it."""

from __future__ import annotations

import io
import logging
import threading

from broker.logging_setup import LineWriter, QueuedStreamHandler


class GatedStream(io.StringIO):
    """A stream whose writes wait for ``gate``: a slow disk, or a pipe nobody reads."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.writing = threading.Event()
        self.writes = 0
        self.writer_threads: set[str] = set()

    def write(self, text: str) -> int:
        self.writing.set()
        self.writer_threads.add(threading.current_thread().name)
        assert self.gate.wait(10), "the test never opened the gate"
        self.writes += 1
        return super().write(text)


def test_a_caller_never_waits_for_the_write_and_a_flush_waits_for_every_line_before_it():
    stream = GatedStream()
    writer = LineWriter(stream)
    writer.put("first\n")
    assert stream.writing.wait(5)                 # the writer is stuck in a write
    for n in range(1000):                         # ... and logging goes on regardless
        writer.put(f"line {n}\n")
    assert not writer.flush(timeout=0.05)         # not written yet: the flush says so
    stream.gate.set()
    assert writer.flush(timeout=5)
    assert stream.getvalue().splitlines() == ["first"] + [f"line {n}" for n in range(1000)]
    assert stream.writes <= 3, f"{stream.writes} writes for 1,001 lines: they should go many per write"
    assert stream.writer_threads == {"log-writer"}


def test_lines_from_many_threads_all_arrive_each_threads_in_its_order():
    stream = GatedStream()
    stream.gate.set()
    handler = QueuedStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test_log_writer.many")
    logger.propagate, logger.handlers = False, [handler]

    def log_from(t: int) -> None:
        for n in range(300):
            logger.warning("t%d n%d", t, n)
    threads = [threading.Thread(target=log_from, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 * 300
    for t in range(4):
        assert [int(line.split()[1][1:]) for line in lines if line.startswith(f"t{t} ")] == list(range(300))
    assert stream.writer_threads == {"log-writer"}


class BrokenStream(io.StringIO):
    def __init__(self):
        super().__init__()
        self.fail = True

    def write(self, text: str) -> int:
        if self.fail:
            raise OSError("EIO")
        return super().write(text)


def test_a_failing_write_loses_its_lines_but_not_the_writer_nor_the_caller():
    stream = BrokenStream()
    writer = LineWriter(stream)
    writer.put("lost\n")
    assert writer.flush(timeout=5)                # the writer survived the failure
    stream.fail = False
    writer.put("kept\n")
    assert writer.flush(timeout=5)
    assert stream.getvalue() == "kept\n"
