"""Kafka's validity rules for topic names, partition counts, replication factors and topic configs."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.log import LogConfig
from broker.log.config import TOPIC_CONFIG_FIELDS
from broker.metadata.topic_rules import (TOPIC_CONFIGS, partition_count_error, replication_factor_error,
                                         topic_config_error, topic_name_error)
from client.errors import (InvalidConfigError, InvalidPartitionsError, InvalidReplicationFactorError,
                           InvalidTopicError)


@pytest.mark.parametrize("name", ["a.b_c-1", "a", "A", "__consumer_offsets", "x" * 249, "...", "9"])
def test_valid_topic_names(name):
    assert topic_name_error(name) is None


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 250, "a b", "ü", "a/b", "a\\b", "a:b", "a\nb",
                                  "tab\t", "a*"])
def test_invalid_topic_names(name):
    assert isinstance(topic_name_error(name), InvalidTopicError)


@pytest.mark.parametrize("n", [1, 2, 10000])
def test_valid_partition_counts(n):
    assert partition_count_error(n) is None


@pytest.mark.parametrize("n", [0, -1, -5, 10001])
def test_invalid_partition_counts(n):
    assert isinstance(partition_count_error(n), InvalidPartitionsError)


def test_replication_factor_must_be_positive_and_at_most_the_live_brokers():
    assert replication_factor_error(1, 1) is None
    assert replication_factor_error(3, 3) is None
    assert isinstance(replication_factor_error(0, 3), InvalidReplicationFactorError)
    assert isinstance(replication_factor_error(-1, 3), InvalidReplicationFactorError)
    err = replication_factor_error(2, 1)
    assert isinstance(err, InvalidReplicationFactorError)
    assert "1 broker" in err.message
    assert isinstance(replication_factor_error(1, 0), InvalidReplicationFactorError)


@pytest.mark.parametrize("configs", [
    {},
    {"min.insync.replicas": "1"},
    {"retention.ms": "-1"},
    {"retention.ms": "604800000", "retention.bytes": "-1"},
    {"segment.bytes": "14"},
    {"segment.bytes": str(2**31 - 1)},
    {"segment.ms": "1"},
    {"index.interval.bytes": "0"},
    {"flush.messages": "-1"},
    {"flush.messages": "1"},
    {"max.message.bytes": "0"},
    {"unclean.leader.election.enable": "true"},
    {"unclean.leader.election.enable": "false"},
    {"cleanup.policy": "delete"},
])
def test_good_topic_configs(configs):
    assert topic_config_error(configs) is None


@pytest.mark.parametrize("configs", [
    {"min.insync.replicas": "0"},
    {"min.insync.replicas": "two"},
    {"retention.ms": "-2"},
    {"retention.bytes": "1.5"},
    {"segment.bytes": "13"},
    {"segment.ms": "0"},
    {"index.interval.bytes": "-1"},
    {"flush.messages": "0"},
    {"flush.messages": "-2"},
    {"max.message.bytes": "-1"},
    {"unclean.leader.election.enable": "yes"},
    {"unclean.leader.election.enable": "True"},
    {"cleanup.policy": "compact"},
    {"retention.ms": ""},
])
def test_bad_topic_config_values(configs):
    err = topic_config_error(configs)
    assert isinstance(err, InvalidConfigError)
    (key,) = configs
    assert key in err.message


def test_unknown_topic_config_key():
    err = topic_config_error({"retention.ms": "1", "no.such.key": "1"})
    assert isinstance(err, InvalidConfigError)
    assert "no.such.key" in err.message


@pytest.mark.parametrize("key", ["segment.bytes", "index.interval.bytes"])
def test_int_topic_configs_above_java_int_max_are_invalid(key):
    # In Kafka these are INT configs: a value above 2**31 - 1 is refused when the topic is
    # created. raftka's own partition log refuses them too (broker/log/config.py: segment
    # positions and index entries are int32), so accepting them here creates a topic whose
    # partitions the brokers then fail to open (LogConfig.from_topic_config raises ValueError).
    assert key in TOPIC_CONFIGS
    assert isinstance(topic_config_error({key: str(2**31)}), InvalidConfigError)


@given(key=st.sampled_from(sorted(TOPIC_CONFIG_FIELDS)),
       value=st.one_of(st.integers(-3, 20), st.integers(-(2**64), 2**64)).map(str))
def test_property_a_log_config_the_controller_accepts_is_one_the_log_accepts(key, value):
    # The controller validates topic configs; the brokers then build each partition's
    # LogConfig from them. A value that passes the first must not fail the second.
    if topic_config_error({key: value}) is None:
        LogConfig.from_topic_config({key: value}, LogConfig())
