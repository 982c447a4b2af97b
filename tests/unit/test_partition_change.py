"""Leader and ISR decisions (Kafka's PartitionChangeBuilder, kafka-semantics.md §2.3), as pure functions."""

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from broker.metadata.image import NO_LEADER, MetadataImage, PartitionRegistration, StaleRecordError, apply_batch
from broker.metadata.partition_change import (fence_batch, preferred_election, reconcile_partitions,
                                              register_batch, unclean_election, unfence_batch,
                                              validate_alter_partition)
from broker.metadata.records import ChangePartition, CreateTopic, FenceBroker, RegisterBroker, UnfenceBroker
from client.errors import (ElectionNotNeededError, EligibleLeadersNotAvailableError, FencedLeaderEpochError,
                           IneligibleReplicaError, InvalidRequestError, InvalidUpdateVersionError, NotControllerError,
                           PreferredLeaderNotAvailableError, StaleBrokerEpochError, UnknownTopicOrPartitionError)

UNCLEAN = {"unclean.leader.election.enable": "true"}


def applied(image: MetadataImage, batch) -> MetadataImage:
    """Every batch the controller builds must apply as a whole."""
    new, outcome = apply_batch(image, batch)
    assert outcome.applied, outcome.reason
    return new


def start(live=(1, 2, 3), fenced=()) -> MetadataImage:
    """Brokers registered and unfenced the way the controller does it."""
    image = MetadataImage(cluster_id="c1")
    for b in sorted({*live, *fenced}):
        image = applied(image, register_batch(image, RegisterBroker(b, "127.0.0.1", 9000 + b, f"inc-{b}")))
    for b in live:
        image = applied(image, unfence_batch(image, b))
    return image


def topic(image: MetadataImage, *assignments, name="t", configs=None) -> MetadataImage:
    return applied(image, [CreateTopic(name, f"id-{name}", tuple(assignments), dict(configs or {}))])


def set_isr(image: MetadataImage, leader: int, isr, name="t", partition=0) -> MetadataImage:
    """What a leader's AlterPartition would commit: a new ISR (and leader) for one partition."""
    reg = image.partition(name, partition)
    return applied(image, [ChangePartition(name, image.topics[name].topic_id, partition, reg.partition_epoch,
                                           leader, tuple(isr))])


def fence(image: MetadataImage, broker_id: int) -> MetadataImage:
    batch = fence_batch(image, broker_id)
    assert batch[0] == FenceBroker(broker_id, image.brokers[broker_id].broker_epoch)
    return applied(image, batch)


def unfence(image: MetadataImage, broker_id: int) -> MetadataImage:
    batch = unfence_batch(image, broker_id)
    assert batch[0] == UnfenceBroker(broker_id, image.brokers[broker_id].broker_epoch)
    return applied(image, batch)


def part(image: MetadataImage, name="t", partition=0) -> PartitionRegistration:
    return image.partition(name, partition)


# ---- fencing ------------------------------------------------------------------------


# Partition t-0 on replicas (1, 2, 3), all live, brought to (leader, ISR) by one ChangePartition
# (leader epoch 1 if that moved the leader from 1), then one broker is fenced.
@pytest.mark.parametrize("leader,isr,fenced,new_leader,new_isr,leader_epoch", [
    # A follower leaves the ISR; the leader stays.
    (1, (1, 2, 3), 2, 1, (1, 3), 0),
    # Rule 2 before the assignment walk: 1 is live and in sync, yet 2 keeps leading.
    (2, (1, 2, 3), 3, 2, (1, 2), 1),
    # The ISR lists 3 before 2; Kafka walks the assignment, so 2 wins.
    (1, (1, 3, 2), 1, 2, (3, 2), 1),
    # 2 is live but out of sync: it is skipped.
    (1, (1, 3), 1, 3, (3,), 1),
    # The last ISR member goes: offline, and the ISR keeps it (no ELR).
    (1, (1,), 1, NO_LEADER, (1,), 1),
], ids=["follower", "keep-non-preferred-leader", "assignment-order", "skip-out-of-sync", "last-isr-member"])
def test_fencing_one_broker(leader, isr, fenced, new_leader, new_isr, leader_epoch):
    before = set_isr(topic(start(), (1, 2, 3)), leader, isr)
    assert part(fence(before, fenced)) == PartitionRegistration((1, 2, 3), new_isr, new_leader,
                                                                 leader_epoch=leader_epoch, partition_epoch=2)


def test_fencing_a_broker_outside_every_isr_changes_no_partition():
    before = set_isr(topic(start(), (1, 2, 3)), 1, (1, 3))
    batch = fence_batch(before, 2)
    assert batch == [FenceBroker(2, before.brokers[2].broker_epoch)]
    assert part(applied(before, batch)) == part(before)


def test_fencing_every_replica_one_by_one_keeps_the_last_one_in_the_isr():
    image = topic(start(), (1, 2, 3))
    for b in (3, 1, 2):
        image = fence(image, b)
    assert (part(image).leader, part(image).isr) == (NO_LEADER, (2,))


def test_unclean_election_takes_the_first_live_replica_even_out_of_sync():
    before = set_isr(topic(start(live=(1, 2, 3, 4)), (1, 4, 3, 2), configs=UNCLEAN), 1, (1,))
    before = fence(before, 4)
    after = fence(before, 1)
    # 4 is first after 1 in the assignment but fenced; 3 is the first live replica.
    assert part(after) == PartitionRegistration((1, 4, 3, 2), (3,), 3, leader_epoch=1, partition_epoch=2)


def test_unclean_election_is_off_unless_the_topic_enables_it():
    for configs in ({}, {"unclean.leader.election.enable": "false"}):
        before = set_isr(topic(start(), (1, 2, 3), configs=configs), 1, (1,))
        assert (part(fence(before, 1)).leader, part(fence(before, 1)).isr) == (NO_LEADER, (1,))


def test_unfencing_the_kept_isr_member_brings_the_partition_back_with_it_as_leader():
    offline = fence(set_isr(topic(start(), (1, 2, 3)), 1, (1,)), 1)
    back = unfence(offline, 1)
    assert part(back) == PartitionRegistration((1, 2, 3), (1,), 1, leader_epoch=2, partition_epoch=3)


def test_unfencing_an_out_of_sync_replica_does_not_bring_an_offline_partition_back():
    offline = fence(fence(topic(start(), (1, 2)), 2), 1)             # ISR shrank to (1,), then 1 died
    assert (part(offline).leader, part(offline).isr) == (NO_LEADER, (1,))
    batch = unfence_batch(offline, 2)
    assert batch == [UnfenceBroker(2, offline.brokers[2].broker_epoch)]
    assert part(applied(offline, batch)) == part(offline)


def test_unfencing_never_takes_leadership_from_a_live_leader():
    before = fence(topic(start(), (1, 2, 3)), 1)                     # 2 leads now
    after = unfence(before, 1)
    assert part(after) == part(before)


def test_a_new_incarnation_of_a_leader_moves_its_leadership_away():
    before = topic(start(), (1, 2, 3), (2, 1, 3))
    batch = register_batch(before, RegisterBroker(1, "127.0.0.1", 9001, "inc-1-restarted"))
    after = applied(before, batch)
    assert after.brokers[1].fenced and after.brokers[1].broker_epoch == before.offset
    assert (part(after, partition=0).leader, part(after, partition=0).isr) == (2, (2, 3))
    assert part(after, partition=0).leader_epoch == 1
    assert (part(after, partition=1).leader, part(after, partition=1).isr) == (2, (2, 3))
    assert part(after, partition=1).leader_epoch == 0


def test_a_new_incarnation_of_the_last_isr_member_leaves_it_offline_until_it_is_unfenced():
    before = set_isr(topic(start(), (1, 2)), 1, (1,))
    after = applied(before, register_batch(before, RegisterBroker(1, "127.0.0.1", 9001, "inc-1-restarted")))
    assert (part(after).leader, part(after).isr) == (NO_LEADER, (1,))
    assert (part(unfence(after, 1)).leader, part(unfence(after, 1)).isr) == (1, (1,))


def test_registering_the_same_incarnation_again_is_stale():
    with pytest.raises(StaleRecordError):
        register_batch(start(), RegisterBroker(1, "127.0.0.1", 9001, "inc-1"))


# ---- preferred election -------------------------------------------------------------


def test_preferred_election_is_not_needed_when_the_first_replica_leads():
    image = topic(start(), (1, 2, 3))
    assert isinstance(preferred_election(image, image.topics["t"], 0).error, ElectionNotNeededError)
    assert preferred_election(image, image.topics["t"], 0).change is None


def test_preferred_election_moves_leadership_back_to_the_first_replica():
    image = set_isr(topic(start(), (1, 2, 3)), 2, (1, 2, 3))
    result = preferred_election(image, image.topics["t"], 0)
    assert (result.topic, result.partition, result.error) == ("t", 0, None)
    after = applied(image, [result.change])
    assert part(after) == PartitionRegistration((1, 2, 3), (1, 2, 3), 1, leader_epoch=2, partition_epoch=2)


def test_preferred_election_needs_the_first_replica_in_sync():
    image = unfence(fence(topic(start(), (1, 2, 3)), 1), 1)        # 1 is back but not yet in the ISR
    assert (part(image).leader, part(image).isr) == (2, (2, 3))
    assert isinstance(preferred_election(image, image.topics["t"], 0).error, PreferredLeaderNotAvailableError)


def test_preferred_election_needs_the_first_replica_live():
    image = fence(set_isr(topic(start(), (1, 2)), 1, (1,)), 1)      # 1 is the kept ISR member, fenced
    result = preferred_election(image, image.topics["t"], 0)
    assert isinstance(result.error, PreferredLeaderNotAvailableError) and result.change is None


# ---- unclean election on request ----------------------------------------------------


def test_unclean_election_is_not_needed_while_the_partition_has_a_leader():
    image = topic(start(), (1, 2, 3))
    result = unclean_election(image, image.topics["t"], 0)
    assert isinstance(result.error, ElectionNotNeededError) and result.change is None


def test_unclean_election_on_request_takes_a_live_out_of_sync_replica():
    offline = fence(set_isr(topic(start(), (1, 2, 3)), 1, (1,)), 1)   # clean topic: stays offline
    result = unclean_election(offline, offline.topics["t"], 0)
    assert result.error is None
    assert part(applied(offline, [result.change])) == PartitionRegistration((1, 2, 3), (2,), 2, leader_epoch=2,
                                                                            partition_epoch=3)


def test_unclean_election_needs_a_live_replica():
    offline = fence(fence(fence(topic(start(), (1, 2, 3)), 2), 3), 1)
    result = unclean_election(offline, offline.topics["t"], 0)
    assert isinstance(result.error, EligibleLeadersNotAvailableError) and result.change is None


# ---- AlterPartition validation ------------------------------------------------------


def isr_image() -> MetadataImage:
    """t-0 on (1, 2, 3, 4): 2 leads at leader epoch 1, partition epoch 1, ISR (2, 3); 1 is live and out of
    sync, 4 is registered but fenced."""
    image = set_isr(topic(start(live=(1, 2, 3), fenced=(4,)), (1, 2, 3, 4)), 2, (2, 3))
    assert (part(image).leader, part(image).leader_epoch, part(image).partition_epoch) == (2, 1, 1)
    return image


def alter(image: MetadataImage, **request) -> ChangePartition:
    """t-0's leader asks to keep its ISR; every field defaults to what ``image`` says."""
    reg = part(image)
    broker_id = request.pop("broker_id", reg.leader)
    fields = dict(broker_epoch=image.brokers[broker_id].broker_epoch if broker_id in image.brokers else 0,
                  topic="t", topic_id=image.topics["t"].topic_id, partition=0, leader_epoch=reg.leader_epoch,
                  partition_epoch=reg.partition_epoch, new_isr=reg.isr)
    return validate_alter_partition(image, broker_id, **{**fields, **request})


@pytest.mark.parametrize("new_isr", [(2,), (2, 3, 1), (1, 2)], ids=["shrink", "live-joiner", "swap"])
def test_alter_partition_accepted_is_one_change_fenced_by_the_partition_epoch(new_isr):
    image = isr_image()
    change = alter(image, new_isr=new_isr)
    assert change == ChangePartition("t", "id-t", 0, 1, 2, new_isr)
    assert part(applied(image, [change])) == PartitionRegistration((1, 2, 3, 4), new_isr, 2, leader_epoch=1,
                                                                   partition_epoch=2)


@pytest.mark.parametrize("request_fields,error", [
    ({"broker_epoch": 12345}, StaleBrokerEpochError),
    ({"broker_id": 9}, StaleBrokerEpochError),                                # never registered
    ({"topic": "nope"}, UnknownTopicOrPartitionError),
    ({"topic_id": "id-of-an-older-t"}, UnknownTopicOrPartitionError),        # deleted and re-created
    ({"partition": 1}, UnknownTopicOrPartitionError),
    ({"partition": -1}, UnknownTopicOrPartitionError),
    ({"leader_epoch": 0}, FencedLeaderEpochError),
    ({"broker_id": 1, "leader_epoch": 0}, FencedLeaderEpochError),            # the deposed leader
    ({"leader_epoch": 2}, NotControllerError),                               # this image is behind
    ({"broker_id": 3}, InvalidRequestError),                                 # a follower
    ({"partition_epoch": 2}, NotControllerError),                            # this image is behind
    ({"partition_epoch": 0}, InvalidUpdateVersionError),
    ({"new_isr": (3,)}, InvalidRequestError),                                # without the leader
    ({"new_isr": (2, 3, 9)}, InvalidRequestError),                           # outside the replicas
    ({"new_isr": (2, 3, 4)}, IneligibleReplicaError),                        # a fenced joiner
    ({"broker_epoch": 12345, "leader_epoch": 0, "new_isr": (3,)}, StaleBrokerEpochError),  # checked first
], ids=["stale-broker-epoch", "unknown-broker", "unknown-topic", "other-topic-id", "partition-too-big",
        "negative-partition", "fenced-leader-epoch", "deposed-leader", "newer-leader-epoch", "not-the-leader",
        "newer-partition-epoch", "older-partition-epoch", "isr-without-leader", "isr-outside-replicas",
        "fenced-joiner", "broker-epoch-first"])
def test_alter_partition_refusals(request_fields, error):
    with pytest.raises(error):
        alter(isr_image(), **request_fields)


# ---- reconcile ----------------------------------------------------------------------


def test_reconcile_finds_nothing_to_do_on_a_healthy_image():
    image = topic(start(), (1, 2, 3), (2, 3, 1), (3,), configs=UNCLEAN)
    image = fence(unfence(fence(image, 3), 3), 2)
    assert reconcile_partitions(image) == []


def test_reconcile_fixes_a_partition_whose_leader_was_fenced_without_it():
    image = topic(start(), (1, 2, 3))
    image = applied(image, [FenceBroker(1, image.brokers[1].broker_epoch)])   # a bare fence, no ChangePartition
    assert reconcile_partitions(image) == [ChangePartition("t", "id-t", 0, 0, 2, (2, 3))]


def test_reconcile_elects_an_unclean_leader_once_a_replica_returns():
    image = fence(fence(topic(start(), (1, 2, 3), configs=UNCLEAN), 2), 3)
    image = applied(image, [FenceBroker(1, image.brokers[1].broker_epoch)])  # offline: (-1, ISR (1,)) is due
    image = applied(image, reconcile_partitions(image))
    assert (part(image).leader, part(image).isr) == (NO_LEADER, (1,))
    image = applied(image, [UnfenceBroker(3, image.brokers[3].broker_epoch)])
    assert reconcile_partitions(image) == [ChangePartition("t", "id-t", 0, part(image).partition_epoch, 3, (3,))]


# ---- properties over random clusters ------------------------------------------------


@st.composite
def clusters(draw) -> MetadataImage:
    """3-5 brokers, some fenced, 1-3 topics, then a random history of fences, unfences and restarts."""
    ids = list(range(1, draw(st.integers(3, 5)) + 1))
    live = [b for b in ids if draw(st.booleans())]
    image = start(live=live, fenced=[b for b in ids if b not in live])
    for n in range(draw(st.integers(1, 3))):
        rf = draw(st.integers(1, len(ids)))
        assignments = draw(st.lists(st.permutations(ids).map(lambda p: tuple(p[:rf])), min_size=1, max_size=4))
        image = topic(image, *assignments, name=f"t{n}", configs=UNCLEAN if draw(st.booleans()) else {})
    for _ in range(draw(st.integers(0, 8))):
        b = draw(st.sampled_from(ids))
        step = draw(st.sampled_from(("fence", "unfence", "restart")))
        if step == "restart":
            image = applied(image, register_batch(image, RegisterBroker(b, "127.0.0.1", 1, f"inc-{b}-{image.offset}")))
        elif step == "fence" and image.is_live(b):
            image = fence(image, b)
        elif step == "unfence" and not image.is_live(b):
            image = unfence(image, b)
    return image


def _partitions(image: MetadataImage):
    return {(t.name, p): (reg, t) for t in image.topics.values() for p, reg in enumerate(t.partitions)}


@settings(max_examples=150, deadline=None)
@given(image=clusters(), data=st.data())
def test_property_fencing_a_live_broker(image, data):
    assume(image.live_broker_ids())
    b = data.draw(st.sampled_from(image.live_broker_ids()))
    after = fence(image, b)
    assert not after.is_live(b)
    assert reconcile_partitions(after) == []
    old_parts = _partitions(image)
    for tp, (reg, t) in _partitions(after).items():
        old = old_parts[tp][0]
        assert reg.leader != b
        assert b not in reg.isr or reg.isr == (b,), (tp, reg)
        if reg.leader != NO_LEADER:
            assert after.is_live(reg.leader) and reg.leader in reg.isr, (tp, reg)
            if t.configs.get("unclean.leader.election.enable") != "true":
                assert reg.leader in old.isr, (tp, old, reg)        # clean: only an in-sync replica leads
        if old.leader not in (b, NO_LEADER):
            assert reg.leader == old.leader, (tp, old, reg)         # a live leader keeps leading
        assert reg.leader_epoch == old.leader_epoch + (reg.leader != old.leader)
        assert reg.partition_epoch >= old.partition_epoch
        if b not in old.isr and old.leader != b:
            assert reg == old, tp                                   # fencing touches only its partitions


@settings(max_examples=100, deadline=None)
@given(image=clusters(), data=st.data())
def test_property_unfencing_a_broker(image, data):
    fenced = sorted(set(image.brokers) - set(image.live_broker_ids()))
    assume(fenced)
    b = data.draw(st.sampled_from(fenced))
    after = unfence(image, b)
    assert reconcile_partitions(after) == []
    old_parts = _partitions(image)
    for tp, (reg, _) in _partitions(after).items():
        old = old_parts[tp][0]
        if old.leader != NO_LEADER:
            assert reg == old, tp                                   # a live leader keeps its partition
        elif reg.leader != NO_LEADER:
            assert reg.leader == b, (tp, old, reg)                  # only the returning broker can lead
