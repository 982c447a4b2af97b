"""Storage faults with real files under real brokers (issue 8, item 4).

Each test starts three `python -m broker` processes, breaks one broker's data dir for
real, and checks what Kafka promises: the request in hand gets KAFKA_STORAGE_ERROR (or
CORRUPT_MESSAGE for damaged bytes), no partial batch is visible, the broken broker halts
(exit code EXIT_LOG_DIR_FAILURE) so leadership moves to a healthy in-sync replica, every
acknowledged record is read back from the new leader, and after a restart the broken
replica's log is cut at the damage and re-fetched until it is byte-identical again.

The faults: a full disk (RLIMIT_FSIZE on one broker: a write past the limit fails with
EFBIG half-way; on the leader, and on a follower, which must halt and leave the ISR
rather than fall silently behind), a data dir made read-only (chmod; when the tests run as root, the broker
runs without CAP_DAC_OVERRIDE so the permissions bind it), a segment file deleted under a
running broker, and a byte flipped in the middle of a segment (on the leader, and on a
follower: found at restart by recovery, or by a read of its own copy).

Every wait is a condition with a deadline; brokers are ended by PID only.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from broker.broker import EXIT_LOG_DIR_FAILURE
from client import record_batch
from client.producer import Producer
from client.protocol.v1 import common_pb2, kafka_pb2, kafka_pb2_grpc
from tests.integration.cluster import (BrokerProcess, Cluster, fetch_raw, log_bytes, log_events, read_replica,
                                       replica_offsets, segment_files, wait_for)
from tests.integration.test_replication import (compare_replicas, create_topic, name, partition_meta, produce_raw,
                                                read_from_leader, wait_in_sync)

pytestmark = pytest.mark.integration

NONE = common_pb2.NONE
CORRUPT_MESSAGE = common_pb2.CORRUPT_MESSAGE            # 2
KAFKA_STORAGE_ERROR = common_pb2.KAFKA_STORAGE_ERROR    # 56

# Fence a halted broker and shrink ISRs quickly (defaults: lag 5000, session 3000).
FAST = {"replica.lag.time.max.ms": 2000, "broker.session.timeout.ms": 2000}
FAILOVER_S = 20.0
VALUE_SIZE = 1000


# ---- process limits: a command run before the broker that execs it ---------------------------------


def exec_after(setup: str) -> list[str]:
    """A command prefix: run ``setup`` (Python) in the broker's process, then exec the broker command."""
    return [sys.executable, "-c", f"import os, sys\n{setup}\nos.execv(sys.argv[1], sys.argv[1:])"]


def file_size_limit(limit: int) -> list[str]:
    """RLIMIT_FSIZE: no file may grow past ``limit`` bytes (a full disk, per file). Python ignores
    SIGXFSZ, so the write that crosses the limit writes up to it and then fails with EFBIG."""
    return exec_after(f"import resource\nresource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))")


CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_SETPCAP = 1, 2, 3, 8
PR_CAPBSET_DROP = 24


def without_permission_override() -> list[str]:
    """Root ignores file permissions through CAP_DAC_OVERRIDE (and CAP_FOWNER may chmod back).
    Dropped from the bounding set before exec, root's new process does not get them back."""
    return exec_after(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"for cap in ({CAP_DAC_OVERRIDE}, {CAP_DAC_READ_SEARCH}, {CAP_FOWNER}):\n"
        f"    if libc.prctl({PR_CAPBSET_DROP}, cap, 0, 0, 0) != 0:\n"
        "        sys.exit(f'cannot drop capability {cap}: errno {ctypes.get_errno()}')")


def has_capability(cap: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> cap & 1)
    return False


# ---- helpers ---------------------------------------------------------------------------------------------


def start_three(fresh_cluster, config: dict | None = None,
                prefixes: dict[int, list[str]] | None = None) -> Cluster:
    cluster = fresh_cluster(3, {**FAST, **(config or {})})
    for bid, prefix in (prefixes or {}).items():
        cluster.brokers[bid].command_prefix = prefix
        cluster.brokers[bid].log_via_pipe = True   # the broker's log file is not one of its data files
    cluster.start_all(timeout=30)
    cluster.wait_controller(timeout=15, alive={1, 2, 3})
    return cluster


def leader_of(cluster: Cluster, topic: str, partition: int = 0) -> BrokerProcess:
    p = wait_for(lambda: partition_meta(next(iter(cluster.running())), topic, partition), 10,
                 f"metadata of {topic}-{partition}")
    return cluster.brokers[p.leader_id]


def value(i: int) -> bytes:
    return b"%06d-" % i + b"v" * (VALUE_SIZE - 7)


def produce_acked(leader: BrokerProcess, topic: str, count: int, partition: int = 0) -> list[bytes]:
    """``count`` one-record batches, acks=all, straight to the leader; each must be acknowledged in order."""
    values = [value(i) for i in range(count)]
    for i, v in enumerate(values):
        r = produce_raw(leader, topic, partition, [v], acks=-1, timeout_ms=15000)
        assert (r.error_code, r.base_offset) == (NONE, i), (name(r.error_code), r.error_message)
    return values


def batch_size() -> int:
    return len(record_batch.build_batch([(None, value(0), 0)]))


def wait_halted(broker: BrokerProcess) -> int:
    """The broker's exit code once it exited by itself (it must: nobody signals it)."""
    wait_for(lambda: broker.proc.poll() is not None, FAILOVER_S, f"broker {broker.broker_id} to halt")
    return broker.proc.returncode


def wait_new_leader(cluster: Cluster, topic: str, old: BrokerProcess, partition: int = 0) -> BrokerProcess:
    """The healthy broker that leads the partition after ``old`` halted (as the survivors see it)."""
    survivors = {b.broker_id: b for b in cluster.brokers.values() if b is not old}

    def moved():
        leaders = set()
        for b in survivors.values():
            meta = partition_meta(b, topic, partition)
            if meta is None:
                return None
            leaders.add(meta.leader_id)
        return leaders.pop() if len(leaders) == 1 and set(leaders) <= set(survivors) else None
    return cluster.brokers[wait_for(moved, FAILOVER_S, f"{topic}-{partition} to get a leader other than "
                                                      f"broker {old.broker_id}")]


def whole_valid_batches(data: bytes) -> int:
    """Batches in ``data``, which must be whole batches with good CRCs and nothing more (no partial tail)."""
    end, count = 0, 0
    for pos, h in record_batch.iter_batches(data):
        assert record_batch.crc_ok(data, pos, h), f"batch at offset {h.base_offset}: CRC mismatch"
        end, count = pos + h.size, count + 1
    assert end == len(data), f"{len(data) - end} bytes of a partial batch after {count} whole ones"
    return count


def events_for(broker: BrokerProcess, event: str, topic: str, partition: int = 0) -> list[dict]:
    suffix = f"/{topic}-{partition}"
    return [e for e in log_events(broker, event) if str(e.get("dir", "")).endswith(suffix)]


def assert_halted_for_storage(broker: BrokerProcess, reason: str) -> None:
    assert wait_halted(broker) == EXIT_LOG_DIR_FAILURE, broker.log()[-3000:]
    offline = log_events(broker, "log_dir_offline")
    assert [e["reason"] for e in offline] == [reason], offline
    assert len(log_events(broker, "broker_halting")) == 1


def read_all_from(cluster: Cluster, leader: BrokerProcess, topic: str, count: int,
                  partition: int = 0) -> list[bytes]:
    """Every record the new leader serves below ``count`` (its LEO must be exactly ``count``)."""
    offsets = wait_for(lambda: (o := replica_offsets(leader, topic, partition)) and o.high_watermark == count and o,
                       FAILOVER_S, f"the new leader's HW to reach {count}")
    assert offsets.log_end_offset == count, offsets   # the refused batch is on no replica
    records = read_from_leader(leader.bootstrap, topic, count, partition)
    assert [o for o, _ in records] == list(range(count))
    return [v for _, v in records]


def restart_and_resync(cluster: Cluster, broker: BrokerProcess, leader: BrokerProcess, topic: str,
                       values: list[bytes]) -> None:
    """Start the halted broker again, plainly; with one more record written in the new leader's epoch
    (so every replica's epoch cache names it), it must catch up to a byte-identical copy."""
    broker.command_prefix, broker.log_via_pipe = [], False
    broker.start()
    r = produce_raw(leader, topic, 0, [value(len(values))], acks=-1)
    assert (r.error_code, r.base_offset) == (NONE, len(values)), (name(r.error_code), r.error_message)
    hw = wait_in_sync(cluster, topic)
    assert hw == len(values) + 1
    assert [v for _, v in compare_replicas(cluster, topic, hw)] == values + [value(len(values))]


def flip_byte_in_batch(path: Path, batch_index: int) -> int:
    """Flip one byte in the middle of the body of the ``batch_index``-th batch of a segment file;
    returns that batch's base offset."""
    data = path.read_bytes()
    pos, header = list(record_batch.iter_batches(data))[batch_index]
    at = pos + record_batch.HEADER_SIZE + (header.size - record_batch.HEADER_SIZE) // 2
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(bytes([data[at] ^ 0xFF]))
    return header.base_offset


# ---- a full disk -----------------------------------------------------------------------------------------


FSIZE_LIMIT = 256 * 1024


def test_a_full_disk_refuses_the_batch_whole_and_leadership_moves(fresh_cluster):
    """Broker 1 may not grow a file past 256 KiB. The batch that crosses the limit is written half-way
    (then EFBIG): it must be cut off, answered KAFKA_STORAGE_ERROR, and broker 1 must hand over."""
    cluster = start_three(fresh_cluster, prefixes={1: file_size_limit(FSIZE_LIMIT)})
    topic = "full-disk"
    create_topic(cluster, topic, partitions=3)
    victim = cluster.brokers[1]
    partition = next(p for p in range(3) if leader_of(cluster, topic, p) is victim)
    fit = FSIZE_LIMIT // batch_size()

    values = produce_acked(victim, topic, fit, partition)
    refused = produce_raw(victim, topic, partition, [value(fit)], acks=-1)
    assert refused.error_code == KAFKA_STORAGE_ERROR, (name(refused.error_code), refused.error_message)

    assert_halted_for_storage(victim, "file size limit reached")
    segment = segment_files(victim, topic, partition)[0]
    assert segment.stat().st_size == fit * batch_size() <= FSIZE_LIMIT   # the half-written batch was cut off
    assert whole_valid_batches(segment.read_bytes()) == fit
    new_leader = wait_new_leader(cluster, topic, victim, partition)
    assert read_all_from(cluster, new_leader, topic, fit, partition) == values
    # Writes go on: a client producer (its bootstrap lists the halted broker too) is acknowledged there.
    with Producer(cluster.bootstrap, acks="all", delivery_timeout_ms=30000) as producer:
        stored = producer.send(topic, value(fit), partition=partition).result(timeout=40)
    assert stored.offset == fit
    print(f"\n[full disk] {fit} batches of {batch_size()} B acked, batch {fit + 1} refused with "
          f"KAFKA_STORAGE_ERROR, broker 1 halted (exit {EXIT_LOG_DIR_FAILURE}), 0 partial bytes on disk, "
          f"broker {new_leader.broker_id} leads and serves all {fit}; a producer's send then stored at {fit}")


def test_a_followers_full_disk_halts_it_and_the_leader_acknowledges_on(fresh_cluster):
    """Broker 1 follows; its copy crosses the file-size limit first (the leader's has none). The follower
    must halt rather than fall silently behind; the controller fences it, the ISR shrinks to the two
    healthy replicas and acks=all writes go on; nothing partial is left in its segment."""
    cluster = start_three(fresh_cluster, prefixes={1: file_size_limit(FSIZE_LIMIT)})
    topic = "follower-full-disk"
    create_topic(cluster, topic, partitions=3)
    victim = cluster.brokers[1]
    partition = next(p for p in range(3) if leader_of(cluster, topic, p) is not victim)
    leader = leader_of(cluster, topic, partition)
    fit = FSIZE_LIMIT // batch_size()

    values = produce_acked(leader, topic, fit + 20, partition)   # 20 past what broker 1 can hold
    assert_halted_for_storage(victim, "file size limit reached")
    wait_for(lambda: (m := partition_meta(leader, topic, partition)) is not None and victim.broker_id not in m.isr,
             FAILOVER_S, f"the ISR of {topic}-{partition} to drop broker 1")
    assert leader_of(cluster, topic, partition) is leader
    assert whole_valid_batches(segment_files(victim, topic, partition)[0].read_bytes()) <= fit
    assert read_all_from(cluster, leader, topic, fit + 20, partition) == values
    print(f"\n[follower full disk] {fit + 20} acked with acks=all; follower 1 halted at the limit "
          f"(<= {fit} whole batches kept, 0 partial), left the ISR; leader {leader.broker_id} served all")


# ---- a read-only data dir ----------------------------------------------------------------------------------


def set_writable(root: Path, writable: bool) -> int:
    """chmod every folder and file under ``root`` (and ``root``) read-only or back; returns how many."""
    paths = [root, *root.rglob("*")]
    for p in sorted(paths, key=lambda p: len(p.parts), reverse=not writable):
        mode = p.stat().st_mode
        bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        os.chmod(p, (mode | stat.S_IWUSR) if writable else (mode & ~bits))
    return len(paths)


def test_a_read_only_data_dir_refuses_the_next_write_and_leadership_moves(fresh_cluster):
    """chmod -R a-w on the leader's data dir: open files still take writes, so the first write that needs
    a new file (a segment roll) is what fails (EACCES); it must be answered KAFKA_STORAGE_ERROR."""
    prefixes = None
    if os.geteuid() == 0:
        if not has_capability(CAP_SETPCAP):
            pytest.skip("running as root without CAP_SETPCAP: cannot start a broker that file permissions bind")
        prefixes = {bid: without_permission_override() for bid in (1, 2, 3)}
    # HW checkpoints (which would also meet the read-only dir) only at leadership changes here, so that the
    # produce below is what finds it.
    cluster = start_three(fresh_cluster, {"replica.high.watermark.checkpoint.interval.ms": 600000}, prefixes)
    topic = "read-only"
    per_segment = 3
    create_topic(cluster, topic, config={"segment.bytes": str(per_segment * batch_size())})
    victim = leader_of(cluster, topic)
    values = produce_acked(victim, topic, 2 * per_segment)   # two full segments: the next batch rolls
    assert len(segment_files(victim, topic)) == 2

    chmodded = set_writable(victim.data_dir, False)
    try:
        refused = produce_raw(victim, topic, 0, [value(len(values))], acks=-1)
        assert refused.error_code == KAFKA_STORAGE_ERROR, (name(refused.error_code), refused.error_message)
        assert_halted_for_storage(victim, "permission denied (data dir made read-only?)")
    finally:
        set_writable(victim.data_dir, True)
    assert sum(whole_valid_batches(p.read_bytes()) for p in segment_files(victim, topic)) == len(values)
    new_leader = wait_new_leader(cluster, topic, victim)
    assert read_all_from(cluster, new_leader, topic, len(values)) == values
    print(f"\n[read-only] {len(values)} acked, {chmodded} paths made read-only, the roll's write refused with "
          f"KAFKA_STORAGE_ERROR, broker {victim.broker_id} halted, broker {new_leader.broker_id} serves all "
          f"{len(values)} (root: {os.geteuid() == 0})")


# ---- a deleted segment file ----------------------------------------------------------------------------------


def test_a_segment_file_deleted_under_the_leader_is_a_storage_error(fresh_cluster):
    """The broker still holds the deleted file open and could go on writing to it, acknowledging records
    that vanish at its next start; it must notice, refuse, hand over, and re-fetch after a restart."""
    cluster = start_three(fresh_cluster)
    topic = "deleted-segment"
    create_topic(cluster, topic)
    victim = leader_of(cluster, topic)
    values = produce_acked(victim, topic, 20)
    (segment,) = segment_files(victim, topic)
    segment.unlink()

    refused = produce_raw(victim, topic, 0, [value(20)], acks=-1)
    assert refused.error_code == KAFKA_STORAGE_ERROR, (name(refused.error_code), refused.error_message)
    assert_halted_for_storage(victim, "file or folder deleted under the broker")
    new_leader = wait_new_leader(cluster, topic, victim)
    assert read_all_from(cluster, new_leader, topic, 20) == values

    restart_and_resync(cluster, victim, new_leader, topic, values)   # its log starts empty and is fetched whole
    print(f"\n[deleted segment] 20 acked, 1 refused with KAFKA_STORAGE_ERROR, broker {victim.broker_id} halted; "
          f"broker {new_leader.broker_id} serves all 20; after the restart 3 identical copies of 20")


# ---- a flipped byte --------------------------------------------------------------------------------------------


RECORDS = 20
DAMAGED = 10   # the batch whose body gets a flipped byte


def three_in_sync(fresh_cluster, topic: str) -> tuple[Cluster, BrokerProcess, list[bytes]]:
    """Three brokers, ``topic`` with RECORDS acknowledged records on all three; (cluster, leader, values)."""
    cluster = start_three(fresh_cluster)
    create_topic(cluster, topic)
    leader = leader_of(cluster, topic)
    values = produce_acked(leader, topic, RECORDS)
    wait_in_sync(cluster, topic)
    return cluster, leader, values


def assert_cut_on_recovery(broker: BrokerProcess, topic: str, damaged_offset: int) -> list[dict]:
    """The broker's restart recovery cut its log exactly once, at the damaged batch, for its CRC."""
    cut = events_for(broker, "log_truncated_on_recovery", topic)
    assert [(e["at_offset"], e["problem"]) for e in cut] == [(damaged_offset, "CRC mismatch")], cut
    return cut


def test_a_flipped_byte_on_the_leader_is_never_served_and_is_repaired(fresh_cluster):
    topic = "flipped-leader"
    cluster, victim, values = three_in_sync(fresh_cluster, topic)
    good = log_bytes(victim, topic)
    (segment,) = segment_files(victim, topic)
    damaged_offset = flip_byte_in_batch(segment, DAMAGED)

    r = fetch_raw(victim, topic, damaged_offset)
    assert (r.error_code, r.records) == (CORRUPT_MESSAGE, b""), (name(r.error_code), r.error_message)
    assert_halted_for_storage(victim, "corrupt data")
    found = log_events(victim, "corrupt_batch_found")   # a halt writes every line it logged before it exits
    assert found and found[-1]["fetch_offset"] == damaged_offset, found
    new_leader = wait_new_leader(cluster, topic, victim)
    assert read_all_from(cluster, new_leader, topic, RECORDS) == values

    restart_and_resync(cluster, victim, new_leader, topic, values)
    cut = assert_cut_on_recovery(victim, topic, damaged_offset)
    assert log_bytes(victim, topic, upto_offset=RECORDS) == good   # the damaged tail was re-fetched: byte-identical again
    print(f"\n[flipped byte, leader] {RECORDS} acked; the fetch at {damaged_offset} got CORRUPT_MESSAGE, "
          f"broker {victim.broker_id} halted, broker {new_leader.broker_id} serves all {RECORDS}; after the "
          f"restart recovery cut {cut[0]['bytes_cut']} B at offset {damaged_offset} and it re-fetched them")


def test_a_flipped_byte_on_a_killed_follower_is_cut_at_restart_and_refetched(fresh_cluster):
    topic = "flipped-follower"
    cluster, leader, values = three_in_sync(fresh_cluster, topic)
    follower = next(b for b in cluster.brokers.values() if b is not leader)
    follower.kill()
    damaged_offset = flip_byte_in_batch(segment_files(follower, topic)[0], DAMAGED)

    follower.start()
    hw = wait_in_sync(cluster, topic)
    cut = assert_cut_on_recovery(follower, topic, damaged_offset)
    assert hw == RECORDS and [v for _, v in compare_replicas(cluster, topic, hw)] == values
    assert [v for _, v in read_replica(follower, topic)] == values
    print(f"\n[flipped byte, killed follower] recovery cut broker {follower.broker_id}'s log at offset "
          f"{damaged_offset} ({cut[0]['bytes_cut']} B); it re-fetched them: 3 identical copies of {RECORDS}")


def test_a_flipped_byte_in_a_cleanly_stopped_follower_is_found_at_start_and_refetched(fresh_cluster):
    """After a clean stop the segments are trusted at start (no CRC pass at open) and the idempotent
    producers' state comes from the snapshot the stop wrote (no replay of the log), as in Kafka: nothing
    reads the damaged batch until a fetch does. Every read checks CRCs: the first one finds the damage, the
    broker halts having lowered its recovery point, and the next start's recovery cuts the log at the
    damaged batch and re-fetches the rest."""
    topic = "flipped-trusted"
    cluster, leader, values = three_in_sync(fresh_cluster, topic)
    follower = next(b for b in cluster.brokers.values() if b is not leader)
    assert follower.terminate() == 0
    assert list(follower.data_dir.glob(f"{topic}-0/*.snapshot")), "the clean stop must leave the producer state"
    damaged_offset = flip_byte_in_batch(segment_files(follower, topic)[0], DAMAGED)

    follower.start()
    assert follower.alive() and log_events(follower, "corrupt_batch_found") == []   # not read yet
    # A consumer reading from this replica (KIP-392) reaches the damaged batch.
    request = kafka_pb2.FetchRequest(replica_id=-1, max_wait_ms=0, min_bytes=1, read_from_replica=True, partitions=[
        kafka_pb2.FetchPartition(topic=topic, partition=0, fetch_offset=damaged_offset, current_leader_epoch=-1)])
    try:
        with grpc.insecure_channel(follower.bootstrap) as ch:
            answer = kafka_pb2_grpc.KafkaStub(ch).Fetch(request, timeout=10).partitions[0]
        assert answer.error_code != 0 and not answer.records, answer   # never the damaged bytes
    except grpc.RpcError:
        pass   # it halted before the answer went out
    assert_halted_for_storage(follower, "corrupt data")
    assert events_for(follower, "log_truncated_on_recovery", topic) == []   # trusted at open: found by the read
    found = log_events(follower, "corrupt_batch_found")
    assert len(found) == 1 and found[0]["dir"].endswith(f"/{topic}-0"), found
    assert replica_offsets(leader, topic).high_watermark == RECORDS   # the leader serves on

    follower.start()
    hw = wait_in_sync(cluster, topic)
    cut = assert_cut_on_recovery(follower, topic, damaged_offset)
    assert hw == RECORDS and [v for _, v in compare_replicas(cluster, topic, hw)] == values
    print(f"\n[flipped byte, cleanly stopped follower] found by the read at start, broker {follower.broker_id} "
          f"halted; the next start cut {cut[0]['bytes_cut']} B at {damaged_offset} and it re-fetched them: "
          f"3 identical copies of {RECORDS}")


def test_a_data_dir_that_cannot_be_read_at_start_is_one_line_and_exit_3(fresh_cluster):
    """A segment file replaced by a directory while the broker was down: the start-up's log
    loading fails; kbroker says so in one line and exits EXIT_LOG_DIR_FAILURE (the supervisor
    restarts that code), never a traceback."""
    cluster = fresh_cluster(1, {"min.insync.replicas": 1})
    broker = cluster.brokers[1].start()
    topic = "unreadable"
    create_topic(cluster, topic, 1, 1)
    assert len(produce_acked(broker, topic, 3)) == 3
    assert broker.terminate() == 0
    segment = segment_files(broker, topic)[0]
    segment.unlink()
    segment.mkdir()
    r = subprocess.run([sys.executable, "-m", "broker", "--config", str(broker.config_path), "--id", "1"],
                       capture_output=True, text=True, timeout=60)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == EXIT_LOG_DIR_FAILURE, r.stderr
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    assert lines[0].startswith("kbroker: error: KAFKA_STORAGE_ERROR: cannot open log") and "Is a directory" in lines[0]
