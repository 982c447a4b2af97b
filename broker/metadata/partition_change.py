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

The elections an operator asks for (preferred, unclean) and the validation of a
leader's AlterPartition live here too, so every ChangePartition the controller
writes is decided by a pure function of the image; refusals are client.errors
classes, never error names as strings.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.metadata.image import NO_LEADER, MetadataImage, PartitionRegistration, TopicImage, apply
from broker.metadata.records import (ChangePartition, FenceBroker, MetadataRecord, RegisterBroker,
                                     UnfenceBroker)
from client.errors import (ElectionNotNeededError, EligibleLeadersNotAvailableError, FencedLeaderEpochError,
                           IneligibleReplicaError, InvalidRequestError, InvalidUpdateVersionError, KafkaError,
                           NotControllerError, PreferredLeaderNotAvailableError, StaleBrokerEpochError,
                           UnknownTopicOrPartitionError)


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


def fence_batch(image: MetadataImage, broker_id: int, reason: str = "") -> list[MetadataRecord]:
    """Fence a broker: out of every ISR, its leaderships moved (one batch)."""
    return _with_reconcile(image, FenceBroker(broker_id, image.brokers[broker_id].broker_epoch, reason))


def unfence_batch(image: MetadataImage, broker_id: int) -> list[MetadataRecord]:
    """Unfence a broker; offline partitions it can lead get it as leader."""
    return _with_reconcile(image, UnfenceBroker(broker_id, image.brokers[broker_id].broker_epoch))


def register_batch(image: MetadataImage, record: RegisterBroker) -> list[MetadataRecord]:
    """A new incarnation starts fenced: the old one's ISR places and leaderships go (a restart lost its state)."""
    return _with_reconcile(image, record)


# ---- elections on request (kafka-leader-election.sh) ---------------------------------


@dataclass(frozen=True)
class ElectionResult:
    topic: str
    partition: int
    change: ChangePartition | None = None
    error: KafkaError | None = None     # ElectionNotNeededError, PreferredLeaderNotAvailableError, ...


def _not_needed(topic: TopicImage, partition: int) -> ElectionResult:
    return ElectionResult(topic.name, partition, error=ElectionNotNeededError(
        "Leader election not needed for topic partition."))


def preferred_election(image: MetadataImage, topic: TopicImage, partition: int) -> ElectionResult:
    """Move leadership back to the first replica in the assignment if it is live and in sync."""
    reg = topic.partitions[partition]
    preferred = reg.replicas[0]
    if reg.leader == preferred:
        return _not_needed(topic, partition)
    if preferred not in reg.isr or not image.is_live(preferred):
        return ElectionResult(topic.name, partition, error=PreferredLeaderNotAvailableError(
            f"The preferred leader {preferred} of {topic.name}-{partition} is not live and in sync."))
    return ElectionResult(topic.name, partition, ChangePartition(topic.name, topic.topic_id, partition,
                                                                 reg.partition_epoch, preferred, reg.isr))


def unclean_election(image: MetadataImage, topic: TopicImage, partition: int) -> ElectionResult:
    """An offline partition takes any live replica (rule 4 on request, whatever the topic's config)."""
    reg = topic.partitions[partition]
    if reg.leader >= 0:
        return _not_needed(topic, partition)
    leader, isr = elect(reg, image, unclean=True)
    if leader < 0:
        return ElectionResult(topic.name, partition, error=EligibleLeadersNotAvailableError(
            f"No live replica of {topic.name}-{partition} can lead."))
    return ElectionResult(topic.name, partition, ChangePartition(topic.name, topic.topic_id, partition,
                                                                 reg.partition_epoch, leader, isr))


# ---- ISR changes from partition leaders (Kafka's AlterPartition) ----------------------


def validate_alter_partition(image: MetadataImage, broker_id: int, broker_epoch: int, topic: str, topic_id: str,
                             partition: int, leader_epoch: int, partition_epoch: int,
                             new_isr: tuple[int, ...]) -> ChangePartition:
    """The record that commits a leader's new ISR, or raise the Kafka error that refuses it.

    The error class tells the leader what the refusal proves (broker/alter_partition.py acts on it):
    NOT_CONTROLLER when the request is newer than this image (the controller is behind, ask again);
    FENCED_LEADER_EPOCH / INVALID_UPDATE_VERSION when the partition moved on; INELIGIBLE_REPLICA when a
    joiner cannot join now, so the change is known not to apply.
    """
    reg = image.brokers.get(broker_id)
    if reg is None or reg.broker_epoch != broker_epoch:
        raise StaleBrokerEpochError(f"Broker {broker_id} epoch {broker_epoch} is not registered.")
    found = image.topics.get(topic)
    if found is None or found.topic_id != topic_id or not 0 <= partition < len(found.partitions):
        raise UnknownTopicOrPartitionError(f"Topic-partition {topic}-{partition} does not exist.")
    part = found.partitions[partition]
    if leader_epoch < part.leader_epoch:
        raise FencedLeaderEpochError(f"Leader epoch {leader_epoch} is older than {part.leader_epoch}.")
    if leader_epoch > part.leader_epoch:
        raise NotControllerError(f"Leader epoch {leader_epoch} is newer than this controller's "
                                 f"{part.leader_epoch}: it is behind.")
    if part.leader != broker_id:
        raise InvalidRequestError(f"Broker {broker_id} is not the leader of {topic}-{partition}.")
    if partition_epoch > part.partition_epoch:
        raise NotControllerError(f"Partition epoch {partition_epoch} is newer than this controller's "
                                 f"{part.partition_epoch}: it is behind.")
    if partition_epoch < part.partition_epoch:
        raise InvalidUpdateVersionError(f"Partition epoch {partition_epoch} is older than the current "
                                        f"{part.partition_epoch}.")
    if broker_id not in new_isr or not set(new_isr) <= set(part.replicas):
        raise InvalidRequestError(f"ISR {list(new_isr)} must hold the leader and only replicas.")
    added = [r for r in new_isr if r not in part.isr]
    if any(not image.is_live(r) for r in added):
        raise IneligibleReplicaError(f"Replicas {added} cannot join the ISR: fenced or unknown.")
    return ChangePartition(topic, topic_id, partition, partition_epoch, broker_id, tuple(new_isr))
