"""Network nemeses: links cut on purpose between brokers on hosts of their own (raftka_testing/netns.py).

Every broker runs in its own network namespace behind one router; the test process is the host
"client". A cut drops packets silently in the router (policy routing, `ip rule ... blackhole`): the
sender sees no reset and no ICMP, only silence, as in a real partition, so nothing closes a TCP
connection for it. Each kind also comes combined with a kill -9 of a broker chosen by the round's seed
("<kind>+kill"). heal() removes every cut first, then restarts what was killed, unpauses, and waits
until every broker is ready (ChaosCluster.heal).

    net-isolate-leader      a partition leader cut from every host, the client too
    net-leader-minority     a partition leader cut from the other brokers, still reachable by clients
    net-isolate-controller  the Raft leader (the active controller) cut from the other brokers
    net-bridge              Jepsen's bridge: a leader and a third broker cannot talk; both see the middle one
    net-one-way             a leader's packets to the other brokers dropped, theirs to it delivered (or the
                            reverse, by the seed)
    net-client-leader       clients cut from a leader, the brokers still see each other
    net-flap                a leader cut from the other brokers and healed again every FLAP_S, for the hold
"""

from __future__ import annotations

import random
import threading

from raftka_testing.netns import CLIENT, Network
from tests.chaos.harness import ChaosCluster
from tests.chaos.nemesis import Nemesis, NemesisEvent, _pick_controller, _pick_leader
from tests.chaos.windows import FaultWindow

# After the session timeout the controller fences a silent broker; its election commits within this.
FENCE_MARGIN_S = 1.5
FLAP_S = (0.2, 0.4)          # a flapping cut changes state every this many seconds (seeded)
NET_HOLD_S = (2.0, 5.0)      # past the session timeout (2 s in the chaos config) sometimes, not always


def host(broker_id: int) -> str:
    return f"b{broker_id}"


def network_of(cluster: ChaosCluster) -> Network:
    if cluster.network is None:
        raise RuntimeError("a network nemesis needs brokers on hosts of their own (ChaosCluster(network=...))")
    return cluster.network


class _NetFault(Nemesis):
    """A cut chosen by ``_cut``; with ``kill_too``, a kill -9 of a seeded broker while the cut holds.

    ``fails_over``: the promise beyond safety (README, "What raftka guarantees"). True: a target cut off
    from the controller for longer than the session timeout (plus FENCE_MARGIN_S) is fenced and loses a
    leadership it held; False: no leader changes at all (the brokers see each other); None: it depends on
    where the cut falls (no promise). A "+kill" round promises nothing more: the kill may take the quorum."""
    min_hold_s, max_hold_s = NET_HOLD_S
    kill_too = False
    fails_over: bool | None = None
    _led = False                      # the target led a partition of the round's topic when it was cut

    def start(self, cluster: ChaosCluster, topic: str, rng: random.Random) -> NemesisEvent:
        before = cluster.partitions(topic)
        targets, detail = self._cut(cluster, network_of(cluster), topic, rng)
        self._led = any(p.leader == targets[0] for p in before)
        if self.kill_too:
            victim = rng.choice(cluster.live_ids())
            cluster.kill(victim)
            targets, detail = targets + [victim], f"{detail}; then kill -9 of broker {victim}"
        return self._event(targets, detail)

    def _cut(self, cluster: ChaosCluster, net: Network, topic: str, rng: random.Random) -> tuple[list[int], str]:
        raise NotImplementedError

    def heal(self, cluster: ChaosCluster) -> None:
        network_of(cluster).heal()
        cluster.heal()

    def broken_promise(self, window: FaultWindow, session_timeout_s: float) -> str | None:
        if self.kill_too or self.fails_over is None or window.heal is None:
            return None
        target, held = window.targets[0], window.heal - window.start
        moved = [c for c in window.leader_changes if c.old == target]
        if self.fails_over is False and window.leader_changes:
            return f"{self.name} moved leaders ({window.leader_changes}) though every broker saw every other"
        if self.fails_over and held >= session_timeout_s + FENCE_MARGIN_S and self._led and not moved:
            return (f"{self.name}: broker {target}, cut off {held:.1f} s (session timeout {session_timeout_s:.1f} s),"
                    f" kept its leaderships")
        return None


def _others(cluster: ChaosCluster, broker_id: int) -> list[int]:
    return [b for b in cluster.ids if b != broker_id]


def _minority_of(cluster: ChaosCluster, broker_id: int) -> list[list[str]]:
    """``broker_id`` alone on one side, the other brokers on the other (the client still reaches both)."""
    return [[host(broker_id)], [host(b) for b in _others(cluster, broker_id)]]


def _split_off(cluster: ChaosCluster, net: Network, broker_id: int) -> None:
    net.split(_minority_of(cluster, broker_id))


class IsolateLeader(_NetFault):
    name = "net-isolate-leader"
    fails_over = True

    def _cut(self, cluster, net, topic, rng):
        leader, detail = _pick_leader(cluster, topic, rng)
        net.isolate(host(leader))
        return [leader], f"{detail}, cut from every host, clients too"


class LeaderMinority(_NetFault):
    name = "net-leader-minority"
    fails_over = True

    def _cut(self, cluster, net, topic, rng):
        leader, detail = _pick_leader(cluster, topic, rng)
        _split_off(cluster, net, leader)
        return [leader], f"{detail}, cut from the other brokers; clients still reach it"


class IsolateController(_NetFault):
    name = "net-isolate-controller"
    fails_over = True

    def _cut(self, cluster, net, topic, rng):
        controller, detail = _pick_controller(cluster, topic, rng)
        _split_off(cluster, net, controller)
        return [controller], f"{detail}, cut from the other brokers"


class Bridge(_NetFault):
    name = "net-bridge"

    def _cut(self, cluster, net, topic, rng):
        leader, detail = _pick_leader(cluster, topic, rng)
        middle = rng.choice(_others(cluster, leader))
        far = [b for b in _others(cluster, leader) if b != middle]
        for b in far:
            net.cut_both(host(leader), host(b))
        return [leader, *far], f"{detail}; it and broker(s) {far} cannot talk, both see broker {middle}"


class OneWay(_NetFault):
    name = "net-one-way"

    def _cut(self, cluster, net, topic, rng):
        leader, detail = _pick_leader(cluster, topic, rng)
        outbound = rng.random() < 0.5
        for b in _others(cluster, leader):
            src, dst = (leader, b) if outbound else (b, leader)
            net.cut(host(src), host(dst))
        way = "its packets to the other brokers dropped" if outbound else "the other brokers' packets to it dropped"
        return [leader], f"{detail}; {way}, the other way delivered"


class ClientLeader(_NetFault):
    name = "net-client-leader"
    fails_over = False

    def _cut(self, cluster, net, topic, rng):
        leader, detail = _pick_leader(cluster, topic, rng)
        net.cut_both(CLIENT, host(leader))
        return [leader], f"{detail}; clients cannot reach it, the brokers still do"


class Flap(_NetFault):
    name = "net-flap"

    def __init__(self, cluster: ChaosCluster | None = None):
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flips = 0

    def _cut(self, cluster, net, topic, rng):
        leader, detail = _pick_leader(cluster, topic, rng)
        groups = _minority_of(cluster, leader)
        pauses = [rng.uniform(*FLAP_S) for _ in range(1000)]   # seeded here, not in the thread
        self._stop.clear()
        self._thread = threading.Thread(target=self._flap, args=(net, groups, pauses), name="net-flap", daemon=True)
        self._thread.start()
        return [leader], f"{detail}; cut from the other brokers and healed again every {FLAP_S[0]}-{FLAP_S[1]} s"

    def _flap(self, net: Network, groups: list[list[str]], pauses: list[float]) -> None:
        cut = False
        for pause in pauses:
            if self._stop.is_set():
                return
            if cut:
                net.heal()
            else:
                net.split(groups)
            cut, self.flips = not cut, self.flips + 1
            if self._stop.wait(pause):
                return

    def heal(self, cluster: ChaosCluster) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        super().heal(cluster)


BASE_KINDS: tuple[type[_NetFault], ...] = (IsolateLeader, LeaderMinority, IsolateController, Bridge, OneWay,
                                           ClientLeader, Flap)


def _with_kill(kind: type[_NetFault]) -> type[_NetFault]:
    return type(kind.__name__ + "Kill", (kind,), {"name": kind.name + "+kill", "kill_too": True})


NET_NEMESES: dict[str, type[Nemesis]] = {k.name: k for base in BASE_KINDS for k in (base, _with_kill(base))}
