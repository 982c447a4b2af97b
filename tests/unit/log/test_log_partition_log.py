"""PartitionLog: appends, reads, rolls, retention, truncation, epochs, the HW checkpoint."""

import os
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.log import AppendInfo, LogConfig, PartitionLog
from broker.log.segment import LogSegment
from client.errors import (CorruptMessageError, FencedLeaderEpochError, KafkaStorageError,
                           OffsetOutOfRangeError, RecordListTooLargeError)
from client.record_batch import build_batch, crc_ok, iter_batches, stamp


def batches_in(data: bytes) -> list[tuple[int, int]]:
    """(base_offset, last_offset) of each batch in a read answer."""
    return [(h.base_offset, h.last_offset) for _, h in iter_batches(data)]


def segment_files(plog: PartitionLog) -> list[str]:
    return sorted(p.name for p in plog.directory.iterdir() if p.suffix == ".log")


def fill(plog: PartitionLog, make_batch, n: int, *, values: int = 1, epoch: int = 0, now_ms: int = 0,
         value_size: int = 10, ts: int = 1_000) -> list[AppendInfo]:
    return [plog.append_as_leader(make_batch(values=values, value_size=value_size, ts=ts, tag=i), epoch, now_ms)
            for i in range(n)]


# ---- append and read ---------------------------------------------------------------------


def test_append_read_round_trip_stamps_offsets_and_epoch(open_log, make_batch, make_stamped):
    plog = open_log()
    raws = [make_batch(values=3, tag=1), make_batch(values=1, tag=2), make_batch(values=2, tag=3)]
    infos = [plog.append_as_leader(raw, 4, now_ms=0) for raw in raws]
    assert [(i.base_offset, i.last_offset, i.size) for i in infos] == [(0, 2, len(raws[0])), (3, 3, len(raws[1])),
                                                                      (4, 5, len(raws[2]))]
    assert infos[0].log_append_time_ms == -1
    assert plog.log_start_offset == 0 and plog.log_end_offset == 6 and plog.latest_epoch == 4
    data = plog.read(0, 1 << 20)
    assert data == b"".join(make_stamped(r, i.base_offset, 4) for r, i in zip(raws, infos))
    for pos, h in iter_batches(data):
        assert h.partition_leader_epoch == 4
        assert crc_ok(data, pos, h)  # stamping touches only fields outside the CRC
    assert plog.size_bytes == len(data)


def test_read_from_the_middle_of_a_batch_returns_the_whole_batch(open_log, make_batch):
    plog = open_log()
    fill(plog, make_batch, 3, values=5)
    assert batches_in(plog.read(7, 1 << 20)) == [(5, 9), (10, 14)]
    assert batches_in(plog.read(9, 1 << 20)) == [(5, 9), (10, 14)]


def test_max_bytes_is_respected_but_one_batch_always_comes(open_log, make_batch):
    plog = open_log()
    size = fill(plog, make_batch, 5)[0].size
    assert batches_in(plog.read(0, 2 * size)) == [(0, 0), (1, 1)]
    assert batches_in(plog.read(0, 2 * size + size - 1)) == [(0, 0), (1, 1)]
    assert batches_in(plog.read(0, 1)) == [(0, 0)]          # KIP-74: progress guaranteed
    assert plog.read(0, 1, min_one_batch=False) == b""


def test_max_offset_is_an_exclusive_bound(open_log, make_batch):
    plog = open_log()
    fill(plog, make_batch, 4, values=2)  # batches [0,1] [2,3] [4,5] [6,7]
    assert batches_in(plog.read(0, 1 << 20, max_offset=4)) == [(0, 1), (2, 3)]
    assert batches_in(plog.read(0, 1 << 20, max_offset=5)) == [(0, 1), (2, 3)]  # [4,5] ends past 5
    assert plog.read(4, 1 << 20, max_offset=4) == b""   # a consumer at the HW
    assert plog.read(8, 1 << 20) == b""                   # at the log end


def test_out_of_range_fetches(open_log, make_batch):
    plog = open_log()
    fill(plog, make_batch, 3)
    with pytest.raises(OffsetOutOfRangeError, match=r"\[0, 3\)"):
        plog.read(4, 100)
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(-1, 100)


def test_empty_log_reads_nothing_at_zero(open_log):
    plog = open_log()
    assert plog.read(0, 100) == b"" and plog.log_end_offset == 0 and plog.latest_epoch == -1


def test_older_leader_epoch_is_fenced(open_log, make_batch):
    plog = open_log()
    plog.append_as_leader(make_batch(), 5, 0)
    with pytest.raises(FencedLeaderEpochError):
        plog.append_as_leader(make_batch(), 4, 0)
    assert plog.log_end_offset == 1


def test_batch_larger_than_a_segment_is_refused(open_log, make_batch):
    plog = open_log(LogConfig(segment_bytes=200))
    with pytest.raises(RecordListTooLargeError, match="segment.bytes"):
        plog.append_as_leader(make_batch(value_size=300), 0, 0)
    assert plog.log_end_offset == 0 and plog.size_bytes == 0


def test_readers_never_see_a_partial_batch_while_appending(open_log, make_batch):
    plog = open_log(LogConfig(segment_bytes=4096))
    stop = threading.Event()
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            data = plog.read(plog.log_start_offset, 1 << 20)
            total = sum(h.size for _, h in iter_batches(data))
            if total != len(data):
                problems.append(f"{len(data) - total} stray bytes")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        fill(plog, make_batch, 300, value_size=50)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert problems == []
    assert batches_in(plog.read(0, 1 << 30))[-1] == (299, 299)


# ---- rolling ------------------------------------------------------------------------------


def test_roll_by_size_and_reads_across_segments(open_log, make_batch):
    plog = open_log(LogConfig(segment_bytes=500))
    infos = fill(plog, make_batch, 30)
    per_segment = 500 // infos[0].size
    assert len(segment_files(plog)) == plog.segment_count == -(-30 // per_segment)
    assert segment_files(plog)[1] == f"{per_segment:020d}.log"
    for name in segment_files(plog):
        assert (plog.directory / name).stat().st_size <= 500
    # one read spans segments
    assert batches_in(plog.read(0, 1 << 20)) == [(i, i) for i in range(30)]
    assert batches_in(plog.read(per_segment - 1, 3 * infos[0].size)) == [
        (per_segment - 1, per_segment - 1), (per_segment, per_segment), (per_segment + 1, per_segment + 1)]
    # the recovery point moved to the active segment's base when it rolled
    assert plog.recovery_point == int(segment_files(plog)[-1][:20])


def test_roll_by_segment_ms(open_log, make_batch):
    plog = open_log(LogConfig(segment_ms=1_000))
    plog.append_as_leader(make_batch(ts=10_000), 0, now_ms=10_000)
    plog.append_as_leader(make_batch(ts=10_500), 0, now_ms=11_000)   # 1000 ms old: not yet
    assert plog.segment_count == 1
    plog.append_as_leader(make_batch(ts=11_001), 0, now_ms=11_001)   # first batch 1001 ms old
    assert plog.segment_count == 2
    assert segment_files(plog) == [f"{0:020d}.log", f"{2:020d}.log"]


def test_an_empty_active_segment_never_rolls(open_log, make_batch):
    plog = open_log(LogConfig(segment_ms=1))
    plog.append_as_leader(make_batch(ts=0), 0, now_ms=10**9)
    assert plog.segment_count == 1


# ---- retention -------------------------------------------------------------------------------


def test_retention_by_time_deletes_old_segments_and_keeps_the_active_one(open_log, make_batch):
    plog = open_log(LogConfig(segment_bytes=300, retention_ms=10_000))
    for i in range(12):
        plog.append_as_leader(make_batch(ts=1_000 * i, tag=i), 0, now_ms=1_000 * i)
    before = plog.segment_count
    bases = [int(n[:20]) for n in segment_files(plog)]
    # segments whose newest batch is older than now - 10 s go
    deleted = plog.delete_expired_segments(now_ms=15_500)
    assert deleted >= 1 and plog.segment_count == before - deleted
    assert plog.log_start_offset == bases[deleted]
    assert all(ts >= 5_500 for ts in _max_timestamps(plog, bases[deleted]))
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(0, 100)
    assert batches_in(plog.read(plog.log_start_offset, 1 << 20))[-1] == (11, 11)
    # everything expired: an empty active segment is rolled at the log end
    assert plog.delete_expired_segments(now_ms=10**9) >= 1
    assert plog.log_start_offset == plog.log_end_offset == 12 and plog.segment_count == 1
    assert segment_files(plog) == [f"{12:020d}.log"]
    assert plog.read(12, 100) == b""
    assert plog.append_as_leader(make_batch(), 0, 10**9).base_offset == 12


def _max_timestamps(plog, start):
    return [h.max_timestamp for _, h in iter_batches(plog.read(start, 1 << 20))]


def test_retention_by_size_uses_kafkas_rule(open_log, make_batch):
    plog = open_log(LogConfig(segment_bytes=300, retention_bytes=700, retention_ms=-1))
    fill(plog, make_batch, 20)
    sizes = [(plog.directory / n).stat().st_size for n in segment_files(plog)]
    total = sum(sizes)
    deleted = plog.delete_expired_segments(now_ms=0)
    # Kafka's rule: delete the oldest while the log without it is still >= retention.bytes
    expected, remaining = 0, total
    while remaining - sizes[expected] >= 700:
        remaining -= sizes[expected]
        expected += 1
    assert deleted == expected > 0
    assert plog.size_bytes == remaining >= 700
    assert plog.log_end_offset == 20
    assert plog.delete_expired_segments(now_ms=0) == 0


def test_retention_never_passes_the_high_watermark(open_log, make_batch):
    plog = open_log(LogConfig(segment_bytes=300, retention_ms=1))
    fill(plog, make_batch, 20, ts=0)
    second_segment = int(segment_files(plog)[1][:20])
    assert plog.delete_expired_segments(now_ms=10**6, high_watermark=second_segment) == 1
    assert plog.log_start_offset == second_segment


def test_retention_moves_the_epoch_cache_start(open_log, make_batch):
    plog = open_log(LogConfig(segment_bytes=300, retention_ms=-1, retention_bytes=1))
    fill(plog, make_batch, 10, epoch=1)
    fill(plog, make_batch, 10, epoch=2)
    plog.delete_expired_segments(0)
    start = plog.log_start_offset
    assert start > 0
    first = plog.epoch_entries[0]
    assert first.start_offset == start and first.epoch == (1 if start < 10 else 2)


# ---- truncation --------------------------------------------------------------------------------


def test_truncate_removes_batches_and_epochs_and_appends_continue(open_log, make_batch):
    plog = open_log(LogConfig(segment_bytes=300))
    fill(plog, make_batch, 10, epoch=1)
    fill(plog, make_batch, 10, epoch=2)
    segments_before = plog.segment_count
    plog.truncate_to(8)
    assert plog.log_end_offset == 8
    assert plog.segment_count < segments_before
    assert [(e.epoch, e.start_offset) for e in plog.epoch_entries] == [(1, 0)]
    assert plog.end_offset_for_epoch(1) == (1, 8)
    assert batches_in(plog.read(0, 1 << 20)) == [(i, i) for i in range(8)]
    assert plog.append_as_leader(make_batch(), 3, 0).base_offset == 8
    assert [(e.epoch, e.start_offset) for e in plog.epoch_entries] == [(1, 0), (3, 8)]
    assert plog.recovery_point <= 8


def test_truncate_inside_a_batch_cuts_the_whole_batch(open_log, make_batch):
    plog = open_log()
    fill(plog, make_batch, 3, values=4)      # [0,3] [4,7] [8,11]
    plog.truncate_to(6)
    assert plog.log_end_offset == 4
    assert batches_in(plog.read(0, 1 << 20)) == [(0, 3)]


def test_truncate_at_or_past_the_end_keeps_the_data(open_log, make_batch):
    plog = open_log()
    fill(plog, make_batch, 3, epoch=1)
    plog.truncate_to(7)
    plog.truncate_to(3)
    assert plog.log_end_offset == 3
    assert batches_in(plog.read(0, 1 << 20)) == [(0, 0), (1, 1), (2, 2)]
    assert [(e.epoch, e.start_offset) for e in plog.epoch_entries] == [(1, 0)]


def test_truncate_at_the_end_drops_an_epoch_that_holds_no_batch(open_log, make_batch):
    # A leader that appended nothing in its epoch and lost the leadership (a paused "zombie"):
    # as a follower it must forget that epoch, or the new leader's diverging-epoch answer
    # (epoch 1 ends at 3) would send it to truncate at 3 again and again, never rejoining the ISR.
    plog = open_log()
    fill(plog, make_batch, 3, epoch=1)
    plog.assign_leader_epoch(9)             # an epoch that starts at the log end, no data yet
    plog.truncate_to(3)
    assert plog.log_end_offset == 3 and plog.latest_epoch == 1
    assert plog.end_offset_for_epoch(1) == (1, 3)


def test_truncate_fully_and_start_at(open_log, make_batch):
    plog = open_log()
    fill(plog, make_batch, 3, epoch=1)
    plog.truncate_fully_and_start_at(100)
    assert plog.log_start_offset == plog.log_end_offset == 100 and plog.latest_epoch == -1
    assert segment_files(plog) == [f"{100:020d}.log"]
    assert plog.append_as_leader(make_batch(), 2, 0).base_offset == 100


# ---- follower appends and epochs ---------------------------------------------------------------


def test_append_as_follower_keeps_offsets_and_learns_epochs(open_log, make_batch, log_dir, tmp_path):
    leader = open_log(LogConfig(segment_bytes=400), directory=tmp_path / "leader" / "orders-0")
    fill(leader, make_batch, 5, epoch=1, values=2)
    fill(leader, make_batch, 5, epoch=3, values=2)
    follower = open_log(LogConfig(segment_bytes=400))
    offset = 0
    while offset < leader.log_end_offset:
        chunk = leader.read(offset, 250)
        info = follower.append_as_follower(chunk, now_ms=0)
        assert info.base_offset == offset and info.size == len(chunk)
        offset = info.last_offset + 1
    assert follower.read(0, 1 << 20) == leader.read(0, 1 << 20)
    assert follower.epoch_entries == leader.epoch_entries
    assert follower.end_offset_for_epoch(1) == (1, 10)
    assert follower.segment_count > 1


def test_append_as_follower_rejects_a_gap_a_bad_crc_and_a_partial_batch(open_log, make_batch):
    plog = open_log()
    plog.append_as_leader(make_batch(), 0, 0)
    gap = bytearray(make_batch())
    stamp(gap, 0, 5, 0)
    with pytest.raises(CorruptMessageError, match="log end offset"):
        plog.append_as_follower(bytes(gap), 0)
    bad = bytearray(make_batch())
    stamp(bad, 0, 1, 0)
    bad[-1] ^= 0xFF
    with pytest.raises(CorruptMessageError, match="CRC"):
        plog.append_as_follower(bytes(bad), 0)
    good = bytearray(make_batch())
    stamp(good, 0, 1, 0)
    with pytest.raises(CorruptMessageError, match="truncated"):
        plog.append_as_follower(bytes(good) + bytes(good[:30]), 0)
    second = bytearray(make_batch())
    stamp(second, 0, 7, 0)
    with pytest.raises(CorruptMessageError, match="contiguous"):
        plog.append_as_follower(bytes(good) + bytes(second), 0)
    assert plog.log_end_offset == 1                       # nothing of a rejected call was written
    assert plog.append_as_follower(b"", 0).size == 0
    assert plog.append_as_follower(bytes(good), 0).base_offset == 1


def test_assign_leader_epoch_marks_where_the_previous_epoch_ended(open_log, make_batch):
    plog = open_log()
    fill(plog, make_batch, 4, epoch=1)
    plog.assign_leader_epoch(2)
    assert plog.end_offset_for_epoch(1) == (1, 4)
    assert plog.end_offset_for_epoch(2) == (2, 4)
    plog.assign_leader_epoch(1)                            # stale: ignored
    assert plog.latest_epoch == 2
    assert (plog.directory / "leader-epoch-checkpoint").read_text() == "0\n2\n1 0\n2 4\n"


def test_offset_for_timestamp_returns_the_first_batch_at_or_after(open_log, make_batch):
    plog = open_log(LogConfig(segment_bytes=300))
    for i in range(10):
        plog.append_as_leader(build_batch([(None, b"x", 100 * i), (None, b"y", 100 * i + 50)]), 0, 0)
    assert plog.offset_for_timestamp(0) == (0, 50)
    assert plog.offset_for_timestamp(420) == (8, 450)      # batch [8,9] holds ts 400 and 450
    assert plog.offset_for_timestamp(451) == (10, 550)
    assert plog.offset_for_timestamp(950) == (18, 950)
    assert plog.offset_for_timestamp(951) is None


# ---- high watermark, durability, errors --------------------------------------------------------


def test_high_watermark_checkpoint_round_trip_and_clamping(open_log, make_batch, log_dir):
    plog = open_log()
    assert plog.read_high_watermark() == 0
    fill(plog, make_batch, 10)
    plog.write_high_watermark(7)
    assert plog.read_high_watermark() == 7
    assert (log_dir / "high-watermark-checkpoint").read_text() == "0\n7\n"
    plog.write_high_watermark(50)                         # never past the log end
    assert plog.read_high_watermark() == 10
    plog.truncate_to(5)
    assert plog.read_high_watermark() == 5
    plog.close()
    (log_dir / "high-watermark-checkpoint").write_text("0\n9\n")
    reopened = open_log()
    assert reopened.read_high_watermark() == 5
    assert (log_dir / "high-watermark-checkpoint").read_text() == "0\n5\n"   # clamped at open
    reopened.close()
    (log_dir / "high-watermark-checkpoint").write_text("garbage")
    assert open_log().read_high_watermark() == 0                         # an unreadable checkpoint: the log start


def test_high_watermark_is_read_from_disk_once_at_open(open_log, make_batch, log_dir):
    plog = open_log()
    fill(plog, make_batch, 10)
    plog.write_high_watermark(7)
    plog.close()
    reopened = open_log()
    (log_dir / "high-watermark-checkpoint").unlink()   # 10,000 partitions: one read each at open, not two
    assert reopened.read_high_watermark() == 7


def test_flush_interval_messages_fsyncs_every_n_batches(open_log, make_batch, monkeypatch):
    calls = []
    real_flush = LogSegment.flush
    monkeypatch.setattr(LogSegment, "flush", lambda self: (calls.append(self.base_offset), real_flush(self)))
    plog = open_log(LogConfig(flush_interval_messages=3))
    fill(plog, make_batch, 7)
    assert len(calls) == 2
    plog.update_config(LogConfig(flush_interval_messages=-1))
    fill(plog, make_batch, 7)
    assert len(calls) == 2


def test_write_errors_become_kafka_storage_errors_and_leave_the_log_usable(open_log, make_batch, monkeypatch):
    plog = open_log()
    fill(plog, make_batch, 2)

    def failing_pwrite(fd, data, position):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", failing_pwrite)
    with pytest.raises(KafkaStorageError, match="No space left"):
        plog.append_as_leader(make_batch(), 0, 0)
    monkeypatch.undo()
    assert plog.log_end_offset == 2
    assert plog.append_as_leader(make_batch(tag=9), 0, 0).base_offset == 2
    assert batches_in(plog.read(0, 1 << 20)) == [(0, 0), (1, 1), (2, 2)]


def test_a_closed_log_refuses_work(open_log, make_batch):
    plog = open_log()
    plog.close()
    with pytest.raises(KafkaStorageError, match="closed"):
        plog.append_as_leader(make_batch(), 0, 0)
    with pytest.raises(KafkaStorageError, match="closed"):
        plog.read(0, 100)


def test_delete_removes_the_folder(open_log, make_batch, log_dir):
    plog = open_log()
    fill(plog, make_batch, 3)
    plog.delete()
    assert not log_dir.exists()


# ---- reads at the log end: the segment's recent batch positions ------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(st.tuples(st.just("append"), st.integers(1, 4)),
                              st.tuples(st.just("truncate"), st.floats(0, 1))), min_size=1, max_size=40))
def test_a_read_at_any_offset_starts_at_the_batch_holding_it_through_appends_and_truncations(
        open_log, make_batch, tmp_path_factory, ops):
    """segment.translate_offset answers recent offsets from the positions of the newest batches appended
    (RECENT_BATCHES), older ones by a scan from the index: both must find the batch a full scan finds, and a
    truncation must leave no stale position behind (it grows back with other batches at the same offsets)."""
    plog = open_log(LogConfig(segment_bytes=1200, index_interval_bytes=150),
                    directory=tmp_path_factory.mktemp("recent") / "t-0")
    expected: list[tuple[int, int]] = []   # the model: (base_offset, last_offset) of every batch
    for i, (op, arg) in enumerate(ops):
        if op == "append":
            info = plog.append_as_leader(make_batch(values=arg, value_size=40, tag=i), 0, 0)
            expected.append((info.base_offset, info.last_offset))
        else:
            cut = int(arg * plog.log_end_offset)
            plog.truncate_to(cut)
            expected = [b for b in expected if b[1] < cut]   # a batch holding the cut goes whole
        for offset in range(plog.log_end_offset):
            holding = next(b for b in expected if b[1] >= offset)
            assert batches_in(plog.read(offset, 1))[0] == holding, (offset, expected)
