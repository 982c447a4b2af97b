"""The producer-state snapshot a clean close leaves (broker/log/producer_snapshot_file.py): trusted by the next
open only when that open follows the clean close and the snapshot stands at the log end; every other file is
deleted; every clean close leaves one at the log end or none; and it equals what replaying the log gives."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.log import LogConfig, PartitionLog
from broker.log.producer_snapshot_file import read_snapshot, snapshot_file_name, snapshot_offsets, write_snapshot
from broker.producer_state import (BatchMetadata, ProducerStateManager, ProducerStateSnapshot, decode_snapshot,
                                   encode_snapshot, rebuild_producer_state)
from tests.unit.test_producer_state import _append


def _snapshot_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".snapshot"))


def _log_with_producers(directory: Path, batches: int = 30) -> tuple[PartitionLog, ProducerStateManager]:
    plog = PartitionLog.open(directory, LogConfig(), 0)
    live = ProducerStateManager()
    for i in range(batches):
        _append(plog, live, 1 + i % 3, 0, i // 3, 1, ts=1_000 + i)
    _append(plog, live, -1, -1, -1, 2)   # a batch without a producer id moves the offset all the same
    return plog, live


def _reopened(directory: Path) -> tuple[PartitionLog, ProducerStateManager]:
    """Open the log again (closed uncleanly by the caller's test end: _opened) and rebuild its producer state."""
    plog = PartitionLog.open(directory, LogConfig(), 0)
    _opened.append(plog)
    return plog, rebuild_producer_state(plog)


_opened: list[PartitionLog] = []


@pytest.fixture(autouse=True)
def _close_reopened():
    yield
    while _opened:
        _opened.pop().close(clean=False)


def _close_with_snapshot(plog: PartitionLog, live: ProducerStateManager) -> None:
    snap = live.current()
    plog.write_producer_snapshot(snap.offset, encode_snapshot(snap))
    plog.close()


def test_after_a_clean_close_the_next_open_loads_the_snapshot_and_replays_nothing(tmp_path):
    plog, live = _log_with_producers(tmp_path / "t-0")
    _close_with_snapshot(plog, live)
    assert _snapshot_files(tmp_path / "t-0") == [snapshot_file_name(plog.log_end_offset)]

    reopened, loaded = _reopened(tmp_path / "t-0")
    assert loaded.replayed_bytes == 0
    assert (loaded.producers, loaded.map_end_offset) == (live.producers, live.map_end_offset)
    assert reopened.take_producer_snapshot() is None           # once
    replayed = rebuild_producer_state(reopened)                  # what a replay of the same log gives
    assert replayed.replayed_bytes == reopened.size_bytes > 0
    assert (loaded.producers, loaded.map_end_offset) == (replayed.producers, replayed.map_end_offset)


def test_after_a_crash_the_snapshot_is_not_trusted_and_the_log_is_replayed(tmp_path):
    plog, live = _log_with_producers(tmp_path / "t-0")
    snap = live.current()
    plog.write_producer_snapshot(snap.offset, encode_snapshot(snap))
    plog.close(clean=False)                                          # no clean-shutdown marker: a kill -9
    reopened, rebuilt = _reopened(tmp_path / "t-0")
    assert _snapshot_files(tmp_path / "t-0") == []
    assert rebuilt.replayed_bytes == reopened.size_bytes
    assert rebuilt.producers == live.producers


def test_an_unchanged_log_keeps_its_file_and_a_changed_one_loses_it_at_the_clean_close(tmp_path):
    """Idle since the open: the file still holds the state, nothing is rewritten. Appended to and closed
    without a new snapshot (the state did not stand at the log end, say): the old file is deleted before
    the clean-shutdown marker, so the next open cannot trust it."""
    d = tmp_path / "t-0"
    plog, live = _log_with_producers(d)
    _close_with_snapshot(plog, live)
    again = PartitionLog.open(d, LogConfig(), 0)
    assert again.holds_producer_snapshot_at_end
    mtime = (d / snapshot_file_name(again.log_end_offset)).stat().st_mtime_ns
    assert again.write_producer_snapshot(again.log_end_offset, encode_snapshot(live.current())) is False
    again.close()
    assert _snapshot_files(d) == [snapshot_file_name(plog.log_end_offset)]
    assert (d / snapshot_file_name(plog.log_end_offset)).stat().st_mtime_ns == mtime

    third = PartitionLog.open(d, LogConfig(), 0)
    state = rebuild_producer_state(third)
    assert state.replayed_bytes == 0
    _append(third, state, 1, 0, 10, 1)
    assert not third.holds_producer_snapshot_at_end
    third.close()                                                    # no snapshot written this time
    assert _snapshot_files(d) == []
    fourth, rebuilt = _reopened(d)
    assert rebuilt.replayed_bytes == fourth.size_bytes


def test_a_log_cut_and_grown_back_to_the_same_end_does_not_trust_the_old_snapshot(tmp_path):
    d = tmp_path / "t-0"
    plog, live = _log_with_producers(d)
    _close_with_snapshot(plog, live)
    again = PartitionLog.open(d, LogConfig(), 0)
    end = again.log_end_offset
    again.truncate_to(end - 2)
    other = ProducerStateManager()
    _append(again, other, 99, 0, 0, 2)                                # another producer's batch, same end
    assert again.log_end_offset == end and not again.holds_producer_snapshot_at_end
    again.close()
    assert _snapshot_files(d) == []
    assert 99 in _reopened(d)[1].producers


def test_writing_a_new_snapshot_replaces_the_old_file(tmp_path):
    d = tmp_path / "t-0"
    plog, live = _log_with_producers(d)
    _close_with_snapshot(plog, live)
    again = PartitionLog.open(d, LogConfig(), 0)
    state = rebuild_producer_state(again)
    _append(again, state, 1, 0, 10, 1)
    _close_with_snapshot(again, state)
    assert _snapshot_files(d) == [snapshot_file_name(again.log_end_offset)]


def test_a_damaged_snapshot_is_ignored_with_a_warning_and_deleted(tmp_path):
    plog, live = _log_with_producers(tmp_path / "t-0")
    _close_with_snapshot(plog, live)
    path = tmp_path / "t-0" / snapshot_file_name(plog.log_end_offset)
    path.write_text(path.read_text().replace("[1,", "[9,", 1))     # the CRC no longer matches
    reopened, rebuilt = _reopened(tmp_path / "t-0")
    assert not path.exists()
    assert rebuilt.replayed_bytes == reopened.size_bytes
    assert rebuilt.producers == live.producers


def test_a_snapshot_must_stand_at_the_log_end(tmp_path):
    plog, live = _log_with_producers(tmp_path / "t-0")
    try:
        with pytest.raises(ValueError):
            plog.write_producer_snapshot(plog.log_end_offset - 1, encode_snapshot(live.current()))
    finally:
        plog.close(clean=False)


def test_an_open_deletes_every_snapshot_file_but_the_one_it_trusts(tmp_path):
    d = tmp_path / "t-0"
    plog, live = _log_with_producers(d)
    _close_with_snapshot(plog, live)
    write_snapshot(d, 3, "[]")                                         # as if left by some earlier run
    write_snapshot(d, plog.log_end_offset + 5, "[]")
    reopened, loaded = _reopened(d)
    assert _snapshot_files(d) == [snapshot_file_name(plog.log_end_offset)]
    assert loaded.replayed_bytes == 0


def test_snapshot_file_names():
    assert snapshot_file_name(42) == "00000000000000000042.snapshot"
    assert snapshot_offsets(["00000000000000000042.snapshot", "00000000000000000042.log", "x.snapshot",
                             "0042.snapshot", "00000000000000000007.snapshot.tmp"]) == [42]


@pytest.mark.parametrize("body", ["", "{", "[[1,2]]", "[[1,0,5,[[0,0,0]]]]", '[["x",0,0,[]]]',
                                  "[[1,0,5,[" + ",".join(["[0,0,0,0]"] * 6) + "]]]"])
def test_decode_refuses_what_encode_never_writes(body):
    with pytest.raises(ValueError):
        decode_snapshot(0, body)


_BATCH = st.builds(BatchMetadata, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1),
                   st.integers(0, 2**62), st.integers(0, 2**62))
_ENTRY = st.tuples(st.integers(0, 2**15 - 1), st.lists(_BATCH, max_size=5).map(tuple), st.integers(-1, 2**62))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offset=st.integers(0, 2**62), entries=st.dictionaries(st.integers(0, 2**62), _ENTRY, max_size=8))
def test_encode_decode_round_trip(offset, entries):
    snap = ProducerStateSnapshot(offset, entries)
    assert decode_snapshot(offset, encode_snapshot(snap)) == snap
    with tempfile.TemporaryDirectory() as root:
        write_snapshot(Path(root), offset, encode_snapshot(snap))
        assert decode_snapshot(offset, read_snapshot(Path(root), offset)) == snap
