"""The sparse offset index of one segment: ``<base_offset:020d>.index``.

It maps some batches' base offsets to their byte position in the segment file, so a
read can jump near its batch instead of scanning the segment from the start. One
entry is added for a segment's first batch and then whenever at least
``index.interval.bytes`` were appended since the previous entry (Kafka's rule), so the
index stays small: about one entry per ``index.interval.bytes`` of log.

File format: 8-byte entries, big-endian ``(relative_offset int32, position int32)``,
where relative_offset = offset - base_offset. The file grows by one entry at a time
as the segment grows. The index is only a hint: the segment can always rebuild it
from a header scan, so it is never fsynced on its own except when the segment is.

The index holds no open file: its entries live in memory, and the file is opened
for each change (one entry per ``index.interval.bytes`` appended) and closed again.
A broker hosts thousands of segments, and the per-process limit on open files
(often 20,000 or less) is better spent on the segment files themselves.
"""

from __future__ import annotations

import bisect
import errno
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

ENTRY = struct.Struct(">ii")
ENTRY_SIZE = ENTRY.size  # 8
INDEX_SUFFIX = ".index"


def index_file_name(base_offset: int) -> str:
    return f"{base_offset:020d}{INDEX_SUFFIX}"


@dataclass(eq=False)
class OffsetIndex:
    path: Path
    base_offset: int
    _closed: bool = False
    # Invariant: both lists have one item per entry in the file, in file order;
    # offsets and positions are strictly increasing; the first entry, when there is
    # one, is (base_offset, 0). Offsets are absolute here, relative in the file.
    _offsets: list[int] = field(default_factory=list)
    _positions: list[int] = field(default_factory=list)

    @classmethod
    def open(cls, path: Path, base_offset: int) -> "OffsetIndex":
        """Open (or create) the index file; call ``load`` to read its entries."""
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
        return cls(path, base_offset)

    def _file(self) -> int:
        """The index file, opened for one change (the caller closes it)."""
        if self._closed:
            raise OSError(errno.EBADF, f"index {self.path} is closed")
        return os.open(self.path, os.O_RDWR)

    # ---- loading -------------------------------------------------------------

    def load(self, segment_size: int) -> bool:
        """Read the entries from the file; False (and an empty index) if they are not sane.

        Sane: whole entries only, the first one is (base_offset, 0), offsets and
        positions strictly increase, and every position lies inside the segment. The
        caller still checks that the last entry points at a batch header, which this
        module cannot read.
        """
        fd = self._file()
        try:
            raw = _read_all(fd)
        finally:
            os.close(fd)
        self._offsets, self._positions = [], []
        if len(raw) % ENTRY_SIZE != 0:
            return False
        offsets, positions = [], []
        for rel, pos in ENTRY.iter_unpack(raw):
            if offsets and (rel + self.base_offset <= offsets[-1] or pos <= positions[-1]):
                return False
            if rel < 0 or pos < 0 or pos >= segment_size:
                return False
            offsets.append(self.base_offset + rel)
            positions.append(pos)
        if offsets and (offsets[0] != self.base_offset or positions[0] != 0):
            return False
        if segment_size > 0 and not offsets:
            return False
        self._offsets, self._positions = offsets, positions
        return True

    def replace_all(self, entries: list[tuple[int, int]]) -> None:
        """Rewrite the whole file with ``entries`` (after a rebuild from the log)."""
        data = b"".join(ENTRY.pack(off - self.base_offset, pos) for off, pos in entries)
        fd = self._file()
        try:
            os.ftruncate(fd, 0)
            pwrite_all(fd, data, 0)
        finally:
            os.close(fd)
        self._offsets = [off for off, _ in entries]
        self._positions = [pos for _, pos in entries]

    # ---- growing and shrinking -------------------------------------------------

    def append(self, offset: int, position: int) -> None:
        if self._offsets and (offset <= self._offsets[-1] or position <= self._positions[-1]):
            raise ValueError(f"index entry ({offset}, {position}) is not after the last entry "
                             f"({self._offsets[-1]}, {self._positions[-1]})")
        # Written at its slot (not appended), so a failed, partial write is simply
        # overwritten by the next entry; memory changes only once the file has it.
        fd = self._file()
        try:
            pwrite_all(fd, ENTRY.pack(offset - self.base_offset, position), len(self._offsets) * ENTRY_SIZE)
        finally:
            os.close(fd)
        self._offsets.append(offset)
        self._positions.append(position)

    def truncate_to(self, offset: int) -> None:
        """Drop every entry for an offset >= ``offset``."""
        keep = bisect.bisect_left(self._offsets, offset)
        if keep == len(self._offsets):
            return
        fd = self._file()
        try:
            os.ftruncate(fd, keep * ENTRY_SIZE)
        finally:
            os.close(fd)
        del self._offsets[keep:]
        del self._positions[keep:]

    # ---- lookups -----------------------------------------------------------------

    def lookup(self, offset: int) -> tuple[int, int]:
        """(offset, position) of the last entry with offset <= ``offset``, else (base_offset, 0)."""
        i = bisect.bisect_right(self._offsets, offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self._offsets[i], self._positions[i]

    @property
    def entries(self) -> list[tuple[int, int]]:
        return list(zip(self._offsets, self._positions))

    @property
    def last_entry(self) -> tuple[int, int] | None:
        if not self._offsets:
            return None
        return self._offsets[-1], self._positions[-1]

    def __len__(self) -> int:
        return len(self._offsets)

    # ---- file lifecycle ------------------------------------------------------------

    def flush(self) -> None:
        fd = self._file()
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._closed = True

    def delete(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
    """os.pwrite until every byte is written (a regular file may take fewer at once)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, position)
        view = view[n:]
        position += n
