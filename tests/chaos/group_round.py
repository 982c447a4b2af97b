"""One consumer-group chaos round on a running ChaosCluster: member processes, a group fault, a check.

1. a fresh topic (PARTITIONS partitions, RF 3, min ISR 2); one idempotent acks=all producer thread
   (workload.py's Workload with no consumers) writes known values, every outcome in the history;
2. MEMBERS member processes (group_member.py) join one group, read and commit after every poll;
   a sampler writes the group's committed offsets (Admin.committed_offsets) every SAMPLE_INTERVAL_S;
3. once the group is stable and acks flow, the round's group nemesis (group_nemesis.py) strikes, is
   held, healed; then the group must be stable again within STABLE_BOUND_S ("gm-stable": every live
   member in the same generation, their assignments disjoint and covering every partition, and the
   coordinator saying Stable with exactly those members and assignments), and the topic's partitions
   led with a full ISR within HEAL_BOUND_S ("healed");
4. the producer stops (every send gets its outcome), each partition is read through its leader up to
   its HW ("final"), the members read up to there, and are stopped with SIGTERM;
5. the member files and the round's own history are merged by time into one JSON-lines history,
   checked by group_checker.py (the group invariants) and checker.py (the producer's: nothing acked
   lost from the log, no duplicates, ...).

Times in these histories are ``time.time()`` (member processes write their own files).
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from broker.config import BrokerSettings
from broker.group.offsets_records import partition_for
from broker.group.offsets_topic import OFFSETS_TOPIC
from client.admin import Admin
from client.errors import KafkaError
from raftka_testing.cluster import wait_for
from tests.chaos.checker import CheckResult, check
from tests.chaos.group_checker import GroupCheckResult, check_group
from tests.chaos.group_member import MemberProcess
from tests.chaos.group_nemesis import GROUP_NEMESES, make_group
from tests.chaos.harness import ChaosCluster
from tests.chaos.history import History
from tests.chaos.workload import HistoryWriter, Workload, WorkloadConfig

PARTITIONS = 4
MEMBERS = 3
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 500
# The broker settings a group round needs: short sessions allowed, no initial delay, a small offsets topic.
GROUP_CONFIG = {"group.min.session.timeout.ms": 1000, "group.initial.rebalance.delay.ms": 0,
                "offsets.topic.num.partitions": 3}
# Heal -> the group stable again. The slowest legitimate path: a member paused past its session comes
# back and must find out, rejoin and be synced (a few heartbeats and one rebalance, ~1-3 s); a broker
# restarted under a coordinator failover (load of the offsets partition, the members finding it again).
# 20 s is several times what any of them takes on a loaded 2-core machine.
STABLE_BOUND_S = 20.0
HEAL_BOUND_S = 30.0
SAMPLE_INTERVAL_S = 0.25
STRATEGIES = ("range", "roundrobin", "cooperative-sticky")
PRODUCER = WorkloadConfig(producers=1, consumers=0, rate_per_producer=100.0, max_unanswered=200)


class WallClockHistory(HistoryWriter):
    """HistoryWriter whose times are time.time(), comparable with the member processes' files."""

    def __init__(self, fh):
        super().__init__(fh, 0.0)

    def now(self) -> float:
        return time.time()


def offsets_partitions(cluster: ChaosCluster) -> int:
    n = cluster.config.get("offsets.topic.num.partitions")
    return BrokerSettings().offsets_topic_num_partitions if n is None else int(n)


class GroupContext:
    """What a group round (and a group nemesis) works on: the cluster, the topic, the group and its member
    processes (started and ended by this object, by PID)."""

    def __init__(self, cluster: ChaosCluster, topic: str, group: str, work_dir: Path, history: HistoryWriter | None,
                 partitions: int = PARTITIONS, strategy: str = "range", session_timeout_ms: int = SESSION_TIMEOUT_MS):
        self.cluster, self.topic, self.group, self.work_dir = cluster, topic, group, work_dir
        self.history = history
        self.partitions, self.strategy, self.session_timeout_ms = partitions, strategy, session_timeout_ms
        self.members: dict[str, MemberProcess] = {}
        self._admin = Admin(cluster.bootstrap, request_timeout_ms=1500)
        self.last_view = ""
        work_dir.mkdir(parents=True, exist_ok=True)

    @property
    def session_timeout_s(self) -> float:
        return self.session_timeout_ms / 1000

    # ---- members ------------------------------------------------------------------------

    def spawn_member(self) -> MemberProcess:
        name = f"m{len(self.members) + 1}"
        m = MemberProcess.spawn(self.cluster.bootstrap, self.group, self.topic, name, self.work_dir / f"{name}.jsonl",
                                self.strategy, self.session_timeout_ms, HEARTBEAT_INTERVAL_MS)
        self.members[name] = m
        if self.history is not None:
            self.history.write({"f": "gm-spawn", "member": name, "pid": m.pid, "time": time.time()})
        return m

    def live_members(self) -> list[MemberProcess]:
        return [m for m in self.members.values() if m.live()]

    def refresh(self) -> None:
        for m in self.members.values():
            m.refresh()

    def stop_members(self, timeout: float = 15.0) -> list[str]:
        """SIGTERM every member still running (paused ones continued first); problems as strings."""
        problems = []
        running = [m for m in self.members.values() if m.alive()]
        for m in running:
            m.request_stop()   # all at once: their leaves overlap
        for m in running:
            code = m.terminate(timeout)
            if code is None:
                problems.append(f"member {m.name} (pid {m.pid}) did not exit {timeout:.0f} s after SIGTERM: killed")
            elif code != 0:
                problems.append(f"member {m.name} (pid {m.pid}) exited with {code} (see {m.path.with_suffix('.log')})")
        return problems

    def close(self) -> None:
        """Whatever happened: no member process outlives the round."""
        for m in self.members.values():
            if m.alive():
                m.kill()
        self._admin.close()

    # ---- the coordinator ----------------------------------------------------------------

    def coordinator(self) -> int | None:
        """The broker leading the group's __consumer_offsets partition (its coordinator), None while none."""
        return self.cluster.leader_of(OFFSETS_TOPIC, partition_for(self.group, offsets_partitions(self.cluster)))

    def wait_coordinator(self, timeout: float = 15.0) -> int:
        return wait_for(self.coordinator, timeout, f"a coordinator for group {self.group}", 0.1)

    def describe(self):
        return self._admin.describe_group(self.group)

    # ---- stability ----------------------------------------------------------------------

    def stable(self) -> bool:
        """Every live member in one generation, their assignments disjoint and covering every partition,
        and the coordinator saying Stable with exactly these members and assignments. ``last_view``
        says what was seen (why not, or the generation)."""
        live = self.live_members()
        for m in live:
            m.refresh()
        if not live:
            self.last_view = "no live member"
            return False
        states = {m.name: (m.generation, m.member_id, m.assignment) for m in live}
        generations = {g for g, _, _ in states.values()}
        if len(generations) != 1 or -1 in generations:
            self.last_view = f"generations {states}"
            return False
        owned = [p for _, _, a in states.values() for p in a]
        if len(owned) != len(set(owned)) or set(owned) != set(range(self.partitions)):
            self.last_view = f"assignments not a partition of {self.partitions}: {states}"
            return False
        try:
            d = self.describe()
        except KafkaError as e:
            self.last_view = f"describe_group: {e}"
            return False
        theirs = {mm.member_id: tuple(sorted(p for t, p in mm.assignment.partitions if t == self.topic))
                  for mm in d.members}
        ours = {mid: a for _, mid, a in states.values()}
        if d.state != "Stable" or theirs != ours:
            self.last_view = f"coordinator {d.coordinator}: {d.state} {theirs}; members {states}"
            return False
        self.last_view = f"generation {generations.pop()} on coordinator {d.coordinator}: " + ", ".join(
            f"{name} {list(a)}" for name, (_, _, a) in sorted(states.items()))
        return True

    def wait_stable(self, bound_s: float, interval: float = 0.1) -> float | None:
        """Seconds until stable() holds (None: not within ``bound_s``)."""
        started = time.monotonic()
        deadline = started + bound_s
        while True:
            if self.stable():
                return time.monotonic() - started
            if time.monotonic() >= deadline:
                return None
            time.sleep(interval)

    def read_up_to(self, hws: dict[int, int]) -> bool:
        """Has some member read every partition up to its HW?"""
        self.refresh()
        return all(max((m.read_up_to.get(p, 0) for m in self.members.values()), default=0) >= hw
                   for p, hw in hws.items())

    def commits_flowing(self, within_s: float = 1.0) -> bool:
        """Every live member committed successfully within the last ``within_s``."""
        live = self.live_members()
        for m in live:
            m.refresh()
        now = time.time()
        return bool(live) and all(now - m.last_commit_ok < within_s for m in live)


class CommittedSampler(threading.Thread):
    """The group's committed offsets (Admin.committed_offsets) every ``interval`` s: "gm-sample" records
    with the call's invoked and completed times; a call that fails is skipped (counted)."""

    def __init__(self, bootstrap: str, group: str, topic: str, history: HistoryWriter,
                 interval: float = SAMPLE_INTERVAL_S):
        super().__init__(name="group-sampler", daemon=True)
        self._admin = Admin(bootstrap, request_timeout_ms=2000)
        self._group, self._topic, self._history, self._interval = group, topic, history, interval
        self._done = threading.Event()
        self.samples = 0
        self.failures = 0

    def run(self) -> None:
        while not self._done.wait(self._interval):
            invoked = time.time()
            try:
                offsets = self._admin.committed_offsets(self._group)
            except Exception:  # noqa: BLE001 - no coordinator for a moment (killed, loading): skip the sample
                self.failures += 1
                continue
            self.samples += 1
            self._history.write({"f": "gm-sample", "invoked": invoked, "time": time.time(), "topic": self._topic,
                                 "offsets": sorted([p, o] for (t, p), o in offsets.items() if t == self._topic)})

    def stop(self) -> None:
        if self._done.is_set():
            return
        self._done.set()
        if self.is_alive():
            self.join(10)
        self._admin.close()


@dataclass
class GroupRoundResult:
    """A group round, shaped like runner.RoundResult (the runner reports both) plus the group's verdict."""
    index: int
    seed: int
    nemesis: str
    targets: list[int]
    detail: str
    started: float
    history_path: Path
    check: CheckResult                  # the producer's invariants (checker.py)
    group_check: GroupCheckResult       # the group's (group_checker.py)
    strategy: str
    recovery_s: float | None            # heal -> the topic's partitions led with a full ISR
    stable_s: float | None              # heal -> the group stable
    fault_to_stable_s: float | None     # fault -> the group stable (after the heal)
    under_fault_s: float | None         # fault -> the group stable while the fault was still held (None: not)
    workload_errors: list[str] = field(default_factory=list)
    windows: list = field(default_factory=list)   # no unavailability windows measured for group rounds
    replay: str = ""

    @property
    def ok(self) -> bool:
        return self.check.ok and self.group_check.ok and not self.workload_errors

    def summary(self) -> str:
        g = self.group_check
        return (f"strategy {self.strategy}: acked {g.acked}, read {g.read}, lost {g.lost}, commits {g.commits} "
                f"(failed {dict(g.commit_errors)}), samples {g.samples}, max commit regression "
                f"{g.max_commit_regression}, lost callbacks {g.lost_callbacks}, stable after heal {_s(self.stable_s)} "
                f"(bound {STABLE_BOUND_S:.0f} s; fault -> stable {_s(self.fault_to_stable_s)}, under the fault "
                f"{_s(self.under_fault_s)}), "
                f"partitions healed {_s(self.recovery_s)}")


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _time_key(r: dict) -> float:
    for k in ("time", "completed", "invoked"):
        v = r.get(k)
        if isinstance(v, (int, float)):
            return float(v)
    return 0.0


def merge(round_file: Path, member_files: list[Path], out: Path) -> list[dict]:
    """One history: the round's lines and every member's, ordered by time (stable within one file)."""
    records: list[dict] = []
    for path in [round_file, *member_files]:
        if not path.exists():
            continue
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.endswith("\n") and line.strip():   # a kill -9'd member may leave half a line
                    records.append(json.loads(line))
    records.sort(key=_time_key)
    with out.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, separators=(",", ":")) + "\n")
    return records


def run_group_round(cluster: ChaosCluster, index: int, seed: int, nemesis_name: str, out_dir: Path,
                    run_started: float, strategy: str | None = None, warmup_s: float = 1.0, settle_s: float = 1.0,
                    log=lambda line: None) -> GroupRoundResult:
    """One group round (see the module doc). ``strategy``: the members' assignor (None: seeded choice)."""
    if nemesis_name not in GROUP_NEMESES:
        raise ValueError(f"unknown group nemesis {nemesis_name!r}; known: {', '.join(GROUP_NEMESES)}")
    rng = random.Random(f"{seed}-{index}")
    strategy = strategy or rng.choice(STRATEGIES)
    topic, group = f"group-{index}", f"chaos-group-{index}"
    stem = f"round-{index:03d}-{nemesis_name}"
    work_dir = out_dir / stem
    work_dir.mkdir(parents=True, exist_ok=True)
    round_file, path = work_dir / "round.jsonl", out_dir / f"{stem}.jsonl"
    cluster.create_topic(topic, PARTITIONS)
    started = time.monotonic() - run_started
    nemesis = make_group(nemesis_name)
    errors: list[str] = []
    recovery = stable = fault_to_stable = failover = None
    event_targets: list[int] = []
    detail = ""
    with round_file.open("w", encoding="utf-8") as fh:
        history = WallClockHistory(fh)
        history.write({"f": "gm-round", "time": time.time(), "index": index, "seed": seed, "nemesis": nemesis_name,
                       "topic": topic, "group": group, "partitions": PARTITIONS, "strategy": strategy,
                       "session_timeout_ms": SESSION_TIMEOUT_MS, "stable_bound_s": STABLE_BOUND_S})
        load = Workload(cluster.bootstrap, topic, history, rng, PRODUCER, prefix=f"g{index}")
        ctx = GroupContext(cluster, topic, group, work_dir, history, PARTITIONS, strategy)
        sampler = CommittedSampler(cluster.bootstrap, group, topic, history)
        try:
            load.start()
            for _ in range(MEMBERS):
                ctx.spawn_member()
            sampler.start()
            first = ctx.wait_stable(STABLE_BOUND_S + 10)
            if first is None:
                raise AssertionError(f"group {group} never stable before the fault: {ctx.last_view}")
            log(f"    group stable before the fault: {ctx.last_view}")
            wait_for(lambda: load.acked >= 20 or load.errors, 30, "the producer's first acks")
            wait_for(ctx.commits_flowing, 15, "every member committing")
            time.sleep(warmup_s)   # the schedule: let reads and commits flow before the fault (not an assertion)
            event, struck, healed_at, failover = _strike_and_heal(cluster, ctx, nemesis, rng, history)
            event_targets, detail = list(event.targets), event.detail
            stable = ctx.wait_stable(STABLE_BOUND_S)
            if stable is not None:
                fault_to_stable = healed_at + stable - struck
            history.write({"f": "gm-stable", "time": time.time(), "heal_time": healed_at, "stable_s": stable,
                           "fault_to_stable_s": fault_to_stable, "under_fault_s": failover, "bound_s": STABLE_BOUND_S,
                           "view": ctx.last_view})
            log(f"    stable after heal: {_s(stable)}: {ctx.last_view}")
            recovery = cluster.wait_healed(topic, HEAL_BOUND_S)
            history.write({"f": "healed", "time": time.time(), "recovery_s": recovery, "bound_s": HEAL_BOUND_S})
            time.sleep(settle_s)   # acks, reads and commits must flow again after the heal
            errors += _read_back(cluster, ctx, load, sampler, topic, history)
        finally:
            load.stop_producers()
            sampler.stop()
            ctx.close()
    errors += load.errors
    records = merge(round_file, [m.path for m in ctx.members.values()], path)
    group_result = check_group(records)
    base = check(History.of(r for r in records if r.get("f") in ("send", "final", "nemesis", "healed")))
    return GroupRoundResult(index, seed, nemesis_name, event_targets, detail, started, path, base, group_result,
                            strategy, recovery, stable, fault_to_stable, failover, errors)


def _strike_and_heal(cluster: ChaosCluster, ctx: GroupContext, nemesis, rng: random.Random, history):
    """The fault, held for its seeded time (noting when the group is stable again under it), then healed:
    (event, struck, healed_at, fault -> stable under the fault or None)."""
    struck = time.time()
    event = nemesis.start(ctx, rng)
    history.write({**event.to_record("start", struck), "members": nemesis.members})
    failover = None
    hold_until = time.monotonic() + rng.uniform(*nemesis.hold_range(ctx))
    while time.monotonic() < hold_until:
        if failover is None and ctx.stable():
            failover = time.time() - struck
            history.write({"f": "gm-stable-under-fault", "time": time.time(), "fault_to_stable_s": failover,
                           "view": ctx.last_view})
        time.sleep(max(0.0, min(0.2, hold_until - time.monotonic())))   # the schedule, not an assertion
    nemesis.heal(ctx)
    if cluster.dead_ids() or cluster.paused_ids():
        cluster.heal()
    healed_at = time.time()
    history.write({**event.to_record("heal", healed_at), "members": nemesis.members, "detail": event.detail})
    return event, struck, healed_at, failover


def _read_back(cluster: ChaosCluster, ctx: GroupContext, load: Workload, sampler, topic: str, history) -> list[str]:
    """Producers stop; the final read; the members must read up to the high watermarks; they stop."""
    errors: list[str] = []
    load.stop_producers()
    finals = cluster.final_read(topic)
    for f in finals:
        history.write({**f, "time": time.time()})
    hws = {f["partition"]: f["high_watermark"] for f in finals}
    try:
        wait_for(lambda: ctx.read_up_to(hws), 30, "the members to read up to the high watermarks", 0.1)
    except AssertionError as e:
        errors.append(f"{e}: read {[dict(m.read_up_to) for m in ctx.members.values()]}, HW {hws}")
    sampler.stop()
    errors += ctx.stop_members()
    history.write({"f": "gm-end", "time": time.time(), "samples": sampler.samples,
                   "sample_failures": sampler.failures})
    return errors


def spread(values: list[float]) -> str:
    """min / median / max."""
    if not values:
        return "-"
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"
