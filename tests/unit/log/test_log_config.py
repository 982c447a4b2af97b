"""LogConfig: Kafka's defaults and topic-config overrides."""

import pytest

from broker.log import LogConfig


def test_defaults_are_kafkas():
    c = LogConfig()
    assert c.segment_bytes == 1073741824
    assert c.segment_ms == 604800000
    assert c.retention_ms == 604800000
    assert c.retention_bytes == -1
    assert c.index_interval_bytes == 4096
    assert c.flush_interval_messages == -1


def test_topic_config_overrides_defaults_and_ignores_other_keys():
    defaults = LogConfig(retention_ms=1000)
    c = LogConfig.from_topic_config(
        {"segment.bytes": "2048", "segment.ms": "60000", "retention.bytes": "4096",
         "index.interval.bytes": "100", "flush.messages": "1", "min.insync.replicas": "2"},
        defaults)
    assert c == LogConfig(segment_bytes=2048, segment_ms=60000, retention_ms=1000, retention_bytes=4096,
                          index_interval_bytes=100, flush_interval_messages=1)


def test_unlimited_values_are_accepted():
    c = LogConfig.from_topic_config({"retention.ms": "-1", "retention.bytes": "-1", "flush.messages": "-1"},
                                    LogConfig())
    assert (c.retention_ms, c.retention_bytes, c.flush_interval_messages) == (-1, -1, -1)


@pytest.mark.parametrize("key, value, words", [
    ("segment.bytes", "big", "expected an integer"),
    ("segment.bytes", "13", "segment.bytes"),
    ("segment.bytes", str(2**31), "segment.bytes"),
    ("segment.ms", "0", "segment.ms"),
    ("retention.ms", "-2", "retention.ms"),
    ("retention.bytes", "1.5", "expected an integer"),
    ("index.interval.bytes", "-1", "index.interval.bytes"),
    ("flush.messages", "0", "-1 or an integer >= 1"),
])
def test_bad_values_raise_a_clear_error(key, value, words):
    with pytest.raises(ValueError) as e:
        LogConfig.from_topic_config({key: value}, LogConfig())
    assert key in str(e.value) and words in str(e.value)


def test_direct_construction_is_validated_too():
    with pytest.raises(ValueError, match="segment.bytes"):
        LogConfig(segment_bytes=0)
