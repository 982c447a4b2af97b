"""PartitionState: leader epochs, and the high watermark as min LEO over the ISR."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.metadata.image import PartitionRegistration
from broker.partition import PartitionState
from client.errors import FencedLeaderEpochError, NotLeaderOrFollowerError, UnknownLeaderEpochError

REG = PartitionRegistration(replicas=(1, 2, 3), isr=(1, 2, 3), leader=1, leader_epoch=5)


def _leader(reg: PartitionRegistration = REG, now_ms: int = 1000, leo: int = 0) -> PartitionState:
    p = PartitionState("t", 0, local_broker_id=1)
    p.log_end_offset = leo
    p.become_leader(reg, now_ms)
    return p


def test_become_leader_takes_the_registration():
    p = _leader()
    assert p.is_leader
    assert (p.leader_id, p.leader_epoch, p.replicas, p.isr) == (1, 5, (1, 2, 3), (1, 2, 3))
    assert set(p.followers) == {2, 3}
    assert all(f.last_caught_up_ms == 1000 and f.log_end_offset == -1 for f in p.followers.values())


def test_check_leader_epoch_on_a_follower_is_not_leader_or_follower():
    p = PartitionState("t", 0, local_broker_id=2)
    p.become_follower(REG)
    assert isinstance(p.check_leader_epoch(5), NotLeaderOrFollowerError)
    assert isinstance(p.check_leader_epoch(-1), NotLeaderOrFollowerError)


def test_check_leader_epoch_before_any_registration_is_not_leader_or_follower():
    assert isinstance(PartitionState("t", 0, local_broker_id=1).check_leader_epoch(-1),
                      NotLeaderOrFollowerError)


@pytest.mark.parametrize("epoch,error", [(5, None), (-1, None), (4, FencedLeaderEpochError),
                                         (0, FencedLeaderEpochError), (6, UnknownLeaderEpochError),
                                         (100, UnknownLeaderEpochError)])
def test_check_leader_epoch_on_the_leader(epoch, error):
    result = _leader().check_leader_epoch(epoch)
    if error is None:
        assert result is None
    else:
        assert type(result) is error


def test_hw_is_min_leo_over_the_isr():
    p = _leader()
    assert p.on_leader_append(10) is False  # followers have not fetched yet
    assert p.high_watermark == 0
    assert p.on_follower_fetch(2, 7, 2000) is False  # 3 still at -1
    assert p.on_follower_fetch(3, 4, 2000) is True
    assert p.high_watermark == 4
    assert p.on_follower_fetch(3, 10, 2000) is True
    assert p.high_watermark == 7
    assert p.on_follower_fetch(2, 10, 2000) is True
    assert p.high_watermark == 10


def test_hw_is_bounded_by_the_leader_own_leo():
    p = _leader(leo=5)
    p.on_follower_fetch(2, 5, 1)
    p.on_follower_fetch(3, 5, 1)
    assert p.high_watermark == 5
    p.on_leader_append(9)
    assert p.high_watermark == 5


def test_hw_never_moves_back():
    p = _leader(leo=10)
    p.on_follower_fetch(2, 10, 1)
    p.on_follower_fetch(3, 10, 1)
    assert p.high_watermark == 10
    assert p.on_follower_fetch(2, 3, 2) is False  # a follower that truncated
    assert p.high_watermark == 10
    # a new leadership at a later epoch: followers start unknown again
    p.become_leader(PartitionRegistration((1, 2, 3), (1, 2, 3), 1, leader_epoch=6), 3)
    assert p.high_watermark == 10


def test_followers_outside_the_isr_do_not_hold_the_hw_back():
    p = _leader(PartitionRegistration(replicas=(1, 2, 3), isr=(1, 2), leader=1, leader_epoch=5), leo=8)
    assert p.on_follower_fetch(2, 8, 1) is True
    assert p.high_watermark == 8  # broker 3 never fetched
    assert p.followers[3].log_end_offset == -1


def test_single_replica_leader_hw_follows_its_own_leo():
    p = _leader(PartitionRegistration(replicas=(1,), isr=(1,), leader=1, leader_epoch=0))
    assert p.on_leader_append(3) is True
    assert p.high_watermark == 3


def test_on_follower_fetch_updates_last_caught_up_only_when_at_the_leader_leo():
    p = _leader(leo=10, now_ms=1000)
    p.on_follower_fetch(2, 9, 5000)
    assert p.followers[2].last_caught_up_ms == 1000
    assert p.followers[2].log_end_offset == 9
    p.on_follower_fetch(2, 10, 6000)
    assert p.followers[2].last_caught_up_ms == 6000


def test_fetch_from_a_broker_that_is_not_a_replica_is_ignored():
    p = _leader(leo=10)
    assert p.on_follower_fetch(9, 10, 1) is False
    assert 9 not in p.followers


def test_a_follower_never_advances_its_hw():
    p = PartitionState("t", 0, local_broker_id=2)
    p.become_follower(REG)
    assert not p.is_leader
    assert p.followers == {}
    assert p.on_leader_append(10) is False
    assert p.on_follower_fetch(3, 10, 1) is False
    assert p.maybe_advance_high_watermark() is False
    assert p.high_watermark == 0


def test_leader_becoming_follower_forgets_its_followers():
    p = _leader(leo=10)
    p.become_follower(PartitionRegistration((1, 2, 3), (1, 2, 3), leader=2, leader_epoch=6))
    assert p.followers == {}
    assert isinstance(p.check_leader_epoch(6), NotLeaderOrFollowerError)


@given(st.lists(st.tuples(st.sampled_from(["append", 2, 3]), st.integers(0, 50)), max_size=40))
def test_property_hw_is_max_of_previous_hw_and_min_isr_leo(events):
    p = _leader()
    leo = 0
    for who, value in events:
        before = p.high_watermark
        if who == "append":
            leo = max(leo, value)
            p.on_leader_append(leo)
        else:
            p.on_follower_fetch(who, min(value, leo), 0)
        min_leo = min(p.log_end_offset, p.followers[2].log_end_offset, p.followers[3].log_end_offset)
        assert p.high_watermark == max(before, min_leo)
        assert p.high_watermark <= p.log_end_offset
