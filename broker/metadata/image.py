"""The metadata image: brokers, topics, partition assignments, leaders, epochs, ISR.

Plain immutable data and pure functions. ``apply(image, record)`` returns a new
image and reads nothing but its arguments (no clock, no I/O), so every replica
of the metadata log computes the same image. ``local_changes`` is the pure
"what changed for me" diff that a broker acts on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

from broker.metadata.records import CreateTopic, DeleteTopic, MetadataRecord, RegisterBroker

NO_LEADER = -1


@dataclass(frozen=True)
class BrokerRegistration:
    broker_id: int
    host: str
    port: int
    fenced: bool = False


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


@dataclass(frozen=True)
class MetadataImage:
    cluster_id: str
    brokers: Mapping[int, BrokerRegistration] = field(default_factory=lambda: MappingProxyType({}))
    topics: Mapping[str, TopicImage] = field(default_factory=lambda: MappingProxyType({}))
    # How many records were applied: equal images have equal offsets.
    offset: int = 0

    def partition(self, topic: str, partition: int) -> PartitionRegistration | None:
        t = self.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return None
        return t.partitions[partition]

    def live_broker_ids(self) -> list[int]:
        return sorted(b.broker_id for b in self.brokers.values() if not b.fenced)


def apply(image: MetadataImage, record: MetadataRecord) -> MetadataImage:
    """The image after ``record``. Records that no longer fit (a topic created twice) are no-ops."""
    match record:
        case RegisterBroker(broker_id, host, port):
            old = image.brokers.get(broker_id)
            reg = BrokerRegistration(broker_id, host, port, fenced=False if old is None else old.fenced)
            image = replace(image, brokers=_with(image.brokers, broker_id, reg))
        case CreateTopic(name, assignments, configs):
            if name not in image.topics:
                parts = tuple(PartitionRegistration(replicas=tuple(r), isr=tuple(r), leader=r[0])
                              for r in assignments)
                topic = TopicImage(name, parts, MappingProxyType(dict(configs)))
                image = replace(image, topics=_with(image.topics, name, topic))
        case DeleteTopic(name):
            if name in image.topics:
                topics = dict(image.topics)
                del topics[name]
                image = replace(image, topics=MappingProxyType(topics))
        case _:
            raise TypeError(f"unknown metadata record {record!r}")
    return replace(image, offset=image.offset + 1)


def _with(mapping: Mapping, key, value) -> Mapping:
    new = dict(mapping)
    new[key] = value
    return MappingProxyType(new)


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

    A partition it no longer hosts (topic deleted, or moved away) is in ``deleted``.
    """
    before = _hosted(old, broker_id)
    after = _hosted(new, broker_id)
    leaders, followers = {}, {}
    for tp, reg in after.items():
        if before.get(tp) == reg:
            continue
        (leaders if reg.leader == broker_id else followers)[tp] = reg
    deleted = sorted(tp for tp in before if tp not in after)
    return LocalChanges(leaders, followers, deleted)


def _hosted(image: MetadataImage, broker_id: int) -> dict[tuple[str, int], PartitionRegistration]:
    return {(t.name, p): reg for t in image.topics.values()
            for p, reg in enumerate(t.partitions) if broker_id in reg.replicas}
