"""Replica placement: Kafka's rack-unaware assignment."""

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.metadata.placement import assign_replicas


def test_matches_kafka_rack_unaware_assignment_for_three_brokers():
    assert assign_replicas(6, 3, [1, 2, 3], start_index=0, shift=0) == (
        (1, 2, 3), (2, 3, 1), (3, 1, 2), (1, 3, 2), (2, 1, 3), (3, 2, 1))


def test_matches_kafka_rack_unaware_assignment_for_five_brokers():
    # worked by hand from Kafka's assignReplicasToBrokersRackUnaware: the shift grows at p = 5
    assert assign_replicas(10, 3, [0, 1, 2, 3, 4], start_index=0, shift=0) == (
        (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 0), (4, 0, 1),
        (0, 2, 3), (1, 3, 4), (2, 4, 0), (3, 0, 1), (4, 1, 2))


def test_broker_order_given_does_not_matter():
    assert assign_replicas(6, 3, [3, 1, 2]) == assign_replicas(6, 3, [1, 2, 3])


def test_leaders_spread_evenly():
    leaders = Counter(r[0] for r in assign_replicas(6, 3, [1, 2, 3], start_index=1, shift=1))
    assert leaders == {1: 2, 2: 2, 3: 2}


@pytest.mark.parametrize("rf", [0, 4, -1])
def test_replication_factor_out_of_range_raises(rf):
    with pytest.raises(ValueError):
        assign_replicas(3, rf, [1, 2, 3])


def test_no_brokers_raises():
    with pytest.raises(ValueError):
        assign_replicas(1, 1, [])


def test_zero_partitions_is_an_empty_assignment():
    assert assign_replicas(0, 1, [1]) == ()


@given(brokers=st.sets(st.integers(0, 100), min_size=1, max_size=8).map(sorted),
       partitions=st.integers(1, 50), data=st.data())
def test_property_replica_lists_are_distinct_and_leaders_balanced(brokers, partitions, data):
    n = len(brokers)
    rf = data.draw(st.integers(1, n))
    start = data.draw(st.integers(0, n - 1))
    shift = data.draw(st.integers(0, max(n - 2, 0)))
    out = assign_replicas(partitions, rf, brokers, start, shift)
    assert len(out) == partitions
    for replicas in out:
        assert len(replicas) == rf
        assert len(set(replicas)) == rf
        assert set(replicas) <= set(brokers)
    counts = Counter(r[0] for r in out)
    assert max(counts.values()) - min(counts.get(b, 0) for b in brokers) <= 1
