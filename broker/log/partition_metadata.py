"""Which topic a partition folder belongs to: the ``partition.metadata`` file (Kafka's KIP-516).

A folder is named ``<topic>-<partition>``, and a name outlives its topic: delete a
topic and create another under the same name, and a replica that was down (or had
not yet applied the deletion) still holds the old topic's folder. Without an id on
disk it would adopt the old log: records of the deleted topic below the new HW, an
ISR member with the wrong bytes. The topic id, written when the folder is created
and checked whenever the broker takes the partition, tells the two apart: a folder
whose id is not the metadata's is a stray and is deleted before the partition is
created anew.

Format, as Kafka's::

    version: 0
    topic_id: <id>
"""

from __future__ import annotations

from pathlib import Path

from broker.log.checkpoint import write_atomically

PARTITION_METADATA_FILE = "partition.metadata"
VERSION = 0


def write_topic_id(directory: Path, topic_id: str, durable: bool = True) -> None:
    write_atomically(directory / PARTITION_METADATA_FILE, f"version: {VERSION}\ntopic_id: {topic_id}\n", durable)


def read_topic_id(directory: Path) -> str | None:
    """The folder's topic id; None when it has no (readable) partition.metadata: a folder of a
    raftka older than topic ids, or one whose creation a crash cut short before the file."""
    try:
        text = (directory / PARTITION_METADATA_FILE).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    if fields.get("version") != str(VERSION) or not fields.get("topic_id"):
        return None
    return fields["topic_id"]
