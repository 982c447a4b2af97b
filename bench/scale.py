"""`make bench-scale` (issue 20 item 1): how raftka behaves as the partition count grows. Each size runs on a
fresh 3-broker cluster (RF 3, min.insync.replicas 2, as `make bench`), data under a temp dir removed after.

    .venv/bin/python -m bench.scale [--sizes 100,1000,3000,10000] [--topics-per-size N] [--kills 3]
                                    [--out bench/scale_results.json] [--timeout-per-step S]     (from the repo root)

Layout: 100 partitions per topic by default (100 -> 1 topic, 10,000 -> 100 topics): realistic, far below
MAX_PARTITIONS_PER_TOPIC, and each topic is its own CreateTopics request (one topic per request), so no request
comes near MAX_PARTITIONS_PER_REQUEST. The controller commits each topic of a request on its own anyway, so
putting several topics into one request would not save a commit; one record per topic carries all its
partitions, so fewer, bigger topics mean fewer commits. --topics-per-size N splits each size over N topics
instead (at most MAX_PARTITIONS_PER_TOPIC each; --topics-per-size 1 is one topic per size).

Per size, in this order:
- create: the create calls themselves (create_call_s); from the first call until the controller's own
  Metadata shows every partition led with a full ISR (all_led_full_isr_s: a new partition's ISR is all its
  replicas, so this is the metadata commit); and until the data path is up (all_serving_s, the figure judged
  against the target): every broker's DescribeReplicas holds each of its replicas, and each partition's
  leader leads it by its own account with both followers fetching and in its ISR;
- idle: 5 s after that, each broker's utime+stime (/proc/<pid>/stat) over a 10 s window as percent of one
  core, and its VmRSS, with no traffic;
- metadata: p50 / p99 of full Metadata requests (every topic) to the controller over one gRPC channel;
- W2: a pipelined acks=all producer, records round-robin over every partition (records/s, first send to
  last ack);
- kill -9 (--kills rounds): a broker leading about a third of the partitions (among those within 10 % of the
  most, the one killed least often so far: the rounds rotate over controller and non-controller) is killed
  under a producer that keeps at most one record in flight per partition, round-robin, stamping each ack per
  partition (so every partition behaves as its own synchronous producer and a partition without a leader
  stalls alone). Measured: kill until the controller's Metadata shows every partition led by a live broker
  (led_again_s); the producer's window, the longest gap around the kill among the victim's partitions
  (bench.stats.failover_window per partition, the max over them); then, the producer stopped, from
  restarting the victim until it is back in every ISR (isr_back_s). A preferred leader election heals the
  leadership before the next round;
- clean restart: SIGTERM (controlled shutdown) of a broker that is not the controller, then from its start
  until it is registered, unfenced and back in every ISR (restart_serving_s).

Kill figures are the median over the rounds in the table, every value in the JSON. The producer's window
includes its own round period (how long one pass over every partition takes: baseline_gap_s in the JSON).
Targets (issue 20, meant for 10,000 partitions) are printed next to the figures, not asserted; "!" marks a
figure past its target. Each step has a deadline (--timeout-per-step, default scaled with the size): a step past
it reports "timeout", one that fails "error", and the size ends there (its cluster's state is unknown); a
cluster that cannot start is reported with why. Only the brokers started here are killed, by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import grpc

from bench.run import CLUSTER_CONFIG, VALUE, git_commit, machine, proc_memory_mb
from bench.stats import failover_window
from broker.kafka_apis import MAX_PARTITIONS_PER_REQUEST
from broker.logging_setup import parse_partition_ranges
from broker.metadata.topic_rules import MAX_PARTITIONS_PER_TOPIC
from client import Admin, Producer
from client.errors import KafkaError
from client.protocol.v1 import kafka_pb2, kafka_pb2_grpc
from raftka_testing.cluster import BrokerProcess, Cluster, metadata, wait_for, write_cluster

BROKERS = 3
RF = 3
PARTITIONS_PER_TOPIC = 100
TOPIC_PREFIX = "scale"
IDLE_SETTLE_S = 5.0
IDLE_WINDOW_S = 10.0
ACKS_AFTER_KILL = 3     # bench.stats.failover_window's look-ahead: the stall can come one ack after the kill
STEP_GRACE_S = 10.0     # a step's own waits end at its deadline; the thread gets this much more to return

TopicPartition = tuple[str, int]
Layout = list[tuple[str, int]]   # (topic, partition count), in creation order


@dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...] = (100, 1_000, 3_000, 10_000)
    topics_per_size: int | None = None    # None: PARTITIONS_PER_TOPIC partitions per topic
    kills: int = 3
    timeout_per_step: float | None = None  # None: step_timeout(size)
    metadata_requests: int = 100
    w2_records: int = 50_000


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    decimals: int
    target: float | None = None
    higher_is_better: bool = False

    def misses(self, value: float) -> bool:
        if self.target is None:
            return False
        return value < self.target if self.higher_is_better else value > self.target


# The table, in order; every key is also a figure in the JSON (kill figures as lists there).
COLUMNS: tuple[Column, ...] = (
    Column("create_call_s", "create call s", 2),
    Column("all_led_full_isr_s", "led+ISR s", 2),
    Column("all_serving_s", "serving s", 2, 30.0),
    Column("idle_cpu_pct_max", "idle CPU % max", 1, 5.0),
    Column("rss_mb_max", "RSS MB max", 0, 300.0),
    Column("metadata_p50_ms", "Metadata p50 ms", 1),
    Column("metadata_p99_ms", "Metadata p99 ms", 1),
    Column("w2_records_per_s", "W2 rec/s", 0),
    Column("led_again_s", "kill: led again s", 2, 2.0),
    Column("producer_window_s", "kill: producer window s", 2),
    Column("isr_back_s", "kill: back in ISR s", 2, 30.0),
    Column("restart_serving_s", "restart: serving s", 2, 10.0),
)
KILL_FIGURES = ("led_again_s", "producer_window_s", "isr_back_s")


@dataclass
class SizeResult:
    size: int
    layout: Layout
    status: str = "ok"                      # ok | timeout | error | no cluster
    reason: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def cell(self, column: Column) -> str:
        value = self.figures.get(column.key)
        if isinstance(value, list):   # the kill rounds: their median (a round without a window left out)
            numbers = [v for v in value if isinstance(v, (int, float))]
            statuses = [v for v in value if isinstance(v, str)]
            value = statistics.median(numbers) if numbers else (statuses[0] if statuses else None)
        if isinstance(value, str):
            return value
        if value is None:
            return "-"
        return f"{value:,.{column.decimals}f}" + ("!" if column.misses(value) else "")


class StepFailed(Exception):
    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


# ---- pure parts (tests/unit/test_bench_scale.py) ---------------------------------------------------


def topic_layout(size: int, topics: int | None = None) -> Layout:
    """``size`` partitions over ``topics`` topics (default: PARTITIONS_PER_TOPIC each), the remainder spread
    one each over the first topics; ValueError if a topic would exceed a per-topic or per-request limit."""
    count = topics if topics is not None else max(1, -(-size // PARTITIONS_PER_TOPIC))
    if not 1 <= count <= size:
        raise ValueError(f"{count} topics for {size} partitions: need 1..{size}")
    base, extra = divmod(size, count)
    width = len(str(count - 1))
    layout = [(f"{TOPIC_PREFIX}-{size}-{i:0{width}d}", base + (i < extra)) for i in range(count)]
    biggest = max(n for _, n in layout)
    if biggest > min(MAX_PARTITIONS_PER_TOPIC, MAX_PARTITIONS_PER_REQUEST):
        raise ValueError(f"{biggest} partitions in one topic: the limit is {MAX_PARTITIONS_PER_TOPIC} per topic "
                         f"and {MAX_PARTITIONS_PER_REQUEST} per request; use more topics")
    return layout


def all_partitions(layout: Layout) -> list[TopicPartition]:
    return [(t, p) for t, n in layout for p in range(n)]


def step_timeout(size: int) -> float:
    """The default deadline of one step: two minutes, plus 100 ms a partition (10,000 partitions: 19 minutes).
    The slowest step, a kill round, took 50-110 s at 1,000 partitions on a shared 2-core machine: the restarted
    broker rejoins the ISR of one partition per AlterPartition commit, about 10-20 a second."""
    return 120.0 + 0.1 * size


def stat_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from a /proc/<pid>/stat line. The command name (field 2) may hold spaces
    and parentheses, so fields are counted after its closing parenthesis: state is field 3, utime 14, stime 15."""
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def cpu_percent(ticks_before: int, ticks_after: int, clock_ticks_per_s: int, wall_s: float) -> float:
    """CPU time used over a wall-clock window, as percent of one core (200 = two cores busy)."""
    return (ticks_after - ticks_before) / clock_ticks_per_s / wall_s * 100


def pick_victim(leader_counts: Counter[int], killed: Sequence[int]) -> int:
    """Among the brokers leading within 10 % of the most partitions (after a preferred election each leads
    about a third), the one killed least often so far; then the one leading most, then the lowest id."""
    most = max(leader_counts.values())
    candidates = [b for b, n in leader_counts.items() if n >= 0.9 * most]
    return min(candidates, key=lambda b: (killed.count(b), -leader_counts[b], b))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, -(-round(q * len(ordered) * 1e9) // 10**9))   # ceil(q * n), robust to 0.99 * 100 = 98.99...
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class ProducerWindow:
    """What the spread producer saw of one kill, over the partitions the victim led."""
    window_s: float | None          # the longest of the per-partition windows (None: no partition had one)
    median_window_s: float | None
    partitions_without_window: int  # no ack before or none after the kill
    baseline_gap_s: float | None    # median gap between a partition's acks before the kill: the round period


def producer_window(acks: dict[TopicPartition, list[float]], victim_led: Iterable[TopicPartition],
                    killed_at: float) -> ProducerWindow:
    windows, missing = [], 0
    for tp in victim_led:
        w = failover_window(acks.get(tp, ()), killed_at, look_ahead=ACKS_AFTER_KILL)
        if w is None:
            missing += 1
        else:
            windows.append(w)
    gaps = [b - a for times in acks.values() for a, b in zip(times, times[1:]) if b <= killed_at]
    return ProducerWindow(max(windows) if windows else None, statistics.median(windows) if windows else None,
                          missing, statistics.median(gaps) if gaps else None)


def format_table(results: Iterable[SizeResult]) -> str:
    """One row per size, one column per figure (kill figures: median), then the targets row."""
    results = list(results)
    rows = [["partitions", *(c.header for c in COLUMNS)]]
    rows += [[f"{r.size:,}", *(r.cell(c) for c in COLUMNS)] for r in results]
    rows.append(["target (10,000)", *("-" if c.target is None else f"{'>=' if c.higher_is_better else '<='} "
                                      f"{c.target:g}" for c in COLUMNS)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    notes = [f"{r.size:,} partitions: {r.status}: {r.reason}" for r in results if r.status != "ok"]
    return "\n".join(lines + ([""] + notes if notes else []))


# ---- probes ------------------------------------------------------------------------------------------


def proc_ticks(pid: int) -> int:
    return stat_ticks(Path(f"/proc/{pid}/stat").read_text())


# A poll of the cluster (a full Metadata: about 80 ms at 10,000 partitions) waits at least this many times
# its own duration before the next, so that the bench's asking costs the brokers at most a third of a core.
POLL_BACKOFF = 2.0


poll = partial(wait_for, backoff=POLL_BACKOFF)


def left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.1)


# A topic no run creates: a Metadata for it alone names the brokers and the controller at almost no cost.
PROBE_TOPIC = "bench-scale-probe"


def controller_view(cluster: Cluster, exclude: int | None = None,
                    topics: list[str] | None = None) -> kafka_pb2.MetadataResponse | None:
    """Metadata (every topic, or ``topics``) from the broker that says it is the controller (None until one
    does): its view is the committed one the others follow. The others are only probed, so that a poll costs
    one broker one full answer."""
    # The last controller first: a broker still starting holds client calls until it has caught up, and a
    # probe of it first would stall the poll (a restart's registration looked 6 s later than it was).
    last = _last_controller.get(id(cluster))
    for b in sorted(cluster.running(), key=lambda b: b.broker_id != last):
        if b.broker_id == exclude:
            continue
        probe = metadata(b, [PROBE_TOPIC], timeout=10)
        if probe is None or not probe.controller_id == probe.answered_by == b.broker_id:
            continue
        r = metadata(b, topics, timeout=10)
        if r is not None and r.controller_id == r.answered_by == b.broker_id:
            _last_controller[id(cluster)] = b.broker_id
            return r
    return None


_last_controller: dict[int, int] = {}   # id(cluster) -> the broker that last answered as its controller


def partition_view(response: kafka_pb2.MetadataResponse, layout: Layout
                   ) -> dict[TopicPartition, kafka_pb2.PartitionMetadata] | None:
    """Every partition of ``layout`` in ``response``, or None if a topic or partition is missing."""
    wanted = dict(layout)
    out = {(t.name, p.partition): p for t in response.topics if t.name in wanted and t.error_code == 0
           for p in t.partitions}
    return out if len(out) == sum(wanted.values()) else None


def cluster_satisfies(cluster: Cluster, layout: Layout,
                      predicate: Callable[[kafka_pb2.PartitionMetadata], bool], exclude: int | None = None) -> bool:
    """The controller's view has every partition of ``layout``, each meeting ``predicate``."""
    r = controller_view(cluster, exclude)
    parts = partition_view(r, layout) if r is not None else None
    return parts is not None and all(predicate(p) for p in parts.values())


def local_replicas(broker: BrokerProcess, timeout: float) -> dict[TopicPartition, kafka_pb2.LocalReplicaState] | None:
    """``broker``'s own DescribeReplicas answer (every topic it holds), or None if it does not answer."""
    with grpc.insecure_channel(broker.bootstrap, options=[("grpc.max_receive_message_length", 256 << 20)]) as ch:
        try:
            r = kafka_pb2_grpc.KafkaStub(ch).DescribeReplicas(kafka_pb2.DescribeReplicasRequest(), timeout=timeout)
        except grpc.RpcError:
            return None
    return {(x.topic, x.partition): x for x in r.replicas}


def serving_everywhere(cluster: Cluster, layout: Layout) -> bool:
    """Every broker holds its replica of every partition, and every partition has a leader that, by its own
    account, leads it with every follower fetching and in its ISR: the data path is up, not just the metadata."""
    wanted = all_partitions(layout)
    led: set[TopicPartition] = set()
    for b in cluster.running():
        local = local_replicas(b, 10)
        if local is None or any(tp not in local for tp in wanted):
            return False
        for tp in wanted:
            r = local[tp]
            if not r.is_leader:
                continue
            if len(r.followers) != RF - 1 or any(f.log_end_offset < 0 or not f.in_isr for f in r.followers):
                return False
            led.add(tp)
    return len(led) == len(wanted)


def full_isr(p: kafka_pb2.PartitionMetadata) -> bool:
    return p.leader_id >= 0 and len(p.isr) == RF


def heal(cluster: Cluster, layout: Layout, deadline: float) -> None:
    """Every ISR full, then a preferred leader election, so every broker leads its third again."""
    poll(lambda: cluster_satisfies(cluster, layout, full_isr), left(deadline), "every ISR full", 0.2)
    with Admin(cluster.bootstrap, request_timeout_ms=int(left(deadline) * 1000)) as admin:
        admin.elect_leaders("preferred", timeout_ms=int(left(deadline) * 1000))
    poll(lambda: cluster_satisfies(cluster, layout, lambda p: p.leader_id == p.replicas[0]), left(deadline),
         "every partition led by its preferred replica", 0.2)


# ---- steps: each takes its deadline, returns its figures ---------------------------------------------


def step_create(cluster: Cluster, layout: Layout, deadline: float, out: dict[str, Any]) -> None:
    """One CreateTopics per topic (RF 3), then until the controller shows every partition led, full ISR, then
    until the data path is up. Figures go into ``out`` as they come: a later timeout keeps the earlier ones."""
    started = time.monotonic()
    with Admin(cluster.bootstrap, request_timeout_ms=int(left(deadline) * 1000)) as admin:
        for topic, count in layout:
            admin.create_topic(topic, count, RF)
    out["create_call_s"] = time.monotonic() - started
    count = sum(n for _, n in layout)
    poll(lambda: cluster_satisfies(cluster, layout, full_isr), left(deadline),
         f"{count} partitions led with a full ISR", 0.1)
    out["all_led_full_isr_s"] = time.monotonic() - started
    poll(lambda: serving_everywhere(cluster, layout), left(deadline),
         f"{count} partitions hosted by every broker, each leader with its followers fetching", 0.2)
    out["all_serving_s"] = time.monotonic() - started


def step_idle(cluster: Cluster, deadline: float, out: dict[str, Any]) -> None:
    """Percent of a core and VmRSS per broker with no traffic, after IDLE_SETTLE_S."""
    time.sleep(min(IDLE_SETTLE_S, left(deadline)))
    pids = {b.broker_id: b.pid for b in cluster.brokers.values()}
    hz = os.sysconf("SC_CLK_TCK")
    before, t0 = {i: proc_ticks(pid) for i, pid in pids.items()}, time.monotonic()
    time.sleep(IDLE_WINDOW_S)
    after, wall = {i: proc_ticks(pid) for i, pid in pids.items()}, time.monotonic() - t0
    cpu = {i: cpu_percent(before[i], after[i], hz, wall) for i in pids}
    rss = {i: proc_memory_mb(pid)["VmRSS"] for i, pid in pids.items()}
    out.update(idle_cpu_pct_max=max(cpu.values()), rss_mb_max=max(rss.values()), idle_cpu_pct=cpu, rss_mb=rss)


def step_metadata(cluster: Cluster, requests: int, deadline: float, out: dict[str, Any]) -> None:
    """Full Metadata requests (every topic) to the controller, one after another on one channel."""
    r = wait_for(lambda: controller_view(cluster), left(deadline), "a controller")
    controller = cluster.brokers[r.controller_id]
    times_ms = []
    with grpc.insecure_channel(controller.bootstrap, options=[("grpc.max_receive_message_length", 256 << 20)]) as ch:
        stub = kafka_pb2_grpc.KafkaStub(ch)
        stub.Metadata(kafka_pb2.MetadataRequest(), timeout=left(deadline))   # connect before the clock starts
        for _ in range(requests):
            started = time.perf_counter()
            response = stub.Metadata(kafka_pb2.MetadataRequest(), timeout=left(deadline))
            times_ms.append((time.perf_counter() - started) * 1000)
    partitions = sum(len(t.partitions) for t in response.topics)
    out.update(metadata_p50_ms=percentile(times_ms, 0.5), metadata_p99_ms=percentile(times_ms, 0.99),
               metadata_partitions=partitions, metadata_bytes=response.ByteSize())


def step_w2(cluster: Cluster, layout: Layout, records: int, deadline: float, out: dict[str, Any]) -> None:
    """W2 spread: ``records`` acks=all records round-robin over every partition, as fast as the producer
    takes them, then flush; one warm-up record per topic (its metadata) before the clock starts."""
    targets = all_partitions(layout)
    producer = Producer(cluster.bootstrap, acks="all", linger_ms=5, batch_size=524_288,
                        delivery_timeout_ms=int(left(deadline) * 1000))
    try:
        for topic, _ in layout:
            producer.send(topic, VALUE, partition=0).result(timeout=left(deadline))
        started = time.perf_counter()
        futures = [producer.send(t, VALUE, partition=p) for t, p in (targets[i % len(targets)]
                                                                    for i in range(records))]
        producer.flush(timeout=left(deadline))
        elapsed = time.perf_counter() - started
    finally:
        producer.close(timeout=left(deadline))
    errors = [e for e in (f.exception(timeout=0) for f in futures) if e is not None]
    if errors:
        raise RuntimeError(f"W2: {len(errors)} of {records} records failed, the first with {errors[0]!r}")
    out.update(w2_records_per_s=records / elapsed, w2_records=records, w2_elapsed_s=elapsed)


class SpreadSender(threading.Thread):
    """At most one record in flight per partition, round-robin over every partition: each partition is its
    own synchronous producer, so one without a leader stalls alone. Stamps every ack (time.monotonic())."""

    def __init__(self, bootstrap: str, layout: Layout, delivery_timeout_s: float):
        super().__init__(name="spread-sender", daemon=True)
        self.targets = all_partitions(layout)
        self.producer = Producer(bootstrap, acks="all", linger_ms=5,
                                 delivery_timeout_ms=int(delivery_timeout_s * 1000))
        self.acks: dict[TopicPartition, list[float]] = {tp: [] for tp in self.targets}
        self.failed = 0
        self.close_error: str | None = None
        self.stopping = threading.Event()
        self._pending: set[TopicPartition] = set()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self.stopping.is_set():
            sent = 0
            for tp in self.targets:
                if self.stopping.is_set():
                    return
                with self._lock:
                    if tp in self._pending:
                        continue
                    self._pending.add(tp)
                self.producer.send(tp[0], VALUE, partition=tp[1]).add_done_callback(partial(self._done, tp))
                sent += 1
            if not sent:
                self.stopping.wait(0.005)   # every partition has its record in flight: let the sender work

    def _done(self, tp: TopicPartition, future) -> None:
        now = time.monotonic()
        if future.exception(timeout=0) is None:
            self.acks[tp].append(now)
        else:
            self.failed += 1
        with self._lock:
            self._pending.discard(tp)

    def acked_after(self, tps: Iterable[TopicPartition], since: float, count: int) -> bool:
        return all(sum(1 for t in self.acks[tp][-count:] if t > since) >= count for tp in tps)

    def finish(self, timeout: float) -> None:
        """Stop sending; wait up to ``timeout`` for what is in flight (a failure here must not hide the step's)."""
        self.stopping.set()
        self.join(timeout)
        try:
            self.producer.close(timeout)
        except KafkaError as e:
            self.close_error = repr(e)


def leaders(cluster: Cluster, layout: Layout, deadline: float) -> tuple[dict[TopicPartition, int], int]:
    """({partition: leader id}, controller id) from the controller, once every partition has a leader."""
    def view():
        r = controller_view(cluster)
        parts = partition_view(r, layout) if r is not None else None
        if parts is None or any(p.leader_id < 0 for p in parts.values()):
            return None
        return {tp: p.leader_id for tp, p in parts.items()}, r.controller_id
    return poll(view, left(deadline), "every partition led", 0.2)


def elected_at(cluster: Cluster, partitions: set[TopicPartition], since_wall: float) -> float | None:
    """Wall-clock time of the last of ``partitions``' first new leaders after ``since_wall``, from the controller's
    ``leader_elected`` events (and ``leaders_elected``, one per topic of a big batch), which name when their batch
    committed: to the millisecond, where a Metadata poll at 10,000 partitions is late by up to a poll's 100-200 ms.
    None if a partition has no such event."""
    first: dict[TopicPartition, float] = {}
    for b in cluster.brokers.values():
        with open(b.log_path, "rb") as f:
            for line in f:
                if b'_elected"' not in line:
                    continue
                e = json.loads(line)
                if e.get("event") == "leader_elected":
                    elected = [e.get("partition")]
                elif e.get("event") == "leaders_elected":
                    elected = parse_partition_ranges(e.get("partition_ranges", ""))
                else:
                    continue
                at = e["committed_at_ms"] / 1000
                for tp in ((e.get("topic"), p) for p in elected):
                    if tp in partitions and at >= since_wall:
                        first[tp] = min(first.get(tp, at), at)
    return max(first.values()) if len(first) == len(partitions) else None


def step_kill(cluster: Cluster, layout: Layout, killed: list[int], log: Callable[[str], None], deadline: float,
              out: dict[str, Any]) -> None:
    """One kill -9 round of a broker leading about a third of the partitions, under the spread producer; then
    its restart until back in every ISR, and a preferred election (heal) for the next round."""
    led_by, controller_id = leaders(cluster, layout, deadline)
    victim_id = pick_victim(Counter(led_by.values()), killed)
    killed.append(victim_id)
    victim = cluster.brokers[victim_id]
    victim_led = [tp for tp, b in led_by.items() if b == victim_id]
    out.update(victim=victim_id, victim_was_controller=victim_id == controller_id, victim_partitions=len(victim_led))
    sender = SpreadSender(cluster.bootstrap, layout, left(deadline))
    sender.start()
    try:
        wait_for(lambda: sender.acked_after(sender.targets, 0, 2), left(deadline),
                 "two acks from every partition before the kill", 0.05)
        killed_at, killed_wall = time.monotonic(), time.time()
        victim.kill()
        poll(lambda: cluster_satisfies(cluster, layout, lambda p: p.leader_id not in (-1, victim_id),
                                       exclude=victim_id), left(deadline), "every partition led again", 0.02)
        out["led_again_poll_s"] = time.monotonic() - killed_at
        elected = elected_at(cluster, set(victim_led), killed_wall)
        out["led_again_s"] = out["led_again_poll_s"] if elected is None else elected - killed_wall
        wait_for(lambda: sender.acked_after(victim_led, killed_at, ACKS_AFTER_KILL), left(deadline),
                 f"{ACKS_AFTER_KILL} acks after the kill on each of broker {victim_id}'s partitions", 0.05)
    finally:
        sender.finish(left(deadline))
    window = producer_window(sender.acks, victim_led, killed_at)
    out.update(producer_window_s=window.window_s, producer=asdict(window), failed_sends=sender.failed,
               acked=sum(len(a) for a in sender.acks.values()), producer_close_error=sender.close_error)
    out["isr_back_s"] = back_in_every_isr(cluster, layout, victim, deadline, out)
    log(f"  kill -9 broker {victim_id}{' (controller)' if victim_id == controller_id else ''} leading "
        f"{len(victim_led)}: led again {out['led_again_s']:.2f} s, producer window {window.window_s or 0:.2f} s "
        f"(round period {window.baseline_gap_s or 0:.2f} s), back in every ISR {out['isr_back_s']:.2f} s")
    heal(cluster, layout, deadline)


def back_in_every_isr(cluster: Cluster, layout: Layout, broker: BrokerProcess, deadline: float,
                      out: dict[str, Any]) -> float:
    """Start ``broker`` (stopped), then seconds until it is registered and unfenced and in the ISR of every
    partition it replicates. Records the registration time, and the partitions still missing it at each poll
    (what a timeout leaves behind)."""
    bid = broker.broker_id
    started = time.monotonic()
    broker.start(wait=False)
    poll(lambda: registered(cluster, broker), left(deadline), f"broker {bid} registered", 0.05)
    out["registered_s"] = time.monotonic() - started

    def in_every_isr() -> bool:
        r = controller_view(cluster)
        parts = partition_view(r, layout) if r is not None else None
        if parts is None:
            return False
        out["isr_missing"] = sum(1 for p in parts.values() if bid in p.replicas and bid not in p.isr)
        return out["isr_missing"] == 0
    poll(in_every_isr, left(deadline), f"broker {bid} back in every ISR ({out.get('isr_missing')} missing)", 0.1)
    return time.monotonic() - started


def step_restart(cluster: Cluster, layout: Layout, deadline: float, out: dict[str, Any]) -> None:
    """SIGTERM (controlled shutdown) of the non-controller broker leading the most partitions, then from its
    start until it is registered, unfenced and back in every ISR of its replicas."""
    led_by, controller_id = leaders(cluster, layout, deadline)
    counts = Counter(b for b in led_by.values() if b != controller_id)
    broker = cluster.brokers[max(counts, key=lambda b: (counts[b], -b)) if counts else
                             next(i for i in cluster.brokers if i != controller_id)]
    out["restarted"] = broker.broker_id
    stopping = time.monotonic()
    out["shutdown_exit_code"] = broker.terminate(timeout=left(deadline))
    out["controlled_shutdown_s"] = time.monotonic() - stopping
    out["restart_serving_s"] = back_in_every_isr(cluster, layout, broker, deadline, out)
    heal(cluster, layout, deadline)


def registered(cluster: Cluster, broker: BrokerProcess) -> bool:
    if not broker.alive():
        raise AssertionError(f"broker {broker.broker_id} exited with {broker.proc.returncode}")
    r = controller_view(cluster, topics=[PROBE_TOPIC])
    return r is not None and any(b.broker_id == broker.broker_id and b.alive for b in r.brokers)


# ---- runner ------------------------------------------------------------------------------------------


def run_step(name: str, fn: Callable[[float, dict[str, Any]], None], timeout: float, out: dict[str, Any]) -> None:
    """``fn(deadline, out)`` on a thread of its own, so that a call stuck past every deadline cannot hang the run:
    StepFailed("timeout") past ``timeout`` (its own waits timing out count too), StepFailed("error") else."""
    box: dict[str, BaseException] = {}
    deadline = time.monotonic() + timeout

    def target() -> None:
        try:
            fn(deadline, out)
        except BaseException as e:  # noqa: BLE001 -- reported as the step's outcome
            box["error"] = e
    thread = threading.Thread(target=target, name=f"step-{name}", daemon=True)
    thread.start()
    thread.join(timeout + STEP_GRACE_S)
    if thread.is_alive():
        raise StepFailed("timeout", f"{name}: still running after {timeout:.0f} s")
    error = box.get("error")
    if error is None:
        return
    # Past its deadline every call gets 0.1 s (left()): whatever then fails, the step ran out of time.
    if (isinstance(error, AssertionError) and "timed out" in str(error)) or time.monotonic() >= deadline:
        raise StepFailed("timeout", f"{name}: {error!r}"[:600])
    raise StepFailed("error", f"{name}: {error!r}"[:600])


# Each step's table figures, in the order it measures them: a failed step marks the first one it lacks.
STEP_FIGURES = {"create": ("create_call_s", "all_led_full_isr_s", "all_serving_s"),
                "idle": ("idle_cpu_pct_max", "rss_mb_max"), "metadata": ("metadata_p50_ms", "metadata_p99_ms"),
                "w2": ("w2_records_per_s",), "kill": KILL_FIGURES, "restart": ("restart_serving_s",)}


def measure(cluster: Cluster, result: SizeResult, settings: Settings, log: Callable[[str], None]) -> None:
    """Every step on a started cluster, in order, into ``result``; the first step that fails ends the size,
    keeping what it measured before it failed."""
    layout, timeout = result.layout, settings.timeout_per_step or step_timeout(result.size)
    killed: list[int] = []
    steps: list[tuple[str, Callable[[float, dict[str, Any]], None]]] = [
        ("create", partial(step_create, cluster, layout)),
        ("idle", partial(step_idle, cluster)),
        ("metadata", partial(step_metadata, cluster, settings.metadata_requests)),
        ("w2", partial(step_w2, cluster, layout, settings.w2_records)),
        *((f"kill-{n}", partial(step_kill, cluster, layout, killed, log)) for n in range(1, settings.kills + 1)),
        ("restart", partial(step_restart, cluster, layout)),
    ]
    for name, fn in steps:
        out: dict[str, Any] = {}
        failed: StepFailed | None = None
        try:
            run_step(name, fn, timeout, out)
        except StepFailed as e:
            failed = e
        figures = dict(out)   # a snapshot: a step thread past its deadline may still be writing
        kind = name.split("-")[0]
        if failed is not None:
            result.status, result.reason = failed.status, failed.reason
            figures.setdefault(next((k for k in STEP_FIGURES[kind] if k not in figures), STEP_FIGURES[kind][-1]),
                               failed.status)
            log(f"  {name}: {failed.status}: {failed.reason}")
        if kind == "kill":
            for key in KILL_FIGURES:
                result.figures.setdefault(key, []).append(figures.get(key))
            result.details.setdefault("kills", []).append(figures)
        else:
            result.details[name] = figures
            result.figures.update({k: v for k, v in figures.items() if k in STEP_FIGURES[kind]})
            if failed is None:
                log(f"  {name}: " + ", ".join(f"{k} {figures[k]:,.2f}" for k in STEP_FIGURES[kind]))
        if failed is not None:
            return


def run_size(size: int, settings: Settings, log: Callable[[str], None]) -> SizeResult:
    """One size on a fresh cluster under a temp dir, removed after (the brokers killed first, by PID)."""
    layout = topic_layout(size, settings.topics_per_size)
    result = SizeResult(size, layout)
    log(f"{size:,} partitions: {len(layout)} topic(s) of {layout[0][1]}{'+' if layout[-1][1] != layout[0][1] else ''}")
    with tempfile.TemporaryDirectory(prefix=f"raftka-scale-{size}-", ignore_cleanup_errors=True) as tmp:
        cluster = write_cluster(Path(tmp), BROKERS, CLUSTER_CONFIG)
        try:
            started = time.monotonic()
            try:
                cluster.start_all(timeout=60)
            except Exception as e:  # noqa: BLE001 -- a size whose cluster cannot start is reported, not fatal
                result.status, result.reason = "no cluster", f"the cluster did not start: {e}"[-1500:]
                log(f"  {result.reason}")
                return result
            result.details["ready_s"] = time.monotonic() - started
            measure(cluster, result, settings, log)
        finally:
            cluster.stop_all()
    return result


def write_results(path: Path, results: list[SizeResult], settings: Settings, began: float) -> None:
    doc = {"commit": git_commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": machine(),
           "config": {"brokers": BROKERS, "replication_factor": RF, **CLUSTER_CONFIG, "value_bytes": len(VALUE),
                      **asdict(settings), "acks": "all"},
           "targets": {c.key: {"op": ">=" if c.higher_is_better else "<=", "bound": c.target, "at": 10_000}
                       for c in COLUMNS if c.target is not None},
           "sizes": [{"partitions": r.size, "topics": len(r.layout), "partitions_per_topic": [n for _, n in r.layout],
                      "status": r.status, "reason": r.reason, "figures": r.figures, "details": r.details}
                     for r in results],
           "runtime_s": round(time.monotonic() - began, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000,3000,10000", help="partition counts, comma-separated")
    ap.add_argument("--topics-per-size", type=int, default=None,
                    help=f"topics per size (default: {PARTITIONS_PER_TOPIC} partitions per topic)")
    ap.add_argument("--kills", type=int, default=3, help="kill -9 rounds per size (median reported)")
    ap.add_argument("--out", default="bench/scale_results.json")
    ap.add_argument("--timeout-per-step", type=float, default=None,
                    help="seconds per step (default: 120 + 0.1 per partition)")
    ap.add_argument("--metadata-requests", type=int, default=Settings.metadata_requests)
    ap.add_argument("--w2-records", type=int, default=Settings.w2_records)
    args = ap.parse_args(argv)
    settings = Settings(tuple(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()),
                        args.topics_per_size, args.kills, args.timeout_per_step, args.metadata_requests,
                        args.w2_records)
    for size in settings.sizes:
        topic_layout(size, settings.topics_per_size)   # refuse a bad layout before any cluster starts

    def log(line: str) -> None:
        print(f"[{time.monotonic() - began:7.1f} s] {line}", flush=True)

    began = time.monotonic()
    out, results = Path(args.out), []
    for size in settings.sizes:
        results.append(run_size(size, settings, log))
        write_results(out, results, settings, began)   # after every size: a cut-short run keeps what it measured
    print("\n" + format_table(results))
    print(f"\n{BROKERS} brokers, RF {RF}, min.insync.replicas {CLUSTER_CONFIG['min.insync.replicas']}; "
          f"kill figures: median of {settings.kills}; '!' past the target; {os.cpu_count()} CPUs; "
          f"{time.monotonic() - began:.0f} s; written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
