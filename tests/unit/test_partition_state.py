"""PartitionState: leader epochs, and the high watermark as min LEO over the ISR."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from broker.metadata.image import PartitionRegistration
from broker.partition_state import PartitionState, truncation_offset
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


# ---- caught-up rule (Kafka's Replica.updateFetchState) -------------------------------


def test_a_fetch_at_the_leader_leo_is_caught_up_now():
    p = _leader(leo=10, now_ms=1000)
    p.on_follower_fetch(2, 10, 4000)
    assert p.followers[2].last_caught_up_ms == 4000


def test_a_fetch_reaching_the_leo_of_the_previous_fetch_is_caught_up_as_of_that_fetch():
    p = _leader(leo=10, now_ms=1000)
    p.on_follower_fetch(2, 6, 2000)           # the leader had 10 then
    p.on_leader_append(15)
    p.on_follower_fetch(2, 10, 3000)          # behind the LEO now, but holds what the leader had at 2000
    assert p.followers[2].last_caught_up_ms == 2000
    assert (p.followers[2].last_fetch_leader_log_end_offset, p.followers[2].last_fetch_ms) == (15, 3000)


def test_a_fetch_short_of_the_previous_leo_leaves_the_caught_up_time_alone():
    p = _leader(leo=10, now_ms=1000)
    p.on_follower_fetch(2, 6, 2000)
    p.on_leader_append(15)
    p.on_follower_fetch(2, 9, 3000)
    assert p.followers[2].last_caught_up_ms == 1000
    assert p.followers[2].log_end_offset == 9


# ---- HW: maximal ISR, min.insync.replicas ---------------------------------------------


def _reg(isr=(1, 2, 3), epoch=5, partition_epoch=0, leader=1, replicas=(1, 2, 3)) -> PartitionRegistration:
    return PartitionRegistration(replicas, isr, leader, epoch, partition_epoch)


def test_hw_waits_for_a_member_of_a_pending_expansion():
    p = _leader(_reg(isr=(1, 2)), leo=10)
    p.on_follower_fetch(3, 4, 1)
    p.pending_isr = (1, 2, 3)
    assert p.maximal_isr == (1, 2, 3)
    assert p.on_follower_fetch(2, 10, 1) is True
    assert p.high_watermark == 4                # held back by broker 3, not yet in the committed ISR
    p.pending_isr = None
    assert p.maybe_advance_high_watermark() is True
    assert p.high_watermark == 10


def test_dropping_a_pending_expansion_moves_the_hw_it_held_back():
    """Seen at 10,000 partitions: an expansion to broker 2 was refused (INELIGIBLE_REPLICA: 2 had died
    meanwhile); the follower in the ISR was already at the log end, so no fetch of it would come to move
    the HW, and acks=all produces waited for ever."""
    p = _leader(_reg(isr=(1, 3)), leo=17)
    p.on_follower_fetch(2, 16, 1)
    p.pending_isr = (1, 3, 2)
    assert p.on_follower_fetch(3, 17, 1) is True and p.high_watermark == 16   # broker 2 holds it back
    assert p.drop_pending_isr() is True
    assert (p.high_watermark, p.pending_isr) == (17, None)
    assert p.drop_pending_isr() is False


@pytest.mark.parametrize("min_isr,replicas,isr,effective,moves", [
    (2, (1, 2, 3), (1,), 2, False),             # one in sync, two needed: stored but not visible
    (2, (1, 2, 3), (1, 2), 2, True),
    (3, (1, 2), (1, 2), 2, True),               # min ISR above RF: RF counts
    (2, (1,), (1,), 1, True),
    (1, (1, 2, 3), (1,), 1, True),
])
def test_hw_moves_only_while_the_isr_reaches_the_effective_min_isr(min_isr, replicas, isr, effective, moves):
    p = PartitionState("t", 0, local_broker_id=1, min_insync_replicas=min_isr)
    p.become_leader(_reg(isr=isr, replicas=replicas), 1000)
    assert p.effective_min_isr == effective
    p.on_leader_append(5)
    for r in isr[1:]:
        p.on_follower_fetch(r, 5, 1000)
    assert p.high_watermark == (5 if moves else 0)


def test_hw_catches_up_once_the_isr_grows_back_to_min_isr():
    p = PartitionState("t", 0, local_broker_id=1, min_insync_replicas=2)
    p.become_leader(_reg(isr=(1,)), 1000)
    p.on_leader_append(5)
    p.on_follower_fetch(2, 5, 1000)
    assert p.high_watermark == 0
    assert p.become_leader(_reg(isr=(1, 2), partition_epoch=1), 2000) is False
    assert p.high_watermark == 5


# ---- ISR expansion and shrink ---------------------------------------------------------


@pytest.mark.parametrize("follower_leo,hw,epoch_start,expected", [
    (10, 10, 10, (1, 2, 3)),
    (12, 10, 11, (1, 2, 3)),
    (9, 10, 5, None),                           # below the HW
    (10, 10, 11, None),                         # below the start of this leader's epoch
])
def test_isr_to_expand_needs_the_hw_and_the_epoch_start(follower_leo, hw, epoch_start, expected):
    p = _leader(_reg(isr=(1, 2)), leo=12)
    p.high_watermark = hw
    p.on_follower_fetch(3, follower_leo, 1)
    assert p.isr_to_expand(3, epoch_start) == expected


def test_isr_to_expand_proposes_nothing_while_a_change_is_pending_or_for_a_member():
    p = _leader(_reg(isr=(1, 2)), leo=10)
    p.on_follower_fetch(2, 10, 1)
    p.on_follower_fetch(3, 10, 1)
    assert p.isr_to_expand(2, 0) is None        # already in the ISR
    assert p.isr_to_expand(9, 0) is None        # not a replica
    p.pending_isr = (1,)
    assert p.isr_to_expand(3, 0) is None
    p.pending_isr = None
    assert p.isr_to_expand(3, 0) == (1, 2, 3)


LAG_MS = 5000


def test_isr_to_shrink_drops_a_follower_behind_for_longer_than_the_lag_time():
    p = _leader(leo=10, now_ms=1000)
    p.on_follower_fetch(2, 10, 1000)
    p.on_follower_fetch(3, 8, 1000)
    assert p.isr_to_shrink(1000 + LAG_MS, LAG_MS) is None        # not more than the lag time yet
    assert p.isr_to_shrink(1001 + LAG_MS, LAG_MS) == (1, 2)


def test_a_follower_at_the_leader_leo_never_lags_however_old_its_caught_up_time():
    p = _leader(leo=10, now_ms=1000)
    p.on_follower_fetch(2, 10, 1000)
    p.on_follower_fetch(3, 10, 1000)
    assert p.isr_to_shrink(1000 + 100 * LAG_MS, LAG_MS) is None


def test_isr_to_shrink_keeps_the_leader_and_waits_for_a_pending_change():
    p = _leader(leo=10, now_ms=1000)
    p.pending_isr = (1, 2)
    assert p.isr_to_shrink(10 * LAG_MS, LAG_MS) is None
    p.pending_isr = None
    assert p.isr_to_shrink(10 * LAG_MS, LAG_MS) == (1,)          # neither follower ever fetched


# ---- role changes -----------------------------------------------------------------


def test_become_leader_at_the_same_epoch_keeps_follower_state_and_takes_the_new_isr():
    p = _leader(leo=10, now_ms=1000)
    p.on_follower_fetch(2, 7, 3000)
    p.pending_isr = (1, 2)
    before = (p.followers[2].log_end_offset, p.followers[2].last_caught_up_ms, p.followers[2].last_fetch_ms)
    assert p.become_leader(_reg(isr=(1, 2), partition_epoch=1), 9000) is False
    assert (p.isr, p.partition_epoch, p.leader_epoch, p.pending_isr) == ((1, 2), 1, 5, None)
    f = p.followers[2]
    assert (f.log_end_offset, f.last_caught_up_ms, f.last_fetch_ms) == before == (7, 1000, 3000)


def test_become_leader_at_a_new_epoch_resets_follower_state():
    p = _leader(leo=10, now_ms=1000)
    p.on_follower_fetch(2, 7, 3000)
    assert p.become_leader(_reg(epoch=6, partition_epoch=1), 9000) is True
    f = p.followers[2]
    assert (f.log_end_offset, f.last_caught_up_ms, f.last_fetch_leader_log_end_offset) == (-1, 9000, -1)


@pytest.mark.parametrize("reg,changed", [
    (_reg(leader=2), False),                                      # same leader and epoch
    (_reg(leader=2, isr=(2, 3), partition_epoch=1), False),       # only the ISR moved
    (_reg(leader=2, epoch=6), True),
    (_reg(leader=3, epoch=6), True),
])
def test_become_follower_says_whether_the_fetcher_must_move(reg, changed):
    p = PartitionState("t", 0, local_broker_id=1)
    assert p.become_follower(_reg(leader=2)) is True              # a first registration
    assert p.become_follower(reg) is changed


@pytest.mark.parametrize("leader_hw,leo,hw", [(10, 7, 7), (5, 7, 5), (7, 7, 7), (0, 0, 0)])
def test_a_follower_hw_is_the_leader_hw_bounded_by_its_own_leo(leader_hw, leo, hw):
    p = PartitionState("t", 0, local_broker_id=2)
    p.become_follower(REG)
    p.on_follower_append(leo, leader_hw)
    assert (p.log_end_offset, p.high_watermark) == (leo, hw)


# ---- truncation after a diverging epoch (AbstractFetcherThread) ----------------------


@pytest.mark.parametrize("diverging,own_end_for_epoch,own_hw,own_leo,expected", [
    ((3, 10), (3, 12), 8, 20, (10, True)),      # same epoch: the smaller end
    ((3, 12), (3, 10), 8, 20, (10, True)),
    ((3, 10), (3, 12), 8, 9, (9, True)),        # never past our own log end
    ((-1, -1), (-1, -1), 8, 20, (8, True)),     # the leader does not know our epoch: our HW
    ((3, 10), (-1, -1), 8, 20, (10, True)),     # we tracked no epoch there: the leader's end
    ((4, 10), (3, 12), 8, 20, (12, False)),     # another known epoch: cut to its end, ask again
    ((4, 15), (3, 12), 8, 11, (11, False)),
])
def test_truncation_offset(diverging, own_end_for_epoch, own_hw, own_leo, expected):
    assert truncation_offset(*diverging, own_end_for_epoch, own_hw, own_leo) == expected


# ---- property: the HW under a leader's whole term -----------------------------------


class LeaderTerm(RuleBasedStateMachine):
    """One leadership at one epoch: appends, follower fetches, ISR changes proposed and committed.

    Each follower's real log end (``held``) only grows by fetching; a fetch tells the
    leader what the follower held when it asked. The HW must never go back and never
    pass what an ISR member really holds.
    """

    @initialize(start=st.integers(0, 5), min_isr=st.integers(1, 3), isr=st.sampled_from([(1,), (1, 2), (1, 2, 3)]))
    def start(self, start, min_isr, isr):
        self.p = PartitionState("t", 0, local_broker_id=1, min_insync_replicas=min_isr,
                                log_end_offset=start, high_watermark=start)
        self.now = 0
        self.epoch_start = start
        self.held = {r: start if r in isr else 0 for r in (2, 3)}
        assert self.p.become_leader(_reg(isr=isr), self.now) is True
        self.hw = self.p.high_watermark

    @rule(n=st.integers(1, 5))
    def append(self, n):
        self.p.on_leader_append(self.p.log_end_offset + n)

    @rule(r=st.sampled_from([2, 3]), n=st.integers(0, 5), elapsed=st.integers(0, 3 * LAG_MS))
    def fetch(self, r, n, elapsed):
        self.now += elapsed
        self.p.on_follower_fetch(r, self.held[r], self.now)
        self.held[r] = min(self.held[r] + n, self.p.log_end_offset)

    @rule(r=st.sampled_from([2, 3]))
    def expand(self, r):
        new = self.p.isr_to_expand(r, self.epoch_start)
        if new is not None:
            self.p.pending_isr = new

    @rule()
    def shrink(self):
        new = self.p.isr_to_shrink(self.now, LAG_MS)
        if new is not None:
            self.p.pending_isr = new

    @rule(accepted=st.booleans())
    def controller_answers(self, accepted):
        if self.p.pending_isr is None:
            return
        if not accepted:
            self.p.pending_isr = None
            return
        reg = _reg(isr=self.p.pending_isr, partition_epoch=self.p.partition_epoch + 1)
        assert self.p.become_leader(reg, self.now) is False

    @invariant()
    def hw_is_safe(self):
        p = self.p
        if len(p.isr) < p.effective_min_isr:
            assert p.high_watermark == self.hw
        assert p.high_watermark >= self.hw
        assert p.high_watermark <= p.log_end_offset
        assert all(p.high_watermark <= self.held[r] for r in p.isr if r != 1)
        self.hw = p.high_watermark


LeaderTerm.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_property_hw_never_moves_back_nor_past_an_isr_member = LeaderTerm.TestCase


# ---- invariants as checks (broker/invariants.py) -------------------------------------------


def test_a_broken_offset_invariant_stops_with_its_name():
    from broker.invariants import InvariantViolation, set_violation_handler
    halted = []
    set_violation_handler(halted.append)
    try:
        s = PartitionState("t", 0, 1, log_start_offset=5, log_end_offset=10, high_watermark=7)
        s.on_truncated(5, 8)                      # fine: HW 7 <= LEO 8
        assert (s.high_watermark, s.log_end_offset) == (7, 8)
        s.high_watermark = 9                      # a bug elsewhere: past the log end
        with pytest.raises(InvariantViolation) as e:
            s.on_log_start_moved(5)
        assert e.value.name == "log_start_le_hw_le_leo"
        assert [v.name for v in halted] == ["log_start_le_hw_le_leo"]
    finally:
        set_violation_handler(None)


def test_an_isr_proposal_without_its_leader_is_an_invariant_violation():
    from broker.invariants import InvariantViolation
    s = PartitionState("t", 0, 1)
    with pytest.raises(InvariantViolation) as e:
        s.propose_isr((2, 3))
    assert e.value.name == "isr_holds_leader" and s.pending_isr is None
    with pytest.raises(InvariantViolation):
        s.propose_isr(())


def test_truncation_below_the_hw_pulls_the_hw_back_within_the_log():
    s = PartitionState("t", 0, 1, log_start_offset=0, log_end_offset=10, high_watermark=8)
    s.on_truncated(0, 6)
    assert s.high_watermark == 6
    s.on_truncated(20, 20)                        # an out-of-range reset to the leader's log start
    assert (s.log_start_offset, s.high_watermark, s.log_end_offset) == (20, 20, 20)
