"""One consumer's life in a group: join, sync, heartbeat, commit, leave.

    member = ConsumerCoordinator(client, "billing", ["email.send"], [RangeAssignor()], GroupSettings())
    member.ensure_active_group(deadline)   # joins and syncs; the hooks hear what was revoked and assigned
    member.commit({("email.send", 0): 42})

Kafka's AbstractCoordinator and ConsumerCoordinator, on raftka's gRPC door. A background thread
heartbeats while the member is in a stable generation and only raises flags (rejoin needed, member
lost, coordinator gone); joining, syncing and the rebalance callbacks all happen on the thread that
polls, as in Kafka, so a member that stops polling leaves the group by its rebalance timeout.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from client.admin import decode_consumer_assignment, encode_consumer_assignment
from client.assignors import Subscription, decode_subscription, encode_subscription
from client.client import KafkaClient, backoff_s
from client.coordinator_lookup import (COORDINATOR_RETRIABLE, CoordinatorLookup, TopicPartition,
                                       first_partition_error, offset_commit_request, offset_fetch_error,
                                       offset_fetch_request)
from client.errors import (CommitFailedError, FencedInstanceIdError, IllegalGenerationError, KafkaError,
                           MemberIdRequiredError, RebalanceInProgressError, UnknownMemberIdError, error_for_code)
from client.protocol.v1 import kafka_pb2

__all__ = ["ConsumerCoordinator", "GroupSettings", "TopicPartition", "CoordinatorLookup"]

# Errors that end the member's generation (Kafka's resetGenerationOnResponseError): its partitions are
# lost, not revoked, and it joins again.
GENERATION_LOST = (IllegalGenerationError, UnknownMemberIdError, FencedInstanceIdError)


@dataclass(frozen=True)
class GroupSettings:
    """Kafka's consumer settings for its group membership (names and defaults of Kafka 3.x)."""
    session_timeout_ms: int = 45000          # session.timeout.ms
    heartbeat_interval_ms: int = 3000        # heartbeat.interval.ms
    max_poll_interval_ms: int = 300000       # max.poll.interval.ms (= the rebalance timeout)
    group_instance_id: str | None = None     # group.instance.id (static membership)
    client_id: str = "raftka"                # client.id
    retry_backoff_ms: int = 100
    retry_backoff_max_ms: int = 1000


@dataclass
class Assignment:
    """What one sync handed this member: its generation and partitions."""
    generation_id: int
    member_id: str
    protocol: str
    partitions: list[TopicPartition] = field(default_factory=list)


class ConsumerCoordinator:
    """One consumer's membership of ``group_id`` (Kafka's ConsumerCoordinator).

    ``revoke``, ``assign`` and ``lose`` are the consumer's hooks, called on the polling thread: revoke
    before partitions go (the consumer commits there), assign after new ones came, lose when the
    generation ended without a chance to commit (the member was evicted or fenced)."""

    def __init__(self, client: KafkaClient, group_id: str, topics: list[str], assignors: list,
                 settings: GroupSettings, revoke: Callable[[list[TopicPartition]], None],
                 assign: Callable[[list[TopicPartition]], None], lose: Callable[[list[TopicPartition]], None]):
        if not assignors:
            raise ValueError("partition.assignment.strategy names no assignor")
        self._client = client
        self.group_id = group_id
        self.topics = list(topics)
        self.assignors = {a.name: a for a in assignors}
        self._preference = [a.name for a in assignors]
        # Kafka's rule: the member rebalances cooperatively only if every assignor it offers can.
        self.cooperative = all(a.protocol == "COOPERATIVE" for a in assignors)
        self.settings = settings
        self.lookup = CoordinatorLookup(client, group_id)
        self._hooks = (revoke, assign, lose)
        self._lock = threading.Lock()
        self.member_id = ""
        self.generation_id = -1
        self.protocol: str | None = None
        self.assigned: list[TopicPartition] = []
        self._stable = False                     # synced, and no heartbeat has said otherwise since
        self._rejoin_needed = True
        self._generation_lost = False
        self._fatal: KafkaError | None = None
        self._join_prepared = False
        self._partition_counts: dict[str, int] = {}   # what the leader assigned from
        self._last_poll = time.monotonic()
        self._closed = threading.Event()
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                           name=f"heartbeat-{group_id}")
        self._heartbeat.start()

    # ---- the polling thread ---------------------------------------------------------------------

    def ensure_active_group(self, deadline: float) -> bool:
        """Join (or rejoin) until this member has a stable assignment or ``deadline`` passes; True if
        it has one. Raises a fatal error (FencedInstanceIdError, a refused join) to the caller."""
        self._last_poll = time.monotonic()
        for attempt in itertools.count(1):
            self._raise_fatal()
            self._maybe_lose()
            if self._leader_sees_new_partitions():
                self.request_rejoin("the subscribed topics' partition counts changed")
            with self._lock:
                if not self._rejoin_needed and self._stable:
                    return True
            if time.monotonic() >= deadline:
                return False
            try:
                self._join_once(deadline)
            except KafkaError as e:
                if e.retriable or isinstance(e, (RebalanceInProgressError, MemberIdRequiredError, *GENERATION_LOST)):
                    pause = backoff_s(attempt, self.settings.retry_backoff_ms, self.settings.retry_backoff_max_ms)
                    time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
                    continue
                raise
        raise AssertionError("unreachable")

    def _join_once(self, deadline: float) -> None:
        if not self._join_prepared:
            self._on_join_prepare()
        assignment = self._join_and_sync()
        self._join_prepared = False
        self._on_join_complete(assignment)

    def _on_join_prepare(self) -> None:
        """Kafka's onJoinPrepare: an eager member gives up everything before it joins (its revoke hook
        commits them, still in the generation it has); a cooperative one keeps its partitions."""
        with self._lock:
            owned = list(self.assigned)
        if owned and not self.cooperative:
            self._hooks[0](owned)
            with self._lock:
                self.assigned = []
        with self._lock:
            self._stable = False
        self._join_prepared = True

    def _on_join_complete(self, assignment: Assignment) -> None:
        with self._lock:
            self.generation_id, self.member_id, self.protocol = (assignment.generation_id, assignment.member_id,
                                                                 assignment.protocol)
            owned = list(self.assigned)
        new = assignment.partitions
        revoked = [tp for tp in owned if tp not in new]
        added = [tp for tp in new if tp not in owned]
        if revoked:
            # Cooperative: give these up now (committed in the new generation); a second rebalance
            # hands them to their new owner.
            self._hooks[0](revoked)
        with self._lock:
            self.assigned = [tp for tp in owned if tp in new] + added
            self._stable = True
            self._rejoin_needed = bool(revoked) and self.cooperative
        self._hooks[1](added)

    def _maybe_lose(self) -> None:
        with self._lock:
            if not self._generation_lost:
                return
            self._generation_lost = False
            lost, self.assigned = list(self.assigned), []
            self._stable = False
            self._rejoin_needed = True
        if lost:
            self._hooks[2](lost)

    def _raise_fatal(self) -> None:
        with self._lock:
            fatal, self._fatal = self._fatal, None
        if fatal is not None:
            raise fatal

    def request_rejoin(self, reason: str) -> None:
        with self._lock:
            self._rejoin_needed = True
        self._client.trace("event", "JoinGroup", ("", 0), None, f"group {self.group_id}: rejoin ({reason})")

    def _reset_generation(self, error: KafkaError) -> None:
        """The coordinator no longer knows this generation (or member): the partitions are lost."""
        with self._lock:
            self.generation_id = -1
            if isinstance(error, (UnknownMemberIdError, FencedInstanceIdError)):
                self.member_id = ""
            self._generation_lost = True
            self._stable = False
            self._rejoin_needed = True
            if isinstance(error, FencedInstanceIdError):
                self._fatal = error

    # ---- JoinGroup and SyncGroup ----------------------------------------------------------------

    def _join_and_sync(self) -> Assignment:
        """One JoinGroup (twice when the coordinator hands out a member id first) and its SyncGroup."""
        for _ in range(2):
            try:
                joined = self._send(lambda: self._join_request(), "JoinGroup", self._join_timeout_s(),
                                    f"join group {self.group_id} as {self.member_id or 'a new member'}")
            except MemberIdRequiredError:
                continue       # _send kept the member id the answer carried: join again with it
            break
        else:
            raise MemberIdRequiredError("the coordinator asked for a member id twice")
        assignments = []
        if joined.leader == joined.member_id:
            assignments = self._leader_assign(joined)
        else:
            with self._lock:
                self._partition_counts = {}      # only the leader watches them
        request = kafka_pb2.SyncGroupRequest(
            group_id=self.group_id, generation_id=joined.generation_id, member_id=joined.member_id,
            group_instance_id=self.settings.group_instance_id, protocol_type="consumer",
            protocol_name=joined.protocol_name, assignments=assignments)
        synced = self._send(lambda: request, "SyncGroup", self._join_timeout_s(),
                            f"sync generation {joined.generation_id} of group {self.group_id}")
        try:
            partitions = decode_consumer_assignment(synced.assignment).partitions
        except ValueError as e:
            raise KafkaError(f"group {self.group_id}: the leader's assignment does not parse: {e}") from None
        return Assignment(joined.generation_id, joined.member_id, joined.protocol_name, partitions)

    def _join_request(self) -> kafka_pb2.JoinGroupRequest:
        with self._lock:
            owned, generation, member_id = list(self.assigned), self.generation_id, self.member_id
        protocols = []
        for name in self._preference:
            assignor = self.assignors[name]
            subscription = Subscription(sorted(self.topics), assignor.subscription_user_data(self.topics, generation),
                                        owned, generation)
            protocols.append(kafka_pb2.GroupProtocol(name=name, metadata=encode_subscription(subscription)))
        s = self.settings
        return kafka_pb2.JoinGroupRequest(
            group_id=self.group_id, session_timeout_ms=s.session_timeout_ms,
            rebalance_timeout_ms=s.max_poll_interval_ms, member_id=member_id,
            group_instance_id=s.group_instance_id, protocol_type="consumer", protocols=protocols,
            client_id=s.client_id)

    def _join_timeout_s(self) -> float:
        # Kafka's rule: a join may wait the whole rebalance timeout, plus a margin.
        return max(self._client.request_timeout_s, self.settings.max_poll_interval_ms / 1000 + 5)

    def _send(self, build: Callable[[], object], api: str, timeout_s: float, detail: str):
        """One JoinGroup or SyncGroup to the coordinator. Its error raises: a coordinator error forgets
        the coordinator; a generation error ends the generation; MEMBER_ID_REQUIRED keeps the id."""
        response = self.lookup.call_once(api, build(), detail, timeout_s)
        if not response.error_code:
            return response
        error = error_for_code(response.error_code, response.error_message)
        if isinstance(error, MemberIdRequiredError):
            with self._lock:
                self.member_id = response.member_id
        elif isinstance(error, COORDINATOR_RETRIABLE):
            self.lookup.forget()
        elif isinstance(error, GENERATION_LOST):
            self._reset_generation(error)
        raise error

    def _leader_assign(self, joined) -> list[kafka_pb2.SyncGroupAssignment]:
        """The leader runs the group's assignor over every member's subscription (Kafka's
        ConsumerCoordinator.onLeaderElected); a member whose subscription does not parse gets nothing."""
        assignor = self.assignors.get(joined.protocol_name)
        if assignor is None:
            raise KafkaError(f"group {self.group_id} chose assignor {joined.protocol_name!r}, which this member "
                             f"did not offer")
        subscriptions: dict[str, Subscription] = {}
        for m in joined.members:
            try:
                subscriptions[m.member_id] = decode_subscription(m.metadata)
            except ValueError:
                subscriptions[m.member_id] = Subscription([])
        topics = sorted({t for s in subscriptions.values() for t in s.topics})
        counts = self._partition_counts_of(topics)
        instance_ids = {m.member_id: (m.group_instance_id if m.HasField("group_instance_id") else None)
                        for m in joined.members}
        result = assignor.assign(counts, subscriptions, instance_ids)
        with self._lock:
            self._partition_counts = counts
        return [kafka_pb2.SyncGroupAssignment(member_id=m, assignment=encode_consumer_assignment(result.get(m, [])))
                for m in subscriptions]

    def _partition_counts_of(self, topics: list[str]) -> dict[str, int]:
        if not topics:
            return {}
        self._client.refresh_metadata(topics)
        return {t: len(info.partitions) for t in topics
                if (info := self._client.metadata.topics.get(t)) is not None and info.partitions}

    def _leader_sees_new_partitions(self) -> bool:
        """Kafka's leader rebalances when a subscribed topic's partition count changes (metadata it
        refreshes anyway: on errors and every metadata.max.age.ms)."""
        with self._lock:
            counts = dict(self._partition_counts)
            leading = bool(counts) and self._stable
        if not leading:
            return False
        now = {t: len(info.partitions) for t in counts
               if (info := self._client.metadata.topics.get(t)) is not None and info.partitions}
        return any(now.get(t, c) != c for t, c in counts.items())

    # ---- the heartbeat thread -------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        """Kafka's HeartbeatThread: heartbeats while stable; a member that has not polled within
        max.poll.interval.ms leaves the group, so its partitions go to members that are working."""
        interval = self.settings.heartbeat_interval_ms / 1000
        while not self._closed.wait(interval):
            if time.monotonic() - self._last_poll > self.settings.max_poll_interval_ms / 1000:
                with self._lock:
                    stable = self._stable
                if stable:
                    self._client.trace("event", "LeaveGroup", ("", 0), None,
                                       f"group {self.group_id}: poll timeout expired (max.poll.interval.ms)")
                    if self.settings.group_instance_id is None:
                        self._leave()      # Kafka's maybeLeaveGroup: only a dynamic member says goodbye
                    self._reset_generation(UnknownMemberIdError("left the group: max.poll.interval.ms expired"))
                continue
            self._heartbeat_once()

    def _heartbeat_once(self) -> None:
        with self._lock:
            # Kafka heartbeats on while a rejoin is pending (until the poll thread starts it), or the
            # session could expire before the member gets to rejoin.
            if not self._stable:
                return
            request = kafka_pb2.HeartbeatRequest(group_id=self.group_id, generation_id=self.generation_id,
                                                 member_id=self.member_id,
                                                 group_instance_id=self.settings.group_instance_id)
        try:
            # A heartbeat must not outlive the session it keeps alive.
            timeout_s = min(self._client.request_timeout_s, self.settings.session_timeout_ms / 1000)
            response = self.lookup.call_once("Heartbeat", request, f"heartbeat of {request.member_id}", timeout_s)
        except KafkaError:
            return                # the coordinator is gone: forgotten; the poll thread's calls find it again
        if not response.error_code:
            return
        with self._lock:
            # Kafka's generationUnchanged(): an answer about a generation the member has since left (it
            # rejoined while the heartbeat was out) says nothing about the one it has now.
            if (self.generation_id, self.member_id) != (request.generation_id, request.member_id):
                return
        error = error_for_code(response.error_code, response.error_message)
        if isinstance(error, RebalanceInProgressError):
            self.request_rejoin("the coordinator started a rebalance")
        elif isinstance(error, GENERATION_LOST):
            self._reset_generation(error)
        elif isinstance(error, COORDINATOR_RETRIABLE):
            self.lookup.forget()

    # ---- offsets --------------------------------------------------------------------------------

    def commit(self, offsets: dict[TopicPartition, int], metadata: str = "",
               timeout_s: float | None = None) -> None:
        """Commit ``offsets`` in this member's generation (Kafka's commitSync). REBALANCE_IN_PROGRESS
        raises RebalanceInProgressError (poll to finish the rebalance, then commit again); a generation
        the group no longer has raises CommitFailedError and the partitions count as lost."""
        if not offsets:
            return
        with self._lock:
            generation, member_id = self.generation_id, self.member_id
        if generation < 0:
            # Kafka's rule: no generation, no commit (the offsets could overwrite a new owner's). A member
            # in a rebalance still has its generation here (eager members commit as they revoke).
            raise CommitFailedError(f"Commit of group {self.group_id} failed: this consumer is not a member of "
                                    f"the group now (it left or was removed); poll to rejoin.")
        request = offset_commit_request(self.group_id, offsets, metadata, generation, member_id,
                                        self.settings.group_instance_id)
        try:
            self.lookup.call("OffsetCommit", request, first_partition_error,
                             f"commit {len(offsets)} offset(s) of group {self.group_id} in generation {generation}",
                             timeout_s)
        except RebalanceInProgressError:
            self.request_rejoin("a commit found the group rebalancing")
            raise
        except GENERATION_LOST as e:
            self._reset_generation(e)
            raise CommitFailedError(f"Commit of group {self.group_id} failed: {e.name} ({e}). The group "
                                    f"rebalanced; the partitions may belong to another member now.") from None

    def committed(self, partitions: list[TopicPartition] | None = None,
                  timeout_s: float | None = None) -> dict[TopicPartition, int]:
        """The group's committed offsets of ``partitions`` (None: all it has); uncommitted ones left out."""
        response = self.lookup.call("OffsetFetch", offset_fetch_request(self.group_id, partitions),
                                    offset_fetch_error, f"committed offsets of group {self.group_id}", timeout_s)
        return {(t.name, p.partition_index): p.committed_offset for t in response.topics for p in t.partitions
                if p.committed_offset >= 0}

    # ---- leaving --------------------------------------------------------------------------------

    def close(self, revoke: bool = True) -> None:
        """Leave the group (a static member stays: its session timeout ends it, as in Kafka); the revoke
        hook runs first so the consumer commits its partitions, or the lose hook if the generation has
        already ended (Kafka's onLeavePrepare). The heartbeat thread stops whatever the hooks do."""
        self._closed.set()
        try:
            with self._lock:
                owned, lost = list(self.assigned), self._generation_lost or self.generation_id < 0
                self.assigned = []
            if revoke and owned:
                self._hooks[2 if lost else 0](owned)
        finally:
            if self.settings.group_instance_id is None:
                self._leave()
            self._heartbeat.join(timeout=5)

    def _leave(self) -> None:
        with self._lock:
            member_id, self._stable = self.member_id, False
        if not member_id:
            return
        request = kafka_pb2.LeaveGroupRequest(group_id=self.group_id, members=[kafka_pb2.MemberIdentity(
            member_id=member_id, group_instance_id=self.settings.group_instance_id, reason="the consumer is closing")])
        try:
            self.lookup.call_once("LeaveGroup", request, f"leave group {self.group_id}",
                                  min(self._client.request_timeout_s, 5.0))
        except KafkaError:
            pass        # the session timeout ends the membership instead
        with self._lock:
            self.member_id, self.generation_id = "", -1
