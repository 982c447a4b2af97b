"""ProducerStateManager: Kafka's duplicate / out-of-order / epoch rules for idempotent producers, expiration,
snapshots, and the state after a truncation."""

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.log import LogConfig, PartitionLog
from broker.producer_state import (BATCHES_TO_RETAIN, Duplicate, ProducerStateManager, observe_batches,
                                   rebuild_producer_state, truncate_producer_state)
from client.errors import InvalidProducerEpochError, OutOfOrderSequenceNumberError
from client.record_batch import build_batch, parse_header


def _state(*batches) -> ProducerStateManager:
    """batches: (pid, epoch, first_seq, last_seq, first_offset)."""
    s = ProducerStateManager()
    for pid, epoch, first, last, offset in batches:
        s.observe(pid, epoch, first, last, offset, offset + last - first)
    return s


def test_non_idempotent_batches_are_never_checked_or_remembered():
    s = _state((-1, -1, -1, -1, 0))
    assert s.check(-1, -1, -1, -1) is None
    assert s.producers == {}


def test_an_unknown_producer_is_accepted_at_any_sequence():
    assert ProducerStateManager().check(7, 0, 0, 4) is None
    assert ProducerStateManager().check(7, 0, 50, 54) is None


def test_the_next_sequence_is_accepted_and_a_gap_is_out_of_order():
    s = _state((7, 0, 0, 4, 0))
    assert s.check(7, 0, 5, 9) is None
    assert isinstance(s.check(7, 0, 6, 9), OutOfOrderSequenceNumberError)
    assert isinstance(s.check(7, 0, 3, 4), OutOfOrderSequenceNumberError)   # overlaps but is no retained batch


def test_a_retained_batch_again_is_a_duplicate_with_its_original_offsets():
    s = _state((7, 0, 0, 4, 100), (7, 0, 5, 9, 105))
    assert s.check(7, 0, 0, 4) == Duplicate(100, 104)
    assert s.check(7, 0, 5, 9) == Duplicate(105, 109)


def test_only_the_last_five_batches_are_retained():
    s = _state(*[(7, 0, i, i, 10 + i) for i in range(BATCHES_TO_RETAIN + 2)])
    assert s.check(7, 0, BATCHES_TO_RETAIN + 1, BATCHES_TO_RETAIN + 1) == Duplicate(16, 16)
    assert isinstance(s.check(7, 0, 0, 0), OutOfOrderSequenceNumberError)   # fell out of the window


@pytest.mark.parametrize("epoch,first,expected", [
    (0, 5, None),                                    # same epoch, next sequence
    (1, 0, None),                                    # a new epoch starts over at 0
    (1, 5, OutOfOrderSequenceNumberError),           # ... and only at 0
])
def test_epochs(epoch, first, expected):
    s = _state((7, 0, 0, 4, 0))
    verdict = s.check(7, epoch, first, first + 4)
    assert verdict is None if expected is None else isinstance(verdict, expected)


def test_an_older_epoch_is_fenced():
    s = _state((7, 2, 0, 4, 0))
    assert isinstance(s.check(7, 1, 5, 9), InvalidProducerEpochError)


def test_a_newer_epoch_replaces_the_entry_and_older_observations_are_ignored():
    s = _state((7, 0, 0, 4, 0), (7, 1, 0, 1, 5), (7, 0, 5, 9, 7))
    assert s.producers[7].epoch == 1
    assert s.check(7, 1, 2, 3) is None
    assert s.check(7, 1, 0, 1) == Duplicate(5, 6)


# ---- expiration (producer.id.expiration.ms) ---------------------------------------------

def test_a_producer_expires_once_its_last_batchs_max_timestamp_is_expiration_ms_old():
    s = ProducerStateManager()
    s.observe(7, 0, 0, 4, 0, 4, max_timestamp=5_000)
    s.observe(7, 0, 5, 9, 5, 9, max_timestamp=9_000)    # the last batch counts, not the first
    s.observe(8, 0, 0, 0, 10, 10, max_timestamp=2_000)
    assert s.remove_expired(now_ms=10_999, expiration_ms=2_000) == 1   # 8 is 8999 ms old, 7 only 1999
    assert set(s.producers) == {7}
    assert s.remove_expired(now_ms=11_000, expiration_ms=2_000) == 1   # exactly expiration_ms: gone (Kafka's >=)
    assert s.producers == {}
    assert s.check(7, 0, 50, 54) is None                                # forgotten: any sequence is taken


def test_a_producer_whose_batch_had_no_timestamp_is_never_expired():
    s = _state((7, 0, 0, 4, 0))    # observed without max_timestamp, as an old caller does
    assert s.remove_expired(now_ms=10**15, expiration_ms=1) == 0
    assert set(s.producers) == {7}


def test_expired_producers_leave_the_snapshots_too_so_a_truncation_does_not_bring_them_back(tmp_path):
    plog = PartitionLog.open(tmp_path / "t-0", LogConfig(), 0)
    try:
        live = ProducerStateManager(snapshot_interval_bytes=1)          # a snapshot after every batch
        _append(plog, live, 7, 0, 0, 1, ts=1_000)
        _append(plog, live, 8, 0, 0, 1, ts=50_000)
        assert live.remove_expired(now_ms=60_000, expiration_ms=20_000) == 1
        assert [set(snap.entries) for snap in live.snapshots] == [set(), {8}]
        assert set(truncate_producer_state(live, plog, plog.log_end_offset).producers) == {8}
    finally:
        plog.close()


# ---- rebuilding from the log, snapshots, truncation ---------------------------------------

def _append(plog: PartitionLog, live: ProducerStateManager, pid: int, epoch: int, first_seq: int, count: int,
            ts: int = 1_000) -> None:
    """Append a batch as the leader does and observe it as the leader does."""
    raw = build_batch([(None, b"v%d" % i, ts + i) for i in range(count)], producer_id=pid, producer_epoch=epoch,
                      base_sequence=first_seq if pid >= 0 else -1)
    info = plog.append_as_leader(raw, 0, 0)
    h = parse_header(raw)
    live.observe(pid, epoch, h.base_sequence, h.base_sequence + h.last_offset_delta, info.base_offset,
                 info.last_offset, max_timestamp=h.max_timestamp, batch_bytes=info.size)


def _state_of(s: ProducerStateManager) -> tuple:
    return s.producers, s.map_end_offset


def test_observe_batches_reads_the_headers_like_the_leader_observes_them(tmp_path):
    plog = PartitionLog.open(tmp_path / "t-0", LogConfig(), 0)
    try:
        live = ProducerStateManager()
        _append(plog, live, 7, 0, 0, 3, ts=100)
        _append(plog, live, -1, -1, -1, 2)
        _append(plog, live, 7, 0, 3, 1, ts=200)
        follower = ProducerStateManager()
        observe_batches(follower, plog.read(0, 1 << 20))
        assert _state_of(follower) == _state_of(live) == _state_of(rebuild_producer_state(plog))
        assert follower.producers[7].last_timestamp == 200
        assert rebuild_producer_state(plog).replayed_bytes == plog.size_bytes
    finally:
        plog.close()


_BATCHES = st.tuples(st.sampled_from([-1, 1, 2, 3]), st.integers(0, 2), st.integers(0, 12), st.integers(1, 3),
                     st.integers(0, 10**6))
_STEPS = st.lists(st.one_of(st.tuples(st.just("append"), _BATCHES), st.tuples(st.just("truncate"), st.floats(0, 1))),
                  min_size=1, max_size=40)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_STEPS, interval=st.integers(1, 600), max_snapshots=st.integers(1, 4),
       segment_bytes=st.integers(200, 2000), cut=st.floats(0, 1))
def test_truncating_from_a_snapshot_gives_the_state_a_full_rebuild_of_the_truncated_log_gives(
        steps, interval, max_snapshots, segment_bytes, cut):
    with tempfile.TemporaryDirectory() as root:
        plog = PartitionLog.open(Path(root) / "t-0", LogConfig(segment_bytes=segment_bytes), 0)
        try:
            live = ProducerStateManager(snapshot_interval_bytes=interval, max_snapshots=max_snapshots)
            for kind, arg in steps + [("truncate", cut)]:
                if kind == "append":
                    pid, epoch, seq, count, ts = arg
                    _append(plog, live, pid, epoch, seq, count, ts)
                    continue
                plog.truncate_to(int(arg * plog.log_end_offset))
                live = truncate_producer_state(live, plog, plog.log_end_offset)
                assert _state_of(live) == _state_of(rebuild_producer_state(plog))
                assert all(snap.offset <= plog.log_end_offset for snap in live.snapshots)
        finally:
            plog.close()


def test_a_truncation_near_the_end_replays_only_the_tail(tmp_path):
    plog = PartitionLog.open(tmp_path / "t-0", LogConfig(segment_bytes=8192), 0)
    try:
        live = ProducerStateManager(snapshot_interval_bytes=1000, max_snapshots=4)
        for i in range(300):
            _append(plog, live, 1 + i % 3, 0, i // 3, 1)
        batch_bytes = plog.size_bytes // 300
        plog.truncate_to(plog.log_end_offset - 5)
        cut = truncate_producer_state(live, plog, plog.log_end_offset)
        full = rebuild_producer_state(plog)
        assert _state_of(cut) == _state_of(full)
        assert full.replayed_bytes == plog.size_bytes > 20_000
        # From the newest snapshot below the cut: less than one snapshot interval (plus a batch).
        assert 0 < cut.replayed_bytes < 1000 + batch_bytes
    finally:
        plog.close()


def test_a_truncation_below_every_snapshot_falls_back_to_a_full_rebuild(tmp_path):
    plog = PartitionLog.open(tmp_path / "t-0", LogConfig(), 0)
    try:
        live = ProducerStateManager(snapshot_interval_bytes=1000, max_snapshots=2)
        for i in range(100):
            _append(plog, live, 1, 0, i, 1)
        oldest = live.snapshots[0].offset
        plog.truncate_to(oldest - 1)
        cut = truncate_producer_state(live, plog, plog.log_end_offset)
        assert cut.replayed_bytes == plog.size_bytes
        assert all(snap.offset < oldest for snap in cut.snapshots)   # taken again during the replay
        assert _state_of(cut) == _state_of(rebuild_producer_state(plog))
    finally:
        plog.close()
