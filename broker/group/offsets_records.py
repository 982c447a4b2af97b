"""The records of ``__consumer_offsets``: Kafka's own binary keys and values, and their replay.

Kafka keeps committed offsets and classic-group metadata as records of the compacted internal
topic ``__consumer_offsets``; raftka appends the same records through its replicated log, so a
Kafka tool reading the topic (kafka-console-consumer's offsets formatter, kafka-dump-log
--offsets-decoder) understands them. The formats are those of Kafka's group coordinator schemas
(group-coordinator/src/main/resources/common/message/*.json, formerly GroupMetadataManager.scala):

    key   = int16 version + fields
            version 0 or 1: OffsetCommitKey    group STRING, topic STRING, partition INT32  (writes 1)
            version 2:      GroupMetadataKey   group STRING
    value = int16 version + fields, or null: a tombstone, deleting the key (compaction keeps the
            last record of a key, so a tombstone must repeat the key's bytes exactly)
            OffsetCommitValue 0-4    (writes 3; 1 when an expire timestamp is set, as Kafka does)
            GroupMetadataValue 0-4   (writes 3)

Version 4 of both values is the first flexible one (compact lengths, tagged fields); Kafka writes
3, so only the decoder knows 4. Non-flexible types, all big-endian: STRING = int16 length + UTF-8,
NULLABLE_STRING length -1 = null, BYTES = int32 length, arrays = int32 count.

No kio here: these are not API messages, and broker/kafka_protocol/codec.py is kio's only importer.
``OffsetsPartitionImage`` replays a partition's records in log order (a coordinator loading it);
``partition_for`` is where a group's records live.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Union

OFFSET_COMMIT_KEY_VERSION = 1      # 0 is the same schema (older brokers); Kafka writes 1
GROUP_METADATA_KEY_VERSION = 2
OFFSET_COMMIT_VALUE_VERSION = 3
OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRE = 1   # the only version with expireTimestamp
GROUP_METADATA_VALUE_VERSION = 3
MAX_OFFSET_COMMIT_VALUE_VERSION = 4
MAX_GROUP_METADATA_VALUE_VERSION = 4
FIRST_FLEXIBLE_VALUE_VERSION = 4
NO_LEADER_EPOCH = -1
NO_TIMESTAMP = -1                  # the schemas' default for a timestamp a version lacks

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_MAX_STRING_BYTES = 0x7FFF         # Kafka's STRING length is an int16
_INT32_MIN = -(1 << 31)


class OffsetsRecordError(ValueError):
    """A ``__consumer_offsets`` key or value that cannot be encoded or decoded."""


class UnknownVersionError(OffsetsRecordError):
    """A key or value version this module does not know (e.g. a newer Kafka's record type)."""

    def __init__(self, what: str, version: int, known: str) -> None:
        super().__init__(f"unknown {what} version {version} (known: {known})")
        self.what = what
        self.version = version


@dataclass(frozen=True)
class OffsetCommitKey:
    group: str
    topic: str
    partition: int


@dataclass(frozen=True)
class GroupMetadataKey:
    group: str


@dataclass(frozen=True)
class OffsetCommitValue:
    offset: int
    leader_epoch: int               # -1: unknown (versions 0-2 do not carry it)
    metadata: str                   # Kafka stores a commit's null metadata as ""
    commit_timestamp_ms: int
    # Only version 1 carries it (a commit with an explicit retention, OffsetCommit v2-v4).
    expire_timestamp_ms: int = NO_TIMESTAMP


@dataclass(frozen=True)
class MemberMetadata:
    member_id: str
    group_instance_id: str | None   # static membership; None before version 3
    client_id: str
    client_host: str
    rebalance_timeout_ms: int       # version 0 lacks it: Kafka reads the session timeout instead
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True)
class GroupMetadataValue:
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp_ms: int = NO_TIMESTAMP   # -1 in versions 0-1
    members: list[MemberMetadata] = field(default_factory=list)


Key = Union[OffsetCommitKey, GroupMetadataKey]
Value = Union[OffsetCommitValue, GroupMetadataValue]
OffsetsRecord = tuple[bytes, Union[bytes, None]]   # (key, value); a None value is a tombstone
_VALUE_OF: dict[type, type] = {OffsetCommitKey: OffsetCommitValue, GroupMetadataKey: GroupMetadataValue}
TopicPartition = tuple[str, int]


# ---- encoding --------------------------------------------------------------------------------

def _string(s: str) -> bytes:
    data = s.encode("utf-8")
    if len(data) > _MAX_STRING_BYTES:
        raise OffsetsRecordError(f"a string of {len(data)} bytes exceeds Kafka's STRING limit "
                                 f"of {_MAX_STRING_BYTES}")
    return _INT16.pack(len(data)) + data


def _nullable_string(s: str | None) -> bytes:
    return _INT16.pack(-1) if s is None else _string(s)


def _bytes(b: bytes) -> bytes:
    return _INT32.pack(len(b)) + bytes(b)


def encode_key(key: Key) -> bytes:
    """A key's bytes: the offset-commit key at version 1, the group key at version 2."""
    try:
        if isinstance(key, OffsetCommitKey):
            return b"".join((_INT16.pack(OFFSET_COMMIT_KEY_VERSION), _string(key.group), _string(key.topic),
                             _INT32.pack(key.partition)))
        if isinstance(key, GroupMetadataKey):
            return _INT16.pack(GROUP_METADATA_KEY_VERSION) + _string(key.group)
    except struct.error as e:
        raise OffsetsRecordError(f"cannot encode {key!r}: {e}") from None
    raise TypeError(f"not a __consumer_offsets key: {key!r}")


def encode_value(value: Value | None) -> bytes | None:
    """A value's bytes at the version Kafka writes; None (a tombstone) stays None."""
    if value is None:
        return None
    try:
        if isinstance(value, OffsetCommitValue):
            return _encode_offset_commit_value(value)
        if isinstance(value, GroupMetadataValue):
            return _encode_group_metadata_value(value)
    except struct.error as e:
        raise OffsetsRecordError(f"cannot encode {value!r}: {e}") from None
    raise TypeError(f"not a __consumer_offsets value: {value!r}")


def _encode_offset_commit_value(v: OffsetCommitValue) -> bytes:
    # Kafka's MetadataVersion.offsetCommitValueVersion: an expire timestamp forces version 1, the
    # only one that has the field (the leader epoch is then lost, as in Kafka).
    if v.expire_timestamp_ms != NO_TIMESTAMP:
        return b"".join((_INT16.pack(OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRE), _INT64.pack(v.offset),
                         _string(v.metadata), _INT64.pack(v.commit_timestamp_ms),
                         _INT64.pack(v.expire_timestamp_ms)))
    return b"".join((_INT16.pack(OFFSET_COMMIT_VALUE_VERSION), _INT64.pack(v.offset), _INT32.pack(v.leader_epoch),
                     _string(v.metadata), _INT64.pack(v.commit_timestamp_ms)))


def _encode_group_metadata_value(v: GroupMetadataValue) -> bytes:
    if v.members and v.protocol is None:
        # Kafka refuses the same: members joined under a protocol, so a group with members has one.
        raise OffsetsRecordError("a group with members needs a protocol")
    parts = [_INT16.pack(GROUP_METADATA_VALUE_VERSION), _string(v.protocol_type), _INT32.pack(v.generation),
             _nullable_string(v.protocol), _nullable_string(v.leader), _INT64.pack(v.current_state_timestamp_ms),
             _INT32.pack(len(v.members))]
    for m in v.members:
        parts += (_string(m.member_id), _nullable_string(m.group_instance_id), _string(m.client_id),
                  _string(m.client_host), _INT32.pack(m.rebalance_timeout_ms), _INT32.pack(m.session_timeout_ms),
                  _bytes(m.subscription), _bytes(m.assignment))
    return b"".join(parts)


# ---- decoding --------------------------------------------------------------------------------

class _Reader:
    """Reads Kafka's types from one key or value; ``flexible`` picks the compact encodings."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.what = what

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise OffsetsRecordError(f"{self.what}: truncated at byte {self.pos} "
                                     f"(wanted {n}, {len(self.data) - self.pos} left)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int16(self) -> int:
        return _INT16.unpack(self._take(2))[0]

    def int32(self) -> int:
        return _INT32.unpack(self._take(4))[0]

    def int64(self) -> int:
        return _INT64.unpack(self._take(8))[0]

    def uvarint(self) -> int:
        # Kafka's ByteUtils.readUnsignedVarint: at most 5 bytes for a 32-bit value.
        result = 0
        for shift in range(0, 35, 7):
            b = self._take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
        raise OffsetsRecordError(f"{self.what}: varint longer than 5 bytes at byte {self.pos}")

    def _length(self, flexible: bool, wide: bool) -> int:
        # Non-flexible: int16 (strings) or int32 (bytes, arrays), -1 = null. Compact: uvarint
        # length + 1, 0 = null. Both give -1 for null.
        if flexible:
            return self.uvarint() - 1
        return self.int32() if wide else self.int16()

    def nullable_string(self, flexible: bool) -> str | None:
        n = self._length(flexible, wide=False)
        if n < -1:
            raise OffsetsRecordError(f"{self.what}: string length {n}")
        return None if n == -1 else self._utf8(self._take(n))

    def string(self, flexible: bool) -> str:
        s = self.nullable_string(flexible)
        if s is None:
            raise OffsetsRecordError(f"{self.what}: null in a non-nullable string")
        return s

    def bytes_(self, flexible: bool) -> bytes:
        n = self._length(flexible, wide=True)
        if n < 0:
            raise OffsetsRecordError(f"{self.what}: bytes length {n} (not nullable)")
        return self._take(n)

    def array_length(self, flexible: bool) -> int:
        n = self._length(flexible, wide=True)
        if n < 0:
            raise OffsetsRecordError(f"{self.what}: array length {n} (not nullable)")
        return n

    def tagged_fields(self) -> None:
        # No tagged field is defined in these versions; a newer writer's are skipped, as Kafka does.
        for _ in range(self.uvarint()):
            self.uvarint()                  # tag
            self._take(self.uvarint())      # size, then the field's bytes

    def done(self) -> None:
        if self.pos != len(self.data):
            raise OffsetsRecordError(f"{self.what}: {len(self.data) - self.pos} bytes after the last field")

    def _utf8(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise OffsetsRecordError(f"{self.what}: a string is not UTF-8 ({e})") from None


def decode_key(data: bytes) -> Key:
    """An OffsetCommitKey (versions 0 and 1) or a GroupMetadataKey (version 2)."""
    r = _Reader(data, "__consumer_offsets key")
    version = r.int16()
    key: Key
    if version in (0, 1):
        key = OffsetCommitKey(r.string(False), r.string(False), r.int32())
    elif version == GROUP_METADATA_KEY_VERSION:
        key = GroupMetadataKey(r.string(False))
    else:
        raise UnknownVersionError("__consumer_offsets key", version, "0-1 offset commit, 2 group metadata")
    r.done()
    return key


def decode_value(key: Key, data: bytes | None) -> Value | None:
    """The value of ``key``'s record; None for a tombstone (a null value)."""
    if data is None:
        return None
    if isinstance(key, OffsetCommitKey):
        return decode_offset_commit_value(data)
    if isinstance(key, GroupMetadataKey):
        return decode_group_metadata_value(data)
    raise TypeError(f"not a __consumer_offsets key: {key!r}")


def decode_offset_commit_value(data: bytes) -> OffsetCommitValue:
    r = _Reader(data, "OffsetCommitValue")
    version = r.int16()
    if not 0 <= version <= MAX_OFFSET_COMMIT_VALUE_VERSION:
        raise UnknownVersionError("OffsetCommitValue", version, f"0-{MAX_OFFSET_COMMIT_VALUE_VERSION}")
    flexible = version >= FIRST_FLEXIBLE_VALUE_VERSION
    offset = r.int64()
    leader_epoch = r.int32() if version >= 3 else NO_LEADER_EPOCH
    metadata = r.string(flexible)
    commit_timestamp = r.int64()   # named "timestamp" in version 0, same meaning
    expire_timestamp = r.int64() if version == 1 else NO_TIMESTAMP
    if flexible:
        r.tagged_fields()
    r.done()
    return OffsetCommitValue(offset, leader_epoch, metadata, commit_timestamp, expire_timestamp)


def decode_group_metadata_value(data: bytes) -> GroupMetadataValue:
    r = _Reader(data, "GroupMetadataValue")
    version = r.int16()
    if not 0 <= version <= MAX_GROUP_METADATA_VALUE_VERSION:
        raise UnknownVersionError("GroupMetadataValue", version, f"0-{MAX_GROUP_METADATA_VALUE_VERSION}")
    flexible = version >= FIRST_FLEXIBLE_VALUE_VERSION
    protocol_type = r.string(flexible)
    generation = r.int32()
    protocol = r.nullable_string(flexible)
    leader = r.nullable_string(flexible)
    current_state_timestamp = r.int64() if version >= 2 else NO_TIMESTAMP
    members = [_decode_member(r, version, flexible) for _ in range(r.array_length(flexible))]
    if flexible:
        r.tagged_fields()
    r.done()
    return GroupMetadataValue(protocol_type, generation, protocol, leader, current_state_timestamp, members)


def _decode_member(r: _Reader, version: int, flexible: bool) -> MemberMetadata:
    member_id = r.string(flexible)
    group_instance_id = r.nullable_string(flexible) if version >= 3 else None
    client_id = r.string(flexible)
    client_host = r.string(flexible)
    rebalance_timeout = r.int32() if version >= 1 else None
    session_timeout = r.int32()
    if rebalance_timeout is None:
        rebalance_timeout = session_timeout   # Kafka's reading of a version-0 member
    subscription = r.bytes_(flexible)
    assignment = r.bytes_(flexible)
    if flexible:
        r.tagged_fields()
    return MemberMetadata(member_id, group_instance_id, client_id, client_host, rebalance_timeout,
                          session_timeout, subscription, assignment)


# ---- the records of each operation -----------------------------------------------------------

def offset_commit_records(group: str, offsets: Mapping[TopicPartition, OffsetCommitValue]) -> list[OffsetsRecord]:
    """An OffsetCommit's records: one per partition, in the order given."""
    return [(encode_key(OffsetCommitKey(group, topic, partition)), encode_value(value))
            for (topic, partition), value in offsets.items()]


def group_metadata_records(group: str, value: GroupMetadataValue) -> list[OffsetsRecord]:
    """A group's new metadata (after a rebalance, or when it empties): one record."""
    return [(encode_key(GroupMetadataKey(group)), encode_value(value))]


def offset_delete_records(group: str, partitions: Iterable[TopicPartition]) -> list[OffsetsRecord]:
    """An OffsetDelete's records: a tombstone per partition."""
    return [(encode_key(OffsetCommitKey(group, topic, partition)), None) for topic, partition in partitions]


def delete_group_records(group: str, partitions: Iterable[TopicPartition]) -> list[OffsetsRecord]:
    """A DeleteGroups' records for one group: its offsets' tombstones, then the group's.

    ``partitions`` are the group's committed partitions: a group tombstone deletes only the
    metadata, each offset goes with its own tombstone. Kafka writes them in this order too.
    """
    return offset_delete_records(group, partitions) + [(encode_key(GroupMetadataKey(group)), None)]


# ---- replay ----------------------------------------------------------------------------------

@dataclass
class OffsetsPartitionImage:
    """What one ``__consumer_offsets`` partition says once its records are replayed in log order.

    Compaction's meaning: the last record of a key wins and a tombstone removes the key. A group
    tombstone removes the group's metadata only; its offsets stay until their own tombstones (in
    Kafka a group left with offsets and no metadata loads as an empty group).
    """
    # group -> (topic, partition) -> its committed offset
    offsets: dict[str, dict[TopicPartition, OffsetCommitValue]] = field(default_factory=dict)
    # group -> its latest metadata
    groups: dict[str, GroupMetadataValue] = field(default_factory=dict)

    @classmethod
    def load(cls, records: Iterable[tuple[bytes | None, bytes | None]]) -> OffsetsPartitionImage:
        image = cls()
        for key, value in records:
            image.replay(key, value)
        return image

    def replay(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record read from the log."""
        if key is None:
            raise OffsetsRecordError("a __consumer_offsets record without a key")
        decoded = decode_key(key)
        self.apply(decoded, decode_value(decoded, value))

    def apply(self, key: Key, value: Value | None) -> None:
        """Apply one record already decoded (or about to be written, by its coordinator)."""
        if value is not None and not isinstance(value, _VALUE_OF[type(key)]):
            raise TypeError(f"{type(value).__name__} is not the value of a {type(key).__name__}")
        if isinstance(key, OffsetCommitKey):
            tp = (key.topic, key.partition)
            if value is None:
                committed = self.offsets.get(key.group)
                if committed is not None:
                    committed.pop(tp, None)
                    if not committed:
                        del self.offsets[key.group]
            else:
                self.offsets.setdefault(key.group, {})[tp] = value
        elif value is None:
            self.groups.pop(key.group, None)
        else:
            self.groups[key.group] = value

    def committed(self, group: str) -> dict[TopicPartition, OffsetCommitValue]:
        return dict(self.offsets.get(group, {}))

    def group_ids(self) -> set[str]:
        """Every group this partition knows: with metadata, or only with offsets."""
        return set(self.groups) | set(self.offsets)

    def delete_group_records(self, group: str) -> list[OffsetsRecord]:
        """The records that delete ``group`` and every offset it has here."""
        return delete_group_records(group, list(self.offsets.get(group, {})))


# ---- which partition ---------------------------------------------------------------------------

def java_string_hash(s: str) -> int:
    """Java's String.hashCode: s[0]*31^(n-1) + ... over UTF-16 code units, in 32-bit signed arithmetic."""
    h = 0
    # surrogatepass: a lone surrogate is one code unit in Java too, not an error.
    for (unit,) in struct.iter_unpack(">H", s.encode("utf-16-be", "surrogatepass")):
        h = (31 * h + unit) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def kafka_abs(n: int) -> int:
    """Kafka's Utils.abs: Math.abs, except Integer.MIN_VALUE (whose Math.abs is itself) gives 0.

    Not Utils.toPositive (n & 0x7fffffff, the producer's partitioner): the two differ for every
    other negative n, so the mask would send most groups to another partition than Kafka does.
    """
    return 0 if n == _INT32_MIN else abs(n)


def partition_for(group_id: str, num_partitions: int) -> int:
    """The ``__consumer_offsets`` partition of a group: Utils.abs(groupId.hashCode) % n, as Kafka."""
    if num_partitions <= 0:
        raise ValueError(f"num_partitions must be positive, not {num_partitions}")
    return kafka_abs(java_string_hash(group_id)) % num_partitions
