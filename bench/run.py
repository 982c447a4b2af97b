"""`make bench`: one fresh 3-broker cluster (RF 3, min.insync.replicas 2, 100-byte values), the
workloads of issue 7, a table on stdout and bench/results.json.

    .venv/bin/python -m bench.run [--reps 3] [--out bench/results.json] [--quick]     (from the repo root)

- ready: from spawning the three brokers to every one registered and unfenced, controller known;
- W1 produce-sync: records sent one at a time (send().result()), acks=all, 1 partition:
  p50 / p99 send-to-ack latency and records/s;
- W2 produce-pipelined: records sent as fast as the producer takes them (acks=all, idempotent,
  batching, 5 batches per partition in flight), 3 partitions: records/s and MB/s from the first
  send to the last ack;
- W3 consume: W2's topic from the beginning with one Consumer: records/s and MB/s from the first
  poll to the last record;
- broker memory after W2: VmHWM (peak RSS since the process started, so W1 and start-up count
  too) and VmRSS from /proc/<pid>/status;
- W4 failover: a thread sends synchronously (acks=all) and stamps each ack; the partition's
  leader is killed -9; the window runs from the last ack before the kill to the first ack after
  it (bench.stats.failover_window: the longest gap among the first acks after it). The topic is
  read back: acknowledged records missing, and duplicates. The killed broker is restarted and
  the ISR full again before the next round.

W1-W3 run --reps times, each on a fresh topic; each figure is min / median / max over them.
MB = 10^6 bytes (values only for MB/s). Targets are reported, not asserted. Every wait has a
deadline; only the brokers started here are killed, by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import grpc
from google import protobuf

from bench import kafka_port
from bench.stats import Figure, Target, failover_window, read_back, table
from client import Consumer, Producer
from client.perf import LatencyStats
from raftka_testing.cluster import (REPO, Cluster, create_ready, metadata, read_all, replica_offsets, wait_for,
                                    wait_metadata, write_cluster)

VALUE_SIZE = 100
VALUE = b"x" * VALUE_SIZE
CLUSTER_CONFIG = {"min.insync.replicas": 2}


@dataclass(frozen=True)
class Settings:
    reps: int = 3
    w1_records: int = 5_000
    w2_records: int = 100_000
    # The Kafka port's W2/W3: librdkafka queues 100k records in ~0.15 s, so at 100k its own fixed
    # start and drain (~0.25 s of broker-thread wakeups) would be most of what is timed.
    kw2_records: int = 500_000
    w2_partitions: int = 3
    batch_size: int = 524_288          # best of 128, 256, 512 KiB, 1 MiB (1 MiB batches exceed max.message.bytes)
    linger_ms: int = 5
    fetch_max_wait_ms: int = 500       # W3 consumer: Kafka's fetch.max.wait.ms default
    failover_rounds: int = 3
    failover_acks_before_kill: int = 200
    failover_acks_after: int = 50      # keep sending this many acks past the first one after the kill


@dataclass
class Samples:
    """Every repetition's figures, by name."""
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, **figures: float) -> None:
        for name, value in figures.items():
            self.values.setdefault(name, []).append(value)


# ---- cluster ------------------------------------------------------------------------------------


def start_timed(cluster: Cluster) -> float:
    """Seconds from spawning every broker to each one ready."""
    started = time.monotonic()
    cluster.start_all(timeout=30)
    return time.monotonic() - started


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak resident set since start) and VmRSS of a process, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(rest.split()[0]) * 1024 / 1e6  # the kernel's kB are KiB
    return out


def leader_of(cluster: Cluster, topic: str) -> tuple[int, int]:
    """(leader id, controller id) of ``topic``'s partition 0 as the first answering broker sees them."""
    def ask():
        for b in cluster.running():
            r = metadata(b, [topic])
            if r is not None and r.topics and r.topics[0].partitions and r.topics[0].partitions[0].leader_id >= 0:
                return r.topics[0].partitions[0].leader_id, r.controller_id
        return None
    return wait_for(ask, 10, f"a leader for {topic}-0")


def high_watermark(cluster: Cluster, topic: str) -> int:
    """The HW of ``topic``-0 at its leader: every acknowledged record lies below it."""
    leader_id, _ = leader_of(cluster, topic)
    return wait_for(lambda: replica_offsets(cluster.brokers[leader_id], topic), 10,
                    f"{topic}-0's HW at broker {leader_id}").high_watermark


def wait_full_isr(cluster: Cluster, topic: str, timeout: float = 60) -> None:
    for b in cluster.brokers.values():
        wait_metadata(b, lambda m: all(len(p.isr) == len(cluster.brokers) for p in m.topics[0].partitions),
                      timeout, f"a full ISR for {topic}", [topic])


# ---- workloads ----------------------------------------------------------------------------------


def produce_sync(bootstrap: str, topic: str, records: int) -> dict[str, float]:
    """W1: one record at a time, each waited for."""
    stats = LatencyStats(records)
    with Producer(bootstrap, acks="all", linger_ms=0) as p:
        p.send(topic, VALUE).result(timeout=30)  # warm up: metadata, producer id, stream
        started = time.perf_counter()
        for _ in range(records):
            sent = time.perf_counter()
            p.send(topic, VALUE).result(timeout=30)
            stats.record((time.perf_counter() - sent) * 1000)
        elapsed = time.perf_counter() - started
    p50, p99 = stats.percentiles(0.5, 0.99)
    return {"w1_p50_ms": p50, "w1_p99_ms": p99, "w1_records_per_s": records / elapsed}


def produce_pipelined(bootstrap: str, topic: str, records: int, settings: Settings) -> dict[str, float]:
    """W2: as fast as the producer takes them, then flush; one warm-up record before the clock starts."""
    with Producer(bootstrap, acks="all", linger_ms=settings.linger_ms, batch_size=settings.batch_size) as p:
        p.send(topic, VALUE).result(timeout=30)
        started = time.perf_counter()
        futures = [p.send(topic, VALUE) for _ in range(records)]
        p.flush(timeout=120)
        elapsed = time.perf_counter() - started
    errors = [e for e in (f.exception(timeout=0) for f in futures) if e is not None]
    if errors:
        raise RuntimeError(f"W2: {len(errors)} of {records} records failed, the first with {errors[0]!r}")
    return {"w2_records_per_s": records / elapsed, "w2_mb_per_s": records * VALUE_SIZE / elapsed / 1e6}


def consume_all(bootstrap: str, topic: str, records: int, fetch_max_wait_ms: int,
                timeout: float = 120) -> dict[str, float]:
    """W3: ``records`` from the beginning, timed from the first poll to the last record."""
    count = nbytes = 0
    with Consumer(bootstrap, topic, from_beginning=True, fetch_max_wait_ms=fetch_max_wait_ms) as c:
        c.assignment()  # topic metadata, as kclient perf consume does
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        while count < records:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"W3: read {count} of {records} records in {timeout} s")
            batch = c.poll(timeout=1.0)
            count += len(batch)
            nbytes += sum(len(r.value) for r in batch)
        elapsed = time.perf_counter() - started
    return {"w3_records_per_s": count / elapsed, "w3_mb_per_s": nbytes / elapsed / 1e6}


class SyncSender(threading.Thread):
    """W4's producer: sends "0", "1", ... one at a time, stamping each ack (time.monotonic())."""

    def __init__(self, bootstrap: str, topic: str, max_records: int = 1_000_000):
        super().__init__(name="w4-sender", daemon=True)
        self.topic, self.max_records = topic, max_records
        self.producer = Producer(bootstrap, acks="all", linger_ms=0)
        self.acks: list[tuple[float, bytes]] = []
        self.failed: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        for n in range(self.max_records):
            if self.stopping.is_set():
                return
            value = str(n).encode()
            try:
                self.producer.send(self.topic, value, partition=0).result(timeout=60)
            except Exception as e:  # noqa: BLE001 -- counted in the report
                self.failed.append(f"{value!r}: {e!r}")
                continue
            self.acks.append((time.monotonic(), value))

    def finish(self) -> None:
        self.stopping.set()
        self.join(90)
        self.producer.close(30)


def failover_round(cluster: Cluster, topic: str, settings: Settings) -> dict[str, float | int | bool]:
    """W4, one round: kill -9 the leader of ``topic``-0 under a synchronous producer, restart it."""
    create_ready(cluster, topic, 1)
    sender = SyncSender(cluster.bootstrap, topic)
    sender.start()
    try:
        wait_for(lambda: len(sender.acks) >= settings.failover_acks_before_kill, 30, "acks before the kill", 0.01)
        victim_id, controller_id = leader_of(cluster, topic)
        victim = cluster.brokers[victim_id]
        killed_at = time.monotonic()
        victim.kill()

        def resumed() -> bool:
            after = [t for t, _ in sender.acks if t > killed_at]
            return len(after) >= settings.failover_acks_after
        wait_for(resumed, 60, f"{settings.failover_acks_after} acks after killing broker {victim_id}", 0.01)
    finally:
        sender.finish()
    ack_times = [t for t, _ in sender.acks]
    got = read_all(cluster.bootstrap, topic, {0: high_watermark(cluster, topic)})[0]
    rb = read_back([v for _, v in sender.acks], [v for _, v in got])
    victim.start(wait=True)
    wait_full_isr(cluster, topic)
    return {"window_s": failover_window(ack_times, killed_at),
            "first_ack_after_kill_s": failover_window(ack_times, killed_at, look_ahead=1),
            "lost": rb.lost, "duplicates": rb.duplicates, "acked": len(sender.acks), "read": len(got),
            "failed_sends": len(sender.failed), "victim": victim_id,
            "victim_was_controller": victim_id == controller_id}


# ---- report -------------------------------------------------------------------------------------

# name: (label, unit, target, decimals), in table order
FIGURES: dict[str, tuple[str, str, Target | None, int]] = {
    "ready_s": ("start to ready cluster (1 sample)", "s", Target(3.0), 2),
    "w1_p50_ms": ("W1 produce-sync p50", "ms", Target(2.0), 2),
    "w1_p99_ms": ("W1 produce-sync p99", "ms", Target(10.0), 2),
    "w1_records_per_s": ("W1 produce-sync", "records/s", None, 0),
    "w2_records_per_s": ("W2 produce-pipelined", "records/s", Target(200_000, higher_is_better=True), 0),
    "w2_mb_per_s": ("W2 produce-pipelined", "MB/s", None, 1),
    "w3_records_per_s": ("W3 consume", "records/s", Target(500_000, higher_is_better=True), 0),
    "w3_mb_per_s": ("W3 consume", "MB/s", None, 1),
    "kw1_p50_ms": ("Kafka port, librdkafka: W1 produce-sync p50", "ms", Target(1.0), 2),
    "kw1_p99_ms": ("Kafka port, librdkafka: W1 produce-sync p99", "ms", None, 2),
    "kw2_records_per_s": ("Kafka port, librdkafka: W2 produce-pipelined", "records/s",
                          Target(300_000, higher_is_better=True), 0),
    "kw3_records_per_s": ("Kafka port, librdkafka: W3 consume", "records/s", Target(500_000, higher_is_better=True), 0),
    "broker_peak_rss_mb": ("broker peak RSS since start, after W2 (3 brokers)", "MB", Target(100, judged_on="max"), 1),
    "broker_rss_mb": ("broker RSS after W2 (3 brokers)", "MB", None, 1),
    "w4_window_s": ("W4 failover: last ack before kill -9 to first after", "s", Target(1.0), 2),
    "w4_lost": ("W4 acknowledged records missing", "records", Target(0, judged_on="max"), 0),
    "w4_duplicates": ("W4 duplicates read back", "records", None, 0),
}


def figures_of(samples: Samples) -> list[Figure]:
    return [Figure(name, label, unit, tuple(samples.values[name]), target, decimals)
            for name, (label, unit, target, decimals) in FIGURES.items() if samples.values.get(name)]


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    try:
        return git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, object]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "grpcio": grpc.__version__, "protobuf": protobuf.__version__, "platform": platform.platform()}


# ---- main ---------------------------------------------------------------------------------------


def run(cluster: Cluster, settings: Settings, samples: Samples, log) -> dict[str, object]:
    """Every workload on a started cluster; returns the per-broker memory and the failover rounds."""
    bootstrap = cluster.bootstrap
    for rep in range(1, settings.reps + 1):
        create_ready(cluster, f"w1-{rep}", 1)
        r = produce_sync(bootstrap, f"w1-{rep}", settings.w1_records)
        samples.add(**r)
        log(f"W1 rep {rep}: p50 {r['w1_p50_ms']:.2f} ms, p99 {r['w1_p99_ms']:.2f} ms, {r['w1_records_per_s']:,.0f}/s")
    for rep in range(1, settings.reps + 1):
        create_ready(cluster, f"w2-{rep}", settings.w2_partitions)
        r = produce_pipelined(bootstrap, f"w2-{rep}", settings.w2_records, settings)
        samples.add(**r)
        log(f"W2 rep {rep}: {r['w2_records_per_s']:,.0f} records/s, {r['w2_mb_per_s']:.1f} MB/s")
    memory = {b.broker_id: proc_memory_mb(b.pid) for b in cluster.brokers.values()}
    samples.values["broker_peak_rss_mb"] = [m["VmHWM"] for m in memory.values()]
    samples.values["broker_rss_mb"] = [m["VmRSS"] for m in memory.values()]
    log("memory after W2: " + ", ".join(f"broker {i} VmHWM {m['VmHWM']:.1f} MB VmRSS {m['VmRSS']:.1f} MB"
                                        for i, m in memory.items()))
    for rep in range(1, settings.reps + 1):
        # W2's topic holds its records and its warm-up record
        r = consume_all(bootstrap, f"w2-{rep}", settings.w2_records + 1, settings.fetch_max_wait_ms)
        samples.add(**r)
        log(f"W3 rep {rep}: {r['w3_records_per_s']:,.0f} records/s, {r['w3_mb_per_s']:.1f} MB/s")
    run_kafka_port(cluster, settings, samples, log)
    rounds = []
    for n in range(1, settings.failover_rounds + 1):
        r = failover_round(cluster, f"w4-{n}", settings)
        rounds.append(r)
        samples.add(w4_window_s=r["window_s"], w4_lost=r["lost"], w4_duplicates=r["duplicates"])
        log(f"W4 round {n}: killed broker {r['victim']}{' (the controller)' if r['victim_was_controller'] else ''}, "
            f"window {r['window_s']:.2f} s, {r['acked']} acked, {r['lost']} missing, {r['duplicates']} duplicates, "
            f"{r['failed_sends']} failed sends")
    return {"brokers_after_w2": memory, "failover_rounds": rounds}


def run_kafka_port(cluster: Cluster, settings: Settings, samples: Samples, log) -> None:
    """W1-W3 again through the Kafka-protocol port, with librdkafka (bench/kafka_port.py)."""
    bootstrap = ",".join(b.kafka_bootstrap for b in cluster.brokers.values())
    for rep in range(1, settings.reps + 1):
        create_ready(cluster, f"kw1-{rep}", 1)
        r = kafka_port.produce_sync(bootstrap, f"kw1-{rep}", settings.w1_records)
        samples.add(**r)
        log(f"Kafka port W1 rep {rep}: p50 {r['kw1_p50_ms']:.2f} ms, p99 {r['kw1_p99_ms']:.2f} ms")
    for rep in range(1, settings.reps + 1):
        create_ready(cluster, f"kw2-{rep}", settings.w2_partitions)
        r = kafka_port.produce_pipelined(bootstrap, f"kw2-{rep}", settings.kw2_records)
        samples.add(**r)
        log(f"Kafka port W2 rep {rep}: {r['kw2_records_per_s']:,.0f} records/s")
        r = kafka_port.consume_all(bootstrap, f"kw2-{rep}", settings.w2_partitions, settings.kw2_records + 1)
        samples.add(**r)
        log(f"Kafka port W3 rep {rep}: {r['kw3_records_per_s']:,.0f} records/s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="bench/results.json")
    ap.add_argument("--quick", action="store_true", help="smoke test: W1 500, W2 10,000, 1 rep, 1 failover round")
    ap.add_argument("--batch-size", type=int, default=Settings.batch_size, help="W2 producer batch.size")
    ap.add_argument("--linger-ms", type=int, default=Settings.linger_ms, help="W2 producer linger.ms")
    ap.add_argument("--fetch-max-wait-ms", type=int, default=Settings.fetch_max_wait_ms, help="W3 consumer")
    args = ap.parse_args(argv)
    settings = Settings(reps=args.reps, batch_size=args.batch_size, linger_ms=args.linger_ms,
                        fetch_max_wait_ms=args.fetch_max_wait_ms)
    if args.quick:
        settings = replace(settings, reps=1, w1_records=500, w2_records=10_000, kw2_records=10_000, failover_rounds=1)

    def log(line: str) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {line}", flush=True)

    began = time.monotonic()
    samples = Samples()
    with tempfile.TemporaryDirectory(prefix="raftka-bench-") as tmp:
        cluster = write_cluster(Path(tmp), 3, CLUSTER_CONFIG)
        try:
            samples.add(ready_s=start_timed(cluster))
            log(f"cluster ready in {samples.values['ready_s'][0]:.2f} s ({cluster.bootstrap})")
            details = run(cluster, settings, samples, log)
        finally:
            cluster.stop_all()
    figures = figures_of(samples)
    results = {"commit": git_commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": machine(),
               "config": {"brokers": 3, "replication_factor": 3, **CLUSTER_CONFIG, "value_bytes": VALUE_SIZE,
                          **asdict(settings), "acks": "all", "idempotent": True, "mb": "10^6 bytes"},
               "figures": {f.name: f.as_json() for f in figures}, **details,
               "runtime_s": round(time.monotonic() - began, 1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + table(figures))
    print(f"\n{results['commit']}, {results['machine']['cpus']} CPUs ({results['machine']['cpu_model']}); "
          f"{results['runtime_s']} s; written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
