"""Property test: a PartitionLog behaves like a list of batches.

Hypothesis drives random appends (leader and follower, random sizes, tiny segments so
they roll often), truncations, size retention, clean and unclean reopens and torn
tails, and checks every read against a plain in-memory model.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from broker.log import LogConfig, PartitionLog
from client.errors import CorruptMessageError
from client.record_batch import build_batch, iter_batches, stamp

CONFIG = LogConfig(segment_bytes=400, index_interval_bytes=128, retention_ms=-1)


def make(base_offset: int, epoch: int, records: int, value_size: int, seed: int) -> bytes:
    raw = bytearray(build_batch([(None, bytes([seed % 251]) * value_size, 1_000 + i) for i in range(records)]))
    stamp(raw, 0, base_offset, epoch)
    return bytes(raw)


class LogModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="raftka-log-model-"))
        self.log = PartitionLog.open(self.root / "model-0", CONFIG, 0)
        # The model: the batches the log must hold, in order, as (base, next, bytes).
        self.batches: list[tuple[int, int, bytes]] = []
        self.start = 0
        self.seed = 0

    # ---- model helpers ---------------------------------------------------------------

    @property
    def end(self) -> int:
        return self.batches[-1][1] if self.batches else self.start

    def expected_read(self, offset: int, max_bytes: int, max_offset: int | None) -> bytes:
        limit = self.end if max_offset is None else min(max_offset, self.end)
        out, total = [], 0
        for base, nxt, data in self.batches:
            if nxt <= offset:
                continue
            if nxt > limit:
                break
            if out and total + len(data) > max_bytes:
                break
            out.append(data)
            total += len(data)
        return b"".join(out)

    def next_epoch(self, bump: bool) -> int:
        return max(self.log.latest_epoch, 0) + (1 if bump else 0)

    # ---- rules ---------------------------------------------------------------------------

    @rule(records=st.integers(1, 3), value_size=st.integers(0, 80), bump=st.booleans())  # fits a segment
    def append_as_leader(self, records, value_size, bump):
        self.seed += 1
        epoch = self.next_epoch(bump)
        raw = make(0, -1, records, value_size, self.seed)
        info = self.log.append_as_leader(raw, epoch, now_ms=0)
        assert info.base_offset == self.end
        self.batches.append((self.end, self.end + records, make(self.end, epoch, records, value_size, self.seed)))

    @rule(shapes=st.lists(st.tuples(st.integers(1, 3), st.integers(0, 120)), min_size=1, max_size=4),
          bump=st.booleans())
    def append_as_follower(self, shapes, bump):
        epoch = self.next_epoch(bump)
        offset, new = self.end, []
        for records, value_size in shapes:
            self.seed += 1
            new.append((offset, offset + records, make(offset, epoch, records, value_size, self.seed)))
            offset += records
        info = self.log.append_as_follower(b"".join(d for _, _, d in new), now_ms=0)
        assert (info.base_offset, info.last_offset) == (new[0][0], new[-1][1] - 1)
        self.batches.extend(new)

    @rule(skip=st.integers(1, 3))
    def follower_gap_is_rejected(self, skip):
        with pytest.raises(CorruptMessageError):
            self.log.append_as_follower(make(self.end + skip, 0, 1, 5, 0), now_ms=0)

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def truncate(self, data):
        offset = data.draw(st.integers(self.start, self.end))
        self.log.truncate_to(offset)
        # whole batches: the one holding ``offset`` goes too
        self.batches = [b for b in self.batches if b[1] <= offset]

    @precondition(lambda self: self.batches)
    @rule(retention_bytes=st.integers(1, 2_000))
    def retention_by_size(self, retention_bytes):
        size_before = self.log.size_bytes
        self.log.update_config(dataclasses.replace(CONFIG, retention_bytes=retention_bytes))
        self.log.delete_expired_segments(now_ms=0)
        self.log.update_config(CONFIG)
        new_start = self.log.log_start_offset
        assert new_start >= self.start
        assert new_start == self.end or new_start in {b[0] for b in self.batches}
        self.batches = [b for b in self.batches if b[0] >= new_start]
        self.start = new_start
        assert self.log.size_bytes >= min(retention_bytes, size_before)

    @rule(clean=st.booleans())
    def reopen(self, clean):
        self.log.close(clean=clean)
        self.log = PartitionLog.open(self.root / "model-0", CONFIG, 0)

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def tear_the_tail_and_reopen(self, data):
        """A torn last write: some bytes of the last batch never reached the disk."""
        base, _, last = self.batches[-1]
        self.log.close(clean=False)
        files = sorted((self.root / "model-0").glob("*.log"))
        holder = [f for f in files if int(f.name[:20]) <= base][-1]
        cut = data.draw(st.integers(1, len(last)))
        with open(holder, "r+b") as f:
            f.truncate(f.seek(0, 2) - cut)
        self.batches.pop()
        self.log = PartitionLog.open(self.root / "model-0", CONFIG, 0)

    @rule(data=st.data())
    def read_somewhere(self, data):
        offset = data.draw(st.integers(self.start, self.end))
        max_bytes = data.draw(st.integers(1, 1_500))
        max_offset = data.draw(st.none() | st.integers(self.start, self.end + 2))
        assert self.log.read(offset, max_bytes, max_offset) == self.expected_read(offset, max_bytes, max_offset)

    # ---- invariants ------------------------------------------------------------------------

    @invariant()
    def log_matches_the_model(self):
        assert (self.log.log_start_offset, self.log.log_end_offset) == (self.start, self.end)
        everything = b"".join(d for _, _, d in self.batches)
        assert self.log.size_bytes == len(everything)
        assert self.log.read(self.start, 1 << 30) == everything

    @invariant()
    def epochs_match_the_batches(self):
        derived: list[tuple[int, int]] = []
        for _, h in iter_batches(b"".join(d for _, _, d in self.batches)):
            if not derived or h.partition_leader_epoch > derived[-1][0]:
                derived.append((h.partition_leader_epoch, h.base_offset))
        cached = [(e.epoch, e.start_offset) for e in self.log.epoch_entries if e.start_offset < self.end]
        assert cached == derived
        if derived:
            assert self.log.end_offset_for_epoch(derived[-1][0]) == (derived[-1][0], self.end)

    def teardown(self) -> None:
        self.log.close(clean=False)
        shutil.rmtree(self.root, ignore_errors=True)


LogModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
test_partition_log_matches_a_list_of_batches = LogModel.TestCase
