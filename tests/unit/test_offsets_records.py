"""__consumer_offsets records: Kafka's key/value bytes, every version decoded, replay, partition_for.

Old-version and flexible bytes are built here by hand from Kafka's schemas
(group-coordinator/src/main/resources/common/message/*.json, GroupMetadataManager.scala), not
with the module's encoder, so a decoder that misreads a version cannot agree with itself.
"""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.group.offsets_records import (GroupMetadataKey, GroupMetadataValue, MemberMetadata, OffsetCommitKey,
                                          OffsetCommitValue, OffsetsPartitionImage, OffsetsRecordError,
                                          UnknownVersionError, decode_key, decode_value, delete_group_records,
                                          encode_key, encode_value, group_metadata_records, java_string_hash,
                                          kafka_abs, offset_commit_records, offset_delete_records, partition_for)
from client.record_batch import build_batch, decode_all


# ---- Kafka's types, by hand -------------------------------------------------------------------

def i16(n): return struct.pack(">h", n)
def i32(n): return struct.pack(">i", n)
def i64(n): return struct.pack(">q", n)
def s(text): return i16(len(text.encode())) + text.encode()          # STRING
def ns(text): return i16(-1) if text is None else s(text)            # NULLABLE_STRING
def b(data): return i32(len(data)) + data                            # BYTES


def uvarint(n):
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def cs(text): return uvarint(len(text.encode()) + 1) + text.encode()  # COMPACT_STRING
def cns(text): return b"\x00" if text is None else cs(text)           # COMPACT_NULLABLE_STRING
def cb(data): return uvarint(len(data) + 1) + data                    # COMPACT_BYTES
NO_TAGS = b"\x00"


MEMBER = MemberMetadata("m1", "static-1", "client", "/10.0.0.1", 60000, 10000, b"\x00\x01sub", b"\x00\x01asg")
GROUP = GroupMetadataValue("consumer", 7, "range", "m1", 1_700_000_000_000, [MEMBER])


# ---- exact bytes of what is written -------------------------------------------------------------

def test_offset_commit_key_is_version_1_group_topic_partition():
    assert encode_key(OffsetCommitKey("g", "t", 3)) == bytes.fromhex("0001" "0001" "67" "0001" "74" "00000003")


def test_group_metadata_key_is_version_2_group():
    assert encode_key(GroupMetadataKey("grp")) == bytes.fromhex("0002" "0003" "677270")


def test_offset_commit_value_is_version_3():
    got = encode_value(OffsetCommitValue(offset=42, leader_epoch=5, metadata="m", commit_timestamp_ms=1000))
    assert got == bytes.fromhex("0003" "000000000000002a" "00000005" "0001" "6d" "00000000000003e8")


def test_offset_commit_value_with_an_expire_timestamp_is_version_1_as_in_kafka():
    got = encode_value(OffsetCommitValue(42, 5, "", 1000, expire_timestamp_ms=2000))
    assert got == bytes.fromhex("0001" "000000000000002a" "0000" "00000000000003e8" "00000000000007d0")


def test_group_metadata_value_is_version_3():
    expected = bytes.fromhex(
        "0003"
        "0008" + b"consumer".hex() +        # protocol_type
        "00000007"                          # generation
        "0005" + b"range".hex() +           # protocol
        "0002" + b"m1".hex() +              # leader
        "0000018bcfe56800"                  # current_state_timestamp 1_700_000_000_000
        "00000001"                          # one member
        "0002" + b"m1".hex() +              # member_id
        "0008" + b"static-1".hex() +        # group_instance_id
        "0006" + b"client".hex() +          # client_id
        "0009" + b"/10.0.0.1".hex() +       # client_host
        "0000ea60"                          # rebalance_timeout 60000
        "00002710"                          # session_timeout 10000
        "00000005" "0001737562"         # subscription
        "00000005" "0001617367")            # assignment
    assert encode_value(GROUP) == expected


def test_an_empty_group_has_null_protocol_and_leader():
    got = encode_value(GroupMetadataValue("consumer", 3, None, None, 5, []))
    assert got == i16(3) + s("consumer") + i32(3) + i16(-1) + i16(-1) + i64(5) + i32(0)


def test_a_group_with_members_and_no_protocol_is_refused():
    with pytest.raises(OffsetsRecordError, match="protocol"):
        encode_value(GroupMetadataValue("consumer", 1, None, "m1", 5, [MEMBER]))


def test_a_string_over_kafkas_int16_length_is_refused():
    with pytest.raises(OffsetsRecordError, match="32767"):
        encode_key(GroupMetadataKey("x" * 32768))
    assert decode_key(encode_key(GroupMetadataKey("x" * 32767))) == GroupMetadataKey("x" * 32767)


def test_an_int_out_of_range_is_an_offsets_record_error():
    with pytest.raises(OffsetsRecordError):
        encode_key(OffsetCommitKey("g", "t", 1 << 31))
    with pytest.raises(OffsetsRecordError):
        encode_value(OffsetCommitValue(1 << 63, -1, "", 0))


def test_tombstones_are_null_values():
    assert encode_value(None) is None
    assert decode_value(OffsetCommitKey("g", "t", 0), None) is None
    assert decode_value(GroupMetadataKey("g"), None) is None
    assert offset_delete_records("g", [("t", 0)]) == [(encode_key(OffsetCommitKey("g", "t", 0)), None)]


# ---- every version Kafka wrote, decoded ----------------------------------------------------------

@pytest.mark.parametrize("version", [0, 1])
def test_offset_commit_key_versions_0_and_1(version):
    assert decode_key(i16(version) + s("grp") + s("topic") + i32(7)) == OffsetCommitKey("grp", "topic", 7)


def test_group_metadata_key_version_2():
    assert decode_key(i16(2) + s("grp")) == GroupMetadataKey("grp")


@pytest.mark.parametrize("data,expected", [
    (i16(0) + i64(10) + s("md") + i64(111), OffsetCommitValue(10, -1, "md", 111)),
    (i16(1) + i64(10) + s("md") + i64(111) + i64(222), OffsetCommitValue(10, -1, "md", 111, 222)),
    (i16(1) + i64(10) + s("") + i64(111) + i64(-1), OffsetCommitValue(10, -1, "", 111)),
    (i16(2) + i64(10) + s("md") + i64(111), OffsetCommitValue(10, -1, "md", 111)),
    (i16(3) + i64(10) + i32(4) + s("md") + i64(111), OffsetCommitValue(10, 4, "md", 111)),
    (i16(4) + i64(10) + i32(4) + cs("md") + i64(111) + NO_TAGS, OffsetCommitValue(10, 4, "md", 111)),
    # a newer writer's tagged field (tag 0, 3 bytes) is skipped
    (i16(4) + i64(10) + i32(4) + cs("md") + i64(111) + b"\x01" + b"\x00\x03abc",
     OffsetCommitValue(10, 4, "md", 111)),
], ids=["v0", "v1", "v1-no-expire", "v2", "v3", "v4", "v4-tagged"])
def test_offset_commit_value_versions(data, expected):
    assert decode_value(OffsetCommitKey("g", "t", 0), data) == expected


def _member_v(version, m):
    if version >= 4:
        return (cs(m.member_id) + cns(m.group_instance_id) + cs(m.client_id) + cs(m.client_host)
                + i32(m.rebalance_timeout_ms) + i32(m.session_timeout_ms) + cb(m.subscription) + cb(m.assignment)
                + NO_TAGS)
    return (s(m.member_id) + (ns(m.group_instance_id) if version >= 3 else b"") + s(m.client_id)
            + s(m.client_host) + (i32(m.rebalance_timeout_ms) if version >= 1 else b"")
            + i32(m.session_timeout_ms) + b(m.subscription) + b(m.assignment))


def _group_v(version, g):
    if version >= 4:
        return (i16(4) + cs(g.protocol_type) + i32(g.generation) + cns(g.protocol) + cns(g.leader)
                + i64(g.current_state_timestamp_ms) + uvarint(len(g.members) + 1)
                + b"".join(_member_v(4, m) for m in g.members) + NO_TAGS)
    return (i16(version) + s(g.protocol_type) + i32(g.generation) + ns(g.protocol) + ns(g.leader)
            + (i64(g.current_state_timestamp_ms) if version >= 2 else b"") + i32(len(g.members))
            + b"".join(_member_v(version, m) for m in g.members))


def _as_written_at(version, g):
    """What a reader gets back from ``g`` written at ``version``: the fields it lacks at their defaults."""
    members = [MemberMetadata(m.member_id, m.group_instance_id if version >= 3 else None, m.client_id,
                              m.client_host, m.rebalance_timeout_ms if version >= 1 else m.session_timeout_ms,
                              m.session_timeout_ms, m.subscription, m.assignment) for m in g.members]
    return GroupMetadataValue(g.protocol_type, g.generation, g.protocol, g.leader,
                              g.current_state_timestamp_ms if version >= 2 else -1, members)


TWO_MEMBERS = GroupMetadataValue("consumer", 9, "roundrobin", "m2", 123456, [
    MEMBER, MemberMetadata("m2", None, "c2", "/h2", 30000, 45000, b"", b"\xff" * 300)])


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_group_metadata_value_versions(version):
    got = decode_value(GroupMetadataKey("g"), _group_v(version, TWO_MEMBERS))
    assert got == _as_written_at(version, TWO_MEMBERS)


def test_a_version_0_member_reads_its_session_timeout_as_rebalance_timeout():
    got = decode_value(GroupMetadataKey("g"), _group_v(0, TWO_MEMBERS))
    assert [m.rebalance_timeout_ms for m in got.members] == [10000, 45000]
    assert got.current_state_timestamp_ms == -1 and got.members[0].group_instance_id is None


def test_group_metadata_value_v4_with_tagged_fields_in_the_member_and_the_group():
    g = GroupMetadataValue("consumer", 1, "range", None, 5, [MEMBER])
    data = _group_v(4, g)
    member_tags, group_tags = b"\x01" + b"\x05\x02hi", b"\x02" + b"\x00\x00" + b"\x07\x01z"
    data = data[:-2] + member_tags + group_tags   # replace both empty tag sections
    assert decode_value(GroupMetadataKey("g"), data) == g


@pytest.mark.parametrize("data,what,version", [
    (i16(3) + s("g"), "key", 3),
    (i16(-1) + s("g"), "key", -1),
])
def test_an_unknown_key_version_is_named(data, what, version):
    with pytest.raises(UnknownVersionError, match=f"{what} version {version}") as e:
        decode_key(data)
    assert isinstance(e.value, ValueError) and e.value.version == version


@pytest.mark.parametrize("key,name", [(OffsetCommitKey("g", "t", 0), "OffsetCommitValue"),
                                      (GroupMetadataKey("g"), "GroupMetadataValue")])
@pytest.mark.parametrize("version", [5, -1, 0x7FFF])
def test_an_unknown_value_version_is_named(key, name, version):
    with pytest.raises(ValueError, match=f"unknown {name} version {version} "):
        decode_value(key, i16(version) + b"\x00" * 64)


@pytest.mark.parametrize("data", [b"", b"\x00", i16(1) + s("g") + s("t"), i16(1) + s("g") + s("t") + i32(0) + b"x",
                                  i16(2) + i16(5) + b"abc", i16(2) + b"\x00\x02\xff\xfe"])
def test_a_malformed_key_is_an_offsets_record_error(data):
    with pytest.raises(OffsetsRecordError):
        decode_key(data)


@pytest.mark.parametrize("data", [i16(3) + i64(1), i16(3) + i64(1) + i32(0) + s("") + i64(0) + b"\x00",
                                  i16(4) + i64(1) + i32(0) + b"\x00" + i64(0) + NO_TAGS,   # null metadata
                                  i16(4) + i64(1) + i32(0) + cs("") + i64(0) + b"\xff\xff\xff\xff\xff\x01"])
def test_a_malformed_offset_value_is_an_offsets_record_error(data):
    with pytest.raises(OffsetsRecordError):
        decode_value(OffsetCommitKey("g", "t", 0), data)


def test_a_malformed_group_value_is_an_offsets_record_error():
    good = _group_v(3, TWO_MEMBERS)
    for bad in (good[:-1], good + b"\x00", good[:2] + i16(-1) + good[4:]):   # cut, trailing, null protocol_type
        with pytest.raises(OffsetsRecordError):
            decode_value(GroupMetadataKey("g"), bad)


# ---- round trips ------------------------------------------------------------------------------------

names = st.text(max_size=12)
int32s = st.integers(-(1 << 31), (1 << 31) - 1)
int64s = st.integers(-(1 << 63), (1 << 63) - 1)
offset_values = st.builds(OffsetCommitValue, int64s, int32s, names, int64s,
                          st.one_of(st.just(-1), int64s))
members = st.builds(MemberMetadata, names, st.none() | names, names, names, int32s, int32s,
                    st.binary(max_size=40), st.binary(max_size=40))


@st.composite
def group_values(draw):
    ms = draw(st.lists(members, max_size=4))
    protocol = draw(names) if ms else draw(st.none() | names)
    return GroupMetadataValue(draw(names), draw(int32s), protocol, draw(st.none() | names), draw(int64s), ms)


keys = st.builds(OffsetCommitKey, names, names, int32s) | st.builds(GroupMetadataKey, names)


@given(keys)
def test_keys_round_trip(key):
    assert decode_key(encode_key(key)) == key


@given(offset_values)
def test_offset_values_round_trip(value):
    expected = value if value.expire_timestamp_ms == -1 else OffsetCommitValue(
        value.offset, -1, value.metadata, value.commit_timestamp_ms, value.expire_timestamp_ms)  # v1: no epoch
    assert decode_value(OffsetCommitKey("g", "t", 0), encode_value(value)) == expected


@given(group_values())
def test_group_values_round_trip(value):
    assert decode_value(GroupMetadataKey("g"), encode_value(value)) == value


@given(group_values(), st.sampled_from([0, 1, 2, 3, 4]))
def test_group_values_decode_at_every_version(value, version):
    assert decode_value(GroupMetadataKey("g"), _group_v(version, value)) == _as_written_at(version, value)


@given(group_values())
def test_our_version_3_is_the_hand_built_schema(value):
    assert encode_value(value) == _group_v(3, value)


# ---- the operations' records ---------------------------------------------------------------------

def test_offset_commit_records_one_per_partition():
    v0, v1 = OffsetCommitValue(5, 1, "", 10), OffsetCommitValue(9, 1, "x", 10)
    got = offset_commit_records("g", {("t", 0): v0, ("u", 1): v1})
    assert got == [(encode_key(OffsetCommitKey("g", "t", 0)), encode_value(v0)),
                   (encode_key(OffsetCommitKey("g", "u", 1)), encode_value(v1))]


def test_delete_group_records_are_the_offsets_tombstones_then_the_groups():
    got = delete_group_records("g", [("t", 0), ("t", 1)])
    assert got == [(encode_key(OffsetCommitKey("g", "t", 0)), None),
                   (encode_key(OffsetCommitKey("g", "t", 1)), None),
                   (encode_key(GroupMetadataKey("g")), None)]


def test_records_go_through_a_record_batch_unchanged():
    records = (offset_commit_records("g", {("t", 0): OffsetCommitValue(5, 2, "meta", 1000)})
               + group_metadata_records("g", GROUP)
               + offset_delete_records("g", [("t", 0)])
               + delete_group_records("h", [("u", 3)]))
    batch = build_batch([(k, v, 1000 + i) for i, (k, v) in enumerate(records)], base_offset=40)
    read = decode_all(batch, topic="__consumer_offsets", partition=7)
    assert [(r.key, r.value) for r in read] == records
    assert [r.value is None for r in read] == [False, False, True, True, True]
    image = OffsetsPartitionImage.load((r.key, r.value) for r in read)
    assert image.groups == {"g": GROUP} and image.offsets == {}


# ---- replay -------------------------------------------------------------------------------------------

def test_last_record_of_a_key_wins():
    a, b_ = OffsetCommitValue(1, 0, "", 1), OffsetCommitValue(2, 0, "", 2)
    image = OffsetsPartitionImage.load(offset_commit_records("g", {("t", 0): a})
                                       + offset_commit_records("g", {("t", 0): b_}))
    assert image.committed("g") == {("t", 0): b_}


def test_version_0_and_1_keys_are_the_same_partition():
    v = OffsetCommitValue(3, 0, "", 1)
    old = (i16(0) + s("g") + s("t") + i32(0), i16(2) + i64(1) + s("") + i64(0))
    image = OffsetsPartitionImage.load([old] + offset_commit_records("g", {("t", 0): v}))
    assert image.offsets == {"g": {("t", 0): v}}
    image.replay(old[0], None)
    assert image.offsets == {}


def test_a_group_tombstone_deletes_only_the_metadata():
    v = OffsetCommitValue(3, 0, "", 1)
    image = OffsetsPartitionImage.load(group_metadata_records("g", GROUP)
                                       + offset_commit_records("g", {("t", 0): v})
                                       + [(encode_key(GroupMetadataKey("g")), None)])
    assert image.groups == {} and image.committed("g") == {("t", 0): v}
    assert image.group_ids() == {"g"}


def test_image_delete_group_records_delete_everything_of_the_group_only():
    v = OffsetCommitValue(3, 0, "", 1)
    image = OffsetsPartitionImage.load(group_metadata_records("g", GROUP) + group_metadata_records("h", GROUP)
                                       + offset_commit_records("g", {("t", 0): v, ("t", 1): v})
                                       + offset_commit_records("h", {("t", 0): v}))
    for key, value in image.delete_group_records("g"):
        image.replay(key, value)
    assert image.groups == {"h": GROUP} and image.offsets == {"h": {("t", 0): v}}
    assert image.group_ids() == {"h"}


def test_a_tombstone_for_an_unknown_key_is_harmless():
    image = OffsetsPartitionImage.load(offset_delete_records("g", [("t", 0)]) + delete_group_records("h", []))
    assert image.offsets == {} and image.groups == {}


def test_a_record_without_a_key_is_refused():
    with pytest.raises(OffsetsRecordError, match="without a key"):
        OffsetsPartitionImage().replay(None, b"")


def test_apply_refuses_a_value_of_the_other_key():
    image = OffsetsPartitionImage()
    with pytest.raises(TypeError):
        image.apply(OffsetCommitKey("g", "t", 0), GROUP)
    with pytest.raises(TypeError):
        image.apply(GroupMetadataKey("g"), OffsetCommitValue(1, 0, "", 0))
    assert image == OffsetsPartitionImage()


def test_committed_is_a_copy():
    image = OffsetsPartitionImage.load(offset_commit_records("g", {("t", 0): OffsetCommitValue(3, 0, "", 1)}))
    image.committed("g").clear()
    assert len(image.committed("g")) == 1


groups_ = st.sampled_from(["g1", "g2", "g3"])
tps = st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 2))
ops = st.one_of(
    st.tuples(st.just("commit"), groups_, st.dictionaries(tps, offset_values, min_size=1, max_size=3)),
    st.tuples(st.just("metadata"), groups_, group_values()),
    st.tuples(st.just("offset_delete"), groups_, st.lists(tps, max_size=3)),
    st.tuples(st.just("delete_group"), groups_, st.none()),
    st.tuples(st.just("group_tombstone"), groups_, st.none()),
)


def _run(op_list):
    """The log the operations write, and a plain-dict model of what it must replay to."""
    offsets, groups, log = {}, {}, []
    for op, group, arg in op_list:
        committed = offsets.setdefault(group, {})
        if op == "commit":
            log += offset_commit_records(group, arg)
            committed.update(arg)
        elif op == "metadata":
            log += group_metadata_records(group, arg)
            groups[group] = arg
        elif op == "offset_delete":
            log += offset_delete_records(group, arg)
            for tp in arg:
                committed.pop(tp, None)
        elif op == "delete_group":
            log += delete_group_records(group, list(committed))
            committed.clear()
            groups.pop(group, None)
        else:
            log.append((encode_key(GroupMetadataKey(group)), None))
            groups.pop(group, None)
    return log, {g: c for g, c in offsets.items() if c}, groups


def _decoded(value):
    # What survives the bytes: a v1 value (an expire timestamp) has no leader epoch.
    if isinstance(value, OffsetCommitValue) and value.expire_timestamp_ms != -1:
        return OffsetCommitValue(value.offset, -1, value.metadata, value.commit_timestamp_ms,
                                 value.expire_timestamp_ms)
    return value


@settings(max_examples=200)
@given(st.lists(ops, max_size=25))
def test_replay_equals_a_dict_model(op_list):
    log, offsets, groups = _run(op_list)
    image = OffsetsPartitionImage.load(log)
    assert image.offsets == {g: {tp: _decoded(v) for tp, v in c.items()} for g, c in offsets.items()}
    assert image.groups == groups
    assert image.group_ids() == set(offsets) | set(groups)


@settings(max_examples=50)
@given(st.lists(ops, min_size=1, max_size=10))
def test_replay_through_record_batches_equals_direct_replay(op_list):
    log, _, _ = _run(op_list)
    if not log:
        return
    batch = build_batch([(k, v, 0) for k, v in log])
    through_batches = OffsetsPartitionImage.load((r.key, r.value) for r in decode_all(batch))
    assert through_batches == OffsetsPartitionImage.load(log)


# ---- partition_for ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,java_hash", [
    ("", 0),
    ("a", 97),
    ("hello", 99162322),
    ("polygenelubricants", -2147483648),      # the classic Integer.MIN_VALUE hashCode
    ("GydZG_", -2147483648),
    ("é", 0xE9),
    ("\U0001F600", 0xD83D * 31 + 0xDE00),      # two UTF-16 code units: 1772899
    ("my-group", -1906497762),
])
def test_java_string_hash(text, java_hash):
    assert java_string_hash(text) == java_hash


def _java_hash_by_the_definition(text):
    # s[0]*31^(n-1) + s[1]*31^(n-2) + ... + s[n-1], taken modulo 2^32 as a signed int (String.hashCode's javadoc).
    units = struct.unpack(f">{len(text.encode('utf-16-be', 'surrogatepass')) // 2}H",
                          text.encode("utf-16-be", "surrogatepass"))
    total = sum(u * 31 ** (len(units) - 1 - i) for i, u in enumerate(units)) % (1 << 32)
    return total - (1 << 32) if total >= 1 << 31 else total


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=40))
def test_java_string_hash_is_the_definition(text):
    assert java_string_hash(text) == _java_hash_by_the_definition(text)


def test_kafka_abs_is_math_abs_with_min_value_at_0():
    assert [kafka_abs(n) for n in (0, 5, -5, -2147483647, -2147483648, 2147483647)] == [0, 5, 5, 2147483647, 0,
                                                                                         2147483647]


@pytest.mark.parametrize("group,n,partition", [
    ("", 50, 0),
    ("hello", 50, 99162322 % 50),
    ("polygenelubricants", 50, 0),            # Utils.abs(MIN_VALUE) = 0
    ("my-group", 50, 1906497762 % 50),         # 12; the mask (h & 0x7fffffff) would give 36
    ("console-consumer-8010", 50, 836602008 % 50),
    ("anything", 1, 0),
])
def test_partition_for(group, n, partition):
    assert partition_for(group, n) == partition


def test_partition_for_needs_partitions():
    with pytest.raises(ValueError):
        partition_for("g", 0)


@given(st.text(max_size=30), st.integers(1, 200))
def test_partition_for_is_in_range(group, n):
    assert 0 <= partition_for(group, n) < n
