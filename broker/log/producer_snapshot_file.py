"""A partition's producer-state snapshot on disk: ``<offset:020d>.snapshot``, Kafka's file name.

Without it, a broker that opens its logs rebuilds each partition's idempotent-producer state by
reading every batch header of the log from its start (broker/producer_state.py): at 10,000
partitions that replay was most of what the metadata publisher did before a restarted broker
could follow anything. Kafka writes a snapshot at each segment roll and at a clean shutdown, and
loads the newest one instead of replaying what it covers.

Here a snapshot is written at a clean close (ReplicaManager.snapshot_producer_states, before the
LogManager's syncfs and the clean-shutdown markers), and PartitionLog keeps one rule: every clean
close leaves a snapshot that stands at the log end, or none (a stale one is deleted before the
marker is written). So an open that follows a clean close trusts a snapshot at the log end; any
other file (an unclean open, another offset, a bad checksum) is deleted and the log is replayed,
which is always right. A partition that did not change since its snapshot keeps the file as it is:
an idle broker's restart rewrites nothing.

Format (text, like the checkpoint files): a version line, the CRC-32C of the body in hex, then the
body, which only producer_state.py reads and writes.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog
from crc32c import crc32c

from broker.log.checkpoint import write_atomically
from broker.log.segment import parse_offset_file_name

log = structlog.get_logger(__name__)

SNAPSHOT_SUFFIX = ".snapshot"
SNAPSHOT_VERSION = 0


def snapshot_file_name(offset: int) -> str:
    return f"{offset:020d}{SNAPSHOT_SUFFIX}"


def snapshot_offsets(names: list[str]) -> list[int]:
    """The offsets of the snapshot files among a folder's ``names``."""
    return [o for o in (parse_offset_file_name(name, SNAPSHOT_SUFFIX) for name in names) if o is not None]


def write_snapshot(directory: Path, offset: int, body: str, durable: bool = True) -> None:
    """Write the snapshot at ``offset``, atomically (a crash leaves the old file or the new one)."""
    text = f"{SNAPSHOT_VERSION}\n{crc32c(body.encode()):08x}\n{body}"
    write_atomically(directory / snapshot_file_name(offset), text, durable)


def read_snapshot(directory: Path, offset: int) -> str | None:
    """The body of the snapshot at ``offset``; None (with a warning) when the file is damaged."""
    path = directory / snapshot_file_name(offset)
    try:
        version, crc, body = path.read_text(encoding="utf-8").split("\n", 2)
        if int(version) == SNAPSHOT_VERSION and int(crc, 16) == crc32c(body.encode()):
            return body
    except (ValueError, UnicodeDecodeError):
        pass
    log.warning("producer_snapshot_ignored", file=str(path), why="damaged")
    return None


def delete_snapshot(directory: Path, offset: int) -> None:
    os.unlink(directory / snapshot_file_name(offset))
