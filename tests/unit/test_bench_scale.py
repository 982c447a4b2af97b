"""`make bench-scale`'s pure parts (bench/scale.py): the topic layout, /proc CPU arithmetic, percentiles, the
producer's failover window per partition, the victim choice, the table. No processes."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from bench.scale import (COLUMNS, SizeResult, cpu_percent, elected_at, format_table, percentile, pick_victim,
                         producer_window, stat_ticks, step_timeout, topic_layout)
from broker.metadata.topic_rules import MAX_PARTITIONS_PER_TOPIC

# ---- layout -------------------------------------------------------------------------------------------


def test_the_default_layout_is_100_partitions_per_topic():
    layout = topic_layout(10_000)
    assert len(layout) == 100 and {n for _, n in layout} == {100}
    assert len({t for t, _ in layout}) == 100                       # distinct names
    assert topic_layout(100) == [("scale-100-0", 100)]


def test_a_remainder_goes_one_each_to_the_first_topics():
    layout = topic_layout(250, topics=3)
    assert [n for _, n in layout] == [84, 83, 83]
    assert sum(n for _, n in topic_layout(1_234)) == 1_234


def test_a_topic_over_the_per_topic_limit_is_refused_before_any_cluster_starts():
    with pytest.raises(ValueError, match="per topic"):
        topic_layout(MAX_PARTITIONS_PER_TOPIC + 1, topics=1)
    assert topic_layout(MAX_PARTITIONS_PER_TOPIC, topics=1)[0][1] == MAX_PARTITIONS_PER_TOPIC
    with pytest.raises(ValueError):
        topic_layout(10, topics=11)


def test_the_default_step_timeout_grows_with_the_size():
    assert step_timeout(100) == pytest.approx(130)
    assert step_timeout(10_000) == pytest.approx(1_120)


# ---- CPU and percentiles ------------------------------------------------------------------------------


def test_stat_ticks_adds_utime_and_stime_even_with_a_command_name_holding_spaces_and_parentheses():
    # fields 1..17 of /proc/<pid>/stat; utime (14) = 150, stime (15) = 50
    stat = "4242 (python -m (x)) S 1 4242 4242 0 -1 4194304 900 0 0 0 150 50 0 0 20 0 5 0 100 1000 300"
    assert stat_ticks(stat) == 200


def test_cpu_percent_is_of_one_core():
    assert cpu_percent(1_000, 1_050, 100, 10.0) == pytest.approx(5.0)     # 0.5 s of CPU in 10 s
    assert cpu_percent(0, 2_000, 100, 10.0) == pytest.approx(200.0)       # two cores busy
    assert cpu_percent(7, 7, 100, 10.0) == 0


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([5.0, 1.0], 0.5) == 1.0


# ---- the kill round -----------------------------------------------------------------------------------


def test_the_producer_window_is_the_longest_per_partition_gap_among_the_victims_partitions():
    acks = {("t", 0): [0.0, 0.1, 0.2, 1.5, 1.6, 1.7],        # the victim's: 0.2 -> 1.5 across the kill at 0.25
            ("t", 1): [0.0, 0.1, 0.2, 0.9, 1.0, 1.1],        # the victim's: 0.2 -> 0.9
            ("t", 2): [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]}        # another broker's: not counted
    w = producer_window(acks, [("t", 0), ("t", 1)], killed_at=0.25)
    assert w.window_s == pytest.approx(1.3)
    assert w.median_window_s == pytest.approx(1.0)
    assert w.partitions_without_window == 0
    assert w.baseline_gap_s == pytest.approx(0.1)             # gaps before the kill: the round period


def test_a_victim_partition_without_an_ack_after_the_kill_is_counted_not_guessed():
    w = producer_window({("t", 0): [0.0, 0.1], ("t", 1): [0.0, 0.1, 0.6]}, [("t", 0), ("t", 1)], 0.2)
    assert w.window_s == pytest.approx(0.5)
    assert w.partitions_without_window == 1
    empty = producer_window({("t", 0): []}, [("t", 0)], 0.2)
    assert empty.window_s is None and empty.baseline_gap_s is None


def test_the_stall_one_ack_after_the_kill_still_counts():
    # the answer to the record sent before the kill is stamped just after it; the stall comes next
    w = producer_window({("t", 0): [0.0, 0.1, 0.201, 2.0, 2.1]}, [("t", 0)], killed_at=0.2)
    assert w.window_s == pytest.approx(1.799)


def test_victims_rotate_among_the_brokers_leading_about_a_third():
    counts = Counter({1: 34, 2: 33, 3: 33})
    assert pick_victim(counts, []) == 1
    assert pick_victim(counts, [1]) == 2
    assert pick_victim(counts, [1, 2]) == 3
    assert pick_victim(Counter({1: 60, 2: 30, 3: 10}), [1]) == 1     # only one leads near the most


# ---- the table ----------------------------------------------------------------------------------------


def test_the_table_has_a_row_per_size_and_a_targets_row():
    ok = SizeResult(100, topic_layout(100), figures={"all_serving_s": 2.5, "rss_mb_max": 71.6,
                                                    "led_again_s": [0.5, 3.0, 0.7], "idle_cpu_pct_max": 6.25,
                                                    "producer_window_s": [None, 1.0]})
    cut = SizeResult(1_000, topic_layout(1_000), status="timeout", reason="create: timed out after 90 s",
                     figures={"all_serving_s": "timeout"})
    lines = format_table([ok, cut]).splitlines()
    header, row, row2, targets = lines[:4]
    assert len(header.split("  ")) >= len(COLUMNS)
    assert row.split()[0] == "100" and "2.50" in row and "72" in row
    assert "0.70" in row                  # kill rounds: the median
    assert "6.2!" in row                  # past the 5 % target
    assert "1.00" in row                  # a round without a window is left out of the median
    assert "timeout" in row2 and row2.split()[0] == "1,000"
    assert targets.startswith("target") and "<= 30" in targets and "<= 300" in targets
    assert lines[-1] == "1,000 partitions: timeout: create: timed out after 90 s"


def test_a_kill_figure_that_only_timed_out_shows_the_status():
    r = SizeResult(1_000, topic_layout(1_000), status="timeout", reason="kill-1: ...",
                   figures={"led_again_s": [0.9], "isr_back_s": ["timeout"]})
    row = format_table([r]).splitlines()[1]
    assert "0.90" in row and "timeout" in row


def test_a_step_that_fails_after_its_deadline_is_a_timeout_and_one_that_fails_before_is_an_error():
    from bench.scale import StepFailed, run_step

    def late(deadline, out):
        out["partial"] = 1.0
        while time.monotonic() < deadline:
            time.sleep(0.01)
        raise RuntimeError("flush: 0.1 s left")

    def early(deadline, out):
        raise RuntimeError("refused")

    out: dict = {}
    with pytest.raises(StepFailed) as late_failure:
        run_step("w2", late, 0.05, out)
    assert late_failure.value.status == "timeout" and out == {"partial": 1.0}
    with pytest.raises(StepFailed) as early_failure:
        run_step("w2", early, 30, {})
    assert early_failure.value.status == "error" and "refused" in early_failure.value.reason


# ---- led again: read from the controller's election events ----------------------------------------------


class _LoggedBroker:
    def __init__(self, log_path):
        self.log_path = log_path


class _LoggedCluster:
    def __init__(self, *paths):
        self.brokers = {i: _LoggedBroker(p) for i, p in enumerate(paths, 1)}


def test_led_again_reads_single_and_per_topic_election_events_and_takes_each_partitions_first(tmp_path):
    """A big batch's elections are one leaders_elected per topic (logging_setup.log_partitions); a small one's
    leader_elected each. 'Led again' is the last partition's first election after the kill."""
    def event(**fields) -> str:
        return json.dumps(fields) + "\n"
    (tmp_path / "b1.log").write_text(
        event(event="leader_elected", topic="a", partition=0, committed_at_ms=90_000)     # before the kill
        + event(event="leaders_elected", topic="a", partitions=3, partition_ranges="0-1,5", committed_at_ms=101_000)
        + "not json at all, no election\n"
        + event(event="leader_elected", topic="b", partition=2, committed_at_ms=102_500))
    (tmp_path / "b2.log").write_text(event(event="leader_elected", topic="a", partition=5, committed_at_ms=103_000))
    cluster = _LoggedCluster(tmp_path / "b1.log", tmp_path / "b2.log")
    assert elected_at(cluster, {("a", 0), ("a", 5), ("b", 2)}, since_wall=100.0) == 102.5
    assert elected_at(cluster, {("a", 0), ("a", 1)}, since_wall=100.0) == 101.0
    assert elected_at(cluster, {("a", 2)}, since_wall=100.0) is None    # never elected: no guess
