"""Leader and ISR decisions of the controller, as pure functions of the image.

Kafka's PartitionChangeBuilder: after a broker is fenced, unfenced or
re-registered, every partition is brought to a state that fits who is live:

1. ISR = the ISR minus brokers that are not live; when nobody would remain the
   ISR keeps its last member (the current leader), as Kafka does without ELR, so
   that broker can lead again when it returns.
2. The current leader stays when it is live and in the new ISR.
3. Otherwise the first replica in assignment order that is live and in the ISR.
4. Otherwise, if the topic allows unclean election, the first live replica in
   assignment order, and the ISR becomes just that replica.
5. Otherwise leader -1: the partition is offline.

The results are ChangePartition records fenced by the partition epoch they were
decided from; the controller commits them together with the broker change that
caused them, in one all-or-nothing batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.metadata.image import NO_LEADER, MetadataImage, PartitionRegistration, TopicImage, apply
from broker.metadata.records import (ChangePartition, FenceBroker, MetadataRecord, RegisterBroker,
                                     UnfenceBroker)


def unclean_allowed(topic: TopicImage) -> bool:
    return topic.configs.get("unclean.leader.election.enable", "false") == "true"


def elect(reg: PartitionRegistration, image: MetadataImage, unclean: bool) -> tuple[int, tuple[int, ...]]:
    """The (leader, isr) the partition should have on ``image`` (rules 1-5 above)."""
    isr = tuple(r for r in reg.isr if image.is_live(r))
    if not isr:
        isr = (reg.leader,) if reg.leader in reg.isr else reg.isr
    if reg.leader in isr and image.is_live(reg.leader):
        return reg.leader, isr
    for r in reg.replicas:
        if r in isr and image.is_live(r):
            return r, isr
    if unclean:
        for r in reg.replicas:
            if image.is_live(r):
                return r, (r,)
    return NO_LEADER, isr


def reconcile_partitions(image: MetadataImage) -> list[ChangePartition]:
    """Every partition whose leader or ISR does not fit the live brokers, with its fix."""
    changes = []
    for topic in image.topics.values():
        unclean = unclean_allowed(topic)
        for p, reg in enumerate(topic.partitions):
            leader, isr = elect(reg, image, unclean)
            if (leader, isr) != (reg.leader, reg.isr):
                changes.append(ChangePartition(topic.name, topic.topic_id, p, reg.partition_epoch, leader, isr))
    return changes


def _with_reconcile(image: MetadataImage, record: MetadataRecord) -> list[MetadataRecord]:
    after = apply(image, record)
    return [record, *reconcile_partitions(after)]


def fence_batch(image: MetadataImage, broker_id: int) -> list[MetadataRecord]:
    """Fence a broker: out of every ISR, its leaderships moved (one batch)."""
    return _with_reconcile(image, FenceBroker(broker_id, image.brokers[broker_id].broker_epoch))


def unfence_batch(image: MetadataImage, broker_id: int) -> list[MetadataRecord]:
    """Unfence a broker; offline partitions it can lead get it as leader."""
    return _with_reconcile(image, UnfenceBroker(broker_id, image.brokers[broker_id].broker_epoch))


def register_batch(image: MetadataImage, record: RegisterBroker) -> list[MetadataRecord]:
    """A new incarnation starts fenced: the old one's ISR places and leaderships go (a restart lost its state)."""
    return _with_reconcile(image, record)


# ---- preferred leader election ------------------------------------------------------


@dataclass(frozen=True)
class ElectionResult:
    topic: str
    partition: int
    change: ChangePartition | None = None
    error: str = ""      # Kafka's error name: ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE, ...


def preferred_election(image: MetadataImage, topic: TopicImage, partition: int) -> ElectionResult:
    """Move leadership back to the first replica in the assignment if it is live and in sync."""
    reg = topic.partitions[partition]
    preferred = reg.replicas[0]
    if reg.leader == preferred:
        return ElectionResult(topic.name, partition, error="ELECTION_NOT_NEEDED")
    if preferred not in reg.isr or not image.is_live(preferred):
        return ElectionResult(topic.name, partition, error="PREFERRED_LEADER_NOT_AVAILABLE")
    return ElectionResult(topic.name, partition, ChangePartition(topic.name, topic.topic_id, partition,
                                                                 reg.partition_epoch, preferred, reg.isr))
