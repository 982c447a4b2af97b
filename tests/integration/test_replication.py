"""Replication across three real brokers: followers' fetchers, the HW, acks=all, the ISR, truncation.

Every test (but the two read-only ones that share a module cluster) starts its own
three `python -m broker` processes and ends only those, by PID. Nothing is asserted
after a sleep: each wait is a condition polled against a deadline. Each test prints
what it counted and measured (run with -s to see it).

"Identical replicas" is checked two ways once the cluster is quiet (full ISR, every
replica's HW = its LEO = the leader's LEO): the (offset, value) lists each broker's
own copy serves (Consumer(replica=ID), KIP-392) and the raw bytes of the segment files
(data_dir/<topic>-<partition>/*.log) cut at the HW.

Zero-loss checks compare acknowledged values with values found (acknowledged ⊆
found): the producer is not idempotent yet, so a retry after a lost answer may store
a record twice; duplicates are counted and printed, not failed.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from functools import partial

import grpc
import pytest

from client import record_batch
from client.admin import Admin
from client.consumer import Consumer
from client.producer import Producer
from client.protocol.v1 import common_pb2, kafka_pb2
from tests.integration.cluster import fetch_raw as fetch_one_batch, produce_raw as produce_batch
from tests.integration.cluster import (BrokerProcess, Cluster, kclient, leader_epoch_entries, log_bytes, log_events,
                                       log_records, metadata, read_replica, replica_offsets, wait_for, write_cluster)

pytestmark = pytest.mark.integration

# Short timers where they speed a test up (defaults: lag 5000, session 3000).
FAST = {"replica.lag.time.max.ms": 2000, "broker.session.timeout.ms": 2000}

NONE = common_pb2.NONE
NOT_LEADER_OR_FOLLOWER = common_pb2.NOT_LEADER_OR_FOLLOWER      # 6
REQUEST_TIMED_OUT = common_pb2.REQUEST_TIMED_OUT                # 7
NOT_ENOUGH_REPLICAS = common_pb2.NOT_ENOUGH_REPLICAS            # 19

SYNC_BOUND_S = 30.0   # a healthy cluster reaches full ISR + equal HWs within this (goal: ~1 s)


# ---- helpers ------------------------------------------------------------------------------------


def partition_meta(broker: BrokerProcess, topic: str, partition: int = 0) -> kafka_pb2.PartitionMetadata | None:
    """The partition as ``broker`` itself sees it (its own Metadata answer), or None."""
    r = metadata(broker, [topic])
    if r is None:
        return None
    for t in r.topics:
        if t.name == topic and t.error_code == NONE:
            for p in t.partitions:
                if p.partition == partition:
                    return p
    return None


def name(code: int) -> str:
    return common_pb2.ErrorCode.Name(code)


def create_topic(cluster: Cluster, topic: str, partitions: int = 1, replication_factor: int = 3,
                 config: dict[str, str] | None = None, timeout: float = 15.0) -> None:
    """Create ``topic`` and wait until every running broker hosts every partition, led, with a full ISR."""
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(topic, partitions, replication_factor, config=config or {})

    def ready():
        for b in cluster.running():
            for n in range(partitions):
                p = partition_meta(b, topic, n)
                if p is None or p.leader_id < 0 or len(p.isr) != replication_factor:
                    return False
                if b.broker_id in p.replicas and replica_offsets(b, topic, n) is None:
                    return False
        return True
    wait_for(ready, timeout, f"{topic}: {partitions} partition(s) led, full ISR, hosted by every replica", 0.05)


def produce_raw(broker: BrokerProcess, topic: str, partition: int, values: list[bytes], acks: int,
                timeout_ms: int = 5000, epoch: int = -1) -> kafka_pb2.PartitionProduceResponse:
    """One batch of ``values`` sent straight to ``broker`` (no client routing, no retry)."""
    now = int(time.time() * 1000)
    return produce_batch(broker, topic, record_batch.build_batch([(None, v, now) for v in values]),
                         partition, epoch, acks, timeout_ms)


def last_isr_logged(broker: BrokerProcess, topic: str, partition: int = 0) -> set[int] | None:
    """The ISR of the last became_leader / isr_updated event ``broker`` logged for the partition: its
    replica manager has applied it (the Metadata answer alone may run ahead of the partition state)."""
    entries = [e for e in log_events(broker) if e.get("event") in ("became_leader", "isr_updated", "became_follower")
               and e.get("topic") == topic and e.get("partition") == partition]
    return set(entries[-1]["isr"]) if entries else None


def wait_leader_applied_isr(leader: BrokerProcess, topic: str, isr: set[int], timeout: float,
                            partition: int = 0) -> None:
    wait_for(lambda: last_isr_logged(leader, topic, partition) == isr
             and (p := partition_meta(leader, topic, partition)) is not None and set(p.isr) == isr
             and p.leader_id == leader.broker_id,
             timeout, f"leader {leader.broker_id} to apply ISR {sorted(isr)} for {topic}-{partition}")


def wait_in_sync(cluster: Cluster, topic: str, partition: int = 0, timeout: float = SYNC_BOUND_S) -> int:
    """Quiet and in sync: every broker's metadata shows the full ISR, and every replica's HW equals its
    LEO and the others'. Returns that common HW."""
    ids = set(cluster.brokers)

    def synced():
        for b in cluster.brokers.values():
            p = partition_meta(b, topic, partition)
            if p is None or set(p.isr) != ids:
                return None
        offsets = [replica_offsets(b, topic, partition) for b in cluster.brokers.values()]
        if any(o is None or o.high_watermark != o.log_end_offset for o in offsets):
            return None
        hws = {o.high_watermark for o in offsets}
        return (hws.pop(),) if len(hws) == 1 else None
    def describe():
        return {b.broker_id: (replica_offsets(b, topic, partition),
                              list(getattr(partition_meta(b, topic, partition), "isr", [])))
                for b in cluster.brokers.values()}
    try:
        return wait_for(synced, timeout, f"{topic}-{partition}: full ISR and equal HW = LEO on every replica")[0]
    except AssertionError as e:
        raise AssertionError(f"{e}; now: {describe()}") from None


def compare_replicas(cluster: Cluster, topic: str, hw: int, partition: int = 0) -> list[tuple[int, bytes]]:
    """Every replica serves the same (offset, value) list below ``hw`` and holds the same raw log bytes;
    returns that list. Call once quiet (wait_in_sync)."""
    served = {b.broker_id: read_replica(b, topic, partition, upto_offset=hw) for b in cluster.brokers.values()}
    raw = {b.broker_id: log_bytes(b, topic, partition, hw) for b in cluster.brokers.values()}
    whole = {b.broker_id: log_bytes(b, topic, partition) for b in cluster.brokers.values()}
    first_id = min(served)
    reference = served[first_id]
    assert [o for o, _ in reference] == list(range(reference[0][0] if reference else 0, hw)), \
        f"broker {first_id}: offsets are not contiguous up to the HW {hw}"
    for bid in served:
        assert served[bid] == reference, (
            f"{topic}-{partition}: broker {bid} serves {len(served[bid])} records, broker {first_id} "
            f"{len(reference)}; first difference at "
            f"{next((i for i, (a, b) in enumerate(zip(served[bid], reference)) if a != b), None)}")
        assert raw[bid] == raw[first_id], (
            f"{topic}-{partition}: raw log bytes of broker {bid} ({len(raw[bid])} B) differ from broker "
            f"{first_id}'s ({len(raw[first_id])} B) below the HW {hw}")
        assert whole[bid] == raw[bid], f"broker {bid}: bytes past the HW {hw} although HW = LEO"
        assert log_records(cluster.brokers[bid], topic, partition, hw) == served[bid], \
            f"broker {bid}: its segment files and what it serves differ"
    # Same batches, same epochs: every replica's leader-epoch cache names the same (epoch, start offset)s
    # (each test writes after every election, so no epoch exists only on the leader that started it).
    epochs = {b.broker_id: leader_epoch_entries(b, topic, partition) for b in cluster.brokers.values()}
    assert len({tuple(e) for e in epochs.values()}) == 1, \
        f"{topic}-{partition}: leader-epoch caches differ: {epochs}"
    return reference


def read_from_leader(bootstrap: str, topic: str, upto_offset: int, partition: int = 0,
                     timeout: float = 20.0) -> list[tuple[int, bytes]]:
    """What a plain consumer (leader reads) gets from the beginning up to ``upto_offset``."""
    out = []
    with Consumer(bootstrap, topic, partition=partition, auto_offset_reset="earliest",
                  fetch_max_wait_ms=100) as c:
        deadline = time.monotonic() + timeout
        while c.positions.get((topic, partition), -1) < upto_offset:
            assert time.monotonic() < deadline, \
                f"the leader served up to {c.positions.get((topic, partition))} of {upto_offset}"
            out += [(r.offset, r.value) for r in c.poll(0.5) if r.offset < upto_offset]
    return out


def consumer_fetch_offsets(broker: BrokerProcess, topic: str, partition: int = 0) -> list[int]:
    """Offsets a plain consumer Fetch from offset 0 gets from ``broker`` (the leader): below its HW only."""
    r = fetch_one_batch(broker, topic, 0, partition=partition, timeout=5)
    assert r.error_code == NONE, (name(r.error_code), r.error_message)
    return [rec.offset for rec in record_batch.decode_all(r.records)]


class ProducerThread(threading.Thread):
    """Sends distinct values (acks=all, small linger) to one partition until stopped; keeps every outcome."""

    def __init__(self, bootstrap: str, topic: str, prefix: str, partition: int = 0, interval_s: float = 0.002):
        super().__init__(name=f"producer-{prefix}", daemon=True)
        self.topic, self.prefix, self.partition, self.interval_s = topic, prefix, partition, interval_s
        self.producer = Producer(bootstrap, acks="all", linger_ms=2, request_timeout_ms=10000,
                                 delivery_timeout_ms=60000, retry_backoff_ms=50, retry_backoff_max_ms=500)
        self.lock = threading.Lock()
        self.acked: list[tuple[bytes, int, float]] = []   # value, offset, monotonic time of the answer
        self.failed: list[tuple[bytes, str]] = []
        self.sent: list[bytes] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        i = 0
        while not self._stopping.is_set():
            value = f"{self.prefix}-{i:06d}".encode()
            self.sent.append(value)
            self.producer.send(self.topic, value, partition=self.partition).add_done_callback(
                partial(self._done, value))
            i += 1
            self._stopping.wait(self.interval_s)

    def _done(self, value: bytes, future) -> None:
        try:
            md = future.result()
        except Exception as e:  # noqa: BLE001 - a failed send is counted, not raised here
            with self.lock:
                self.failed.append((value, repr(e)))
            return
        with self.lock:
            self.acked.append((value, md.offset, time.monotonic()))

    def acked_count(self, since: float = 0.0) -> int:
        with self.lock:
            return sum(1 for _, _, t in self.acked if t >= since)

    def wait_acked(self, n: int, since: float, timeout: float, what: str) -> None:
        wait_for(lambda: self.acked_count(since) >= n, timeout, f"{n} acknowledgements {what} "
                 f"(have {self.acked_count(since)}, failed {len(self.failed)})")

    def finish(self, timeout: float = 60.0) -> None:
        self._stopping.set()
        self.join(10)
        self.producer.close(timeout)


def loss_report(acked: list[tuple[bytes, int, float]], found: list[tuple[int, bytes]]) -> dict[str, int]:
    """Counts for acknowledged ⊆ found: lost must be 0; an acked offset must hold the acked value."""
    found_values = Counter(v for _, v in found)
    at = dict(found)
    lost = [v for v, _, _ in acked if v not in found_values]
    moved = [(v, o) for v, o, _ in acked if at.get(o) != v]
    return {"acked": len(acked), "found": len(found), "distinct_found": len(found_values),
            "lost": len(lost), "acked_offset_mismatch": len(moved),
            "duplicates": sum(c - 1 for c in found_values.values() if c > 1),
            "_lost_sample": lost[:5], "_moved_sample": moved[:5]}


def start_three(running_cluster, config=None) -> tuple[Cluster, int]:
    cluster = running_cluster(3, config)
    return cluster, cluster.wait_controller(timeout=15, alive={1, 2, 3})


# ---- a module cluster for the read-only tests -------------------------------------------------------


@pytest.fixture(scope="module")
def quiet_cluster(tmp_path_factory):
    """Three brokers shared by the tests that do not disturb them (each uses its own topic)."""
    cluster = write_cluster(tmp_path_factory.mktemp("replication"), 3)
    try:
        cluster.start_all(timeout=30)
        cluster.wait_controller(timeout=15, alive={1, 2, 3})
        yield cluster
    finally:
        cluster.stop_all()


# ---- 1. basics -------------------------------------------------------------------------------------


BASICS_RECORDS = 1000


def test_acks_all_through_a_follower_reaches_every_replica_in_order(quiet_cluster):
    acks_all_through_a_follower(quiet_cluster, "basics")


def test_unary_replica_fetches_replicate_the_same(tmp_path):
    """replica.fetch.stream = 0 (one unary ReplicaFetch per fetch, kept to compare): the same guarantees."""
    cluster = write_cluster(tmp_path, 3, {"replica.fetch.stream": 0})
    try:
        cluster.start_all(timeout=30)
        acks_all_through_a_follower(cluster, "basics-unary")
    finally:
        cluster.stop_all()


def acks_all_through_a_follower(cluster, topic: str) -> None:
    create_topic(cluster, topic, 1, 3, {"min.insync.replicas": "2"})
    leader_id = partition_meta(cluster.brokers[1], topic).leader_id
    follower = next(b for b in cluster.brokers.values() if b.broker_id != leader_id)

    values = [f"basic-{i:04d}".encode() for i in range(BASICS_RECORDS)]
    started = time.monotonic()
    # Small batches: many produce requests, so many follower fetches and HW steps.
    with Producer(follower.bootstrap, acks="all", linger_ms=5, batch_size=1024) as producer:
        futures = [producer.send(topic, v, partition=0) for v in values]
        offsets = [f.result(timeout=60).offset for f in futures]
    produce_s = time.monotonic() - started
    assert offsets == list(range(BASICS_RECORDS)), "acks=all offsets are 0..999 in send order"

    hw = wait_in_sync(cluster, topic)
    synced_s = time.monotonic() - started
    assert hw == BASICS_RECORDS
    expected = list(enumerate(values))
    records = compare_replicas(cluster, topic, hw)
    assert records == expected, "every replica holds exactly the produced values at offsets 0..999"
    assert read_from_leader(cluster.bootstrap, topic, hw) == expected
    sizes = {b.broker_id: len(log_bytes(b, topic)) for b in cluster.brokers.values()}
    batches = len(list(record_batch.iter_batches(log_bytes(cluster.brokers[leader_id], topic))))
    print(f"\n[basics] {BASICS_RECORDS} records acks=all via follower {follower.broker_id} (leader {leader_id}) in "
          f"{produce_s:.2f} s; HW {hw} on all 3 replicas after {synced_s:.2f} s; 3 x {len(records)} (offset, value) "
          f"pairs equal; raw log bytes equal {sizes}, {batches} batches")


# ---- 2. acks=all survives kill -9 of the leader -------------------------------------------------------


KEEP_SENDING_S = 2.0


@pytest.mark.parametrize("victim_role", ["leader", "leader_and_controller"])
def test_acks_all_loses_nothing_when_the_leader_is_killed(running_cluster, victim_role):
    cluster, controller = start_three(running_cluster, FAST)
    topic = "acked"
    create_topic(cluster, topic, 3, 3, {"min.insync.replicas": "2"})
    # Kill a partition leader that is not the controller, or one that is (the quorum must elect a new
    # controller before it can fence the dead broker and move the partition).
    parts = {n: partition_meta(cluster.brokers[controller], topic, n) for n in range(3)}
    want_controller = victim_role == "leader_and_controller"
    n = next((n for n, p in parts.items() if (p.leader_id == controller) == want_controller), None)
    assert n is not None, f"no partition of {topic} fits {victim_role}: leaders {[p.leader_id for p in parts.values()]}"
    before = parts[n]
    victim = cluster.brokers[before.leader_id]

    producer = ProducerThread(cluster.bootstrap, topic, "acked", partition=n)
    producer.start()
    try:
        producer.wait_acked(300, 0, 30, "before the kill")
        acked_at_kill = producer.acked_count()
        killed_at = time.monotonic()
        victim.kill()
        watcher = next(b for b in cluster.running())
        after = wait_for(lambda: (p := partition_meta(watcher, topic, n)) is not None
                         and p.leader_id not in (victim.broker_id, -1) and p.leader_epoch > before.leader_epoch
                         and p, 20, f"a new leader for {topic}-{n} after broker {victim.broker_id} was killed", 0.01)
        elected_at = time.monotonic()
        elected_s = elected_at - killed_at
        # Keep sending for a few seconds (and at least 300 acknowledgements) under the new leader.
        wait_for(lambda: time.monotonic() - elected_at >= KEEP_SENDING_S and producer.acked_count(elected_at) >= 300,
                 KEEP_SENDING_S + 30, f"{KEEP_SENDING_S} s and 300 acknowledgements after the election "
                 f"(have {producer.acked_count(elected_at)}, failed {len(producer.failed)})")
        acked_after_election = producer.acked_count(elected_at)
    finally:
        producer.finish()
    sent, acked, failed = len(producer.sent), list(producer.acked), list(producer.failed)

    restarted_at = time.monotonic()
    victim.start()
    hw = wait_in_sync(cluster, topic, n)
    rejoined_s = time.monotonic() - restarted_at
    records = compare_replicas(cluster, topic, hw, n)
    assert read_from_leader(cluster.bootstrap, topic, hw, n) == records
    report = loss_report(acked, records)
    unacked_found = len({v for _, v in records} - {v for v, _, _ in acked})
    diverged = [(e["diverging_epoch"], e["diverging_end_offset"], e["truncate_to"], e["log_end_offset"])
                for e in log_events(victim, "follower_diverged") if e.get("topic") == topic and e.get("partition") == n]
    print(f"\n[leader kill: {victim_role}] leader {victim.broker_id} of {topic}-{n} (controller {controller}) killed "
          f"after {acked_at_kill} acks; new leader {after.leader_id} epoch {before.leader_epoch}->{after.leader_epoch} "
          f"after {elected_s * 1000:.0f} ms, {acked_after_election} acks after it; sent {sent}, "
          f"acked {report['acked']}, failed {len(failed)}, found "
          f"{report['found']} ({report['distinct_found']} distinct), lost {report['lost']}, duplicates "
          f"{report['duplicates']}, unacked-but-stored {unacked_found}; restarted broker truncated (epoch, end, to, "
          f"its LEO) {diverged}, back in ISR with HW {hw} equal on 3 replicas after {rejoined_s:.2f} s; replicas "
          f"identical (records and raw bytes)")
    assert report["lost"] == 0, f"acknowledged records lost: {report}"
    assert report["acked_offset_mismatch"] == 0, f"an acknowledged offset holds another value: {report}"
    assert not failed, f"sends failed although a new leader took over: {failed[:5]}"


def three_and_a_follower(running_cluster, topic: str, min_isr: str):
    """Three brokers, an RF 3 topic, its leader, a follower that is not the controller (to be
    killed), and the ids of the others."""
    cluster, controller = start_three(running_cluster, FAST)
    create_topic(cluster, topic, 1, 3, {"min.insync.replicas": min_isr})
    leader = cluster.brokers[partition_meta(cluster.brokers[controller], topic).leader_id]
    victim = next(b for b in cluster.brokers.values() if b.broker_id not in (leader.broker_id, controller))
    return cluster, controller, leader, victim, set(cluster.brokers) - {victim.broker_id}


# ---- 3. NOT_ENOUGH_REPLICAS -------------------------------------------------------------------------


def test_not_enough_replicas_refuses_acks_all_and_writes_nothing(running_cluster):
    topic = "minisr3"
    cluster, controller, leader, victim, rest = three_and_a_follower(running_cluster, topic, "3")

    baseline = [f"base-{i}".encode() for i in range(3)]
    for v in baseline:
        r = produce_raw(leader, topic, 0, [v], acks=-1)
        assert r.error_code == NONE, f"acks=-1 with the full ISR: {name(r.error_code)} {r.error_message}"

    killed_at = time.monotonic()
    victim.kill()
    wait_leader_applied_isr(leader, topic, rest, 15)
    shrunk_s = time.monotonic() - killed_at

    before = replica_offsets(leader, topic)
    refused = produce_raw(leader, topic, 0, [b"refused"], acks=-1)
    after_refused = replica_offsets(leader, topic)
    accepted = produce_raw(leader, topic, 0, [b"acks1-with-isr-2"], acks=1)
    after_acks1 = replica_offsets(leader, topic)
    assert refused.error_code == NOT_ENOUGH_REPLICAS, (name(refused.error_code), refused.error_message)
    assert after_refused.log_end_offset == before.log_end_offset, \
        f"a refused acks=-1 batch was written: LEO {before.log_end_offset} -> {after_refused.log_end_offset}"
    assert accepted.error_code == NONE, (name(accepted.error_code), accepted.error_message)
    assert accepted.base_offset == before.log_end_offset
    assert after_acks1.log_end_offset == before.log_end_offset + 1
    # Kafka 3.7+: with |ISR| < min.insync.replicas the HW stands still (the acks=1 record is stored, unseen).
    assert after_acks1.high_watermark == before.high_watermark == len(baseline), (before, after_acks1)
    visible = consumer_fetch_offsets(leader, topic)
    assert visible and max(visible) < len(baseline), f"a consumer sees offsets {visible} above the HW {len(baseline)}"

    restarted_at = time.monotonic()
    victim.start()
    wait_leader_applied_isr(leader, topic, set(cluster.brokers), SYNC_BOUND_S)
    rejoined_s = time.monotonic() - restarted_at
    again = produce_raw(leader, topic, 0, [b"after-rejoin"], acks=-1)
    assert again.error_code == NONE, (name(again.error_code), again.error_message)

    hw = wait_in_sync(cluster, topic)
    records = compare_replicas(cluster, topic, hw)
    values = [v for _, v in records]
    print(f"\n[min isr 3] follower {victim.broker_id} killed, ISR {sorted(rest)} applied on leader "
          f"{leader.broker_id} after {shrunk_s * 1000:.0f} ms; acks=-1 -> {name(refused.error_code)} (LEO stayed "
          f"{before.log_end_offset}); acks=1 -> {name(accepted.error_code)} at offset {accepted.base_offset}, HW "
          f"held at {after_acks1.high_watermark} (a consumer fetch from 0 gets offsets "
          f"{min(visible)}..{max(visible)}); "
          f"restarted follower back in ISR after {rejoined_s:.2f} s; acks=-1 "
          f"-> {name(again.error_code)} at {again.base_offset}; 3 replicas hold {values}")
    assert values == baseline + [b"acks1-with-isr-2", b"after-rejoin"]
    assert all(b"refused" not in [v for _, v in log_records(b, topic)] for b in cluster.brokers.values())


# ---- 4. ISR shrink and re-expand around a paused follower --------------------------------------------


# Who takes the paused follower out of the ISR: "leader" = a session timeout well above the lag time, so the
# leader's AlterPartition does it and the follower is never fenced; "controller" = the other way round, so
# the controller fences it (and must unfence it before the leader can add it back).
PAUSE_CONFIGS = {"leader": {"replica.lag.time.max.ms": 2000, "broker.session.timeout.ms": 8000},
                 "controller": {"replica.lag.time.max.ms": 5000, "broker.session.timeout.ms": 2000}}


@pytest.mark.parametrize("removed_by", sorted(PAUSE_CONFIGS))
def test_a_paused_follower_leaves_the_isr_and_rejoins_after_sigcont(running_cluster, removed_by):
    config = PAUSE_CONFIGS[removed_by]
    cluster, controller = start_three(running_cluster, config)
    topic = "lagging"
    create_topic(cluster, topic, 1, 3, {"min.insync.replicas": "2"})
    leader = cluster.brokers[partition_meta(cluster.brokers[controller], topic).leader_id]
    victim = next(b for b in cluster.brokers.values() if b.broker_id not in (leader.broker_id, controller))
    vid = victim.broker_id
    rest = set(cluster.brokers) - {vid}
    for i in range(5):
        assert produce_raw(leader, topic, 0, [f"before-{i}".encode()], acks=-1).error_code == NONE

    acks1 = acks_all = 0
    stopped_at = time.monotonic()
    victim.signal(signal.SIGSTOP)
    try:
        def shrunk():  # the leader's LEO keeps moving (acks=1) until the victim is out of the ISR
            nonlocal acks1
            r = produce_raw(leader, topic, 0, [f"acks1-{acks1}".encode()], acks=1)
            assert r.error_code == NONE, (name(r.error_code), r.error_message)
            acks1 += 1
            return last_isr_logged(leader, topic) == rest
        bound_s = min(config["replica.lag.time.max.ms"] * 1.5, config["broker.session.timeout.ms"]) / 1000 + 8
        wait_for(shrunk, bound_s, f"broker {vid} out of the ISR of {topic}-0 on leader {leader.broker_id}", 0.05)
        shrunk_s = time.monotonic() - stopped_at
        for i in range(5):
            r = produce_raw(leader, topic, 0, [f"all-while-paused-{i}".encode()], acks=-1)
            assert r.error_code == NONE, f"acks=-1 with ISR {sorted(rest)}: {name(r.error_code)} {r.error_message}"
            acks_all += 1
        paused_s = time.monotonic() - stopped_at
    finally:
        victim.signal(signal.SIGCONT)
    resumed_at = time.monotonic()
    wait_leader_applied_isr(leader, topic, set(cluster.brokers), 15)
    rejoined_s = time.monotonic() - resumed_at

    hw = wait_in_sync(cluster, topic)
    records = compare_replicas(cluster, topic, hw)
    fenced = [e for b in cluster.brokers.values() for e in log_events(b, "broker_fenced") if e.get("broker") == vid]
    unfenced = [e for b in cluster.brokers.values() for e in log_events(b, "broker_unfenced")
                if e.get("broker") == vid]
    shrink = [e for e in log_events(leader, "isr_shrink_requested") if e.get("topic") == topic]
    expand = [e for e in log_events(leader, "isr_expand_requested") if e.get("topic") == topic
              and e.get("replica") == vid]
    print(f"\n[paused follower, removed by the {removed_by}] broker {vid} SIGSTOPped (leader {leader.broker_id}, "
          f"controller {controller}); out of "
          f"the ISR after {shrunk_s:.2f} s ({acks1} acks=1 writes meanwhile; leader shrink requests "
          f"{[e['isr'] for e in shrink]}; fenced by controller: {[e.get('reason') for e in fenced]}); "
          f"{acks_all} acks=-1 writes OK with "
          f"ISR {sorted(rest)}; SIGCONT after {paused_s:.2f} s; back in ISR after {rejoined_s:.2f} s "
          f"(expand requests {len(expand)}); HW {hw}: 3 x {len(records)} records and raw bytes identical")
    if removed_by == "leader":
        assert not fenced, f"broker {vid} was fenced although paused for less than the session timeout: {fenced}"
        assert shrink and sorted(shrink[0]["isr"]) == sorted(rest), f"the leader's shrink request: {shrink}"
    else:
        assert [e.get("reason") for e in fenced] == ["session_timeout"], fenced
        assert unfenced, f"broker {vid} was not unfenced after SIGCONT"
    assert expand, "the leader asked the controller to add the caught-up follower back"
    assert len(records) == 5 + acks1 + acks_all


# ---- 5. truncation of an old leader's unreplicated tail ---------------------------------------------


def test_a_deposed_leader_truncates_its_unreplicated_records(running_cluster):
    cluster, controller = start_three(running_cluster, {"broker.session.timeout.ms": 3000,
                                                        "replica.lag.time.max.ms": 5000})
    topic = "diverge"
    create_topic(cluster, topic, 3, 3, {"min.insync.replicas": "2"})
    # A partition led by a broker that is not the controller: pausing it leaves the quorum a majority.
    parts = {n: partition_meta(cluster.brokers[controller], topic, n) for n in range(3)}
    n = next((n for n, p in parts.items() if p.leader_id != controller), None)
    assert n is not None, f"every partition of {topic} is led by the controller {controller}"
    old = parts[n]
    leader = cluster.brokers[old.leader_id]
    followers = [b for b in cluster.brokers.values() if b is not leader]

    baseline = [f"committed-{i}".encode() for i in range(5)]
    for v in baseline:
        r = produce_raw(leader, topic, n, [v], acks=-1)
        assert r.error_code == NONE, (name(r.error_code), r.error_message)
    assert wait_in_sync(cluster, topic, n) == len(baseline)

    unreplicated = [b"unreplicated-late-acks1-0", b"unreplicated-late-acks1-1", b"unreplicated-late-acks1-2"]
    deposed: dict[str, object] = {}

    def acks_all_until_deposed():  # parked on the leader until it learns it was deposed
        try:
            deposed["answer"] = produce_raw(leader, topic, n, [b"unreplicated-late-acks-all"], acks=-1,
                                            timeout_ms=20000)
        except grpc.RpcError as e:
            deposed["error"] = e
    waiter = threading.Thread(target=acks_all_until_deposed, daemon=True)
    paused_at = time.monotonic()
    for f in followers:
        f.signal(signal.SIGSTOP)
    try:
        # acks=-1 to the leader while nobody can fetch: never acknowledged (stored on the leader only).
        # Its append answers the long poll a follower may have had outstanding (into the paused
        # follower's socket); it waits 1 s so that this answer has gone, carrying this record alone,
        # before the acks=1 writes below, even on a loaded machine (with 150 ms, a fetch handler
        # starved of CPU under the full suite once read all five records in one answer).
        waited = produce_raw(leader, topic, n, [b"unreplicated-first-acks-all"], acks=-1, timeout_ms=1000)
        acks1 = [produce_raw(leader, topic, n, [v], acks=1) for v in unreplicated]
        waiter.start()
        stranded = wait_for(lambda: (o := replica_offsets(leader, topic, n)) is not None
                            and o.log_end_offset >= len(baseline) + 5 and o, 2, "the waiting acks=-1 batch appended")
        leader.signal(signal.SIGSTOP)
    finally:
        for f in followers:
            f.signal(signal.SIGCONT)
    followers_paused_s = time.monotonic() - paused_at
    try:
        assert waited.error_code in (REQUEST_TIMED_OUT, NOT_LEADER_OR_FOLLOWER), \
            f"acks=-1 with both followers paused answered {name(waited.error_code)}"
        assert [a.error_code for a in acks1] == [NONE] * 3, [name(a.error_code) for a in acks1]
        assert stranded.log_end_offset == len(baseline) + 5 and stranded.high_watermark == len(baseline), stranded

        # The controller fences the silent leader after the session timeout and elects a follower.
        watcher = followers[0]
        new = wait_for(lambda: (p := partition_meta(watcher, topic, n)) is not None
                       and p.leader_id in {f.broker_id for f in followers} and p.leader_epoch > old.leader_epoch
                       and leader.broker_id not in p.isr and p, 3.0 + 15,
                       f"{topic}-{n}: a follower elected after leader {leader.broker_id} was paused", 0.02)
        elected_s = time.monotonic() - paused_at
        new_leader = cluster.brokers[new.leader_id]
        fresh = [f"new-epoch-{i}".encode() for i in range(4)]

        def first_write():
            r = produce_raw(new_leader, topic, n, [fresh[0]], acks=-1)
            assert r.error_code in (NONE, NOT_LEADER_OR_FOLLOWER), (name(r.error_code), r.error_message)
            return r.error_code == NONE and r
        first = wait_for(first_write, 10, f"broker {new_leader.broker_id} to take acks=-1 writes as leader")
        # The first append after the pause answers the followers' outstanding long polls: that answer sits in
        # their sockets and is appended on SIGCONT, before they learn of the new epoch. So the never-acknowledged
        # acks=-1 record may survive on the new leader (legal: it was never acknowledged, and it is then on
        # every replica); the acks=1 records appended later reached no follower and must go.
        epoch_start = first.base_offset
        assert epoch_start in (len(baseline), len(baseline) + 1), f"the new epoch starts at {epoch_start}"
        for v in fresh[1:]:
            r = produce_raw(new_leader, topic, n, [v], acks=-1)
            assert r.error_code == NONE, (name(r.error_code), r.error_message)
    finally:
        leader.signal(signal.SIGCONT)
    resumed_at = time.monotonic()
    waiter.join(30)
    assert not waiter.is_alive(), "the acks=-1 request parked on the deposed leader got no answer"
    assert "answer" in deposed, f"the parked acks=-1 request failed: {deposed}"
    parked = deposed["answer"]
    assert parked.error_code == NOT_LEADER_OR_FOLLOWER, \
        f"acks=-1 parked on a leader deposed meanwhile answered {name(parked.error_code)} {parked.error_message}"
    parked_s = time.monotonic() - resumed_at

    def truncated():
        diverged = [e for e in log_events(leader, "follower_diverged") if e.get("topic") == topic
                    and e.get("partition") == n]
        cut = [e for e in log_events(leader, "log_truncated") if e.get("dir", "").endswith(f"/{topic}-{n}")]
        return diverged and cut and (diverged, cut)
    diverged, cut = wait_for(truncated, 20, f"broker {leader.broker_id} to log follower_diverged and log_truncated")
    wait_leader_applied_isr(new_leader, topic, set(cluster.brokers), SYNC_BOUND_S, n)
    rejoined_s = time.monotonic() - resumed_at
    hw = wait_in_sync(cluster, topic, n)
    records = compare_replicas(cluster, topic, hw, n)
    values = [v for _, v in records]
    survived = values[len(baseline):epoch_start]
    diverged_elsewhere = {f.broker_id: [(e["diverging_epoch"], e["diverging_end_offset"], e["truncate_to"])
                                        for e in log_events(f, "follower_diverged") if e.get("topic") == topic]
                          for f in followers}
    print(f"\n[truncation] {topic}-{n}: leader {leader.broker_id} (epoch {old.leader_epoch}) stored 5 records alone "
          f"(acks=-1 -> {name(waited.error_code)}, 3 x acks=1 -> NONE, a parked acks=-1 -> "
          f"{name(parked.error_code)} {parked_s * 1000:.0f} ms after SIGCONT; LEO {stranded.log_end_offset}, HW "
          f"{stranded.high_watermark}); followers paused {followers_paused_s * 1000:.0f} ms; broker "
          f"{new.leader_id} elected at epoch {new.leader_epoch} {elected_s:.2f} s after the pause, its epoch "
          f"starting at "
          f"offset {epoch_start} (records of the old epoch that reached it in flight: {survived}; followers' own "
          f"divergences {diverged_elsewhere}); old leader "
          f"diverged {[(e['diverging_epoch'], e['diverging_end_offset'], e['truncate_to']) for e in diverged]}, "
          f"truncated {[(e['previous_log_end_offset'], e['log_end_offset']) for e in cut]}, back in ISR "
          f"{rejoined_s:.2f} s after SIGCONT; HW {hw}: 3 x {len(records)} records and raw bytes identical")
    assert diverged[0]["diverging_epoch"] == old.leader_epoch and diverged[0]["truncate_to"] == epoch_start, diverged
    assert values == baseline + [b"unreplicated-first-acks-all"] * (epoch_start - len(baseline)) + fresh
    for b in cluster.brokers.values():
        on_disk = [v for _, v in log_records(b, topic, n)]
        assert not any(v.startswith(b"unreplicated-late") for v in on_disk), f"broker {b.broker_id} kept {on_disk}"


# ---- 6. a killed follower restarts, recovers, catches up -----------------------------------------------


def test_a_killed_follower_restarts_and_catches_up(running_cluster):
    topic = "comeback"
    cluster, controller, leader, victim, rest = three_and_a_follower(running_cluster, topic, "2")

    producer = ProducerThread(cluster.bootstrap, topic, "comeback")
    producer.start()
    try:
        producer.wait_acked(200, 0, 30, "before the kill")
        at_kill = producer.acked_count()
        killed_at = time.monotonic()
        victim.kill()
        wait_leader_applied_isr(leader, topic, rest, 15)
        shrunk_s = time.monotonic() - killed_at
        producer.wait_acked(300, time.monotonic(), 30, "with the ISR at 2")
        at_restart = producer.acked_count()
        restarted_at = time.monotonic()
        victim.start()
        wait_leader_applied_isr(leader, topic, set(cluster.brokers), SYNC_BOUND_S)
        rejoined_s = time.monotonic() - restarted_at
        producer.wait_acked(200, time.monotonic(), 30, "after the rejoin")
    finally:
        producer.finish()
    acked, failed = list(producer.acked), list(producer.failed)

    hw = wait_in_sync(cluster, topic)
    records = compare_replicas(cluster, topic, hw)
    report = loss_report(acked, records)
    opened = [e for e in log_events(victim, "log_opened") if e.get("dir", "").endswith(f"/{topic}-0")]
    print(f"\n[follower restart] follower {victim.broker_id} killed after {at_kill} acks (ISR {sorted(rest)} on leader "
          f"{leader.broker_id} after {shrunk_s * 1000:.0f} ms); restarted after {at_restart} acks, back in the ISR "
          f"after {rejoined_s:.2f} s (log reopened clean_shutdown={[e.get('clean_shutdown') for e in opened]}); "
          f"acked {report['acked']}, failed {len(failed)}, found {report['found']}, lost {report['lost']}, "
          f"duplicates {report['duplicates']}; HW {hw}: 3 x {len(records)} records and raw bytes identical")
    assert report["lost"] == 0 and report["acked_offset_mismatch"] == 0, report
    assert not failed, failed[:5]
    assert len(opened) >= 2 and opened[-1]["clean_shutdown"] is False, opened


# ---- 7. kclient consume --replica --------------------------------------------------------------------


NAMED_RECORDS = 40


def test_kclient_consume_replica_prints_each_replicas_copy(quiet_cluster):
    cluster = quiet_cluster
    topic = "named"
    create_topic(cluster, topic, 1, 3, {"min.insync.replicas": "2"})
    values = [f"named-{i:03d}" for i in range(NAMED_RECORDS)]
    with Producer(cluster.bootstrap, acks="all") as producer:
        for f in [producer.send(topic, v.encode(), partition=0) for v in values]:
            f.result(timeout=30)
    assert wait_in_sync(cluster, topic) == NAMED_RECORDS

    outputs, idle_outputs = {}, {}
    for b in cluster.brokers.values():
        via = cluster.brokers[b.broker_id % 3 + 1]  # ask through another broker: --replica names the copy
        common = ("consume", "--bootstrap", via.bootstrap, "--topic", topic, "--replica", str(b.broker_id),
                  "--from-beginning")
        result = kclient(*common, "--max-messages", str(NAMED_RECORDS), "--timeout-ms", "15000")
        assert result.returncode == 0, result.stderr.decode()
        outputs[b.broker_id] = result.stdout.decode().splitlines()
        assert f"Processed a total of {NAMED_RECORDS} messages" in result.stderr.decode(), result.stderr.decode()
        # Without --max-messages, until idle: the copy holds these N values and nothing more.
        result = kclient(*common, "--timeout-ms", "1000")
        assert result.returncode == 0, result.stderr.decode()
        idle_outputs[b.broker_id] = result.stdout.decode().splitlines()
    print(f"\n[kclient --replica] {NAMED_RECORDS} values; `kclient consume --replica N --max-messages "
          f"{NAMED_RECORDS}` for N in {sorted(outputs)} printed {[len(o) for o in outputs.values()]} lines; "
          f"until idle: {[len(o) for o in idle_outputs.values()]} lines")
    for bid in outputs:
        assert outputs[bid] == values, f"--replica {bid} printed {outputs[bid][:3]}... ({len(outputs[bid])} lines)"
        assert idle_outputs[bid] == values, f"--replica {bid} until idle printed {len(idle_outputs[bid])} lines"
