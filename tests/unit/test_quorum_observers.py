"""Observers (brokers left out of controller_quorum_voters) replicate the metadata log but never vote or lead.

Five in-process pysyncobj nodes on loopback ports, built as the broker builds them (MetadataQuorum with
``voters``): 1-3 vote, 4 and 5 observe. The real-process version, with topics, produce and a kill -9 of
the controller, is tests/integration/test_five_brokers.py.
"""

from __future__ import annotations

import socket

import pytest

from broker.metadata.quorum import MetadataQuorum
from broker.metadata.records import AllocateProducerIds
from tests.integration.cluster import free_ports, wait_for

# Election timeouts: short, yet several heartbeats (HEARTBEAT_S) long, so that a loaded machine does not churn leaders.
TIMEOUTS_S, HEARTBEAT_S = (0.3, 0.6), 0.05
VOTERS = frozenset({1, 2, 3})
IDS = (1, 2, 3, 4, 5)


@pytest.fixture
def quorum(tmp_path):
    """{id: MetadataQuorum} of five nodes, voters 1-3, all started; all stopped at the end."""
    ports = free_ports(len(IDS))
    addresses = {i: f"127.0.0.1:{ports[i - 1]}" for i in IDS}
    nodes = {}
    for i in IDS:
        (tmp_path / f"broker-{i}").mkdir()
        nodes[i] = MetadataQuorum("c1", addresses[i], {j: a for j, a in addresses.items() if j != i}, i,
                                  tmp_path / f"broker-{i}", "unit-test-secret", TIMEOUTS_S, HEARTBEAT_S, voters=VOTERS)
    for node in nodes.values():
        node.start()
    yield nodes
    for node in nodes.values():
        node.stop()


def _again(q: MetadataQuorum) -> MetadataQuorum:
    """A new start of ``q``'s broker on the same address and data dir (``q`` stopped)."""
    again = MetadataQuorum("c1", q._self_address, {**q._voter_peers, **q._observer_peers}, q.local_broker_id,
                           q._data_dir, "unit-test-secret", TIMEOUTS_S, HEARTBEAT_S, voters=VOTERS)
    again.start()
    return again


def _agreed(nodes: dict[int, MetadataQuorum], gone: int = -1) -> int | None:
    """The controller every node names, once they all name the same one (and not ``gone``, a stopped node
    that survivors keep naming until they elect another)."""
    named = {q.controller_id() for q in nodes.values()}
    return named.pop() if len(named) == 1 and not named & {-1, gone} else None


def _leader(nodes: dict[int, MetadataQuorum]) -> int | None:
    leaders = [i for i, q in nodes.items() if q.leader_caught_up()]
    return leaders[0] if len(leaders) == 1 else None


def test_observers_apply_every_commit_and_name_a_voter_as_controller(quorum):
    leader = wait_for(lambda: _leader(quorum), 10, "one of the voters to lead")
    assert leader in VOTERS
    assert [i for i in IDS if quorum[i].observer] == [4, 5]
    assert not quorum[4].voting and not quorum[5].voting and quorum[1].voting
    for _ in range(3):
        quorum[leader].submit([AllocateProducerIds(broker_id=4, count=10)], timeout_s=5)
    offset = quorum[leader].image.offset
    wait_for(lambda: all(quorum[i].image.offset >= offset for i in (4, 5)), 10, f"observers to apply offset {offset}")
    assert wait_for(lambda: _agreed(quorum), 10, "every node to name one controller") in VOTERS


def test_an_observer_binds_no_raft_port_and_forwards_its_commits_to_the_leader(quorum):
    wait_for(lambda: _leader(quorum), 10, "one of the voters to lead")
    with pytest.raises(ConnectionRefusedError):
        host, port = quorum[4]._self_address.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=2).close()
    # An observer's own commit goes to the leader over its link (pysyncobj's apply_command), as a follower's.
    wait_for(lambda: quorum[4].controller_id() in VOTERS, 10, "observer 4 to know the leader")
    outcome = quorum[4].submit([AllocateProducerIds(broker_id=4, count=10)], timeout_s=5)
    assert outcome.applied


def test_the_voters_see_each_observers_own_link_and_elect_among_themselves_only(quorum):
    leader = wait_for(lambda: _leader(quorum), 10, "one of the voters to lead")
    wait_for(lambda: quorum[leader].peer_connected(4) and quorum[leader].peer_connected(5), 10,
             "the leader to see both observers' links")
    quorum[5].stop()
    wait_for(lambda: not quorum[leader].peer_connected(5), 10, "the leader to see observer 5's link drop")
    assert quorum[leader].peer_connected(4)
    quorum[5] = _again(quorum[5])   # a restart: the same observer, known again under the same node
    wait_for(lambda: quorum[leader].peer_connected(5), 10, "the leader to see observer 5's link back")
    # The leader goes: only the two voters left can elect (2 of 3), however many observers remain.
    quorum[leader].stop()
    rest = {i: q for i, q in quorum.items() if i not in (leader, 5)}   # two voters and observer 4
    new = wait_for(lambda: _agreed(rest, leader), 10, "the voters left and observer 4 to name one new controller")
    assert new in VOTERS - {leader}
    outcome = quorum[4].submit([AllocateProducerIds(broker_id=4, count=10)], timeout_s=5)
    wait_for(lambda: quorum[4].image.offset > outcome.offset, 10, "observer 4 to apply its own commit")


def test_observers_alone_never_stand(quorum):
    wait_for(lambda: _leader(quorum), 10, "one of the voters to lead")
    for i in VOTERS:
        quorum[i].stop()
    wait_for(lambda: not any(quorum[4].peer_connected(i) for i in VOTERS), 10, "observer 4 to lose every voter")
    # pysyncobj starts an election only on a node with a selfNode: an observer, read-only, has none.
    assert quorum[4]._raft.selfNode is None and quorum[5]._raft.selfNode is None
    assert not quorum[4].is_leader() and not quorum[5].is_leader()
