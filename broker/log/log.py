"""A partition's log on disk: the folder ``<topic>-<partition>/``.

The folder holds the segments (``<base_offset:020d>.log`` + ``.index``), the
``leader-epoch-checkpoint``, the ``high-watermark-checkpoint``, the
``recovery-point-checkpoint``, the producer state its last clean close left
(``<offset>.snapshot``, producer_snapshot_file.py) and, between a clean close of
this log alone and the next open, the ``clean-shutdown`` marker (a broker's
LogManager leaves one marker in the data dir for all its logs instead).

The log knows nothing of replication: it appends batches (stamping offsets and the
leader epoch when it is the leader's copy), serves reads of whole batches, truncates
when told, and deletes old segments by retention. It never decodes records.

Every method takes the log's RLock: produce, fetch and housekeeping run on several
gRPC worker threads. Nothing here reads a clock: time-dependent methods take now_ms.

Storage faults: an OSError becomes KafkaStorageError and is reported to the failure
handler the LogManager installs (the data dir then goes offline, see
log_dir_failure.py); a failed append leaves no partial batch behind (the segment
cuts it off, and the log end only moves after a whole write). Reads check every
batch they return (header, CRC, offsets): a damaged one is never served
(CorruptMessageError) and the recovery point drops below it, so the next start
cuts the log there and the replica re-fetches the rest from the leader.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import structlog

from broker.log.checkpoint import (TMP_SUFFIX, fsync_directory, read_offset_checkpoint,
                                   write_atomically, write_offset_checkpoint)
from broker.log.config import LogConfig, UNLIMITED
from broker.log.leader_epoch_cache import EpochEntry, LeaderEpochCache
from broker.log.offset_index import INDEX_SUFFIX
from broker.log.producer_snapshot_file import delete_snapshot, read_snapshot, snapshot_offsets, write_snapshot
from broker.log.segment import (MAX_RELATIVE_OFFSET, LogSegment, batch_problem, log_file_name,
                                parse_segment_file_name)
from client.errors import (CorruptMessageError, FencedLeaderEpochError, KafkaStorageError,
                           OffsetOutOfRangeError, RecordListTooLargeError)
from client.record_batch import BatchHeader, crc_ok, iter_batches, parse_header, stamp

log = structlog.get_logger(__name__)

LEADER_EPOCH_FILE = "leader-epoch-checkpoint"
HIGH_WATERMARK_FILE = "high-watermark-checkpoint"
RECOVERY_POINT_FILE = "recovery-point-checkpoint"
CLEAN_SHUTDOWN_FILE = "clean-shutdown"


@dataclass(frozen=True)
class AppendInfo:
    base_offset: int
    last_offset: int
    size: int
    # raftka keeps the producer's CreateTime; -1 says no LogAppendTime was set.
    log_append_time_ms: int = -1


@dataclass(frozen=True)
class _Batch:
    """A batch about to be appended: where it sits in the caller's buffer, and its header."""

    position: int
    header: BatchHeader


class PartitionLog:
    """The segments, epoch cache and checkpoints of one partition replica."""

    def __init__(self, directory: Path, config: LogConfig, segments: list[LogSegment],
                 epoch_cache: LeaderEpochCache, recovery_point: int):
        """Use ``PartitionLog.open``."""
        self._directory = directory
        self._config = config
        # Invariant: at least one segment, sorted by base offset, contiguous (each
        # segment's base_offset is the previous one's next_offset); the last one is
        # the active segment, the only one appended to.
        self._segments = segments
        # Invariant: entries start at or after log_start_offset and before
        # log_end_offset (an epoch started by assign_leader_epoch may start at it).
        self._epoch_cache = epoch_cache
        # Invariant: every batch below this offset is fsynced, and the checkpoint
        # file never names a higher offset than this (unclean opens trust below it).
        self._recovery_point = recovery_point
        self._unflushed_batches = 0
        self._last_written_hw: int | None = None
        # The producer-state snapshot (producer_snapshot_file.py): the offset of the file on disk, if any; the
        # log end it describes while nothing cut the log since (None: stale); its body from the open, until taken.
        self._snapshot_file: int | None = None
        self._snapshot_at: int | None = None
        self._producer_snapshot: str | None = None
        self._closed = False
        # Set once the data dir failed: every later call answers KafkaStorageError. A plain
        # flag, set without the lock, so a failure in one log can take all offline at once.
        self._offline = False
        # Told (what was being done, the error) about every storage failure; see set_failure_handler.
        self._failure_handler: Callable[[str, BaseException], None] | None = None
        self._lock = threading.RLock()

    # ---- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, config: LogConfig, now_ms: int, durable: bool = True,
             clean_shutdown: bool = False) -> "PartitionLog":
        """Open (creating if needed) the log in ``directory`` and recover it.

        After a clean close the segments are trusted; otherwise every segment from the
        one holding the recovery point on is checked batch by batch, and the log ends
        at the first bad batch (later batches and segments are deleted). A clean close is
        the log's own clean-shutdown marker, or ``clean_shutdown``: the data dir's marker
        (LogManager's, one for every log it closed cleanly, as Kafka's per log dir).
        ``durable=False``: the marker's removal is not fsynced here; the caller makes it
        durable (one syncfs for every log, LogManager.load) before any write.
        """
        del now_ms  # nothing at open depends on time yet; kept for a stable signature
        directory = Path(directory)
        try:
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                directory.mkdir(parents=True)
                names = []
            names = _remove_leftovers(directory, names)
            own_marker = CLEAN_SHUTDOWN_FILE in names
            clean = clean_shutdown or own_marker
            recovery_point = 0 if clean else (read_offset_checkpoint(directory / RECOVERY_POINT_FILE) or 0)
            segments = _load_segments(directory, names, config, clean, recovery_point)
        except OSError as e:
            raise KafkaStorageError(f"cannot open log {directory}: {e}") from e
        try:
            epoch_cache = LeaderEpochCache(directory / LEADER_EPOCH_FILE)
        except OSError as e:
            for seg in segments:
                seg.close()
            raise KafkaStorageError(f"cannot open log {directory}: {e}") from e
        log_end = segments[-1].next_offset
        # After a clean close everything up to the log end was fsynced.
        plog = cls(directory, config, segments, epoch_cache,
                   recovery_point=log_end if clean else min(recovery_point, log_end))
        try:
            plog._reconcile_epoch_cache(durable)
            plog._clamp_high_watermark_checkpoint()
            plog._open_producer_snapshot(names, clean)
            if own_marker:
                # From now on the log may change without a clean close: the marker
                # must not survive into a crash.
                (directory / CLEAN_SHUTDOWN_FILE).unlink()
                if durable:
                    fsync_directory(directory)
        except OSError as e:
            plog.close(clean=False)
            raise KafkaStorageError(f"cannot open log {directory}: {e}") from e
        # After a clean shutdown there is nothing to tell per log (thousands at a start): debug.
        (log.debug if clean else log.info)("log_opened", dir=str(directory), clean_shutdown=clean,
                 log_start_offset=plog.log_start_offset, log_end_offset=plog.log_end_offset,
                 segments=len(segments), latest_epoch=plog.latest_epoch)
        return plog

    def _reconcile_epoch_cache(self, durable: bool = True) -> None:
        cache = self._epoch_cache
        if not cache.file_ok and self.log_end_offset > self.log_start_offset:
            # The batches carry their leader epoch: the cache can be rebuilt from them.
            entries = self._epoch_entries_from_batches()
            log.warning("leader_epoch_cache_rebuilt", dir=str(self._directory), entries=len(entries))
            cache.replace_all(entries, durable)
        else:
            # Past the recovery point the epochs were written without an fsync (append_as_follower): an
            # unclean stop may have lost the newest. Their batches carry them, found by the segments' recovery
            # (Kafka's LogSegment.recover); none after a clean stop, which recovers nothing.
            for seg in self._segments:
                for epoch, start_offset in seg.recovered_epoch_starts:
                    if epoch > cache.latest_epoch:
                        cache.assign(epoch, start_offset, durable)
                seg.recovered_epoch_starts = []
        # Epochs whose batches did not survive (torn tail) or were deleted are dropped (an epoch a leader
        # started without writing anything starts at the log end: dropped too, as Kafka's LogLoader does).
        cache.truncate_from_end(self.log_end_offset, durable)
        cache.truncate_from_start(self.log_start_offset, durable)

    def _epoch_entries_from_batches(self) -> list[EpochEntry]:
        entries: list[EpochEntry] = []
        for seg in self._segments:
            for _, h in seg.iter_headers():
                epoch = h.partition_leader_epoch
                if epoch >= 0 and (not entries or epoch > entries[-1].epoch):
                    entries.append(EpochEntry(epoch, h.base_offset))
        return entries

    def _open_producer_snapshot(self, names: list[str], clean: bool) -> None:
        """Trust a snapshot at the log end after a clean close; delete any other (producer_snapshot_file.py)."""
        offsets = snapshot_offsets(names)
        end = self.log_end_offset
        if clean and end in offsets:
            self._producer_snapshot = read_snapshot(self._directory, end)
        kept = end if self._producer_snapshot is not None else None
        for offset in offsets:
            if offset != kept:
                delete_snapshot(self._directory, offset)   # durable with the marker's removal (the caller's sync)
        self._snapshot_file = self._snapshot_at = kept

    def _clamp_high_watermark_checkpoint(self) -> None:
        path = self._directory / HIGH_WATERMARK_FILE
        stored = read_offset_checkpoint(path)
        if stored is not None and stored != self._clamp(stored):
            write_offset_checkpoint(path, self._clamp(stored))
        self._last_written_hw = None if stored is None else self._clamp(stored)

    # ---- storage failures ------------------------------------------------------------

    def set_failure_handler(self, handler: Callable[[str, BaseException], None]) -> None:
        """``handler(message, error)`` is called on every storage failure of this log (the
        LogManager takes the data dir offline)."""
        self._failure_handler = handler

    def mark_offline(self) -> None:
        """The data dir failed: refuse every later read and write with KafkaStorageError."""
        self._offline = True

    @property
    def offline(self) -> bool:
        return self._offline

    def _report_failure(self, message: str, error: BaseException) -> None:
        if self._failure_handler is not None:
            self._failure_handler(message, error)

    # ---- state -----------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def config(self) -> LogConfig:
        return self._config

    def update_config(self, config: LogConfig) -> None:
        """New settings apply from the next append, roll or retention run."""
        with self._lock:
            self._config = config

    @property
    def log_start_offset(self) -> int:
        """First offset still in the log (retention moves it up)."""
        with self._lock:
            return self._segments[0].base_offset

    @property
    def log_end_offset(self) -> int:
        """Offset the next appended batch gets (LEO)."""
        with self._lock:
            return self._segments[-1].next_offset

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(seg.size for seg in self._segments)

    @property
    def latest_epoch(self) -> int:
        """Latest leader epoch in the epoch cache, -1 if none."""
        with self._lock:
            return self._epoch_cache.latest_epoch

    @property
    def epoch_entries(self) -> list[EpochEntry]:
        with self._lock:
            return self._epoch_cache.entries

    @property
    def recovery_point(self) -> int:
        with self._lock:
            return self._recovery_point

    @property
    def segment_count(self) -> int:
        with self._lock:
            return len(self._segments)

    # ---- appending ---------------------------------------------------------------------

    def append_as_leader(self, batch: bytes | bytearray, leader_epoch: int, now_ms: int) -> AppendInfo:
        """Append one producer batch (already validated by the caller) as the leader.

        Stamps base_offset = log_end_offset and the leader epoch (both outside the
        CRC, so the CRC stays valid) and records the epoch's start if it is new.
        """
        with self._lock:
            self._check_open()
            header = parse_header(batch)
            if header.size != len(batch):
                raise CorruptMessageError(f"batch declares {header.size} bytes but {len(batch)} were given")
            if leader_epoch < 0:
                raise ValueError(f"leader epoch {leader_epoch} must be >= 0")
            if leader_epoch < self._epoch_cache.latest_epoch:
                raise FencedLeaderEpochError(
                    f"leader epoch {leader_epoch} is older than epoch {self._epoch_cache.latest_epoch} "
                    f"already in log {self._directory.name}")
            if len(batch) > self._config.segment_bytes:
                # Kafka's rule: a batch must fit in a segment (RECORD_LIST_TOO_LARGE).
                raise RecordListTooLargeError(
                    f"batch of {len(batch)} bytes is larger than segment.bytes ({self._config.segment_bytes})")
            base_offset = self.log_end_offset
            stamped = bytearray(batch)
            stamp(stamped, 0, base_offset, leader_epoch)
            header = dataclasses.replace(header, base_offset=base_offset, partition_leader_epoch=leader_epoch)
            with self._storage_errors("append"):
                self._epoch_cache.assign(leader_epoch, base_offset)
                self._append_batches(stamped, [_Batch(0, header)], now_ms)
            return AppendInfo(base_offset, header.last_offset, len(stamped))

    def append_as_follower(self, batches: bytes | bytearray | memoryview, now_ms: int) -> AppendInfo:
        """Append whole batches copied from the leader, keeping their offsets and epochs.

        Every batch is checked (header, CRC, offsets continuing the log) before
        anything is written; a bad one rejects the whole call with CorruptMessageError.
        An empty ``batches`` appends nothing (AppendInfo with size 0).
        """
        with self._lock:
            self._check_open()
            leo = self.log_end_offset
            parsed = _check_follower_batches(batches, leo, self._directory.name)
            if not parsed:
                return AppendInfo(leo, leo - 1, 0)
            with self._storage_errors("append"):
                for b in parsed:
                    if b.header.partition_leader_epoch >= 0:
                        # Not fsynced here (a failover brings thousands of partitions a new epoch at once, each
                        # two fsyncs on the fetcher's thread); durable before the recovery point passes these
                        # batches (_flush_up_to), and re-learned from them by an unclean start before that.
                        self._epoch_cache.assign(b.header.partition_leader_epoch, b.header.base_offset,
                                                 durable=False)
                self._append_batches(batches, parsed, now_ms)
            return AppendInfo(parsed[0].header.base_offset, parsed[-1].header.last_offset, len(batches))

    def assign_leader_epoch(self, leader_epoch: int, durable: bool = True) -> None:
        """On becoming leader: record that ``leader_epoch`` starts at the log end.

        Kafka does this even before the new leader writes anything (KIP-279), so a
        follower of an older epoch learns where that epoch ended. A lower epoch than
        the latest is stale news and ignored. ``durable=False``: not fsynced here; the
        caller syncs before this replica leads at the epoch (ReplicaManager.on_metadata_change).
        """
        with self._lock:
            self._check_open()
            if leader_epoch < self._epoch_cache.latest_epoch:
                log.warning("stale_leader_epoch_ignored", dir=str(self._directory), epoch=leader_epoch,
                            latest_epoch=self._epoch_cache.latest_epoch)
                return
            with self._storage_errors("assign leader epoch"):
                self._epoch_cache.assign(leader_epoch, self.log_end_offset, durable)

    def _append_batches(self, buf: bytes | bytearray | memoryview, batches: Sequence[_Batch],
                        now_ms: int) -> None:
        """Write batches to the active segment, rolling first when one does not fit.

        Consecutive batches that fit in the active segment go down in one write.
        """
        view = memoryview(buf)
        i = 0
        while i < len(batches):
            self._maybe_roll(batches[i].header, now_ms)
            active = self._segments[-1]
            j, run = i, 0
            room = self._config.segment_bytes - active.size
            while j < len(batches):
                h = batches[j].header
                fits = run + h.size <= room and h.last_offset - active.base_offset <= MAX_RELATIVE_OFFSET
                if j > i and not fits:
                    break
                run += h.size
                j += 1
            start = batches[i].position
            active.append(view[start:start + run], [b.header for b in batches[i:j]],
                          self._config.index_interval_bytes)
            self._maybe_flush(j - i)
            i = j

    def _maybe_roll(self, next_batch: BatchHeader, now_ms: int) -> None:
        active = self._segments[-1]
        if active.is_empty:
            return
        cfg = self._config
        reason = None
        if active.size + next_batch.size > cfg.segment_bytes:
            reason = "segment_bytes"
        elif active.rolling_timestamp is not None and now_ms - active.rolling_timestamp > cfg.segment_ms:
            reason = "segment_ms"
        elif next_batch.last_offset - active.base_offset > MAX_RELATIVE_OFFSET:
            reason = "relative_offset_overflow"
        if reason is not None:
            self._roll(reason)

    def _roll(self, reason: str) -> None:
        """Start a new active segment at the log end; make the old one durable."""
        base_offset = self.log_end_offset
        self._segments.append(LogSegment.create(self._directory, base_offset))
        # The rolled segment is complete: fsync it and move the recovery point past
        # it, so an unclean restart only has to check the new active segment.
        self._flush_up_to(base_offset)
        log.info("segment_rolled", dir=str(self._directory), base_offset=base_offset, reason=reason)

    def _maybe_flush(self, appended_batches: int) -> None:
        every = self._config.flush_interval_messages
        if every == UNLIMITED:
            return
        self._unflushed_batches += appended_batches
        if self._unflushed_batches >= every:
            self._segments[-1].flush()
            self._unflushed_batches = 0

    def _flush_up_to(self, offset: int) -> None:
        """fsync every segment holding batches in [recovery_point, offset), and the epochs they carry;
        advance the recovery point."""
        for seg in self._segments:
            if seg.base_offset < offset and seg.next_offset > self._recovery_point:
                seg.flush()
        self._epoch_cache.flush()
        if offset > self._recovery_point:
            self._recovery_point = offset
            write_offset_checkpoint(self._directory / RECOVERY_POINT_FILE, offset)

    # ---- reading ---------------------------------------------------------------------------

    def read(self, fetch_offset: int, max_bytes: int, max_offset: int | None = None, *,
             min_one_batch: bool = True) -> bytes:
        """Whole batches from the one holding ``fetch_offset`` on.

        Stops before a batch that ends past ``max_offset`` (exclusive; the HW for
        consumers, None for the log end) and before exceeding ``max_bytes``, except
        that the first batch comes whole even when bigger (KIP-74: a fetch always
        progresses) unless ``min_one_batch`` is False. Reads continue into the next
        segment when one ends before ``max_bytes`` is filled.
        """
        with self._lock:
            self._check_open()
            start, end = self.log_start_offset, self.log_end_offset
            if fetch_offset < start or fetch_offset > end:
                raise OffsetOutOfRangeError(
                    f"fetch offset {fetch_offset} is out of range for {self._directory.name}: "
                    f"the log holds offsets [{start}, {end})")
            limit = end if max_offset is None else min(max_offset, end)
            if fetch_offset >= limit:
                return b""
            with self._storage_errors("read"):
                try:
                    return b"".join(self._read_parts(fetch_offset, max_bytes, limit, min_one_batch))
                except CorruptMessageError as e:
                    self._on_corrupt_read(fetch_offset, e)
                    raise

    def _on_corrupt_read(self, fetch_offset: int, error: CorruptMessageError) -> None:
        """Bytes on disk changed after they were written: never serve them, and make the next
        start check this part of the log (CRCs included) and cut it at the damaged batch."""
        log.error("corrupt_batch_found", dir=str(self._directory), fetch_offset=fetch_offset, problem=str(error))
        try:
            self._lower_recovery_point(fetch_offset)
        except OSError as e:  # the disk is failing anyway; the failure below takes the log offline
            log.error("recovery_point_not_lowered", dir=str(self._directory), error=str(e))
        self._report_failure(f"corrupt batch read at offset {fetch_offset} in {self._directory}", error)

    def _read_parts(self, offset: int, max_bytes: int, limit: int, min_one_batch: bool) -> Iterator[bytes]:
        total = 0
        i = self._segment_index_for(offset)
        while i < len(self._segments) and offset < limit:
            seg = self._segments[i]
            found = seg.translate_offset(offset)
            if found is None:  # the offset is this segment's end: the next one starts there
                i += 1
                continue
            position, first = found
            if first.next_offset > limit:
                return
            room = max_bytes - total
            if first.size > room:
                if total > 0 or not min_one_batch:
                    return
                room = first.size
            if position + first.size > seg.size:
                raise CorruptMessageError(f"batch at offset {first.base_offset} in {seg.path.name} declares "
                                          f"{first.size} bytes, past the end of the segment")
            data = seg.read(position, room)
            taken, offset = _verified_batches_below(data, limit, first.base_offset)
            yield data if taken == len(data) else data[:taken]
            total += taken
            if position + taken < seg.size:  # the next batch did not fit, or is past the limit
                return
            i += 1

    def _segment_index_for(self, offset: int) -> int:
        """Index of the segment whose offset range holds ``offset`` (the last one at or below it)."""
        return max(bisect.bisect_right(self._segments, offset, key=lambda s: s.base_offset) - 1, 0)

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first batch whose max_timestamp >= ``timestamp_ms``.

        The offset is that batch's base offset and the timestamp its max_timestamp:
        records are never decoded, so a consumer seeking by time may get a few records
        of that batch that are older than asked. None if no batch is that recent.
        """
        with self._lock:
            self._check_open()
            with self._storage_errors("search by timestamp"):
                for seg in self._segments:
                    if seg.largest_timestamp < timestamp_ms:
                        continue
                    header = seg.find_by_timestamp(timestamp_ms)
                    if header is not None:
                        return header.base_offset, header.max_timestamp
            return None

    # ---- leader epochs ---------------------------------------------------------------------

    def end_offset_for_epoch(self, leader_epoch: int) -> tuple[int, int]:
        """(epoch, end offset) for OffsetsForLeaderEpoch / diverging-epoch checks."""
        with self._lock:
            return self._epoch_cache.end_offset_for(leader_epoch, self.log_end_offset)

    # ---- truncation --------------------------------------------------------------------------

    def truncate_to(self, offset: int) -> None:
        """Remove every batch at or above ``offset`` (whole batches: a batch holding
        ``offset`` goes too). No-op if ``offset`` >= log_end_offset; below the log start
        the log is emptied and restarts at ``offset``."""
        with self._lock:
            self._check_open()
            if offset < 0:
                raise ValueError(f"cannot truncate to negative offset {offset}")
            previous_end = self.log_end_offset
            if offset >= previous_end:
                # Nothing to cut, but an epoch may start at the log end with no batch of it: this
                # broker led that epoch and appended nothing before it lost the leadership. Drop
                # the entry (Kafka's UnifiedLog.truncateTo does the same), or the new leader's
                # diverging-epoch answer would send the follower here again and again.
                self._epoch_cache.truncate_from_end(previous_end)
                return
            if offset < self.log_start_offset:
                self.truncate_fully_and_start_at(offset)
                return
            with self._storage_errors("truncate"):
                bytes_cut = 0
                # Newest first: a crash half-way leaves a shorter but contiguous log.
                while len(self._segments) > 1 and self._segments[-1].base_offset >= offset:
                    seg = self._segments.pop()
                    bytes_cut += seg.size
                    seg.delete()
                bytes_cut += self._segments[-1].truncate_to(offset)
                self._snapshot_at = None   # the log may grow back to the same end with other batches
                new_end = self.log_end_offset
                self._epoch_cache.truncate_from_end(new_end)
                self._lower_recovery_point(new_end)
                self._unflushed_batches = 0
            log.info("log_truncated", dir=str(self._directory), to_offset=offset,
                     previous_log_end_offset=previous_end, log_end_offset=new_end, bytes_cut=bytes_cut,
                     latest_epoch=self._epoch_cache.latest_epoch)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete everything and restart the empty log at ``offset``.

        For a follower whose log end is below the leader's log start (retention on
        the leader deleted what it still needs): it continues from there.
        """
        with self._lock:
            self._check_open()
            if offset < 0:
                raise ValueError(f"cannot start a log at negative offset {offset}")
            previous = (self.log_start_offset, self.log_end_offset)
            with self._storage_errors("truncate fully"):
                while self._segments:
                    self._segments.pop().delete()
                self._snapshot_at = None
                self._segments.append(LogSegment.create(self._directory, offset))
                self._epoch_cache.replace_all([])
                self._recovery_point = offset
                write_offset_checkpoint(self._directory / RECOVERY_POINT_FILE, offset)
                self._unflushed_batches = 0
            log.info("log_truncated_fully", dir=str(self._directory), previous_log_start_offset=previous[0],
                     previous_log_end_offset=previous[1], log_start_offset=offset)

    def _lower_recovery_point(self, offset: int) -> None:
        # Batches appended after a truncation are new bytes: they must be checked
        # after a crash even if old, fsynced bytes once stood at the same offsets.
        if self._recovery_point > offset:
            self._recovery_point = offset
            write_offset_checkpoint(self._directory / RECOVERY_POINT_FILE, offset)

    # ---- retention ------------------------------------------------------------------------------

    def delete_expired_segments(self, now_ms: int, high_watermark: int | None = None) -> int:
        """Delete old segments by retention.ms then retention.bytes; returns how many.

        Oldest first, whole segments only, never past ``high_watermark`` when given
        (Kafka never deletes what is not replicated yet). If every segment qualifies,
        a new empty active segment is rolled at the log end first, so the log start
        becomes the log end (Kafka does the same).
        """
        with self._lock:
            self._check_open()
            with self._storage_errors("delete expired segments"):
                deleted = 0
                cfg = self._config
                if cfg.retention_ms != UNLIMITED:
                    cutoff = now_ms - cfg.retention_ms
                    deleted += self._delete_oldest(
                        lambda seg: seg.largest_timestamp < cutoff, "retention_ms", high_watermark)
                if cfg.retention_bytes != UNLIMITED and self.size_bytes > cfg.retention_bytes:
                    deleted += self._delete_oldest(_over_size(self.size_bytes - cfg.retention_bytes),
                                                   "retention_bytes", high_watermark)
                return deleted

    def _delete_oldest(self, expired: Callable[[LogSegment], bool], reason: str,
                       high_watermark: int | None) -> int:
        limit = self.log_end_offset if high_watermark is None else min(high_watermark, self.log_end_offset)
        doomed: list[LogSegment] = []
        for i, seg in enumerate(self._segments):
            is_last = i == len(self._segments) - 1
            end = self.log_end_offset if is_last else self._segments[i + 1].base_offset
            if end > limit or (is_last and seg.is_empty) or not expired(seg):
                break
            doomed.append(seg)
        if not doomed:
            return 0
        if len(doomed) == len(self._segments):
            self._roll(reason="retention_deleted_all_segments")
        for seg in doomed:
            self._segments.remove(seg)
            log.info("segment_deleted", dir=str(self._directory), base_offset=seg.base_offset,
                     next_offset=seg.next_offset, size=seg.size, reason=reason)
            seg.delete()
        self._epoch_cache.truncate_from_start(self.log_start_offset)
        return len(doomed)

    # ---- high watermark ---------------------------------------------------------------------------

    def read_high_watermark(self) -> int:
        """The checkpointed HW, clamped to [log_start_offset, log_end_offset]; log start if none."""
        with self._lock:   # the file holds _last_written_hw (read at open, kept at each write): not read again
            stored = self._last_written_hw
            return self.log_start_offset if stored is None else self._clamp(stored)

    def write_high_watermark(self, high_watermark: int, durable: bool = True) -> bool:
        """Checkpoint the HW (clamped into the log); skipped when unchanged. True if written (without
        ``durable``, the caller syncs: LogManager.checkpoint_high_watermarks)."""
        with self._lock:
            self._check_open()
            value = self._clamp(high_watermark)
            if value == self._last_written_hw:
                return False
            if self._last_written_hw is None and value == self.log_start_offset:
                self._last_written_hw = value   # no checkpoint yet reads as the log start: nothing to write
                return False
            with self._storage_errors("checkpoint the high watermark"):
                write_offset_checkpoint(self._directory / HIGH_WATERMARK_FILE, value, durable)
            self._last_written_hw = value
            return True

    @property
    def checkpointed_high_watermark(self) -> int | None:
        """The HW the checkpoint holds (None: not known yet); read without the lock, for a cheap skip."""
        return self._last_written_hw

    # ---- producer-state snapshot (producer_snapshot_file.py) -------------------------------------

    @property
    def holds_producer_snapshot_at_end(self) -> bool:
        """The snapshot file on disk describes the log as it is (nothing appended or cut since it was written
        or loaded)."""
        return self._snapshot_at == self.log_end_offset   # set only with _snapshot_file, cleared when stale

    def take_producer_snapshot(self) -> tuple[int, str] | None:
        """(log end offset, body) of the producer state the last clean close left, once, while the log is
        as that close left it; None if there is none to trust (the caller replays the log instead)."""
        with self._lock:
            body, self._producer_snapshot = self._producer_snapshot, None
            if body is None or self._snapshot_at != self.log_end_offset:
                return None
            return self.log_end_offset, body

    def write_producer_snapshot(self, offset: int, body: str, durable: bool = True) -> bool:
        """Keep the producer state as of ``offset`` (the log end, at a clean close) for the next open; False
        when the file on disk holds it already (nothing appended or cut since it was written or loaded).
        Without ``durable``, the caller syncs (LogManager.close's syncfs, before the clean-shutdown marker)."""
        with self._lock:
            self._check_open()
            if offset != self.log_end_offset:
                raise ValueError(f"a producer snapshot at {offset} is not at the log end {self.log_end_offset}")
            if self.holds_producer_snapshot_at_end:
                return False
            with self._storage_errors("write the producer snapshot"):
                write_snapshot(self._directory, offset, body, durable)
                if self._snapshot_file not in (None, offset):
                    delete_snapshot(self._directory, self._snapshot_file)
            self._snapshot_file = self._snapshot_at = offset
            return True

    def _delete_stale_producer_snapshot(self) -> None:
        """Before a clean-shutdown marker: a snapshot that no longer stands at the log end goes (the rule of
        producer_snapshot_file.py: the open after a clean close trusts what it finds at the log end)."""
        if self._snapshot_file is not None and not self.holds_producer_snapshot_at_end:
            delete_snapshot(self._directory, self._snapshot_file)
            self._snapshot_file = self._snapshot_at = None

    def _clamp(self, offset: int) -> int:
        return min(max(offset, self.log_start_offset), self.log_end_offset)

    # ---- durability and lifecycle ----------------------------------------------------------------

    def flush(self) -> None:
        """fsync everything appended so far and checkpoint the recovery point at the log end."""
        with self._lock:
            self._check_open()
            with self._storage_errors("flush"):
                self._flush_up_to(self.log_end_offset)
                self._unflushed_batches = 0

    def close(self, clean: bool = True, durable: bool = True, marker: bool = True) -> bool:
        """Close the files. ``clean``: fsync, checkpoint the recovery point and leave the
        clean-shutdown marker, so the next open trusts the segments. Idempotent; True if it
        closed cleanly now. ``durable=False`` (LogManager.close, once nothing appends any more):
        the caller has made every segment durable already (one syncfs for all logs), and makes
        the checkpoint and marker written here durable after (another). ``marker=False``: the
        caller leaves one marker for all its logs (LogManager's, in the data dir) instead."""
        with self._lock:
            if self._closed:
                return False
            # An offline log must be recovered at the next start: no clean-shutdown marker.
            clean = clean and not self._offline
            try:
                if clean:
                    with self._storage_errors("close"):
                        if durable:
                            self.flush()
                        elif self.log_end_offset > self._recovery_point:
                            self._recovery_point = self.log_end_offset   # durable: the caller's syncfs
                            write_offset_checkpoint(self._directory / RECOVERY_POINT_FILE, self.log_end_offset,
                                                    durable=False)
                        self._delete_stale_producer_snapshot()   # durable with the marker (its folder's fsync)
                        if marker:
                            write_atomically(self._directory / CLEAN_SHUTDOWN_FILE, "", durable)
            finally:
                self._closed = True
                for seg in self._segments:
                    seg.close()
            (log.debug if clean else log.info)("log_closed", dir=str(self._directory), clean=clean,
                     log_end_offset=self._segments[-1].next_offset)
            return clean

    def delete(self) -> None:
        """Close the log and remove its whole folder."""
        with self._lock:
            self.close(clean=False)
            with self._storage_errors("delete"):
                shutil.rmtree(self._directory)
            log.info("log_deleted", dir=str(self._directory))

    def _check_open(self) -> None:
        if self._closed:
            raise KafkaStorageError(f"log {self._directory} is closed")
        if self._offline:
            raise KafkaStorageError(f"log {self._directory} is offline: its data dir failed")

    @contextmanager
    def _storage_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            log.error("log_storage_error", dir=str(self._directory), action=action, error=str(e))
            message = f"cannot {action} in log {self._directory}: {e}"
            self._report_failure(message, e)
            raise KafkaStorageError(message) from e

    def __repr__(self) -> str:
        return (f"PartitionLog({self._directory.name}, offsets [{self._segments[0].base_offset}, "
                f"{self._segments[-1].next_offset}), {len(self._segments)} segments)")


# ---- helpers -----------------------------------------------------------------------------------


def _remove_leftovers(directory: Path, names: list[str]) -> list[str]:
    """Delete what a crash can leave behind: temporary checkpoint files and index
    files whose segment is gone (a segment is deleted .log first). Returns the names kept."""
    present = set(names)
    kept = []
    for name in names:
        if name.endswith(TMP_SUFFIX) or (name.endswith(INDEX_SUFFIX)
                                         and name[: -len(INDEX_SUFFIX)] + ".log" not in present):
            os.unlink(directory / name)
        else:
            kept.append(name)
    return kept


def _load_segments(directory: Path, names: list[str], config: LogConfig, clean: bool,
                   recovery_point: int) -> list[LogSegment]:
    bases = sorted(b for b in map(parse_segment_file_name, names) if b is not None)
    segments: list[LogSegment] = []
    try:
        for i, base in enumerate(bases):
            if segments and segments[-1].next_offset != base:
                # A gap or an overlap: the log ends where the previous segment ends.
                _delete_segment_files(directory, bases[i:], "not_contiguous", segments[-1].next_offset)
                break
            following = bases[i + 1] if i + 1 < len(bases) else None
            # Segments wholly below the recovery point were fsynced before it was written.
            needs_recovery = not clean and (following is None or following > recovery_point)
            seg, cut = LogSegment.open(directory, base, index_interval_bytes=config.index_interval_bytes,
                                       recover=needs_recovery)
            segments.append(seg)
            if cut and i + 1 < len(bases):
                # The log ends at the first bad batch: later segments cannot follow it.
                _delete_segment_files(directory, bases[i + 1:], "after_corruption", seg.next_offset)
                break
    except BaseException:
        for seg in segments:
            seg.close()
        raise
    if not segments:
        segments.append(LogSegment.create(directory, 0))
    return segments


def _delete_segment_files(directory: Path, bases: list[int], reason: str, log_end_offset: int) -> None:
    for base in bases:
        path = directory / log_file_name(base)
        size = path.stat().st_size
        path.unlink()
        (directory / (path.name[: -len(".log")] + INDEX_SUFFIX)).unlink(missing_ok=True)
        log.warning("segment_deleted_on_recovery", dir=str(directory), segment=path.name, bytes_cut=size,
                    log_end_offset=log_end_offset, reason=reason)


def _check_follower_batches(buf: bytes | bytearray | memoryview, log_end_offset: int,
                            name: str) -> list[_Batch]:
    """Parse and verify batches copied from a leader; CorruptMessageError on any problem."""
    batches: list[_Batch] = []
    expected, pos, n = log_end_offset, 0, len(buf)
    while pos < n:
        h = parse_header(buf, pos)
        if pos + h.size > n:
            raise CorruptMessageError(f"batch at byte {pos} is truncated: {n - pos} of {h.size} bytes")
        if h.base_offset != expected:
            if pos == 0:
                raise CorruptMessageError(
                    f"follower append to {name} starts at offset {h.base_offset}, but the log ends at "
                    f"{expected}: the first batch must start at the log end offset")
            raise CorruptMessageError(
                f"batch at byte {pos} starts at offset {h.base_offset}, expected {expected}: "
                f"batches must have contiguous offsets")
        if h.record_count < 1 or h.last_offset_delta != h.record_count - 1:
            raise CorruptMessageError(
                f"batch at offset {h.base_offset}: record count {h.record_count} does not match "
                f"last offset delta {h.last_offset_delta}")
        if not crc_ok(buf, pos, h):
            raise CorruptMessageError(f"batch at offset {h.base_offset}: CRC mismatch")
        batches.append(_Batch(pos, h))
        pos += h.size
        expected = h.next_offset
    return batches


def _over_size(excess: int) -> Callable[[LogSegment], bool]:
    """Kafka's size rule: delete the oldest segment while the log without it is still
    at least retention.bytes big (``excess`` = size - retention.bytes)."""
    def expired(seg: LogSegment) -> bool:
        nonlocal excess
        if excess - seg.size >= 0:
            excess -= seg.size
            return True
        return False
    return expired


def _verified_batches_below(data: bytes, limit: int, first_offset: int) -> tuple[int, int]:
    """(bytes, next offset) of the leading whole batches in ``data`` that end at or below ``limit``.

    ``data`` was read from a segment at the batch starting at ``first_offset``. Each
    batch is checked (offsets continue, counts agree, CRC) before it may be served:
    CorruptMessageError names the first bad one. A batch cut short by the end of
    ``data`` is not an error (the read stopped at max_bytes); the caller checks the
    first batch fits in its segment.
    """
    taken, next_offset = 0, -1
    expected = first_offset
    for pos, h in iter_batches(data):
        problem = batch_problem(data, pos, h, expected)
        if problem is not None:
            raise CorruptMessageError(f"batch at offset {expected}: {problem}")
        if h.next_offset > limit:
            break
        taken, next_offset = pos + h.size, h.next_offset
        expected = h.next_offset
    return taken, next_offset
