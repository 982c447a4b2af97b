"""The leader-epoch cache of a partition log and its file ``leader-epoch-checkpoint``.

Each entry says "leader epoch E wrote its first batch at offset S". It is what lets
a follower find where its log diverges from a new leader's (KIP-101, Raft's log
matching): the end offset of epoch E is the start offset of the next epoch.

File format, Kafka's checkpoint layout::

    0                     version
    2                     number of entries
    3 0                   <epoch> <start_offset>
    5 120

The file is rewritten atomically (tmp + fsync + rename) on every change; changes
happen once per leader election, so this costs nothing on the append path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import structlog

from broker.log.checkpoint import fsync_directory, fsync_path, write_checkpoint

log = structlog.get_logger(__name__)

UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1
FILE_VERSION = 0


@dataclass(frozen=True, slots=True)
class EpochEntry:
    epoch: int
    start_offset: int


@dataclass(eq=False)
class LeaderEpochCache:
    path: Path
    # Invariant: epochs strictly increase and start offsets strictly increase, entry
    # after entry (Kafka's rule: "monotonic in both fields"). The file always holds
    # these entries (it is written before a change is visible to callers).
    _entries: list[EpochEntry] = field(default_factory=list, init=False)
    # False when the file was missing or garbled at load: the owning log may then
    # rebuild the entries from its batches' partition_leader_epoch fields.
    file_ok: bool = field(default=False, init=False)
    # A write not fsynced yet (durable=False): flush() makes it durable before the log's recovery point
    # passes the batches it describes (an unclean start re-learns the epochs of batches past that point).
    _unflushed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._entries, self.file_ok = _load(self.path)

    # ---- reading -------------------------------------------------------------

    @property
    def latest_epoch(self) -> int:
        return self._entries[-1].epoch if self._entries else UNDEFINED_EPOCH

    @property
    def entries(self) -> list[EpochEntry]:
        return list(self._entries)

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(epoch, end offset) answering OffsetsForLeaderEpoch for ``requested_epoch``.

        - the latest epoch: (latest, log_end_offset): it is still being written;
        - an epoch we know or one between two we know: (largest epoch <= requested,
          start offset of the first epoch > requested);
        - unknown: -1, no epochs, an epoch above the latest, or one below the first
          entry: (-1, -1). The last case follows the raftka brief and Kafka's
          documented upgrade rule ("the follower falls back"); Kafka's current code
          answers (requested, first start offset) there instead.
        """
        entries = self._entries
        if requested_epoch == UNDEFINED_EPOCH or not entries:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if requested_epoch == entries[-1].epoch:
            return requested_epoch, log_end_offset
        if requested_epoch > entries[-1].epoch or requested_epoch < entries[0].epoch:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        floor = [e for e in entries if e.epoch <= requested_epoch][-1]
        higher = next(e for e in entries if e.epoch > requested_epoch)
        return floor.epoch, higher.start_offset

    # ---- changing ------------------------------------------------------------

    def assign(self, epoch: int, start_offset: int, durable: bool = True) -> bool:
        """Record that ``epoch`` starts at ``start_offset``; True if the cache changed (``durable=False``:
        the file is not fsynced; the caller syncs before the epoch is used).

        Kafka's rule: the same epoch again is a no-op (unless it now starts earlier);
        a new entry first drops every entry it contradicts (same or higher epoch, or a
        start offset at or after its own), so the cache stays monotonic. That happens
        when a replica saw an epoch start without data (it became leader and wrote
        nothing) and then copies a leader's batches of a lower epoch at that offset.
        """
        if epoch < 0 or start_offset < 0:
            raise ValueError(f"leader epoch {epoch} at offset {start_offset}: both must be >= 0")
        latest = self._entries[-1] if self._entries else None
        if latest is not None and epoch == latest.epoch and start_offset >= latest.start_offset:
            return False
        removed: list[EpochEntry] = []
        while self._entries and (self._entries[-1].epoch >= epoch
                                 or self._entries[-1].start_offset >= start_offset):
            removed.append(self._entries.pop())
        self._entries.append(EpochEntry(epoch, start_offset))
        self._write(durable)
        # Replacing an epoch that started at the same offset (no data written in it)
        # is routine; anything else means the log held batches the new entry denies.
        if len(removed) > 1 or (removed and removed[0].start_offset != start_offset):
            log.warning("leader_epoch_cache_rewound", file=str(self.path), epoch=epoch,
                        start_offset=start_offset, removed=[(e.epoch, e.start_offset) for e in removed])
        if durable:   # not durable: one of many at once (a failover's new leaderships, told by became_leader(s);
            # a follower's copies of its leaders' epochs, thousands of partitions after a failover)
            log.info("leader_epoch_assigned", file=str(self.path), epoch=epoch, start_offset=start_offset)
        return True

    def truncate_from_end(self, end_offset: int, durable: bool = True) -> None:
        """Drop the entries of epochs that start at or after ``end_offset`` (log truncated there)."""
        if end_offset < 0 or not self._entries or self._entries[-1].start_offset < end_offset:
            return
        while self._entries and self._entries[-1].start_offset >= end_offset:
            self._entries.pop()
        self._write(durable)

    def truncate_from_start(self, start_offset: int, durable: bool = True) -> None:
        """Forget epochs wholly below ``start_offset`` (old segments deleted).

        The last epoch that starts at or below ``start_offset`` is kept, moved up to
        start there: the batches from ``start_offset`` on still belong to it.
        """
        below = [e for e in self._entries if e.start_offset <= start_offset]
        if not below or (len(below) == 1 and below[0].start_offset == start_offset):
            return
        kept = [e for e in self._entries if e.start_offset > start_offset]
        self._entries = [EpochEntry(below[-1].epoch, start_offset)] + kept
        self._write(durable)

    def replace_all(self, entries: list[EpochEntry], durable: bool = True) -> None:
        """Set every entry at once (a rebuild from the log, or a clear)."""
        _check_monotonic(entries)
        self._entries = list(entries)
        self._write(durable)
        self.file_ok = True

    def _write(self, durable: bool = True) -> None:
        lines = [str(FILE_VERSION), str(len(self._entries))]
        lines += [f"{e.epoch} {e.start_offset}" for e in self._entries]
        write_checkpoint(self.path, "\n".join(lines) + "\n", durable)
        self._unflushed = not durable

    def flush(self) -> None:
        """fsync the file and its folder if a write since the last flush was not."""
        if self._unflushed:
            fsync_path(self.path)
            fsync_directory(self.path.parent)
            self._unflushed = False


def _load(path: Path) -> tuple[list[EpochEntry], bool]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], False
    try:
        entries = _parse(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        log.warning("leader_epoch_file_garbled", file=str(path), error=str(e))
        return [], False
    return entries, True


def _parse(text: str) -> list[EpochEntry]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2 or int(lines[0]) != FILE_VERSION:
        raise ValueError("missing or unknown version line")
    count = int(lines[1])
    if count != len(lines) - 2:
        raise ValueError(f"declares {count} entries but has {len(lines) - 2}")
    entries = []
    for line in lines[2:]:
        epoch, start = line.split(" ")
        entries.append(EpochEntry(int(epoch), int(start)))
    _check_monotonic(entries)
    return entries


def _check_monotonic(entries: list[EpochEntry]) -> None:
    for prev, cur in zip(entries, entries[1:]):
        if cur.epoch <= prev.epoch or cur.start_offset <= prev.start_offset:
            raise ValueError(f"entries not increasing: {prev} then {cur}")
    if entries and (entries[0].epoch < 0 or entries[0].start_offset < 0):
        raise ValueError(f"negative entry {entries[0]}")
