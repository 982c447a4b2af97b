"""The idempotent producer with real brokers: lost answers and leader kills store nothing twice."""

from __future__ import annotations

import threading
import time

import pytest

from client import Admin, Consumer, Producer
from client import record_batch
from tests.integration.cluster import metadata, produce_raw, wait_for, wait_metadata

pytestmark = pytest.mark.integration

DROPS = 3


def read_all(bootstrap: str, topic: str, expected: int, partition: int | None = None, timeout: float = 20.0):
    got = []
    deadline = time.monotonic() + timeout
    with Consumer(bootstrap, topic, auto_offset_reset="earliest", partition=partition) as c:
        while len(got) < expected and time.monotonic() < deadline:
            got += c.poll(timeout=0.5)
        got += c.poll(timeout=0.3)  # anything beyond what we expect (a duplicate) shows up too
    return got


def test_a_lost_answer_is_retried_without_a_duplicate(fresh_cluster):
    """The broker stores the batch, then drops its answer DROPS times; the retries find the original offset."""
    cluster = fresh_cluster(1)
    broker = cluster.brokers[1]
    broker.extra_env = {"RAFTKA_TEST_DROP_PRODUCE_ANSWERS": str(DROPS)}
    broker.start()
    Admin(broker.bootstrap).create_topic("lost", partitions=1, replication_factor=1)
    with Producer(broker.bootstrap, acks="all", linger_ms=0, retry_backoff_ms=20) as p:
        offsets = [p.send("lost", f"v{i}".encode()).result(timeout=30).offset for i in range(10)]
    got = read_all(broker.bootstrap, "lost", 10)
    dropped = broker.log().count("produce_answer_dropped_for_test")
    print(f"answers dropped {dropped}, acked {len(offsets)}, stored {len(got)}")
    assert dropped == DROPS, "the fault hook must have fired, or this test proves nothing"
    assert offsets == list(range(10))
    assert [(r.offset, r.value) for r in got] == [(i, f"v{i}".encode()) for i in range(10)]


def test_without_idempotence_the_same_fault_duplicates(fresh_cluster):
    """The control: the same lost answers with idempotence off store the first record again."""
    cluster = fresh_cluster(1)
    broker = cluster.brokers[1]
    broker.extra_env = {"RAFTKA_TEST_DROP_PRODUCE_ANSWERS": "1"}
    broker.start()
    Admin(broker.bootstrap).create_topic("dup", partitions=1, replication_factor=1)
    with Producer(broker.bootstrap, acks="all", linger_ms=0, retry_backoff_ms=20, enable_idempotence=False) as p:
        p.send("dup", b"once").result(timeout=30)
    values = [r.value for r in read_all(broker.bootstrap, "dup", 2, timeout=5)]
    assert values == [b"once", b"once"]


def test_sequence_rules_on_the_leader(fresh_cluster):
    """Duplicate -> the original offset; a gap -> OUT_OF_ORDER_SEQUENCE_NUMBER; nothing stored twice."""
    broker = fresh_cluster(1).brokers[1].start()
    Admin(broker.bootstrap).create_topic("seq", partitions=1, replication_factor=1)
    pid = 4242

    def batch(seq: int, n: int = 2) -> bytes:
        return record_batch.build_batch([(None, f"s{seq + i}".encode(), 1) for i in range(n)], producer_id=pid,
                                        producer_epoch=0, base_sequence=seq)

    first = produce_raw(broker, "seq", batch(0))
    again = produce_raw(broker, "seq", batch(0))
    gap = produce_raw(broker, "seq", batch(5))
    nxt = produce_raw(broker, "seq", batch(2))
    assert (first.error_code, first.base_offset) == (0, 0)
    assert (again.error_code, again.base_offset) == (0, 0)           # the duplicate: original offset
    assert gap.error_code == 45                                        # OUT_OF_ORDER_SEQUENCE_NUMBER
    assert (nxt.error_code, nxt.base_offset) == (0, 2)
    assert [r.value for r in read_all(broker.bootstrap, "seq", 4)] == [b"s0", b"s1", b"s2", b"s3"]
    # The dedup state is rebuilt from the log after a kill -9: the same retry is still a duplicate.
    broker.kill()
    broker.start()
    # Its new registration briefly takes the partition offline, then gives it back (a raw call does not retry).
    after = wait_for(lambda: (lambda r: r if r.error_code != 6 else None)(produce_raw(broker, "seq", batch(2))),
                     15, "the restarted broker to lead seq-0 again")
    assert (after.error_code, after.base_offset) == (0, 2)
    assert [r.value for r in read_all(broker.bootstrap, "seq", 4)] == [b"s0", b"s1", b"s2", b"s3"]


def test_a_clean_stop_leaves_the_producer_state_and_the_restart_loads_it(fresh_cluster):
    """SIGTERM writes each partition's producer state next to its log (<offset>.snapshot); the restart loads it
    instead of replaying the log and still answers a retry with its original offset; the next SIGTERM rewrites
    only the partition that changed."""
    broker = fresh_cluster(1).brokers[1].start()
    Admin(broker.bootstrap).create_topic("snap", partitions=2, replication_factor=1)
    pid = 4343

    def batch(seq: int) -> bytes:
        return record_batch.build_batch([(None, f"s{seq}".encode(), 1)], producer_id=pid, producer_epoch=0,
                                        base_sequence=seq)

    for seq in range(3):
        assert produce_raw(broker, "snap", batch(seq)).error_code == 0
    assert broker.terminate() == 0
    snapshots = {p.parent.name: p.name for p in broker.data_dir.glob("snap-*/*.snapshot")}
    assert snapshots == {"snap-0": f"{3:020d}.snapshot", "snap-1": f"{0:020d}.snapshot"}
    broker.start()
    after = wait_for(lambda: (lambda r: r if r.error_code != 6 else None)(produce_raw(broker, "snap", batch(2))),
                     15, "the restarted broker to lead snap-0 again")
    assert (after.error_code, after.base_offset) == (0, 2)           # the duplicate, known from the snapshot
    assert produce_raw(broker, "snap", batch(3)).base_offset == 3
    idle = broker.data_dir / "snap-1" / f"{0:020d}.snapshot"
    idle_mtime = idle.stat().st_mtime_ns
    assert broker.terminate() == 0
    snapshots = {p.parent.name: p.name for p in broker.data_dir.glob("snap-*/*.snapshot")}
    assert snapshots == {"snap-0": f"{4:020d}.snapshot", "snap-1": f"{0:020d}.snapshot"}
    assert idle.stat().st_mtime_ns == idle_mtime                      # unchanged: not rewritten
    assert "producer_snapshot_ignored" not in broker.log()
    broker.start()
    assert [r.value for r in read_all(broker.bootstrap, "snap", 4, partition=0)] == [b"s0", b"s1", b"s2", b"s3"]


def test_no_duplicate_and_order_kept_across_a_leader_kill(running_cluster):
    """Retries across a kill -9 of the leader land once each, in order (the dedup state moved with the log)."""
    cluster = running_cluster(3, {"min.insync.replicas": 2})
    brokers = cluster.brokers
    Admin(brokers[1].bootstrap).create_topic("idem", partitions=1, replication_factor=3)
    leader = metadata(brokers[1], ["idem"]).topics[0].partitions[0].leader_id
    survivor = next(b for b in brokers.values() if b.broker_id != leader)
    acked: list[int] = []
    errors: list[BaseException] = []
    hops: list[str] = []   # the producer's retries and redirects (trace hook)
    stop = threading.Event()

    def produce():
        with Producer(survivor.bootstrap, acks="all", linger_ms=1, retry_backoff_ms=20,
                      tracer=lambda e: hops.append(e.kind) if e.api == "Produce" else None) as p:
            i = 0
            while not stop.is_set() and i < 100_000:
                futures = [(n, p.send("idem", str(n).encode())) for n in range(i, i + 20)]
                i += 20
                for n, f in futures:
                    try:
                        f.result(timeout=60)
                        acked.append(n)
                    except Exception as e:  # noqa: BLE001 -- counted and reported below
                        errors.append(e)

    t = threading.Thread(target=produce)
    t.start()
    wait_for(lambda: len(acked) >= 300, 30, "300 records acknowledged before the kill")
    brokers[leader].kill()
    wait_metadata(survivor, lambda m: m.topics[0].partitions[0].leader_id not in (leader, -1), 15,
                  "a new leader")
    count = len(acked)
    wait_for(lambda: len(acked) >= count + 300, 30, "300 more acknowledged after the election")
    stop.set()
    t.join(60)
    got = read_all(survivor.bootstrap, "idem", len(acked), timeout=30)
    values = [int(r.value) for r in got]
    retries = sum(k in ("retry", "redirect", "error") for k in hops)
    print(f"acked {len(acked)}, stored {len(values)}, failed {len(errors)}, "
          f"duplicates {len(values) - len(set(values))}, produce retries/redirects/errors {retries}")
    assert retries > 0, "the kill hit no request in flight: the test proved nothing about retries"
    assert not errors, errors[:3]
    assert set(acked) <= set(values), "an acknowledged record is missing"
    assert len(values) == len(set(values)), "a record was stored twice"
    assert values == sorted(values), "the partition's order was not kept"
