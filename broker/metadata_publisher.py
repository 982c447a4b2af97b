"""Turns committed metadata into local action, on its own thread (Kafka's BrokerMetadataPublisher).

pysyncobj applies batches on its tick thread and only wakes this one. It then
diffs the last image it acted on against the current one (``local_changes``, a
pure function) and tells the replica manager to become leader, become follower
or stop serving. Level-triggered: however many batches were applied since the
last round, one diff of two images covers them, and a journal replay at start
is just one big diff.

It starts acting only once the local image holds this process's own
registration (``caught_up``). The active controller wrote that record after
every earlier commit, so the image then holds all the metadata this broker
could have missed. pysyncobj's own "ready" is not enough: after a kill -9 the
commit index it saved on disk can lag the journal, and a broker acting then
would take stale leaderships from its old journal, or delete the log of a
topic its replay had not reached yet as "stray".
"""

from __future__ import annotations

import threading
from typing import Callable

import structlog

from broker.invariants import violated
from broker.metadata.image import MetadataImage
from broker.metadata.quorum import MetadataQuorum
from broker.replica_manager import ReplicaManager

log = structlog.get_logger(__name__)

RETRY_FAILED_S = 1.0   # a diff in which some partitions failed is retried after this


class MetadataPublisher:
    def __init__(self, quorum: MetadataQuorum, replica_manager: ReplicaManager,
                 caught_up: Callable[[MetadataImage], bool]):
        self._quorum = quorum
        self._caught_up = caught_up
        self._replica_manager = replica_manager
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published: MetadataImage | None = None   # the image this broker last acted on
        self.first_publish = threading.Event()
        self._published_cond = threading.Condition()
        quorum.add_listener(self._changed.set)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="metadata-publisher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join()

    def wait_published(self, predicate: Callable[[MetadataImage], bool], timeout_s: float) -> bool:
        """Wait until this broker has acted on an image satisfying ``predicate`` (its partitions are served)."""
        with self._published_cond:
            return self._published_cond.wait_for(
                lambda: self.published is not None and predicate(self.published), timeout_s)

    def _run(self) -> None:
        while not self._caught_up(self._quorum.image):
            self._changed.wait(0.1)
            self._changed.clear()
            if self._stop.is_set():
                return
        last = MetadataImage(cluster_id=self._quorum.image.cluster_id)
        strays_deleted = False
        while not self._stop.is_set():
            self._changed.clear()
            image = self._quorum.image
            if image.offset < last.offset:
                violated("metadata_offset_grows", f"the applied metadata went back from offset {last.offset} "
                                                  f"to {image.offset}")
            if image is not last:
                failed = self._publish(last, image)
                if not failed:
                    last = image
                    if not strays_deleted:
                        # Only after a diff applied whole: a partition that failed to become hosted
                        # would look stray, and its log would be deleted.
                        self._replica_manager.delete_stray_logs()
                        strays_deleted = True
                if not self.first_publish.is_set():
                    self.first_publish.set()
                    log.info("metadata_caught_up", metadata_offset=image.offset, failed_partitions=len(failed))
                if failed:
                    # Diffed again from the last image applied whole: the failed partitions are retried
                    # (the others are unchanged by then, so applying them again does nothing).
                    self._stop.wait(RETRY_FAILED_S)
                    continue
            self._changed.wait(1.0)

    def _publish(self, last: MetadataImage, image: MetadataImage) -> list[tuple[str, int]]:
        """Act on ``last`` -> ``image``; the partitions that failed. ``published`` moves on either way:
        the partitions that applied are served."""
        try:
            failed = self._replica_manager.on_metadata_change(last, image)
        except Exception:  # noqa: BLE001 - the diff itself failed: retry it whole
            log.exception("metadata_publish_failed", metadata_offset=image.offset)
            failed = [("*", -1)]
        if failed:
            log.warning("metadata_publish_incomplete", metadata_offset=image.offset,
                        failed=[f"{t}-{p}" for t, p in failed[:10]], count=len(failed))
        with self._published_cond:
            self.published = image
            self._published_cond.notify_all()
        return failed
