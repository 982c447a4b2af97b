"""One segment of a partition log: ``<base_offset:020d>.log`` plus its offset index.

The file is a plain run of record batches, byte for byte as the leader stamped them.
The segment never decodes records: it reads 61-byte batch headers (offsets, sizes,
timestamps, CRC) and moves opaque bytes. The file is opened once; appends are
``os.pwrite`` at the current size and reads ``os.pread``, so no file position is
shared between threads.

A segment is not thread-safe by itself: its PartitionLog serialises every call.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import structlog

from broker.log.offset_index import OffsetIndex, index_file_name, pwrite_all
from client.errors import CorruptMessageError
from client.record_batch import HEADER_SIZE, BatchHeader, crc_ok, parse_header

RECENT_BATCHES = 8   # per segment: positions of the newest batches kept for reads at the log end

log = structlog.get_logger(__name__)

LOG_SUFFIX = ".log"
# Offsets inside a segment are stored as int32 deltas from its base offset.
MAX_RELATIVE_OFFSET = 2**31 - 1
# Recovery reads the file in chunks this big (a batch bigger than this is read whole).
RECOVERY_READ_BYTES = 4 * 1024 * 1024
NO_TIMESTAMP = -1


def log_file_name(base_offset: int) -> str:
    return f"{base_offset:020d}{LOG_SUFFIX}"


def parse_segment_file_name(name: str) -> int | None:
    """The base offset named by ``00000000000000000042.log``, else None."""
    return parse_offset_file_name(name, LOG_SUFFIX)


def parse_offset_file_name(name: str, suffix: str) -> int | None:
    """The offset named by ``<offset:020d><suffix>`` (Kafka's names for segments, snapshots), else None."""
    stem, dot, rest = name.partition(".")
    if dot and "." + rest == suffix and len(stem) == 20 and stem.isdigit():
        return int(stem)
    return None


@dataclass(eq=False)
class LogSegment:
    directory: Path
    base_offset: int
    index: OffsetIndex
    _fd: int
    # Invariant: bytes [0, _size) of the file are whole batches with contiguous
    # offsets starting at base_offset. Readers never look past _size, and an append
    # moves it only after its write completed, so no one sees half a batch.
    _size: int = 0
    # Invariant: next_offset of the last batch in [0, _size), or base_offset if empty.
    _next_offset: int = 0
    # Max of the batches' max_timestamp (time retention). None: not known yet; a
    # segment trusted at startup computes it with a header scan the first time asked.
    _largest_timestamp: int | None = NO_TIMESTAMP
    # max_timestamp of the first batch: segment.ms counts from it. None when empty.
    _rolling_timestamp: int | None = None
    # Bytes appended since the last index entry (Kafka's bytesSinceLastIndexEntry).
    _bytes_since_index_entry: int = 0
    _closed: bool = field(default=False)
    # (base_offset, position) of the newest batches appended, oldest first, at most RECENT_BATCHES: a caught-up
    # follower or consumer fetches at one of them, found here rather than by reading header after header from
    # the index entry (up to ~25 at index.interval.bytes 4096, 0.15 ms of an acks=all write's 1.4 here). A new
    # tuple per append, so a reader never sees one half changed; emptied by a truncation.
    _recent: tuple[tuple[int, int], ...] = ()
    # After recover(): (epoch, base offset) where the batches' leader epoch rises, for the log's epoch cache
    # (Kafka's LogSegment.recover assigns them): an epoch written without an fsync may have been lost.
    recovered_epoch_starts: list[tuple[int, int]] = field(default_factory=list)

    # ---- creating and opening ------------------------------------------------

    @classmethod
    def create(cls, directory: Path, base_offset: int) -> "LogSegment":
        """A new, empty segment (the active one after a roll)."""
        fd = os.open(directory / log_file_name(base_offset), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # A leftover file with this name can only hold offsets past the log end
            # (say, from before a truncation): it is stale.
            os.ftruncate(fd, 0)
            index = OffsetIndex.open(directory / index_file_name(base_offset), base_offset)
            index.replace_all([])
        except BaseException:
            os.close(fd)
            raise
        return cls(directory, base_offset, index, fd, _next_offset=base_offset)

    @classmethod
    def open(cls, directory: Path, base_offset: int, *, index_interval_bytes: int,
             recover: bool) -> tuple["LogSegment", int]:
        """Open an existing segment; returns it and the number of bytes recovery cut.

        ``recover``: the segment may hold a torn or corrupt tail (unclean shutdown),
        so every batch is checked, CRC included. Otherwise it is trusted: the index is
        loaded (rebuilt if insane) and only the headers after its last entry are read
        to find the end; should that scan disagree with the file, it is recovered anyway.
        """
        fd = os.open(directory / log_file_name(base_offset), os.O_RDWR)
        try:
            index = OffsetIndex.open(directory / index_file_name(base_offset), base_offset)
        except BaseException:
            os.close(fd)
            raise
        seg = cls(directory, base_offset, index, fd, _size=os.fstat(fd).st_size,
                  _next_offset=base_offset, _largest_timestamp=None)
        try:
            cut = seg.recover(index_interval_bytes) if recover else seg._load_trusted(index_interval_bytes)
        except BaseException:
            seg.close()
            raise
        return seg, cut

    def _load_trusted(self, index_interval_bytes: int) -> int:
        index_ok = self.index.load(self._size) and self._last_index_entry_is_a_batch()
        if index_ok:
            start_offset, start_pos = self.index.last_entry or (self.base_offset, 0)
        else:
            log.warning("offset_index_rebuilt", dir=str(self.directory), segment=self.path.name)
            start_offset, start_pos = self.base_offset, 0
        scan = self._scan(start_pos, start_offset, index_interval_bytes, verify_crc=False)
        if scan.end != self._size:
            log.warning("segment_inconsistent_after_clean_shutdown", dir=str(self.directory),
                        segment=self.path.name, problem=scan.problem, at_position=scan.end)
            return self.recover(index_interval_bytes)
        if not index_ok:
            self.index.replace_all(scan.index_entries)
            self._largest_timestamp = scan.largest_timestamp
        self._next_offset = scan.next_offset
        self._after_load()
        return 0

    def _last_index_entry_is_a_batch(self) -> bool:
        last = self.index.last_entry
        if last is None:
            return True
        offset, position = last
        try:
            return self._read_header(position).base_offset == offset
        except CorruptMessageError:
            return False

    def _after_load(self) -> None:
        """Derive what appends need from the loaded state."""
        last = self.index.last_entry
        self._bytes_since_index_entry = self._size - last[1] if last else 0
        if self._size == 0:
            self._rolling_timestamp, self._largest_timestamp = None, NO_TIMESTAMP
        else:
            self._rolling_timestamp = self._read_header(0).max_timestamp

    # ---- recovery ------------------------------------------------------------

    def recover(self, index_interval_bytes: int) -> int:
        """Check every batch from the start; cut the file at the first bad one.

        Bad: a truncated header or batch, a header that cannot be one, a CRC mismatch,
        or a base offset that does not continue the previous batch (base_offset lies
        outside the CRC, so that check is what catches a flipped byte there). The
        index is rebuilt along the way. Returns the bytes cut.
        """
        file_size = os.fstat(self._fd).st_size
        self._size = file_size
        scan = self._scan(0, self.base_offset, index_interval_bytes, verify_crc=True)
        cut = file_size - scan.end
        if cut:
            self._size = scan.end  # shrink what readers may see before the file shrinks
            os.ftruncate(self._fd, scan.end)
            log.warning("log_truncated_on_recovery", dir=str(self.directory), segment=self.path.name,
                        at_offset=scan.next_offset, at_position=scan.end, bytes_cut=cut,
                        problem=scan.problem)
        self.index.replace_all(scan.index_entries)
        self._next_offset = scan.next_offset
        self._largest_timestamp = scan.largest_timestamp
        self.recovered_epoch_starts = scan.epoch_starts
        self._after_load()
        return cut

    def _scan(self, start_pos: int, start_offset: int, index_interval_bytes: int,
              verify_crc: bool) -> "_ScanResult":
        """Walk the batches in [start_pos, size); stop at the end or the first bad batch."""
        result = _ScanResult(end=start_pos, next_offset=start_offset)
        reader = _ChunkReader(self._fd, self._size, whole_batches=verify_crc)
        since = 0
        pos, expected = start_pos, start_offset
        while pos < self._size:
            problem, header, buf, at = reader.batch_at(pos)
            if header is not None:
                problem = batch_problem(buf, at, header, expected, verify_crc)
            if problem is not None:
                result.problem = problem
                break
            if not result.index_entries or since >= index_interval_bytes:
                result.index_entries.append((header.base_offset, pos))
                since = 0
            since += header.size
            result.largest_timestamp = max(result.largest_timestamp, header.max_timestamp)
            if header.partition_leader_epoch > (result.epoch_starts[-1][0] if result.epoch_starts else -1):
                result.epoch_starts.append((header.partition_leader_epoch, header.base_offset))
            pos += header.size
            expected = header.next_offset
            result.end, result.next_offset = pos, expected
        return result

    # ---- appending -------------------------------------------------------------

    def append(self, data: bytes | bytearray | memoryview, headers: Sequence[BatchHeader],
               index_interval_bytes: int) -> None:
        """Write whole batches (``headers`` describe them, in order) at the end."""
        self.check_file_linked()
        position = self._size
        first_new_entry = len(self.index)
        since = self._bytes_since_index_entry
        appended = []
        try:
            pwrite_all(self._fd, data, position)
            p = position
            for h in headers:
                if len(self.index) == 0 or since >= index_interval_bytes:
                    self.index.append(h.base_offset, p)
                    since = 0
                appended.append((h.base_offset, p))
                since += h.size
                p += h.size
        except OSError:
            self._undo_append(position, first_new_entry)
            raise
        self._recent = (self._recent + tuple(appended))[-RECENT_BATCHES:]
        self._bytes_since_index_entry = since
        self._next_offset = headers[-1].next_offset
        newest = max(h.max_timestamp for h in headers)
        if self._largest_timestamp is not None:
            self._largest_timestamp = max(self._largest_timestamp, newest)
        if self._rolling_timestamp is None:
            self._rolling_timestamp = headers[0].max_timestamp
        self._size = position + len(data)  # publish last: the bytes are all there now

    def _undo_append(self, position: int, index_entries: int) -> None:
        """Best effort after a failed write: drop what a partial write left behind."""
        self._recent = ()
        try:
            if len(self.index) > index_entries:
                self.index.truncate_to(self.index.entries[index_entries][0])
            os.ftruncate(self._fd, position)
        except OSError:
            pass  # the bytes past _size are invisible and the next append overwrites them

    # ---- reading ---------------------------------------------------------------

    def translate_offset(self, offset: int) -> tuple[int, BatchHeader] | None:
        """Position and header of the first batch whose last_offset >= ``offset``.

        None when the segment ends before ``offset``. The index gives a position at
        or before the batch; the rest is a header-only forward scan.
        """
        if offset >= self._next_offset:
            return None
        position = self._recent_position(offset)
        if position is None:
            _, position = self.index.lookup(offset)
        while position < self._size:
            header = self._read_header(position)
            if header.last_offset >= offset:
                return position, header
            position += header.size
        return None

    def _recent_position(self, offset: int) -> int | None:
        """The position of the newest recently appended batch starting at or before ``offset`` (so no batch
        before it can hold ``offset``: offsets are contiguous), or None if ``offset`` is older than them."""
        recent = self._recent
        if not recent or offset < recent[0][0]:
            return None
        for base_offset, position in reversed(recent):
            if base_offset <= offset:
                return position
        return None

    def read(self, position: int, max_size: int) -> bytes:
        """Up to ``max_size`` bytes from ``position``, never past the published size."""
        n = min(max_size, self._size - position)
        if n <= 0:
            return b""
        self.check_file_linked()
        return os.pread(self._fd, n, position)

    def check_file_linked(self) -> None:
        """FileNotFoundError if the segment file was deleted while open.

        The open descriptor still reads and writes the unlinked inode, so nothing
        would fail: the broker would go on acknowledging writes that vanish at the
        next restart. One fstat per append or read (no path lookup) finds it first.
        """
        if os.fstat(self._fd).st_nlink == 0:
            raise FileNotFoundError(errno.ENOENT, "segment file was deleted while open", str(self.path))

    def iter_headers(self, start_position: int = 0) -> Iterator[tuple[int, BatchHeader]]:
        """(position, header) of each batch from ``start_position`` (header reads only)."""
        position = start_position
        while position < self._size:
            header = self._read_header(position)
            yield position, header
            position += header.size

    def find_by_timestamp(self, timestamp_ms: int) -> BatchHeader | None:
        """The first batch whose max_timestamp >= ``timestamp_ms``."""
        for _, header in self.iter_headers():
            if header.max_timestamp >= timestamp_ms:
                return header
        return None

    def _read_header(self, position: int) -> BatchHeader:
        return parse_header(os.pread(self._fd, HEADER_SIZE, position))

    # ---- state ---------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.directory / log_file_name(self.base_offset)

    @property
    def size(self) -> int:
        return self._size

    @property
    def next_offset(self) -> int:
        return self._next_offset

    @property
    def is_empty(self) -> bool:
        return self._size == 0

    @property
    def rolling_timestamp(self) -> int | None:
        return self._rolling_timestamp

    @property
    def largest_timestamp(self) -> int:
        """Newest batch timestamp in the segment (-1 if empty); time retention compares it."""
        if self._largest_timestamp is None:
            self._largest_timestamp = max((h.max_timestamp for _, h in self.iter_headers()),
                                          default=NO_TIMESTAMP)
        return self._largest_timestamp

    # ---- shrinking and lifecycle -----------------------------------------------------

    def truncate_to(self, offset: int) -> int:
        """Cut the batch holding ``offset`` and everything after it; returns the bytes cut."""
        found = self.translate_offset(offset)
        if found is None:
            return 0
        position, header = found
        cut = self._size - position
        self._size = position  # readers stop here before the bytes go away
        self._recent = ()
        self._next_offset = header.base_offset
        os.ftruncate(self._fd, position)
        self.index.truncate_to(header.base_offset)
        last = self.index.last_entry
        self._bytes_since_index_entry = position - last[1] if last else 0
        if position == 0:
            self._rolling_timestamp, self._largest_timestamp = None, NO_TIMESTAMP
        else:
            self._largest_timestamp = None  # the newest batch may be gone: recompute when asked
        return cut

    def flush(self) -> None:
        """fsync the log file and its index."""
        os.fsync(self._fd)
        self.index.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)
            self.index.close()

    def delete(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.index.delete()

    def __repr__(self) -> str:
        return (f"LogSegment({self.path.name}, offsets [{self.base_offset}, {self._next_offset}), "
                f"{self._size} bytes)")


@dataclass
class _ScanResult:
    end: int                      # position after the last good batch
    next_offset: int              # offset after the last good batch
    largest_timestamp: int = NO_TIMESTAMP
    index_entries: list[tuple[int, int]] = field(default_factory=list)
    problem: str | None = None    # why the scan stopped before the end, if it did
    epoch_starts: list[tuple[int, int]] = field(default_factory=list)   # (epoch, base offset) where each rises


@dataclass
class _ChunkReader:
    """Reads batches for a scan: whole chunks when CRCs are checked, headers otherwise."""

    fd: int
    size: int
    whole_batches: bool
    _buf: bytes = b""
    _buf_start: int = 0

    def batch_at(self, pos: int) -> tuple[str | None, BatchHeader | None, bytes, int]:
        """(problem, header, buffer, position of the batch in the buffer)."""
        if self.size - pos < HEADER_SIZE:
            return f"truncated header: {self.size - pos} of {HEADER_SIZE} bytes", None, b"", 0
        if not self.whole_batches:
            self._load(pos, HEADER_SIZE)
        elif pos + HEADER_SIZE > self._buf_start + len(self._buf):
            self._load(pos, RECOVERY_READ_BYTES)
        at = pos - self._buf_start
        try:
            header = parse_header(self._buf, at)
        except CorruptMessageError as e:
            return str(e), None, b"", 0
        if pos + header.size > self.size:
            return f"truncated batch: {self.size - pos} of {header.size} bytes", None, b"", 0
        if self.whole_batches and at + header.size > len(self._buf):
            self._load(pos, max(RECOVERY_READ_BYTES, header.size))
            at = 0
        return None, header, self._buf, at

    def _load(self, pos: int, n: int) -> None:
        self._buf = os.pread(self.fd, min(n, self.size - pos), pos)
        self._buf_start = pos


def batch_problem(buf: bytes | bytearray | memoryview, pos: int, header: BatchHeader, expected_offset: int,
                  verify_crc: bool = True) -> str | None:
    """Why the whole batch at ``pos`` in ``buf`` cannot be the one the log holds at
    ``expected_offset``, or None. base_offset lies outside the CRC: only the
    continuity check catches a flipped byte there."""
    if header.base_offset != expected_offset:
        return f"base offset {header.base_offset} where {expected_offset} was expected"
    if header.record_count < 1 or header.last_offset_delta != header.record_count - 1:
        return (f"record count {header.record_count} does not match "
                f"last offset delta {header.last_offset_delta}")
    if verify_crc and not crc_ok(buf, pos, header):
        return "CRC mismatch"
    return None

