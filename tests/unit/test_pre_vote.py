"""Pre-vote (broker/metadata/pre_vote.py): a voter asks before it stands, so a live leader is not deposed.

The rules are driven directly. Then three in-process pysyncobj nodes (MetadataQuorum, as the broker builds
it) on loopback ports replay what a restart at 10,000 partitions did: the restarted node times out before
the leader's redial reaches it, while it is already linked to the other follower.
"""

from __future__ import annotations

import pytest

from broker.metadata.pre_vote import PRE_VOTE, PRE_VOTE_RESPONSE, LogPosition, PreVote
from broker.metadata.quorum import MetadataQuorum
from broker.metadata.records import AllocateProducerIds
from tests.integration.cluster import free_ports, wait_for

AT = LogPosition(term=3, index=40)


def request(term: int = 4, last: LogPosition = AT) -> dict:
    return {"type": PRE_VOTE, "term": term, "last_log_term": last.term, "last_log_index": last.index}


def test_a_peer_that_hears_a_leader_refuses_and_grants_once_the_leader_is_quiet():
    p = PreVote(quiet_s=0.3)
    p.heard_from_leader(now=10.0)
    assert "heard from the leader" in p.refusal(request(), now=10.1, current_term=3, last=AT, leading=False)
    assert p.refusal(request(), now=10.31, current_term=3, last=AT, leading=False) is None


def test_a_leader_refuses_and_so_does_a_peer_with_a_longer_log_or_the_same_term():
    p = PreVote(quiet_s=0.3)
    assert p.refusal(request(), now=100.0, current_term=3, last=AT, leading=True) == "this node is the leader"
    assert "behind" in p.refusal(request(last=LogPosition(3, 39)), now=100.0, current_term=3, last=AT, leading=False)
    assert "behind" in p.refusal(request(last=LogPosition(2, 99)), now=100.0, current_term=3, last=AT, leading=False)
    assert "not above" in p.refusal(request(term=3), now=100.0, current_term=3, last=AT, leading=False)
    assert p.refusal(request(last=LogPosition(4, 1)), now=100.0, current_term=3, last=AT, leading=False) is None


def test_a_round_is_won_by_a_majority_of_grants_for_its_own_term_and_taken_once():
    p = PreVote(quiet_s=0.3)
    sent = p.start_round(current_term=3, last=AT)
    assert sent == request()
    refused = {"type": PRE_VOTE_RESPONSE, "term": 4, "granted": False}
    stale = {"type": PRE_VOTE_RESPONSE, "term": 3, "granted": True}
    assert not p.on_response("b", refused, voters=5) and not p.on_response("b", stale, voters=5)
    granted = PreVote.response(sent, None)
    assert not p.on_response("b", granted, voters=5)      # 2 of 5 with its own
    assert not p.on_response("b", granted, voters=5)      # the same voter twice counts once
    assert p.on_response("c", granted, voters=5)          # 3 of 5
    assert not p.take_win(current_term=4)                 # its term moved on: the win is void
    p.won_term = 4
    assert p.take_win(current_term=3) and not p.take_win(current_term=3)


def test_hearing_a_leader_ends_an_open_round():
    p = PreVote(quiet_s=0.3)
    sent = p.start_round(current_term=3, last=AT)
    p.heard_from_leader(now=5.0)
    assert not p.on_response("b", PreVote.response(sent, None), voters=3)
    assert not p.take_win(current_term=3)


@pytest.fixture
def quorum(tmp_path):
    """(addresses by role, make(role, timeouts) -> started MetadataQuorum); every node stopped at the end.

    pysyncobj's larger address dials the smaller one, and redials once a second. So with addresses
    leader > restarted > follower, the restarted node dials the follower at once and the leader's redial
    reaches it up to a second later, long after its 0.1-0.2 s election timeout."""
    made: list[MetadataQuorum] = []
    low, mid, high = sorted(free_ports(3))
    addresses = {"follower": f"127.0.0.1:{low}", "restarted": f"127.0.0.1:{mid}", "leader": f"127.0.0.1:{high}"}
    ids = {"follower": 1, "restarted": 2, "leader": 3}

    def make(role: str, timeouts: tuple[float, float]) -> MetadataQuorum:
        data_dir = tmp_path / role
        data_dir.mkdir(exist_ok=True)
        peers = {ids[r]: a for r, a in addresses.items() if r != role}
        q = MetadataQuorum("c1", addresses[role], peers, ids[role], data_dir, "unit-test-secret", timeouts, 0.02)
        made.append(q)
        q.start()
        return q

    yield make
    for q in made:
        q.stop()


def test_a_restarted_voter_does_not_depose_the_live_leader(quorum):
    slow = (1.0, 1.5)
    leader = quorum("leader", (0.1, 0.15))   # times out first: leads
    follower = quorum("follower", slow)
    restarted = quorum("restarted", slow)
    wait_for(leader.leader_caught_up, 10, "the fast node to lead")
    term = leader.term()
    for attempt in range(3):
        restarted.stop()
        leader.submit([AllocateProducerIds(broker_id=1, count=10)], timeout_s=5)   # committed by 2 of 3
        offset = leader.image.offset
        restarted = quorum("restarted", (0.1, 0.2))   # its timer fires long before the leader redials
        wait_for(lambda: restarted.image.offset >= offset, 10, f"restart {attempt}: the node to catch up")
        assert leader.is_leader() and leader.term() == term, \
            f"restart {attempt}: the leader was deposed (term {term} -> {leader.term()})"
        assert restarted.term() == term and follower.term() == term
