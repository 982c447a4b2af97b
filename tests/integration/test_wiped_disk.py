"""A broker whose disk was lost rejoins the metadata quorum without a vote until it has caught up (issue 14, defect 6).

Three real brokers. The scenario is the one where a wiped node's vote loses committed metadata:
a topic is committed while one broker (the lagging one) is down, so only the two others hold
it; then one of those two loses its disk and the other goes down. Left alone with the lagging
broker, an empty log that votes would elect it (any log is as up to date as an empty one), and
its log would then overwrite the topic on the last node that has it. A rejoining node drops the
(Pre)Votes instead: no controller until the up-to-date broker is back, then everything
committed is there, and the wiped node, caught up, is a voter again.

Every broker is started and ended here, by PID; every wait has a deadline (nothing is asserted
after a sleep: the "no controller" check follows the wiped node's logged refusals).
"""

from __future__ import annotations

import pytest

from broker.log.meta_properties import REJOINING, VOTER, read_meta_properties
from broker.metadata.pre_vote import PRE_VOTE
from client.protocol.v1 import common_pb2
from tests.integration.cluster import BrokerProcess, Cluster, log_events, metadata, wait_for, wait_log_events
from tests.integration.test_cluster_quorum import create_and_wait, create_topic_via, events_since_last_start

pytestmark = pytest.mark.integration

READY_S = 30.0


def topics_of(broker: BrokerProcess) -> set[str] | None:
    """The topics in ``broker``'s own applied image (its Metadata answer), None while it does not answer."""
    r = metadata(broker)
    return None if r is None else {t.name for t in r.topics if t.error_code == common_pb2.NONE}


def refused_votes(broker: BrokerProcess, candidate: int) -> int:
    """RequestVotes and PreVotes (the candidate's first step: broker/metadata/pre_vote.py) it refused."""
    return sum(1 for e in log_events(broker, "quorum_vote_refused")   # only a rejoining run refuses
               if e.get("message") in ("request_vote", PRE_VOTE) and e.get("candidate") == candidate)


def commit_while_lagging(cluster: Cluster, wiped: BrokerProcess, current: BrokerProcess,
                         lagging: BrokerProcess) -> None:
    """'before' on all three; 'while-lagging' with ``lagging`` down, so only ``wiped`` and ``current`` hold it."""
    create_and_wait(cluster, current, "before", partitions=1, replication_factor=3)
    lagging.kill()
    cluster.wait_controller([wiped, current], exclude=(lagging.broker_id,))
    result = create_topic_via(current, "while-lagging", 1, 2)
    assert result.error_code == common_pb2.NONE, result
    for b in (wiped, current):
        wait_for(lambda b=b: "while-lagging" in (topics_of(b) or ()), 10, f"broker {b.broker_id} to apply it")


def test_a_wiped_broker_does_not_vote_until_caught_up_and_nothing_committed_is_lost(running_cluster):
    cluster = running_cluster(3, timeout=READY_S)
    wiped, current, lagging = cluster.brokers[1], cluster.brokers[2], cluster.brokers[3]
    assert read_meta_properties(wiped.data_dir).quorum_state == VOTER   # formatted as a brand-new cluster
    commit_while_lagging(cluster, wiped, current, lagging)

    wiped.kill()
    wiped.lose_disk()          # rm -rf of its data dir, then `kbroker format --config C --id 1`
    assert read_meta_properties(wiped.data_dir).quorum_state == REJOINING
    current.kill()             # the only other copy of 'while-lagging' goes down too
    lagging.start(wait=False)
    wiped.start(wait=False)

    # The lagging broker asks to stand again and again; the wiped one refuses every (pre-)vote.
    wait_for(lambda: refused_votes(wiped, lagging.broker_id) >= 3, 20,
             f"broker {wiped.broker_id} to refuse three of broker {lagging.broker_id}'s (Pre)Votes")
    assert log_events(wiped, "quorum_rejoining")
    for b in (wiped, lagging):
        assert not events_since_last_start(b, "controller_activated"), (
            f"broker {b.broker_id} became controller with the wiped node's vote: {b.log()[-3000:]}")
        assert b.alive(), b.log()[-3000:]

    # The up-to-date broker returns: it leads, the wiped one catches up from it and votes again.
    current.start(wait=False)
    for b in (current, lagging, wiped):
        b.wait_ready(READY_S)
    wait_for(lambda: read_meta_properties(wiped.data_dir).quorum_state == VOTER, 10,
             "the wiped broker's meta.properties to say voter")
    wait_log_events(wiped, "quorum_voter_again")
    for b in (current, lagging, wiped):
        wait_for(lambda b=b: {"before", "while-lagging"} <= (topics_of(b) or set()), 10,
                 f"broker {b.broker_id}'s own image to hold both topics")

    # Its Raft log holds them now: without the broker it caught up from, its vote elects a controller
    # (2 of 3 with the lagging one), and both topics are still there.
    current.kill()
    cluster.wait_controller([wiped, lagging], timeout=READY_S, exclude=(current.broker_id,))
    for b in (lagging, wiped):
        wait_for(lambda b=b: {"before", "while-lagging"} <= (topics_of(b) or set()), 10,
                 f"broker {b.broker_id}'s image to hold both topics without broker {current.broker_id}")
