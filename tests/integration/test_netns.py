"""Raftka on a network of real hosts: each broker in its own network namespace with its own address.

Issue 19 item 1. raftka_testing.netns.Network puts hosts b1..b3 behind a router namespace; this
process is the "client" host. The first tests check the network itself (TCP and UDP between
namespaces, every kind of cut, heal, destroy leaving nothing behind); the last two run a 3-broker
cluster on it: produce / consume / leader kill -9 through the routed network, and an isolated leader
being fenced and replaced, then rejoining the ISR after heal().

Needs root and iproute2: without them every test fails with one line saying why (never a skip).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client import Producer
from raftka_testing.cluster import (Cluster, create_ready, free_port, metadata, partitions, read_all, wait_for,
                                    write_cluster)
from raftka_testing.netns import CLIENT, Network, namespaces, unavailable_reason

pytestmark = pytest.mark.integration

HOSTS = ["b1", "b2", "b3"]
ALL = [*HOSTS, CLIENT]
CONNECT_TIMEOUT_S = 0.5   # a cut connect must time out (a blackhole is silent), an open one takes < 1 ms

# Accepts TCP and records every UDP datagram's text in a file, on one address and port.
LISTENER = """
import socket, sys, threading
addr, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tcp = socket.create_server((addr, port))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((addr, port))
def accept():
    while True:
        tcp.accept()[0].close()
threading.Thread(target=accept, daemon=True).start()
with open(path, "a") as out:
    while True:
        out.write(udp.recv(100).decode() + "\\n"); out.flush()
"""

# TCP-connects to every target at once; prints {target: "ok" | "timeout" | the error's name}.
# Or, with "udp TOKEN", sends TOKEN to each target as a datagram.
PROBE = """
import json, socket, sys, threading
mode, arg, port, targets = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
out = {}
def connect(t):
    try:
        socket.create_connection((t, port), timeout=float(arg)).close(); out[t] = "ok"
    except socket.timeout:
        out[t] = "timeout"
    except OSError as e:
        out[t] = type(e).__name__
if mode == "udp":
    for t in targets:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(arg.encode(), (t, port))
else:
    threads = [threading.Thread(target=connect, args=(t,)) for t in targets]
    [t.start() for t in threads]; [t.join() for t in threads]
    print(json.dumps(out))
"""


def fail_unless_available() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.fail(f"network namespaces unavailable: {reason}", pytrace=False)


@pytest.fixture
def net():
    fail_unless_available()
    network = Network(list(HOSTS))
    try:
        yield network.create()
    finally:
        assert network.destroy() == [], "processes were left running in the network's namespaces"


class Listeners:
    """One LISTENER per host (the client's in this namespace), started here and killed by PID."""

    def __init__(self, network: Network, root: Path):
        self.net, self.root, self.port = network, root, free_port()
        self.procs = [subprocess.Popen([*network.exec_prefix(h), sys.executable, "-c", LISTENER,
                                        network.address(h), str(self.port), str(self.received_path(h))])
                      for h in ALL]
        wait_for(lambda: all(r == "ok" for r in self.reach(CLIENT, HOSTS).values()), 10, "the listeners to accept")

    def received_path(self, host: str) -> Path:
        return self.root / f"udp-{host}.txt"

    def received(self, host: str) -> list[str]:
        path = self.received_path(host)
        return path.read_text().split() if path.exists() else []

    def reach(self, src: str, dsts: list[str]) -> dict[str, str]:
        """How a TCP connect from ``src`` to each of ``dsts`` ends (all at once, in one process on src)."""
        targets = [self.net.address(d) for d in dsts]
        done = subprocess.run([*self.net.exec_prefix(src), sys.executable, "-c", PROBE, "tcp",
                               str(CONNECT_TIMEOUT_S), str(self.port), *targets],
                              capture_output=True, text=True, timeout=10, check=True)
        by_address = json.loads(done.stdout)
        return {d: by_address[self.net.address(d)] for d in dsts}

    def matrix(self) -> dict[tuple[str, str], str]:
        """Every ordered pair's TCP connect result, one probe process per source, all running at once."""
        procs = {src: subprocess.Popen([*self.net.exec_prefix(src), sys.executable, "-c", PROBE, "tcp",
                                        str(CONNECT_TIMEOUT_S), str(self.port),
                                        *[self.net.address(d) for d in ALL if d != src]],
                                       stdout=subprocess.PIPE, text=True) for src in ALL}
        out = {}
        for src, p in procs.items():
            by_address = json.loads(p.communicate(timeout=10)[0])
            out |= {(src, d): by_address[self.net.address(d)] for d in ALL if d != src}
        return out

    def send_udp(self, src: str, dst: str, token: str) -> None:
        subprocess.run([*self.net.exec_prefix(src), sys.executable, "-c", PROBE, "udp", token, str(self.port),
                        self.net.address(dst)], check=True, timeout=10)

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(timeout=5)


@pytest.fixture
def listeners(net, tmp_path):
    ls = Listeners(net, tmp_path)
    yield ls
    ls.close()


def expect(down: set[frozenset[str]]) -> dict[tuple[str, str], str]:
    """Connect results when the pairs in ``down`` are cut (TCP needs both ways: a one-way cut stalls both)."""
    return {(a, b): "timeout" if frozenset((a, b)) in down else "ok" for a in ALL for b in ALL if a != b}


def pairs(*edges: str) -> set[frozenset[str]]:
    return {frozenset(e.split("-")) for e in edges}


def test_tcp_flows_between_every_pair_of_hosts(net, listeners):
    assert listeners.matrix() == expect(set())
    for h in HOSTS:   # a broker on hN must reach its own address (its own ports, its own Raft node)
        assert listeners.reach(h, [h]) == {h: "ok"}


def test_a_one_way_cut_drops_only_src_to_dst_packets(net, listeners):
    net.cut("b1", "b2")
    assert net.cuts() == {("b1", "b2")}
    # b2's datagrams reach b1; b1's to b2 are dropped. b1 sends first, b3 after it: when b3's token is
    # there, b1's would have been long before it, had it not been dropped.
    listeners.send_udp("b2", "b1", "from-b2")
    listeners.send_udp("b1", "b2", "from-b1")
    listeners.send_udp("b3", "b2", "from-b3")
    wait_for(lambda: "from-b2" in listeners.received("b1"), 5, "b2's datagram at b1")
    wait_for(lambda: "from-b3" in listeners.received("b2"), 5, "b3's datagram at b2")
    assert "from-b1" not in listeners.received("b2")
    # TCP needs both ways: b1 -> b2 times out (the SYN is dropped, silently), and so does b2 -> b1
    # (its SYN arrives, b1's SYN-ACK does not): a one-way packet cut stalls connections either way.
    assert listeners.matrix() == expect(pairs("b1-b2"))
    net.heal()
    assert net.cuts() == set()
    assert listeners.matrix() == expect(set())


def test_cut_both_isolate_split_and_bridge(net, listeners):
    net.cut_both("b1", "client")
    assert listeners.matrix() == expect(pairs("b1-client"))
    net.heal()
    net.isolate("b2")
    assert listeners.matrix() == expect(pairs("b2-b1", "b2-b3", "b2-client"))
    net.heal()
    net.split([["b1", "client"], ["b2", "b3"]])
    assert listeners.matrix() == expect(pairs("b1-b2", "b1-b3", "client-b2", "client-b3"))
    net.heal()
    net.bridge("b1", "b2", "b3")
    assert net.cuts() == {("b1", "b3"), ("b3", "b1")}
    assert listeners.matrix() == expect(pairs("b1-b3"))
    net.heal()
    assert listeners.matrix() == expect(set())


def test_destroy_leaves_no_namespace_link_rule_or_route_behind():
    fail_unless_available()
    network = Network(list(HOSTS)).create()
    try:
        network.isolate("b1")
        ours = [ns for ns in namespaces() if network.tag in ns]
        assert len(ours) == len(HOSTS) + 1   # the hosts and the router
        assert network.client_link in _root("link")
        assert f"10.{network.octet}.0.0/16" in _root("route")
    finally:
        assert network.destroy() == []
    assert network.destroy() == []           # idempotent
    assert not [ns for ns in namespaces() if network.tag in ns]
    assert network.client_link not in _root("link")
    assert f"10.{network.octet}." not in _root("route")
    assert network.cuts() == set()


def _root(what: str) -> str:
    return subprocess.run(["ip", what], capture_output=True, text=True, check=True).stdout


# ---- a real cluster on the network ------------------------------------------------------------


@pytest.fixture
def cluster_on(net, tmp_path):
    clusters: list[Cluster] = []

    def make(config: dict[str, int] | None = None) -> Cluster:
        c = write_cluster(tmp_path / "cluster", 3, config, network=net)
        clusters.append(c)
        return c.start_all(timeout=30)

    yield make
    for c in clusters:
        c.stop_all()


def leader_of(cluster: Cluster, topic: str, asked: list[int]) -> int | None:
    """The partition-0 leader every asked broker agrees on, or None."""
    seen = [(partitions(cluster.brokers[i], topic) or {}).get(0) for i in asked]
    leaders = {p.leader_id if p is not None else None for p in seen}
    return leaders.pop() if len(leaders) == 1 and None not in leaders and -1 not in leaders else None


def test_a_cluster_on_three_hosts_serves_and_fails_over(net, cluster_on):
    cluster = cluster_on()
    for i, b in cluster.brokers.items():
        ns = subprocess.run(["ip", "netns", "identify", str(b.pid)], capture_output=True, text=True).stdout.strip()
        cmdline = Path(f"/proc/{b.pid}/cmdline").read_bytes().split(b"\0")
        # `ip netns exec` execs: the PID Popen gave is the broker itself, in its host's namespace.
        assert ns == net.namespace(f"b{i}") and cmdline[1:3] == [b"-m", b"broker"], (ns, cmdline)
        r = metadata(b)
        assert r.answered_by == i
        assert {m.broker_id: m.host for m in r.brokers} == {j: net.address(f"b{j}") for j in (1, 2, 3)}
    create_ready(cluster, "hosts", 1)
    with Producer(cluster.bootstrap, acks="all") as producer:
        futures = [producer.send("hosts", f"v{n}".encode(), partition=0) for n in range(100)]
        producer.flush(30)
        assert [f.result(10).offset for f in futures] == list(range(100))
    got = read_all(cluster.bootstrap, "hosts", {0: 100})
    assert [v for _, v in got[0]] == [f"v{n}".encode() for n in range(100)]

    old = leader_of(cluster, "hosts", [1, 2, 3])
    cluster.brokers[old].kill()   # kill -9 by PID: the PID is the broker's own (checked above)
    survivors = [i for i in (1, 2, 3) if i != old]
    new = wait_for(lambda: (lead := leader_of(cluster, "hosts", survivors)) not in (None, old) and lead,
                   15, f"a new leader for hosts-0 other than {old}")
    assert new in survivors


def test_an_isolated_leader_is_fenced_replaced_and_rejoins_after_heal(net, cluster_on):
    cluster = cluster_on()
    create_ready(cluster, "cutoff", 1)
    old = leader_of(cluster, "cutoff", [1, 2, 3])
    controller = metadata(cluster.brokers[old]).controller_id
    old_epoch = partitions(cluster.brokers[old], "cutoff")[0].leader_epoch
    survivors = [i for i in (1, 2, 3) if i != old]
    cut_at = time.monotonic()
    net.isolate(f"b{old}")

    def replaced() -> bool:
        views = [metadata(cluster.brokers[i], ["cutoff"], timeout=1) for i in survivors]
        return all(v is not None and any(b.broker_id == old and not b.alive for b in v.brokers)
                   and v.topics[0].partitions[0].leader_id in survivors
                   and old not in v.topics[0].partitions[0].isr for v in views)
    wait_for(replaced, 20, f"the survivors {survivors} to fence broker {old} and elect another leader")
    fenced_after = time.monotonic() - cut_at
    net.heal()
    healed_at = time.monotonic()
    # The cut-off broker's own view stays "I lead, full ISR" until it hears from the quorum again:
    # only a newer leader epoch everywhere shows that it caught up, and the full ISR that it rejoined.
    wait_for(lambda: all((p := (partitions(cluster.brokers[i], "cutoff") or {}).get(0)) is not None
                         and p.leader_epoch > old_epoch and sorted(p.isr) == [1, 2, 3] for i in (1, 2, 3)),
             30, f"broker {old} back in the ISR of cutoff-0 (leader epoch > {old_epoch}) on every broker")
    print(f"isolated leader {old} (controller was {controller}): fenced and replaced after {fenced_after:.2f} s; "
          f"back in the ISR {time.monotonic() - healed_at:.2f} s after heal")
