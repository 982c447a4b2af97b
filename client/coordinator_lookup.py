"""Where a group's coordinator is, and the offset requests every group client sends it.

    lookup = CoordinatorLookup(client, "billing")
    lookup.call("OffsetFetch", offset_fetch_request("billing", None), offset_fetch_error, "committed offsets")

FindCoordinator is asked of any broker and its answer cached; NOT_COORDINATOR,
COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE and an unreachable coordinator find it
again after a bounded backoff (Kafka's AbstractCoordinator and its admin client do the same).
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Callable

from client.client import KafkaClient, backoff_s
from client.connection import Address
from client.errors import (CoordinatorLoadInProgressError, CoordinatorNotAvailableError, KafkaError,
                           NoBrokersAvailable, NotCoordinatorError, error_for_code)
from client.protocol.v1 import kafka_pb2

TopicPartition = tuple[str, int]

# What a group request answers while the group's coordinator moves or loads: find it again and retry.
COORDINATOR_RETRIABLE = (NotCoordinatorError, CoordinatorLoadInProgressError, CoordinatorNotAvailableError)
RETRY_BACKOFF_MS, RETRY_BACKOFF_MAX_MS = 100, 1000
MAX_ATTEMPTS = 30


class CoordinatorLookup:
    """The coordinator of one group (FindCoordinator), cached until an answer says it moved."""

    def __init__(self, client: KafkaClient, group_id: str):
        self._client = client
        self.group_id = group_id
        self.coordinator: tuple[int, Address] | None = None
        self._lock = threading.Lock()

    def find(self) -> tuple[int, Address]:
        """(broker id, client address) of the coordinator, asked of any broker; the offsets topic is
        created by the first FindCoordinator. COORDINATOR_NOT_AVAILABLE (retriable) while there is none."""
        with self._lock:
            if self.coordinator is not None:
                return self.coordinator
        if not self._client.metadata.brokers:
            self._client.refresh_metadata([])
        last: KafkaError | None = None
        for address in self._client.candidate_addresses():
            try:
                response = self._client.call(address, "FindCoordinator", kafka_pb2.FindCoordinatorRequest(
                    key_type=kafka_pb2.GROUP, keys=[self.group_id]), detail=f"who coordinates group {self.group_id}?")
            except KafkaError as e:
                last = e
                if not e.retriable:
                    raise
                continue
            c = next((c for c in response.coordinators if c.key == self.group_id), None)
            if c is None:
                raise CoordinatorNotAvailableError(f"FindCoordinator answered nothing for group {self.group_id!r}")
            if c.error_code:
                raise error_for_code(c.error_code, c.error_message)
            self._client.trace("response", "FindCoordinator", address, response.answered_by,
                               f"group {self.group_id}: coordinator {c.node_id} at {c.host}:{c.port}")
            with self._lock:
                self.coordinator = (c.node_id, (c.host, c.port))
                return self.coordinator
        raise last or CoordinatorNotAvailableError(f"no broker answered FindCoordinator for group {self.group_id!r}")

    def forget(self) -> None:
        """The coordinator moved or cannot be reached: the next call finds it again."""
        with self._lock:
            self.coordinator = None

    def call_once(self, api: str, request, detail: str, timeout_s: float | None = None):
        """One request to the coordinator; a connection failure forgets it (and raises)."""
        broker_id, address = self.find()
        try:
            return self._client.call(address, api, request, timeout_s, f"{detail} (coordinator {broker_id})")
        except KafkaError:
            self.forget()
            raise

    def call(self, api: str, request, error_of: Callable[[object], KafkaError | None], detail: str,
             timeout_s: float | None = None):
        """Send ``request`` to the coordinator and return its answer. ``error_of`` names the group-level
        error the answer carries (None: done). The coordinator's moving and loading errors, and a
        coordinator that cannot be reached, find it again after a bounded backoff; other errors raise."""
        deadline = time.monotonic() + (timeout_s or self._client.request_timeout_s)
        for attempt in itertools.count(1):
            try:
                response = self.call_once(api, request, detail, timeout_s)
            except NoBrokersAvailable:
                raise                                   # nobody to ask at all: no use waiting
            except KafkaError as e:
                error, retry = e, e.retriable           # no coordinator yet, or it could not be reached
            else:
                error = error_of(response)
                if error is None:
                    return response
                retry = isinstance(error, COORDINATOR_RETRIABLE)   # any other error in the answer is final
                if retry:
                    self.forget()
            if not retry or attempt >= MAX_ATTEMPTS or time.monotonic() >= deadline:
                raise error
            time.sleep(backoff_s(attempt, RETRY_BACKOFF_MS, RETRY_BACKOFF_MAX_MS))
            if getattr(error, "invalid_metadata", False):
                try:
                    self._client.refresh_metadata([])
                except KafkaError:
                    pass
        raise AssertionError("unreachable")


def first_partition_error(response) -> KafkaError | None:
    """The first per-partition error of an OffsetCommit / OffsetDelete answer. A coordinator error on any
    partition comes first: the whole request is then sent again to the coordinator found anew."""
    errors = [error_for_code(p.error_code, p.error_message)
              for t in response.topics for p in t.partitions if p.error_code]
    return next((e for e in errors if isinstance(e, COORDINATOR_RETRIABLE)), errors[0] if errors else None)


def offset_fetch_error(response) -> KafkaError | None:
    if response.error_code:
        return error_for_code(response.error_code, response.error_message)
    return next((error_for_code(p.error_code, p.error_message)
                 for t in response.topics for p in t.partitions if p.error_code), None)


def offset_fetch_request(group_id: str, partitions: list[TopicPartition] | None) -> kafka_pb2.OffsetFetchRequest:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions or ():
        by_topic.setdefault(topic, []).append(partition)
    return kafka_pb2.OffsetFetchRequest(group_id=group_id, topics=[
        kafka_pb2.OffsetTopicPartitions(name=t, partition_indexes=ps) for t, ps in by_topic.items()])


def offset_commit_request(group_id: str, offsets: dict[TopicPartition, int], metadata: str = "",
                          generation_id: int = -1, member_id: str = "",
                          group_instance_id: str | None = None) -> kafka_pb2.OffsetCommitRequest:
    by_topic: dict[str, list[kafka_pb2.OffsetCommitPartition]] = {}
    for (topic, partition), offset in offsets.items():
        by_topic.setdefault(topic, []).append(kafka_pb2.OffsetCommitPartition(
            partition_index=partition, committed_offset=offset, committed_leader_epoch=-1,
            committed_metadata=metadata))
    return kafka_pb2.OffsetCommitRequest(group_id=group_id, generation_id=generation_id, member_id=member_id,
                                         group_instance_id=group_instance_id,
                                         topics=[kafka_pb2.OffsetCommitTopic(name=t, partitions=ps)
                                                 for t, ps in by_topic.items()])
