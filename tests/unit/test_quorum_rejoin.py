"""A rejoining quorum node (its data dir formatted after a lost disk) neither votes nor stands until caught up.

Three in-process pysyncobj nodes on loopback ports (MetadataQuorum, as the broker builds it); the
real-process version, with committed topics and a lagging peer, is tests/integration/test_wiped_disk.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pysyncobj import SyncObj

from broker.metadata.quorum import MetadataQuorum, _RaftNode
from broker.metadata.records import AllocateProducerIds
from tests.integration.cluster import free_ports, wait_for

TIMEOUTS_S = (0.1, 0.2)   # election timeout range: fast, so a refused vote comes round quickly


@pytest.fixture
def nodes(tmp_path):
    """make(rejoining={ids}) -> {id: MetadataQuorum} of a 3-node group, not started; all stopped at the end."""
    made: list[MetadataQuorum] = []
    ports = free_ports(3)
    addresses = {i: f"127.0.0.1:{ports[i - 1]}" for i in (1, 2, 3)}

    def make(rejoining: frozenset[int] = frozenset(), marked: list | None = None) -> dict[int, MetadataQuorum]:
        out = {}
        for i, address in addresses.items():
            data_dir: Path = tmp_path / f"broker-{i}"
            data_dir.mkdir(exist_ok=True)
            q = MetadataQuorum("c1", address, {j: a for j, a in addresses.items() if j != i}, i, data_dir,
                               "unit-test-secret", TIMEOUTS_S, 0.02, rejoining=i in rejoining,
                               mark_voter=(lambda i=i: marked.append(i)) if marked is not None else None)
            made.append(q)
            out[i] = q
        return out

    yield make
    for q in made:
        q.stop()


def test_the_pysyncobj_private_names_the_adapter_relies_on_exist():
    # pysyncobj 0.3.17 is pinned; if an upgrade renames these, the rejoin rule would silently stop working.
    for name in ("_SyncObj__onMessageReceived", "_SyncObj__getEntries", "_onTick"):
        assert callable(getattr(SyncObj, name)), name
    assert _RaftNode._SyncObj__onMessageReceived is not SyncObj._SyncObj__onMessageReceived


def test_a_rejoining_node_refuses_its_vote_so_a_lone_voter_cannot_lead(nodes):
    q = nodes(rejoining=frozenset({3}))
    q[1].start()
    q[3].start()
    # Node 1 needs one more vote (2 of 3); node 3's is the only one it can get, and node 3 drops each request.
    wait_for(lambda: q[3]._gate.votes_refused >= 3, 10, "node 3 to refuse three RequestVotes")
    assert not q[1].is_leader() and not q[3].is_leader()
    assert not q[3].voting


def test_a_rejoining_node_becomes_a_voter_once_caught_up_and_then_votes(nodes):
    marked: list[int] = []
    q = nodes(rejoining=frozenset({3}), marked=marked)
    for node in q.values():
        node.start()
    leader = wait_for(lambda: next((i for i in (1, 2) if q[i].leader_caught_up()), None), 10, "node 1 or 2 to lead")
    for _ in range(5):
        q[leader].submit([AllocateProducerIds(broker_id=1, count=10)], timeout_s=5)
    offset = q[leader].image.offset
    wait_for(lambda: q[3].voting, 10, "node 3 to become a voter")
    assert marked == [3]   # persisted (meta.properties) before it votes
    # It may have become a voter at an earlier commit index (caught up then); it keeps following.
    wait_for(lambda: q[3].image.offset >= offset, 10, f"node 3 to apply up to offset {offset}")
    # Now its vote counts: with the old leader gone, the other voter and node 3 elect a leader.
    other = 3 - leader
    q[leader].stop()
    wait_for(lambda: q[other].leader_caught_up() or q[3].leader_caught_up(), 10,
             f"node {other} or node 3 to lead without node {leader}")
