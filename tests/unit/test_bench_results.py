"""`make bench`'s pure parts (bench/stats.py): summaries against targets, the failover window,
lost and duplicated records, the table."""

from __future__ import annotations

import pytest

from bench.stats import Figure, ReadBack, Summary, Target, failover_window, read_back, table


# ---- summaries and targets ----------------------------------------------------------


def test_summary_is_min_median_max_of_the_repetitions():
    s = Summary((3.0, 1.0, 2.0))
    assert (s.min, s.median, s.max) == (1.0, 2.0, 3.0)
    assert Summary((1.0, 2.0, 10.0, 4.0)).median == 3.0   # even count: mean of the middle two
    assert Summary((7.5,)).median == 7.5


@pytest.mark.parametrize("values, met", [((1.0, 2.0, 50.0), True),    # one slow run does not fail a median
                                         ((1.5, 2.5, 3.0), False),
                                         ((2.0,), True)])                # the bound itself meets it
def test_an_upper_bound_is_judged_on_the_median(values, met):
    assert Target(2.0).met(Summary(values)) is met


def test_a_lower_bound_needs_the_median_at_or_above_it():
    target = Target(200_000, higher_is_better=True)
    assert target.met(Summary((150_000.0, 210_000.0, 220_000.0)))
    assert not target.met(Summary((150_000.0, 160_000.0, 220_000.0)))


def test_a_target_judged_on_the_max_fails_on_a_single_bad_repetition():
    lost = Target(0, judged_on="max")
    assert lost.met(Summary((0.0, 0.0, 0.0)))
    assert not lost.met(Summary((0.0, 1.0, 0.0)))


def test_figure_json_has_the_summary_the_target_and_the_verdict():
    f = Figure("w2_records_per_s", "W2", "records/s", (190_000.0, 205_000.0, 230_000.0),
               Target(200_000, higher_is_better=True), 0)
    assert f.as_json() == {"min": 190_000.0, "median": 205_000.0, "max": 230_000.0,
                           "values": [190_000.0, 205_000.0, 230_000.0], "unit": "records/s",
                           "target": {"op": ">=", "bound": 200_000, "judged_on": "median"}, "met": True}
    assert Figure("w2_mb_per_s", "W2", "MB/s", (20.0,)).as_json()["met"] is None   # no target: no verdict


# ---- the failover window ------------------------------------------------------------


def test_window_runs_from_the_last_ack_before_the_kill_to_the_first_after():
    assert failover_window([0.0, 0.1, 0.2, 1.05, 1.06], kill_time=0.25) == pytest.approx(0.85)


def test_window_does_not_depend_on_the_order_the_acks_are_listed_in():
    assert failover_window([1.06, 0.2, 1.05, 0.0], kill_time=0.25) == pytest.approx(0.85)


def test_an_answer_stamped_just_after_the_kill_does_not_hide_the_stall_behind_it():
    # 0.26 arrived before the kill but was stamped after it; the failover is the gap 0.26 -> 1.05
    assert failover_window([0.0, 0.1, 0.2, 0.26, 1.05, 1.06], kill_time=0.25) == pytest.approx(0.79)


def test_only_the_first_acks_after_the_kill_are_looked_at():
    # a later pause (2.0 -> 4.0) is not the failover
    assert failover_window([0.2, 0.3, 0.31, 0.32, 2.0, 4.0], kill_time=0.25, look_ahead=3) == pytest.approx(0.1)


def test_an_ack_stamped_at_the_kill_counts_as_before_it():
    assert failover_window([0.1, 0.25, 0.9], kill_time=0.25) == pytest.approx(0.65)


@pytest.mark.parametrize("acks", [[], [0.1, 0.2], [0.3, 0.4]])
def test_no_window_without_an_ack_on_both_sides(acks):
    assert failover_window(acks, kill_time=0.25) is None


# ---- read back ----------------------------------------------------------------------


def test_read_back_counts_missing_acknowledged_records_and_extra_copies():
    acked = [b"0", b"1", b"2", b"3"]
    assert read_back(acked, [b"0", b"1", b"2", b"3"]) == ReadBack(lost=0, duplicates=0)
    assert read_back(acked, [b"0", b"2", b"2", b"2", b"3"]) == ReadBack(lost=1, duplicates=2)


def test_a_stored_record_that_was_never_acknowledged_is_neither_lost_nor_a_duplicate():
    # the send in flight at the kill may be stored although its ack never came
    assert read_back([b"0", b"1"], [b"0", b"1", b"2"]) == ReadBack(lost=0, duplicates=0)


# ---- table --------------------------------------------------------------------------


def test_table_has_a_row_per_figure_with_target_and_verdict():
    lines = table([Figure("w1_p50_ms", "W1 p50", "ms", (1.5, 2.5, 3.0), Target(2.0), 2),
                   Figure("w2", "W2", "records/s", (199_000.0, 210_000.0, 230_000.0),
                          Target(200_000, higher_is_better=True), 0),
                   Figure("w2_mb", "W2", "MB/s", (20.0,), None, 1)]).splitlines()
    assert lines[0].split() == ["figure", "target", "min", "median", "max", "met?"]
    assert lines[1].split() == ["W1", "p50", "(ms)", "<=", "2", "ms", "(median)", "1.50", "2.50", "3.00", "NO"]
    assert lines[2].split()[-4:] == ["199,000", "210,000", "230,000", "yes"]
    assert ">= 200,000 records/s (median)" in lines[2]
    assert lines[3].split()[-5:] == ["-", "20.0", "20.0", "20.0", "-"]
    assert len({len(line.rstrip()) for line in lines}) == 1   # columns line up
