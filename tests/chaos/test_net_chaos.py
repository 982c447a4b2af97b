"""The short network-fault run of `make test`: each link fault once (raftka_testing/netns.py: every broker on
a host of its own behind one router, links cut silently), in a seeded order, each round checked like the
process faults (tests/chaos/checker.py), and healed only when every broker's metadata agrees again.

The "+kill" combinations run in the soak (`make chaos-net`). The seed is random unless
RAFTKA_CHAOS_SEED is set; it is printed with the commit and in every failure, with its replay command.
"""

import os
import random

import pytest

from raftka_testing.netns import Network, unavailable_reason
from tests.chaos.harness import N_BROKERS, ChaosCluster
from tests.chaos.net_nemesis import BASE_KINDS
from tests.chaos.runner import CLUSTER_CONFIG, commit, failure_message, replay_command, run_short, schedule

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("RAFTKA_CHAOS_SEED") or random.randrange(1 << 31))


def test_every_link_fault_once_keeps_every_invariant(tmp_path):
    reason = unavailable_reason()
    if reason is not None:
        pytest.fail(f"network faults need network namespaces (root and iproute2): {reason}", pytrace=False)
    names = [k.name for k in BASE_KINDS]
    kinds = schedule(SEED, len(names), names)
    commit_id = commit()
    print(f"\nnet chaos: seed {SEED}, commit {commit_id} (replay: {replay_command(SEED, len(kinds), kinds=names)})")
    with Network([f"b{i}" for i in range(1, N_BROKERS + 1)]) as network, \
            ChaosCluster(tmp_path / "cluster", CLUSTER_CONFIG, N_BROKERS, network=network) as cluster:
        cluster.start()
        results = run_short(cluster, kinds, SEED, tmp_path)
    assert results[-1].ok, failure_message(results[-1], SEED, commit_id)
    assert sorted(r.nemesis for r in results) == sorted(names)
    assert all(r.check.acked >= 50 for r in results), [(r.nemesis, r.check.acked) for r in results]
    assert any(c for r in results for w in r.windows for c in w.leader_changes), "no cut moved a leader"
