"""kbroker format: a data dir is formatted once, before its broker's first start (Kafka's kafka-storage format).

Why a step at all: to a broker, an empty data dir looks the same whether the cluster is brand
new or this broker's disk was lost. Treated as first use, a lost disk comes back as a voter
with an empty Raft log, votes for a lagging peer, and committed metadata is gone. So the
broker never formats by itself (it refuses an unformatted data dir), and whoever formats says
which case it is, as Kafka's KIP-853 does with --initial-controllers / --no-initial-controllers:

- ``initial_voter=True`` (``--initial-voter``): every broker of a brand-new cluster. Its node
  votes from the first start (meta.properties ``quorum.state=voter``).
- ``initial_voter=False``: a broker joining or rejoining an existing cluster (a lost disk, a
  replaced machine). ``quorum.state=rejoining``: its node neither votes nor stands for election
  until it has caught up with a leader; then the broker marks it a voter (metadata/quorum.py).

A broker left out of ``controller_quorum_voters`` (an observer) is formatted the same way, but it
never votes whatever its state says, and its state stays as formatted (only a voter marks itself one).

``format_missing`` is what ``make run`` runs first (``kbroker format --all-missing``): no data
dir of the cluster exists yet -> a brand-new cluster, every broker an initial voter; some exist
-> only the missing ones are formatted, as rejoining.

Each data dir also gets a fresh ``directory.id``, which tells this formatting from any other, and
``record.crc=crc32c``: its batches will carry Kafka's CRC-32C (a data dir of an older raftka, whose
batches carry zlib's CRC-32, is refused at start: broker/log/meta_properties.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from broker.config import ClusterConfig
from broker.log.manager import LOCK_FILE, DataDirLockedError, DataDirUnusableError, lock_data_dir
from broker.log.meta_properties import META_FILE, REJOINING, VOTER, MetaProperties, write_meta_properties

# Beside the first broker's data dir (data/ in the local cluster): held while --all-missing decides.
FORMAT_LOCK_FILE = ".raftka-format.lock"


class FormatError(Exception):
    """The data dir cannot be formatted; the message is the one line `kbroker format` prints."""


@dataclass(frozen=True)
class Formatted:
    broker_id: int
    data_dir: Path
    meta: MetaProperties


def rejoin_hint(config_path: str | Path, broker_id: int) -> str:
    """What to run on an unformatted data dir (the second half of kbroker's one-line refusal)."""
    return (f"run 'kbroker format --config {config_path} --id {broker_id}' to (re)join an existing "
            f"cluster, or add --initial-voter on every broker of a brand-new cluster")


def format_data_dir(cluster: ClusterConfig, broker_id: int, initial_voter: bool) -> Path:
    """Write the meta.properties of ``broker_id``'s data dir (created if missing); returns the data dir.

    FormatError if the data dir is already formatted, holds anything (data without a
    meta.properties is not this tool's to claim), is locked by a running broker, or cannot be
    written; or if a one-broker cluster is to be rejoined (there is no peer to catch up from).
    """
    return _format(cluster, broker_id, initial_voter).data_dir


def format_missing(cluster: ClusterConfig) -> list[Formatted]:
    """Format every data dir of ``cluster`` that has no meta.properties (``make run``, first thing).

    None of the data dirs exists: a brand-new cluster, all initial voters. Otherwise the missing
    ones are formatted as rejoining: their peers' data holds the cluster's metadata.
    """
    with _cluster_format_lock(cluster):
        brand_new = not any(os.path.lexists(b.data_dir) for b in cluster.brokers)
        return [_format(cluster, b.broker_id, initial_voter=brand_new) for b in cluster.brokers
                if not (b.data_dir / META_FILE).exists()]


@contextlib.contextmanager
def _cluster_format_lock(cluster: ClusterConfig) -> Iterator[None]:
    """Serialises --all-missing runs of one cluster file: the Procfile starts every broker with one at
    the same moment, and without the lock the first to format its own dir would make the others
    judge the cluster not brand-new and format theirs as rejoining (a cluster with no voters)."""
    lock_path = cluster.brokers[0].data_dir.parent / FORMAT_LOCK_FILE
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise FormatError(f"cannot lock {lock_path}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _format(cluster: ClusterConfig, broker_id: int, initial_voter: bool) -> Formatted:
    data_dir = cluster.broker(broker_id).data_dir
    if not initial_voter and len(cluster.brokers) == 1:
        raise FormatError(f"cannot format data dir {data_dir} as rejoining: a one-broker cluster has no "
                          f"peer to catch up from (use --initial-voter)")
    if not initial_voter and cluster.quorum_voters == (broker_id,):
        # Observers hold the log too, but they never lead, so nothing would ever let it catch up and vote.
        raise FormatError(f"cannot format data dir {data_dir} as rejoining: broker {broker_id} is the only voter "
                          f"(controller_quorum_voters), so no leader is left to catch up from")
    _check_empty(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FormatError(f"data dir {data_dir} is a file, not a directory") from None
    except OSError as e:
        raise FormatError(f"cannot create data dir {data_dir}: {e.strerror}") from None
    meta = MetaProperties(cluster.cluster_id, broker_id, uuid.uuid4().hex, VOTER if initial_voter else REJOINING)
    try:
        lock_fd = lock_data_dir(data_dir)   # a broker still running on a wiped data dir holds it
    except (DataDirLockedError, DataDirUnusableError) as e:
        raise FormatError(str(e)) from None
    try:
        _check_empty(data_dir)              # again, under the lock
        write_meta_properties(data_dir, meta)
    except OSError as e:
        raise FormatError(f"cannot write {data_dir / META_FILE}: {e.strerror or e}") from None
    finally:
        os.close(lock_fd)
    return Formatted(broker_id, data_dir, meta)


def _check_empty(data_dir: Path) -> None:
    """Refuse a formatted data dir, or one holding anything but the lock file (a lost disk's
    `rm -rf data/broker-N/*` leaves the hidden .lock behind)."""
    if not os.path.lexists(data_dir):
        return
    if not data_dir.is_dir():
        raise FormatError(f"data dir {data_dir} is a file, not a directory")
    if (data_dir / META_FILE).exists():
        raise FormatError(f"data dir {data_dir} is already formatted (see {data_dir / META_FILE})")
    try:
        leftovers = sorted(p.name for p in data_dir.iterdir() if p.name != LOCK_FILE)
    except OSError as e:
        raise FormatError(f"cannot read data dir {data_dir}: {e.strerror}") from None
    if leftovers:
        raise FormatError(f"data dir {data_dir} is not empty ({', '.join(leftovers[:3])}"
                          f"{', ...' if len(leftovers) > 3 else ''}) but has no {META_FILE}: "
                          f"format only an empty or missing data dir")
