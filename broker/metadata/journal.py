"""The metadata log as events: the committed batches this node applied, kept for readers.

    journal.append(MetadataEntry(offset=12, term=2, committed_ms=..., records=[...], applied=True))
    entries, next_offset = journal.read(from_offset=0, max_entries=500)
    journal.wait_beyond(next_offset - 1, timeout_s=1.0)   # a follower of the log waits for more

KRaft keeps its metadata as a log (`__cluster_metadata`) that kafka-metadata-shell reads. raftka's
Raft log is pysyncobj's; what it snapshots is the image, not the records. So each node keeps the
last MAX_ENTRIES batches it applied (from the journal replay at start, then as they commit), with
the Raft term of the node when it applied them and the wall time then. A reader asking for an
offset older than the oldest kept starts at the oldest (``first_offset`` says where that is).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class MetadataEntry:
    offset: int                        # the metadata offset (one per committed batch)
    term: int                          # this node's Raft term when it applied the batch
    committed_ms: int                  # this node's wall clock then
    records: list[dict] = field(default_factory=list)   # record_to_dict() of each record
    applied: bool = True               # False: refused as a whole (reason says why); the offset still moves
    reason: str = ""


class MetadataJournal:
    def __init__(self, max_entries: int = MAX_ENTRIES):
        self._entries: deque[MetadataEntry] = deque(maxlen=max_entries)
        self._changed = threading.Condition()

    def append(self, entry: MetadataEntry) -> None:
        with self._changed:
            if self._entries and entry.offset <= self._entries[-1].offset:
                self._entries.clear()          # a snapshot replaced the image: an older past starts again
            self._entries.append(entry)
            self._changed.notify_all()

    @property
    def first_offset(self) -> int:
        with self._changed:
            return self._entries[0].offset if self._entries else 0

    def read(self, from_offset: int, max_entries: int) -> tuple[list[MetadataEntry], int]:
        """Entries from ``from_offset`` on (or from the oldest kept), at most ``max_entries``, and the offset
        to read from next."""
        with self._changed:
            entries = [e for e in self._entries if e.offset >= from_offset][:max_entries]
            last = self._entries[-1].offset if self._entries else -1
        next_offset = entries[-1].offset + 1 if entries else max(from_offset, last + 1)
        return entries, next_offset

    def wait_beyond(self, offset: int, timeout_s: float) -> bool:
        """Wait until an entry past ``offset`` is there (True) or ``timeout_s`` passed (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: bool(self._entries) and self._entries[-1].offset > offset,
                                          timeout_s)
