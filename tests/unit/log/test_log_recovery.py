"""Crash recovery: what a log looks like when reopened after a kill, torn writes or bit rot."""

import struct

import pytest

from broker.log import LogConfig
from client.record_batch import iter_batches, parse_header


def batches_in(data: bytes) -> list[tuple[int, int]]:
    return [(h.base_offset, h.last_offset) for _, h in iter_batches(data)]


def batch_positions(path) -> list[tuple[int, int]]:
    """(position, size) of every batch in a segment file."""
    return [(pos, h.size) for pos, h in iter_batches(path.read_bytes())]


def flip_byte(path, position: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        b = f.read(1)
        f.seek(position)
        f.write(bytes([b[0] ^ 0x5A]))


def index_entries(path) -> list[tuple[int, int]]:
    return list(struct.iter_unpack(">ii", path.read_bytes()))


def assert_index_consistent(directory) -> None:
    """Every index entry points at a batch with that (relative) offset; the first batch is indexed."""
    for log_file in directory.glob("*.log"):
        base = int(log_file.name[:20])
        data = log_file.read_bytes()
        entries = index_entries(log_file.with_suffix(".index"))
        assert (entries[:1] == [(0, 0)]) if data else (entries == [])
        for relative, position in entries:
            assert position < len(data)
            assert parse_header(data, position).base_offset == base + relative


SEGMENT = "00000000000000000000.log"


@pytest.fixture
def crashed_log(open_log, make_batch, log_dir):
    """A log of 10 one-record batches (epoch 1 for 0-4, epoch 2 for 5-9), then killed."""
    def _make(config: LogConfig | None = None):
        plog = open_log(config or LogConfig(index_interval_bytes=150))
        for i in range(10):
            plog.append_as_leader(make_batch(tag=i), 1 if i < 5 else 2, 0)
        expected = plog.read(0, 1 << 20)
        plog.close(clean=False)
        return expected
    return _make


def test_unclean_close_with_nothing_damaged_loses_nothing(crashed_log, open_log):
    expected = crashed_log()
    plog = open_log()
    assert plog.read(0, 1 << 20) == expected and plog.log_end_offset == 10


def test_torn_tail_is_cut_at_the_last_whole_batch(crashed_log, open_log, log_dir, make_batch):
    expected = crashed_log()
    path = log_dir / SEGMENT
    last_pos, last_size = batch_positions(path)[-1]
    with open(path, "r+b") as f:
        f.truncate(last_pos + last_size // 2)
    plog = open_log()
    assert plog.log_end_offset == 9
    assert plog.read(0, 1 << 20) == expected[:last_pos]
    assert path.stat().st_size == last_pos
    assert plog.append_as_leader(make_batch(tag=99), 2, 0).base_offset == 9
    assert_index_consistent(log_dir)


def test_flipped_byte_in_the_last_batch(crashed_log, open_log, log_dir, make_batch):
    expected = crashed_log()
    path = log_dir / SEGMENT
    last_pos, last_size = batch_positions(path)[-1]
    flip_byte(path, last_pos + last_size - 3)           # in the record bytes
    plog = open_log()
    assert plog.log_end_offset == 9
    assert plog.read(0, 1 << 20) == expected[:last_pos]
    assert plog.append_as_leader(make_batch(), 2, 0).base_offset == 9
    assert_index_consistent(log_dir)


def test_flipped_byte_in_a_middle_batch_ends_the_log_before_it(crashed_log, open_log, log_dir, make_batch):
    expected = crashed_log()
    path = log_dir / SEGMENT
    positions = batch_positions(path)
    bad_pos, _ = positions[6]
    flip_byte(path, bad_pos + 25)                       # inside the CRC-covered header fields
    plog = open_log()
    assert plog.log_end_offset == 6
    assert plog.read(0, 1 << 20) == expected[:bad_pos]
    # batches 7-9 were fine but cannot follow a hole: gone
    assert path.stat().st_size == bad_pos
    # epoch 2 started at 5 and survives with batch 5; appends continue at 6
    assert [(e.epoch, e.start_offset) for e in plog.epoch_entries] == [(1, 0), (2, 5)]
    assert plog.append_as_leader(make_batch(tag=42), 2, 0).base_offset == 6
    assert batches_in(plog.read(0, 1 << 20))[-1] == (6, 6)
    assert_index_consistent(log_dir)


def test_flipped_base_offset_is_caught_although_outside_the_crc(crashed_log, open_log, log_dir):
    expected = crashed_log()
    path = log_dir / SEGMENT
    bad_pos, _ = batch_positions(path)[4]
    flip_byte(path, bad_pos + 7)                        # lowest byte of base_offset
    plog = open_log()
    assert plog.log_end_offset == 4
    assert plog.read(0, 1 << 20) == expected[:bad_pos]
    assert [(e.epoch, e.start_offset) for e in plog.epoch_entries] == [(1, 0)]   # epoch 2's batches are gone


def test_garbage_after_the_last_batch_is_cut(crashed_log, open_log, log_dir, make_batch):
    expected = crashed_log()
    path = log_dir / SEGMENT
    with open(path, "ab") as f:
        f.write(b"\x00\x01garbage" * 20)
    plog = open_log()
    assert plog.log_end_offset == 10
    assert plog.read(0, 1 << 20) == expected
    assert path.stat().st_size == len(expected)
    assert plog.append_as_leader(make_batch(), 2, 0).base_offset == 10


@pytest.mark.parametrize("clean", [True, False])
@pytest.mark.parametrize("damage", ["deleted", "garbled", "truncated"])
def test_damaged_index_is_rebuilt(open_log, make_batch, log_dir, clean, damage):
    plog = open_log(LogConfig(index_interval_bytes=150))
    for i in range(30):
        plog.append_as_leader(make_batch(tag=i), 0, 0)
    expected = plog.read(0, 1 << 20)
    index_path = log_dir / "00000000000000000000.index"
    original = index_entries(index_path)
    assert 1 < len(original) < 30
    plog.close(clean=clean)
    if damage == "deleted":
        index_path.unlink()
    elif damage == "garbled":
        index_path.write_bytes(bytes(range(7, 7 + len(original) * 8)))
    else:
        index_path.write_bytes(index_path.read_bytes()[:-5])
    plog = open_log(LogConfig(index_interval_bytes=150))
    assert index_entries(index_path) == original
    assert plog.read(0, 1 << 20) == expected
    for offset in (0, 13, 29):
        assert batches_in(plog.read(offset, 1))[0] == (offset, offset)


def test_index_entry_pointing_at_no_batch_is_rebuilt_after_clean_close(open_log, make_batch, log_dir):
    plog = open_log(LogConfig(index_interval_bytes=150))
    for i in range(30):
        plog.append_as_leader(make_batch(tag=i), 0, 0)
    plog.close()
    index_path = log_dir / "00000000000000000000.index"
    entries = index_entries(index_path)
    rel, pos = entries[-1]
    entries[-1] = (rel, pos + 3)                         # monotonic and in bounds, but not a batch start
    index_path.write_bytes(b"".join(struct.pack(">ii", *e) for e in entries))
    plog = open_log(LogConfig(index_interval_bytes=150))
    assert index_entries(index_path)[-1] == (rel, pos)
    assert batches_in(plog.read(rel, 1)) == [(rel, rel)]


def test_clean_close_then_reopen_keeps_everything(open_log, make_batch, log_dir):
    plog = open_log(LogConfig(segment_bytes=400))
    for i in range(20):
        plog.append_as_leader(make_batch(tag=i), 1 if i < 10 else 2, 0)
    plog.write_high_watermark(15)
    expected = plog.read(0, 1 << 20)
    plog.close()
    assert (log_dir / "clean-shutdown").exists()
    assert (log_dir / "recovery-point-checkpoint").read_text() == "0\n20\n"
    plog = open_log(LogConfig(segment_bytes=400))
    assert not (log_dir / "clean-shutdown").exists()     # a crash from now on must recover
    assert plog.read(0, 1 << 20) == expected
    assert (plog.log_start_offset, plog.log_end_offset, plog.latest_epoch) == (0, 20, 2)
    assert plog.read_high_watermark() == 15
    assert plog.end_offset_for_epoch(1) == (1, 10)
    assert plog.append_as_leader(make_batch(), 2, 0).base_offset == 20


def test_only_segments_from_the_recovery_point_on_are_checked(open_log, make_batch, log_dir):
    plog = open_log(LogConfig(segment_bytes=300))
    for i in range(12):
        plog.append_as_leader(make_batch(tag=i), 0, 0)
    files = sorted(log_dir.glob("*.log"))
    assert len(files) >= 3
    plog.close(clean=False)
    # Corrupt a record byte in the first (rolled, fsynced) segment: below the recovery
    # point it is trusted, as in Kafka; its batches still read back as written.
    flip_byte(files[0], batch_positions(files[0])[0][1] - 2)
    plog = open_log(LogConfig(segment_bytes=300))
    assert plog.log_end_offset == 12


def test_corruption_in_an_older_segment_deletes_the_segments_after_it(open_log, make_batch, log_dir):
    plog = open_log(LogConfig(segment_bytes=300))
    for i in range(12):
        plog.append_as_leader(make_batch(tag=i), 0, 0)
    expected = plog.read(0, 1 << 20)
    files = sorted(log_dir.glob("*.log"))
    plog.close(clean=False)
    (log_dir / "recovery-point-checkpoint").unlink()    # nothing known durable: check every segment
    second = files[1]
    second_base = int(second.name[:20])
    bad_pos, bad_size = batch_positions(second)[1]
    flip_byte(second, bad_pos + bad_size - 1)
    plog = open_log(LogConfig(segment_bytes=300))
    assert plog.log_end_offset == second_base + 1
    assert sorted(log_dir.glob("*.log")) == files[:2]
    assert not any(p.name.endswith(".index") and not p.with_suffix(".log").exists() for p in log_dir.iterdir())
    assert plog.read(0, 1 << 20) == expected[:sum(f.stat().st_size for f in files[:1]) + bad_pos]
    assert plog.append_as_leader(make_batch(), 0, 0).base_offset == second_base + 1
    assert_index_consistent(log_dir)


def test_epoch_file_lost_or_garbled_is_rebuilt_from_the_batches(crashed_log, open_log, log_dir):
    crashed_log()
    (log_dir / "leader-epoch-checkpoint").write_text("0\n7\nnot an epoch file\n")
    plog = open_log()
    assert [(e.epoch, e.start_offset) for e in plog.epoch_entries] == [(1, 0), (2, 5)]
    assert (log_dir / "leader-epoch-checkpoint").read_text() == "0\n2\n1 0\n2 5\n"


def test_a_follower_epoch_lost_with_an_os_crash_is_learned_again_from_its_batches(open_log, make_batch, log_dir,
                                                                                 tmp_path, monkeypatch):
    """A follower writes the leader epochs it copies without an fsync (a failover brings thousands of
    partitions a new one at once). An OS crash may lose that write; the unclean start learns the epochs
    again from the batches past the recovery point, where Kafka's LogSegment.recover finds them too."""
    import broker.log.checkpoint as checkpoint
    fsynced: list[int] = []
    real_fsync = checkpoint.os.fsync
    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: (fsynced.append(fd), real_fsync(fd))[1])
    leader = open_log(LogConfig(segment_bytes=400), directory=tmp_path / "leader" / "orders-0")
    for i in range(6):
        leader.append_as_leader(make_batch(tag=i), 1 if i < 2 else 4, 0)
    follower = open_log(LogConfig(segment_bytes=10_000))
    follower.append_as_follower(leader.read(0, 1 << 20, 2), now_ms=0)        # epoch 1: offsets 0-1
    before_crash = (log_dir / "leader-epoch-checkpoint").read_text()
    fsynced.clear()
    follower.append_as_follower(leader.read(2, 1 << 20), now_ms=0)           # epoch 4 from offset 2
    assert fsynced == []                                                       # not on the fetcher's thread
    assert follower.end_offset_for_epoch(1) == (1, 2)
    follower.close(clean=False)
    (log_dir / "leader-epoch-checkpoint").write_text(before_crash)             # the OS crash lost the write
    follower = open_log(LogConfig(segment_bytes=10_000))
    assert [(e.epoch, e.start_offset) for e in follower.epoch_entries] == [(1, 0), (4, 2)]
    assert follower.end_offset_for_epoch(1) == (1, 2)


def test_a_follower_epoch_is_made_durable_before_the_recovery_point_passes_its_batches(open_log, make_batch,
                                                                                      log_dir, tmp_path,
                                                                                      monkeypatch):
    """Below the recovery point an unclean start does not look at the batches again: the epochs they carry
    must be durable by then (the file fsynced at the flush that moves the recovery point)."""
    import broker.log.leader_epoch_cache as epoch_cache
    flushed: list[str] = []
    real = epoch_cache.fsync_path
    monkeypatch.setattr(epoch_cache, "fsync_path", lambda path: (flushed.append(path.name), real(path))[1])
    leader = open_log(LogConfig(), directory=tmp_path / "leader" / "orders-0")
    for i in range(3):
        leader.append_as_leader(make_batch(tag=i), 2, 0)
    follower = open_log(LogConfig())
    follower.append_as_follower(leader.read(0, 1 << 20), now_ms=0)
    assert flushed == []
    follower.flush()
    assert flushed == ["leader-epoch-checkpoint"] and follower.recovery_point == 3
    follower.flush()                                        # nothing new since: no second fsync
    assert flushed == ["leader-epoch-checkpoint"]


def test_leftover_temp_files_are_removed(crashed_log, open_log, log_dir):
    crashed_log()
    (log_dir / "high-watermark-checkpoint.tmp").write_text("0\n")
    (log_dir / "00000000000000000777.index").write_bytes(b"")   # its segment was deleted
    open_log()
    assert not (log_dir / "high-watermark-checkpoint.tmp").exists()
    assert not (log_dir / "00000000000000000777.index").exists()


def test_damage_after_a_clean_close_is_still_caught(open_log, make_batch, log_dir):
    """The clean-shutdown marker makes segments trusted, but the header scan that finds
    the log end still notices a torn file and falls back to a full recovery."""
    plog = open_log(LogConfig(segment_bytes=300))
    for i in range(9):
        plog.append_as_leader(make_batch(tag=i), 0, 0)
    expected = plog.read(0, 1 << 20)
    plog.close()
    files = sorted(log_dir.glob("*.log"))
    last = files[-1]
    last_pos, last_size = batch_positions(last)[-1]
    with open(last, "r+b") as f:
        f.truncate(last_pos + 20)
    plog = open_log(LogConfig(segment_bytes=300))
    assert plog.log_end_offset == 8
    assert plog.read(0, 1 << 20) == expected[:-last_size]
    assert plog.append_as_leader(make_batch(), 0, 0).base_offset == 8


def test_an_epoch_file_torn_by_a_kill_mid_write_is_rebuilt_from_the_batches(crashed_log, open_log, log_dir):
    """Epoch files written in place (durable=False) may be left with the new entries over a longer old text,
    the tail not cut yet: the count line then disagrees with the lines, and the cache is rebuilt."""
    crashed_log()
    (log_dir / "leader-epoch-checkpoint").write_text("0\n1\n1 0\n2 5\n")   # "0\n1\n1 0\n" over "0\n2\n1 0\n2 5\n"
    plog = open_log()
    assert [(e.epoch, e.start_offset) for e in plog.epoch_entries] == [(1, 0), (2, 5)]
