"""The metadata image: pure apply, records as dicts/JSON, and the per-broker diff."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.metadata.image import (BrokerRegistration, MetadataImage, PartitionRegistration, apply,
                                   local_changes)
from broker.metadata.records import (CreateTopic, DeleteTopic, RegisterBroker, record_from_dict,
                                     record_to_dict)


def _image(*records) -> MetadataImage:
    image = MetadataImage(cluster_id="c")
    for r in records:
        image = apply(image, r)
    return image


def test_register_broker_adds_it_and_leaves_the_old_image_unchanged():
    old = MetadataImage(cluster_id="c")
    new = apply(old, RegisterBroker(1, "127.0.0.1", 9092))
    assert new.brokers[1] == BrokerRegistration(1, "127.0.0.1", 9092)
    assert new.offset == 1
    assert dict(old.brokers) == {} and old.offset == 0
    assert new.live_broker_ids() == [1]


def test_register_broker_again_updates_its_address():
    image = _image(RegisterBroker(1, "127.0.0.1", 9092), RegisterBroker(1, "10.0.0.1", 9999))
    assert (image.brokers[1].host, image.brokers[1].port) == ("10.0.0.1", 9999)
    assert image.offset == 2


def test_create_topic_makes_first_replica_leader_and_isr_all_replicas():
    old = _image(RegisterBroker(1, "h", 1), RegisterBroker(2, "h", 2))
    new = apply(old, CreateTopic("t", ((1, 2), (2, 1)), {"retention.ms": "5"}))
    assert new.partition("t", 0) == PartitionRegistration(replicas=(1, 2), isr=(1, 2), leader=1)
    assert new.partition("t", 1).leader == 2
    assert new.partition("t", 2) is None and new.partition("t", -1) is None
    assert dict(new.topics["t"].configs) == {"retention.ms": "5"}
    assert new.offset == old.offset + 1
    assert "t" not in old.topics


def test_image_configs_are_not_shared_with_the_record():
    configs = {"retention.ms": "5"}
    image = _image(CreateTopic("t", ((1,),), configs))
    configs["retention.ms"] = "999"
    assert image.topics["t"].configs["retention.ms"] == "5"
    with pytest.raises(TypeError):
        image.topics["t"].configs["x"] = "y"  # read-only view


def test_creating_an_existing_topic_is_a_no_op_apart_from_the_offset():
    first = _image(CreateTopic("t", ((1,),)))
    second = apply(first, CreateTopic("t", ((2,), (3,))))
    assert second.topics == first.topics
    assert second.offset == first.offset + 1


def test_delete_topic_removes_it_without_touching_the_old_image():
    old = _image(CreateTopic("t", ((1,),)), CreateTopic("u", ((1,),)))
    new = apply(old, DeleteTopic("t"))
    assert set(new.topics) == {"u"}
    assert set(old.topics) == {"t", "u"}
    assert new.offset == old.offset + 1


def test_deleting_an_unknown_topic_is_a_no_op_apart_from_the_offset():
    old = _image(CreateTopic("t", ((1,),)))
    new = apply(old, DeleteTopic("nope"))
    assert new.topics == old.topics and new.offset == old.offset + 1


def test_apply_rejects_an_unknown_record():
    with pytest.raises(TypeError):
        apply(MetadataImage(cluster_id="c"), object())


def test_same_records_give_equal_images():
    records = [RegisterBroker(1, "h", 1), CreateTopic("t", ((1,),)), DeleteTopic("t")]
    assert _image(*records) == _image(*records)


RECORDS = [
    RegisterBroker(3, "127.0.0.1", 29092),
    CreateTopic("orders", ((1, 2, 3), (2, 3, 1)), {"min.insync.replicas": "2"}),
    CreateTopic("plain", ((1,),)),
    DeleteTopic("orders"),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_records_round_trip_through_dicts_and_json(record):
    d = record_to_dict(record)
    assert d["type"] == type(record).__name__
    assert record_from_dict(d) == record
    assert record_from_dict(json.loads(json.dumps(d))) == record


def test_create_topic_from_json_has_tuple_assignments():
    rec = record_from_dict(json.loads(json.dumps(record_to_dict(RECORDS[1]))))
    assert isinstance(rec.assignments, tuple) and all(isinstance(r, tuple) for r in rec.assignments)


def test_record_from_dict_does_not_mutate_its_argument():
    d = record_to_dict(RegisterBroker(1, "h", 1))
    record_from_dict(d)
    assert d["type"] == "RegisterBroker"


@given(name=st.text(min_size=1, max_size=20),
       assignments=st.lists(st.lists(st.integers(0, 10), min_size=1, max_size=4).map(tuple),
                            min_size=1, max_size=5).map(tuple),
       configs=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3))
def test_property_create_topic_round_trips_through_json(name, assignments, configs):
    rec = CreateTopic(name, assignments, configs)
    assert record_from_dict(json.loads(json.dumps(record_to_dict(rec)))) == rec


# ---- local_changes -----------------------------------------------------------------


BASE = _image(RegisterBroker(1, "h", 1), RegisterBroker(2, "h", 2), RegisterBroker(3, "h", 3))


def test_local_changes_split_new_partitions_by_role():
    new = apply(BASE, CreateTopic("t", ((1, 2), (2, 1), (2, 3))))
    ch = local_changes(BASE, new, 1)
    assert set(ch.leaders) == {("t", 0)}
    assert set(ch.followers) == {("t", 1)}
    assert ch.leaders[("t", 0)] == new.partition("t", 0)
    assert ch.deleted == []
    ch3 = local_changes(BASE, new, 3)
    assert (set(ch3.leaders), set(ch3.followers)) == (set(), {("t", 2)})


def test_local_changes_of_an_unrelated_change_are_empty():
    old = apply(BASE, CreateTopic("t", ((1, 2),)))
    new = apply(old, CreateTopic("u", ((2, 3),)))
    ch = local_changes(old, new, 1)
    assert not ch
    assert (ch.leaders, ch.followers, ch.deleted) == ({}, {}, [])
    assert not local_changes(old, apply(old, RegisterBroker(4, "h", 4)), 1)


def test_local_changes_list_deleted_partitions_sorted():
    old = apply(BASE, CreateTopic("t", ((2, 1), (1, 2), (3, 2))))
    new = apply(old, DeleteTopic("t"))
    ch = local_changes(old, new, 1)
    assert ch.deleted == [("t", 0), ("t", 1)]
    assert ch.leaders == {} and ch.followers == {}
    assert bool(ch)
