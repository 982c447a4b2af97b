"""The client library across a leader kill -9, with three real broker processes.

1. A Consumer polling throughout a leader kill reads every acknowledged record exactly once, at
   consecutive offsets, and its trace shows it went through the failover path.
2. A Producer whose cache names a leader that has since become a follower is redirected by that
   broker's leader hint (KIP-951) straight to the new leader, without a Metadata request.
3. Thousands of keyed records queued across a leader kill keep their per-partition order (the
   idempotent producer has one batch per partition in flight and retries it unchanged).

Every wait is a condition polled against a deadline; every loop is bounded in count and time.
Each test prints what it counted (run with -s to see it).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from functools import partial

import pytest

from client import Admin, Consumer, Producer
from client.partitioner import partition_for_key
from client.trace import TraceEvent
from raftka_testing.cluster import create_ready, partitions, read_all
from tests.integration.cluster import BrokerProcess, Cluster, metadata, wait_for, wait_metadata

pytestmark = pytest.mark.integration

# min ISR 2 (acks=all survives one dead broker) and short timers so a dead broker is fenced quickly.
CONFIG = {"min.insync.replicas": 2, "replica.lag.time.max.ms": 2000, "broker.session.timeout.ms": 2000}
FAILOVER_KINDS = ("error", "retry", "redirect")


# ---- helpers ------------------------------------------------------------------------------------


def pick_victim(cluster: Cluster, controller: int, topic: str) -> tuple[BrokerProcess, dict[int, object]]:
    """A broker leading at least one partition of ``topic`` (not the controller if possible: its kill
    then needs no quorum election, which keeps the test short), and the partitions before the kill."""
    parts = partitions(cluster.brokers[controller], topic)
    leaders = sorted({p.leader_id for p in parts.values()}, key=lambda b: (b == controller, b))
    return cluster.brokers[leaders[0]], parts


def wait_new_leaders(watcher: BrokerProcess, topic: str, before: dict[int, object], victim: int,
                     timeout: float = 20.0, pump=None) -> dict[int, object]:
    """Wait until ``watcher`` shows a new leader (not ``victim``, newer epoch) for each partition
    ``victim`` led; ``pump`` (if given) runs between checks, e.g. to keep a consumer polling."""
    moved = [n for n, p in before.items() if p.leader_id == victim]

    def elected():
        if pump is not None:
            pump()
        now = partitions(watcher, topic)
        if now is None:
            return None
        if all(now[n].leader_id not in (victim, -1) and now[n].leader_epoch > before[n].leader_epoch for n in moved):
            return now
        return None
    return wait_for(elected, timeout, f"new leaders for {topic} partitions {moved} after broker {victim} was killed",
                    0.01)


class NumberedProducer(threading.Thread):
    """Sends 0, 1, 2, ... (as text) round-robin over the partitions, paced, until stopped; keeps every
    outcome. Paced with callbacks rather than waiting on each chunk, so the partitions of live leaders
    keep getting records while the killed leader's partitions fail over."""

    def __init__(self, bootstrap: str, topic: str, count: int, interval_s: float = 0.002,
                 max_records: int = 100_000):
        super().__init__(name="numbered-producer", daemon=True)
        self.topic, self.count, self.interval_s, self.max_records = topic, count, interval_s, max_records
        self.producer = Producer(bootstrap, acks="all", linger_ms=2, request_timeout_ms=10000,
                                 delivery_timeout_ms=60000, retry_backoff_ms=20, retry_backoff_max_ms=500)
        self.lock = threading.Lock()
        self.acked: dict[int, dict[bytes, int]] = {p: {} for p in range(count)}   # value -> offset
        self.failed: list[tuple[bytes, str]] = []
        self.sent = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        for n in range(self.max_records):
            if self._stopping.is_set():
                break
            value = str(n).encode()
            p = n % self.count
            self.producer.send(self.topic, value, partition=p).add_done_callback(partial(self._done, p, value))
            self.sent += 1
            self._stopping.wait(self.interval_s)

    def _done(self, p: int, value: bytes, future) -> None:
        try:
            md = future.result()
        except Exception as e:  # noqa: BLE001 -- counted and asserted on by the test
            with self.lock:
                self.failed.append((value, repr(e)))
            return
        with self.lock:
            self.acked[p][value] = md.offset

    def acked_count(self, only: set[int] | None = None) -> int:
        with self.lock:
            return sum(len(v) for p, v in self.acked.items() if only is None or p in only)

    def finish(self, timeout: float = 60.0) -> None:
        self._stopping.set()
        self.join(10)
        self.producer.close(timeout)


def failover_events(events: list[TraceEvent], topic: str, victim: BrokerProcess, moved: set[int]) -> list[TraceEvent]:
    """The consumer's error / retry / redirect events about the killed leader or its partitions."""
    def about(e: TraceEvent) -> bool:
        return e.address == victim.bootstrap or e.broker_id == victim.broker_id or any(
            f"{topic}-{n}" in e.detail for n in moved)
    return [e for e in events if e.kind in FAILOVER_KINDS and e.api in ("Fetch", "ListOffsets") and about(e)]


# ---- 1. a consumer across a leader kill ----------------------------------------------------------------


KEEP_GOING_S = 3.0


def three_partitions_and_a_victim(running_cluster, topic: str):
    """Three brokers, an RF 3 topic of 3 partitions, the controller, the leader to kill (not the
    controller), the partitions it leads, and a surviving broker to watch the metadata from."""
    cluster = running_cluster(3, CONFIG)
    controller = cluster.wait_controller(timeout=15, alive={1, 2, 3})
    create_ready(cluster, topic, 3)
    victim, before = pick_victim(cluster, controller, topic)
    moved = {n for n, p in before.items() if p.leader_id == victim.broker_id}
    watcher = cluster.brokers[controller] if controller != victim.broker_id else \
        next(b for b in cluster.brokers.values() if b is not victim)
    return cluster, controller, victim, before, moved, watcher


def test_consumer_reads_every_acked_record_once_across_a_leader_kill(running_cluster):
    topic = "failover"
    cluster, controller, victim, before, moved, watcher = three_partitions_and_a_victim(running_cluster, topic)

    events: list[TraceEvent] = []
    consumed: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(3)}
    consumer = Consumer(cluster.bootstrap, topic, auto_offset_reset="earliest", fetch_max_wait_ms=100,
                        request_timeout_ms=5000, retry_backoff_ms=20, retry_backoff_max_ms=200,
                        tracer=events.append)

    def poll_once(timeout: float = 0.1) -> None:
        for r in consumer.poll(timeout):
            consumed[r.partition].append((r.offset, r.value))

    def pump(condition, timeout: float, what: str):
        """Keep the consumer polling until ``condition()`` holds."""
        def step():
            poll_once()
            return condition()
        return wait_for(step, timeout, what, 0)

    def consumed_count(only: set[int] | None = None) -> int:
        return sum(len(v) for p, v in consumed.items() if only is None or p in only)

    producer = NumberedProducer(cluster.bootstrap, topic, 3)
    producer.start()
    try:
        pump(lambda: producer.acked_count() >= 300 and all(len(v) >= 50 for v in consumed.values()), 30,
             "300 acknowledged and 50 consumed per partition before the kill")
        acked_at_kill, consumed_at_kill = producer.acked_count(), consumed_count()
        moved_consumed_at_kill = consumed_count(moved)
        killed_at, events_at_kill = time.monotonic(), len(events)
        victim.kill()
        after = wait_new_leaders(watcher, topic, before, victim.broker_id, pump=poll_once)
        elected_at = time.monotonic()
        elected_s = elected_at - killed_at
        acked_at_election = producer.acked_count()
        # A few seconds more under the new leader(s): producing and consuming on every partition.
        pump(lambda: time.monotonic() - elected_at >= KEEP_GOING_S
             and producer.acked_count() >= acked_at_election + 300, KEEP_GOING_S + 30,
             f"{KEEP_GOING_S} s and 300 acknowledgements after the election")
        # Only reported here: that the killed leader's partitions resume while the other partitions
        # still have data is asserted by the next test.
        moved_consumed_while_producing = consumed_count(moved) - moved_consumed_at_kill
        events_at_stop = len(events)
    finally:
        producer.finish()
    acked = {p: dict(v) for p, v in producer.acked.items()}
    failed = list(producer.failed)
    acked_values = {p: set(v) for p, v in acked.items()}
    try:
        pump(lambda: all(acked_values[p] <= {v for _, v in consumed[p]} for p in range(3)), 30,
             "the consumer to have every acknowledged record")
        for r in consumer.poll(0.5):   # anything beyond (a duplicate) shows up too
            consumed[r.partition].append((r.offset, r.value))
    finally:
        consumer.close()

    seen = failover_events(events, topic, victim, moved)
    kinds = Counter(e.kind for e in seen)
    refreshes = sum(e.api == "Metadata" and e.kind == "request" for e in events[events_at_kill:events_at_stop])
    print(f"\n[consumer failover] killed broker {victim.broker_id} (controller {controller}) leading partitions "
          f"{sorted(moved)} after {acked_at_kill} acks / {consumed_at_kill} consumed; new leaders "
          f"{ {n: after[n].leader_id for n in sorted(moved)} } after {elected_s * 1000:.0f} ms; sent {producer.sent}, "
          f"acked {sum(map(len, acked.values()))} {[len(acked[p]) for p in range(3)]}, failed {len(failed)}, "
          f"consumed {consumed_count()} {[len(consumed[p]) for p in range(3)]}; consumer error/retry/redirect events "
          f"for the killed leader {dict(kinds)}; killed partitions consumed while the producer still ran after "
          f"the kill: {moved_consumed_while_producing} (consumer Metadata requests meanwhile: {refreshes})")
    assert not failed, f"sends failed although new leaders took over: {failed[:5]}"
    for p in range(3):
        offsets = [o for o, _ in consumed[p]]
        values = [v for _, v in consumed[p]]
        assert offsets == list(range(len(offsets))), (
            f"partition {p}: offsets are not 0, 1, 2, ... (first break at index "
            f"{next((i for i, o in enumerate(offsets) if o != i), None)})")
        dup = [v for v, c in Counter(values).items() if c > 1]
        assert not dup, f"partition {p}: values consumed more than once: {dup[:5]}"
        at = dict(consumed[p])
        missing = sorted(acked_values[p] - set(values), key=int)
        assert not missing, f"partition {p}: {len(missing)} acknowledged value(s) never consumed: {missing[:5]}"
        wrong = [(v, o) for v, o in acked[p].items() if at.get(o) != v]
        assert not wrong, f"partition {p}: acknowledged offset holds another value: {wrong[:5]}"
    assert seen, ("the consumer's trace shows no error/retry for the killed leader's partitions: the kill did not "
                  "go through its failover path, so this test proved nothing")


RESUME_BOUND_S = 5.0   # far more than a metadata refresh needs (the new leader is already elected)


def test_consumer_moves_to_the_new_leader_while_other_partitions_still_have_data(running_cluster):
    topic = "resume"
    cluster, controller, victim, before, moved, watcher = three_partitions_and_a_victim(running_cluster, topic)
    events: list[TraceEvent] = []
    consumed = Counter()   # partition -> records consumed

    producer = NumberedProducer(cluster.bootstrap, topic, 3)
    producer.start()
    try:
        with Consumer(cluster.bootstrap, topic, auto_offset_reset="earliest", fetch_max_wait_ms=100,
                      request_timeout_ms=5000, retry_backoff_ms=20, retry_backoff_max_ms=200,
                      tracer=events.append) as consumer:
            def poll_once() -> None:
                consumed.update(r.partition for r in consumer.poll(0.1))

            def pump(condition, timeout: float, what: str):
                return wait_for(lambda: (poll_once(), condition())[1], timeout, what, 0)

            pump(lambda: all(consumed[p] >= 50 for p in range(3)), 30, "50 consumed per partition before the kill")
            victim.kill()
            wait_new_leaders(watcher, topic, before, victim.broker_id, pump=poll_once)
            elected_at, at_election, mark = time.monotonic(), sum(consumed[p] for p in moved), len(events)
            try:
                # The producer still writes to every partition: the killed leader's partitions must resume too.
                pump(lambda: sum(consumed[p] for p in moved) >= at_election + 50, RESUME_BOUND_S,
                     f"the consumer to read 50 more records of partitions {sorted(moved)} from their new leader")
            finally:
                tail = events[mark:]
                print(f"\n[consumer resume] broker {victim.broker_id} killed, partitions {sorted(moved)} moved; in the "
                      f"{time.monotonic() - elected_at:.1f} s after the election the consumer read "
                      f"{sum(consumed[p] for p in moved) - at_election} more of them (others "
                      f"{sum(consumed[p] for p in range(3) if p not in moved)} in total), made "
                      f"{sum(e.kind == 'error' and e.address == victim.bootstrap for e in tail)} failed Fetches to the "
                      f"dead broker and {sum(e.kind == 'request' and e.api == 'Metadata' for e in tail)} Metadata "
                      f"requests; producer acked {producer.acked_count(moved)} on those partitions")
    finally:
        producer.finish()


# ---- 2. a leader hint redirects a stale producer without a Metadata request ------------------------------


def test_a_stale_producer_follows_the_leader_hint_without_asking_for_metadata(running_cluster):
    cluster = running_cluster(3, CONFIG)
    cluster.wait_controller(timeout=15, alive={1, 2, 3})
    topic = "redirect"
    create_ready(cluster, topic, 1)
    events: list[TraceEvent] = []
    with Producer(cluster.bootstrap, acks="all", linger_ms=0, retry_backoff_ms=20, request_timeout_ms=10000,
                  tracer=events.append) as producer:
        first = producer.send(topic, b"before", partition=0).result(timeout=30)
        assert first.offset == 0
        # The leader that stored it is the one the producer's cache now names.
        leader = cluster.brokers[next(e.broker_id for e in events if e.api == "Produce" and e.kind == "response")]
        old = partitions(leader, topic)[0]
        assert old.leader_id == leader.broker_id
        others = [b for b in cluster.brokers.values() if b is not leader]

        # Move the leadership behind the producer's back: kill -9 L, a new leader L2 is elected, L
        # restarts and rejoins the ISR as a follower. The producer sends nothing meanwhile.
        leader.kill()
        moved = wait_metadata(others[0], lambda m: m.topics[0].partitions[0].leader_id not in (leader.broker_id, -1),
                              20, f"a leader other than broker {leader.broker_id}", [topic]).topics[0].partitions[0]
        new_leader = cluster.brokers[moved.leader_id]
        leader.start()
        for b in cluster.brokers.values():   # every broker, L itself too: L knows it follows L2
            wait_metadata(b, lambda m: (p := m.topics[0].partitions[0]).leader_id == new_leader.broker_id
                          and leader.broker_id in p.isr, 30,
                          f"broker {leader.broker_id} back in the ISR under leader {new_leader.broker_id}", [topic])
        mark = len(events)
        second = producer.send(topic, b"after", partition=0).result(timeout=30)
    tail = events[mark:]
    trace = "\n".join(f"  {e.kind:<8} {e.api:<14} {e.address} (broker {e.broker_id}): {e.detail}" for e in tail)
    print(f"\n[stale redirect] leader {leader.broker_id} (epoch {old.leader_epoch}) killed, broker "
          f"{new_leader.broker_id} elected (epoch {moved.leader_epoch}), {leader.broker_id} back as follower; "
          f"second record stored at offset {second.offset}; trace of the second send:\n{trace}")

    redirect = next((i for i, e in enumerate(tail) if e.kind == "redirect" and e.api == "Produce"), None)
    assert redirect is not None, "no Produce redirect: the stale leader's hint was not followed"
    assert tail[redirect].address == leader.bootstrap and tail[redirect].broker_id == leader.broker_id, \
        f"the redirect must come from the old leader {leader.broker_id}: {tail[redirect]}"
    assert "NOT_LEADER_OR_FOLLOWER" in tail[redirect].detail and f"broker {new_leader.broker_id}" in tail[redirect].detail
    first_request = next(e for e in tail if e.kind == "request" and e.api == "Produce")
    assert first_request.address == leader.bootstrap, f"the first attempt must go to the cached leader: {first_request}"
    stored = next((i for i, e in enumerate(tail) if i > redirect and e.kind == "response" and e.api == "Produce"),
                  None)
    assert stored is not None, "no successful Produce after the redirect"
    between = tail[redirect + 1:stored]
    requests = [e for e in between if e.kind == "request"]
    assert [e.api for e in requests] == ["Produce"] and requests[0].address == new_leader.bootstrap, (
        f"after the redirect exactly one request, a Produce to the new leader {new_leader.bootstrap}, "
        f"must come before the success; got {[(e.api, e.address) for e in requests]}")
    assert not any(e.api == "Metadata" for e in tail[:stored]), "a Metadata request was made: the hint was not enough"
    assert tail[stored].broker_id == new_leader.broker_id and "offset 1" in tail[stored].detail, tail[stored]
    assert second.offset == 1
    got = read_all(cluster.bootstrap, topic, {0: 2})
    assert got[0] == [(0, b"before"), (1, b"after")], f"stored {got[0]}: the record must be stored exactly once"


# ---- 3. per-partition order across a leader kill with 5 batches in flight per partition ------------------


def max_in_flight_per_partition(hops: list[TraceEvent]) -> int:
    """The most Produce batches of one partition sent and not yet answered at once, read from the
    trace up to the first failure (request details name "topic-p (n record(s))", answers "topic-p stored")."""
    outstanding: Counter = Counter()
    most = 0
    for e in hops:
        if e.kind in FAILOVER_KINDS:
            break
        parts = [d.split(" ")[0] for d in e.detail.split(", ") if "record(s)" in d or "stored" in d]
        for tp in parts:
            outstanding[tp] += 1 if e.kind == "request" else -1
            most = max(most, outstanding[tp])
    return most


RECORDS = 5000
KEYS = [f"key-{k}".encode() for k in range(12)]


def test_order_is_kept_with_5_in_flight_per_partition_across_a_leader_kill(running_cluster):
    topic = "ordered"
    cluster, controller, victim, before, moved, watcher = three_partitions_and_a_victim(running_cluster, topic)
    part_of = [partition_for_key(KEYS[i % len(KEYS)], 3) for i in range(RECORDS)]
    assert set(part_of) == {0, 1, 2}, "the keys must spread over all 3 partitions"
    sent = {p: [i for i in range(RECORDS) if part_of[i] == p] for p in range(3)}

    hops: list[TraceEvent] = []
    started = time.monotonic()
    # Small batches: many of them queued per partition, up to 5 of each in flight on one stream.
    with Producer(cluster.bootstrap, acks="all", linger_ms=5, batch_size=1024, request_timeout_ms=10000,
                  retry_backoff_ms=20, retry_backoff_max_ms=500,
                  tracer=lambda e: hops.append(e) if e.api == "Produce" else None) as producer:
        futures = [producer.send(topic, str(i).encode(), key=KEYS[i % len(KEYS)]) for i in range(RECORDS)]
        queued_s = time.monotonic() - started
        wait_for(lambda: sum(f.done() for f in futures) >= RECORDS // 10, 30, f"{RECORDS // 10} records answered",
                 0.002)
        done_at_kill = sum(f.done() for f in futures)
        moved_pending_at_kill = sum(not futures[i].done() for p in moved for i in sent[p])
        killed_at = time.monotonic()
        victim.kill()
        after = wait_new_leaders(watcher, topic, before, victim.broker_id)
        elected_s = time.monotonic() - killed_at
        outcomes = []
        for i, f in enumerate(futures):
            try:
                outcomes.append(f.result(timeout=max(60 - (time.monotonic() - started), 1)))
            except Exception as e:  # noqa: BLE001 -- collected and asserted on below
                outcomes.append(e)
    produced_s = time.monotonic() - started
    failed = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
    acked = {p: {i: outcomes[i].offset for i in sent[p] if not isinstance(outcomes[i], BaseException)}
             for p in range(3)}
    got = read_all(cluster.bootstrap, topic, {p: (max(acked[p].values()) + 1 if acked[p] else 0) for p in range(3)})
    retries = Counter(e.kind for e in hops if e.kind in FAILOVER_KINDS)
    pipelined = max_in_flight_per_partition(hops)
    print(f"\n[order] at most {pipelined} batches of one partition in flight; {RECORDS} keyed records queued in {queued_s * 1000:.0f} ms; broker {victim.broker_id} "
          f"(leader of {sorted(moved)}) killed after {done_at_kill} answered, {moved_pending_at_kill} of its "
          f"partitions' records still pending; new leaders { {n: after[n].leader_id for n in sorted(moved)} } after "
          f"{elected_s * 1000:.0f} ms; all answered after {produced_s:.2f} s; failed {len(failed)}; per partition "
          f"sent {[len(sent[p]) for p in range(3)]}, acked {[len(acked[p]) for p in range(3)]}, consumed "
          f"{[len(got[p]) for p in range(3)]}; producer error/retry/redirect events {dict(retries)}")
    assert 2 <= pipelined <= 5, f"{pipelined} batches of one partition in flight at most: want 2..5 (pipelining)"
    assert moved_pending_at_kill > 0, "the killed leader's partitions had nothing in flight: the test proved nothing"
    assert retries, "the producer never retried: the kill hit nothing in flight"
    assert not failed, f"sends failed although new leaders took over: {failed[:5]}"
    for p in range(3):
        offsets = [o for o, _ in got[p]]
        numbers = [int(v) for _, v in got[p]]
        assert offsets == list(range(len(offsets))), f"partition {p}: offsets are not 0, 1, 2, ..."
        dup = [n for n, c in Counter(numbers).items() if c > 1]
        assert not dup, f"partition {p}: {len(dup)} record(s) stored more than once: {dup[:5]}"
        missing = sorted(set(acked[p]) - set(numbers))
        assert not missing, f"partition {p}: {len(missing)} acknowledged record(s) missing: {missing[:5]}"
        out_of_order = next((k for k in range(1, len(numbers)) if numbers[k] < numbers[k - 1]), None)
        assert out_of_order is None, (f"partition {p}: {numbers[out_of_order]} stored after "
                                      f"{numbers[out_of_order - 1]}, the reverse of the send order")
        assert numbers == sent[p], f"partition {p}: stored records differ from those sent to it"
        at = dict(got[p])
        wrong = [(i, o) for i, o in acked[p].items() if at.get(o) != str(i).encode()]
        assert not wrong, f"partition {p}: an acknowledged offset holds another record: {wrong[:5]}"


# ---- 4. a topic the cache lost while its batches wait is asked for again ----------------------------------


def test_queued_batches_find_their_topic_again_after_the_cache_dropped_it(single_broker):
    """Found by the chaos soak: after kill -9 of all three brokers, a restarted broker still replaying
    its journal answered UNKNOWN_TOPIC_OR_PARTITION for a producer's topic; the cache dropped it and
    the sender refreshed only the topics still cached, so that producer's batches waited until they
    expired. Here the same sequence with a deleted and re-created topic: the batch must be delivered."""
    topic, other = "dropped-from-cache", "still-cached"
    admin = Admin(single_broker.bootstrap)
    for name in (topic, other):
        admin.create_topic(name, partitions=1, replication_factor=1)
    with Producer(single_broker.bootstrap, acks="all", linger_ms=2000, delivery_timeout_ms=20000,
                  retry_backoff_ms=20, retry_backoff_max_ms=200) as producer:
        for name in (topic, other):   # both cached (with only one, a refresh would ask for all topics)
            assert producer.send(name, b"first").result(timeout=10).offset == 0
        pending = producer.send(topic, b"second")                             # waits out its linger
        admin.delete_topic(topic)
        producer._client.refresh_metadata([topic])   # the UNKNOWN_TOPIC_OR_PARTITION answer: dropped
        assert topic not in producer._client.metadata.topics and other in producer._client.metadata.topics
        admin.create_topic(topic, partitions=1, replication_factor=1)
        stored = pending.result(timeout=15)
    assert (stored.topic, stored.partition, stored.offset) == (topic, 0, 0)
    got = read_all(single_broker.bootstrap, topic, {0: 1})
    assert got[0] == [(0, b"second")]
