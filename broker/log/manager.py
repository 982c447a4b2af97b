"""All partition logs of one broker's data dir.

The data dir holds one folder per partition replica (``<topic>-<partition>``), the
lock file ``.lock`` (one broker process per data dir) and ``meta.properties``
(which cluster and broker the data belongs to, as in Kafka: written once by
``kbroker format``, broker/storage_format.py, and never by a starting broker, except to
add ``record.crc`` to an old file on a data dir without logs: meta_properties.py).

The data dir is Kafka's log dir, and raftka has one per broker: the first storage
failure in any of its logs takes every log offline (KAFKA_STORAGE_ERROR from then
on) and is reported on ``failure_channel`` (log_dir_failure.py), whose listener
halts the broker.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import threading
import uuid
from pathlib import Path

import structlog

from broker.log.checkpoint import fsync_directory, sync_filesystem, write_atomically
from broker.log.config import LogConfig
from broker.log.log import CLEAN_SHUTDOWN_FILE, PartitionLog
from broker.log.log_dir_failure import LogDirFailureChannel
from broker.log.partition_metadata import read_topic_id, write_topic_id
# UnformattedDataDirError, OldRecordFormatError: raised by check_meta, and imported from here with the other
# data-dir errors.
from broker.log.meta_properties import (META_FILE, RECORD_CRC, RECORD_CRC_KEY,  # noqa: F401
                                        InconsistentDataDirError, MetaProperties, OldRecordFormatError,
                                        UnformattedDataDirError, read_meta_properties, read_record_crc,
                                        write_meta_properties)
from client.errors import InvalidTopicError, KafkaStorageError

log = structlog.get_logger(__name__)

LOCK_FILE = ".lock"
DELETED_SUFFIX = ".deleted"
TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")

TopicPartition = tuple[str, int]


class DataDirLockedError(Exception):
    """Another broker process holds this data dir."""


class DataDirUnusableError(Exception):
    """The data dir cannot be created or locked (a file in its place, no permission)."""


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


def parse_partition_dir_name(name: str) -> TopicPartition | None:
    """(topic, partition) for ``<topic>-<partition>``; the topic may itself contain '-'."""
    topic, dash, number = name.rpartition("-")
    if not dash or not number.isdigit() or not TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
        return None
    return topic, int(number)


class LogManager:
    def __init__(self, data_dir: Path, default_config: LogConfig):
        self.data_dir = Path(data_dir)
        self.default_config = default_config
        # Invariant: every open PartitionLog of this data dir, keyed by (topic, partition);
        # it is only filled while the lock file is held.
        self._logs: dict[TopicPartition, PartitionLog] = {}
        # The topic id in each log's partition.metadata (None: none on disk yet); see partition_metadata.py.
        self._topic_ids: dict[TopicPartition, str | None] = {}
        self._lock_fd: int | None = None
        self._lock = threading.Lock()
        self.failure_channel = LogDirFailureChannel()

    # ---- opening and closing -----------------------------------------------------------

    def open(self, now_ms: int, identity: tuple[str, int] | None = None) -> MetaProperties | None:
        """Check the data dir is ``identity``'s (cluster id, broker id) if given, lock it, then open
        (and recover) every partition log in it. Returns its meta.properties (None without identity)."""
        meta = self.lock(identity)
        self.load(now_ms)
        return meta

    def lock(self, identity: tuple[str, int] | None = None) -> MetaProperties | None:
        """The first half of open(): check the data dir is ``identity``'s and lock it (a broker starts its Raft
        node between the two: the metadata log catches up while the partition logs load)."""
        # Reads only, before anything is created, locked or recovered (recovery writes: clean-shutdown
        # marker, torn tails, leftovers): an unformatted data dir, or another cluster's or broker's, is
        # refused exactly as it was. No auto-format: an empty data dir may be a lost disk (storage_format).
        meta = check_meta(self.data_dir, *identity) if identity is not None else None
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # exist_ok still raises it when a file has the name
            raise DataDirUnusableError(f"data dir {self.data_dir} is a file, not a directory") from None
        except OSError as e:
            raise DataDirUnusableError(f"cannot create data dir {self.data_dir}: {e.strerror}") from None
        self._lock_fd = lock_data_dir(self.data_dir)
        try:
            if meta is not None:
                self._mark_record_crc(meta)
        except BaseException:
            self.close(clean=False)
            raise
        return meta

    def load(self, now_ms: int) -> None:
        """The second half of open(): open (and recover) every partition log of the locked data dir."""
        try:
            found = self._partition_dirs()
            marker = self.data_dir / CLEAN_SHUTDOWN_FILE
            clean = marker.exists()   # every log here was closed cleanly (close(): one marker for all)
            # The clean-shutdown markers are removed without an fsync: one syncfs below makes every removal
            # durable before any log is written to (a marker surviving a crash would trust a log changed after
            # it). One thread: with the fsyncs gone, opening a log is Python work, which more threads only slow
            # down (3,000 logs: 0.7 s on one, 1.9 s on eight).
            for tp, path in found:
                self._logs[tp] = self._watched(PartitionLog.open(path, self.default_config, now_ms, durable=False,
                                                                 clean_shutdown=clean))
                self._topic_ids[tp] = read_topic_id(path)
            if clean:
                marker.unlink()
            if found or clean:
                self.sync()
        except BaseException:
            self.close(clean=False)
            raise
        log.info("logs_loaded", data_dir=str(self.data_dir), partitions=len(self._logs))

    def _partition_dirs(self) -> list[tuple[TopicPartition, Path]]:
        """The data dir's partition folders, by name; a deletion a crash interrupted is finished first."""
        found = []
        for path in sorted(self.data_dir.iterdir()):
            if not path.is_dir():
                continue
            if path.name.endswith(DELETED_SUFFIX):
                log.info("deleted_log_removed", dir=str(path))
                shutil.rmtree(path)
                continue
            tp = parse_partition_dir_name(path.name)
            if tp is None:
                log.warning("unknown_folder_in_data_dir", dir=str(path))
                continue
            found.append((tp, path))
        return found

    def _mark_record_crc(self, meta: MetaProperties) -> None:
        """A data dir of a raftka before CRC-32C batches that holds no partition log (check_meta refuses one
        that does) gets ``record.crc`` before its first log is created: else, once it has logs, the next
        start would take them for old ones."""
        if not needs_record_crc_marker(self.data_dir):   # again, under the lock: no log appeared since
            return
        try:
            write_meta_properties(self.data_dir, meta)
        except OSError as e:
            raise DataDirUnusableError(f"cannot write {self.data_dir / META_FILE}: {e.strerror or e}") from None
        log.info("record_crc_marked", data_dir=str(self.data_dir), record_crc=RECORD_CRC)

    def close(self, clean: bool = True) -> None:
        """Close every log (cleanly: fsynced, then one clean-shutdown marker for them all) and unlock. Call
        it once nothing appends any more. Clean, every log's data is made durable by one syncfs, then each
        log writes its recovery point, made durable by another, and then the data dir's marker (Kafka's
        per log dir): where fsyncing log by log cost about five fsyncs each (25 s for 10,000 partitions
        here), and a marker per log one file to write at the stop and one to remove at the start each.
        A log that did not close cleanly leaves no marker at all: every log is recovered then."""
        with self._lock:
            logs, self._logs = list(self._logs.values()), {}
        try:
            if clean and logs:
                clean = self._synced("before closing the logs")
            all_clean = clean
            for plog in logs:
                try:
                    all_clean = plog.close(clean=clean, durable=False, marker=False) and all_clean
                except KafkaStorageError as e:
                    log.error("log_close_failed", dir=str(plog.directory), error=str(e))
                    all_clean = False
            if all_clean and logs and self._synced("after closing the logs"):
                self._write_clean_shutdown_marker()
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None

    # ---- the logs --------------------------------------------------------------------------

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        with self._lock:
            return self._logs.get((topic, partition))

    def get_or_create(self, topic: str, partition: int, config: LogConfig | None,
                      now_ms: int, topic_id: str | None = None, durable: bool = True) -> PartitionLog:
        """The log of (topic, partition), created if new (with ``config``, or the
        defaults if None). An existing log takes ``config`` (the topic's current
        settings) when one is given. ``durable=False``: a new log's files are not fsynced one by
        one; the caller makes them durable with sync() before anything is written to it.

        With ``topic_id``, a log on disk that belongs to another topic id (a deleted
        topic's, whose name was taken again) is a stray: it is deleted and the log
        created anew (KIP-516). A log with no id on disk adopts this one."""
        if not TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
            raise InvalidTopicError(f"invalid topic name {topic!r}: use 1-249 of [a-zA-Z0-9._-]")
        if partition < 0:
            raise ValueError(f"partition {partition} must be >= 0")
        self._check_locked()
        tp = (topic, partition)
        with self._lock:
            on_disk = self._topic_ids.get(tp) if tp in self._logs else None
        if topic_id is not None and on_disk is not None and on_disk != topic_id:
            log.warning("stray_log_replaced", topic=topic, partition=partition, stray_topic_id=on_disk,
                        topic_id=topic_id)
            self.delete(topic, partition)
        with self._lock:
            plog = self._logs.get(tp)
            if plog is None:
                plog = self._create(tp, config or self.default_config, now_ms, topic_id, durable)
            elif config is not None and config != plog.config:
                plog.update_config(config)
            if topic_id is not None and self._topic_ids.get(tp) is None:
                self._write_topic_id(tp, plog.directory, topic_id)
            return plog

    def _create(self, tp: TopicPartition, config: LogConfig, now_ms: int, topic_id: str | None,
                durable: bool = True) -> PartitionLog:
        """A new log; its topic id is on disk before its first segment, so no log with data lacks one
        (without ``durable``, durable with the rest at the caller's sync(), before any data)."""
        directory = self.data_dir / partition_dir_name(*tp)
        try:
            if topic_id is not None:
                directory.mkdir(parents=True, exist_ok=True)
                write_topic_id(directory, topic_id, durable)
            plog = self._watched(PartitionLog.open(directory, config, now_ms))
        except (KafkaStorageError, OSError) as e:
            self._log_dir_failed(f"cannot create log {directory}", e)
            raise KafkaStorageError(f"cannot create log {directory}: {e}") from e
        self._logs[tp] = plog
        self._topic_ids[tp] = topic_id
        log.info("log_created", topic=tp[0], partition=tp[1], dir=str(directory), topic_id=topic_id)
        return plog

    def sync(self) -> None:
        """Make everything written in the data dir durable (one syncfs): the barrier after creating logs
        with ``durable=False``."""
        try:
            sync_filesystem(self.data_dir)
        except OSError as e:
            self._log_dir_failed(f"cannot sync {self.data_dir}", e)
            raise KafkaStorageError(f"cannot sync {self.data_dir}: {e}") from e

    def _write_topic_id(self, tp: TopicPartition, directory: Path, topic_id: str) -> None:
        try:
            write_topic_id(directory, topic_id)
        except OSError as e:
            self._log_dir_failed(f"cannot write the topic id of {directory}", e)
            raise KafkaStorageError(f"cannot write the topic id of {directory}: {e}") from e
        self._topic_ids[tp] = topic_id

    def topic_id(self, topic: str, partition: int) -> str | None:
        """The topic id on disk for the log of (topic, partition); None if none (or no log)."""
        with self._lock:
            return self._topic_ids.get((topic, partition))

    def delete(self, topic: str, partition: int) -> bool:
        """Delete the log and its folder; False if there was none.

        The folder is first renamed to ``<name>.<uuid>.deleted`` (and the rename made
        durable), so a crash half-way through cannot bring the partition back.
        """
        if self.offline:
            # The broker is halting: whatever made this log look unwanted (a partition that failed to
            # load looks like a stray one) must not cost data a recovery could keep.
            raise KafkaStorageError(f"not deleting log {topic}-{partition}: data dir {self.data_dir} is offline")
        with self._lock:
            plog = self._logs.pop((topic, partition), None)
            self._topic_ids.pop((topic, partition), None)
        directory = self.data_dir / partition_dir_name(topic, partition)
        if plog is not None:
            plog.close(clean=False)
        if not directory.exists():
            return plog is not None
        doomed = directory.with_name(f"{directory.name}.{uuid.uuid4().hex}{DELETED_SUFFIX}")
        try:
            os.rename(directory, doomed)
            fsync_directory(self.data_dir)
            shutil.rmtree(doomed)
        except OSError as e:
            self._log_dir_failed(f"cannot delete log {directory}: {e}", e)
            raise KafkaStorageError(f"cannot delete log {directory}: {e}") from e
        log.info("log_deleted", topic=topic, partition=partition, dir=str(directory))
        return True

    # ---- storage failures ------------------------------------------------------------------

    @property
    def offline(self) -> bool:
        """True once the data dir failed: every log answers KAFKA_STORAGE_ERROR."""
        return self.failure_channel.offline

    def _watched(self, plog: PartitionLog) -> PartitionLog:
        plog.set_failure_handler(self._log_dir_failed)
        if self.offline:
            plog.mark_offline()
        return plog

    def _log_dir_failed(self, message: str, error: BaseException) -> None:
        """One log failed: the data dir is offline, so every log is (Kafka: all logs of the dir).

        Runs under the failing log's lock, so it must not take the manager's lock
        (get_or_create holds that while taking a log's): list() copies the dict in
        one step under the GIL, and mark_offline only sets a flag.
        """
        for plog in list(self._logs.values()):
            plog.mark_offline()
        self.failure_channel.maybe_add_offline_log_dir(self.data_dir, message, error)

    def all(self) -> dict[TopicPartition, PartitionLog]:
        with self._lock:
            return dict(self._logs)

    # ---- housekeeping ----------------------------------------------------------------------

    def run_retention(self, now_ms: int,
                      high_watermarks: dict[TopicPartition, int] | None = None) -> int:
        """Apply retention to every log; returns the number of segments deleted.

        ``high_watermarks``, when given, keeps each log's unreplicated tail. A failing
        log is logged and skipped: one bad disk path must not stop the others.
        """
        deleted = 0
        for tp, plog in self.all().items():
            hw = None if high_watermarks is None else high_watermarks.get(tp)
            try:
                deleted += plog.delete_expired_segments(now_ms, hw)
            except KafkaStorageError as e:
                log.error("retention_failed", topic=tp[0], partition=tp[1], error=str(e))
        return deleted

    def checkpoint_high_watermarks(self, high_watermarks: dict[TopicPartition, int]) -> None:
        """Write each partition's HW checkpoint that moved (unknown partitions are skipped), then make
        them durable together (one syncfs, not two fsyncs per partition: Kafka writes one file for all)."""
        written = 0
        for tp, hw in high_watermarks.items():
            plog = self.get(*tp)
            if plog is None:
                continue
            try:
                written += plog.write_high_watermark(hw, durable=False)
            except KafkaStorageError as e:
                log.error("high_watermark_checkpoint_failed", topic=tp[0], partition=tp[1], error=str(e))
        if written:
            self._synced("after the high watermark checkpoints")

    def _write_clean_shutdown_marker(self) -> None:
        try:
            write_atomically(self.data_dir / CLEAN_SHUTDOWN_FILE, "")
        except OSError as e:   # no marker: the next start recovers every log, which is always right
            log.error("clean_shutdown_marker_failed", data_dir=str(self.data_dir), error=str(e))

    def _synced(self, when: str) -> bool:
        """sync(), reporting a failure (the data dir goes offline) instead of raising it; True if synced."""
        try:
            self.sync()
            return True
        except KafkaStorageError as e:
            log.error("data_dir_sync_failed", when=when, error=str(e))
            return False

    def _check_locked(self) -> None:
        if self._lock_fd is None:
            raise KafkaStorageError(f"data dir {self.data_dir} is not open (call LogManager.open first)")


def lock_data_dir(data_dir: Path) -> int:
    """Take the data dir's lock file (flock, held until the returned fd is closed): one process at a time."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise DataDirUnusableError(f"cannot lock data dir {data_dir}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirLockedError(f"data dir {data_dir} is used by another broker process") from None
    return fd


def check_meta(data_dir: Path, cluster_id: str, broker_id: int) -> MetaProperties:
    """The data dir's meta.properties, if it is formatted and belongs to this cluster and broker.

    Reads only. UnformattedDataDirError without meta.properties (never formatted, or a lost disk),
    InconsistentDataDirError for another cluster's or broker's data dir.
    """
    if data_dir.exists() and not data_dir.is_dir():
        raise DataDirUnusableError(f"data dir {data_dir} is a file, not a directory")
    meta = read_meta_properties(data_dir)
    if meta.cluster_id != cluster_id or meta.broker_id != broker_id:
        raise InconsistentDataDirError(
            f"data dir {data_dir} belongs to cluster.id={meta.cluster_id} broker.id={meta.broker_id}, "
            f"not cluster.id={cluster_id} broker.id={broker_id} (see {data_dir / META_FILE})")
    needs_record_crc_marker(data_dir)
    return meta


def needs_record_crc_marker(data_dir: Path) -> bool:
    """True if meta.properties lacks ``record.crc`` (written by a raftka whose batches carried zlib's
    CRC-32) and no partition log is there: LogManager.open adds it. Reads only.

    OldRecordFormatError if it lacks the key and a partition log is there: each of its batches would
    fail the CRC-32C check, and recovery would cut every log down to nothing.
    """
    if read_record_crc(data_dir) == RECORD_CRC:
        return False
    logs = partition_log_dirs(data_dir)
    if logs:
        raise OldRecordFormatError(
            f"data dir {data_dir} holds partition logs ({', '.join(logs[:3])}{', ...' if len(logs) > 3 else ''}) "
            f"in raftka's old batch format (its own records, zlib's CRC-32) by a raftka before Kafka's "
            f"RecordBatch v2 ({META_FILE} has no "
            f"{RECORD_CRC_KEY}={RECORD_CRC}); this raftka cannot read them: delete the data dir and run "
            f"kbroker format again (with --initial-voter on every broker if the whole cluster is this old)")
    return True


def partition_log_dirs(data_dir: Path) -> list[str]:
    """Names of the partition log folders in ``data_dir`` (not deleted ones: open removes those)."""
    try:
        return sorted(p.name for p in data_dir.iterdir()
                      if p.is_dir() and parse_partition_dir_name(p.name) is not None)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise DataDirUnusableError(f"cannot read data dir {data_dir}: {e.strerror}") from None
