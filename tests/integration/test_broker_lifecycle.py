"""Broker process life: kill -9 and restart, graceful stop, recovery of a torn log, exit code 2."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

from client import Admin, Producer
from tests.integration.cluster import REPO, free_ports, wait_for
from tests.integration.test_broker_api import consume_all, fetch_raw
from client.protocol.v1 import common_pb2


def produce_acked(bootstrap: str, topic: str, values: list[bytes]) -> list[int]:
    with Producer(bootstrap, acks="all") as p:
        return [p.send(topic, v, partition=0).result(timeout=30).offset for v in values]


def test_acknowledged_records_survive_kill_9(fresh_cluster):
    broker = fresh_cluster(1).brokers[1].start()
    Admin(broker.bootstrap).create_topic("durable", partitions=1, replication_factor=1)
    values = [f"v{i}".encode() for i in range(500)]
    assert produce_acked(broker.bootstrap, "durable", values) == list(range(500))
    broker.kill()
    broker.start()
    got = consume_all(broker.bootstrap, "durable", 500)
    acked, found = len(values), [r.value for r in got]
    assert found == values, f"acked {acked}, found {len(found)}"
    # The log goes on at the right offset after the restart.
    assert produce_acked(broker.bootstrap, "durable", [b"after"]) == [500]


def test_sigterm_stops_gracefully_and_keeps_everything(fresh_cluster):
    broker = fresh_cluster(1).brokers[1].start()
    Admin(broker.bootstrap).create_topic("graceful", partitions=1, replication_factor=1)
    produce_acked(broker.bootstrap, "graceful", [b"a", b"b"])
    assert broker.terminate() == 0
    events = [json.loads(line)["event"] for line in broker.log().splitlines() if line.startswith("{")]
    assert "broker_stopped" in events
    assert (broker.data_dir / "graceful-0" / "high-watermark-checkpoint").exists()
    broker.start()
    assert [r.value for r in consume_all(broker.bootstrap, "graceful", 2)] == [b"a", b"b"]


def test_a_burst_of_sigterms_still_stops_cleanly(fresh_cluster):
    """honcho signals a supervisor and its broker, and the supervisor forwards one more: two SIGTERMs. A
    handler that set an Event deadlocked the main thread when the second landed inside the first one's
    Event.set (it holds the Event's lock), and the broker was killed 5 s later, before its clean stop."""
    broker = fresh_cluster(1).brokers[1].start()
    Admin(broker.bootstrap).create_topic("burst", partitions=1, replication_factor=1)
    produce_acked(broker.bootstrap, "burst", [b"a"])
    # SIGTERMs back to back for 0.5 s from another process: one lands inside the first one's handling.
    flood = ("import os, signal, sys, time\nend = time.monotonic() + 0.5\n"
             "while time.monotonic() < end:\n    try:\n        os.kill(int(sys.argv[1]), signal.SIGTERM)\n"
             "    except ProcessLookupError:\n        break\n")
    subprocess.run([sys.executable, "-c", flood, str(broker.proc.pid)], timeout=10, check=True)
    # Stopped, not hung; a SIGTERM that lands once the interpreter is finalizing (handlers reset) ends it
    # with -15, after its clean stop: the stop is what counts.
    assert broker.proc.wait(timeout=15) in (0, -signal.SIGTERM)
    events = [json.loads(line)["event"] for line in broker.log().splitlines() if line.startswith("{")]
    assert "broker_stopped" in events and (broker.data_dir / "clean-shutdown").exists()


def test_torn_tail_is_cut_on_restart(fresh_cluster):
    broker = fresh_cluster(1).brokers[1].start()
    Admin(broker.bootstrap).create_topic("torn", partitions=1, replication_factor=1)
    produce_acked(broker.bootstrap, "torn", [f"r{i}".encode() for i in range(20)])
    broker.kill()
    segment = sorted((broker.data_dir / "torn-0").glob("*.log"))[-1]
    size = segment.stat().st_size
    with open(segment, "ab") as f:  # half a batch, as a crash mid-write would leave
        f.write(b"\x00\x00\x00\x00\x00\x00\x00\x14\x00\x00\x01\x00" + b"\xab" * 40)
    broker.start()
    assert segment.stat().st_size == size, "the torn tail must be cut"
    assert [r.value for r in consume_all(broker.bootstrap, "torn", 20)] == [f"r{i}".encode() for i in range(20)]
    assert produce_acked(broker.bootstrap, "torn", [b"next"]) == [20]


def test_retention_by_size_moves_the_log_start(fresh_cluster):
    broker = fresh_cluster(1, {"log.retention.check.interval.ms": 100}).brokers[1].start()
    Admin(broker.bootstrap).create_topic("retained", partitions=1, replication_factor=1,
                                         config={"segment.bytes": "2000", "retention.bytes": "4000"})
    produce_acked(broker.bootstrap, "retained", [b"x" * 200 for _ in range(60)])
    first = wait_for(lambda: (r := fetch_raw(broker, "retained", 0)).error_code == common_pb2.OFFSET_OUT_OF_RANGE
                     and r, 15, "retention to delete the oldest segments")
    assert 0 < first.log_start_offset < 60
    # Retention may run again (every 100 ms) while we read, moving the start further; what is
    # read must still be one contiguous run from a log start to the last record.
    settled = wait_for(lambda: (lambda a, b: a if a == b else None)(
        fetch_raw(broker, "retained", 0).log_start_offset, fetch_raw(broker, "retained", 0).log_start_offset),
        15, "the log start to settle")
    tail = consume_all(broker.bootstrap, "retained", 60 - settled)
    offsets = [r.offset for r in tail]
    assert offsets == list(range(offsets[0], 60)) and offsets[0] >= first.log_start_offset > 0


def run_kbroker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "broker", *args], capture_output=True, timeout=30, cwd=REPO)


def test_port_in_use_exits_2_with_one_line(fresh_cluster):
    cluster = fresh_cluster(1)
    broker = cluster.brokers[1]
    formatted = sorted(p.name for p in broker.data_dir.iterdir())   # write_cluster formats every data dir
    with socket.socket() as s:
        s.bind(("127.0.0.1", broker.port))
        s.listen()
        result = run_kbroker("--config", str(broker.config_path), "--id", "1")
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "in use" in lines[0] and str(broker.port) in lines[0], lines
    assert sorted(p.name for p in broker.data_dir.iterdir()) == formatted == [".lock", "meta.properties"], (
        "nothing may be written before the port is bound")


def test_bad_config_exits_2_with_one_line(tmp_path):
    missing = run_kbroker("--config", str(tmp_path / "nope.toml"), "--id", "1")
    (tmp_path / "bad.toml").write_text("this is = = not toml")
    garbled = run_kbroker("--config", str(tmp_path / "bad.toml"), "--id", "1")
    unknown_id = run_kbroker("--config", str(REPO / "cluster.toml"), "--id", "9")
    for result, words in ((missing, "no such file"), (garbled, "not valid TOML"), (unknown_id, "broker id 9")):
        assert result.returncode == 2
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in lines[0], lines


def test_second_broker_on_the_same_data_dir_exits_2(fresh_cluster, tmp_path):
    broker = fresh_cluster(1).brokers[1].start()
    other = tmp_path / "other.toml"
    raft, inter, kafka, replication, port = free_ports(5)   # one call: distinct (separate calls may repeat one)
    other.write_text(broker.config_path.read_text()
                     .replace(f"raft_port = {broker.raft_port}", f"raft_port = {raft}")
                     .replace(f"inter_broker_port = {broker.inter_broker_port}", f"inter_broker_port = {inter}")
                     .replace(f"kafka_port = {broker.kafka_port}", f"kafka_port = {kafka}")
                     .replace(f"replication_port = {broker.replication_port}", f"replication_port = {replication}")
                     .replace(f"\nport = {broker.port}", f"\nport = {port}"))
    result = run_kbroker("--config", str(other), "--id", "1")
    assert result.returncode == 2
    assert "used by another broker" in result.stderr.decode()
    assert broker.alive()
