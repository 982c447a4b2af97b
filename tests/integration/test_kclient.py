"""kclient against a real broker: Kafka's output formats, and one-line errors with no traceback."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.integration.cluster import free_ports, kclient


def ok(result) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def one_line_error(result) -> str:
    assert result.returncode != 0
    err = result.stderr.decode()
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_topics_create_list_describe_delete(single_broker):
    b = single_broker.bootstrap
    assert ok(kclient("topics", "--bootstrap", b, "--create", "--topic", "email.send", "--partitions", "2",
                      "--replication-factor", "1", "--config", "retention.ms=100000")) == "Created topic email.send.\n"
    assert "email.send" in ok(kclient("topics", "--bootstrap", b, "--list")).splitlines()
    described = ok(kclient("topics", "--bootstrap", b, "--describe", "--topic", "email.send")).splitlines()
    assert described[0] == ("Topic: email.send\tPartitionCount: 2\tReplicationFactor: 1\t"
                            "Configs: retention.ms=100000")
    assert described[1:] == ["\tTopic: email.send\tPartition: 0\tLeader: 1\tReplicas: 1\tIsr: 1",
                             "\tTopic: email.send\tPartition: 1\tLeader: 1\tReplicas: 1\tIsr: 1"]
    assert ok(kclient("topics", "--bootstrap", b, "--delete", "--topic", "email.send")) == ""
    assert "email.send" not in ok(kclient("topics", "--bootstrap", b, "--list")).splitlines()


def test_topic_errors_are_one_line(single_broker):
    b = single_broker.bootstrap
    ok(kclient("topics", "--bootstrap", b, "--create", "--topic", "dup", "--partitions", "1"))
    assert one_line_error(kclient("topics", "--bootstrap", b, "--create", "--topic", "dup")) == \
        "Error while executing topic command : TOPIC_ALREADY_EXISTS: Topic 'dup' already exists."
    assert ok(kclient("topics", "--bootstrap", b, "--create", "--topic", "dup", "--if-not-exists")) == ""
    assert "INVALID_TOPIC_EXCEPTION" in one_line_error(kclient("topics", "--bootstrap", b, "--create",
                                                               "--topic", "bad name"))
    assert "INVALID_PARTITIONS" in one_line_error(kclient("topics", "--bootstrap", b, "--create", "--topic",
                                                          "p0", "--partitions", "0"))
    assert "INVALID_REPLICATION_FACTOR" in one_line_error(kclient("topics", "--bootstrap", b, "--create", "--topic",
                                                                  "rf3", "--replication-factor", "3"))
    assert "INVALID_CONFIG" in one_line_error(kclient("topics", "--bootstrap", b, "--create", "--topic", "cfg",
                                                      "--config", "no.such.config=1"))
    assert "UNKNOWN_TOPIC_OR_PARTITION" in one_line_error(kclient("topics", "--bootstrap", b, "--describe",
                                                                  "--topic", "absent"))


def test_produce_then_consume_lines(single_broker):
    b = single_broker.bootstrap
    ok(kclient("topics", "--bootstrap", b, "--create", "--topic", "lines", "--partitions", "1"))
    produced = kclient("produce", "--bootstrap", b, "--topic", "lines", input=b"hello\nworld\nthird line\n")
    assert ok(produced) == "" and produced.stderr == b""  # no '>' prompt when stdin is not a terminal
    consumed = kclient("consume", "--bootstrap", b, "--topic", "lines", "--from-beginning", "--max-messages", "3")
    assert ok(consumed) == "hello\nworld\nthird line\n"
    assert consumed.stderr.decode().strip() == "Processed a total of 3 messages"


def test_keys_offsets_and_timeout(single_broker):
    b = single_broker.bootstrap
    ok(kclient("topics", "--bootstrap", b, "--create", "--topic", "keyed", "--partitions", "1"))
    ok(kclient("produce", "--bootstrap", b, "--topic", "keyed", "--key-separator", ":", input=b"user-7:hello\nk2:v2\n"))
    out = ok(kclient("consume", "--bootstrap", b, "--topic", "keyed", "--from-beginning", "--print-key",
                     "--print-partition", "--print-offset", "--timeout-ms", "1500"))
    assert out == "Partition:0\tOffset:0\tuser-7\thello\nPartition:0\tOffset:1\tk2\tv2\n"
    # --offset with --partition starts there.
    assert ok(kclient("consume", "--bootstrap", b, "--topic", "keyed", "--partition", "0", "--offset", "1",
                      "--max-messages", "1")) == "v2\n"
    missing_sep = kclient("produce", "--bootstrap", b, "--topic", "keyed", "--key-separator", ":", input=b"nokey\n")
    assert "No key separator found on line number 1: 'nokey'" in one_line_error(missing_sep)


def test_consume_from_a_named_replica(single_broker):
    b = single_broker.bootstrap
    ok(kclient("topics", "--bootstrap", b, "--create", "--topic", "onreplica", "--partitions", "1"))
    ok(kclient("produce", "--bootstrap", b, "--topic", "onreplica", input=b"everywhere\n"))
    assert ok(kclient("consume", "--bootstrap", b, "--topic", "onreplica", "--from-beginning", "--replica", "1",
                      "--max-messages", "1")) == "everywhere\n"


def test_produce_errors_are_one_line(single_broker):
    b = single_broker.bootstrap
    unknown = kclient("produce", "--bootstrap", b, "--topic", "nowhere", "--max-block-ms", "300", input=b"x\n")
    line = one_line_error(unknown)
    assert "UNKNOWN_TOPIC_OR_PARTITION" in line and "nowhere" in line
    ok(kclient("topics", "--bootstrap", b, "--create", "--topic", "tiny", "--config", "max.message.bytes=100"))
    too_big = kclient("produce", "--bootstrap", b, "--topic", "tiny", input=b"y" * 500 + b"\n")
    assert "RECORD_TOO_LARGE" in one_line_error(too_big)


def test_unreachable_bootstrap_is_one_line_naming_addresses():
    a, b = free_ports(2)
    for args in (["topics", "--list"], ["cluster"], ["consume", "--topic", "t", "--timeout-ms", "100"],
                 ["produce", "--topic", "t"]):
        line = one_line_error(kclient(*args, "--bootstrap", f":{a},:{b}", input=b"x\n"))
        assert f"127.0.0.1:{a}" in line and f"127.0.0.1:{b}" in line, line


def test_cluster_and_trace(single_broker):
    b = single_broker.bootstrap
    out = ok(kclient("cluster", "--bootstrap", b))
    assert out.splitlines() == ["Cluster ID: raftka-test", "Controller: 1", "1 brokers:",
                                f"  broker 1 at 127.0.0.1:{single_broker.port}: alive, controller"]
    ok(kclient("topics", "--bootstrap", b, "--create", "--topic", "traced", "--partitions", "1"))
    traced = kclient("produce", "--bootstrap", b, "--topic", "traced", "--trace", input=b"hop\n")
    ok(traced)
    trace = traced.stderr.decode()
    assert re.search(rf"Metadata .*-> 127\.0\.0\.1:{single_broker.port}", trace), trace
    assert re.search(rf"Produce .*<- broker 1 \(127\.0\.0\.1:{single_broker.port}\): traced-0 stored at offset 0",
                     trace), trace


def test_installed_console_scripts_exist():
    bin_dir = Path(sys.executable).parent
    for script in ("kclient", "kbroker"):
        assert (bin_dir / script).exists(), f"{script} is not installed next to {sys.executable}"
