"""The short chaos run of `make test`: every fault kind once, in a seeded order, each round checked.

The seed is random unless RAFTKA_CHAOS_SEED is set; it is printed with the commit at the
start and in every failure, with the command that replays it. The soak is `make chaos`.
"""

import os
import random
import time

import pytest

from tests.chaos.harness import ChaosCluster
from tests.chaos.nemesis import NEMESES
from tests.chaos.runner import CLUSTER_CONFIG, commit, failure_message, run_round, schedule

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("RAFTKA_CHAOS_SEED") or random.randrange(1 << 31))


def test_every_fault_kind_once_keeps_every_invariant(tmp_path):
    commit_id = commit()
    print(f"\nchaos: seed {SEED}, commit {commit_id} (replay: RAFTKA_CHAOS_SEED={SEED} make test, or "
          f"python -m tests.chaos.runner --seeds {SEED} --rounds {len(NEMESES)})")
    kinds = schedule(SEED, len(NEMESES))
    assert sorted(kinds) == sorted(NEMESES), "the short run must cover every fault kind"
    results = []
    run_started = time.monotonic()
    with ChaosCluster(tmp_path / "cluster", CLUSTER_CONFIG) as cluster:
        cluster.start()
        for index, kind in enumerate(kinds):
            result = run_round(cluster, index, SEED, kind, tmp_path, run_started)
            results.append(result)
            window = result.windows[0].window_s if result.windows else None
            print(f"  round {index} {kind:<22} targets {result.targets}: acked {result.check.acked}, unknown "
                  f"{result.check.unknown}, final {result.check.final_records}, window "
                  f"{'-' if window is None else f'{window:.2f} s'}, recovery "
                  f"{'-' if result.recovery_s is None else f'{result.recovery_s:.2f} s'}")
            assert result.ok, failure_message(result, SEED, commit_id)
    # The checks must have had something to check: acks in every round, and faults that moved leaders.
    assert all(r.check.acked >= 50 for r in results), [(r.nemesis, r.check.acked) for r in results]
    assert any(c for r in results for w in r.windows for c in w.leader_changes), "no fault moved a leader"
