"""Nemeses: one fault each, started on a healthy ChaosCluster and healed afterwards.

    nemesis = make("kill-leader", cluster)
    event = nemesis.start(cluster, topic, rng)      # the fault happens here
    history.append(event.to_record("start", t))
    ...                                             # the runner holds the fault (>= min_hold_s, <= max_hold_s)
    nemesis.heal(cluster)                           # every broker runs, unpaused, ready
    history.append(event.to_record("heal", t))

The runner chooses how long a fault lasts; a nemesis waits on its own only where
the fault itself is a sequence (rolling-restart). Targets are picked with the
runner's ``rng`` from what the cluster says right now: one seed, one choice per state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from client.admin import Admin
from client.errors import KafkaError
from tests.chaos.harness import DEFAULT_SESSION_TIMEOUT_S, READY_TIMEOUT_S, ChaosCluster, PartitionInfo
from tests.integration.cluster import wait_for


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

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        raise NotImplementedError

    def heal(self, cluster: ChaosCluster) -> None:
        cluster.heal()

    def _event(self, targets: list[int], detail: str) -> NemesisEvent:
        return NemesisEvent(self.name, sorted(targets), detail)


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


class _SignalLeader(Nemesis):
    """Hit the leader of a random partition (not the controller if possible) with ``_hit``."""

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        target, detail = _pick_leader(cluster, topic, rng)
        self._hit(cluster, target)
        return self._event([target], detail)

    def _hit(self, cluster: ChaosCluster, broker_id: int) -> None:
        raise NotImplementedError


class KillLeader(_SignalLeader):
    name = "kill-leader"

    def _hit(self, cluster: ChaosCluster, broker_id: int) -> None:
        cluster.kill(broker_id)


class _PauseLeader(_SignalLeader):
    """SIGSTOP: the process keeps its connections, so only the session timeout fences it."""

    def __init__(self, cluster: ChaosCluster | None = None):
        self._set_hold(cluster.session_timeout_s if cluster is not None else DEFAULT_SESSION_TIMEOUT_S)

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        self._set_hold(cluster.session_timeout_s)   # the cluster actually faulted decides
        return super().start(cluster, topic, rng)

    def _hit(self, cluster: ChaosCluster, broker_id: int) -> None:
        cluster.pause(broker_id)

    def _set_hold(self, session_timeout_s: float) -> None:
        raise NotImplementedError


class PauseLeaderLong(_PauseLeader):
    """Longer than the session timeout: the controller fences the zombie and elects a new leader."""
    name = "pause-leader-long"

    def _set_hold(self, session_timeout_s: float) -> None:
        self.min_hold_s = session_timeout_s + 2.0   # 2 s for the fencing and election to land


class PauseLeaderShort(_PauseLeader):
    """Shorter than the session timeout: nothing should be fenced; clients just wait."""
    name = "pause-leader-short"

    def _set_hold(self, session_timeout_s: float) -> None:
        self.max_hold_s = session_timeout_s / 2


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


class KillFollower(Nemesis):
    """A broker that leads nothing: only the ISR should shrink, no leader moves."""
    name = "kill-follower"

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        parts = _led(cluster, topic)
        controller = cluster.controller_id()
        leaders = {p.leader for p in parts}
        idle = [i for i in cluster.ids if i not in leaders]
        # Best: leads nothing and is not the controller; then leads nothing; then any non-controller,
        # which follows some partition with RF 3 (and may lead another).
        candidates = ([i for i in idle if i != controller] or idle
                      or [i for i in cluster.ids if i != controller and any(i in p.replicas for p in parts)])
        target = rng.choice(candidates)
        cluster.kill(target)
        return self._event([target], f"follower, {_describe(parts, target)}; controller {controller}")


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
    """Two of three Raft voters gone: no quorum, so no fencing or election until they return."""
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

    def __init__(self, step_timeout_s: float = READY_TIMEOUT_S):
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


NEMESES: dict[str, type[Nemesis]] = {n.name: n for n in (
    KillLeader, KillController, KillLeaderController, KillFollower, PauseLeaderLong, PauseLeaderShort,
    KillTwo, RollingRestart, KillAll)}


def make(name: str, cluster: ChaosCluster | None = None) -> Nemesis:
    """A nemesis by its name; ``cluster`` sets the pause nemeses' holds from its session timeout."""
    try:
        kind = NEMESES[name]
    except KeyError:
        raise ValueError(f"unknown nemesis {name!r}; known: {', '.join(NEMESES)}") from None
    return kind(cluster) if issubclass(kind, _PauseLeader) else kind()
