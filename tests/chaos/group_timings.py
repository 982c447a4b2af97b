"""How long a consumer group takes to be stable again after a kill -9: of a member, of its coordinator.

    python -m tests.chaos.group_timings [--runs 5] [--session-timeout-ms 6000] [--out DIR]

One ChaosCluster (the chaos config plus GROUP_CONFIG), a topic of 4 partitions with an idempotent
acks=all producer writing, 3 member processes (group_member.py; range assignor, heartbeat 500 ms)
reading and committing. "Stable" is group_round.GroupContext.stable(): every live member in one
generation, their assignments disjoint and covering every partition, and the coordinator saying
Stable with exactly those members and assignments (checked every 100 ms).

- member: kill -9 of a member (seeded pick), a replacement started at once; fault -> stable. The dead
  member leaves the group only by its session timeout, so this is about the session timeout plus one
  rebalance.
- coordinator: kill -9 of the broker leading the group's __consumer_offsets partition, nothing
  restarted until the group is stable again under a new coordinator; fault -> stable. Then the broker
  is restarted and the group must be stable again before the next run.

Not part of `make test`: it prints min / median / max of each (and every run).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.chaos.group_round import GROUP_CONFIG, HEAL_BOUND_S, PARTITIONS, PRODUCER, GroupContext, WallClockHistory
from tests.chaos.harness import ChaosCluster
from tests.chaos.runner import CLUSTER_CONFIG
from tests.chaos.workload import Workload

BOUND_S = 60.0


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def measure(out_dir: Path, runs: int, session_timeout_ms: int, seed: int, log=print) -> dict[str, list[float]]:
    rng = random.Random(seed)
    config = {**CLUSTER_CONFIG, **GROUP_CONFIG}
    times: dict[str, list[float]] = {"member": [], "coordinator": []}
    with ChaosCluster(out_dir / "cluster", config) as cluster, (out_dir / "history.jsonl").open("w") as fh:
        cluster.start()
        topic, group = "timings", "timings-group"
        cluster.create_topic(topic, PARTITIONS)
        history = WallClockHistory(fh)
        load = Workload(cluster.bootstrap, topic, history, rng, PRODUCER, prefix="t")
        ctx = GroupContext(cluster, topic, group, out_dir / "members", history, PARTITIONS, "range", session_timeout_ms)
        try:
            load.start()
            for _ in range(3):
                ctx.spawn_member()
            if ctx.wait_stable(BOUND_S) is None:
                raise AssertionError(f"the group never became stable: {ctx.last_view}")
            log(f"group stable: {ctx.last_view}")
            for i in range(runs):
                victim = ctx.members[rng.choice(sorted(m.name for m in ctx.live_members()))]
                victim.kill()
                killed = time.monotonic()
                ctx.spawn_member()
                took = ctx.wait_stable(BOUND_S)
                if took is None:
                    raise AssertionError(f"member run {i}: not stable {BOUND_S:.0f} s after the kill: {ctx.last_view}")
                took = time.monotonic() - killed
                times["member"].append(took)
                log(f"member run {i}: kill -9 of {victim.name}, stable after {took:.2f} s: {ctx.last_view}")
            for i in range(runs):
                coordinator = ctx.wait_coordinator()
                cluster.kill(coordinator)
                killed = time.monotonic()
                took = ctx.wait_stable(BOUND_S)
                if took is None:
                    raise AssertionError(f"coordinator run {i}: not stable {BOUND_S:.0f} s after the kill: "
                                         f"{ctx.last_view}")
                took = time.monotonic() - killed
                times["coordinator"].append(took)
                log(f"coordinator run {i}: kill -9 of broker {coordinator}, stable after {took:.2f} s: "
                    f"{ctx.last_view}")
                cluster.heal()
                if cluster.wait_healed(topic, HEAL_BOUND_S) is None or ctx.wait_stable(BOUND_S) is None:
                    raise AssertionError(f"coordinator run {i}: not healed after the restart: {ctx.last_view}")
        finally:
            load.stop_producers()
            ctx.stop_members()
            ctx.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.group_timings", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--session-timeout-ms", type=int, default=6000, help="the members' session timeout")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", default="", help="working folder (default: a temporary one, removed after)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="raftka-group-timings-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"group timings: seed {seed}, {args.runs} runs each, member session {args.session_timeout_ms} ms, "
          f"heartbeat 500 ms, broker.session.timeout.ms {CLUSTER_CONFIG['broker.session.timeout.ms']}, "
          f"work in {out_dir}", flush=True)
    times = measure(out_dir, args.runs, args.session_timeout_ms, seed, log=lambda s: print(s, flush=True))
    print(f"\nfault -> group stable again (min / median / max of {args.runs}), member session "
          f"{args.session_timeout_ms / 1000:.1f} s:")
    print(f"  kill -9 of a member (replacement started at once): {_spread(times['member'])} s")
    print(f"  kill -9 of the coordinator:                          {_spread(times['coordinator'])} s")
    if not args.out:
        shutil.rmtree(out_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
