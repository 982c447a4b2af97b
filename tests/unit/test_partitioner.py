"""Kafka's default partitioner: murmur2 with Kafka's own test vectors."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.partitioner import murmur2, partition_for_key


@pytest.mark.parametrize("key,expected", [
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
    (b"", 275646681),
])
def test_murmur2_matches_kafka_utils_test_vectors(key, expected):
    assert murmur2(key) == expected


@given(st.binary(max_size=64))
def test_murmur2_is_a_java_int(data):
    assert -(2**31) <= murmur2(data) < 2**31


@given(st.binary(max_size=64), st.integers(1, 1000))
def test_partition_for_key_is_in_range_and_stable(key, n):
    p = partition_for_key(key, n)
    assert 0 <= p < n
    assert partition_for_key(bytes(key), n) == p


def test_partition_for_key_uses_positive_murmur2_modulo_count():
    # murmur2(b"21") is negative: Kafka masks the sign bit, it does not take abs().
    assert partition_for_key(b"21", 7) == (-973932308 & 0x7FFFFFFF) % 7
    assert partition_for_key(b"21", 7) != abs(-973932308) % 7


def test_partition_for_key_spreads_keys_over_partitions():
    hits = {partition_for_key(f"key-{i}".encode(), 6) for i in range(200)}
    assert hits == set(range(6))
