"""A network of real hosts on one machine: one Linux network namespace per broker host, joined by a router.

Topology (all made with iproute2, no kernel module beyond veth and netns):

    client (this process's own namespace) 10.X.100.2 --veth-- 10.X.100.1 ┐
    host b1 (namespace) 10.X.1.2 ----------------veth---- 10.X.1.1       ├ ROUTER namespace, ip_forward=1
    host b2 (namespace) 10.X.2.2 ----------------veth---- 10.X.2.1       ┘

Every host has its own /24 and a default route via the router; the client gets a route for 10.X.0.0/16.
A cut is a policy-routing rule in the router, ``from A to B blackhole``: the router drops A's packets to B
silently, so the sender sees a timeout as in a real partition, never a reset (``prohibit`` instead answers
with an ICMP error: the sender fails at once). tc (netem) actions and iptables are not available here,
which is why cuts are routing rules.

Names carry a tag made of this process's pid (and a counter), so two runs never collide, and a network
left behind by a killed run can be recognised and swept (its pid is gone). Needs root and ``ip``.
"""

from __future__ import annotations

import atexit
import ipaddress
import itertools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Iterable

CLIENT = "client"                 # this process's own namespace: the test client host
PREFIX = "rkn"                    # every namespace and root-namespace link this module makes starts with it
CUT_PRIORITY = 100                # below "lookup main" (32766): a matching rule wins over the routes
CLIENT_INDEX = 100                # the client's /24 (10.X.100.0/24); hosts use 10.X.1.0/24 upwards
# Second octets for 10.X.0.0/16, high in 10/8: docker, k8s and most VPNs live near 10.0-10.96.
SUBNET_OCTETS = range(160, 250)
_NAME = re.compile(rf"^{PREFIX}([0-9a-z]+)-(\d+)-")
_counter = itertools.count()


class NetworkError(RuntimeError):
    """An ``ip`` command failed; the message holds the command batch and ip's own error."""


def _ip_binary() -> str | None:
    return shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if os.access(p, os.X_OK)), None)


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _run(args: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    ip = _ip_binary()
    if ip is None:
        raise NetworkError("no `ip` (iproute2) on this machine")
    done = subprocess.run([ip, *args], input=stdin, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        shown = f"ip {' '.join(args)}" + (f" <<EOF\n{stdin}EOF" if stdin else "")
        raise NetworkError(f"{shown}\nfailed ({done.returncode}): {done.stderr.strip()}")
    return done


def _batch(lines: list[str], netns: str | None = None) -> None:
    """Many ip commands in one process (``ip -batch -``): a flapping nemesis cuts and heals every few 100 ms."""
    if lines:
        _run([*(["-n", netns] if netns else []), "-batch", "-"], "".join(line + "\n" for line in lines))


def namespaces() -> set[str]:
    """The names ``ip netns list`` shows."""
    return {line.split()[0] for line in _run(["netns", "list"]).stdout.splitlines() if line.strip()}


def unavailable_reason() -> str | None:
    """None when this machine can build a Network (root, ``ip``, a namespace can be made and removed);
    otherwise one line saying why not."""
    if os.geteuid() != 0:
        return f"network namespaces need root; this process runs as uid {os.geteuid()}"
    if _ip_binary() is None:
        return "network namespaces need `ip` (iproute2), which is not installed"
    probe = f"{PREFIX}{_base36(os.getpid())}-{next(_counter)}-probe"
    try:
        _run(["netns", "add", probe])
    except NetworkError as e:
        return f"cannot create a network namespace: {str(e).splitlines()[-1]}"
    try:
        _run(["netns", "del", probe])
    except NetworkError as e:
        return f"cannot remove the network namespace {probe}: {str(e).splitlines()[-1]}"
    return None


def sweep_stale() -> list[str]:
    """Remove the namespaces (and client links) of runs whose process is gone (a kill -9 skipped destroy)."""
    removed = []
    for ns in sorted(namespaces()):
        m = _NAME.match(ns)
        if m and not os.path.exists(f"/proc/{int(m.group(1), 36)}"):
            _run(["netns", "del", ns], check=False)
            removed.append(ns)
    for line in _run(["-o", "link", "show"]).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        m = _NAME.match(name + "-")
        if name.startswith(PREFIX) and m and not os.path.exists(f"/proc/{int(m.group(1), 36)}"):
            _run(["link", "del", name], check=False)
            removed.append(name)
    return removed


def _subnet_in_use(octet: int) -> bool:
    """Does 10.<octet>.0.0/16 overlap an address or a (non-default) route of this namespace?"""
    net = ipaddress.ip_network(f"10.{octet}.0.0/16")
    words = _run(["-4", "-o", "addr", "show"]).stdout.split() + [
        line.split()[0] for line in _run(["-4", "route", "show", "table", "all"]).stdout.splitlines()
        if line.strip()]
    for word in words:
        try:
            other = ipaddress.ip_network(word, strict=False)
        except ValueError:
            continue
        if other.prefixlen > 0 and net.overlaps(other):
            return True
    return False


@dataclass
class Network:
    """Hosts in their own network namespaces behind one router namespace, plus this process as "client".

    ``with Network(["b1", "b2", "b3"]) as net:`` creates it and destroys it whatever happens. Cuts are
    one-way and per pair of hosts (src's packets to dst are dropped); each is recorded so that heal()
    removes exactly them. Every change is one ``ip -batch`` process run in the router namespace.
    """
    hosts: list[str]
    kind: str = "blackhole"       # how a cut drops: "blackhole" silently, "prohibit" with an ICMP error
    tag: str = field(default="", init=False)    # <pid base 36>-<counter>: unique names per run
    octet: int = field(default=0, init=False)   # the X of 10.X.0.0/16; chosen by create()
    _cuts: set[tuple[str, str]] = field(default_factory=set, init=False)
    _created: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if len(set(self.hosts)) != len(self.hosts) or CLIENT in self.hosts:
            raise ValueError(f"host names must be unique and not {CLIENT!r}: {self.hosts}")
        if not 1 <= len(self.hosts) < CLIENT_INDEX:
            raise ValueError(f"a Network has 1 to {CLIENT_INDEX - 1} hosts, not {len(self.hosts)}")
        if self.kind not in ("blackhole", "prohibit", "unreachable"):
            raise ValueError(f"a cut is blackhole, prohibit or unreachable, not {self.kind!r}")
        self.tag = f"{_base36(os.getpid())}-{next(_counter)}"

    # ---- names and addresses ---------------------------------------------------------

    @property
    def all_hosts(self) -> list[str]:
        return [*self.hosts, CLIENT]

    @property
    def router(self) -> str:
        return f"{PREFIX}{self.tag}-r"

    @property
    def client_link(self) -> str:
        """The client's end of its veth to the router, in this process's namespace (≤ 15 characters)."""
        return f"{PREFIX}{self.tag}-c"

    def namespace(self, host: str) -> str | None:
        """The host's namespace name; None for the client (it is this process's own namespace)."""
        return None if host == CLIENT else f"{PREFIX}{self.tag}-h{self._index(host)}"

    def address(self, host: str) -> str:
        return f"10.{self.octet}.{self._index(host)}.2"

    def exec_prefix(self, host: str) -> list[str]:
        """Run a command on ``host``: ``[*exec_prefix(h), cmd...]``. ``ip netns exec`` execs the command,
        so the PID Popen returns is the command's own. Empty for the client (this namespace)."""
        ns = self.namespace(host)
        return [] if ns is None else [_ip_binary() or "ip", "netns", "exec", ns]

    def _index(self, host: str) -> int:
        if host == CLIENT:
            return CLIENT_INDEX
        try:
            return self.hosts.index(host) + 1
        except ValueError:
            raise ValueError(f"no host {host!r} in this network (hosts: {self.all_hosts})") from None

    def _namespaces(self) -> list[str]:
        return [self.router] + [f"{PREFIX}{self.tag}-h{i}" for i in range(1, len(self.hosts) + 1)]

    # ---- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> "Network":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.destroy()

    def create(self) -> "Network":
        """Build namespaces, links, addresses and routes; on any failure (KeyboardInterrupt too) remove
        whatever was made, then re-raise."""
        if self._created:
            return self
        sweep_stale()
        start = (os.getpid() + int(self.tag.split("-")[1])) % len(SUBNET_OCTETS)
        candidates = list(SUBNET_OCTETS)[start:] + list(SUBNET_OCTETS)[:start]
        atexit.register(self.destroy)   # a run that ends without __exit__ still cleans up
        self._created = True
        try:
            for octet in candidates:
                if _subnet_in_use(octet):
                    continue
                self.octet = octet
                try:
                    self._build()
                    return self
                except NetworkError as e:
                    if "File exists" not in str(e):
                        raise
                    self._teardown()        # another run took this subnet between the check and the route
            raise NetworkError(f"no free 10.X.0.0/16 for X in {SUBNET_OCTETS}")
        except BaseException:
            self.destroy()
            raise

    def _build(self) -> None:
        router, n = self.router, len(self.hosts)
        _batch([f"netns add {ns}" for ns in self._namespaces()]
               + [f"link add {self.client_link} type veth peer name hc netns {router}"])
        prefix = f"10.{self.octet}"
        lines = ["link set lo up", f"addr add {prefix}.{CLIENT_INDEX}.1/24 dev hc", "link set hc up"]
        for i in range(1, n + 1):
            lines += [f"link add h{i} type veth peer name eth0 netns {PREFIX}{self.tag}-h{i}",
                      f"addr add {prefix}.{i}.1/24 dev h{i}", f"link set h{i} up"]
        _batch(lines, router)
        _run(["netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        for i in range(1, n + 1):
            # lo up: a broker reaches its own address (its Raft node, its own gRPC port) through it.
            _batch(["link set lo up", f"addr add {prefix}.{i}.2/24 dev eth0", "link set eth0 up",
                    f"route add default via {prefix}.{i}.1"], f"{PREFIX}{self.tag}-h{i}")
        _batch([f"addr add {prefix}.{CLIENT_INDEX}.2/24 dev {self.client_link}", f"link set {self.client_link} up",
                f"route add {prefix}.0.0/16 via {prefix}.{CLIENT_INDEX}.1 dev {self.client_link}"])

    def destroy(self) -> list[int]:
        """Remove every namespace, link and route this network made (idempotent, also after a partial
        create). Returns the PIDs still running in its namespaces (the caller's leak: a namespace with a
        process in it lives on unnamed, links included, until that process ends)."""
        if not self._created:
            return []
        self._created = False
        atexit.unregister(self.destroy)
        return self._teardown()

    def _teardown(self) -> list[int]:
        ours = [ns for ns in self._namespaces() if ns in namespaces()]
        leftover = [int(p) for ns in ours for p in _run(["netns", "pids", ns], check=False).stdout.split()]
        # Deleting the router namespace deletes every veth (a veth dies with its peer), hence the client's
        # link and its route, and every cut rule (they live in the router).
        _batch([f"netns del {ns}" for ns in ours])
        if _run(["link", "show", self.client_link], check=False).returncode == 0:
            _run(["link", "del", self.client_link], check=False)
        self._cuts.clear()
        return leftover

    # ---- cuts ------------------------------------------------------------------------

    def cuts(self) -> set[tuple[str, str]]:
        """Every (src, dst) whose packets are dropped now."""
        return set(self._cuts)

    def cut(self, src: str, dst: str) -> None:
        """One-way: src's packets to dst are dropped, dst's to src still arrive (TCP needs both ways, so a
        connection either way stalls; UDP from dst to src still gets through)."""
        self._change(add={(src, dst)})

    def cut_both(self, a: str, b: str) -> None:
        self._change(add={(a, b), (b, a)})

    def isolate(self, host: str) -> None:
        """Cut ``host`` off from every other host, the client included, both ways."""
        self._change(add={p for other in self.all_hosts if other != host for p in ((host, other), (other, host))})

    def split(self, groups: list[list[str]]) -> None:
        """No packet crosses between groups (a host named in no group keeps all its links)."""
        named = [h for g in groups for h in g]
        if len(set(named)) != len(named):
            raise ValueError(f"a host is in two groups: {groups}")
        self._change(add={(a, b) for g in groups for h in groups if h is not g for a in g for b in h})

    def bridge(self, a: str, b: str, c: str) -> None:
        """Jepsen's bridge: a-b and b-c stay up, a-c is down (both ways); b sees everyone."""
        for host in (a, b, c):
            self._index(host)
        self._change(add={(a, c), (c, a)})

    def heal(self, pairs: Iterable[tuple[str, str]] | None = None) -> None:
        """Remove every cut (or just ``pairs``): each rule this network added, nothing else."""
        self._change(remove=set(self._cuts if pairs is None else pairs) & self._cuts)

    def _change(self, add: set[tuple[str, str]] = frozenset(), remove: set[tuple[str, str]] = frozenset()) -> None:
        for src, dst in add:
            if src == dst:
                raise ValueError(f"cannot cut {src!r} from itself")
            self._index(src), self._index(dst)
        if not self._created:
            raise NetworkError("the network is not created")
        add = set(add) - self._cuts
        lines = [f"rule add {self._selector(p)}" for p in sorted(add)]
        lines += [f"rule del {self._selector(p)}" for p in sorted(remove)]
        _batch(lines, self.router)
        self._cuts = (self._cuts | add) - set(remove)

    def _selector(self, pair: tuple[str, str]) -> str:
        src, dst = pair
        return f"from {self.address(src)} to {self.address(dst)} {self.kind} prio {CUT_PRIORITY}"
