"""kclient perf's pure pieces: latency statistics, the throttle, Kafka's output lines, the settings."""

from __future__ import annotations

import argparse
import re
from concurrent.futures import Future
from datetime import datetime

import pytest

from client.errors import RequestTimedOutError
from client.perf import (CONSUMER_HEADER, LatencyStats, ProducerStats, Throttler, format_consumer, format_progress,
                         format_summary, producer_prop, producer_settings)


def stats_of(latencies_ms, **kw) -> LatencyStats:
    stats = LatencyStats(len(latencies_ms), **kw)
    for ms in latencies_ms:
        stats.record(ms)
    return stats


# ---- LatencyStats -------------------------------------------------------------------


def test_percentiles_follow_kafkas_index_rule():
    # sorted[int(count * p)]: for 0..999 ms the value at the index is the index itself.
    assert stats_of(range(1000)).percentiles(0.5, 0.95, 0.99, 0.999) == [500, 950, 990, 999]
    # ... so for 1..1000 it is one above (Kafka's rule, not a nearest-rank rounding).
    assert stats_of(range(1, 1001)).percentiles(0.5, 0.95, 0.99, 0.999) == [501, 951, 991, 1000]


def test_percentiles_do_not_depend_on_arrival_order():
    assert stats_of([900, 5, 70, 1, 300]).percentiles(0.5, 0.999) == [70, 900]


def test_avg_and_max_keep_sub_millisecond_precision():
    stats = stats_of([0.25, 1.5, 4.25])
    assert (stats.count, stats.avg_ms, stats.max_ms) == (3, 2.0, 4.25)


def test_empty_stats_report_zeros():
    stats = LatencyStats(10)
    assert (stats.count, stats.avg_ms, stats.max_ms, stats.percentiles(0.5, 0.99)) == (0, 0.0, 0.0, [0.0, 0.0])


def test_more_samples_than_expected_grow_the_array():
    stats = LatencyStats(2)
    for ms in (3, 1, 2, 4):
        stats.record(ms)
    assert stats.count == 4 and stats.percentiles(0.5) == [3]


def test_a_window_keeps_no_samples():
    window = stats_of([1, 2, 3], keep_samples=False)
    assert len(window.samples) == 0 and (window.count, window.avg_ms, window.max_ms) == (3, 2.0, 3.0)


# ---- Throttler ----------------------------------------------------------------------


def test_throttler_sleeps_until_the_schedule():
    throttler = Throttler(100, start=10.0)
    assert throttler.pause(50, now=10.1) == pytest.approx(0.4)   # 50 records are due at 0.5 s
    assert throttler.pause(50, now=10.6) == 0.0                    # behind: no sleep, catch up


def test_throttler_skips_sleeps_shorter_than_kafkas_minimum():
    assert Throttler(1000, start=0.0).pause(1, now=0.0) == 0.0      # 1 ms ahead: less than 2 ms
    assert Throttler(1000, start=0.0).pause(3, now=0.0) == pytest.approx(0.003)


def test_negative_throughput_never_sleeps():
    throttler = Throttler(-1, start=0.0)
    assert all(throttler.pause(n, now=0.0) == 0.0 for n in (1, 10**6, 10**9))


# ---- output lines -------------------------------------------------------------------

NUM = r"\d+\.\d"


def test_progress_line_is_kafkas_print_window():
    window = stats_of([2.34] * 49999 + [45.0], keep_samples=False)
    line = format_progress(window, 5.0, 100)
    assert line == "50000 records sent, 10000.0 records/sec (0.95 MB/sec), 2.3 ms avg latency, 45.0 ms max latency."
    assert re.fullmatch(rf"\d+ records sent, {NUM} records/sec \({NUM}\d MB/sec\), {NUM} ms avg latency, "
                        rf"{NUM} ms max latency\.", line)


def test_summary_line_is_kafkas_print_total():
    stats = stats_of(range(1000))
    line = format_summary(stats, 0.1, 100)
    assert line == ("1000 records sent, 10000.000000 records/sec (0.95 MB/sec), 499.50 ms avg latency, "
                    "999.00 ms max latency, 500 ms 50th, 950 ms 95th, 990 ms 99th, 999 ms 99.9th.")


def test_summary_percentiles_are_whole_milliseconds_rounded_down():
    line = format_summary(stats_of([0.4, 1.9, 2.7]), 1.0, 10)
    assert line.endswith(", 1 ms 50th, 2 ms 95th, 2 ms 99th, 2 ms 99.9th.")


def test_consumer_lines_are_kafkas_header_and_csv():
    start = 1_700_000_000_042
    header, values = format_consumer(start, start + 2000, 20 * 1024 * 1024, 20000).split("\n")
    assert header == CONSUMER_HEADER
    stamp = datetime.fromtimestamp(start / 1000).strftime("%Y-%m-%d %H:%M:%S")   # local time, like Kafka
    end = datetime.fromtimestamp(start / 1000 + 2).strftime("%Y-%m-%d %H:%M:%S")
    assert values == (f"{stamp}:042, {end}:042, 20.0000, 10.0000, 20000, 10000.0000, 0, 2000, 10.0000, "
                      "10000.0000")


# ---- settings -----------------------------------------------------------------------


def test_producer_props_map_kafka_names_to_producer_keywords():
    props = [producer_prop(p) for p in ("linger.ms=20", "batch.size=65536", "enable.idempotence=false",
                                        "acks=1", "max.in.flight.requests.per.connection=1",
                                        "bootstrap.servers=h:1")]
    assert producer_settings(":9092", "all", props) == {
        "bootstrap": "h:1", "acks": 1, "linger_ms": 20, "batch_size": 65536, "enable_idempotence": False,
        "max_in_flight_requests_per_connection": 1}


@pytest.mark.parametrize("text, message", [
    ("no.such.thing=1", "unknown producer config 'no.such.thing'"),
    ("linger.ms", "expected key=value"),
    ("linger.ms=soon", "invalid value for linger.ms: 'soon'"),
    ("acks=2", "invalid value for acks: '2'"),
    ("enable.idempotence=maybe", "invalid value for enable.idempotence"),
])
def test_bad_producer_props_are_argument_errors(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
        producer_prop(text)


# ---- ProducerStats ------------------------------------------------------------------


def done(error: BaseException | None = None) -> Future:
    f: Future = Future()
    f.set_exception(error) if error else f.set_result(None)
    return f


def test_producer_stats_count_acks_and_failures_apart():
    stats = ProducerStats(expected=3, start=0.0, interval_s=5.0)
    stats.acked(0.0, done(), now=0.002)
    stats.acked(0.001, done(RequestTimedOutError("slow")), now=0.5)
    assert not stats.all_done.is_set()
    stats.acked(0.001, done(), now=0.005)
    assert stats.all_done.is_set()
    assert (stats.total.count, stats.total.avg_ms, stats.total.max_ms) == (2, 3.0, 4.0)
    assert stats.failures == 1 and "slow" in str(stats.first_error)


def test_windows_end_on_the_interval_and_an_empty_one_runs_on():
    stats = ProducerStats(expected=10, start=0.0, interval_s=5.0)
    stats.acked(0.0, done(), now=0.010)
    assert stats.next_window(4.9) is None                 # not over yet
    window, elapsed = stats.next_window(5.0)
    assert (window.count, window.max_ms, elapsed) == (1, 10.0, 5.0)
    assert stats.next_window(10.5) is None                # nothing acked since: no line, it runs on
    stats.acked(10.0, done(), now=10.6)
    window, elapsed = stats.next_window(10.6)
    assert (window.count, elapsed) == (1, pytest.approx(5.6))
    assert stats.total.count == 2                         # the total keeps every window's records
