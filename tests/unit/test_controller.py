"""The controller: validation, placement and records for topic creation and deletion."""

import random

import pytest

from broker.config import BrokerSettings
from broker.controller import Controller, TopicRequest
from broker.metadata.local_store import LocalMetadataStore
from broker.metadata.records import RegisterBroker
from client.errors import (InvalidConfigError, InvalidPartitionsError, InvalidReplicationFactorError,
                           InvalidTopicError, TopicAlreadyExistsError, UnknownTopicOrPartitionError)


@pytest.fixture
def store(tmp_path):
    s = LocalMetadataStore(tmp_path / "metadata.log", "c1")
    s.submit(RegisterBroker(1, "127.0.0.1", 9092))
    yield s
    s.close()


@pytest.fixture
def controller(store):
    return Controller(store, BrokerSettings(), random.Random(0))


def _req(name="t", partitions=3, rf=1, configs=None):
    return TopicRequest(name, partitions, rf, configs or {})


def test_create_topic_returns_none_and_the_topic_appears(controller, store):
    assert controller.create_topic(_req(configs={"retention.ms": "1000"})) is None
    topic = store.image.topics["t"]
    assert [p.replicas for p in topic.partitions] == [(1,), (1,), (1,)]
    assert all(p.leader == 1 for p in topic.partitions)
    assert dict(topic.configs) == {"retention.ms": "1000"}
    assert controller.image is store.image


def test_creating_an_existing_topic_is_topic_already_exists(controller, store):
    controller.create_topic(_req())
    offset = store.image.offset
    assert isinstance(controller.create_topic(_req(partitions=1)), TopicAlreadyExistsError)
    assert store.image.offset == offset
    assert len(store.image.topics["t"].partitions) == 3


def test_default_partitions_and_replication_factor_come_from_the_settings(store):
    c = Controller(store, BrokerSettings(num_partitions=4, default_replication_factor=1))
    assert c.create_topic(_req(partitions=-1, rf=-1)) is None
    assert len(store.image.topics["t"].partitions) == 4


def test_default_replication_factor_above_the_live_brokers_is_refused(store):
    c = Controller(store, BrokerSettings(default_replication_factor=3))
    assert isinstance(c.create_topic(_req(rf=-1)), InvalidReplicationFactorError)
    assert "t" not in store.image.topics


def test_replication_factor_two_with_one_broker_is_refused(controller, store):
    assert isinstance(controller.create_topic(_req(rf=2)), InvalidReplicationFactorError)
    assert "t" not in store.image.topics


def test_replication_factor_three_with_three_brokers_places_every_broker(store):
    store.submit(RegisterBroker(2, "127.0.0.1", 19092))
    store.submit(RegisterBroker(3, "127.0.0.1", 29092))
    c = Controller(store, BrokerSettings(), random.Random(1))
    assert c.create_topic(_req(partitions=6, rf=3)) is None
    parts = store.image.topics["t"].partitions
    assert all(sorted(p.replicas) == [1, 2, 3] for p in parts)
    assert sorted(p.leader for p in parts) == [1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("name", ["", "a b", "..", "x" * 250])
def test_invalid_topic_name_is_invalid_topic(controller, store, name):
    assert isinstance(controller.create_topic(_req(name=name)), InvalidTopicError)
    assert dict(store.image.topics) == {}


def test_zero_partitions_is_invalid_partitions(controller):
    assert isinstance(controller.create_topic(_req(partitions=0)), InvalidPartitionsError)


def test_bad_topic_config_is_invalid_config(controller, store):
    assert isinstance(controller.create_topic(_req(configs={"retention.ms": "soon"})), InvalidConfigError)
    assert "t" not in store.image.topics


def test_validate_only_checks_but_does_not_create(controller, store):
    offset = store.image.offset
    assert controller.create_topic(_req(), validate_only=True) is None
    assert "t" not in store.image.topics and store.image.offset == offset
    assert isinstance(controller.create_topic(_req(rf=2), validate_only=True), InvalidReplicationFactorError)


def test_delete_topic_removes_it(controller, store):
    controller.create_topic(_req())
    assert controller.delete_topic("t") is None
    assert "t" not in store.image.topics


def test_delete_unknown_topic_is_unknown_topic_or_partition(controller, store):
    offset = store.image.offset
    assert isinstance(controller.delete_topic("nope"), UnknownTopicOrPartitionError)
    assert store.image.offset == offset
