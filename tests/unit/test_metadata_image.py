"""The metadata image: apply's preconditions, all-or-nothing batches, snapshots, records as dicts, local_changes."""

import json
from dataclasses import replace
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.metadata.image import (NO_LEADER, BatchOutcome, LocalChanges, MetadataImage, PartitionRegistration,
                                   StaleRecordError, apply, apply_batch, image_from_dict, image_to_dict,
                                   local_changes)
from broker.metadata.records import (AllocateProducerIds, ChangePartition, CreatePartitions, CreateTopic,
                                     DeleteTopic, FenceBroker, RegisterBroker, UnfenceBroker, record_from_dict,
                                     record_to_dict)

EMPTY = MetadataImage(cluster_id="c1")


def commit(image: MetadataImage, *records) -> MetadataImage:
    """One batch that must apply."""
    new, outcome = apply_batch(image, list(records))
    assert outcome == BatchOutcome(True, image.offset, producer_id_start=outcome.producer_id_start), outcome
    return new


def refused(image: MetadataImage, *records) -> str:
    """One batch that must change nothing but the offset; its reason."""
    new, outcome = apply_batch(image, list(records))
    assert not outcome.applied and outcome.offset == image.offset and outcome.reason
    assert new == replace(image, offset=image.offset + 1)
    return outcome.reason


def register(image: MetadataImage, broker_id: int, incarnation: str = "") -> MetadataImage:
    return commit(image, RegisterBroker(broker_id, "127.0.0.1", 9000 + broker_id, incarnation or f"inc-{broker_id}"))


def brokers(live=(), fenced=()) -> MetadataImage:
    """Every broker registered in its own batch, then the live ones unfenced."""
    image = EMPTY
    for b in sorted({*live, *fenced}):
        image = register(image, b)
    for b in live:
        image = commit(image, UnfenceBroker(b, image.brokers[b].broker_epoch))
    return image


def change(image, topic, partition, leader, isr, partition_epoch=None) -> ChangePartition:
    """A ChangePartition decided from ``image`` (at its partition epoch unless told otherwise)."""
    t = image.topics[topic]
    epoch = t.partitions[partition].partition_epoch if partition_epoch is None else partition_epoch
    return ChangePartition(topic, t.topic_id, partition, epoch, leader, tuple(isr))


# ---- brokers ------------------------------------------------------------------------


def test_register_broker_epoch_is_the_batch_offset_and_it_starts_fenced():
    image = commit(commit(EMPTY))              # two empty batches: offset 2
    new = register(image, 1, "inc-a")
    reg = new.brokers[1]
    assert (reg.broker_id, reg.host, reg.port, reg.incarnation_id) == (1, "127.0.0.1", 9001, "inc-a")
    assert reg.broker_epoch == image.offset == 2
    assert reg.fenced and not new.is_live(1) and new.live_broker_ids() == []
    assert new.offset == 3
    assert dict(image.brokers) == {}           # the old image is untouched


def test_every_record_of_a_batch_gets_the_batch_offset():
    image = commit(EMPTY, RegisterBroker(1, "h", 1, "a"), RegisterBroker(2, "h", 2, "b"))
    assert image.brokers[1].broker_epoch == image.brokers[2].broker_epoch == 0


def test_registering_the_same_incarnation_again_is_stale():
    image = brokers(live=[1])
    refused(image, RegisterBroker(1, "127.0.0.1", 9001, "inc-1"))
    refused(image, RegisterBroker(1, "10.0.0.9", 1234, "inc-1"))    # same process, other address: still stale


def test_a_new_incarnation_replaces_the_registration_fenced_with_a_new_epoch():
    image = brokers(live=[1, 2])
    old_epoch = image.brokers[1].broker_epoch
    new = commit(image, RegisterBroker(1, "10.0.0.9", 1234, "inc-restarted"))
    reg = new.brokers[1]
    assert (reg.host, reg.port, reg.incarnation_id) == ("10.0.0.9", 1234, "inc-restarted")
    assert reg.broker_epoch == image.offset > old_epoch
    assert reg.fenced and new.live_broker_ids() == [2]


def test_unfence_then_fence_at_the_current_epoch():
    image = brokers(fenced=[1])
    epoch = image.brokers[1].broker_epoch
    live = commit(image, UnfenceBroker(1, epoch))
    assert live.is_live(1) and live.live_broker_ids() == [1] and live.brokers[1].broker_epoch == epoch
    fenced = commit(live, FenceBroker(1, epoch))
    assert not fenced.is_live(1) and fenced.brokers[1].broker_epoch == epoch


@pytest.mark.parametrize("record,fenced_before", [
    (UnfenceBroker(1, 99), True),        # wrong epoch
    (FenceBroker(1, 99), False),         # wrong epoch
    (UnfenceBroker(1, 0), False),        # already unfenced
    (FenceBroker(1, 0), True),           # already fenced
    (FenceBroker(5, 0), True),           # never registered
    (UnfenceBroker(5, 0), True),
], ids=["unfence-wrong-epoch", "fence-wrong-epoch", "unfence-unfenced", "fence-fenced", "fence-unknown",
        "unfence-unknown"])
def test_fence_and_unfence_are_compare_and_set(record, fenced_before):
    image = brokers(fenced=[1]) if fenced_before else brokers(live=[1])
    assert image.brokers[1].broker_epoch == 0
    refused(image, record)


def test_a_fence_judged_for_an_old_incarnation_does_not_touch_the_new_one():
    image = brokers(live=[1])
    old_epoch = image.brokers[1].broker_epoch
    image = commit(image, RegisterBroker(1, "h", 1, "inc-restarted"))
    image = commit(image, UnfenceBroker(1, image.brokers[1].broker_epoch))
    refused(image, FenceBroker(1, old_epoch))
    assert image.is_live(1)


# ---- topics -------------------------------------------------------------------------


def test_create_topic_isr_is_the_live_replicas_and_the_first_live_one_leads():
    image = brokers(live=[1, 2], fenced=[3])     # broker 4 was never registered
    new = commit(image, CreateTopic("t", "id-t", ((3, 1, 2), (2, 4, 1), (3, 4), (1,))))
    assert new.partition("t", 0) == PartitionRegistration(replicas=(3, 1, 2), isr=(1, 2), leader=1)
    assert new.partition("t", 1) == PartitionRegistration(replicas=(2, 4, 1), isr=(2, 1), leader=2)
    assert new.partition("t", 2) == PartitionRegistration(replicas=(3, 4), isr=(), leader=NO_LEADER)
    assert new.partition("t", 3) == PartitionRegistration(replicas=(1,), isr=(1,), leader=1)
    assert new.partition("t", 4) is None and new.partition("t", -1) is None and new.partition("u", 0) is None
    assert new.topics["t"].topic_id == "id-t"
    assert "t" not in image.topics


def test_topic_configs_are_copied_and_read_only():
    configs = {"retention.ms": "5"}
    image = commit(brokers(live=[1]), CreateTopic("t", "id-t", ((1,),), configs))
    configs["retention.ms"] = "999"
    assert dict(image.topics["t"].configs) == {"retention.ms": "5"}
    with pytest.raises(TypeError):
        image.topics["t"].configs["x"] = "y"


def test_creating_an_existing_topic_is_stale_even_under_another_id():
    image = commit(brokers(live=[1]), CreateTopic("t", "id-1", ((1,),)))
    refused(image, CreateTopic("t", "id-2", ((1,), (1,))))


@pytest.mark.parametrize("topic_id", ["id-t", ""])
def test_delete_topic_by_id_or_by_name_alone(topic_id):
    image = commit(brokers(live=[1]), CreateTopic("t", "id-t", ((1,),)), CreateTopic("u", "id-u", ((1,),)))
    new = commit(image, DeleteTopic("t", topic_id))
    assert set(new.topics) == {"u"} and set(image.topics) == {"t", "u"}


@pytest.mark.parametrize("record", [DeleteTopic("t", "id-old"), DeleteTopic("nope"), DeleteTopic("nope", "id-t")])
def test_delete_topic_of_another_id_or_unknown_name_is_stale(record):
    refused(commit(brokers(live=[1]), CreateTopic("t", "id-t", ((1,),))), record)


# ---- partition changes --------------------------------------------------------------


@pytest.fixture
def three() -> MetadataImage:
    """Brokers 1-3 live; topic t (id-t) with one partition on (1, 2, 3) led by 1."""
    return commit(brokers(live=[1, 2, 3]), CreateTopic("t", "id-t", ((1, 2, 3),)))


def test_an_isr_change_bumps_the_partition_epoch_but_not_the_leader_epoch(three):
    new = commit(three, change(three, "t", 0, 1, (1, 3)))
    assert new.partition("t", 0) == PartitionRegistration((1, 2, 3), (1, 3), 1, leader_epoch=0, partition_epoch=1)


def test_a_leader_change_bumps_both_epochs(three):
    moved = commit(three, change(three, "t", 0, 2, (2, 3)))
    assert moved.partition("t", 0) == PartitionRegistration((1, 2, 3), (2, 3), 2, leader_epoch=1, partition_epoch=1)
    offline = commit(moved, change(moved, "t", 0, NO_LEADER, (2,)))
    assert offline.partition("t", 0) == PartitionRegistration((1, 2, 3), (2,), NO_LEADER, 2, 2)


def test_a_change_with_the_same_leader_and_isr_still_bumps_the_partition_epoch(three):
    new = commit(three, change(three, "t", 0, 1, (1, 2, 3)))
    assert (new.partition("t", 0).leader_epoch, new.partition("t", 0).partition_epoch) == (0, 1)


def test_a_change_decided_at_an_old_partition_epoch_is_stale(three):
    new = commit(three, change(three, "t", 0, 1, (1, 3)))
    reason = refused(new, change(three, "t", 0, 2, (2, 3)))     # decided from the image before the shrink
    assert "partition epoch" in reason
    refused(new, change(new, "t", 0, 1, (1,), partition_epoch=5))


@pytest.mark.parametrize("leader,isr", [
    (3, (1, 2)),        # leader not in the ISR
    (1, (1, 4)),        # ISR member that is not a replica
    (4, (4,)),          # leader that is not a replica
], ids=["leader-out-of-isr", "isr-not-replicas", "leader-not-replica"])
def test_a_change_that_does_not_fit_the_replicas_is_stale(three, leader, isr):
    refused(three, change(three, "t", 0, leader, isr))


def test_a_change_for_a_deleted_and_recreated_topic_is_stale(three):
    decided = change(three, "t", 0, 2, (2, 3))                       # for id-t
    recreated = commit(three, DeleteTopic("t", "id-t"), CreateTopic("t", "id-t2", ((1, 2, 3),)))
    assert recreated.partition("t", 0).partition_epoch == decided.partition_epoch == 0
    refused(recreated, decided)


@pytest.mark.parametrize("partition", [1, -1])
def test_a_change_for_a_missing_partition_is_stale(three, partition):
    refused(three, replace(change(three, "t", 0, 1, (1,)), partition=partition))


# ---- producer ids -------------------------------------------------------------------


def test_producer_id_blocks_are_consecutive_and_the_outcome_names_the_start():
    image = EMPTY
    starts = []
    for broker_id, count in [(1, 10), (2, 5), (1, 1)]:
        image, outcome = apply_batch(image, [AllocateProducerIds(broker_id, count)])
        assert outcome.applied
        starts.append(outcome.producer_id_start)
    assert starts == [0, 10, 15]
    assert image.next_producer_id == 16


def test_a_batch_without_an_allocation_has_no_producer_id_start():
    _, outcome = apply_batch(EMPTY, [RegisterBroker(1, "h", 1, "a")])
    assert outcome.producer_id_start == -1


@pytest.mark.parametrize("count", [0, -3])
def test_allocating_fewer_than_one_producer_id_is_stale(count):
    refused(EMPTY, AllocateProducerIds(1, count))


# ---- batches ------------------------------------------------------------------------


def test_a_batch_with_one_stale_record_changes_nothing_but_the_offset():
    image = brokers(fenced=[1, 2])
    # The first record alone would apply; the second has the wrong epoch.
    reason = refused(image, UnfenceBroker(1, image.brokers[1].broker_epoch), UnfenceBroker(2, 99),
                     AllocateProducerIds(1, 10))
    assert "broker 2" in reason


def test_a_stale_batch_reports_no_producer_id_start():
    image = brokers(fenced=[1])
    _, outcome = apply_batch(image, [AllocateProducerIds(1, 10), FenceBroker(1, 0)])
    assert outcome == BatchOutcome(False, image.offset, outcome.reason, producer_id_start=-1)


def test_later_records_of_a_batch_see_the_earlier_ones():
    image = brokers(fenced=[2])
    new = commit(image, UnfenceBroker(2, image.brokers[2].broker_epoch), CreateTopic("t", "id-t", ((2,),)))
    assert new.partition("t", 0).leader == 2 and new.partition("t", 0).isr == (2,)


def test_an_empty_batch_applies_and_moves_the_offset():
    new, outcome = apply_batch(EMPTY, [])
    assert outcome.applied and new == replace(EMPTY, offset=1)


def test_apply_raises_stale_record_error_and_rejects_unknown_records():
    with pytest.raises(StaleRecordError):
        apply(EMPTY, FenceBroker(1, 0))
    with pytest.raises(TypeError):
        apply(EMPTY, object())


# ---- random histories: snapshots and record dicts -----------------------------------

IDS = (1, 2, 3, 4)
NAMES = ("t", "u")
TOPIC_IDS = ("id-a", "id-b")
REPLICAS = st.lists(st.sampled_from(IDS), min_size=1, max_size=3, unique=True).map(tuple)
CONFIGS = st.dictionaries(st.sampled_from(("retention.ms", "unclean.leader.election.enable")), st.text(max_size=5),
                          max_size=2)
# Repeats weight the draw towards records that make the image interesting.
KINDS = st.sampled_from((RegisterBroker, FenceBroker, UnfenceBroker, UnfenceBroker, CreateTopic, CreateTopic,
                         DeleteTopic, ChangePartition, ChangePartition, ChangePartition, AllocateProducerIds))


@st.composite
def _record(draw, image: MetadataImage):
    """A record that often applies to ``image`` (epochs taken from it), sometimes not."""
    kind = draw(KINDS)
    broker, name = draw(st.sampled_from(IDS)), draw(st.sampled_from(NAMES))
    if kind is RegisterBroker:
        return RegisterBroker(broker, draw(st.sampled_from(("127.0.0.1", "::1"))), draw(st.integers(1, 65535)),
                              draw(st.sampled_from(("a", "b", "c"))))
    if kind in (FenceBroker, UnfenceBroker):
        reg = image.brokers.get(broker)
        return kind(broker, reg.broker_epoch if reg and draw(st.booleans()) else draw(st.integers(0, 30)))
    if kind is CreateTopic:
        assignments = tuple(draw(st.lists(REPLICAS, min_size=1, max_size=3)))
        return CreateTopic(name, draw(st.sampled_from(TOPIC_IDS)), assignments, draw(CONFIGS))
    if kind is DeleteTopic:
        return DeleteTopic(name, draw(st.sampled_from(("", *TOPIC_IDS))))
    if kind is ChangePartition:
        topic = image.topics.get(name)
        partition = draw(st.integers(0, 2))
        current = topic is not None and partition < len(topic.partitions) and draw(st.booleans())
        isr = draw(REPLICAS if not current else st.lists(st.sampled_from(topic.partitions[partition].replicas),
                                                           min_size=1, unique=True).map(tuple))
        return ChangePartition(name, topic.topic_id if current else draw(st.sampled_from(TOPIC_IDS)), partition,
                               topic.partitions[partition].partition_epoch if current else draw(st.integers(0, 3)),
                               draw(st.sampled_from((*isr, NO_LEADER))), isr)
    return AllocateProducerIds(broker, draw(st.integers(0, 1000)))


@st.composite
def histories(draw) -> MetadataImage:
    """An image after a random sequence of batches (applied or not: the offset counts both)."""
    image = EMPTY
    for _ in range(draw(st.integers(0, 30))):
        image, _ = apply_batch(image, draw(st.lists(_record(image), min_size=1, max_size=2)))
    return image


@settings(max_examples=100, deadline=None)
@given(image=histories())
def test_property_snapshot_round_trips(image):
    assert image_from_dict(image_to_dict(image)) == image
    # pysyncobj pickles the dump; JSON is stricter (no tuples, no int keys) and must work too.
    restored = image_from_dict(json.loads(json.dumps(image_to_dict(image))))
    assert restored == image
    assert all(isinstance(t.configs, MappingProxyType) for t in restored.topics.values())
    assert isinstance(restored.brokers, MappingProxyType) and isinstance(restored.topics, MappingProxyType)


@settings(max_examples=100, deadline=None)
@given(image=histories(), data=st.data())
def test_property_a_restored_image_applies_the_next_batch_like_the_original(image, data):
    batch = data.draw(st.lists(_record(image), max_size=3))
    assert apply_batch(image_from_dict(image_to_dict(image)), batch) == apply_batch(image, batch)


def test_the_histories_reach_interesting_images():
    """The properties above say little if the random histories stay near the empty image."""
    images = []

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(image=histories())
    def collect(image):
        images.append(image)

    collect()
    assert any(image.live_broker_ids() for image in images)
    assert any(p.leader_epoch > 0 for image in images for t in image.topics.values() for p in t.partitions)
    assert any(image.next_producer_id > 0 for image in images)


def test_a_snapshot_of_another_version_is_refused():
    data = image_to_dict(EMPTY)
    data["version"] = 99
    with pytest.raises(ValueError, match="version"):
        image_from_dict(data)


@given(record=_record(brokers(live=[1, 2])))
def test_property_records_round_trip_through_dicts_and_json(record):
    d = record_to_dict(record)
    assert d["type"] == type(record).__name__
    assert record_from_dict(d) == record
    assert record_from_dict(json.loads(json.dumps(d))) == record
    assert d == record_to_dict(record)          # record_from_dict did not consume its argument


def test_records_from_json_have_tuples_where_the_dataclass_has_tuples():
    create = record_from_dict(json.loads(json.dumps(record_to_dict(CreateTopic("t", "i", ((1, 2), (2, 1)))))))
    assert isinstance(create.assignments, tuple) and all(isinstance(r, tuple) for r in create.assignments)
    cp = record_from_dict(json.loads(json.dumps(record_to_dict(ChangePartition("t", "i", 0, 0, 1, (1, 2))))))
    assert cp.isr == (1, 2) and isinstance(cp.isr, tuple)


@pytest.mark.parametrize("data,error", [
    ({"type": "NoSuchRecord"}, KeyError),
    ({"broker_id": 1}, KeyError),
    ({"type": "FenceBroker", "broker_id": 1}, TypeError),
    ({"type": "FenceBroker", "broker_id": 1, "broker_epoch": 0, "extra": 1}, TypeError),
])
def test_malformed_record_dicts_raise_what_the_quorum_catches(data, error):
    with pytest.raises(error):
        record_from_dict(data)


# ---- local_changes ------------------------------------------------------------------


@pytest.fixture
def cluster() -> MetadataImage:
    return brokers(live=[1, 2, 3])


def test_local_changes_split_new_partitions_by_role(cluster):
    new = commit(cluster, CreateTopic("t", "id-t", ((1, 2), (2, 1), (2, 3))))
    ch = local_changes(cluster, new, 1)
    assert ch.leaders == {("t", 0): new.partition("t", 0)}
    assert ch.followers == {("t", 1): new.partition("t", 1)}
    assert ch.deleted == [] and bool(ch)
    ch3 = local_changes(cluster, new, 3)
    assert (ch3.leaders, set(ch3.followers)) == ({}, {("t", 2)})


def test_local_changes_of_an_unrelated_change_are_empty(cluster):
    old = commit(cluster, CreateTopic("t", "id-t", ((1, 2),)))
    new = commit(old, CreateTopic("u", "id-u", ((2, 3),)), AllocateProducerIds(1, 5))
    ch = local_changes(old, new, 1)
    assert not ch and (ch.leaders, ch.followers, ch.deleted) == ({}, {}, [])
    assert not local_changes(old, old, 1)


def test_local_changes_follow_a_leader_move(cluster):
    old = commit(cluster, CreateTopic("t", "id-t", ((1, 2, 3),)))
    new = commit(old, change(old, "t", 0, 2, (2, 3)))
    assert set(local_changes(old, new, 2).leaders) == {("t", 0)}
    assert set(local_changes(old, new, 1).followers) == {("t", 0)}      # out of the ISR: still a replica
    assert set(local_changes(old, new, 3).followers) == {("t", 0)}      # the leader epoch changed under it


def test_local_changes_list_deleted_partitions_sorted(cluster):
    old = commit(cluster, CreateTopic("t", "id-t", ((2, 1), (1, 2), (3, 2), (1,))))
    new = commit(old, DeleteTopic("t", "id-t"))
    ch = local_changes(old, new, 1)
    assert ch.deleted == [("t", 0), ("t", 1), ("t", 3)]
    assert ch.leaders == {} and ch.followers == {} and bool(ch)


def test_a_recreated_topic_is_both_deleted_and_new(cluster):
    old = commit(cluster, CreateTopic("t", "id-old", ((1, 2), (2, 1))))
    # Same name, same replicas, same epochs: only the topic id tells the new topic from the old.
    new = commit(old, DeleteTopic("t", "id-old"), CreateTopic("t", "id-new", ((1, 2), (2, 1))))
    assert new.partition("t", 0) == old.partition("t", 0)
    ch = local_changes(old, new, 1)
    assert ch.deleted == [("t", 0), ("t", 1)]
    assert ch.leaders == {("t", 0): new.partition("t", 0)}
    assert ch.followers == {("t", 1): new.partition("t", 1)}


def _local_changes_by_full_diff(old: MetadataImage, new: MetadataImage, broker_id: int) -> LocalChanges:
    """The definition, partition by partition over both whole images (local_changes skips unchanged topics)."""
    def hosted(image):
        return {(t.name, p): (t.topic_id, reg) for t in image.topics.values()
                for p, reg in enumerate(t.partitions) if broker_id in reg.replicas}
    before, after = hosted(old), hosted(new)
    leaders, followers = {}, {}
    for tp, (topic_id, reg) in after.items():
        if before.get(tp) != (topic_id, reg):
            (leaders if reg.leader == broker_id else followers)[tp] = reg
    return LocalChanges(leaders, followers, sorted(tp for tp, (topic_id, _) in before.items()
                                                   if tp not in after or after[tp][0] != topic_id))


_REPLICAS = st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=3, unique=True).map(tuple)
_STEP = st.one_of(
    st.tuples(st.just("create"), st.sampled_from("abc"), st.lists(_REPLICAS, min_size=1, max_size=4)),
    st.tuples(st.just("delete"), st.sampled_from("abc")),
    st.tuples(st.just("recreate"), st.sampled_from("abc"), st.lists(_REPLICAS, min_size=1, max_size=4)),
    st.tuples(st.just("change"), st.sampled_from("abc"), st.integers(0, 3), st.integers(0, 2)),
    st.tuples(st.just("add"), st.sampled_from("abc"), st.lists(_REPLICAS, min_size=1, max_size=2)),
    st.tuples(st.just("fence"), st.sampled_from([1, 2, 3])))


def _step(image: MetadataImage, step: tuple, n: int) -> MetadataImage:
    """One metadata batch from a generated step; a step that does not fit the image is an empty batch, and a
    refused batch (a partition added with no live replica) moves only the offset."""
    kind, *args = step
    topic = image.topics.get(args[0]) if kind != "fence" else None
    records = []
    if kind == "create" and topic is None:
        records = [CreateTopic(args[0], f"id-{args[0]}-{n}", tuple(args[1]))]
    elif kind in ("delete", "recreate") and topic is not None:
        records = [DeleteTopic(args[0], topic.topic_id)]
        if kind == "recreate":
            records.append(CreateTopic(args[0], f"id-{args[0]}-{n}", tuple(args[1])))
    elif kind == "change" and topic is not None and args[1] < len(topic.partitions):
        reg = topic.partitions[args[1]]
        isr = reg.replicas[: args[2] + 1]
        records = [ChangePartition(args[0], topic.topic_id, args[1], reg.partition_epoch, isr[0], isr)]
    elif kind == "add" and topic is not None:
        records = [CreatePartitions(args[0], topic.topic_id, len(topic.partitions), tuple(args[1]))]
    elif kind == "fence" and not image.brokers[args[0]].fenced:
        records = [FenceBroker(args[0], image.brokers[args[0]].broker_epoch)]
    return apply_batch(image, records)[0]


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(_STEP, min_size=1, max_size=12), broker_id=st.sampled_from([1, 2, 3]))
def test_local_changes_equal_the_full_diff_of_both_images(steps, broker_id):
    image = brokers(live=[1, 2, 3])
    for n, step in enumerate(steps):
        new = _step(image, step, n)
        assert local_changes(image, new, broker_id) == _local_changes_by_full_diff(image, new, broker_id), step
        image = new
