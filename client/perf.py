"""kclient perf produce / consume: Kafka's kafka-producer-perf-test and kafka-consumer-perf-test.

The pieces that decide (latency statistics, the throttle, the output lines) take the
time as an argument and do no I/O, so tests drive them directly; ``run_producer`` and
``run_consumer`` are the loops around a real Producer and Consumer.

Output is Kafka's, line for line (org.apache.kafka.tools.ProducerPerformance and
ConsumerPerformance), so a run here reads like a run there.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from array import array
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Callable, TextIO

from client.consumer import Consumer
from client.errors import KafkaTimeoutError
from client.producer import Producer, parse_acks

__all__ = ["LatencyStats", "Throttler", "ProducerStats", "SettingError", "format_progress", "format_summary",
           "format_consumer", "producer_prop", "producer_settings", "run_producer", "run_consumer"]

MB = 1024 * 1024
PERCENTILES = (0.5, 0.95, 0.99, 0.999)
MIN_SLEEP_S = 0.002  # Kafka's ThroughputThrottler.MIN_SLEEP_NS: shorter sleeps cost more than they pace
CONSUMER_HEADER = ("start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, "
                   "rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec")


class SettingError(ValueError):
    """A producer setting the Producer itself refused (enable.idempotence=true with acks=1, ...): exit 2."""


# ---- latency statistics -------------------------------------------------------------


@dataclass
class LatencyStats:
    """Latencies of acknowledged records: count, sum, max and, unless ``keep_samples`` is off, every sample.

    Kafka's ProducerPerformance keeps at most 500,000 samples. Keeping all of them, as microseconds in
    an int array (4 bytes each: 4 MB a million records), makes the percentiles exact; preallocating
    ``expected`` slots keeps list growth off the sender thread, where record() runs.
    """
    expected: int = 0
    keep_samples: bool = True   # False: a progress window, which reports only the average and the max
    count: int = 0
    sum_us: int = 0
    max_us: int = 0
    samples: array = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.samples = array("i", [0]) * (self.expected if self.keep_samples else 0)

    def record(self, latency_ms: float) -> None:
        us = int(latency_ms * 1000)
        if self.keep_samples:
            if self.count < len(self.samples):
                self.samples[self.count] = us
            else:
                self.samples.append(us)
        self.count += 1
        self.sum_us += us
        self.max_us = max(self.max_us, us)

    @property
    def avg_ms(self) -> float:
        return self.sum_us / self.count / 1000 if self.count else 0.0

    @property
    def max_ms(self) -> float:
        return self.max_us / 1000

    def percentiles(self, *ps: float) -> list[float]:
        """Kafka's rule, sorted[int(count * p)], in ms (0 for each when nothing was recorded)."""
        if not self.count:
            return [0.0] * len(ps)
        ordered = sorted(self.samples[:self.count])
        return [ordered[min(int(self.count * p), self.count - 1)] / 1000 for p in ps]


# ---- throttle -----------------------------------------------------------------------


@dataclass(frozen=True)
class Throttler:
    """Kafka's ThroughputThrottler as a schedule: record n is due at ``start + n / target``.

    Kafka sleeps 1/target per send once the average rate is above target; sleeping until the
    schedule comes out the same on average, and with ``now`` passed in it needs no clock.
    """
    target: float   # records per second; negative: unthrottled (Kafka's --throughput -1)
    start: float

    def pause(self, sent: int, now: float) -> float:
        """Seconds to sleep after ``sent`` records at ``now`` (0 when on schedule or unthrottled)."""
        if self.target < 0:
            return 0.0
        ahead = self.start + sent / self.target - now
        return ahead if ahead >= MIN_SLEEP_S else 0.0  # a short lead waits for the next send, not lost


# ---- output lines -------------------------------------------------------------------


def format_progress(window: LatencyStats, elapsed_s: float, record_size: int) -> str:
    """ProducerPerformance's line every reporting interval (printWindow)."""
    return (f"{window.count} records sent, {_rate(window.count, elapsed_s):.1f} records/sec "
            f"({_rate(window.count * record_size, elapsed_s) / MB:.2f} MB/sec), "
            f"{window.avg_ms:.1f} ms avg latency, {window.max_ms:.1f} ms max latency.")


def format_summary(stats: LatencyStats, elapsed_s: float, record_size: int) -> str:
    """ProducerPerformance's last line (printTotal): percentiles as whole ms, like Kafka's int samples."""
    p50, p95, p99, p999 = (int(v) for v in stats.percentiles(*PERCENTILES))
    return (f"{stats.count} records sent, {_rate(stats.count, elapsed_s):f} records/sec "
            f"({_rate(stats.count * record_size, elapsed_s) / MB:.2f} MB/sec), "
            f"{stats.avg_ms:.2f} ms avg latency, {stats.max_ms:.2f} ms max latency, "
            f"{p50} ms 50th, {p95} ms 95th, {p99} ms 99th, {p999} ms 99.9th.")


def format_consumer(start_ms: int, end_ms: int, nbytes: int, messages: int) -> str:
    """ConsumerPerformance's header and its one CSV line; no consumer groups, so no rebalance time."""
    elapsed_s = (end_ms - start_ms) / 1000
    rebalance_ms = 0
    fetch_s = elapsed_s - rebalance_ms / 1000
    mb = nbytes / MB
    values = (f"{_wall(start_ms)}, {_wall(end_ms)}, {mb:.4f}, {_rate(mb, elapsed_s):.4f}, {messages}, "
              f"{_rate(messages, elapsed_s):.4f}, {rebalance_ms}, {int(fetch_s * 1000)}, "
              f"{_rate(mb, fetch_s):.4f}, {_rate(messages, fetch_s):.4f}")
    return f"{CONSUMER_HEADER}\n{values}"


def _rate(amount: float, seconds: float) -> float:
    return amount / max(seconds, 1e-3)  # a run under a millisecond: a rate, not a division by zero


def _wall(ms: int) -> str:
    """Kafka's yyyy-MM-dd HH:mm:ss:SSS, local time."""
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S:") + f"{ms % 1000:03d}"


# ---- producer settings --------------------------------------------------------------

# Kafka's producer config names -> how to read the value; the Producer's keyword is the name with
# '_' for '.', except bootstrap.servers, which is its first argument.
_BOOL = {"true": True, "false": False}

PRODUCER_PROPS: dict[str, Callable[[str], object]] = {
    "bootstrap.servers": str,
    "acks": parse_acks,
    "linger.ms": int,
    "batch.size": int,
    "buffer.memory": int,
    "enable.idempotence": lambda v: _BOOL[v.lower()],
    "max.in.flight.requests.per.connection": int,
    "request.timeout.ms": int,
    "delivery.timeout.ms": int,
    "max.block.ms": int,
    "retry.backoff.ms": int,
    "retry.backoff.max.ms": int,
    "metadata.max.age.ms": int,
}


# kafka-console-consumer.sh --consumer-property: the Consumer settings kclient passes on.
CONSUMER_PROPS: dict[str, Callable[[str], object]] = {
    "auto.offset.reset": lambda v: {"earliest": "earliest", "latest": "latest", "none": "none"}[v.lower()],
    "enable.auto.commit": lambda v: _BOOL[v.lower()],
    "auto.commit.interval.ms": int,
    "session.timeout.ms": int,
    "heartbeat.interval.ms": int,
    "max.poll.interval.ms": int,
    "partition.assignment.strategy": str,
    "group.instance.id": str,
    "client.id": str,
    "fetch.max.wait.ms": int,
    "request.timeout.ms": int,
    "metadata.max.age.ms": int,
}


def producer_prop(text: str) -> tuple[str, object]:
    """One --producer-props KEY=VALUE, checked and converted (an argparse type: a bad one exits 2)."""
    return _prop(text, PRODUCER_PROPS, "producer")


def consumer_prop(text: str) -> tuple[str, object]:
    """One --consumer-property KEY=VALUE, checked and converted (an argparse type: a bad one exits 2)."""
    return _prop(text, CONSUMER_PROPS, "consumer")


def _prop(text: str, table: dict[str, Callable[[str], object]], kind: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, not {text!r}")
    read = table.get(key)
    if read is None:
        raise argparse.ArgumentTypeError(f"unknown {kind} config {key!r} (known: {', '.join(table)})")
    try:
        return key, read(value.strip())
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"invalid value for {key}: {value!r}") from None


def producer_settings(bootstrap: str, acks: str, props: list[tuple[str, object]]) -> dict[str, object]:
    """Producer's keyword arguments: the flags, then --producer-props on top (the later one wins)."""
    settings: dict[str, object] = {"bootstrap": bootstrap, "acks": acks}
    for key, value in props:
        settings["bootstrap" if key == "bootstrap.servers" else key.replace(".", "_")] = value
    return settings


# ---- producer run -------------------------------------------------------------------


@dataclass
class ProducerStats:
    """Kafka's ProducerPerformance.Stats: every acknowledgement, in total and in the current window.

    ``acked`` runs on the producer's sender thread (or on the sending thread when the record was
    already done): it only counts, under a lock; the sending thread prints the windows.
    """
    expected: int
    start: float
    interval_s: float
    total: LatencyStats = field(init=False)
    window: LatencyStats = field(init=False)
    window_start: float = field(init=False)
    failures: int = 0
    first_error: BaseException | None = None
    completed: int = 0
    all_done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.total = LatencyStats(self.expected)
        self.window = LatencyStats(keep_samples=False)
        self.window_start = self.start

    def acked(self, sent_at: float, future, now: float | None = None) -> None:
        """A done_callback: the record's latency from before send() (as Kafka's) to now, or its error."""
        now = time.monotonic() if now is None else now
        error = future.exception()
        with self.lock:
            if error is None:
                latency_ms = (now - sent_at) * 1000
                self.total.record(latency_ms)
                self.window.record(latency_ms)
            else:
                self.failures += 1
                self.first_error = self.first_error or error
            self.completed += 1
            if self.completed == self.expected:
                self.all_done.set()

    def next_window(self, now: float) -> tuple[LatencyStats, float] | None:
        """The window that is over at ``now`` and how long it lasted, a new one begun; None if not yet.

        Like Kafka, a window with nothing acknowledged is not printed: it runs on into the next."""
        if now - self.window_start < self.interval_s:
            return None
        with self.lock:
            if not self.window.count:
                return None
            window, self.window = self.window, LatencyStats(keep_samples=False)
            elapsed, self.window_start = now - self.window_start, now
        return window, elapsed


def random_payload(size: int, rng: random.Random) -> bytes:
    """Kafka's payload: ``size`` random uppercase letters, made once and sent in every record."""
    return bytes(rng.randrange(65, 91) for _ in range(size))


def run_producer(args, out: TextIO) -> int:
    """Send --num-records records of --record-size bytes; progress lines, then the summary."""
    settings = producer_settings(args.bootstrap, args.acks, args.producer_props or [])
    try:
        producer = Producer(**settings)
    except ValueError as e:  # the Producer's own cross-checks on the settings
        raise SettingError(str(e)) from None
    payload = random_payload(args.record_size, random.Random(0))
    start = time.monotonic()
    stats = ProducerStats(args.num_records, start, args.reporting_interval / 1000)
    throttler = Throttler(args.throughput, start)

    def report(now: float) -> None:
        ended = stats.next_window(now)  # (window, its length)
        if ended is not None:
            print(format_progress(*ended, args.record_size), file=out, flush=True)

    with producer:
        for sent in range(1, args.num_records + 1):
            sent_at = time.monotonic()
            future = producer.send(args.topic, payload)
            if isinstance(future, Future):
                # send() itself failed (no metadata, or no buffer, within max.block.ms): every next
                # send would wait as long again, so stop here.
                raise future.exception()
            future.add_done_callback(partial(stats.acked, sent_at))
            now = time.monotonic()
            report(now)
            pause = throttler.pause(sent, now)
            if pause:
                time.sleep(pause)
        while not stats.all_done.wait(max(stats.window_start + stats.interval_s - time.monotonic(), 0.01)):
            report(time.monotonic())
        elapsed = time.monotonic() - start
    print(format_summary(stats.total, elapsed, args.record_size), file=out, flush=True)
    if stats.failures:  # Kafka prints each failure's stack trace; one line says as much here
        print(f"Error: {stats.failures} of {stats.expected} records failed, the first with: {stats.first_error}",
              file=sys.stderr)
        return 1
    return 0


# ---- consumer run -------------------------------------------------------------------


def run_consumer(args, out: TextIO) -> int:
    """Read --messages records from the beginning of every partition; Kafka's header and CSV line."""
    count = nbytes = 0
    idle_limit_s = args.timeout / 1000
    with Consumer(args.bootstrap, args.topic, auto_offset_reset="earliest") as consumer:
        consumer.assignment()  # fail fast on an unknown topic
        start_ms = time.time_ns() // 1_000_000
        last_record = time.monotonic()
        while count < args.messages:
            records = consumer.poll(timeout=min(1.0, max(idle_limit_s - (time.monotonic() - last_record), 0.0)))
            if not records:
                if time.monotonic() - last_record >= idle_limit_s:
                    raise KafkaTimeoutError(f"no record for {args.timeout} ms (--timeout): read {count} of "
                                            f"{args.messages} messages")
                continue
            last_record = time.monotonic()
            for r in records[:args.messages - count]:
                nbytes += len(r.key or b"") + len(r.value or b"")  # Kafka counts key and value bytes
            count = min(count + len(records), args.messages)
        end_ms = time.time_ns() // 1_000_000
    print(format_consumer(start_ms, end_ms, nbytes, count), file=out, flush=True)
    return 0
