"""The client's cache of cluster metadata: brokers, and each partition's leader and epoch.

Filled from Metadata answers and corrected in place by leader hints (KIP-951).
An entry never goes back to an older leader epoch (KIP-320): a stale answer
from a lagging broker cannot undo a newer hint.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from client.connection import Address
from client.errors import LeaderHintInfo


@dataclass(frozen=True)
class BrokerInfo:
    broker_id: int
    host: str
    port: int
    alive: bool = True

    @property
    def address(self) -> Address:
        return (self.host, self.port)


@dataclass(frozen=True)
class PartitionInfo:
    topic: str
    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    error_code: int = 0


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: tuple[PartitionInfo, ...]
    configs: dict[str, str] = field(default_factory=dict)


class ClusterMetadata:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cluster_id = ""
        self.controller_id = -1
        self.brokers: dict[int, BrokerInfo] = {}
        self.topics: dict[str, TopicInfo] = {}
        self.unknown_topics: set[str] = set()
        self.updated_at = 0.0  # monotonic seconds

    def update(self, response) -> None:
        """Merge a MetadataResponse."""
        with self._lock:
            self.cluster_id = response.cluster_id
            self.controller_id = response.controller_id
            self.brokers = {b.broker_id: BrokerInfo(b.broker_id, b.host, b.port, b.alive) for b in response.brokers}
            for t in response.topics:
                if t.error_code != 0:
                    self.topics.pop(t.name, None)
                    self.unknown_topics.add(t.name)
                    continue
                self.unknown_topics.discard(t.name)
                old = self.topics.get(t.name)
                parts = []
                for p in t.partitions:
                    fresh = PartitionInfo(t.name, p.partition, p.leader_id, p.leader_epoch,
                                          tuple(p.replicas), tuple(p.isr), p.error_code)
                    known = old.partitions[p.partition] if old and p.partition < len(old.partitions) else None
                    parts.append(known if known and known.leader_epoch > fresh.leader_epoch else fresh)
                self.topics[t.name] = TopicInfo(t.name, tuple(parts), dict(t.configs))
            self.updated_at = time.monotonic()

    def apply_leader_hint(self, topic: str, partition: int, hint: LeaderHintInfo) -> bool:
        """Point (topic, partition) at the hinted leader if the hint is not older; True if it applied."""
        with self._lock:
            info = self.topics.get(topic)
            if info is None or hint.leader_id < 0 or partition >= len(info.partitions):
                return False
            current = info.partitions[partition]
            if hint.leader_epoch < current.leader_epoch:
                return False
            parts = list(info.partitions)
            parts[partition] = PartitionInfo(topic, partition, hint.leader_id, hint.leader_epoch,
                                             current.replicas, current.isr)
            self.topics[topic] = TopicInfo(topic, tuple(parts), info.configs)
            if hint.host and hint.leader_id not in self.brokers:
                self.brokers[hint.leader_id] = BrokerInfo(hint.leader_id, hint.host, hint.port)
            return True

    def partition(self, topic: str, partition: int) -> PartitionInfo | None:
        info = self.topics.get(topic)
        if info is None or not 0 <= partition < len(info.partitions):
            return None
        return info.partitions[partition]

    def broker_address(self, broker_id: int) -> Address | None:
        b = self.brokers.get(broker_id)
        return b.address if b else None

    def age_s(self) -> float:
        return time.monotonic() - self.updated_at if self.updated_at else float("inf")
