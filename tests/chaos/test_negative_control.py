"""The negative control: run unsafely on purpose, and the chaos checker must go red.

Producers with acks=1 (not idempotent: Kafka turns idempotence off below acks=all) under the
soak's kill-leader-stalled-isr fault: the leader's in-sync followers stop for a moment, the
leader is killed with kill -9, the followers continue. A leader answers acks=1 as soon as the
batch is in its own log, so what it appended alone was acknowledged, and is lost when a follower
takes over (the old leader truncates to it when it returns). With acks=all the same fault loses
nothing (make chaos). Everything else is the soak's own round (runner.run_round: harness,
workload, history, checker). If that pipeline cannot see the loss within the bound, the chaos
suite is blind, and this test fails saying so.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from tests.chaos.harness import ChaosCluster
from tests.chaos.runner import CLUSTER_CONFIG, commit, run_round
from tests.chaos.workload import WorkloadConfig

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("RAFTKA_CHAOS_SEED") or random.randrange(1 << 31))
FAULT = "kill-leader-stalled-isr"
MAX_TRIES = 4          # rounds of the fault under acks=1 before the test gives up
BOUND_S = 40.0         # ... or this long: no new round starts after it
UNSAFE = WorkloadConfig(acks=1)   # the deliberately unsafe setting; the rest as in the soak


def test_acks_1_under_a_leader_kill_makes_the_checker_report_lost_writes(tmp_path):
    print(f"\nnegative control: seed {SEED}, commit {commit()} (RAFTKA_CHAOS_SEED={SEED} replays the schedule)")
    started = time.monotonic()
    tries: list[str] = []
    with ChaosCluster(tmp_path / "cluster", CLUSTER_CONFIG) as cluster:
        cluster.start()
        for index in range(MAX_TRIES):
            if time.monotonic() - started > BOUND_S:
                break
            result = run_round(cluster, index, SEED, FAULT, tmp_path, started, workload=UNSAFE,
                               warmup_s=0.5, settle_s=0.5)
            tries.append(f"round {index} on {result.targets}: acked {result.check.acked}, "
                         f"anomalies {result.check.anomalies or 'none'}")
            print(f"  {tries[-1]} ({time.monotonic() - started:.1f} s)")
            if result.check.lost:
                return   # red, as it must be: the checker saw acknowledged writes vanish
    pytest.fail(f"the chaos checker did not report a lost write in {len(tries)} round(s) of {FAULT} with acks=1 "
                f"producers ({time.monotonic() - started:.0f} s, seed {SEED}): it cannot see the loss it exists "
                "to find.\n" + "\n".join(tries))
