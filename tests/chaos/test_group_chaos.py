"""The short consumer-group chaos run of `make test`: each group fault once, in a seeded order, each round
checked (group_round.py, group_checker.py).

One ChaosCluster with short group sessions (GROUP_CONFIG; members use a 6 s session); per round a fresh
topic of 4 partitions, an idempotent acks=all producer, 3 member processes (each round's assignor is a
seeded choice of range / roundrobin / cooperative-sticky), a committed-offsets sampler, the fault, the
heal, the group stable again within STABLE_BOUND_S, then everything read and checked. The seed is random
unless RAFTKA_CHAOS_SEED is set; it is printed with the commit at the start and in every failure, with the
command that replays it.
"""

import os
import random
import time

import pytest

from tests.chaos.group_nemesis import GROUP_NEMESES
from tests.chaos.group_round import GROUP_CONFIG, STABLE_BOUND_S, run_group_round
from tests.chaos.harness import ChaosCluster
from tests.chaos.runner import CLUSTER_CONFIG, commit, failure_message, replay_command, schedule

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("RAFTKA_CHAOS_SEED") or random.randrange(1 << 31))
KINDS = list(GROUP_NEMESES)


def test_every_group_fault_once_keeps_every_group_invariant(tmp_path):
    commit_id = commit()
    kinds = schedule(SEED, len(KINDS), KINDS)
    assert sorted(kinds) == sorted(KINDS), "the short run must cover every group fault"
    print(f"\ngroup chaos: seed {SEED}, commit {commit_id} (replay: RAFTKA_CHAOS_SEED={SEED} pytest "
          f"tests/chaos/test_group_chaos.py, or {replay_command(SEED, len(KINDS), kinds=KINDS)})")
    run_started = time.monotonic()
    results = []
    with ChaosCluster(tmp_path / "cluster", {**CLUSTER_CONFIG, **GROUP_CONFIG}) as cluster:
        cluster.start()
        for index, kind in enumerate(kinds):
            began = time.monotonic()
            # A shorter lead-in and settling than a soak's (make chaos): make test runs every group fault once.
            result = run_group_round(cluster, index, SEED, kind, tmp_path, run_started, warmup_s=0.5, settle_s=0.5)
            result.replay = replay_command(SEED, index + 1, kinds=KINDS)
            results.append(result)
            g = result.group_check
            print(f"  round {index} {kind:<33} {time.monotonic() - began:5.1f} s  {result.summary()}")
            assert result.ok, failure_message(result, SEED, commit_id)
            # the invariants must have had something to check
            assert g.acked >= 50 and g.read == g.acked and g.lost == 0, failure_message(result, SEED, commit_id)
            assert g.commits >= 10 and g.samples >= 5 and g.max_commit_regression == 0, \
                failure_message(result, SEED, commit_id)
            assert result.stable_s is not None and result.stable_s <= STABLE_BOUND_S
            if kind == "group-pause-member":   # it came back evicted, and found out
                assert g.lost_callbacks >= 1, failure_message(result, SEED, commit_id)
            if kind == "group-kill-member":    # the replacement joined
                assert g.members == 4, failure_message(result, SEED, commit_id)
            if kind.startswith("group-kill-coordinator"):
                assert result.targets, failure_message(result, SEED, commit_id)
    print(f"  group chaos: {len(results)} rounds in {time.monotonic() - run_started:.1f} s")
