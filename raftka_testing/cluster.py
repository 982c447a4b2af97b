"""Real broker processes on one machine: own ports, own data dirs, started and ended by PID.

The harness the integration tests, the chaos tests and the benchmarks (bench/) share: it is
part of the installed project so bench/ need not import a test file. Every broker is
`python -m broker` in its own session; callers kill only the PIDs they started. Readiness and
every other wait are conditions with deadlines. Test-only probes (raw produce / fetch, log
events, the inter-broker channel, the kclient subprocess) stay in tests/integration/cluster.py.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, TypeVar

import grpc

from client.admin import Admin
from client.consumer import Consumer
from client.protocol.v1 import kafka_pb2, kafka_pb2_grpc
from client.record_batch import iter_batches

if TYPE_CHECKING:
    from raftka_testing.netns import Network

# The checkout: brokers and kclient run with it as their working directory, as `make run` does.
REPO = Path(__file__).resolve().parents[1]

T = TypeVar("T")

# Ports for test brokers come from here: below the kernel's ephemeral range (32768-60999 by default), so no
# outgoing connection (a follower dialling a leader that is not up yet, a client) can take one as its source
# port between the pick and the broker's bind (that failed a start with "port in use"), and away from
# cluster.toml's 9092-9297 / 19092-19297 / 29092-29297 and the page's 8080, which `make run` may hold.
TEST_PORTS = range(10000, 19000)
_port_rng = random.Random()


def worker_ports(worker: str | None = None, count: int | None = None) -> range:
    """This pytest-xdist worker's share of TEST_PORTS. A probe only shows a port free; another worker could
    pick it in the second between the probe and the broker's bind (that failed a start with "port in use"),
    so the workers of one run never pick from the same ports."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "") if worker is None else worker
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) if count is None else count
    if count <= 1 or not worker.startswith("gw") or not worker[2:].isdigit():
        return TEST_PORTS
    share = len(TEST_PORTS) // count
    start = TEST_PORTS.start + int(worker[2:]) % count * share
    return range(start, start + share)


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports from this worker's share of TEST_PORTS: every probe socket stays
    open until all are chosen, so no two of them are the same."""
    sockets: list[socket.socket] = []
    ports = worker_ports()
    try:
        for _ in range(200 * n):
            if len(sockets) == n:
                break
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", _port_rng.choice(ports)))
            except OSError:   # in use (or in TIME_WAIT): another pick
                s.close()
                continue
            sockets.append(s)
        if len(sockets) < n:
            raise RuntimeError(f"could not find {n} free ports in {ports.start}-{ports.stop - 1}")
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05,
             backoff: float = 0.0) -> T:
    """Poll ``condition`` until it returns a truthy value; AssertionError naming ``what`` after ``timeout``.
    ``backoff``: wait at least that many times a poll's own duration before the next (a costly poll)."""
    deadline = time.monotonic() + timeout
    while True:
        began = time.monotonic()
        value = condition()
        if value:
            return value
        now = time.monotonic()
        if now >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(max(interval, backoff * (now - began)))


@dataclass
class BrokerProcess:
    broker_id: int
    port: int
    raft_port: int
    inter_broker_port: int   # Replication and Controller: brokers only (broker_channel)
    data_dir: Path
    config_path: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    extra_env: dict[str, str] = field(default_factory=dict)   # e.g. a test-only fault hook
    # Runs first and execs the broker command given as its arguments: e.g. a process limit
    # (storage-fault tests; see tests/integration/test_storage_faults.py).
    command_prefix: list[str] = field(default_factory=list)
    # The broker writes its log to a pipe that a thread here copies into log_path, instead of
    # to the file itself: a file-size limit (RLIMIT_FSIZE) then applies to its data files only.
    log_via_pipe: bool = False
    kafka_port: int = 0      # the Kafka-protocol listener (real Kafka clients)
    replication_port: int = 0   # followers' fetch streams over plain TCP; 0: over gRPC (inter_broker_port)
    metrics_port: int = 0    # Prometheus metrics over HTTP; 0: none (write_cluster(metrics=True) gives one)
    host: str = "127.0.0.1"  # the address it binds and advertises (its own namespace's, on a Network)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, wait: bool = True) -> "BrokerProcess":
        log = open(self.log_path, "ab")
        env = {**os.environ, "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", **self.extra_env}   # extra_env wins
        self.proc = subprocess.Popen([*self.command_prefix, sys.executable, "-m", "broker",
                                      "--config", str(self.config_path), "--id", str(self.broker_id)],
                                     stdout=subprocess.PIPE if self.log_via_pipe else log, stderr=subprocess.STDOUT,
                                     cwd=REPO, env=env, start_new_session=True)
        if self.log_via_pipe:
            threading.Thread(target=_copy_until_eof, args=(self.proc.stdout, log), daemon=True,
                             name=f"broker-{self.broker_id}-log").start()
        else:
            log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Ready = it answers, a controller is known, and the broker is registered and unfenced."""
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"broker {self.broker_id} exited with {self.proc.returncode}:\n{self.log()}")
            with grpc.insecure_channel(self.bootstrap) as ch:
                try:
                    r = kafka_pb2_grpc.KafkaStub(ch).Metadata(kafka_pb2.MetadataRequest(), timeout=1)
                except grpc.RpcError:
                    return False
            return r.controller_id >= 0 and any(b.broker_id == self.broker_id and b.alive for b in r.brokers)
        wait_for(ready, timeout, f"broker {self.broker_id} to answer on {self.bootstrap}, registered and unfenced",
                 0.1)

    def format(self, initial_voter: bool) -> Path:
        """`kbroker format` of this broker's data dir (the function the CLI calls): ``initial_voter`` for a
        brand-new cluster, else rejoining (no vote until caught up). A broker refuses an unformatted dir."""
        from broker.config import load_cluster_config
        from broker.storage_format import format_data_dir

        return format_data_dir(load_cluster_config(self.config_path), self.broker_id, initial_voter)

    def lose_disk(self) -> None:
        """A lost disk and its replacement: the (stopped) broker's data dir is deleted, then formatted as
        rejoining, as its operator would (`kbroker format --config C --id N`). start() brings it back."""
        if self.alive():
            raise RuntimeError(f"broker {self.broker_id} (pid {self.pid}) is running: kill it before its disk goes")
        shutil.rmtree(self.data_dir)
        self.format(initial_voter=False)

    def signal(self, sig: int) -> None:
        """Send ``sig``; a SIGSTOP returns once every thread of the broker has stopped."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                return  # it died, and another thread's poll() reaped it, between the check and the kill
            if sig == signal.SIGSTOP:
                self._wait_stopped()

    def _wait_stopped(self, timeout: float = 5.0) -> None:
        """kill() returns before the stop: the kernel stops the threads one by one, after the one chosen to
        take the signal runs. Until then the others go on serving; a follower resumed right after its leader's
        SIGSTOP once fetched four more records from that "paused" leader (over the replication socket)."""
        deadline = time.monotonic() + timeout
        task_dir = f"/proc/{self.proc.pid}/task"
        while time.monotonic() < deadline:
            try:
                states = [_task_state(f"{task_dir}/{tid}/stat") for tid in os.listdir(task_dir)]
            except FileNotFoundError:
                return   # gone
            if all(state in ("T", "t", "Z", "X", None) for state in states):
                return
            time.sleep(0.001)
        raise AssertionError(f"broker {self.broker_id} (pid {self.proc.pid}) not stopped {timeout} s after SIGSTOP")

    def kill(self) -> None:
        """kill -9 and reap."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> int:
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _copy_until_eof(source: IO[bytes], target: IO[bytes]) -> None:
    with source, target:
        for line in source:
            target.write(line)
            target.flush()


@dataclass
class Cluster:
    root: Path
    brokers: dict[int, BrokerProcess] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values())

    def stop_all(self) -> None:
        for b in self.brokers.values():
            if b.alive():
                b.signal(signal.SIGKILL)
                b.proc.wait(timeout=10)

    def start_all(self, wait: bool = True, timeout: float = 20.0) -> "Cluster":
        """Start every broker at once (a quorum needs a majority up), then wait for each to be ready."""
        for b in self.brokers.values():
            b.start(wait=False)
        if wait:
            deadline = time.monotonic() + timeout
            for b in self.brokers.values():
                b.wait_ready(max(deadline - time.monotonic(), 0.1))
        return self

    def running(self) -> list[BrokerProcess]:
        """The brokers whose process is running (a SIGSTOPped one counts: it has not exited)."""
        return [b for b in self.brokers.values() if b.alive()]

    def views(self, brokers: list[BrokerProcess] | None = None) -> dict[int, "ClusterView"]:
        """Each given broker's own view of the cluster (default: all running); a silent broker is left out."""
        out = {}
        for b in (brokers if brokers is not None else self.running()):
            view = cluster_view(b)
            if view is not None:
                out[b.broker_id] = view
        return out

    def wait_controller(self, brokers: list[BrokerProcess] | None = None, timeout: float = 15.0,
                        exclude: tuple[int, ...] = (), alive: set[int] | None = None) -> int:
        """The controller id every given broker (default: all running) reports, once they all agree.

        ``exclude``: ids that do not count as an answer (a killed controller still
        named by a survivor's stale view). ``alive``: also wait until every given
        broker sees exactly this set of unfenced brokers.
        """
        brokers = brokers if brokers is not None else self.running()

        def agreed() -> int | None:
            views = self.views(brokers)
            if len(views) != len(brokers):
                return None
            ids = {v.controller_id for v in views.values()}
            if len(ids) != 1:
                return None
            (cid,) = ids
            if cid < 0 or cid in exclude:
                return None
            if alive is not None and any(v.alive != alive for v in views.values()):
                return None
            return cid
        return wait_for(agreed, timeout, f"brokers {[b.broker_id for b in brokers]} to agree on one controller"
                        + (f" not in {list(exclude)}" if exclude else "")
                        + (f" with alive brokers {sorted(alive)}" if alive is not None else ""), 0.02)


@dataclass(frozen=True)
class ClusterView:
    """What one broker's Metadata answer says about the cluster."""
    answered_by: int
    controller_id: int
    alive: frozenset[int]
    fenced: frozenset[int]


def metadata(broker: BrokerProcess, topics: list[str] | None = None,
             timeout: float = 2.0) -> kafka_pb2.MetadataResponse | None:
    """The raw MetadataResponse of ``broker`` itself (no client failover), or None if it does not answer."""
    with grpc.insecure_channel(broker.bootstrap) as ch:
        try:
            return kafka_pb2_grpc.KafkaStub(ch).Metadata(kafka_pb2.MetadataRequest(topics=topics or []),
                                                         timeout=timeout)
        except grpc.RpcError:
            return None

def describe_replicas_of(broker: BrokerProcess, topic: str,
                         timeout: float = 1.0) -> kafka_pb2.DescribeReplicasResponse | None:
    """``broker``'s own DescribeReplicas answer for ``topic`` (its metadata offset, its replicas), or None."""
    with grpc.insecure_channel(broker.bootstrap) as ch:
        try:
            return kafka_pb2_grpc.KafkaStub(ch).DescribeReplicas(kafka_pb2.DescribeReplicasRequest(topics=[topic]),
                                                                 timeout=timeout)
        except grpc.RpcError:
            return None


def cluster_view(broker: BrokerProcess) -> ClusterView | None:
    """Controller id and alive / fenced sets as ``broker`` sees them, or None if it does not answer."""
    r = metadata(broker)
    if r is None:
        return None
    return ClusterView(r.answered_by, r.controller_id, frozenset(b.broker_id for b in r.brokers if b.alive),
                       frozenset(b.broker_id for b in r.brokers if not b.alive))


def wait_metadata(broker: BrokerProcess, predicate: Callable[[kafka_pb2.MetadataResponse], object], timeout: float,
                  what: str, topics: list[str] | None = None, interval: float = 0.02) -> kafka_pb2.MetadataResponse:
    """The first MetadataResponse from ``broker`` for which ``predicate(response)`` is truthy."""
    def check() -> kafka_pb2.MetadataResponse | None:
        r = metadata(broker, topics)
        return r if r is not None and predicate(r) else None
    return wait_for(check, timeout, f"broker {broker.broker_id}'s metadata to show {what}", interval)


# write_cluster's cluster.toml names these; a test calling as a broker (its token) needs them too.
CLUSTER_ID, CLUSTER_SECRET = "raftka-test", "raftka-test-secret"


def write_cluster(root: Path, n: int = 1, config: dict[str, int] | None = None, format_dirs: bool = True,
                  metrics: bool = False, network: Network | None = None, voters: list[int] | None = None,
                  replication_socket: bool = True) -> Cluster:
    """A cluster.toml with ``n`` brokers on free loopback ports, data under ``root``, every data dir
    formatted for a brand-new cluster (each broker an initial voter) unless ``format_dirs`` is False;
    with ``metrics``, each broker also serves Prometheus metrics on a free ``metrics_port``; with
    ``voters``, only those brokers vote in the metadata quorum (controller_quorum_voters), the others observe.
    Followers fetch over each leader's ``replication_port`` (plain TCP), or with ``replication_socket``
    False over gRPC on its inter_broker_port, as a cluster file without replication_port has them do.

    With a ``network`` (raftka_testing.netns), broker i runs on its host "b{i}": it binds and advertises
    that host's address and starts inside its namespace (``ip netns exec``, which execs: the PID is the
    broker's own). Ports free on this loopback are as good as any there: each host has its own address.

    ``root`` is made absolute: the cluster file's paths are relative to the file itself, so a relative
    data dir written there (`make chaos` passes `--out chaos-report`) would put the brokers' data
    somewhere else than where this harness reads, wipes and dumps it."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(root)
    lines = [f'cluster_id = "{CLUSTER_ID}"', f'cluster_secret = "{CLUSTER_SECRET}"']
    if voters is not None:
        lines.append(f"controller_quorum_voters = [{', '.join(map(str, voters))}]")
    config_path = root / "cluster.toml"
    per_broker = 6 if metrics else 5
    ports = free_ports(per_broker * n)
    for i in range(1, n + 1):
        port, raft_port, inter_broker_port, kafka_port, replication_port, *metrics_port = \
            ports[per_broker * (i - 1):per_broker * i]
        b = BrokerProcess(i, port, raft_port, inter_broker_port, root / f"broker-{i}", config_path,
                          root / f"broker-{i}.log", kafka_port=kafka_port,
                          replication_port=replication_port if replication_socket else 0,
                          metrics_port=metrics_port[0] if metrics else 0,
                          host=network.address(f"b{i}") if network else "127.0.0.1",
                          command_prefix=network.exec_prefix(f"b{i}") if network else [])
        cluster.brokers[i] = b
        lines += ["[[broker]]", f"id = {i}", f'host = "{b.host}"', f"port = {b.port}",
                  f"raft_port = {b.raft_port}", f"inter_broker_port = {b.inter_broker_port}",
                  f"kafka_port = {b.kafka_port}", f'rack = "rack-{i}"',
                  f'data_dir = "{b.data_dir}"'] + ([f"metrics_port = {b.metrics_port}"] if metrics else []) + (
                  [f"replication_port = {b.replication_port}"] if b.replication_port else [])
    if config:
        lines.append("[config]")
        lines += [f'"{k}" = {v}' for k, v in config.items()]
    config_path.write_text("\n".join(lines) + "\n")
    for b in cluster.brokers.values() if format_dirs else ():
        b.format(initial_voter=True)   # a brand-new cluster: `kbroker format --initial-voter` on every broker
    return cluster


def _task_state(stat_path: str) -> str | None:
    """A thread's state letter from /proc/PID/task/TID/stat (None: the thread has gone)."""
    try:
        with open(stat_path) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


# ---- replicas: a broker's own copy of a partition (replication, chaos) -----------------------------


@dataclass(frozen=True)
class ReplicaOffsets:
    """What one broker says about its own copy of a partition (a read-from-replica Fetch at offset 0)."""
    broker_id: int
    high_watermark: int
    log_end_offset: int
    log_start_offset: int


def replica_offsets(broker: BrokerProcess, topic: str, partition: int = 0,
                    timeout: float = 2.0) -> ReplicaOffsets | None:
    """HW, LEO and log start of ``broker``'s local replica, or None if it does not answer or has no copy.

    A consumer Fetch with read_from_replica (KIP-392): any replica answers from its own log, the
    follower with its own HW; max_bytes 1 and no wait so nothing much is read.
    """
    request = kafka_pb2.FetchRequest(replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=1,
                                     read_from_replica=True, partitions=[kafka_pb2.FetchPartition(
                                         topic=topic, partition=partition, fetch_offset=0,
                                         current_leader_epoch=-1, partition_max_bytes=1)])
    with grpc.insecure_channel(broker.bootstrap) as ch:
        try:
            r = kafka_pb2_grpc.KafkaStub(ch).Fetch(request, timeout=timeout).partitions[0]
        except grpc.RpcError:
            return None
    if r.error_code not in (0, 1):  # 1: OFFSET_OUT_OF_RANGE (a log starting above 0) still carries offsets
        return None
    return ReplicaOffsets(broker.broker_id, r.high_watermark, r.log_end_offset, r.log_start_offset)


def partition_dir(broker: BrokerProcess, topic: str, partition: int = 0) -> Path:
    """The broker's log folder for a partition: data_dir/<topic>-<partition>."""
    return broker.data_dir / f"{topic}-{partition}"


def segment_files(broker: BrokerProcess, topic: str, partition: int = 0) -> list[Path]:
    """The partition's segment files (<20-digit base offset>.log), oldest first."""
    return sorted(partition_dir(broker, topic, partition).glob("[0-9]" * 20 + ".log"))


def log_bytes(broker: BrokerProcess, topic: str, partition: int = 0, upto_offset: int | None = None) -> bytes:
    """The concatenated bytes of every segment of the broker's copy, cut before the first batch at or
    above ``upto_offset`` (e.g. the HW; None: everything). AssertionError if the cut falls inside a batch."""
    data = b"".join(p.read_bytes() for p in segment_files(broker, topic, partition))
    if upto_offset is None:
        return data
    end = 0
    for pos, h in iter_batches(data):
        if h.base_offset >= upto_offset:
            break
        assert h.next_offset <= upto_offset, (
            f"broker {broker.broker_id}: offset {upto_offset} falls inside the batch "
            f"{h.base_offset}..{h.last_offset}")
        end = pos + h.size
    return data[:end]


def read_replica(broker: BrokerProcess, topic: str, partition: int = 0, upto_offset: int | None = None,
                 timeout: float = 20.0) -> list[tuple[int, bytes | None]]:
    """(offset, value) of every record ``broker``'s own copy serves below its HW (or below ``upto_offset``,
    which must not exceed that HW), read with Consumer(replica=broker_id) from the beginning."""
    if upto_offset is None:
        offsets = wait_for(lambda: replica_offsets(broker, topic, partition), timeout,
                           f"broker {broker.broker_id} to answer for {topic}-{partition}")
        upto_offset = offsets.high_watermark
    out: list[tuple[int, bytes | None]] = []
    with Consumer(broker.bootstrap, topic, partition=partition, replica=broker.broker_id,
                  auto_offset_reset="earliest", fetch_max_wait_ms=100) as consumer:
        deadline = time.monotonic() + timeout
        while consumer.positions.get((topic, partition), -1) < upto_offset:
            if time.monotonic() >= deadline:
                raise AssertionError(f"broker {broker.broker_id}: read only up to offset "
                                     f"{consumer.positions.get((topic, partition))} of {upto_offset} in {timeout} s")
            out += [(r.offset, r.value) for r in consumer.poll(0.5) if r.offset < upto_offset]
    return out


# ---- topics: created ready, read back (failover tests and bench/run.py) ----------------------------


def partitions(broker: BrokerProcess, topic: str) -> dict[int, kafka_pb2.PartitionMetadata] | None:
    """{partition: PartitionMetadata} as ``broker`` itself sees ``topic``, or None."""
    r = metadata(broker, [topic])
    if r is None:
        return None
    for t in r.topics:
        if t.name == topic and t.error_code == 0:
            return {p.partition: p for p in t.partitions}
    return None


def create_ready(cluster: Cluster, topic: str, count: int, timeout: float = 20.0) -> None:
    """Create ``topic`` (RF 3) and wait until every broker shows each partition led with a full ISR
    and hosts its replica."""
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(topic, count, 3)
    wait_for(lambda: served_everywhere(cluster, topic, count), timeout,
             f"{topic}: {count} partition(s) led, full ISR, hosted by every broker", 0.05)


def served_everywhere(cluster: Cluster, topic: str, count: int) -> bool:
    """Every running broker's own metadata shows ``count`` partitions of ``topic``, each led with a full
    ISR (RF 3), and it hosts each one."""
    for b in cluster.running():
        parts = partitions(b, topic)
        if parts is None or len(parts) != count:
            return False
        if any(p.leader_id < 0 or len(p.isr) != 3 for p in parts.values()):
            return False
        if any(replica_offsets(b, topic, n) is None for n in range(count)):
            return False
    return True


def read_all(bootstrap: str, topic: str, ends: dict[int, int], timeout: float = 30.0) -> dict[int, list]:
    """{partition: [(offset, value)]} from the beginning until each partition's position reaches
    ``ends[partition]``; then one more short poll, so a record beyond it (a duplicate) shows up too."""
    got: dict[int, list] = {p: [] for p in ends}
    with Consumer(bootstrap, topic, auto_offset_reset="earliest", fetch_max_wait_ms=100,
                  request_timeout_ms=5000) as c:
        deadline = time.monotonic() + timeout
        for _ in range(100_000):
            if all(c.positions.get((topic, p), -1) >= end for p, end in ends.items()):
                break
            assert time.monotonic() < deadline, (f"read only up to {c.positions} of {ends} in {timeout} s")
            for r in c.poll(0.5):
                got[r.partition].append((r.offset, r.value))
        for r in c.poll(0.3):
            got[r.partition].append((r.offset, r.value))
    return got
