"""One classic consumer group as a plain state machine: Kafka's GroupMetadata with the
JoinGroup / SyncGroup / Heartbeat / LeaveGroup rules of its GroupCoordinator (the classic
protocol of Kafka 3.x: core/.../coordinator/group/GroupCoordinator.scala, GroupMetadata.scala,
DelayedJoin.scala; group-coordinator/.../classic/ClassicGroup.java, ClassicGroupMember.java).

No sockets, threads, files or clocks. Every call takes ``now_ms``. A request Kafka answers
later (a JoinGroup waiting for the rebalance, a follower's SyncGroup waiting for the leader's
assignment) is held as the opaque ``ticket`` its caller passed in; every call returns the
completions ready now, ``[(ticket, response)]``, which may include the caller's own ticket and
tickets of other members' waiting requests. Kafka's purgatory timers are deadlines here:
``next_deadline_ms()`` says when to call ``tick(now_ms)``, which fires the due ones (session
expiry, the rebalance timeout, the initial rebalance delay, pending-member expiry, the
SyncGroup timeout). Only ``tick`` fires timers. Errors are values: client.errors classes.

Every ticket is answered exactly once. Where Kafka would drop a waiting request's callback
(a member sends a second JoinGroup or SyncGroup while its first still waits; a member awaiting
its assignment is removed) this class answers the older one: REBALANCE_IN_PROGRESS for a
superseded request (the Java consumer retries it), UNKNOWN_MEMBER_ID for a removed member.

Static membership (KIP-345): a member that sets ``group_instance_id`` joins without
MEMBER_ID_REQUIRED; one that comes back with the same instance id and no member id (a restarted
process) replaces the old member id. In a Stable group whose protocol does not change that is done
without a rebalance: the member gets the current generation (and, on SyncGroup, its old
assignment), the old id's waiting requests are answered FENCED_INSTANCE_ID, and every later
request naming the instance id with another member id gets FENCED_INSTANCE_ID (Kafka's
ClassicGroup.validateMember).
Persisting the group (Kafka's storeGroup into __consumer_offsets) is the caller's: the leader's
SyncGroup makes the group Stable at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from broker.invariants import violated
from client.errors import (CoordinatorNotAvailableError, FencedInstanceIdError, GroupMaxSizeReachedError,
                           IllegalGenerationError, InconsistentGroupProtocolError, InvalidSessionTimeoutError,
                           KafkaError, MemberIdRequiredError, NotCoordinatorError, RebalanceInProgressError,
                           UnknownMemberIdError)

UNKNOWN_MEMBER_ID = ""     # JoinGroupRequest.UNKNOWN_MEMBER_ID: a member's first join
NO_GENERATION = -1         # GroupCoordinator.NoGeneration (also an error answer's generation)
NO_LEADER = ""
# GroupCoordinator.NewMemberJoinTimeoutMs (KIP-394): a member that joined in this rebalance
# cannot heartbeat yet; if its client gave up and retried, its old id would linger in the
# rebalance, so a new member's JoinGroup expires after this long.
NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000


class GroupState(Enum):
    """Kafka's group states, valued as Kafka spells them (DescribeGroups, ListGroups)."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True)
class GroupConfig:
    group_min_session_timeout_ms: int = 6000        # group.min.session.timeout.ms
    group_max_session_timeout_ms: int = 1800000     # group.max.session.timeout.ms
    group_initial_rebalance_delay_ms: int = 3000    # group.initial.rebalance.delay.ms
    group_max_size: int = 2**31 - 1                 # group.max.size


# ---- requests and responses (Kafka's JoinGroup/SyncGroup/Heartbeat/LeaveGroup fields) -------------


@dataclass(frozen=True)
class JoinGroupRequest:
    member_id: str                              # UNKNOWN_MEMBER_ID ("") on a member's first join
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int                   # JoinGroup v0 has none: pass the session timeout (Kafka does)
    protocol_type: str                          # "consumer" for consumers
    protocols: tuple[tuple[str, bytes], ...]    # (name, metadata), the member's most preferred first
    group_instance_id: str | None = None        # static membership (module doc)
    require_known_member_id: bool = True        # JoinGroup v4+: a first join gets MEMBER_ID_REQUIRED


@dataclass(frozen=True)
class JoinGroupMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes                             # for the group's chosen protocol


@dataclass(frozen=True)
class JoinGroupResponse:
    error: KafkaError | None
    member_id: str
    generation_id: int = NO_GENERATION
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = NO_LEADER
    members: tuple[JoinGroupMember, ...] = ()   # every member for the leader, empty for followers


@dataclass(frozen=True)
class SyncGroupRequest:
    member_id: str
    generation_id: int
    assignments: tuple[tuple[str, bytes], ...] = ()  # the leader's: (member id, assignment)
    group_instance_id: str | None = None
    protocol_type: str | None = None            # v5+; None: not checked
    protocol_name: str | None = None            # v5+; None: not checked


@dataclass(frozen=True)
class SyncGroupResponse:
    error: KafkaError | None
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol_name: str | None = None


@dataclass(frozen=True)
class HeartbeatRequest:
    member_id: str
    generation_id: int
    group_instance_id: str | None = None


@dataclass(frozen=True)
class HeartbeatResponse:
    error: KafkaError | None


@dataclass(frozen=True)
class MemberIdentity:
    """One member of a LeaveGroup batch (v3+); member_id "" names it by group_instance_id alone."""

    member_id: str
    group_instance_id: str | None = None


@dataclass(frozen=True)
class LeaveMemberResponse:
    member_id: str
    group_instance_id: str | None
    error: KafkaError | None


@dataclass(frozen=True)
class LeaveGroupResponse:
    error: KafkaError | None                    # the group's (COORDINATOR_NOT_AVAILABLE when Dead)
    members: tuple[LeaveMemberResponse, ...] = ()


@dataclass(frozen=True)
class DescribedMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes                             # Stable only (DescribeGroups' rule), else b""
    assignment: bytes                           # Stable only, else b""


@dataclass(frozen=True)
class GroupDescription:
    group_id: str
    state: str                                  # Kafka's spelling: GroupState values
    protocol_type: str
    protocol: str                               # Stable only, else ""
    members: tuple[DescribedMember, ...]


Response = JoinGroupResponse | SyncGroupResponse | HeartbeatResponse | LeaveGroupResponse
Completion = tuple[object, Response]


# ---- the member and the group ---------------------------------------------------------------------


@dataclass
class ClassicGroupMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    # None until the leader's SyncGroup of the current generation gave one (b"" if it named none).
    assignment: bytes | None = None
    join_ticket: object | None = None           # a JoinGroup waiting for the rebalance to complete
    sync_ticket: object | None = None           # a SyncGroup waiting for the leader's assignment
    # Kafka's isNew: added in this rebalance, no join completed yet. Such a member may expire
    # while its JoinGroup waits; any other member waiting on a join or sync may not.
    is_new: bool = False
    heartbeat_deadline_ms: int = 0

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata(self, protocol_name: str) -> bytes:
        return next(meta for name, meta in self.protocols if name == protocol_name)

    def vote(self, candidates: set[str]) -> str:
        """Its most preferred protocol among ``candidates`` (ClassicGroupMember.vote)."""
        return next(name for name in self.protocol_names() if name in candidates)

    @property
    def has_satisfied_heartbeat(self) -> bool:
        return not self.is_new and (self.join_ticket is not None or self.sync_ticket is not None)


@dataclass
class GroupMetadata:
    group_id: str
    config: GroupConfig = field(default_factory=GroupConfig)
    state: GroupState = GroupState.EMPTY
    generation_id: int = 0
    # Set by the first member of an empty group and kept while the group lives (Kafka does).
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, ClassicGroupMember] = field(default_factory=dict)
    # Ids handed out with MEMBER_ID_REQUIRED, with when they expire if the member never joins:
    # while any is pending, a rebalance waits for it (Kafka's hasAllMembersJoined).
    pending_members: dict[str, int] = field(default_factory=dict)
    # Members of this generation that have not sent SyncGroup yet (Kafka's pendingSyncMembers).
    pending_sync_members: set[str] = field(default_factory=set)
    # DelayedJoin: when PreparingRebalance stops waiting for members that have not rejoined.
    join_deadline_ms: int | None = None
    # InitialDelayedJoin's (delay, remaining) while a rebalance from Empty is being delayed.
    initial_delay: tuple[int, int] | None = None
    new_member_added: bool = False
    # DelayedSync: when members of a completed join that never sent SyncGroup are removed.
    sync_deadline_ms: int | None = None

    # ---- JoinGroup ------------------------------------------------------------------------------

    def join_group(self, ticket: object, request: JoinGroupRequest, now_ms: int) -> list[Completion]:
        """Kafka's handleJoinGroup on this group. A successful join waits (its ticket is answered
        when the rebalance completes) unless the group can answer it from the current generation."""
        _require_ticket(ticket)
        out: list[Completion] = []
        cfg = self.config
        if not cfg.group_min_session_timeout_ms <= request.session_timeout_ms <= cfg.group_max_session_timeout_ms:
            out.append((ticket, JoinGroupResponse(InvalidSessionTimeoutError(
                f"Session timeout {request.session_timeout_ms} ms is outside "
                f"[{cfg.group_min_session_timeout_ms}, {cfg.group_max_session_timeout_ms}]."), request.member_id)))
        elif not self._accepts_joining_member(request.member_id):
            # group.max.size: Kafka sheds a member that has not rejoined rather than grow past it.
            out += self._remove_member(request.member_id)
            out.append((ticket, JoinGroupResponse(GroupMaxSizeReachedError(
                f"Group {self.group_id} has reached its max size {cfg.group_max_size}."), UNKNOWN_MEMBER_ID)))
        elif request.member_id == UNKNOWN_MEMBER_ID:
            out += self._join_new_member(ticket, request, now_ms)
        else:
            out += self._join_current_member(ticket, request, now_ms)
        out += self._maybe_complete_join(now_ms)
        self.check_invariants()
        return out

    def _accepts_joining_member(self, member_id: str) -> bool:
        """Kafka's acceptJoiningMember: during a rebalance the count of members already waiting
        decides (the group may be over a lowered max size); otherwise the group's size."""
        if self.state in (GroupState.EMPTY, GroupState.DEAD):
            return True
        member = self.members.get(member_id)
        if self.state is GroupState.PREPARING_REBALANCE:
            waiting = sum(1 for m in self.members.values() if m.join_ticket is not None)
            return (member is not None and member.join_ticket is not None) or waiting < self.config.group_max_size
        return member is not None or len(self.members) < self.config.group_max_size

    def _join_new_member(self, ticket: object, request: JoinGroupRequest, now_ms: int) -> list[Completion]:
        if self.state is GroupState.DEAD:
            return [(ticket, JoinGroupResponse(CoordinatorNotAvailableError(), UNKNOWN_MEMBER_ID))]
        if not self._supports_protocols(request):
            return [(ticket, JoinGroupResponse(self._inconsistent(request), UNKNOWN_MEMBER_ID))]
        if request.group_instance_id is not None:
            # A static member joins at once (no MEMBER_ID_REQUIRED), replacing its earlier self if any.
            member_id = f"{request.group_instance_id}-{uuid.uuid4()}"
            old_id = self._static_member_id(request.group_instance_id)
            if old_id is not None:
                return self._update_static_member_and_rebalance(ticket, request, old_id, member_id, now_ms)
            return self._add_member_and_rebalance(ticket, request, member_id, now_ms)
        member_id = f"{request.client_id}-{uuid.uuid4()}"
        if request.require_known_member_id:
            # The member must come back with this id: until then it is pending, and a rebalance
            # waits for it (a client that died here is forgotten after its session timeout).
            self.pending_members[member_id] = now_ms + request.session_timeout_ms
            return [(ticket, JoinGroupResponse(MemberIdRequiredError(), member_id))]
        return self._add_member_and_rebalance(ticket, request, member_id, now_ms)

    def _join_current_member(self, ticket: object, request: JoinGroupRequest, now_ms: int) -> list[Completion]:
        member_id = request.member_id
        if self.state is GroupState.DEAD:
            return [(ticket, JoinGroupResponse(CoordinatorNotAvailableError(), member_id))]
        if not self._supports_protocols(request):
            return [(ticket, JoinGroupResponse(self._inconsistent(request), member_id))]
        if member_id in self.pending_members:
            return self._add_member_and_rebalance(ticket, request, member_id, now_ms)
        if self._is_static_member_fenced(request.group_instance_id, member_id):
            return [(ticket, JoinGroupResponse(self._fenced(request.group_instance_id, member_id), member_id))]
        member = self.members.get(member_id)
        if member is None or self.state is GroupState.EMPTY:
            return [(ticket, JoinGroupResponse(UnknownMemberIdError(
                f"Member {member_id} is not in group {self.group_id}."), member_id))]
        unchanged = member.protocols == request.protocols
        if self.state is GroupState.COMPLETING_REBALANCE and unchanged:
            # It lost its JoinGroup answer: the same answer again, for the current generation.
            return [(ticket, self._join_response(member_id))]
        if self.state is GroupState.STABLE and unchanged and member_id != self.leader_id:
            # A follower with nothing new may go on to SyncGroup. The leader's JoinGroup always
            # rebalances: it is how a consumer asks for one after a topic metadata change.
            return [(ticket, self._join_response(member_id))]
        return self._update_member_and_rebalance(ticket, member, request, now_ms)

    def _supports_protocols(self, request: JoinGroupRequest) -> bool:
        """ClassicGroup.supportsProtocols: an empty group takes any non-empty type and list;
        otherwise the type must be the group's and one protocol supported by every member."""
        names = [name for name, _ in request.protocols]
        if self.state is GroupState.EMPTY:
            return bool(request.protocol_type) and bool(names)
        return request.protocol_type == self.protocol_type and any(
            all(name in m.protocol_names() for m in self.members.values()) for name in names)

    def _inconsistent(self, request: JoinGroupRequest) -> KafkaError:
        return InconsistentGroupProtocolError(
            f"Protocols {[n for n, _ in request.protocols]} of type {request.protocol_type!r} share none "
            f"with every member of group {self.group_id} (type {self.protocol_type!r}).")

    def _add_member_and_rebalance(self, ticket: object, request: JoinGroupRequest, member_id: str,
                                  now_ms: int) -> list[Completion]:
        member = ClassicGroupMember(member_id, request.group_instance_id, request.client_id, request.client_host,
                                request.rebalance_timeout_ms, request.session_timeout_ms, request.protocol_type,
                                request.protocols, join_ticket=ticket, is_new=True,
                                heartbeat_deadline_ms=now_ms + NEW_MEMBER_JOIN_TIMEOUT_MS)
        if self.state is GroupState.PREPARING_REBALANCE and self.generation_id == 0:
            self.new_member_added = True  # extends the initial delay of a new group
        if not self.members:
            self.protocol_type = member.protocol_type
        if self.leader_id is None:
            self.leader_id = member_id
        self.members[member_id] = member
        self.pending_members.pop(member_id, None)
        return self._maybe_prepare_rebalance(now_ms)

    def _update_member_and_rebalance(self, ticket: object, member: ClassicGroupMember, request: JoinGroupRequest,
                                     now_ms: int) -> list[Completion]:
        out = self._supersede(member)
        member.protocols = request.protocols
        member.rebalance_timeout_ms = request.rebalance_timeout_ms
        member.session_timeout_ms = request.session_timeout_ms
        member.join_ticket = ticket
        return out + self._maybe_prepare_rebalance(now_ms)

    def _update_static_member_and_rebalance(self, ticket: object, request: JoinGroupRequest, old_id: str,
                                            new_id: str, now_ms: int) -> list[Completion]:
        """Kafka's updateStaticMemberAndRebalance: the instance's member id is replaced. A Stable group
        whose chosen protocol stays goes on without a rebalance; the answer names the current leader
        (the old id if it led), so the returning member does not take itself for the leader and assign."""
        current_leader = self.leader_id
        out = self._replace_static_member(old_id, new_id)
        member = self.members[new_id]
        member.protocols = request.protocols
        member.rebalance_timeout_ms = request.rebalance_timeout_ms
        member.session_timeout_ms = request.session_timeout_ms
        member.client_id, member.client_host = request.client_id, request.client_host
        member.heartbeat_deadline_ms = now_ms + request.session_timeout_ms
        if self.state is GroupState.STABLE and self.protocol_name == self._select_protocol():
            return out + [(ticket, JoinGroupResponse(None, new_id, self.generation_id, self.protocol_type,
                                                     self.protocol_name, current_leader or NO_LEADER))]
        member.join_ticket = ticket
        if self.state is GroupState.PREPARING_REBALANCE:
            return out                           # the rebalance under way now waits for the new id
        return out + self._prepare_rebalance(now_ms)

    def _replace_static_member(self, old_id: str, new_id: str) -> list[Completion]:
        """The member object moves to ``new_id``; whatever the old id still waited on is fenced."""
        member = self.members.pop(old_id)
        out: list[Completion] = []
        error = FencedInstanceIdError(f"Instance {member.group_instance_id} rejoined as {new_id}.")
        if member.join_ticket is not None:
            out.append((member.join_ticket, JoinGroupResponse(error, old_id)))
        if member.sync_ticket is not None:
            out.append((member.sync_ticket, SyncGroupResponse(error)))
        member.join_ticket = member.sync_ticket = None
        member.member_id = new_id
        self.members[new_id] = member
        if self.leader_id == old_id:
            self.leader_id = new_id
        if old_id in self.pending_sync_members:
            self.pending_sync_members.discard(old_id)
            self.pending_sync_members.add(new_id)
        return out

    def _static_member_id(self, group_instance_id: str | None) -> str | None:
        if group_instance_id is None:
            return None
        return next((m.member_id for m in self.members.values() if m.group_instance_id == group_instance_id), None)

    def _is_static_member_fenced(self, group_instance_id: str | None, member_id: str) -> bool:
        existing = self._static_member_id(group_instance_id)
        return existing is not None and existing != member_id

    def _fenced(self, group_instance_id: str | None, member_id: str) -> KafkaError:
        return FencedInstanceIdError(f"Instance {group_instance_id} of group {self.group_id} is now member "
                                     f"{self._static_member_id(group_instance_id)}, not {member_id}.")

    def member_error(self, member_id: str, group_instance_id: str | None) -> KafkaError | None:
        """Kafka's ClassicGroup.validateMember: a static member is known by its instance id, which must
        map to this member id (FENCED_INSTANCE_ID otherwise); a dynamic one by its member id."""
        if group_instance_id is not None:
            existing = self._static_member_id(group_instance_id)
            if existing is None:
                return UnknownMemberIdError(f"Instance {group_instance_id} is not in group {self.group_id}.")
            return self._fenced(group_instance_id, member_id) if existing != member_id else None
        if member_id not in self.members:
            return UnknownMemberIdError(f"Member {member_id} is not in group {self.group_id}.")
        return None

    def _join_response(self, member_id: str) -> JoinGroupResponse:
        members: tuple[JoinGroupMember, ...] = ()
        if member_id == self.leader_id:
            assert self.protocol_name is not None
            members = tuple(JoinGroupMember(m.member_id, m.group_instance_id, m.metadata(self.protocol_name))
                            for m in self.members.values())
        return JoinGroupResponse(None, member_id, self.generation_id, self.protocol_type, self.protocol_name,
                                 self.leader_id or NO_LEADER, members)

    # ---- the rebalance ---------------------------------------------------------------------------

    def _maybe_prepare_rebalance(self, now_ms: int) -> list[Completion]:
        if self.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY):
            return self._prepare_rebalance(now_ms)
        return []

    def _prepare_rebalance(self, now_ms: int) -> list[Completion]:
        """Kafka's prepareRebalance: waiting syncs are told to rejoin, and the join phase starts,
        delayed by group.initial.rebalance.delay.ms when the group was Empty (so that a fleet of
        consumers starting together lands in one generation instead of one each)."""
        out: list[Completion] = []
        if self.state is GroupState.COMPLETING_REBALANCE:
            for member in self.members.values():
                member.assignment = None
            out += self._answer_syncs(lambda m: SyncGroupResponse(RebalanceInProgressError()), now_ms)
        self.pending_sync_members.clear()
        self.sync_deadline_ms = None
        if self.state is GroupState.EMPTY:
            delay = self.config.group_initial_rebalance_delay_ms
            self.initial_delay = (delay, max(self._rebalance_timeout_ms() - delay, 0))
            self.join_deadline_ms = now_ms + delay
        else:
            self.initial_delay = None
            self.join_deadline_ms = now_ms + self._rebalance_timeout_ms()
        self.state = GroupState.PREPARING_REBALANCE
        return out + self._maybe_complete_join(now_ms)

    def _rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def _maybe_complete_join(self, now_ms: int) -> list[Completion]:
        """DelayedJoin.tryComplete: done early once every member and every pending member has
        joined. The initial delay never completes early (InitialDelayedJoin.tryComplete is false)."""
        if self.state is not GroupState.PREPARING_REBALANCE or self.initial_delay is not None:
            return []
        if self.pending_members or any(m.join_ticket is None for m in self.members.values()):
            return []
        return self._complete_join(now_ms)

    def _complete_join(self, now_ms: int) -> list[Completion]:
        """Kafka's onCompleteJoin: members that did not rejoin are dropped, the next generation
        starts with a protocol chosen by vote, and every waiting JoinGroup is answered."""
        out: list[Completion] = []
        for member in [m for m in self.members.values() if m.join_ticket is None]:
            out += self._remove_member(member.member_id)
        # remove() already made the first remaining member leader if the leader was dropped, and
        # every remaining member has rejoined: Kafka's maybeElectNewJoinedLeader has no more to do.
        self.generation_id += 1
        self.join_deadline_ms = None
        self.initial_delay = None
        self.pending_sync_members.clear()
        if not self.members:
            self.protocol_name = None
            self.state = GroupState.EMPTY
            return out
        self.protocol_name = self._select_protocol()
        self.state = GroupState.COMPLETING_REBALANCE
        for member in self.members.values():
            member.assignment = None
            out.append((member.join_ticket, self._join_response(member.member_id)))
            member.join_ticket = None
            member.is_new = False
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
            self.pending_sync_members.add(member.member_id)
        self.sync_deadline_ms = now_ms + self._rebalance_timeout_ms()
        return out

    def _select_protocol(self) -> str:
        """Kafka's selectProtocol: among the protocols every member supports, each member votes
        for its most preferred; most votes wins. Ties go to the first voted (Kafka's pick depends
        on HashMap order)."""
        candidates = set.intersection(*(set(m.protocol_names()) for m in self.members.values()))
        votes: dict[str, int] = {}
        for member in self.members.values():
            choice = member.vote(candidates)
            votes[choice] = votes.get(choice, 0) + 1
        return max(votes, key=lambda name: votes[name])

    # ---- SyncGroup ------------------------------------------------------------------------------

    def sync_group(self, ticket: object, request: SyncGroupRequest, now_ms: int) -> list[Completion]:
        """Kafka's doSyncGroup. In CompletingRebalance a follower waits for the leader's SyncGroup,
        which answers every waiting member and makes the group Stable; in Stable the member's
        current assignment comes back at once."""
        _require_ticket(ticket)
        error = self._validate_sync(request)
        if error is not None:
            out: list[Completion] = [(ticket, SyncGroupResponse(error))]
        elif self.state is GroupState.PREPARING_REBALANCE:
            out = [(ticket, SyncGroupResponse(RebalanceInProgressError()))]
        else:
            member = self.members[request.member_id]
            self._synced(member.member_id)
            if self.state is GroupState.STABLE:
                member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
                out = [(ticket, SyncGroupResponse(None, member.assignment or b"", self.protocol_type,
                                                  self.protocol_name))]
            else:
                out = self._supersede(member, join=False)
                member.sync_ticket = ticket
                if member.member_id == self.leader_id:
                    out += self._complete_sync(dict(request.assignments), now_ms)
        self.check_invariants()
        return out

    def _validate_sync(self, request: SyncGroupRequest) -> KafkaError | None:
        if self.state is GroupState.DEAD:
            return CoordinatorNotAvailableError()
        error = self.member_error(request.member_id, request.group_instance_id)
        if error is not None:
            return error
        if request.generation_id != self.generation_id:
            return IllegalGenerationError(
                f"Generation {request.generation_id} is not the group's {self.generation_id}.")
        if request.protocol_type is not None and request.protocol_type != self.protocol_type:
            return InconsistentGroupProtocolError(f"Protocol type {request.protocol_type!r} is not the group's.")
        if request.protocol_name is not None and request.protocol_name != self.protocol_name:
            return InconsistentGroupProtocolError(f"Protocol {request.protocol_name!r} is not the group's.")
        return None

    def _synced(self, member_id: str) -> None:
        self.pending_sync_members.discard(member_id)
        if not self.pending_sync_members:
            self.sync_deadline_ms = None  # DelayedSync completes: everyone synced

    def _complete_sync(self, assignments: dict[str, bytes], now_ms: int) -> list[Completion]:
        """The leader's assignment: members it left out get empty bytes (Kafka does the same),
        ids that are not members are ignored."""
        for member in self.members.values():
            member.assignment = assignments.get(member.member_id, b"")
        out = self._answer_syncs(lambda m: SyncGroupResponse(None, m.assignment or b"", self.protocol_type,
                                                             self.protocol_name), now_ms)
        self.state = GroupState.STABLE
        return out

    def _answer_syncs(self, response: Callable[[ClassicGroupMember], SyncGroupResponse],
                      now_ms: int) -> list[Completion]:
        """Kafka's propagateAssignment: each waiting SyncGroup answered, and its member's session
        restarts (it could not expire while it waited)."""
        out: list[Completion] = []
        for member in self.members.values():
            if member.sync_ticket is not None:
                out.append((member.sync_ticket, response(member)))
                member.sync_ticket = None
                member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
        return out

    # ---- Heartbeat, LeaveGroup, OffsetCommit ------------------------------------------------------

    def heartbeat(self, ticket: object, request: HeartbeatRequest, now_ms: int) -> list[Completion]:
        """Kafka's handleHeartbeat: a current member's session restarts; in PreparingRebalance
        the answer is REBALANCE_IN_PROGRESS, which is how members learn to rejoin."""
        _require_ticket(ticket)
        if self.state is GroupState.DEAD:
            error: KafkaError | None = CoordinatorNotAvailableError()
        elif self.state is GroupState.EMPTY:
            error = UnknownMemberIdError(f"Member {request.member_id} is not in group {self.group_id}.")
        else:
            error = self.member_error(request.member_id, request.group_instance_id)
        if error is None and request.generation_id != self.generation_id:
            error = IllegalGenerationError(
                f"Generation {request.generation_id} is not the group's {self.generation_id}.")
        if error is None:
            member = self.members[request.member_id]
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
            error = RebalanceInProgressError() if self.state is GroupState.PREPARING_REBALANCE else None
        return [(ticket, HeartbeatResponse(error))]

    def leave_group(self, ticket: object, members: Sequence[MemberIdentity], now_ms: int) -> list[Completion]:
        """Kafka's handleLeaveGroup: each leaver answered apart (UNKNOWN_MEMBER_ID for strangers);
        a member leaving a Stable or CompletingRebalance group starts a rebalance (or empties it)."""
        _require_ticket(ticket)
        if self.state is GroupState.DEAD:
            return [(ticket, LeaveGroupResponse(CoordinatorNotAvailableError()))]
        out: list[Completion] = []
        results = []
        for identity in members:
            error, completions = self._leave_one(identity, now_ms)
            out += completions
            results.append(LeaveMemberResponse(identity.member_id, identity.group_instance_id, error))
        out.append((ticket, LeaveGroupResponse(None, tuple(results))))
        self.check_invariants()
        return out

    def _leave_one(self, identity: MemberIdentity, now_ms: int) -> tuple[KafkaError | None, list[Completion]]:
        member_id = identity.member_id
        if member_id == UNKNOWN_MEMBER_ID and identity.group_instance_id is not None:
            # The admin's removeMembersFromConsumerGroup names members by instance id alone.
            member_id = self._static_member_id(identity.group_instance_id) or UNKNOWN_MEMBER_ID
        elif self._is_static_member_fenced(identity.group_instance_id, member_id):
            return self._fenced(identity.group_instance_id, member_id), []
        if member_id in self.pending_members:
            del self.pending_members[member_id]
            return None, self._maybe_complete_join(now_ms)
        if member_id not in self.members:
            return UnknownMemberIdError(f"Member {identity.member_id} is not in group {self.group_id}."), []
        return None, self._remove_member_and_update_group(member_id, now_ms)

    def validate_offset_commit(self, member_id: str, generation_id: int, group_instance_id: str | None = None,
                               *, now_ms: int | None = None) -> KafkaError | None:
        """Kafka's validateOffsetCommit for a classic group. Generation -1 on an Empty group is a
        standalone commit (consumers using assign()). A commit during PreparingRebalance is allowed
        (Kafka relies on the heartbeat to tell the member), during CompletingRebalance it is not.
        With ``now_ms``, an accepted commit from a member restarts its session (Kafka's doCommitOffsets)."""
        if self.state is GroupState.DEAD:
            return CoordinatorNotAvailableError()
        if generation_id < 0 and self.state is GroupState.EMPTY:
            return None
        member = self.members.get(member_id)
        if generation_id >= 0 or member_id != UNKNOWN_MEMBER_ID or group_instance_id is not None:
            error = self.member_error(member_id, group_instance_id)
            if error is not None:
                return error
            if generation_id != self.generation_id:
                return IllegalGenerationError(f"Generation {generation_id} is not the group's {self.generation_id}.")
        elif self.state is not GroupState.EMPTY:
            return UnknownMemberIdError(f"Group {self.group_id} has members: only they may commit.")
        if self.state is GroupState.COMPLETING_REBALANCE:
            return RebalanceInProgressError()
        if member is not None and now_ms is not None:
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
        return None

    # ---- removal ------------------------------------------------------------------------------------

    def _remove_member(self, member_id: str) -> list[Completion]:
        """Kafka's group.remove, answering whatever the member still waits on (Kafka answers a
        waiting JoinGroup with UNKNOWN_MEMBER_ID; a waiting SyncGroup gets the same here)."""
        out: list[Completion] = []
        member = self.members.pop(member_id, None)
        self.pending_members.pop(member_id, None)
        if member is not None:
            if member.join_ticket is not None:
                out.append((member.join_ticket, JoinGroupResponse(UnknownMemberIdError(), UNKNOWN_MEMBER_ID)))
            if member.sync_ticket is not None:
                out.append((member.sync_ticket, SyncGroupResponse(UnknownMemberIdError())))
            member.join_ticket = member.sync_ticket = None
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        if member_id in self.pending_sync_members:
            self._synced(member_id)
        return out

    def _remove_member_and_update_group(self, member_id: str, now_ms: int) -> list[Completion]:
        out = self._remove_member(member_id)
        if self.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            return out + self._prepare_rebalance(now_ms)
        return out + self._maybe_complete_join(now_ms)

    def _supersede(self, member: ClassicGroupMember, join: bool = True) -> list[Completion]:
        """A second JoinGroup (SyncGroup) while the first waits: the first gets REBALANCE_IN_PROGRESS
        (retried by clients) so that no request is left unanswered; Kafka drops its callback."""
        old = member.join_ticket if join else member.sync_ticket
        if old is None:
            return []
        if join:
            member.join_ticket = None
            return [(old, JoinGroupResponse(RebalanceInProgressError(), member.member_id))]
        member.sync_ticket = None
        return [(old, SyncGroupResponse(RebalanceInProgressError()))]

    # ---- time ---------------------------------------------------------------------------------------

    def _timers(self) -> list[tuple[int, str, str]]:
        """(deadline, kind, member id) of every armed timer, in the order ties fire."""
        if self.state is GroupState.DEAD:
            return []
        timers = []
        if self.join_deadline_ms is not None:
            timers.append((self.join_deadline_ms, "join", ""))
        if self.sync_deadline_ms is not None:
            timers.append((self.sync_deadline_ms, "sync", ""))
        timers += [(deadline, "pending", member_id) for member_id, deadline in self.pending_members.items()]
        timers += [(m.heartbeat_deadline_ms, "session", m.member_id) for m in self.members.values()
                   if not m.has_satisfied_heartbeat]
        return timers

    def next_deadline_ms(self) -> int | None:
        """When the earliest timer falls due (None: nothing armed): call tick() then."""
        return min((deadline for deadline, _, _ in self._timers()), default=None)

    def tick(self, now_ms: int) -> list[Completion]:
        """Fire every timer due at ``now_ms``, earliest first (one may cancel or re-arm others)."""
        out: list[Completion] = []
        while True:
            due = [t for t in self._timers() if t[0] <= now_ms]
            if not due:
                break
            _, kind, member_id = min(due, key=lambda t: t[0])
            out += self._fire(kind, member_id, now_ms)
        self.check_invariants()
        return out

    def _fire(self, kind: str, member_id: str, now_ms: int) -> list[Completion]:
        if kind == "join":
            return self._expire_join(now_ms)
        if kind == "sync":
            return self._expire_pending_sync(now_ms)
        if kind == "pending":
            # A MEMBER_ID_REQUIRED answer that never came back: the rebalance stops waiting for it.
            del self.pending_members[member_id]
            return self._maybe_complete_join(now_ms)
        # Session expiry: the member failed (Kafka's onExpireHeartbeat).
        return self._remove_member_and_update_group(member_id, now_ms)

    def _expire_join(self, now_ms: int) -> list[Completion]:
        """The rebalance timeout, or the end of one initial delay: InitialDelayedJoin delays again
        while new members keep arriving, by at most the delay each time and in all by at most the
        rebalance timeout (its ``remaining`` shrinks by the previous delay, as in Kafka)."""
        if self.initial_delay is not None:
            delay, remaining = self.initial_delay
            if self.new_member_added and remaining != 0:
                self.new_member_added = False
                next_delay = min(self.config.group_initial_rebalance_delay_ms, remaining)
                self.initial_delay = (next_delay, max(remaining - delay, 0))
                self.join_deadline_ms = now_ms + next_delay
                return []
        return self._complete_join(now_ms)

    def _expire_pending_sync(self, now_ms: int) -> list[Completion]:
        """Kafka's onExpirePendingSync: members that got their JoinGroup answer but never sent
        SyncGroup within the rebalance timeout are removed, and the group rebalances without them."""
        self.sync_deadline_ms = None
        if self.state not in (GroupState.COMPLETING_REBALANCE, GroupState.STABLE) or not self.pending_sync_members:
            return []
        out: list[Completion] = []
        for member_id in [m for m in self.members if m in self.pending_sync_members]:
            out += self._remove_member(member_id)
        return out + self._prepare_rebalance(now_ms)

    # ---- describe, death, invariants --------------------------------------------------------------

    def describe(self) -> GroupDescription:
        """DescribeGroups: protocol, metadata and assignments only in Stable; a Dead group shows
        no members (GroupCoordinator.DeadGroup)."""
        if self.state is GroupState.DEAD:
            return GroupDescription(self.group_id, GroupState.DEAD.value, "", "", ())
        stable = self.state is GroupState.STABLE
        members = tuple(DescribedMember(
            m.member_id, m.group_instance_id, m.client_id, m.client_host,
            m.metadata(self.protocol_name) if stable and self.protocol_name is not None else b"",
            (m.assignment or b"") if stable else b"") for m in self.members.values())
        return GroupDescription(self.group_id, self.state.value, self.protocol_type or "",
                                (self.protocol_name or "") if stable else "", members)

    def mark_dead(self, error: KafkaError | None = None) -> list[Completion]:
        """The group is deleted or its coordinator moved (Kafka's onGroupUnloaded): every waiting
        request is answered with ``error`` (NOT_COORDINATOR by default: the client looks for the
        coordinator again), every timer is dropped, and later requests get COORDINATOR_NOT_AVAILABLE."""
        error = error if error is not None else NotCoordinatorError()
        out: list[Completion] = []
        for member in self.members.values():
            if member.join_ticket is not None:
                out.append((member.join_ticket, JoinGroupResponse(error, member.member_id)))
            if member.sync_ticket is not None:
                out.append((member.sync_ticket, SyncGroupResponse(error)))
            member.join_ticket = member.sync_ticket = None
        self.state = GroupState.DEAD
        self.pending_members.clear()
        self.pending_sync_members.clear()
        self.join_deadline_ms = self.sync_deadline_ms = self.initial_delay = None
        return out

    def check_invariants(self) -> None:
        """The group's state agrees with itself; a broken invariant raises InvariantViolation."""
        if self.state is GroupState.DEAD:
            return
        name = self.group_id
        if (self.leader_id is None) != (not self.members) or (self.leader_id and self.leader_id not in self.members):
            violated("group_leader_is_member", f"{name}: leader {self.leader_id}, members {list(self.members)}")
        # Only a rebalance may run with no members (all left while the initial delay runs).
        if (self.state is GroupState.EMPTY) == bool(self.members) and self.state is not GroupState.PREPARING_REBALANCE:
            violated("group_members_match_state", f"{name}: {self.state.value} with {len(self.members)} members")
        for m in self.members.values():
            if m.join_ticket is not None and self.state is not GroupState.PREPARING_REBALANCE:
                violated("group_join_waits_while_preparing", f"{name}: {m.member_id} waits in {self.state.value}")
            if m.sync_ticket is not None and self.state is not GroupState.COMPLETING_REBALANCE:
                violated("group_sync_waits_while_completing", f"{name}: {m.member_id} waits in {self.state.value}")
            if self.state is GroupState.STABLE and m.assignment is None:
                violated("group_stable_members_assigned", f"{name}: {m.member_id} has no assignment")
            if (self.state in (GroupState.COMPLETING_REBALANCE, GroupState.STABLE)
                    and self.protocol_name not in m.protocol_names()):
                violated("group_protocol_supported", f"{name}: {m.member_id} lacks {self.protocol_name}")
        if not self.pending_sync_members <= self.members.keys() or self.pending_members.keys() & self.members.keys():
            violated("group_pending_sets", f"{name}: pending sync {self.pending_sync_members}, "
                                           f"pending join {list(self.pending_members)}")


def _require_ticket(ticket: object) -> None:
    if ticket is None:
        raise ValueError("a ticket must not be None: None means 'nothing waits' here")
