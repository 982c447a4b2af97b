"""Followers pull the leader's log: one fetcher thread per (this follower, leader) pair.

Kafka's ReplicaFetcherManager / ReplicaFetcherThread. Every partition this
broker follows is assigned to the thread of its leader; the thread sends one
long-polling fetch for all of them (replica id, fetch offset = our log end, last
fetched epoch, current leader epoch) and hands each partition's answer to the
replica manager, which appends, truncates on a diverging epoch, or resets an
out-of-range offset under the partition's lock. The decisions are in
partition.py; this module is only threads and transport (gRPC or the replication socket).

The fetches go over one long-lived stream per leader, in lock step
(replica.fetch.stream = 1, the default), or as one unary ReplicaFetch call each
(0). The stream saves a call's setup on both replication hops of an acks=all
produce. It is a plain TCP connection to the leader's replication_port when the
cluster file gives one (broker/replication_socket.py: a hop there costs a fifth
of gRPC's), else a ReplicaFetchStream on its inter_broker_port. A stream has no
deadline of its own, so the manager's watchdog cancels one whose answer is
overdue (a leader paused by SIGSTOP, a dropped connection).

A stream is also a fetch session (KIP-227, broker/fetch_session.py): its first
request names every partition, later ones only those whose position moved and
those dropped, and the leader answers only partitions with something new, so
an idle partition costs neither side anything per round.

A partition the leader refuses (NOT_LEADER_OR_FOLLOWER, a leader epoch it does
not know yet, ...) sits out replica.fetch.backoff.ms and is dropped from the
session meanwhile, while the thread's other partitions keep fetching: Kafka's
AbstractFetcherThread.delayPartitions. A new leader epoch for it ends its wait.
Only a round trip that fails as a whole (the leader unreachable) stops the thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import grpc
import structlog

from broker import metrics
from broker.config import BrokerSettings
from broker.logging_setup import log_partitions
from broker.replica_manager import FetchResult, ReplicaManager
from broker.replication_socket import ReplicationSocketStream
from client.bidi_stream import BidiStream, StreamEnded
from client.connection import Address, Connections
from client.errors import error_for_code
from client.protocol.v1 import kafka_pb2

log = structlog.get_logger(__name__)

TopicPartition = tuple[str, int]

WATCHDOG_INTERVAL_S = 0.5
# In a fetch session, every partition's position is compared with what the session holds this often, besides
# the partitions marked as possibly moved (set, removed, answered): a safety net, O(partitions) but cheap.
FULL_CHECK_INTERVAL_S = 10.0
FetchKey = tuple[int, int, int]   # (fetch offset, last fetched epoch, leader epoch) as sent in a session
# A thread with nothing to ask for looks again after this, or when a partition is set or a backoff ends.
IDLE_WAIT_S = 0.5
# An answer later than the long poll's wait plus this is overdue: the call is cancelled.
ANSWER_GRACE_S = 5.0


class ReplicaFetcherThread:
    def __init__(self, broker_id: int, leader_id: int, address: Address, replica_manager: ReplicaManager,
                 settings: BrokerSettings, connections: Connections, socket_route: "SocketRoute | None" = None):
        self.broker_id = broker_id
        self.leader_id = leader_id
        self._address = address
        self._socket_route = socket_route   # the leader's replication_port and the token; None: gRPC
        self._replica_manager = replica_manager
        self._settings = settings
        self._connections = connections
        self._partitions: dict[TopicPartition, int] = {}   # -> the leader epoch we follow it at
        # The stream's fetch session (KIP-227; broker/fetch_session.py) as the leader holds it: each partition's
        # (fetch offset, last fetched epoch, leader epoch) as last sent; None: none yet, the next request is full.
        self._session: dict[TopicPartition, FetchKey] | None = None
        # Partitions whose position may have moved since it was sent: set, removed, or in the last answer.
        self._dirty: set[TopicPartition] = set()
        self._next_full_check = 0.0   # when every partition's position is compared with the session again
        # Refused partitions sitting out their backoff -> until when (monotonic s); not fetched meanwhile.
        self._delayed: dict[TopicPartition, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # The stream, in lock step: one request, then its answer, on this thread.
        self._stream: BidiStream | ReplicationSocketStream | None = None
        self._sent_at: float | None = None   # monotonic time of the request awaiting its answer
        self._thread = threading.Thread(target=self._run, name=f"replica-fetcher-{leader_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def set(self, tp: TopicPartition, leader_epoch: int) -> None:
        with self._lock:
            if self._partitions.get(tp) != leader_epoch:
                self._delayed.pop(tp, None)   # what was refused at the old epoch may be served at this one
            self._partitions[tp] = leader_epoch
            self._dirty.add(tp)
        self._wake.set()

    def remove(self, tp: TopicPartition) -> bool:
        """Drop ``tp``; True if the thread follows nothing any more."""
        with self._lock:
            self._partitions.pop(tp, None)
            self._delayed.pop(tp, None)
            self._dirty.add(tp)
            return not self._partitions

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        stream = self._stream
        if stream is not None:
            stream.close()   # a fetch blocked on a paused leader returns now

    def cancel_if_overdue(self, now: float) -> bool:
        """The watchdog's check: cancel the stream whose answer is overdue (the fetch then fails)."""
        sent_at, stream = self._sent_at, self._stream
        overdue = self._settings.replica_fetch_wait_max_ms / 1000 + ANSWER_GRACE_S
        if sent_at is None or stream is None or now - sent_at <= overdue:
            return False
        log.info("replica_fetch_overdue", leader=self.leader_id, waited_s=round(now - sent_at, 3))
        stream.close()
        return True

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff_s = self._settings.replica_fetch_backoff_ms / 1000
        while not self._stop.is_set():
            now = time.monotonic()
            partitions, dirty, delayed = self._take_round(now)
            request = self._build_request(partitions, dirty, delayed)
            if request is None:   # nothing to ask for until something is set, or the first wait ends
                self._wake.wait(min([IDLE_WAIT_S] + [until - now for until in delayed.values()]))
                self._wake.clear()
                continue
            try:
                ok = self._fetch_once(request, partitions)
            except Exception:  # a storage error on one partition must not end replication for all
                log.exception("replica_fetch_failed", leader=self.leader_id)
                ok = False
            if not ok:
                self._stop.wait(backoff_s)
        if self._stream is not None:
            self._stream.close()

    def _take_round(self, now: float) -> tuple[dict[TopicPartition, int], set[TopicPartition],
                                               dict[TopicPartition, float]]:
        """What this round fetches: the partitions, those marked since the last round (with those whose
        backoff ended by ``now``, to be named again), and those still sitting out theirs."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            for tp in [tp for tp, until in self._delayed.items() if until <= now]:
                del self._delayed[tp]
                dirty.add(tp)
            return dict(self._partitions), dirty, dict(self._delayed)

    def _build_request(self, partitions: dict[TopicPartition, int], dirty: set[TopicPartition],
                       delayed: dict[TopicPartition, float] | None = None) -> kafka_pb2.FetchRequest | None:
        """The next request: a full one (every partition), or in the stream's session only the partitions
        whose position changed and the ones dropped; None when there is nothing to fetch. A ``delayed``
        partition is left out, and dropped from the session, so the leader stops reading it meanwhile."""
        delayed = delayed or {}
        session = self._session if self._stream is not None and self._settings.replica_fetch_stream else None
        now = time.monotonic()
        if session is None or now >= self._next_full_check:
            self._next_full_check = now + FULL_CHECK_INTERVAL_S
            if session is not None:   # a safety net under the marks: whatever moved unmarked is sent now
                dirty = set(partitions) | set(session)
        wanted, forgotten = [], []
        for tp in (partitions if session is None else dirty):
            epoch = None if tp in delayed else partitions.get(tp)
            position = None if epoch is None else self._replica_manager.fetch_position(tp, self.leader_id, epoch)
            # Not ours to fetch (any more: the metadata moved on, the manager reassigns it), or sitting out a backoff.
            if position is None:
                if session is not None and session.pop(tp, None) is not None:
                    forgotten.append(kafka_pb2.FetchForgotten(topic=tp[0], partition=tp[1]))
                continue
            key = (position[0], position[1], epoch)
            if session is not None and session.get(tp) == key:
                continue
            wanted.append(kafka_pb2.FetchPartition(
                topic=tp[0], partition=tp[1], fetch_offset=key[0], current_leader_epoch=epoch,
                last_fetched_epoch=key[1], partition_max_bytes=self._settings.replica_fetch_max_bytes))
            if session is not None:
                session[tp] = key
        if session is None:
            if not wanted:
                return None
            self._session = {(p.topic, p.partition): (p.fetch_offset, p.last_fetched_epoch, p.current_leader_epoch)
                             for p in wanted}
        elif not session and not forgotten:
            return None
        s = self._settings
        # The long poll ends when the first backoff does, so that partition is asked about again on time.
        wait_ms = min([s.replica_fetch_wait_max_ms] + [max(0, int((until - now) * 1000) + 1)
                                                       for until in delayed.values()])
        return kafka_pb2.FetchRequest(replica_id=self.broker_id, max_wait_ms=wait_ms,
                                      min_bytes=1, max_bytes=s.replica_fetch_response_max_bytes, partitions=wanted,
                                      incremental=session is not None, forgotten=forgotten)

    def _fetch_once(self, request: kafka_pb2.FetchRequest, partitions: dict[TopicPartition, int]) -> bool:
        """One round trip; False when the leader could not be asked. A partition it refused, or whose answer
        could not be applied, sits out replica.fetch.backoff.ms; the others fetch on."""
        try:
            response = self._round_trip(request)
        except (grpc.RpcError, StreamEnded) as e:
            code = e.code() if isinstance(e, grpc.RpcError) else (str(e) or "stream ended")
            log.debug("leader_unreachable", leader=self.leader_id, code=str(code))
            return False
        refused: list[dict] = []
        held_back: list[TopicPartition] = []
        for p in response.partitions:
            tp = (p.topic, p.partition)
            epoch = partitions.get(tp)
            if epoch is None:
                continue
            fetched = _fetch_result(p)
            if fetched.error is None:   # the lag is computed at scrape time, from our log end then
                metrics.of(self.broker_id).fetched_from_leader(tp, self.leader_id, epoch, fetched.log_end_offset)
            else:
                refused.append(dict(topic=p.topic, partition=p.partition, error=fetched.error.name))
            if not self._replica_manager.on_fetched(tp, self.leader_id, epoch, fetched):
                held_back.append(tp)   # not taken (an error, a failed append)
        # After a leadership moves, thousands of partitions answer NOT_LEADER_OR_FOLLOWER in one round.
        log_partitions(log, "replica_fetch_error", "replica_fetch_errors", refused, ("error",), leader=self.leader_id)
        until = time.monotonic() + self._settings.replica_fetch_backoff_ms / 1000
        with self._lock:
            for tp in held_back:
                if self._partitions.get(tp) == partitions[tp]:   # not moved to a new epoch meanwhile
                    self._delayed[tp] = until
            # Their positions may have moved (an append, a truncation): the next request compares them; and a
            # held-back one is dropped from the session (the next request forgets it).
            self._dirty.update((p.topic, p.partition) for p in response.partitions)
        return True


    def _round_trip(self, request: kafka_pb2.FetchRequest) -> kafka_pb2.FetchResponse:
        answer_timeout_s = self._settings.replica_fetch_wait_max_ms / 1000 + ANSWER_GRACE_S
        if not self._settings.replica_fetch_stream:
            return self._connections.replication(self._address).ReplicaFetch(request, timeout=answer_timeout_s)
        if self._stream is None:
            if request.incremental:   # cannot happen: a request without a stream is built full
                raise StreamEnded("an incremental fetch needs its stream's session")
            route = self._socket_route
            self._stream = (ReplicationSocketStream(route.address, route.token, answer_timeout_s) if route
                            else BidiStream(self._connections.replication(self._address).ReplicaFetchStream))
        self._sent_at = time.monotonic()
        try:
            self._stream.send(request)
            return self._stream.next_answer()   # StreamEnded: the leader is stopping
        except (grpc.RpcError, StreamEnded):
            self._stream.close()
            self._stream = None
            self._session = None   # the leader's session ended with the stream: the next request is full
            raise
        finally:
            self._sent_at = None


@dataclass(frozen=True)
class SocketRoute:
    """Where a follower's socket stream to a leader goes (its replication_port) and what it proves there."""
    address: Address
    token: str


def _fetch_result(p: kafka_pb2.FetchPartitionResponse) -> FetchResult:
    diverging = (p.diverging_epoch.epoch, p.diverging_epoch.end_offset) if p.HasField("diverging_epoch") else None
    error = error_for_code(p.error_code, p.error_message) if p.error_code else None
    return FetchResult(p.topic, p.partition, error, p.high_watermark, p.log_start_offset, p.log_end_offset,
                       p.records, diverging)


class ReplicaFetcherManager:
    """Which fetcher thread follows which partition; one thread per leader broker."""

    def __init__(self, broker_id: int, address_of: Callable[[int], Address], settings: BrokerSettings,
                 connections: Connections | None = None,
                 socket_route_of: Callable[[int], SocketRoute | None] = lambda leader_id: None):
        self.broker_id = broker_id
        self._address_of = address_of
        self._socket_route_of = socket_route_of
        self._settings = settings
        self._replica_manager: ReplicaManager | None = None
        self._connections = connections or Connections()
        self._threads: dict[int, ReplicaFetcherThread] = {}
        self._leader_of: dict[TopicPartition, int] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="replica-fetch-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        while not self._closed.wait(WATCHDOG_INTERVAL_S):
            with self._lock:
                threads = list(self._threads.values())
            now = time.monotonic()
            for t in threads:
                t.cancel_if_overdue(now)

    def attach(self, replica_manager: ReplicaManager) -> None:
        self._replica_manager = replica_manager

    def follow(self, tp: TopicPartition, leader_id: int, leader_epoch: int) -> None:
        if leader_id < 0 or leader_id == self.broker_id:
            self.stop_following(tp)
            return
        with self._lock:
            old = self._leader_of.get(tp)
            if old is not None and old != leader_id:
                self._remove_locked(tp, old)
            thread = self._threads.get(leader_id)
            if thread is None:
                thread = ReplicaFetcherThread(self.broker_id, leader_id, self._address_of(leader_id),
                                              self._replica_manager, self._settings, self._connections,
                                              self._socket_route_of(leader_id))
                self._threads[leader_id] = thread
                thread.start()
            thread.set(tp, leader_epoch)
            self._leader_of[tp] = leader_id

    def stop_following(self, tp: TopicPartition) -> None:
        with self._lock:
            leader_id = self._leader_of.get(tp)
            if leader_id is not None:
                self._remove_locked(tp, leader_id)

    def _remove_locked(self, tp: TopicPartition, leader_id: int) -> None:
        self._leader_of.pop(tp, None)
        thread = self._threads.get(leader_id)
        if thread is not None and thread.remove(tp):
            thread.stop()
            del self._threads[leader_id]

    def shutdown(self) -> None:
        self._closed.set()
        with self._lock:
            threads = list(self._threads.values())
            self._threads.clear()
            self._leader_of.clear()
        for t in threads:
            t.stop()
        for t in threads:
            t.join(timeout=10)
        self._connections.close()
