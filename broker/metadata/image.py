"""The metadata image: brokers, topics, partition assignments, leaders, epochs, ISR, producer ids.

Plain immutable data and pure functions. ``apply_batch(image, records)`` returns
a new image and reads nothing but its arguments (no clock, no I/O, no "am I the
Raft leader"), so every replica of the metadata log computes the same image.
A batch is all-or-nothing: when one record's precondition no longer holds (a
compare-and-set on an epoch lost a race) the image stays as it was.
``local_changes`` is the pure "what changed for me" diff that a broker acts on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from broker.metadata.records import (AllocateProducerIds, ChangePartition, CreatePartitions, CreateTopic, DeleteTopic,
                                     FenceBroker, MetadataRecord, RegisterBroker, UnfenceBroker)

NO_LEADER = -1
SNAPSHOT_VERSION = 1


@dataclass(frozen=True)
class BrokerRegistration:
    broker_id: int
    host: str
    port: int
    incarnation_id: str = ""
    # The metadata offset of the registration: a restarted process gets a new one,
    # so a fence or unfence judged for an earlier incarnation cannot touch it.
    broker_epoch: int = 0
    fenced: bool = True


@dataclass(frozen=True)
class PartitionRegistration:
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    # Invariant: leader_epoch grows by one at every leader change; partition_epoch
    # at every change of this registration (leader or ISR).
    leader_epoch: int = 0
    partition_epoch: int = 0


@dataclass(frozen=True)
class TopicImage:
    name: str
    partitions: tuple[PartitionRegistration, ...]
    configs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    topic_id: str = ""


@dataclass(frozen=True)
class MetadataImage:
    cluster_id: str
    brokers: Mapping[int, BrokerRegistration] = field(default_factory=lambda: MappingProxyType({}))
    topics: Mapping[str, TopicImage] = field(default_factory=lambda: MappingProxyType({}))
    next_producer_id: int = 0
    # How many commands (batches) were applied: the metadata offset. Equal offsets, equal images.
    offset: int = 0

    def partition(self, topic: str, partition: int) -> PartitionRegistration | None:
        t = self.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return None
        return t.partitions[partition]

    def live_broker_ids(self) -> list[int]:
        return sorted(b.broker_id for b in self.brokers.values() if not b.fenced)

    def is_live(self, broker_id: int) -> bool:
        b = self.brokers.get(broker_id)
        return b is not None and not b.fenced


class StaleRecordError(Exception):
    """A record's precondition does not hold on this image: its batch changes nothing."""


@dataclass(frozen=True)
class BatchOutcome:
    applied: bool
    offset: int              # the metadata offset the batch was applied at
    reason: str = ""         # why not, when not applied
    producer_id_start: int = -1


def apply_batch(image: MetadataImage, records: Sequence[MetadataRecord]) -> tuple[MetadataImage, BatchOutcome]:
    """Apply every record or none; the offset moves by one either way (it counts log entries)."""
    offset = image.offset
    new = image
    producer_id_start = -1
    changes = _PartitionChanges()
    try:
        for record in records:
            if isinstance(record, ChangePartition):
                changes.apply(new, record)
                continue
            new = changes.applied_to(new)   # before a record that may read them
            if isinstance(record, AllocateProducerIds):
                producer_id_start = new.next_producer_id
            new = apply(new, record, offset)
        new = changes.applied_to(new)
    except StaleRecordError as e:
        return replace(image, offset=offset + 1), BatchOutcome(False, offset, str(e))
    return replace(new, offset=offset + 1), BatchOutcome(True, offset, producer_id_start=producer_id_start)


def apply(image: MetadataImage, record: MetadataRecord, offset: int | None = None) -> MetadataImage:
    """The image after ``record``, or StaleRecordError; ``offset`` is the batch's metadata offset."""
    offset = image.offset if offset is None else offset
    match record:
        case RegisterBroker(broker_id, host, port, incarnation_id):
            old = image.brokers.get(broker_id)
            if old is not None and old.incarnation_id == incarnation_id:
                raise StaleRecordError(f"broker {broker_id} incarnation {incarnation_id} is already registered")
            reg = BrokerRegistration(broker_id, host, port, incarnation_id, broker_epoch=offset, fenced=True)
            return replace(image, brokers=_with(image.brokers, broker_id, reg))
        case FenceBroker(broker_id, broker_epoch) | UnfenceBroker(broker_id, broker_epoch):
            fence = isinstance(record, FenceBroker)
            old = image.brokers.get(broker_id)
            if old is None or old.broker_epoch != broker_epoch:
                raise StaleRecordError(f"broker {broker_id} is not registered at epoch {broker_epoch}")
            if old.fenced == fence:
                raise StaleRecordError(f"broker {broker_id} is already {'fenced' if fence else 'unfenced'}")
            return replace(image, brokers=_with(image.brokers, broker_id, replace(old, fenced=fence)))
        case CreateTopic(name=name):
            if name in image.topics:
                raise StaleRecordError(f"topic {name} already exists")
            return replace(image, topics=_with(image.topics, name, _new_topic(image, record)))
        case DeleteTopic(name, topic_id):
            topic = image.topics.get(name)
            if topic is None or (topic_id and topic.topic_id != topic_id):
                raise StaleRecordError(f"topic {name} ({topic_id or 'any id'}) does not exist")
            topics = dict(image.topics)
            del topics[name]
            return replace(image, topics=MappingProxyType(topics))
        case ChangePartition():
            return _change_partition(image, record)
        case CreatePartitions():
            return _create_partitions(image, record)
        case AllocateProducerIds(broker_id, count):
            if count < 1:
                raise StaleRecordError(f"cannot allocate {count} producer ids")
            return replace(image, next_producer_id=image.next_producer_id + count)
        case _:
            raise TypeError(f"unknown metadata record {record!r}")


def _new_partition(image: MetadataImage, replicas: Sequence[int]) -> PartitionRegistration:
    """Initial ISR: the live replicas; leader: the first of them (Kafka's topic and partition creation)."""
    isr = tuple(r for r in replicas if image.is_live(r))
    return PartitionRegistration(replicas=tuple(replicas), isr=isr, leader=isr[0] if isr else NO_LEADER)


def _new_topic(image: MetadataImage, record: CreateTopic) -> TopicImage:
    parts = tuple(_new_partition(image, replicas) for replicas in record.assignments)
    return TopicImage(record.name, parts, MappingProxyType(dict(record.configs)), record.topic_id)


def _create_partitions(image: MetadataImage, c: CreatePartitions) -> MetadataImage:
    topic = image.topics.get(c.topic)
    if topic is None or topic.topic_id != c.topic_id:
        raise StaleRecordError(f"topic {c.topic} ({c.topic_id}) does not exist")
    if len(topic.partitions) != c.start_partition:
        raise StaleRecordError(f"topic {c.topic} has {len(topic.partitions)} partitions, not {c.start_partition}")
    if not c.assignments:
        raise StaleRecordError(f"no partitions to add to topic {c.topic}")
    new = tuple(_new_partition(image, replicas) for replicas in c.assignments)
    for p, reg in enumerate(new, start=c.start_partition):
        # A partition born with an empty ISR could never elect a leader (only an unclean election):
        # its replicas were fenced after the controller chose them, so the batch changes nothing.
        if not reg.isr:
            raise StaleRecordError(f"partition {c.topic}-{p} has no live replica among {list(reg.replicas)}")
    return replace(image, topics=_with(image.topics, c.topic, replace(topic, partitions=topic.partitions + new)))


def _change_partition(image: MetadataImage, c: ChangePartition) -> MetadataImage:
    changes = _PartitionChanges()
    changes.apply(image, c)
    return changes.applied_to(image)


class _PartitionChanges:
    """ChangePartition records applied to copies made once per batch (of each touched topic's partitions, and
    of the topics map), where copying them once per record made a batch of 1,000 ISR changes cost 1,000
    copies of both: the restart of a broker at 10,000 partitions replayed such batches for seconds."""

    def __init__(self) -> None:
        self._parts: dict[str, list[PartitionRegistration]] = {}   # topic -> its partitions, changed in place

    def apply(self, image: MetadataImage, c: ChangePartition) -> None:
        """Check ``c`` against the image with the changes so far (StaleRecordError) and make it."""
        topic = image.topics.get(c.topic)
        if topic is None or topic.topic_id != c.topic_id or not 0 <= c.partition < len(topic.partitions):
            raise StaleRecordError(f"partition {c.topic}-{c.partition} ({c.topic_id}) does not exist")
        parts = self._parts.get(c.topic)
        if parts is None:
            parts = self._parts[c.topic] = list(topic.partitions)
        cur = parts[c.partition]
        if cur.partition_epoch != c.partition_epoch:
            raise StaleRecordError(f"partition {c.topic}-{c.partition} is at partition epoch {cur.partition_epoch}, "
                                   f"not {c.partition_epoch}")
        if not set(c.isr) <= set(cur.replicas) or (c.leader != NO_LEADER and c.leader not in c.isr):
            raise StaleRecordError(f"leader {c.leader} / ISR {list(c.isr)} do not fit replicas {list(cur.replicas)}")
        parts[c.partition] = PartitionRegistration(
            cur.replicas, tuple(c.isr), c.leader, cur.leader_epoch + (1 if c.leader != cur.leader else 0),
            cur.partition_epoch + 1)

    def applied_to(self, image: MetadataImage) -> MetadataImage:
        """``image`` with the changes made so far (which are then forgotten)."""
        if not self._parts:
            return image
        topics = dict(image.topics)
        for name, parts in self._parts.items():
            topics[name] = replace(topics[name], partitions=tuple(parts))
        self._parts = {}
        return replace(image, topics=MappingProxyType(topics))


def _with(mapping: Mapping, key, value) -> Mapping:
    new = dict(mapping)
    new[key] = value
    return MappingProxyType(new)


# ---- snapshots: the image as builtins (pysyncobj's dump), and back ------------------


def image_to_dict(image: MetadataImage) -> dict[str, Any]:
    return {
        "version": SNAPSHOT_VERSION,
        "cluster_id": image.cluster_id,
        "offset": image.offset,
        "next_producer_id": image.next_producer_id,
        "brokers": [[b.broker_id, b.host, b.port, b.incarnation_id, b.broker_epoch, b.fenced]
                    for b in image.brokers.values()],
        "topics": [[t.name, t.topic_id, dict(t.configs),
                    [[list(p.replicas), list(p.isr), p.leader, p.leader_epoch, p.partition_epoch]
                     for p in t.partitions]]
                   for t in image.topics.values()],
    }


def image_from_dict(data: dict[str, Any]) -> MetadataImage:
    if data.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"metadata snapshot version {data.get('version')!r}, expected {SNAPSHOT_VERSION}")
    brokers = {b[0]: BrokerRegistration(b[0], b[1], b[2], b[3], b[4], b[5]) for b in data["brokers"]}
    topics = {}
    for name, topic_id, configs, parts in data["topics"]:
        regs = tuple(PartitionRegistration(tuple(r), tuple(i), leader, le, pe) for r, i, leader, le, pe in parts)
        topics[name] = TopicImage(name, regs, MappingProxyType(dict(configs)), topic_id)
    return MetadataImage(data["cluster_id"], MappingProxyType(brokers), MappingProxyType(topics),
                         data["next_producer_id"], data["offset"])


# ---- what changed for one broker ---------------------------------------------------


@dataclass(frozen=True)
class LocalChanges:
    """What one broker must do after an image change (Kafka's LocalReplicaChanges)."""

    leaders: dict[tuple[str, int], PartitionRegistration]
    followers: dict[tuple[str, int], PartitionRegistration]
    deleted: list[tuple[str, int]]

    def __bool__(self) -> bool:
        return bool(self.leaders or self.followers or self.deleted)


def local_changes(old: MetadataImage, new: MetadataImage, broker_id: int) -> LocalChanges:
    """Partitions of ``broker_id`` whose registration changed, split by its new role.

    A partition it no longer hosts (topic deleted, re-created under a new id, or
    moved away) is in ``deleted``; a re-created topic's partitions also come back
    as new leaders or followers.
    """
    # Topic by topic, skipping those the change left as they were (the same object: images are copied on
    # write): at 10,000 partitions, diffing every partition of both images cost each broker about 20 ms per
    # metadata change, and a restart's ISR changes come in dozens of batches.
    leaders, followers = {}, {}
    for name, topic in new.topics.items():
        before = old.topics.get(name)
        if before is topic:
            continue
        same_topic = before is not None and before.topic_id == topic.topic_id
        for p, reg in enumerate(topic.partitions):
            if broker_id not in reg.replicas:
                continue
            if same_topic and p < len(before.partitions) and before.partitions[p] == reg:
                continue   # equal registrations: the broker hosted it already, in the same role
            (leaders if reg.leader == broker_id else followers)[(name, p)] = reg
    deleted = []
    for name, topic in old.topics.items():
        after = new.topics.get(name)
        if after is topic:
            continue
        gone = after is None or after.topic_id != topic.topic_id
        deleted += [(name, p) for p, reg in enumerate(topic.partitions) if broker_id in reg.replicas and (
            gone or p >= len(after.partitions) or broker_id not in after.partitions[p].replicas)]
    return LocalChanges(leaders, followers, sorted(deleted))
