"""Nemeses: one fault each, started on a healthy ChaosCluster and healed afterwards.

    nemesis = make("kill-leader", cluster)
    event = nemesis.start(cluster, topic, rng)      # the fault happens here
    history.append(event.to_record("start", t))
    ...                                             # the runner holds it: rng.uniform(*nemesis.hold_range())
    nemesis.heal(cluster)                           # every broker runs, unpaused, ready
    history.append(event.to_record("heal", t))
    ...                                             # the runner measures the recovery
    nemesis.release(cluster)                        # what the fault held past its heal (client streams)

The runner chooses how long a fault lasts; a nemesis waits on its own only where
the fault itself is a sequence (rolling-restart, faults-in-sequence). Targets are picked
with the runner's ``rng`` from what the cluster says right now: one seed, one choice per state.
A nemesis with ``recreates_topic`` deletes the round's topic and creates it again: the runner
reads the old incarnation back before start() and runs a new workload on the new one after.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import grpc

from client.admin import Admin
from client.errors import InvalidReplicationFactorError, KafkaError
from client.protocol.v1 import kafka_pb2, kafka_pb2_grpc
from raftka_testing.cluster import wait_for
from tests.chaos.windows import FaultWindow
from tests.chaos.harness import DEFAULT_SESSION_TIMEOUT_S, READY_TIMEOUT_S, ChaosCluster, PartitionInfo

DEFAULT_HOLD_S = (1.0, 3.0)    # a nemesis with no hold bounds of its own is held this long


@dataclass
class NemesisEvent:
    kind: str            # the nemesis name
    targets: list[int]   # broker ids hit
    detail: str          # why these targets (what they led, whether a fallback was taken)

    def to_record(self, phase: str, t: float) -> dict:
        """The history "nemesis" record for the fault's start or its heal."""
        if phase not in ("start", "heal"):
            raise ValueError(f"phase must be start or heal, not {phase!r}")
        return {"f": "nemesis", "kind": self.kind, "targets": list(self.targets), "phase": phase, "time": t,
                "detail": self.detail}


class Nemesis:
    """A fault. heal() by default undoes any fault: SIGCONT the paused, restart the dead (all at once)."""

    name: str = ""
    min_hold_s: float = 0.0          # the runner holds the fault at least this long
    max_hold_s: float | None = None  # ... and at most this long (None: no bound)
    recreates_topic: bool = False    # start() deletes the round's topic and creates it again

    def __init__(self, cluster: ChaosCluster | None = None):
        """``cluster``: the cluster it will fault, for holds that depend on its settings (session timeout)."""

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        raise NotImplementedError

    def heal(self, cluster: ChaosCluster) -> None:
        cluster.heal()

    def release(self, cluster: ChaosCluster) -> None:
        """Let go of what the fault holds beyond its heal, once the runner has measured the recovery under
        it. Idempotent (the runner also calls it when a round fails)."""

    def broken_promise(self, window: FaultWindow, session_timeout_s: float) -> str | None:
        """What the fault's round promised beyond safety and did not keep (None: kept, or no promise)."""
        return None

    def hold_range(self) -> tuple[float, float]:
        """(shortest, longest) hold of the fault: its own bounds, else DEFAULT_HOLD_S past its minimum."""
        hi = self.max_hold_s if self.max_hold_s is not None else max(self.min_hold_s, 0) + DEFAULT_HOLD_S[1]
        lo = max(self.min_hold_s, DEFAULT_HOLD_S[0] if self.max_hold_s is None else 0.2)
        return lo, max(lo, hi)

    def _event(self, targets: list[int], detail: str) -> NemesisEvent:
        return NemesisEvent(self.name, sorted(set(targets)), detail)


# ---- choosing targets from the current metadata ------------------------------------


def _led(cluster: ChaosCluster, topic: str) -> list[PartitionInfo]:
    """The partitions that have a leader; a nemesis needs a healthy cluster to aim at."""
    parts = [p for p in cluster.partitions(topic) if p.leader >= 0]
    if not parts:
        raise RuntimeError(f"no partition of {topic} has a leader: heal before starting a nemesis")
    return parts


def _describe(parts: list[PartitionInfo], broker_id: int) -> str:
    """e.g. "leads p0 (epoch 2), p2 (epoch 0)" """
    mine = [f"p{p.partition} (epoch {p.leader_epoch})" for p in parts if p.leader == broker_id]
    return "leads " + ", ".join(mine) if mine else "leads nothing"


def _pick_leader(cluster: ChaosCluster, topic: str, rng: random.Random) -> tuple[int, str]:
    """The leader of a random partition, not the controller if any such leader exists.

    Hitting the controller too would mix a controller failover into a leader fault;
    only when the controller leads everything is it the target, and the detail says so.
    """
    parts = _led(cluster, topic)
    controller = cluster.controller_id()
    others = [p for p in parts if p.leader != controller]
    p = rng.choice(others or parts)
    note = "" if others else "; every leader is the controller"
    return p.leader, f"leader of p{p.partition}, {_describe(parts, p.leader)}; controller {controller}{note}"


def _pick_follower(cluster: ChaosCluster, topic: str, rng: random.Random) -> tuple[int, str]:
    """A broker that leads nothing and is not the controller, so that only the ISR should shrink.

    Then one that leads nothing; then any non-controller that follows some partition
    (with RF 3 on 3 brokers every broker may lead one).
    """
    parts = _led(cluster, topic)
    controller = cluster.controller_id()
    leaders = {p.leader for p in parts}
    idle = [i for i in cluster.ids if i not in leaders and any(i in p.replicas for p in parts)]
    candidates = ([i for i in idle if i != controller] or idle
                  or [i for i in cluster.ids if i != controller and any(i in p.replicas for p in parts)])
    target = rng.choice(candidates)
    return target, f"follower, {_describe(parts, target)}; controller {controller}"


def _pick_controller(cluster: ChaosCluster, topic: str, rng: random.Random) -> tuple[int, str]:
    """The Raft leader (the active controller), with what it leads."""
    controller = wait_for(cluster.controller_id, 10.0, "a controller")
    return controller, f"controller (Raft leader), {_describe(cluster.partitions(topic), controller)}"


class _Strike(Nemesis):
    """One target, picked by ``_pick`` from the current metadata, hit by ``_hit``."""

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        target, detail = self._pick(cluster, topic, rng)
        self._hit(cluster, target)
        return self._event([target], detail)

    def _pick(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> tuple[int, str]:
        raise NotImplementedError

    def _hit(self, cluster: ChaosCluster, broker_id: int) -> None:
        raise NotImplementedError


class KillLeader(_Strike):
    name = "kill-leader"

    def _pick(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> tuple[int, str]:
        return _pick_leader(cluster, topic, rng)

    def _hit(self, cluster: ChaosCluster, broker_id: int) -> None:
        cluster.kill(broker_id)


class _Pause(_Strike):
    """SIGSTOP: the process keeps its connections, so only the session timeout fences it. ``long``:
    held past the session timeout (fenced, replaced; its late work must never count), else well within
    it (nothing should move)."""
    long: bool = True

    def __init__(self, cluster: ChaosCluster | None = None):
        self._set_hold(cluster.session_timeout_s if cluster is not None else DEFAULT_SESSION_TIMEOUT_S)

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        self._set_hold(cluster.session_timeout_s)   # the cluster actually faulted decides
        return super().start(cluster, topic, rng)

    def _hit(self, cluster: ChaosCluster, broker_id: int) -> None:
        cluster.pause(broker_id)

    def _set_hold(self, session_timeout_s: float) -> None:
        if self.long:
            self.min_hold_s = session_timeout_s + 2.0   # 2 s for the fencing and election to land
        else:
            self.max_hold_s = session_timeout_s / 2


class _PauseLeader(_Pause):
    def _pick(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> tuple[int, str]:
        return _pick_leader(cluster, topic, rng)


class PauseLeaderLong(_PauseLeader):
    """Longer than the session timeout: the controller fences the zombie and elects a new leader."""
    name = "pause-leader-long"


class PauseLeaderShort(_PauseLeader):
    """Shorter than the session timeout: nothing should be fenced; clients just wait."""
    name = "pause-leader-short"
    long = False


class PauseController(_Pause):
    """The Raft leader stops past the session timeout: the others elect a new one, which fences it; after
    SIGCONT it must learn from a higher term that it no longer leads, and act on nothing it decided before."""
    name = "pause-controller"

    def _pick(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> tuple[int, str]:
        return _pick_controller(cluster, topic, rng)


class PauseFollower(_Pause):
    """A follower stops past the session timeout: it is fenced and leaves the ISR; after SIGCONT its
    fetches resume from where they stopped and it must rejoin."""
    name = "pause-follower"

    def _pick(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> tuple[int, str]:
        return _pick_follower(cluster, topic, rng)


class KillController(Nemesis):
    """The Raft leader: the survivors elect a new controller, which fences the dead one."""
    name = "kill-controller"

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        controller = wait_for(cluster.controller_id, 10.0, "a controller")
        note = self._prepare(cluster, topic, controller)
        detail = f"controller (Raft leader), {_describe(cluster.partitions(topic), controller)}{note}"
        cluster.kill(controller)
        return self._event([controller], detail)

    def _prepare(self, cluster: ChaosCluster, topic: str, controller: int) -> str:
        """Anything to arrange before the kill; returns a note for the detail."""
        return ""


class KillLeaderController(KillController):
    """The worst single kill: Raft failover and partition failover at once."""
    name = "kill-leader-controller"

    def _prepare(self, cluster: ChaosCluster, topic: str, controller: int) -> str:
        if any(p.leader == controller for p in _led(cluster, topic)):
            return ""
        return "; " + _make_lead(cluster, topic, controller)


def _make_lead(cluster: ChaosCluster, topic: str, broker_id: int, timeout: float = 10.0) -> str:
    """Give ``broker_id`` a leadership by a preferred election (it moves each partition to its first
    replica, and every broker is first for some partition of a round-robin placement)."""
    try:
        with Admin(cluster.bootstrap) as admin:
            admin.elect_leaders("preferred", topic)
        wait_for(lambda: any(p.leader == broker_id for p in cluster.partitions(topic)), timeout,
                 f"broker {broker_id} to lead a partition of {topic}")
        return "it led nothing: preferred election first"
    except (KafkaError, AssertionError) as e:
        return f"it leads nothing and the preferred election did not change that ({e})"


class KillFollower(_Strike):
    """A broker that leads nothing: only the ISR should shrink, no leader moves."""
    name = "kill-follower"

    def _pick(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> tuple[int, str]:
        return _pick_follower(cluster, topic, rng)

    def _hit(self, cluster: ChaosCluster, broker_id: int) -> None:
        cluster.kill(broker_id)


class _KillSeveral(Nemesis):
    """kill -9 ``count`` random brokers at once (None: all); heal restarts them together."""
    count: int | None = None

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        live = cluster.live_ids()
        targets = live if self.count is None else rng.sample(live, self.count)
        controller = cluster.controller_id()
        cluster.kill_many(targets)
        return self._event(targets, f"{len(targets)} at once; controller was {controller}")


class KillTwo(_KillSeveral):
    """Two of three Raft voters gone (two of four: still no majority): no quorum, so no fencing or election
    until they return."""
    name = "kill-two"
    count = 2


class KillAll(_KillSeveral):
    """Everything acked before the crash must be back after the restart (data reached the OS before the ack)."""
    name = "kill-all"


class RollingRestart(Nemesis):
    """SIGTERM each broker in turn (controlled shutdown), restart it, and wait for a full ISR before the next.

    Non-controllers go first and the controller last, as in an operator's roll, so the
    controller should move once, not at every step. (pysyncobj has no pre-vote: a
    restarted follower can still win a Raft election and take the controller over.)
    """
    name = "rolling-restart"

    def __init__(self, cluster: ChaosCluster | None = None, step_timeout_s: float = READY_TIMEOUT_S):
        self.step_timeout_s = step_timeout_s

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        controller = cluster.controller_id()
        order = sorted(cluster.ids, key=lambda i: (i == controller, i))
        steps = []
        for broker_id in order:
            code = cluster.terminate(broker_id, self.step_timeout_s)
            cluster.restart(broker_id, timeout=self.step_timeout_s)
            took = cluster.wait_healed(topic, self.step_timeout_s)
            if took is None:
                raise AssertionError(f"rolling restart: {topic} not fully replicated {self.step_timeout_s} s "
                                     f"after broker {broker_id} came back")
            steps.append(f"{broker_id} (exit {code}, ISR full {took:.1f} s after ready)")
        return self._event(order, "in turn: " + ", ".join(steps) + f"; controller was {controller}")


# ---- issue 14: faults the first nemeses could not produce ------------------------------

STALL_S = 0.4   # well within replica.lag.time.max.ms and the session timeout: the stalled stay in the ISR


class KillLeaderStalledIsr(Nemesis):
    """The leader's in-sync followers stop for STALL_S (still in the ISR), then kill -9 of the leader, then
    the followers continue: one of them takes over without what the leader appended alone meanwhile.

    With acks=all nothing of that was acknowledged (the HW could not move) and nothing acked may be
    lost. With acks=1 it was acknowledged and is lost for certain: the negative control
    (test_negative_control.py) runs this fault with acks=1 producers and requires the checker to say so.
    """
    name = "kill-leader-stalled-isr"

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        target, detail = _pick_leader(cluster, topic, rng)
        live = set(cluster.live_ids())
        followers = sorted({b for p in _led(cluster, topic) if p.leader == target for b in p.isr} & live - {target})
        for broker_id in followers:
            cluster.pause(broker_id)
        time.sleep(STALL_S)   # the schedule: the leader appends alone this long (not an assertion)
        cluster.kill(target)
        for broker_id in followers:
            cluster.resume(broker_id)
        return self._event([target, *followers], f"{detail}; its ISR followers {followers} stopped {STALL_S} s "
                                                 "before the kill, continued right after it")


ELECTION_INTERVAL_S = 0.25


class _ElectionLoop(threading.Thread):
    """ElectLeaders PREFERRED for ``topic`` every ELECTION_INTERVAL_S until stopped; counts each partition's
    outcome (moved, or its error) and each call that failed as a whole (no controller for a moment)."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(name="chaos-elections", daemon=True)
        self._servers, self._topic = bootstrap, topic   # (Thread has a _bootstrap of its own)
        self._done = threading.Event()
        self.calls = 0
        self.outcomes: Counter[str] = Counter()

    def run(self) -> None:
        with Admin(self._servers, request_timeout_ms=5000) as admin:
            while not self._done.wait(ELECTION_INTERVAL_S):
                self.calls += 1
                try:
                    results = admin.elect_leaders("preferred", self._topic, timeout_ms=5000)
                except KafkaError as e:
                    self.outcomes[f"call failed ({type(e).__name__})"] += 1
                    continue
                for r in results:
                    self.outcomes["moved" if r.error is None else type(r.error).__name__] += 1

    def stop(self) -> str:
        """Stop after the call in progress; a summary for the event's detail."""
        self._done.set()
        self.join(20)
        return f"{self.calls} preferred elections: " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))


def _preferred_lead(cluster: ChaosCluster, topic: str) -> bool:
    """Every partition led by its preferred (first) replica."""
    parts = cluster.partitions(topic)
    return bool(parts) and all(p.leader == p.replicas[0] for p in parts)


class PreferredElections(Nemesis):
    """Leaders off their preferred replica, and ElectLeaders PREFERRED every ELECTION_INTERVAL_S under load.

    kill -9 of a partition leader, started again at once: its partitions move to other replicas and
    it returns as a follower that truncates and catches up. The elections are refused
    (PREFERRED_LEADER_NOT_AVAILABLE) until it is back in the ISR, then move its partitions back
    to it while producers write; later ones find nothing to do. The heal record counts the outcomes.
    """
    name = "preferred-elections"
    min_hold_s = 4.0     # room for the restart, the ISR rejoin and an election that moves leaders back

    def __init__(self, cluster: ChaosCluster | None = None):
        self._loop: _ElectionLoop | None = None
        self._started: NemesisEvent | None = None
        self._topic = ""

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        target, detail = _pick_leader(cluster, topic, rng)
        cluster.kill(target)
        cluster.restart(target, wait=False)
        self._topic = topic
        self._loop = _ElectionLoop(cluster.bootstrap, topic)
        self._loop.start()
        self._started = self._event([target], f"kill -9 and restart of the {detail}")
        return self._started

    def heal(self, cluster: ChaosCluster) -> None:
        """The restarted broker runs; the elections go on until every partition is led by its preferred
        replica again (a restart on a busy machine can outlast the hold), at most READY_TIMEOUT_S; the
        detail says if they did not get there."""
        cluster.heal()
        if self._loop is None:
            return
        try:
            wait_for(lambda: _preferred_lead(cluster, self._topic), READY_TIMEOUT_S,
                     f"every partition of {self._topic} led by its preferred replica")
            note = ""
        except AssertionError:
            note = f"; NOT every partition led by its preferred replica {READY_TIMEOUT_S:.0f} s after the heal"
        summary = self._loop.stop()
        self._loop = None
        if self._started is not None:
            self._started.detail += f"; {summary}{note}"   # the runner's heal record carries it


SEQUENCE_PARTS = ("kill-leader", "kill-follower", "kill-controller", "pause-leader-short", "pause-leader-long",
                  "pause-follower", "pause-controller")


def _all_led(cluster: ChaosCluster, topic: str) -> bool:
    parts = cluster.partitions(topic)
    return bool(parts) and all(p.leader >= 0 for p in parts)


class FaultsInSequence(Nemesis):
    """Two or three single faults (SEQUENCE_PARTS) in a row within one round: strike, hold, heal, and the
    next strike as soon as every partition has a leader again, while the last fault's broker may still be
    catching up. The last fault is held and healed by the runner."""
    name = "faults-in-sequence"

    def __init__(self, cluster: ChaosCluster | None = None):
        self._last: Nemesis | None = None

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        names = rng.sample(SEQUENCE_PARTS, rng.choice((2, 3)))
        began = time.monotonic()
        targets: list[int] = []
        steps: list[str] = []
        for i, name in enumerate(names):
            if i:
                wait_for(lambda: _all_led(cluster, topic), READY_TIMEOUT_S,
                         f"every partition of {topic} led after {names[i - 1]}")
            part = make(name, cluster)
            at = time.monotonic() - began
            event = part.start(cluster, topic, rng)
            targets += event.targets
            if i == len(names) - 1:
                steps.append(f"{name} {event.targets} at +{at:.1f} s ({event.detail})")
                break
            hold = rng.uniform(*part.hold_range())
            time.sleep(hold)   # the schedule: how long this fault lasts (not an assertion)
            part.heal(cluster)
            steps.append(f"{name} {event.targets} at +{at:.1f} s, healed after {hold:.1f} s ({event.detail})")
        self._last = part
        self.min_hold_s, self.max_hold_s = part.min_hold_s, part.max_hold_s
        return self._event(targets, "; then ".join(steps))

    def heal(self, cluster: ChaosCluster) -> None:
        if self._last is None:
            super().heal(cluster)
        else:
            self._last.heal(cluster)


class RecreateTopic(Nemesis):
    """kill -9 of a replica of the round's topic; the topic deleted and created again under the same name
    while that replica is dead (before or around its fencing); heal restarts it.

    The dead replica still holds the old incarnation's folders and never saw the delete: the new
    incarnation must not adopt them (Kafka tells them apart by topic id). The runner reads the old
    incarnation back before start() and runs a new workload on the new one under a history name of
    its own, so an old record that surfaces there is a duplicate of the old final read, or sits where
    a new ack says another value is (lost, inconsistent offsets), or makes the replicas differ.
    With 3 brokers an RF-3 topic cannot be created while one is fenced: then the replica is started
    first (it learns of the delete on its way back) and the detail says so; 4 brokers keep it dead.
    """
    name = "topic-recreate"
    recreates_topic = True

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        parts = _led(cluster, topic)
        count = len(cluster.partitions(topic))
        controller = cluster.controller_id()
        replicas = sorted({b for p in parts for b in p.replicas})
        target = rng.choice([b for b in replicas if b != controller] or replicas)
        held = [p.partition for p in parts if target in p.replicas]
        cluster.kill(target)
        killed = time.monotonic()
        cluster.delete_topic(topic)
        try:
            new = cluster.create_topic(topic, count, full_isr=False)
            how = f"deleted and re-created {time.monotonic() - killed:.2f} s after the kill, broker {target} dead"
        except InvalidReplicationFactorError:
            cluster.restart(target)
            new = cluster.create_topic(topic, count, full_isr=False)
            how = (f"deleted while broker {target} was dead; it was fenced and the rest could not hold RF 3, "
                   "so re-created after its restart")
        again = [p.partition for p in new if target in p.replicas]
        return self._event([target], f"replica of partitions {held} (old folders on its disk), controller "
                                     f"{controller}; {how}; a replica of partitions {again} of the new incarnation")


class WipeDataDir(Nemesis):
    """kill -9 of a broker (not the controller), its data dir deleted and formatted again as a rejoining
    node (a disk replaced after a crash); heal starts it. It returns with no log and no Raft state: it
    must copy every replica from the leaders again, and must neither vote nor lead on what it lost."""
    name = "wipe-data"

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        parts = _led(cluster, topic)
        controller = cluster.controller_id()
        target = rng.choice([i for i in cluster.live_ids() if i != controller] or cluster.live_ids())
        cluster.kill(target)
        cluster.wipe(target)
        return self._event([target], f"{_describe(parts, target)}; controller {controller}; data dir deleted and "
                                     "formatted as a rejoining node")


STREAMS_PER_BROKER = 40


def _idle_requests(stop: threading.Event) -> Iterator[kafka_pb2.ProduceRequest]:
    """A ProduceStream's request side that sends nothing until ``stop``: a producer that went quiet."""
    stop.wait()
    return
    yield   # makes this a generator


class _IdleStreams:
    """``count`` ProduceStream calls to one broker that send nothing: each holds whatever a stream holds on
    the broker (a worker thread, a stream slot) until close()."""

    def __init__(self, address: str, count: int):
        self._stop = threading.Event()
        self._channel = grpc.insecure_channel(address)
        stub = kafka_pb2_grpc.KafkaStub(self._channel)
        self._calls = [stub.ProduceStream(_idle_requests(self._stop)) for _ in range(count)]

    def ended(self) -> int:
        """Calls the broker has ended already (it refuses streams past its limit)."""
        return sum(1 for c in self._calls if c.done())

    def close(self) -> None:
        self._stop.set()
        for c in self._calls:
            c.cancel()
        self._channel.close()


class ClientSaturation(Nemesis):
    """STREAMS_PER_BROKER idle ProduceStream calls held open on every other broker (a crowd of producers
    that connected and went quiet), then kill -9 of a follower, started again at once: it must register,
    catch up and rejoin the ISR while the crowd holds the leaders' client streams. The crowd stays until
    the runner has measured the recovery (release): a follower that cannot rejoin under it is not healed."""
    name = "client-saturation"

    def __init__(self, cluster: ChaosCluster | None = None):
        self._crowd: list[_IdleStreams] = []
        self._started: NemesisEvent | None = None

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        target, detail = _pick_follower(cluster, topic, rng)
        others = [i for i in cluster.live_ids() if i != target]
        self._crowd = [_IdleStreams(cluster.broker(i).bootstrap, STREAMS_PER_BROKER) for i in others]
        cluster.kill(target)
        cluster.restart(target, wait=False)
        self._started = self._event([target], f"{STREAMS_PER_BROKER} idle ProduceStream calls on each of brokers "
                                              f"{others}, then kill -9 and restart of the {detail}")
        return self._started

    def heal(self, cluster: ChaosCluster) -> None:
        cluster.heal()
        if self._started is not None and self._crowd:
            ended = sum(s.ended() for s in self._crowd)
            self._started.detail += (f"; at the heal the brokers had ended {ended} of "
                                     f"{len(self._crowd) * STREAMS_PER_BROKER} idle streams")

    def release(self, cluster: ChaosCluster) -> None:
        for crowd in self._crowd:
            crowd.close()
        self._crowd = []


NEMESES: dict[str, type[Nemesis]] = {n.name: n for n in (
    KillLeader, KillController, KillLeaderController, KillFollower, PauseLeaderLong, PauseLeaderShort,
    KillTwo, RollingRestart, KillAll,
    # issue 14
    KillLeaderStalledIsr, PauseController, PauseFollower, PreferredElections, FaultsInSequence, RecreateTopic,
    ClientSaturation, WipeDataDir)}


def make(name: str, cluster: ChaosCluster | None = None) -> Nemesis:
    """A nemesis by its name; ``cluster`` sets holds that depend on it (the pauses' session timeout)."""
    try:
        kind = NEMESES[name]
    except KeyError:
        raise ValueError(f"unknown nemesis {name!r}; known: {', '.join(NEMESES)}") from None
    return kind(cluster)
