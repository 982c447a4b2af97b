"""Storage faults in one data dir, in-process: a failed write leaves no partial batch, a damaged
batch is never served, a deleted segment file is noticed, and the first failure takes every log
of the data dir offline (reported once on the LogManager's failure channel)."""

from __future__ import annotations

import errno
import os

import pytest

import broker.log.segment as segment_module
from broker.log import LogConfig, LogManager
from broker.log.log_dir_failure import LogDirFailureChannel, storage_error_reason
from client.errors import CorruptMessageError, KafkaStorageError
from client.record_batch import HEADER_SIZE, crc_ok, iter_batches

from tests.unit.log.test_log_recovery import flip_byte

SEGMENT = "00000000000000000000.log"


@pytest.fixture
def manager(tmp_path):
    m = LogManager(tmp_path / "data", LogConfig())
    m.open(0)
    yield m
    m.close(clean=False)


def failures(m: LogManager) -> list:
    """Every failure the channel passed to its listener (the broker halts on the first)."""
    seen: list = []
    m.failure_channel.add_listener(seen.append)
    return seen


def whole_valid_batches(data: bytes) -> int:
    """How many batches ``data`` holds, asserting it is whole batches with good CRCs and nothing more."""
    end, count = 0, 0
    for pos, h in iter_batches(data):
        assert crc_ok(data, pos, h)
        end, count = pos + h.size, count + 1
    assert end == len(data), f"{len(data) - end} bytes of a partial batch at the end"
    return count


# ---- the decisions -----------------------------------------------------------------------------


@pytest.mark.parametrize("code, reason", [
    (errno.ENOSPC, "disk full"), (errno.EFBIG, "file size limit reached"), (errno.EROFS, "read-only file system"),
    (errno.ENOENT, "file or folder deleted under the broker"), (errno.EIO, "I/O error"),
])
def test_storage_error_reason_names_the_fault(code, reason):
    assert storage_error_reason(OSError(code, os.strerror(code))) == reason


def test_storage_error_reason_of_damaged_bytes_is_corrupt_data():
    assert storage_error_reason(CorruptMessageError("CRC mismatch")) == "corrupt data"


def test_the_first_failure_wins_and_is_told_once(tmp_path):
    channel = LogDirFailureChannel()
    seen: list = []
    channel.add_listener(seen.append)
    assert channel.maybe_add_offline_log_dir(tmp_path, "disk full", OSError(errno.ENOSPC, "full"))
    assert not channel.maybe_add_offline_log_dir(tmp_path, "again", OSError(errno.EIO, "eio"))
    late: list = []
    channel.add_listener(late.append)  # a listener added after the failure still hears of it
    assert [f.reason for f in seen] == ["disk full"] and [f.reason for f in late] == ["disk full"]
    assert channel.offline


# ---- writes --------------------------------------------------------------------------------------


def test_a_write_that_fails_half_way_leaves_no_partial_batch(manager, make_batch, monkeypatch):
    seen = failures(manager)
    plog = manager.get_or_create("orders", 0, None, 0)
    for i in range(3):
        plog.append_as_leader(make_batch(tag=i, value_size=100), 0, 0)
    size_before = plog.size_bytes

    real = segment_module.pwrite_all

    def half_then_disk_full(fd, data, position):
        real(fd, memoryview(data)[: len(data) // 2], position)   # the kernel took half...
        raise OSError(errno.ENOSPC, "No space left on device")   # ...then the disk was full

    monkeypatch.setattr(segment_module, "pwrite_all", half_then_disk_full)
    with pytest.raises(KafkaStorageError):
        plog.append_as_leader(make_batch(tag=9, value_size=100), 0, 0)
    monkeypatch.setattr(segment_module, "pwrite_all", real)

    assert plog.log_end_offset == 3
    on_disk = (plog.directory / SEGMENT).read_bytes()
    assert len(on_disk) == size_before and whole_valid_batches(on_disk) == 3
    assert [f.reason for f in seen] == ["disk full"]
    # Offline from now on: nothing more is written or served, by this log or any other of the dir.
    other = manager.get_or_create("payments", 0, None, 0)
    for call in (lambda: plog.append_as_leader(make_batch(), 0, 0), lambda: plog.read(0, 1 << 20),
                 lambda: other.append_as_leader(make_batch(), 0, 0)):
        with pytest.raises(KafkaStorageError):
            call()
    assert len(seen) == 1


def test_an_offline_log_is_never_closed_cleanly(manager, make_batch):
    plog = manager.get_or_create("orders", 0, None, 0)
    plog.append_as_leader(make_batch(), 0, 0)
    plog.mark_offline()
    plog.close(clean=True)
    assert not (plog.directory / "clean-shutdown").exists()  # the next start must recover it


def test_a_segment_file_deleted_under_the_log_is_a_storage_error(manager, make_batch):
    seen = failures(manager)
    plog = manager.get_or_create("orders", 0, None, 0)
    for i in range(2):
        plog.append_as_leader(make_batch(tag=i), 0, 0)
    os.unlink(plog.directory / SEGMENT)
    with pytest.raises(KafkaStorageError):
        plog.append_as_leader(make_batch(tag=2), 0, 0)   # would go to an inode no one can find again
    assert plog.log_end_offset == 2
    assert [f.reason for f in seen] == ["file or folder deleted under the broker"]


def test_reading_a_segment_file_deleted_under_the_log_is_a_storage_error(manager, make_batch):
    seen = failures(manager)
    plog = manager.get_or_create("orders", 0, None, 0)
    plog.append_as_leader(make_batch(), 0, 0)
    os.unlink(plog.directory / SEGMENT)
    with pytest.raises(KafkaStorageError):
        plog.read(0, 1 << 20)
    assert len(seen) == 1


# ---- damaged bytes -------------------------------------------------------------------------------


@pytest.fixture
def damaged(manager, make_batch):
    """A log of 6 batches flushed past a roll (so all but the last segment are below the
    recovery point, trusted at the next start), then a byte flipped in batch 2's body."""
    plog = manager.get_or_create("orders", 0, LogConfig(segment_bytes=5 * len(make_batch(value_size=50))), 0)
    for i in range(6):
        plog.append_as_leader(make_batch(tag=i, value_size=50), 0, 0)
    plog.flush()
    assert plog.segment_count == 2 and plog.recovery_point == 6
    size = len(make_batch(value_size=50))
    flip_byte(plog.directory / SEGMENT, 2 * size + HEADER_SIZE + 20)
    return plog, size


def test_a_damaged_batch_is_never_served(manager, damaged):
    plog, size = damaged
    seen = failures(manager)
    assert len(plog.read(0, 2 * size)) == 2 * size            # the two batches before it are fine
    with pytest.raises(CorruptMessageError, match="offset 2: CRC mismatch"):
        plog.read(0, 1 << 20)                                  # a read that would include it
    assert [f.reason for f in seen] == ["corrupt data"]
    with pytest.raises(KafkaStorageError):
        plog.read(0, 2 * size)                                 # offline now, like every log of the dir


def test_after_a_damaged_read_the_next_start_cuts_the_log_at_the_damaged_batch(manager, damaged, open_log):
    plog, size = damaged
    with pytest.raises(CorruptMessageError):
        plog.read(2, 1 << 20)
    # The segment was below the recovery point (trusted); the damaged read lowered it to offset 2.
    assert plog.recovery_point == 2
    directory = plog.directory
    plog.close(clean=True)  # offline: closed without the clean-shutdown marker
    reopened = open_log(directory=directory)
    assert reopened.log_end_offset == 2                        # batches 2..5 cut: re-fetched from the leader
    assert whole_valid_batches(reopened.read(0, 1 << 20)) == 2
    assert sorted(p.name for p in directory.glob("*.log")) == [SEGMENT]  # the later segment went too


def test_a_batch_whose_size_field_runs_past_the_segment_is_never_served(manager, make_batch):
    plog = manager.get_or_create("orders", 0, None, 0)
    plog.append_as_leader(make_batch(), 0, 0)
    with open(plog.directory / SEGMENT, "r+b") as f:    # batch_length: 8..12, outside the CRC
        f.seek(8)
        f.write((10_000).to_bytes(4, "big"))
    with pytest.raises(CorruptMessageError, match="past the end of the segment"):
        plog.read(0, 1 << 20)


def test_an_offline_data_dir_deletes_no_log(manager, make_batch):
    """A partition that failed to load looks like a stray log: while the broker halts, nothing is deleted."""
    plog = manager.get_or_create("orders", 0, None, 0)
    plog.append_as_leader(make_batch(), 0, 0)
    os.unlink(plog.directory / SEGMENT)
    with pytest.raises(KafkaStorageError):
        plog.append_as_leader(make_batch(), 0, 0)
    with pytest.raises(KafkaStorageError, match="offline"):
        manager.delete("orders", 0)
    assert plog.directory.is_dir() and manager.get("orders", 0) is plog
