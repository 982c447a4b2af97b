"""meta.properties: whose data dir this is, and whether its Raft node may vote.

Kafka's file (``kafka-storage format`` writes it once; a broker never does): ``version``,
``cluster.id``, the node's id (``broker.id`` here) and ``directory.id``, a random id that
tells this formatting of the data dir from any earlier one. raftka adds ``quorum.state``:

- ``voter``: the data dir was formatted for a brand-new cluster (``--initial-voter``), or it
  has caught up with the quorum since it rejoined. Its Raft node votes and may lead.
- ``rejoining``: formatted to join or rejoin an existing cluster, typically after its disk was
  lost. Its Raft log is empty, and an empty log that votes can elect a lagging peer and erase
  committed metadata, so its node neither votes nor stands for election until it has caught
  up with a leader (broker/metadata/quorum.py); then the broker rewrites this file to ``voter``.

A file written before ``kbroker format`` existed (version 0: no directory.id, no quorum.state)
belongs to a node that was a voter all along, and reads as one.

raftka also adds ``record.crc=crc32c``: the batches in this data dir's logs carry Kafka's
CRC-32C. raftka before that wrote zlib's CRC-32, which every check now reads as a corrupt
batch (recovery would cut each log at its first batch), so a file without the key on a data dir
that holds partition logs is refused at start (manager.check_meta); one without logs just gets
the key (LogManager.open), as it has no batch to misread. Every file written now has the key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from broker.log.checkpoint import write_atomically

META_FILE = "meta.properties"
META_VERSION = 1
VOTER = "voter"
REJOINING = "rejoining"
QUORUM_STATES = (VOTER, REJOINING)
RECORD_CRC_KEY = "record.crc"
RECORD_CRC = "crc32c"      # Kafka's batch checksum (client/record_batch.py)


class InconsistentDataDirError(Exception):
    """The data dir belongs to another cluster or another broker, or its meta.properties is garbled."""


class OldRecordFormatError(InconsistentDataDirError):
    """The data dir's logs hold batches of an older raftka (zlib's CRC-32) that this one cannot read."""


class UnformattedDataDirError(Exception):
    """The data dir has no meta.properties: `kbroker format` never ran on it, or its disk was lost."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        super().__init__(f"data dir {data_dir} is not formatted")


@dataclass(frozen=True)
class MetaProperties:
    cluster_id: str
    broker_id: int
    directory_id: str | None      # None: written before `kbroker format` existed
    quorum_state: str = VOTER

    @property
    def rejoining(self) -> bool:
        return self.quorum_state == REJOINING

    def text(self) -> str:
        lines = [f"version={META_VERSION}", f"cluster.id={self.cluster_id}", f"broker.id={self.broker_id}"]
        if self.directory_id is not None:
            lines.append(f"directory.id={self.directory_id}")
        lines.append(f"quorum.state={self.quorum_state}")
        lines.append(f"{RECORD_CRC_KEY}={RECORD_CRC}")   # this raftka writes no other batches
        return "\n".join(lines) + "\n"


def read_meta_properties(data_dir: Path) -> MetaProperties:
    """The data dir's meta.properties; UnformattedDataDirError when it has none (or is missing)."""
    return _read(data_dir)[0]


def read_record_crc(data_dir: Path) -> str | None:
    """The batch checksum meta.properties names (``crc32c``); None if it names none: written by a
    raftka whose batches carried zlib's CRC-32. UnformattedDataDirError when there is no file."""
    return _read(data_dir)[1]


def _read(data_dir: Path) -> tuple[MetaProperties, str | None]:
    path = Path(data_dir) / META_FILE
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        raise UnformattedDataDirError(Path(data_dir)) from None
    except OSError as e:
        raise InconsistentDataDirError(f"cannot read {path}: {e}") from e
    props = _parse_properties(text)
    broker_id, state = props.get("broker.id", ""), props.get("quorum.state", VOTER)
    if "cluster.id" not in props or not broker_id.lstrip("-").isdigit() or state not in QUORUM_STATES:
        raise InconsistentDataDirError(f"{path} is garbled: it needs cluster.id, a numeric broker.id and "
                                       f"quorum.state {' or '.join(QUORUM_STATES)}")
    record_crc = props.get(RECORD_CRC_KEY)
    if record_crc not in (None, RECORD_CRC):
        raise InconsistentDataDirError(f"{path} says {RECORD_CRC_KEY}={record_crc}: this raftka reads only "
                                       f"{RECORD_CRC_KEY}={RECORD_CRC} batches")
    return MetaProperties(props["cluster.id"], int(broker_id), props.get("directory.id"), state), record_crc


def write_meta_properties(data_dir: Path, meta: MetaProperties) -> None:
    """Write (or replace) meta.properties atomically: temp file, fsync, rename, fsync of the dir."""
    write_atomically(Path(data_dir) / META_FILE, meta.text())


def mark_voter(data_dir: Path) -> MetaProperties:
    """A rejoining data dir has caught up: from now on (this run and every restart) its node votes."""
    meta = read_meta_properties(data_dir)
    if meta.rejoining:
        meta = replace(meta, quorum_state=VOTER)
        write_meta_properties(data_dir, meta)
    return meta


def _parse_properties(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        props[key.strip()] = value.strip()
    return props
