"""LogManager: the data dir's partitions, its lock and meta.properties."""

import pytest
import structlog

from broker.log import LogConfig, LogManager
from broker.log.manager import DataDirLockedError, InconsistentDataDirError, check_meta, parse_partition_dir_name
from broker.log.meta_properties import (REJOINING, VOTER, MetaProperties, UnformattedDataDirError,
                                        write_meta_properties)
from client.errors import InvalidTopicError
from client.record_batch import iter_batches


@pytest.fixture
def managers(tmp_path):
    """Create managers on tmp_path/data; whatever is still open is closed at the end."""
    made: list[LogManager] = []

    def _make(config: LogConfig | None = None) -> LogManager:
        m = LogManager(tmp_path / "data", config or LogConfig())
        made.append(m)
        return m

    yield _make
    for m in made:
        m.close(clean=False)


@pytest.mark.parametrize("name, expected", [
    ("orders-0", ("orders", 0)),
    ("email.send-12", ("email.send", 12)),
    ("my-topic-name-3", ("my-topic-name", 3)),
    ("noparts", None),
    ("bad topic-1", None),
    ("orders-x", None),
    ("-1", None),
])
def test_folder_names_split_on_the_last_dash(name, expected):
    assert parse_partition_dir_name(name) == expected


def test_reopen_finds_existing_partitions(managers, make_batch):
    m = managers()
    m.open(now_ms=0)
    m.get_or_create("my-topic", 0, None, 0).append_as_leader(make_batch(), 1, 0)
    m.get_or_create("my-topic", 1, LogConfig(segment_bytes=1000), 0)
    m.get_or_create("other.topic", 7, None, 0).append_as_leader(make_batch(), 1, 0)
    m.close()
    m2 = managers()
    m2.open(now_ms=0)
    assert sorted(m2.all()) == [("my-topic", 0), ("my-topic", 1), ("other.topic", 7)]
    assert m2.get("my-topic", 0).log_end_offset == 1
    assert m2.get("nope", 0) is None
    # get_or_create returns the open log and applies the topic's current config
    plog = m2.get_or_create("my-topic", 1, LogConfig(segment_bytes=2000), 0)
    assert plog is m2.get("my-topic", 1) and plog.config.segment_bytes == 2000


def test_delete_leaves_no_folder_and_leftover_deletions_are_finished(managers, make_batch, tmp_path):
    m = managers()
    m.open(0)
    m.get_or_create("orders", 0, None, 0).append_as_leader(make_batch(), 0, 0)
    assert m.delete("orders", 0)
    assert not (tmp_path / "data" / "orders-0").exists()
    assert not any(p.name.endswith(".deleted") for p in (tmp_path / "data").iterdir())
    assert m.get("orders", 0) is None
    assert not m.delete("orders", 0)
    # a deletion a crash interrupted: the renamed folder is removed at open, not loaded
    stale = tmp_path / "data" / "orders-1.0123abcd.deleted"
    stale.mkdir()
    (stale / "00000000000000000000.log").write_bytes(b"x")
    m.close()
    m2 = managers()
    m2.open(0)
    assert not stale.exists() and m2.all() == {}


def test_lock_refuses_a_second_manager_on_the_same_dir(managers, tmp_path):
    first = managers()
    first.open(0)
    second = managers()
    with pytest.raises(DataDirLockedError, match="is used by another broker process"):
        second.open(0)
    first.close()
    second.open(0)  # released on close


def test_open_checks_meta_properties_and_never_writes_it(managers, tmp_path):
    data = tmp_path / "data"
    with pytest.raises(UnformattedDataDirError):
        managers().open(0, identity=("cluster-a", 1))
    assert not data.exists(), "an unformatted data dir is refused before anything is created"
    data.mkdir()
    write_meta_properties(data, MetaProperties("cluster-a", 1, "d1", REJOINING))
    assert managers().open(0, identity=("cluster-a", 1)) == MetaProperties("cluster-a", 1, "d1", REJOINING)
    with pytest.raises(InconsistentDataDirError) as e:
        check_meta(data, "cluster-a", 2)
    assert "broker.id=1" in str(e.value) and "broker.id=2" in str(e.value)
    with pytest.raises(InconsistentDataDirError, match="cluster-b"):
        check_meta(data, "cluster-b", 1)


def test_meta_properties_of_before_format_read_as_a_voter(tmp_path):
    (tmp_path / "meta.properties").write_text("version=0\ncluster.id=cluster-a\nbroker.id=1\n")
    assert check_meta(tmp_path, "cluster-a", 1) == MetaProperties("cluster-a", 1, None, VOTER)


def test_invalid_topic_names_are_refused(managers):
    m = managers()
    m.open(0)
    with pytest.raises(InvalidTopicError):
        m.get_or_create("bad/topic", 0, None, 0)
    with pytest.raises(InvalidTopicError):
        m.get_or_create("", 0, None, 0)


def test_retention_and_high_watermark_checkpoints_for_all_logs(managers, make_batch, tmp_path):
    m = managers(LogConfig(segment_bytes=300, retention_ms=1_000))
    m.open(0)
    for p in range(2):
        plog = m.get_or_create("t", p, None, 0)
        for i in range(10):
            plog.append_as_leader(make_batch(ts=0, tag=i), 0, 0)
    m.checkpoint_high_watermarks({("t", 0): 4, ("t", 1): 9, ("gone", 0): 3})
    assert m.get("t", 0).read_high_watermark() == 4
    assert m.get("t", 1).read_high_watermark() == 9
    # partition 0 keeps what is above its HW; partition 1 has no HW bound
    deleted = m.run_retention(now_ms=10_000, high_watermarks={("t", 0): 4})
    assert deleted > 0
    assert m.get("t", 0).log_start_offset <= 4
    assert m.get("t", 1).log_start_offset == m.get("t", 1).log_end_offset == 10
    data = m.get("t", 0).read(m.get("t", 0).log_start_offset, 1 << 20)
    assert [h.last_offset for _, h in iter_batches(data)][-1] == 9


def test_logs_created_without_durable_cost_no_fsync_each_and_one_sync_makes_them_durable(managers, monkeypatch):
    """Creating many logs at once (a new topic) fsyncs nothing per log; LogManager.sync() is one syncfs of the
    data dir's filesystem. Each log is complete and readable before the sync (its topic id included)."""
    import broker.log.checkpoint as checkpoint
    import broker.log.manager as manager
    fsyncs, syncs = [], []
    real_fsync = checkpoint.os.fsync
    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    monkeypatch.setattr(manager, "sync_filesystem", lambda path: syncs.append(path))
    m = managers()
    m.open(0)
    fsyncs.clear()
    for p in range(20):
        m.get_or_create("orders", p, None, 0, topic_id="id-orders", durable=False)
    assert fsyncs == [] and syncs == []
    assert all(m.topic_id("orders", p) == "id-orders" for p in range(20))
    m.sync()
    assert syncs == [m.data_dir]
    m.get_or_create("audit", 0, None, 0, topic_id="id-audit")      # the default: fsynced on its own
    assert len(fsyncs) == 2                                          # partition.metadata and its folder


def test_sync_filesystem_runs_syncfs_on_a_real_folder(tmp_path):
    from broker.log.checkpoint import sync_filesystem
    sync_filesystem(tmp_path)   # raises OSError if the syscall fails
    with pytest.raises(OSError):
        sync_filesystem(tmp_path / "missing")


def test_a_log_holds_one_open_file_its_index_none(managers):
    """10,000 partitions must fit in a broker's open files (20,000 here): a log keeps its active segment's
    file open, its offset index only while changing it."""
    import os
    m = managers()
    m.open(0)
    before = len(os.listdir("/proc/self/fd"))
    for p in range(50):
        m.get_or_create("orders", p, None, 0, topic_id="id-orders", durable=False)
    assert len(os.listdir("/proc/self/fd")) - before == 50


# ---- one clean-shutdown marker for the data dir (Kafka's per log dir) ------------------------------------


def test_a_clean_close_leaves_one_marker_in_the_data_dir_and_the_next_load_trusts_every_log(managers, make_batch,
                                                                                           tmp_path):
    m = managers()
    m.open(0)
    for p in range(3):
        m.get_or_create("t", p, None, 0).append_as_leader(make_batch(), 1, 0)
    m.close()
    data = tmp_path / "data"
    assert (data / "clean-shutdown").exists()
    assert list(data.glob("t-*/clean-shutdown")) == []          # none per log: 10,000 files to write and remove
    with structlog.testing.capture_logs() as logs:
        m2 = managers()
        m2.open(0)
    opened = [e for e in logs if e["event"] == "log_opened"]
    assert len(opened) == 3 and all(e["clean_shutdown"] for e in opened)
    assert all(m2.get("t", p).recovery_point == 1 for p in range(3))   # trusted up to the log end
    assert not (data / "clean-shutdown").exists()               # a crash from now on must recover


def test_after_a_crash_there_is_no_marker_and_every_log_is_recovered(managers, make_batch, tmp_path):
    m = managers()
    m.open(0)
    m.get_or_create("t", 0, None, 0).append_as_leader(make_batch(), 1, 0)
    m.close(clean=False)                                         # a kill -9
    assert not (tmp_path / "data" / "clean-shutdown").exists()
    with structlog.testing.capture_logs() as logs:
        managers().open(0)
    assert [e["clean_shutdown"] for e in logs if e["event"] == "log_opened"] == [False]


def test_one_log_that_cannot_close_cleanly_leaves_no_marker_for_any(managers, make_batch, tmp_path):
    m = managers()
    m.open(0)
    for p in range(2):
        m.get_or_create("t", p, None, 0).append_as_leader(make_batch(), 1, 0)
    m.get("t", 1).mark_offline()                                 # its data dir failed under it
    m.close()
    assert not (tmp_path / "data" / "clean-shutdown").exists()


def test_a_log_marked_clean_by_an_older_raftka_is_still_trusted(managers, make_batch, tmp_path):
    """Before the data dir's marker each log had its own: a data dir stopped by that version opens clean."""
    m = managers()
    m.open(0)
    m.get_or_create("t", 0, None, 0).append_as_leader(make_batch(), 1, 0)
    m.close()
    data = tmp_path / "data"
    (data / "clean-shutdown").rename(data / "t-0" / "clean-shutdown")
    with structlog.testing.capture_logs() as logs:
        m2 = managers()
        m2.open(0)
    assert [e["clean_shutdown"] for e in logs if e["event"] == "log_opened"] == [True]
    assert not (data / "t-0" / "clean-shutdown").exists()
