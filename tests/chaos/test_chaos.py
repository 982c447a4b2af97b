"""The short chaos run of `make test`: every fault kind once, in a seeded order, each round checked.

The seed is random unless RAFTKA_CHAOS_SEED is set; it is printed with the commit at the
start and in every failure, with the command that replays it. RAFTKA_CHAOS_BROKERS=4 runs it
on four brokers (default three). The soak is `make chaos`.
"""

import os
import random

import pytest

from tests.chaos.checker import check
from tests.chaos.harness import N_BROKERS, ChaosCluster
from tests.chaos.history import History
from tests.chaos.nemesis import NEMESES
from tests.chaos.runner import CLUSTER_CONFIG, commit, failure_message, replay_command, run_short, schedule

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("RAFTKA_CHAOS_SEED") or random.randrange(1 << 31))
BROKERS = int(os.environ.get("RAFTKA_CHAOS_BROKERS") or N_BROKERS)


def test_every_fault_kind_once_keeps_every_invariant(tmp_path):
    commit_id = commit()
    print(f"\nchaos: seed {SEED}, commit {commit_id}, {BROKERS} brokers (replay: RAFTKA_CHAOS_SEED={SEED} make test, "
          f"or {replay_command(SEED, len(NEMESES), BROKERS)})")
    kinds = schedule(SEED, len(NEMESES))
    assert sorted(kinds) == sorted(NEMESES), "the short run must cover every fault kind"
    with ChaosCluster(tmp_path / "cluster", CLUSTER_CONFIG, BROKERS) as cluster:
        cluster.start()
        results = run_short(cluster, kinds, SEED, tmp_path)
    assert results[-1].ok, failure_message(results[-1], SEED, commit_id)
    assert len(results) == len(kinds)
    # The checks must have had something to check: acks in every round, and faults that moved leaders.
    assert all(r.check.acked >= 50 for r in results), [(r.nemesis, r.check.acked) for r in results]
    assert any(c for r in results for w in r.windows for c in w.leader_changes), "no fault moved a leader"


def test_an_old_record_in_a_recreated_topic_is_an_anomaly():
    """topic-recreate's design, without brokers: the old incarnation is read back under the topic's name,
    the new one under "<topic>#1" with producers of its own. A new incarnation that adopted the old log
    serves old records at offsets its own acks claim, and holds values of the old final read again."""
    old, new = "chaos-3", "chaos-3#1"
    ops = [{"f": "send", "producer": "r3p0", "value": f"r3p0-{i}", "key": "k", "topic": old, "partition": 0,
            "outcome": "ok", "offset": i, "invoked": 0.0, "completed": 0.1} for i in range(3)]
    ops += [{"f": "final", "topic": old, "partition": 0, "records": [[i, f"r3p0-{i}"] for i in range(3)],
             "high_watermark": 3}]
    ops += [{"f": "send", "producer": "r3i1p0", "value": f"r3i1p0-{i}", "key": "k", "topic": new, "partition": 0,
             "outcome": "ok", "offset": i, "invoked": 1.0, "completed": 1.1} for i in range(2)]
    fresh = {"f": "final", "topic": new, "partition": 0, "records": [[0, "r3i1p0-0"], [1, "r3i1p0-1"]],
             "high_watermark": 2}
    adopted = {**fresh, "records": [[0, "r3p0-0"], [1, "r3p0-1"], [2, "r3p0-2"], [3, "r3i1p0-1"]],
               "high_watermark": 4}
    assert check(History.of([*ops, fresh])).ok
    result = check(History.of([*ops, adopted]))
    assert result.lost >= 1 and result.duplicate == 3, result.format()
