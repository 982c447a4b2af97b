"""W1-W3 through the Kafka-protocol port, with librdkafka (confluent-kafka) as the client.

The same workloads as bench/run.py's gRPC ones, on topics of their own: W1 one record at a time
(acks=all, 1 in flight, linger 0), W2 as fast as the producer takes them (acks=all, idempotent,
linger 5 ms, 5 in flight), W3 W2's topic from the beginning with one consumer (assign, no group).
"""

from __future__ import annotations

import time

import confluent_kafka

from client.perf import LatencyStats

VALUE_SIZE = 100
VALUE = b"x" * VALUE_SIZE


def produce_sync(bootstrap: str, topic: str, records: int) -> dict[str, float]:
    stats = LatencyStats(records)
    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                                  "max.in.flight.requests.per.connection": 1, "enable.idempotence": False})
    p.produce(topic, VALUE)
    if p.flush(30) != 0:   # warm up: metadata, connections
        raise RuntimeError("KW1: the warm-up record was not acknowledged")
    started = time.perf_counter()
    for _ in range(records):
        sent = time.perf_counter()
        p.produce(topic, VALUE)
        if p.flush(30) != 0:
            raise RuntimeError("KW1: a record was not acknowledged within 30 s")
        stats.record((time.perf_counter() - sent) * 1000)
    elapsed = time.perf_counter() - started
    p50, p99 = stats.percentiles(0.5, 0.99)
    return {"kw1_p50_ms": p50, "kw1_p99_ms": p99, "kw1_records_per_s": records / elapsed}


def produce_pipelined(bootstrap: str, topic: str, records: int, chunk: int = 1000) -> dict[str, float]:
    """As fast as librdkafka takes them: its batch call queues ``chunk`` records per Python call, so the
    figure is the cluster's and librdkafka's, not the Python loop's (one produce() call each cost
    ~5 us of the client's own CPU, a ceiling near 175k/s on this machine)."""
    failed: list[str] = []

    def delivered(err, _msg) -> None:
        if err is not None:
            failed.append(str(err))

    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                                  "linger.ms": 5, "batch.size": 524288, "queue.buffering.max.messages": 1000000,
                                  "on_delivery": delivered})
    p.produce(topic, VALUE)
    p.flush(30)
    messages = [{"value": VALUE}] * chunk
    started = time.perf_counter()
    sent = 0
    while sent < records:
        batch = messages if records - sent >= chunk else messages[:records - sent]
        try:
            sent += p.produce_batch(topic, batch)
        except BufferError:
            p.poll(0.01)
        p.poll(0)
    if p.flush(120) != 0:
        raise RuntimeError("KW2: records left unacknowledged after 120 s")
    elapsed = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"KW2: {len(failed)} of {records} records failed, the first with {failed[0]}")
    return {"kw2_records_per_s": records / elapsed, "kw2_mb_per_s": records * VALUE_SIZE / elapsed / 1e6}


def consume_all(bootstrap: str, topic: str, partitions: int, records: int, timeout: float = 120) -> dict[str, float]:
    # fetch.queue.backoff.ms (librdkafka 2.x, 1000 by default): once more than queued.min.messages wait
    # in the client, its fetcher pauses that long; this Python loop drains slower than the brokers
    # serve, so at 500k records W3 was 1 s stalls after every ~130k records (150k records/s).
    c = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-unused",
                                  "enable.auto.commit": False, "fetch.max.bytes": 52428800,
                                  "fetch.queue.backoff.ms": 10})
    try:
        c.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                  for p in range(partitions)])
        count = nbytes = 0
        started = None
        deadline = time.monotonic() + timeout
        while count < records:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"KW3: read {count} of {records} records in {timeout} s")
            # consume() returns once it has num_messages or its timeout passed: ask for no more than are left
            got = c.consume(num_messages=min(10000, records - count), timeout=1.0)
            if started is None and got:
                # Timed from the first record: librdkafka spends ~0.4 s before its first ListOffsets
                # (its broker threads' own scheduling, measured with debug=protocol), whatever the broker.
                started = time.perf_counter()
            for m in got:
                if m.error() is None:
                    count += 1
                    nbytes += len(m.value())
        elapsed = time.perf_counter() - started
    finally:
        c.close()
    return {"kw3_records_per_s": count / elapsed, "kw3_mb_per_s": nbytes / elapsed / 1e6}
