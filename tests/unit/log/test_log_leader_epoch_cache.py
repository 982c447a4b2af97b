"""The leader-epoch cache: Kafka's file format and OffsetsForLeaderEpoch arithmetic."""

import pytest

from broker.log.leader_epoch_cache import EpochEntry, LeaderEpochCache


def entries(cache):
    return [(e.epoch, e.start_offset) for e in cache.entries]


@pytest.fixture
def path(tmp_path):
    return tmp_path / "leader-epoch-checkpoint"


def test_file_is_written_in_kafkas_format_and_reloaded(path):
    cache = LeaderEpochCache(path)
    assert cache.latest_epoch == -1 and not cache.file_ok
    cache.assign(3, 0)
    cache.assign(5, 120)
    assert path.read_text() == "0\n2\n3 0\n5 120\n"
    again = LeaderEpochCache(path)
    assert again.file_ok and entries(again) == [(3, 0), (5, 120)] and again.latest_epoch == 5
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_assign_same_epoch_is_a_noop_and_higher_appends(path):
    cache = LeaderEpochCache(path)
    assert cache.assign(1, 0)
    assert not cache.assign(1, 10)
    assert cache.assign(2, 10)
    assert entries(cache) == [(1, 0), (2, 10)]


def test_assign_drops_entries_it_contradicts(path):
    cache = LeaderEpochCache(path)
    cache.assign(1, 0)
    cache.assign(7, 10)          # became leader at 10, wrote nothing
    cache.assign(6, 10)          # then copied a leader's epoch-6 batches from 10
    assert entries(cache) == [(1, 0), (6, 10)]
    assert LeaderEpochCache(path).entries == [EpochEntry(1, 0), EpochEntry(6, 10)]


def test_negative_values_are_refused(path):
    with pytest.raises(ValueError):
        LeaderEpochCache(path).assign(-1, 0)


@pytest.mark.parametrize("requested, expected", [
    (-1, (-1, -1)),      # undefined epoch
    (1, (-1, -1)),       # below the first epoch we know
    (2, (2, 10)),        # a known epoch: ends where the next starts
    (3, (2, 10)),        # between two known epochs: the one below, ending where the next starts
    (4, (4, 30)),
    (5, (4, 30)),
    (6, (6, 99)),        # the latest: still being written, ends at the log end
    (7, (-1, -1)),       # above the latest
])
def test_end_offset_for(path, requested, expected):
    cache = LeaderEpochCache(path)
    for epoch, start in [(2, 0), (4, 10), (6, 30)]:
        cache.assign(epoch, start)
    assert cache.end_offset_for(requested, log_end_offset=99) == expected


def test_end_offset_for_with_no_entries(path):
    assert LeaderEpochCache(path).end_offset_for(0, 10) == (-1, -1)


def test_truncate_from_end(path):
    cache = LeaderEpochCache(path)
    for epoch, start in [(1, 0), (2, 10), (3, 20)]:
        cache.assign(epoch, start)
    cache.truncate_from_end(21)
    assert entries(cache) == [(1, 0), (2, 10), (3, 20)]
    cache.truncate_from_end(10)
    assert entries(cache) == [(1, 0)]
    assert entries(LeaderEpochCache(path)) == [(1, 0)]


def test_truncate_from_start_moves_the_last_entry_below_up(path):
    cache = LeaderEpochCache(path)
    for epoch, start in [(1, 0), (2, 10), (3, 20)]:
        cache.assign(epoch, start)
    cache.truncate_from_start(15)
    assert entries(cache) == [(2, 15), (3, 20)]
    cache.truncate_from_start(20)
    assert entries(cache) == [(3, 20)]
    cache.truncate_from_start(25)
    assert entries(cache) == [(3, 25)]
    assert entries(LeaderEpochCache(path)) == [(3, 25)]


@pytest.mark.parametrize("content", ["", "0\n", "1\n0\n", "0\n2\n1 0\n", "0\n2\n1 0\n1 5\n",
                                     "0\n2\n2 0\n1 5\n", "0\n1\nx y\n", "0\n1\n1\n"])
def test_garbled_file_loads_empty_and_is_flagged(path, content):
    path.write_text(content)
    cache = LeaderEpochCache(path)
    assert cache.entries == [] and not cache.file_ok
