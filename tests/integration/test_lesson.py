"""The seed lesson with the real kclient and three brokers: produce through a follower's port, follow the redirect."""

from __future__ import annotations

import re

import pytest

from tests.integration.cluster import kclient, metadata, wait_for

pytestmark = pytest.mark.integration


def _ok(result) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_produce_through_a_follower_shows_the_redirect_hop_by_hop(running_cluster):
    cluster = running_cluster(3)
    brokers = cluster.brokers
    _ok(kclient("topics", "--bootstrap", brokers[2].bootstrap, "--create", "--topic", "email.send",
                "--partitions", "1", "--replication-factor", "3"))
    leader = metadata(brokers[2], ["email.send"]).topics[0].partitions[0].leader_id
    follower = next(b for b in brokers.values() if b.broker_id != leader)
    lead = brokers[leader]

    # Text trace: the metadata request to the follower, the leader it learned, the produce to the leader.
    plain = kclient("produce", "--bootstrap", f":{follower.port}", "--topic", "email.send", "--trace",
                    input=b"follower-message-1\n")
    _ok(plain)
    trace = plain.stderr.decode()
    assert re.search(rf"Metadata +-> 127\.0\.0\.1:{follower.port}: who leads email\.send\?", trace), trace
    assert re.search(rf"Metadata +<- broker {follower.broker_id} .*p0 leader {leader} epoch 0", trace), trace
    assert re.search(rf"Produce +<- broker {leader} \(127\.0\.0\.1:{lead.port}\): email\.send-0 stored at offset 0",
                     trace), trace

    # --first-to-bootstrap: the follower answers NOT_LEADER_OR_FOLLOWER with its hint; mermaid shows the hops.
    probed = kclient("produce", "--bootstrap", f":{follower.port}", "--topic", "email.send", "--first-to-bootstrap",
                     "--trace", "mermaid", input=b"follower-message-2\n")
    _ok(probed)
    diagram = probed.stderr.decode()
    f, ld = f"B{follower.broker_id}", f"B{leader}"
    assert diagram.startswith("sequenceDiagram"), diagram
    assert f"C->>{f}: Produce: email.send-0 (1 record(s))" in diagram, diagram
    assert re.search(rf"{f}-->>C: Produce: NOT_LEADER_OR_FOLLOWER for email\.send-0: leader is broker {leader} "
                     rf"at 127\.0\.0\.1:{lead.port}", diagram), diagram
    assert f"{ld}-->>C: Produce: email.send-0 stored at offset 1" in diagram, diagram
    # The hops come in the lesson's order: the try on the follower, its answer, the send to the leader.
    order = [diagram.index(s) for s in (f"C->>{f}: Produce", f"{f}-->>C: Produce: NOT_LEADER", f"C->>{ld}: Produce")]
    assert order == sorted(order), diagram

    # The message is on every node: each broker's own copy, up to its own HW.
    for b in brokers.values():
        out = wait_for(lambda b=b: (lambda o: o if o.split() == ["follower-message-1", "follower-message-2"] else None)(
            _ok(kclient("consume", "--bootstrap", b.bootstrap, "--topic", "email.send", "--partition", "0",
                        "--offset", "earliest", "--replica", str(b.broker_id), "--timeout-ms", "1500"))),
            20, f"both messages in broker {b.broker_id}'s copy")
        assert out.split() == ["follower-message-1", "follower-message-2"]
