"""kclient perf produce / consume against one real broker: Kafka's lines, and the records really written."""

from __future__ import annotations

import re

import pytest

from client import Admin, Consumer
from tests.integration.cluster import kclient
from tests.integration.test_kclient import ok, one_line_error

pytestmark = pytest.mark.integration

RECORDS = 20000
SUMMARY = re.compile(r"(\d+) records sent, \d+\.\d{6} records/sec \(\d+\.\d\d MB/sec\), \d+\.\d\d ms avg latency, "
                     r"\d+\.\d\d ms max latency, \d+ ms 50th, \d+ ms 95th, \d+ ms 99th, \d+ ms 99\.9th\.")
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3}"
CSV = re.compile(rf"{STAMP}, {STAMP}, (\d+\.\d{{4}}), \d+\.\d{{4}}, (\d+), \d+\.\d{{4}}, 0, \d+, \d+\.\d{{4}}, "
                 r"\d+\.\d{4}")


def count_records(bootstrap: str, topic: str, at_least: int) -> int:
    count = 0
    with Consumer(bootstrap, topic, from_beginning=True) as consumer:
        for _ in range(30):
            count += len(consumer.poll(timeout=1.0))
            if count >= at_least:
                break
        return count + len(consumer.poll(timeout=0.2))  # anything more would be a duplicate


def test_perf_produce_then_consume(single_broker):
    b = single_broker.bootstrap
    with Admin(b) as admin:
        admin.create_topic("perf", partitions=2, replication_factor=1)
    produced = ok(kclient("perf", "produce", "--bootstrap", b, "--topic", "perf", "--num-records", str(RECORDS),
                          "--record-size", "100", "--throughput", "-1", "--producer-props", "linger.ms=10"))
    summary = produced.splitlines()[-1]
    assert SUMMARY.fullmatch(summary), produced
    assert summary.startswith(f"{RECORDS} records sent, ")

    consumed = ok(kclient("perf", "consume", "--bootstrap", b, "--topic", "perf", "--messages", str(RECORDS)))
    header, values = consumed.splitlines()
    assert header.startswith("start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg")
    match = CSV.fullmatch(values)
    assert match, values
    assert match.group(2) == str(RECORDS) and match.group(1) == f"{RECORDS * 100 / 1024 / 1024:.4f}"

    assert count_records(b, "perf", RECORDS) == RECORDS  # the perf tool really wrote them, once each


def test_perf_errors_are_short_and_without_traceback(single_broker):
    b = single_broker.bootstrap
    bad_size = kclient("perf", "produce", "--bootstrap", b, "--topic", "x", "--num-records", "1", "--record-size", "0")
    err = bad_size.stderr.decode()
    assert bad_size.returncode == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == "kclient perf produce: error: argument --record-size: must be a positive integer, not 0"

    unknown = kclient("perf", "produce", "--bootstrap", b, "--topic", "absent", "--num-records", "10",
                      "--record-size", "10", "--producer-props", "max.block.ms=500")
    assert unknown.returncode == 1
    assert one_line_error(unknown).startswith("Error: UNKNOWN_TOPIC_OR_PARTITION: Topic absent not present in metadata")

    assert one_line_error(kclient("perf", "consume", "--bootstrap", b, "--topic", "absent", "--messages", "1")) == \
        "Error: UNKNOWN_TOPIC_OR_PARTITION: Topic 'absent' does not exist."


def test_perf_consume_gives_up_after_timeout(single_broker):
    b = single_broker.bootstrap
    with Admin(b) as admin:
        admin.create_topic("perf.few", partitions=1, replication_factor=1)
    ok(kclient("perf", "produce", "--bootstrap", b, "--topic", "perf.few", "--num-records", "5", "--record-size", "10"))
    short = kclient("perf", "consume", "--bootstrap", b, "--topic", "perf.few", "--messages", "10", "--timeout", "1000")
    assert one_line_error(short) == "Error: KafkaTimeoutError: no record for 1000 ms (--timeout): read 5 of 10 messages"
    assert short.returncode == 1
