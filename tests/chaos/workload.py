"""The chaos workload: idempotent acks=all producers and reading consumers, every operation in the history.

Producers send unique values ``<producer>-<index>`` under random keys (Kafka's
murmur2 spreads them over the partitions), each with many batches in flight,
at a bounded rate and with a bounded number of unanswered sends. Consumers read
every partition from the beginning through the leaders. Each completed send
and each poll becomes a history operation (tests/chaos/history.py), written by
one writer so lines never interleave.

Outcomes, Jepsen's way: ``ok`` = acknowledged with an offset; ``fail`` = refused
before it was queued (it cannot be in any log); ``info`` = any later error —
after retries a batch may or may not have been stored by an earlier attempt.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import IO

from client.consumer import Consumer
from client.errors import KafkaError
from client.producer import Producer


@dataclass(frozen=True)
class WorkloadConfig:
    producers: int = 3
    # "all" (idempotent) is what the invariants are about; 1 (not idempotent) is the negative control's
    # deliberately unsafe setting: the leader answers before any follower has the record.
    acks: str | int = "all"
    consumers: int = 2
    rate_per_producer: float = 150.0    # sends per second
    max_unanswered: int = 300            # per producer: back-pressure from the workload, not the buffer
    keys: int = 24
    linger_ms: int = 2
    # A paused leader answers nothing: give up on a request after 5 s (Kafka's 30 s would outlast a round).
    request_timeout_ms: int = 5000
    delivery_timeout_ms: int = 60000


class HistoryWriter:
    """One JSON line per operation, from any thread; times are seconds since the run's start."""

    def __init__(self, fh: IO[str], started: float):
        self._fh = fh
        self._lock = threading.Lock()
        self.started = started

    def now(self) -> float:
        return round(time.monotonic() - self.started, 4)

    def write(self, op: dict) -> None:
        line = json.dumps(op, separators=(",", ":"))
        with self._lock:
            self._fh.write(line + "\n")


class Workload:
    """Start with start(); stop_producers() waits for every send's outcome; stop_consumers() after the
    consumers caught up (read_up_to)."""

    def __init__(self, bootstrap: str, topic: str, history: HistoryWriter, rng: random.Random,
                 config: WorkloadConfig = WorkloadConfig(), prefix: str = "", label: str | None = None):
        """``label``: the topic's name in the history; a re-created topic's new incarnation gets its own,
        so the checker judges it as the fresh topic it must be."""
        self.bootstrap = bootstrap
        self.topic = topic
        self.label = label or topic
        self.history = history
        self.config = config
        self._prefix = prefix
        self._seeds = [rng.randrange(1 << 30) for _ in range(config.producers)]
        self._producing = threading.Event()
        self._consuming = threading.Event()
        self._threads: list[threading.Thread] = []
        self._consumer_threads: list[threading.Thread] = []
        self.sent = 0
        self.acked = 0
        self._count_lock = threading.Lock()
        self.positions: list[dict[int, int]] = [{} for _ in range(config.consumers)]
        self._producers: dict[str, Producer] = {}
        self._last_ack: dict[str, float] = {}
        self._hops: dict[str, deque] = {}
        self.errors: list[str] = []      # workload-side exceptions (a bug in the harness or the client)

    def start(self) -> None:
        self._producing.set()
        self._consuming.set()
        for i in range(self.config.producers):
            self._threads.append(self._spawn(self._produce, f"{self._prefix}p{i}", self._seeds[i]))
        for i in range(self.config.consumers):
            self._consumer_threads.append(self._spawn(self._consume, f"{self._prefix}c{i}", i))
        self._spawn(self._watch_stalls, "watchdog", 10.0)

    def stop_producers(self, timeout: float = 90.0) -> None:
        self._producing.clear()
        for t in self._threads:
            t.join(timeout)

    def stop_consumers(self, timeout: float = 30.0) -> None:
        self._consuming.clear()
        for t in self._consumer_threads:
            t.join(timeout)

    def read_up_to(self, high_watermarks: dict[int, int]) -> bool:
        """Has every consumer read every partition up to the given offsets?"""
        return all(pos.get(p, 0) >= hw for pos in self.positions for p, hw in high_watermarks.items())

    def _spawn(self, target, name: str, arg) -> threading.Thread:
        def run():
            try:
                target(name, arg)
            except Exception as e:  # noqa: BLE001 - reported by the runner as a harness failure
                self.errors.append(f"{name}: {type(e).__name__}: {e}")
        t = threading.Thread(target=run, name=f"chaos-{name}", daemon=True)
        t.start()
        return t

    # ---- producers ------------------------------------------------------------------

    def _produce(self, name: str, seed: int) -> None:
        cfg = self.config
        rng = random.Random(seed)
        unanswered = threading.Semaphore(cfg.max_unanswered)
        hops: deque = deque(maxlen=40)   # the last hops, for a stall record
        producer = Producer(self.bootstrap, acks=cfg.acks, linger_ms=cfg.linger_ms,
                            request_timeout_ms=cfg.request_timeout_ms, delivery_timeout_ms=cfg.delivery_timeout_ms,
                            retry_backoff_ms=50, retry_backoff_max_ms=500, tracer=hops.append)
        self._producers[name] = producer
        self._hops[name] = hops
        try:
            index = 0
            next_at = time.monotonic()
            while self._producing.is_set():
                next_at += 1 / cfg.rate_per_producer
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                if not unanswered.acquire(timeout=0.5):
                    next_at = time.monotonic()   # stalled: do not burst when answers resume
                    continue
                self._send_one(producer, name, index, f"k{rng.randrange(cfg.keys)}", unanswered)
                index += 1
            producer.flush(timeout=cfg.delivery_timeout_ms / 1000 + 5)
        finally:
            producer.close(timeout=5)

    def _send_one(self, producer: Producer, name: str, index: int, key: str, unanswered: threading.Semaphore) -> None:
        value = f"{name}-{index}"
        invoked = self.history.now()
        op = {"f": "send", "producer": name, "value": value, "key": key, "topic": self.label, "invoked": invoked}
        try:
            future = producer.send(self.topic, value.encode(), key=key.encode())
        except KafkaError as e:   # refused before it was queued: definitely not written
            self._record_send(op, "fail", None, -1, e)
            unanswered.release()
            return
        with self._count_lock:
            self.sent += 1

        def done(f) -> None:
            error = f.exception()
            if error is None:
                md = f.result()
                self._record_send(op, "ok", md.offset, md.partition, None)
            else:   # after retries, an earlier attempt may have been stored: unknown
                self._record_send(op, "info", None, -1, error)
            unanswered.release()
        future.add_done_callback(done)

    def _record_send(self, op: dict, outcome: str, offset: int | None, partition: int,
                     error: BaseException | None) -> None:
        if outcome == "ok":
            with self._count_lock:
                self.acked += 1
            self._last_ack[op["producer"]] = time.monotonic()
        self.history.write({**op, "partition": partition, "outcome": outcome, "offset": offset,
                            "completed": self.history.now(),
                            "error": None if error is None else f"{type(error).__name__}: {error}"})

    def _watch_stalls(self, name: str, stall_s: float) -> None:
        """Liveness diagnostics: a producer with no ack for ``stall_s`` while another one gets acks is
        stuck on its own side. Its sender's state and stack go into the history ("stall") once."""
        reported: set[str] = set()
        # Until every producer has finished: a stall often shows only while they flush at the end.
        while self._producing.is_set() or any(t.is_alive() for t in self._threads):
            time.sleep(1.0)
            now = time.monotonic()
            if not any(now - t < stall_s / 2 for t in self._last_ack.values()):
                continue   # nobody gets acks: the cluster is down, not a producer
            for pname, t in list(self._last_ack.items()):
                if now - t > stall_s and pname not in reported:
                    reported.add(pname)
                    self.history.write({"f": "stall", "producer": pname, "time": self.history.now(),
                                        "silent_s": round(now - t, 2),
                                        "sender": _sender_state(self._producers[pname]),
                                        "last_hops": [f"{e.kind} {e.api} {e.address} ({e.broker_id}): {e.detail}"
                                                      for e in list(self._hops[pname])]})

    # ---- consumers ------------------------------------------------------------------

    def _consume(self, name: str, number: int) -> None:
        positions = self.positions[number]
        session = 0
        next_offset: dict[int, int] = {}   # per partition: after the last record this session read
        consumer = Consumer(self.bootstrap, self.topic, auto_offset_reset="earliest", fetch_max_wait_ms=200,
                            request_timeout_ms=self.config.request_timeout_ms, retry_backoff_ms=50,
                            retry_backoff_max_ms=500)
        try:
            while self._consuming.is_set():
                try:
                    records = consumer.poll(0.3)
                except KafkaError as e:
                    # Not retriable (e.g. an offset reset with "none"): start a new session from scratch.
                    consumer.close()
                    consumer = Consumer(self.bootstrap, self.topic, auto_offset_reset="earliest",
                                        fetch_max_wait_ms=200, request_timeout_ms=self.config.request_timeout_ms)
                    session += 1
                    self.history.write({"f": "consumer-error", "consumer": name, "session": session,
                                        "topic": self.label, "time": self.history.now(),
                                        "error": f"{type(e).__name__}: {e}"})
                    next_offset.clear()   # a new consumer: every position starts over
                    continue
                t = self.history.now()
                by_partition: dict[int, list[list]] = {}
                for r in records:
                    by_partition.setdefault(r.partition, []).append(
                        [r.offset, (r.value or b"").decode(errors="replace")])
                for p, recs in by_partition.items():
                    if p in next_offset and recs[0][0] != next_offset[p]:
                        # The consumer jumped (an offset reset): noted, and a new session, so the checker
                        # judges the jump from this record and not as a skip.
                        session += 1
                        self.history.write({"f": "consumer-reset", "consumer": name, "session": session,
                                            "topic": self.label, "partition": p, "time": t,
                                            "from": next_offset[p], "to": recs[0][0]})
                        # Only this partition jumped: the consumer kept its other positions.
                        del next_offset[p]
                    self.history.write({"f": "poll", "consumer": name, "session": session, "topic": self.label,
                                        "partition": p, "records": recs, "time": t})
                    next_offset[p] = recs[-1][0] + 1
                positions.update({p: o for (_, p), o in consumer.positions.items()})
        finally:
            consumer.close()


def _sender_state(producer: Producer) -> dict:
    """What a stuck producer's sender holds, and where its thread is (for the stall record)."""
    sender, acc = producer._sender, producer._acc
    frame = sys._current_frames().get(sender.ident)
    now = time.monotonic()
    return {"producer_id": sender._producer_id, "metadata_stale": sender._metadata_stale,
            "streams": {f"{a[0]}:{a[1]}": len(s.in_flight) for a, s in list(sender._streams.items())},
            # per partition: the base sequences in flight and where each went (the drain rule holds a
            # partition back while some went to another broker than its leader)
            "accumulator_in_flight": {f"{t}-{p}": sorted((b.base_sequence, str(b.sent_to)) for b in list(batches))
                                      for (t, p), batches in list(acc._in_flight.items())},
            "queued": {f"{t}-{p}": [(b.drain_order, b.attempts, round(b.retry_at - now, 2)) for b in list(q)[:3]]
                       for (t, p), q in list(acc._queues.items())},
            "answers_waiting": len(sender._answers),
            "stack": traceback.format_stack(frame) if frame is not None else None}
