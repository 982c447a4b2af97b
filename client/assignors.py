"""Kafka's client-side partition assignors (classic consumer group protocol) and the member subscription codec.

The coordinator hands one member, the leader, every member's ConsumerProtocolSubscription; the leader runs the
assignor the group voted for and returns one ConsumerProtocolAssignment per member. These are ports of Kafka's
Java RangeAssignor, RoundRobinAssignor and CooperativeStickyAssignor (with AbstractStickyAssignor), so raftka's
consumer can lead a group that also holds librdkafka, kafka-python or Java members. Usage:

    subs = {m.member_id: decode_subscription(m.metadata) for m in join_response.members}
    plan = assignor("cooperative-sticky").assign({"orders": 12}, subs)
    for member_id, partitions in plan.items():
        sync_assignments[member_id] = encode_consumer_assignment(partitions)
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar, Iterable

from client.admin import TopicPartition

EAGER, COOPERATIVE = "EAGER", "COOPERATIVE"      # ConsumerPartitionAssignor.RebalanceProtocol
DEFAULT_GENERATION = -1                          # AbstractStickyAssignor.DEFAULT_GENERATION
SUBSCRIPTION_MAX_VERSION = 3                     # ConsumerProtocolSubscription.json: validVersions 0-3


@dataclass(frozen=True)
class Subscription:
    """One member's ConsumerProtocolSubscription (ConsumerPartitionAssignor.Subscription). generation_id -1 and
    rack_id None mean "not sent", as Kafka's Optional.empty()."""
    topics: list[str]
    user_data: bytes | None = None
    owned_partitions: list[TopicPartition] = field(default_factory=list)
    generation_id: int = DEFAULT_GENERATION
    rack_id: str | None = None


# ---------------------------------------------------------------------------------------------------------------
# The codec. ConsumerProtocolSubscription.json is "flexibleVersions": "none": plain int16-length strings, int32
# counts and nullable int32-length bytes, no tagged fields; ConsumerProtocol prefixes the int16 version.

def encode_subscription(sub: Subscription, version: int = SUBSCRIPTION_MAX_VERSION) -> bytes:
    """ConsumerProtocol.serializeSubscription: topics sorted, owned partitions sorted by (topic, partition) and
    grouped per topic, a negative generation written as -1. A version above 3 is written as 3 (Kafka's
    checkSubscriptionVersion); a negative one is a ValueError, as are fields no Kafka string or int32 can hold."""
    if version < 0:
        raise ValueError(f"unsupported ConsumerProtocolSubscription version {version}")
    version = min(version, SUBSCRIPTION_MAX_VERSION)
    topics = sorted(sub.topics, key=_java_key)
    out = [struct.pack(">hi", version, len(topics))]
    out += [_string(t, "topic name") for t in topics]
    out.append(_nullable_bytes(sub.user_data))
    if version >= 1:
        grouped: dict[str, list[int]] = {}
        for topic, partition in sorted(sub.owned_partitions, key=lambda tp: (_java_key(tp[0]), tp[1])):
            grouped.setdefault(topic, []).append(partition)
        out.append(struct.pack(">i", len(grouped)))
        for topic, partitions in grouped.items():
            out += [_string(topic, "owned topic name"), _int32_array(partitions, "owned partition id")]
    if version >= 2:
        if sub.generation_id >= 2**31:
            raise ValueError(f"generation id {sub.generation_id} does not fit an int32")
        out.append(struct.pack(">i", max(sub.generation_id, DEFAULT_GENERATION)))
    if version >= 3:
        out.append(struct.pack(">h", -1) if sub.rack_id is None else _string(sub.rack_id, "rack id"))
    return b"".join(out)


def decode_subscription(data: bytes) -> Subscription:
    """ConsumerProtocol.deserializeSubscription. Any version >= 0 is read: one above 3 as version 3's fields, the
    rest ignored (Kafka: newer versions only append fields). A generation < 0 and an empty rack id come back as
    "not sent" (-1, None), as Kafka's Subscription reads them. ValueError, one line, for bytes that are not a
    subscription: truncated, a negative length where Kafka's schema allows no null, invalid UTF-8."""
    r = _Reader(bytes(data))
    version = r.int16("version")
    if version < 0:
        raise ValueError(f"unsupported ConsumerProtocolSubscription version {version}")
    topics = [r.string("topic name") for _ in range(r.count("topics", 2))]
    user_data = r.nullable_bytes("user data")
    owned: list[TopicPartition] = []
    if version >= 1:
        for _ in range(r.count("owned partitions", 6)):
            topic = r.string("owned topic name")
            owned += [(topic, p) for p in r.int32s(r.count("owned partition ids", 4), "owned partition ids")]
    generation = r.int32("generation id") if version >= 2 else DEFAULT_GENERATION
    rack = r.nullable_string("rack id") if version >= 3 else None
    return Subscription(topics, user_data, owned, max(generation, DEFAULT_GENERATION), rack or None)


def _string(s: str, what: str) -> bytes:
    try:
        raw = s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} {s!r} is not encodable as UTF-8: {e.reason}") from None
    if len(raw) > 0x7FFF:
        raise ValueError(f"{what} of {len(raw)} bytes is longer than a Kafka string (32767)")
    return struct.pack(">h", len(raw)) + raw


def _nullable_bytes(data: bytes | None) -> bytes:
    return struct.pack(">i", -1) if data is None else struct.pack(">i", len(data)) + bytes(data)


def _int32_array(values: list[int], what: str) -> bytes:
    """An int32 count, then the int32s."""
    bad = [v for v in values if not -2**31 <= v < 2**31]
    if bad:
        raise ValueError(f"{what} {bad[0]} does not fit an int32")
    return struct.pack(f">i{len(values)}i", len(values), *values)


class _Reader:
    """Kafka's non-flexible primitives read strictly; every failure is one ValueError that names the field."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def _take(self, size: int, what: str) -> bytes:
        left = len(self.data) - self.pos
        if size > left:
            raise ValueError(f"ConsumerProtocolSubscription truncated: {what} needs {size} bytes at offset "
                             f"{self.pos}, {left} left")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def int16(self, what: str) -> int:
        return struct.unpack(">h", self._take(2, what))[0]

    def int32(self, what: str) -> int:
        return struct.unpack(">i", self._take(4, what))[0]

    def int32s(self, count: int, what: str) -> list[int]:
        return list(struct.unpack(f">{count}i", self._take(4 * count, what)))

    def count(self, what: str, min_item_size: int) -> int:
        """An array's int32 length: negative is a null Kafka's schema does not allow, and a count the remaining
        bytes cannot hold is refused before anything loops over it."""
        n = self.int32(f"{what} count")
        if n < 0:
            raise ValueError(f"ConsumerProtocolSubscription: non-nullable {what} array has length {n}")
        if n * min_item_size > len(self.data) - self.pos:
            raise ValueError(f"ConsumerProtocolSubscription truncated: {n} {what} cannot fit in the "
                             f"{len(self.data) - self.pos} bytes left")
        return n

    def string(self, what: str) -> str:
        n = self.int16(what)
        if n < 0:
            raise ValueError(f"ConsumerProtocolSubscription: non-nullable {what} has length {n}")
        return self._utf8(self._take(n, what), what)

    def nullable_string(self, what: str) -> str | None:
        n = self.int16(what)      # Kafka's generated readers take any negative length as null
        return None if n < 0 else self._utf8(self._take(n, what), what)

    def nullable_bytes(self, what: str) -> bytes | None:
        n = self.int32(what)
        return None if n < 0 else self._take(n, what)

    @staticmethod
    def _utf8(raw: bytes, what: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"ConsumerProtocolSubscription: {what} is not UTF-8 ({e.reason} at byte {e.start})") \
                from None


# ---------------------------------------------------------------------------------------------------------------
# Java's orders. Kafka sorts member ids and topics with String.compareTo (UTF-16 code units, which differs from
# Python's code-point order past U+FFFF), and the sticky assignor walks members in java.util.HashMap order.

def _java_key(s: str) -> bytes:
    """A sort key that orders strings as Java's String.compareTo does."""
    return s.encode("utf-16-be", "surrogatepass")


def _java_hash(s: str) -> int:
    """String.hashCode, as an unsigned 32-bit value."""
    units, h = _java_key(s), 0
    for i in range(0, len(units), 2):
        h = (31 * h + (units[i] << 8 | units[i + 1])) & 0xFFFFFFFF
    return h


def _java_hashmap_order(keys: list[str]) -> list[str]:
    """The order a default java.util.HashMap<String, ?> filled by put()s in this order iterates in: by bucket
    (the spread hash masked by a capacity that doubles past 0.75 load), insertion order within a bucket (pathological
    collisions, which Java turns into trees, aside). AbstractStickyAssignor's choices follow that order, so this
    port makes the same ones as a Java leader given the same JoinGroup members."""
    capacity = 16
    while len(keys) > capacity * 3 // 4:
        capacity *= 2

    def bucket(key: str) -> int:
        h = _java_hash(key)
        return (h ^ (h >> 16)) & (capacity - 1)
    return sorted(keys, key=bucket)


def _member_order(members: Iterable[str], group_instance_ids: dict[str, str | None] | None) -> list[str]:
    """AbstractPartitionAssignor.MemberInfo.compareTo: static members (with a group.instance.id) first, ordered by
    instance id, so their assignment survives restarts under new member ids; then the rest by member id."""
    ids = group_instance_ids or {}

    def key(member: str) -> tuple[int, bytes]:
        instance = ids.get(member)
        return (0, _java_key(instance)) if instance is not None else (1, _java_key(member))
    return sorted(members, key=key)


def _topics(sub: Subscription) -> list[str]:
    return list(dict.fromkeys(sub.topics))     # a topic listed twice counts once (Kafka subscribes from a Set)


def _partition_counts(partitions_per_topic: dict[str, int], subscriptions: dict[str, Subscription]) -> dict[str, int]:
    """AbstractPartitionAssignor.assign(Cluster, ...): only subscribed topics whose metadata has partitions."""
    subscribed = {t for sub in subscriptions.values() for t in sub.topics}
    return {t: n for t, n in partitions_per_topic.items() if t in subscribed and n > 0}


def _sorted_partitions(counts: dict[str, int]) -> list[TopicPartition]:
    return [(t, p) for t in sorted(counts, key=_java_key) for p in range(counts[t])]


# ---------------------------------------------------------------------------------------------------------------
# The assignors.

class PartitionAssignor:
    """ConsumerPartitionAssignor: name is the protocol name members vote with in JoinGroup; protocol is the
    rebalance protocol it prefers (the first of Kafka's supportedProtocols)."""
    name: ClassVar[str]
    protocol: ClassVar[str] = EAGER
    supported_protocols: ClassVar[tuple[str, ...]] = (EAGER,)

    def subscription_user_data(self, topics: Iterable[str], generation: int) -> bytes | None:
        """ConsumerPartitionAssignor.subscriptionUserData: the user data a member puts in its subscription."""
        return None

    def assign(self, partitions_per_topic: dict[str, int], subscriptions: dict[str, Subscription],
               group_instance_ids: dict[str, str | None] | None = None) -> dict[str, list[TopicPartition]]:
        """Member id -> its partitions, every member present. Topics missing from partitions_per_topic (no
        metadata) are ignored; group_instance_ids maps member id -> group.instance.id (None: dynamic)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RangeAssignor(PartitionAssignor):
    """Kafka's RangeAssignor: per topic, its members in MemberInfo order, each a contiguous range of n // m
    partitions, the first n % m one more. Kafka's rack-aware variant needs replica racks, which
    partitions_per_topic does not carry, so (as in Kafka without them) it never applies."""
    name = "range"

    def assign(self, partitions_per_topic: dict[str, int], subscriptions: dict[str, Subscription],
               group_instance_ids: dict[str, str | None] | None = None) -> dict[str, list[TopicPartition]]:
        counts = _partition_counts(partitions_per_topic, subscriptions)
        order = _member_order(subscriptions, group_instance_ids)
        assignment: dict[str, list[TopicPartition]] = {m: [] for m in subscriptions}
        for topic in sorted(counts, key=_java_key):
            members = [m for m in order if topic in subscriptions[m].topics]
            per_member, extra = divmod(counts[topic], len(members))
            start = 0
            for i, member in enumerate(members):
                length = per_member + (1 if i < extra else 0)
                assignment[member] += [(topic, p) for p in range(start, start + length)]
                start += length
        return assignment


class RoundRobinAssignor(PartitionAssignor):
    """Kafka's RoundRobinAssignor: every partition of every subscribed topic, sorted by (topic, partition), dealt
    around the members in MemberInfo order, passing over a member not subscribed to that partition's topic."""
    name = "roundrobin"

    def assign(self, partitions_per_topic: dict[str, int], subscriptions: dict[str, Subscription],
               group_instance_ids: dict[str, str | None] | None = None) -> dict[str, list[TopicPartition]]:
        counts = _partition_counts(partitions_per_topic, subscriptions)
        order = _member_order(subscriptions, group_instance_ids)
        subscribed = {m: set(subscriptions[m].topics) for m in order}
        assignment: dict[str, list[TopicPartition]] = {m: [] for m in subscriptions}
        turn = 0                                  # Kafka's CircularIterator over the sorted members
        for topic, partition in _sorted_partitions(counts):
            while topic not in subscribed[order[turn % len(order)]]:
                turn += 1
            assignment[order[turn % len(order)]].append((topic, partition))
            turn += 1
        return assignment


class CooperativeStickyAssignor(PartitionAssignor):
    """Kafka's CooperativeStickyAssignor: AbstractStickyAssignor's balanced, sticky plan (the constrained
    algorithm when every member subscribes to the same topics, the general one otherwise), then adjustAssignment:
    a partition moving from one member to another is left out, so its owner revokes it first and the follow-up
    rebalance (which the owner's revocation triggers) hands it over."""
    name = "cooperative-sticky"
    protocol = COOPERATIVE
    supported_protocols = (COOPERATIVE, EAGER)

    def subscription_user_data(self, topics: Iterable[str], generation: int) -> bytes | None:
        """CooperativeStickyAssignor.subscriptionUserData: the member's last generation as an int32, so a
        leader reading subscriptions older than v2 (no generation field) still knows how fresh its claims are."""
        return struct.pack(">i", generation)

    def assign(self, partitions_per_topic: dict[str, int], subscriptions: dict[str, Subscription],
               group_instance_ids: dict[str, str | None] | None = None) -> dict[str, list[TopicPartition]]:
        if not subscriptions:
            return {}
        # group_instance_ids play no part: Kafka's sticky assignors key stickiness on owned partitions instead.
        counts = _partition_counts(partitions_per_topic, subscriptions)
        order = _java_hashmap_order(list(subscriptions))
        claims = _claims(counts, subscriptions, order)
        if claims.all_subscriptions_equal:
            assignment, transferring = _ConstrainedAssignment(counts, claims.owned, claims.contested).build()
        else:
            assignment = _GeneralAssignment(counts, subscriptions, order, claims).build()
            transferring = _partitions_transferring_ownership(subscriptions, assignment)
        for partition, member in transferring.items():      # adjustAssignment
            assignment[member].remove(partition)
        return {m: assignment[m] for m in subscriptions}


def _member_generation(sub: Subscription) -> int | None:
    """CooperativeStickyAssignor.memberData's generation: the v2+ field when sent, else what an older member's
    subscriptionUserData encoded, else none. User data too short for an int32 counts as DEFAULT_GENERATION, as
    Kafka's catch-all does."""
    if sub.generation_id >= 0:
        return sub.generation_id
    if sub.user_data is None:
        return None
    if len(sub.user_data) < 4:
        return DEFAULT_GENERATION
    return struct.unpack_from(">i", sub.user_data)[0]


@dataclass
class _Claims:
    owned: dict[str, list[TopicPartition]]        # consumerToOwnedPartitions, in Java HashMap order
    contested: set[TopicPartition]                # partitionsWithMultiplePreviousOwners
    generations: dict[str, int | None]            # each member's memberData generation
    all_subscriptions_equal: bool


def _claims(counts: dict[str, int], subscriptions: dict[str, Subscription], order: list[str]) -> _Claims:
    """AbstractStickyAssignor.allSubscriptionsEqual: each member's owned partitions that still exist. When two
    members claim one partition the higher generation keeps it; with equal generations neither does and it is
    "contested" (assigned only after both revoke it). An older generation's uncontested claims stand, as in
    current Kafka (older releases dropped all of an old generation's claims)."""
    owned: dict[str, list[TopicPartition]] = {}
    owner_of: dict[TopicPartition, str] = {}
    contested: set[TopicPartition] = set()
    generations: dict[str, int | None] = {}
    for member in order:
        sub = subscriptions[member]
        generations[member] = _member_generation(sub)
        mine = owned[member] = []
        generation = _or_default(generations[member])
        for tp in sub.owned_partitions:
            if not 0 <= tp[1] < counts.get(tp[0], 0):
                continue               # a topic no longer subscribed or without metadata, or no such partition
            other = owner_of.get(tp)
            if other is None:
                mine.append(tp)
            elif generation == _or_default(generations[other]):
                contested.add(tp)
                _discard(owned[other], tp)
            elif generation > _or_default(generations[other]):
                mine.append(tp)
                _discard(owned[other], tp)
            else:
                continue
            owner_of[tp] = member
    topic_sets = {frozenset(subscriptions[m].topics) for m in order}
    return _Claims(owned, contested, generations, len(topic_sets) <= 1)


def _or_default(generation: int | None) -> int:
    return DEFAULT_GENERATION if generation is None else generation


def _discard(partitions: list[TopicPartition], tp: TopicPartition) -> None:
    if tp in partitions:
        partitions.remove(tp)     # Java's List.remove(Object): the first occurrence, if any


def _partitions_transferring_ownership(subscriptions: dict[str, Subscription],
                                       assignment: dict[str, list[TopicPartition]]) -> dict[TopicPartition, str]:
    """CooperativeStickyAssignor.computePartitionsTransferringOwnership: partitions newly given to a member while
    some member that reported owning them loses them."""
    added: dict[TopicPartition, str] = {}
    revoked: set[TopicPartition] = set()
    for member, assigned in assignment.items():
        owned = subscriptions[member].owned_partitions
        owned_set, assigned_set = set(owned), set(assigned)
        added.update((tp, member) for tp in assigned if tp not in owned_set)
        revoked.update(tp for tp in owned if tp not in assigned_set)
    return {tp: member for tp, member in added.items() if tp in revoked}


@dataclass
class _ConstrainedAssignment:
    """AbstractStickyAssignor.ConstrainedAssignmentBuilder: every member subscribes to the same topics, so each
    gets minQuota or maxQuota partitions, keeping owned ones first (sorted by partition, then topic)."""
    counts: dict[str, int]
    owned: dict[str, list[TopicPartition]]
    contested: set[TopicPartition]
    min_quota: int = 0
    max_quota: int = 0
    expected_over_min: int = 0      # members that must end with maxQuota (0 when the quotas are equal)
    current_over_min: int = 0
    assignment: dict[str, list[TopicPartition]] = field(default_factory=dict)
    revoked: set[TopicPartition] = field(default_factory=set)
    transferring: dict[TopicPartition, str] = field(default_factory=dict)
    under_min: list[str] = field(default_factory=list)
    exactly_min: deque[str] = field(default_factory=deque)

    def build(self) -> tuple[dict[str, list[TopicPartition]], dict[TopicPartition, str]]:
        total, members = sum(self.counts.values()), len(self.owned)
        self.min_quota, self.max_quota = total // members, -(-total // members)
        self.expected_over_min = total % members
        self.assignment = {m: [] for m in self.owned}
        assigned = self._assign_owned()
        unassigned = [tp for tp in _sorted_partitions(self.counts) if tp not in assigned]
        self.under_min.sort(key=_java_key)
        self.exactly_min = deque(sorted(self.exactly_min, key=_java_key))
        self._assign_round_robin(unassigned)
        self._verify_unfilled()
        return self.assignment, self.transferring

    def _assign_owned(self) -> set[TopicPartition]:
        """assignOwnedPartitions: keep all owned if under minQuota; maxQuota of them while members over minQuota
        are still wanted; else minQuota. The rest are revoked."""
        assigned: set[TopicPartition] = set()
        for member, claims in self.owned.items():
            kept = sorted(claims, key=lambda tp: (tp[1], _java_key(tp[0])))
            kept = [tp for tp in kept if tp not in self.contested]
            if len(kept) < self.min_quota:
                keep = len(kept)
                self.under_min.append(member)
            elif len(kept) >= self.max_quota and self.current_over_min < self.expected_over_min:
                keep = self.max_quota
                self.current_over_min += 1
                if self.current_over_min == self.expected_over_min:
                    self.exactly_min.clear()
            else:
                keep = self.min_quota
                if self.current_over_min < self.expected_over_min:
                    self.exactly_min.append(member)
            self.assignment[member] += kept[:keep]
            assigned.update(kept[:keep])
            self.revoked.update(kept[keep:])
        return assigned

    def _assign_round_robin(self, unassigned: list[TopicPartition]) -> None:
        """assignRoundRobin: fill members under minQuota in turn, then members at minQuota up to maxQuota."""
        under, cursor = self.under_min, 0        # cursor: Kafka's Iterator over unfilled members
        for tp in unassigned:
            if cursor < len(under):
                member, cursor = under[cursor], cursor + 1
            elif not under and not self.exactly_min:
                raise RuntimeError(f"cooperative-sticky: no member left for {tp} (Kafka: IllegalStateException)")
            elif not under:
                member = self.exactly_min.popleft()
            else:
                member, cursor = under[0], 1
            count = self._assign_new(tp, member)
            if count == self.min_quota:
                del under[cursor - 1]
                cursor -= 1
                self.exactly_min.append(member)
            elif count == self.max_quota:
                self.current_over_min += 1

    def _assign_new(self, tp: TopicPartition, member: str) -> int:
        self.assignment[member].append(tp)
        if tp in self.revoked or tp in self.contested:     # someone still owns it: hand over after revocation
            self.transferring[tp] = member
        return len(self.assignment[member])

    def _verify_unfilled(self) -> None:
        """verifyUnfilledMembers: Kafka's check that the quotas came out as computed."""
        if self.under_min and self.current_over_min != self.expected_over_min:
            raise RuntimeError("cooperative-sticky: members under quota with no partition left (Kafka: "
                               "IllegalStateException)")
        short = [m for m in self.under_min if len(self.assignment[m]) != self.min_quota]
        if short:
            raise RuntimeError(f"cooperative-sticky: member {short[0]} below minQuota {self.min_quota}")


@dataclass
class _PartitionMovements:
    """AbstractStickyAssignor.PartitionMovements: which partitions moved between which members in this
    assignment, so a move back undoes an earlier one instead of adding a second."""
    by_topic: dict[str, dict[tuple[str, str], dict[TopicPartition, None]]] = field(default_factory=dict)
    moves: dict[TopicPartition, tuple[str, str]] = field(default_factory=dict)

    def _remove(self, tp: TopicPartition) -> tuple[str, str]:
        pair = self.moves.pop(tp)
        pairs = self.by_topic[tp[0]]
        del pairs[pair][tp]
        if not pairs[pair]:
            del pairs[pair]
        if not pairs:
            del self.by_topic[tp[0]]
        return pair

    def _add(self, tp: TopicPartition, pair: tuple[str, str]) -> None:
        self.moves[tp] = pair
        self.by_topic.setdefault(tp[0], {}).setdefault(pair, {})[tp] = None

    def move(self, tp: TopicPartition, old: str, new: str) -> None:
        if tp in self.moves:
            source, _ = self._remove(tp)
            if source != new:
                self._add(tp, (source, new))
        else:
            self._add(tp, (old, new))

    def partition_to_move(self, tp: TopicPartition, old: str, new: str) -> TopicPartition:
        """getTheActualPartitionToBeMoved: a partition of the same topic that moved new -> old is moved back
        instead. (Kafka takes any from a HashSet; this takes the earliest moved.)"""
        pairs = self.by_topic.get(tp[0])
        if pairs is None:
            return tp
        if tp in self.moves:
            old = self.moves[tp][0]
        back = pairs.get((new, old))
        return next(iter(back)) if back else tp


@dataclass
class _GeneralAssignment:
    """AbstractStickyAssignor.GeneralAssignmentBuilder: members subscribe to different topics. Keep every valid
    owned partition, give each unassigned one to the least loaded member that can take it, then move partitions
    while that makes the plan more balanced (reverting if the balance score does not improve)."""
    counts: dict[str, int]
    subscriptions: dict[str, Subscription]
    order: list[str]
    claims: _Claims
    current: dict[str, list[TopicPartition]] = field(default_factory=dict)
    owner: dict[TopicPartition, str] = field(default_factory=dict)
    topic_consumers: dict[str, list[str]] = field(default_factory=dict)
    consumer_topics: dict[str, list[str]] = field(default_factory=dict)
    sorted_all: list[TopicPartition] = field(default_factory=list)
    active: set[str] = field(default_factory=set)         # Kafka's sortedCurrentSubscriptions, as a set
    movements: _PartitionMovements = field(default_factory=_PartitionMovements)
    revocation_required: bool = False

    def __post_init__(self) -> None:
        self.topic_consumers = {t: [] for t in self.counts}
        for member in self.order:
            self.consumer_topics[member] = [t for t in _topics(self.subscriptions[member]) if t in self.counts]
            for topic in self.consumer_topics[member]:
                self.topic_consumers[topic].append(member)
            self.current[member] = list(self.claims.owned[member])
        self.owner = {tp: m for m in self.order for tp in self.current[m]}
        topics = sorted(self.counts, key=lambda t: (len(self.topic_consumers[t]), _java_key(t)))
        self.sorted_all = [(t, p) for t in topics for p in range(self.counts[t])]

    def build(self) -> dict[str, list[TopicPartition]]:
        previous = self._previous_owners()
        assigned = self._keep_owned()
        unassigned = [tp for tp in self.sorted_all if tp not in assigned]
        self.active = set(self.current)
        self._balance(previous, unassigned)
        return self.current

    def _previous_owners(self) -> dict[TopicPartition, tuple[str, int]]:
        """prepopulateCurrentAssignments: for claims of a generation older than the newest, the latest older
        owner of each partition; the balancer prefers to hand a partition back there."""
        generations = self.claims.generations
        newest = max(_or_default(g) for g in generations.values())
        previous: dict[TopicPartition, tuple[str, int]] = {}
        for member in self.order:
            generation = generations[member]
            if generation is not None and generation < newest:
                claimed_in = generation
            elif generation is None and newest > DEFAULT_GENERATION:
                claimed_in = DEFAULT_GENERATION
            else:
                continue
            for tp in self.subscriptions[member].owned_partitions:
                if tp not in previous or claimed_in > previous[tp][1]:
                    previous[tp] = (member, claimed_in)
        return previous

    def _keep_owned(self) -> set[TopicPartition]:
        """assignOwnedPartitions: a member keeps its claims on topics it still subscribes to."""
        assigned: set[TopicPartition] = set()
        for member in self.order:
            subscribed = set(self.subscriptions[member].topics)
            kept = []
            for tp in self.current[member]:
                if tp[0] in subscribed:
                    kept.append(tp)
                    assigned.add(tp)
                else:
                    self.revocation_required = True
                    del self.owner[tp]
            self.current[member] = kept
        return assigned

    def _balance(self, previous: dict[TopicPartition, tuple[str, int]], unassigned: list[TopicPartition]) -> None:
        """balance: place the unassigned, then rebalance what can move, keeping the result only if it scores
        better than before (or if nobody had anything)."""
        initializing = not any(self.current[m] for m in self.active)
        for tp in unassigned:
            if self.topic_consumers[tp[0]]:
                self._give_to_least_loaded(tp)
        fixed_topics = {t for t, members in self.topic_consumers.items() if len(members) < 2}
        self.sorted_all = [tp for tp in self.sorted_all if tp[0] not in fixed_topics]
        unassigned = [tp for tp in unassigned if tp[0] not in fixed_topics]
        fixed = {m: self.current[m] for m in self.order if not self._can_participate(m)}
        for member in fixed:
            self.active.discard(member)
            del self.current[member]
        before = {m: list(tps) for m, tps in self.current.items()}
        owner_before = dict(self.owner)
        if not self.revocation_required:
            self._perform_reassignments(unassigned, previous)
        moved = self._perform_reassignments(self.sorted_all, previous)
        if not initializing and moved and _balance_score(self.current) >= _balance_score(before):
            self.current, self.owner = before, owner_before
        self.current.update(fixed)
        self.active.update(fixed)

    def _sorted_active(self) -> list[str]:
        return sorted(self.active, key=lambda m: (len(self.current[m]), _java_key(m)))

    def _give_to_least_loaded(self, tp: TopicPartition) -> None:
        """maybeAssignPartition."""
        for member in self._sorted_active():
            if tp[0] in self.consumer_topics[member]:
                self.current[member].append(tp)
                self.owner[tp] = member
                return

    def _can_participate(self, member: str) -> bool:
        """canConsumerParticipateInReassignment: it could take more, or holds a partition someone else could."""
        mine = self.current[member]
        if len(mine) < sum(self.counts[t] for t in self.consumer_topics[member]):
            return True
        return any(len(self.topic_consumers[tp[0]]) >= 2 for tp in mine)

    def _perform_reassignments(self, partitions: list[TopicPartition],
                               previous: dict[TopicPartition, tuple[str, int]]) -> bool:
        """performReassignments: move partitions to less loaded members (back to a previous owner first) until
        balanced or no move helps."""
        performed = False
        while True:
            modified = False
            for tp in partitions:
                if self._is_balanced():
                    break
                holder = self.owner.get(tp)
                if holder is None or holder not in self.current:
                    continue
                load = len(self.current[holder])
                before = previous.get(tp, (None, 0))[0]
                # Kafka does not check the previous owner still subscribes to the topic; giving it a partition
                # of a topic it left would be an invalid assignment, so this port does.
                if before in self.current and tp[0] in self.consumer_topics[before] \
                        and load > len(self.current[before]) + 1:
                    self._reassign(tp, before)
                    performed = modified = True
                    continue
                if any(load > len(self.current[other]) + 1
                       for other in self.topic_consumers[tp[0]] if other in self.current):
                    self._reassign(tp, next(m for m in self._sorted_active()
                                            if tp[0] in self.consumer_topics[m]))
                    performed = modified = True
            if not modified:
                return performed

    def _reassign(self, tp: TopicPartition, new: str) -> None:
        """reassignPartition + processPartitionMovement."""
        moving = self.movements.partition_to_move(tp, self.owner[tp], new)
        old = self.owner[moving]
        self.movements.move(moving, old, new)
        _discard(self.current[old], moving)
        self.current[new].append(moving)
        self.owner[moving] = new

    def _is_balanced(self) -> bool:
        """isBalanced: loads within one, or no member could take a partition from one holding 2+ more."""
        members = self._sorted_active()
        if not members or len(self.current[members[0]]) >= len(self.current[members[-1]]) - 1:
            return True
        holder = {tp: m for m in members for tp in self.current[m]}
        for member in members:
            load = len(self.current[member])
            topics = self.consumer_topics[member]
            if load == sum(self.counts[t] for t in topics):
                continue
            for topic in topics:
                for p in range(self.counts[topic]):
                    other = holder.get((topic, p))
                    if other is not None and other != member and load + 1 < len(self.current[other]):
                        return False
        return True


def _balance_score(assignment: dict[str, list[TopicPartition]]) -> int:
    """getBalanceScore: the sum of load differences over all member pairs (0: perfectly even)."""
    loads = [len(tps) for tps in assignment.values()]
    return sum(abs(a - b) for i, a in enumerate(loads) for b in loads[i + 1:])


ASSIGNORS: dict[str, PartitionAssignor] = {a.name: a for a in (RangeAssignor(), RoundRobinAssignor(),
                                                              CooperativeStickyAssignor())}


def assignor(name: str) -> PartitionAssignor:
    """The assignor for a partition.assignment.strategy name, as members name it in JoinGroup."""
    try:
        return ASSIGNORS[name]
    except KeyError:
        raise ValueError(f"unknown partition.assignment.strategy {name!r}: raftka knows "
                         f"{', '.join(ASSIGNORS)}") from None
