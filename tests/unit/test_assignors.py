"""client.assignors: the ConsumerProtocolSubscription codec (golden bytes built from Kafka's schema, kio's
generated codec as an independent oracle, hostile bytes) and the range / roundrobin / cooperative-sticky
assignors (Kafka's own RangeAssignorTest, RoundRobinAssignorTest and AbstractStickyAssignorTest /
CooperativeStickyAssignorTest cases, plus properties over random groups)."""

import io
import struct
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.serial import entity_reader, entity_writer
from kio.schema.consumer_protocol_subscription.v0 import data as kio_v0
from kio.schema.consumer_protocol_subscription.v1 import data as kio_v1
from kio.schema.consumer_protocol_subscription.v2 import data as kio_v2
from kio.schema.consumer_protocol_subscription.v3 import data as kio_v3

from client.assignors import (ASSIGNORS, COOPERATIVE, EAGER, CooperativeStickyAssignor, RangeAssignor,
                              RoundRobinAssignor, Subscription, assignor, decode_subscription,
                              encode_subscription)

KIO = {0: kio_v0, 1: kio_v1, 2: kio_v2, 3: kio_v3}
PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def kstr(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def sub(topics, owned=(), generation=-1, user_data=None) -> Subscription:
    return Subscription(list(topics), user_data, list(owned), generation)


def tps(topic: str, *partitions: int) -> list[tuple[str, int]]:
    return [(topic, p) for p in partitions]


# --- the codec -------------------------------------------------------------------------------------------------

def test_v0_golden_bytes_from_kafkas_schema():
    # int16 version, [string] topics (Kafka's serializer sorts them), nullable bytes user data.
    s = Subscription(["foo", "bar"], b"\x01\x02", [("foo", 0)], 7, "r1")
    expected = struct.pack(">hi", 0, 2) + kstr("bar") + kstr("foo") + struct.pack(">i", 2) + b"\x01\x02"
    assert encode_subscription(s, version=0) == expected
    assert decode_subscription(expected) == Subscription(["bar", "foo"], b"\x01\x02", [], -1, None)


def test_v1_golden_bytes_from_kafkas_schema():
    # v1 appends OwnedPartitions: [(string topic, [int32] partitions)], sorted and grouped by topic.
    s = Subscription(["t"], None, [("foo", 1), ("bar", 0), ("foo", 0)])
    expected = (struct.pack(">hi", 1, 1) + kstr("t") + struct.pack(">i", -1) + struct.pack(">i", 2)
                + kstr("bar") + struct.pack(">ii", 1, 0) + kstr("foo") + struct.pack(">iii", 2, 0, 1))
    assert encode_subscription(s, version=1) == expected
    assert decode_subscription(expected) == Subscription(["t"], None, [("bar", 0), ("foo", 0), ("foo", 1)])


def test_v2_and_v3_golden_bytes_append_generation_then_nullable_rack():
    s = Subscription(["t"], b"", [], 42, "rack-a")
    v1 = struct.pack(">hi", 9, 1) + kstr("t") + struct.pack(">i", 0) + struct.pack(">i", 0)
    assert encode_subscription(s, version=2) == struct.pack(">h", 2) + v1[2:] + struct.pack(">i", 42)
    v3 = struct.pack(">h", 3) + v1[2:] + struct.pack(">i", 42) + kstr("rack-a")
    assert encode_subscription(s, version=3) == v3
    assert encode_subscription(Subscription(["t"], b"", [], 42), 3) == v3[:-len(kstr("rack-a"))] + b"\xff\xff"
    assert decode_subscription(v3) == s


def test_newer_versions_are_read_as_version_3_and_trailing_fields_ignored():
    v3 = encode_subscription(Subscription(["a"], b"u", [("a", 2)], 5, "r"), 3)
    future = struct.pack(">h", 7) + v3[2:] + b"\x00\x00\x00\x2a more fields"
    assert decode_subscription(future) == Subscription(["a"], b"u", [("a", 2)], 5, "r")
    # the encoder clamps as Kafka's checkSubscriptionVersion does
    assert encode_subscription(Subscription(["a"]), 9)[:2] == struct.pack(">h", 3)


def test_kafka_reads_absent_generation_and_empty_rack_as_not_sent():
    data = struct.pack(">hi", 3, 0) + struct.pack(">ii", -1, 0) + struct.pack(">i", -9) + kstr("")
    assert decode_subscription(data) == Subscription([], None, [], -1, None)
    assert encode_subscription(Subscription([], generation_id=-9), 2)[-4:] == struct.pack(">i", -1)


def test_encode_refuses_what_kafka_cannot_carry():
    with pytest.raises(ValueError, match="version"):
        encode_subscription(Subscription(["t"]), -1)
    with pytest.raises(ValueError, match="longer than a Kafka string"):
        encode_subscription(Subscription(["x" * 40000]))
    with pytest.raises(ValueError, match="int32"):
        encode_subscription(Subscription(["t"], owned_partitions=[("t", 2**31)]), 1)


topic_names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
subscriptions_st = st.builds(
    Subscription,
    topics=st.lists(topic_names, max_size=4),
    user_data=st.none() | st.binary(max_size=16),
    owned_partitions=st.lists(st.tuples(topic_names, st.integers(-2**31, 2**31 - 1)), max_size=6),
    generation_id=st.integers(-2**31, 2**31 - 1),
    rack_id=st.none() | topic_names)


def as_kafka_reads_it(s: Subscription, version: int) -> Subscription:
    owned = sorted(s.owned_partitions, key=lambda tp: (tp[0].encode("utf-16-be"), tp[1])) if version >= 1 else []
    return Subscription(sorted(s.topics, key=lambda t: t.encode("utf-16-be")), s.user_data, owned,
                        max(s.generation_id, -1) if version >= 2 else -1,
                        (s.rack_id or None) if version >= 3 else None)


def kio_entity(s: Subscription, version: int):
    m, k = KIO[version], as_kafka_reads_it(s, version)
    fields = {"topics": tuple(k.topics), "user_data": k.user_data}
    if version >= 1:
        grouped: dict[str, list[int]] = {}
        for topic, p in k.owned_partitions:
            grouped.setdefault(topic, []).append(p)
        fields["owned_partitions"] = tuple(m.TopicPartition(topic=t, partitions=tuple(ps)) for t, ps in grouped.items())
    if version >= 2:
        fields["generation_id"] = s.generation_id if s.generation_id >= 0 else -1
    if version >= 3:
        fields["rack_id"] = s.rack_id
    return m.ConsumerProtocolSubscription(**fields)


@given(subscriptions_st, st.integers(0, 3))
def test_round_trip_every_version(s, version):
    assert decode_subscription(encode_subscription(s, version)) == as_kafka_reads_it(s, version)


@given(subscriptions_st, st.integers(0, 3))
def test_bytes_match_kios_codec_generated_from_kafkas_json(s, version):
    cls = KIO[version].ConsumerProtocolSubscription
    buf = io.BytesIO()
    entity_writer(cls)(buf, kio_entity(s, version))
    ours = encode_subscription(s, version)
    assert ours == struct.pack(">h", version) + buf.getvalue()
    theirs, used = entity_reader(cls)(ours, 2)
    assert used == len(ours) - 2 and theirs == kio_entity(s, version)


def assert_value_error_only(data: bytes) -> None:
    try:
        decode_subscription(data)
    except ValueError as e:
        assert type(e) is ValueError and "\n" not in str(e) and str(e)
    except Exception as e:  # noqa: BLE001 - the point: nothing but ValueError escapes
        pytest.fail(f"{type(e).__name__} escaped decode_subscription({data!r}): {e}")


@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_value_error(data):
    assert_value_error_only(data)


@given(subscriptions_st, st.integers(0, 3), st.data())
def test_corrupted_subscriptions_decode_or_raise_value_error(s, version, data):
    raw = bytearray(encode_subscription(s, version))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    assert_value_error_only(bytes(raw))


@given(subscriptions_st, st.integers(0, 3))
def test_every_truncation_is_a_value_error(s, version):
    raw = encode_subscription(s, version)
    for cut in range(len(raw)):
        with pytest.raises(ValueError):
            decode_subscription(raw[:cut])


@pytest.mark.parametrize("data,match", [
    (b"", "truncated"),
    (struct.pack(">h", -1), "version -1"),
    (struct.pack(">hi", 0, -1), "non-nullable topics"),
    (struct.pack(">hi", 0, 1) + struct.pack(">h", -1), "non-nullable topic name"),
    (struct.pack(">hi", 0, 2**31 - 1), "cannot fit"),
    (struct.pack(">hi", 0, 1) + kstr("t")[:2] + b"\xff\xfe" + struct.pack(">i", -1), "not UTF-8"),
    (struct.pack(">hi", 0, 0) + struct.pack(">i", 5) + b"abc", "user data needs 5 bytes"),
    (struct.pack(">hi", 1, 0) + struct.pack(">ii", -1, 1) + kstr("t") + struct.pack(">i", -3), "owned partition ids"),
])
def test_bad_subscriptions_say_what_is_wrong(data, match):
    with pytest.raises(ValueError, match=match):
        decode_subscription(data)


# --- every assignor ----------------------------------------------------------------------------------------------

def test_registry_names_protocols_and_user_data():
    assert list(ASSIGNORS) == ["range", "roundrobin", "cooperative-sticky"]
    assert assignor("range") is ASSIGNORS["range"] and isinstance(assignor("roundrobin"), RoundRobinAssignor)
    assert (RangeAssignor.protocol, RoundRobinAssignor.protocol, CooperativeStickyAssignor.protocol) == \
        (EAGER, EAGER, COOPERATIVE)
    assert CooperativeStickyAssignor.supported_protocols == (COOPERATIVE, EAGER)
    with pytest.raises(ValueError, match="unknown partition.assignment.strategy 'sticky'"):
        assignor("sticky")
    assert RangeAssignor().subscription_user_data(["t"], 3) is None
    assert RoundRobinAssignor().subscription_user_data(["t"], 3) is None
    # CooperativeStickyAssignor.subscriptionUserData: Struct(generation: INT32)
    assert CooperativeStickyAssignor().subscription_user_data(["t"], 10) == b"\x00\x00\x00\x0a"
    assert CooperativeStickyAssignor().subscription_user_data(["t"], -1) == b"\xff\xff\xff\xff"


@pytest.mark.parametrize("name", list(ASSIGNORS))
def test_no_topic_or_unknown_topic_assigns_nothing_but_lists_the_member(name):
    assert ASSIGNORS[name].assign({}, {"consumer": sub([])}) == {"consumer": []}
    assert ASSIGNORS[name].assign({"other": 3}, {"consumer": sub(["topic"])}) == {"consumer": []}
    assert ASSIGNORS[name].assign({"topic": 0}, {"consumer": sub(["topic"])}) == {"consumer": []}
    assert ASSIGNORS[name].assign({"topic": 3}, {}) == {}


@pytest.mark.parametrize("name", list(ASSIGNORS))
def test_only_assigns_partitions_from_subscribed_topics(name):
    plan = ASSIGNORS[name].assign({"topic": 3, "other": 3}, {"consumer": sub(["topic"])})
    assert sorted(plan["consumer"]) == tps("topic", 0, 1, 2)


@st.composite
def groups(draw, same_topics: bool, prior: bool):
    """1-6 members, 1-3 topics of 1-12 partitions, each partition owned by at most one member (a valid prior
    assignment), one generation for all."""
    counts = {f"t{i}": draw(st.integers(1, 12)) for i in range(draw(st.integers(1, 3)))}
    names = draw(st.lists(st.text("abcxyz-0189", min_size=1, max_size=6), min_size=1, max_size=6, unique=True))
    every = [(t, p) for t, n in counts.items() for p in range(n)]
    owners = draw(st.lists(st.sampled_from([None] + names), min_size=len(every), max_size=len(every))) \
        if prior else [None] * len(every)
    generation = draw(st.integers(0, 5))
    group = {}
    for name in names:
        topics = list(counts) if same_topics else draw(st.lists(st.sampled_from(list(counts)), unique=True))
        owned = [tp for tp, o in zip(every, owners) if o == name]
        group[name] = Subscription(topics, None, owned, generation if prior else -1)
    return counts, group


def assert_valid(counts, group, plan):
    assert set(plan) == set(group)
    everything = [tp for tps_ in plan.values() for tp in tps_]
    assert len(everything) == len(set(everything)), "a partition given twice"
    for member, partitions in plan.items():
        for topic, p in partitions:
            assert topic in group[member].topics and 0 <= p < counts[topic]


@pytest.mark.parametrize("name", list(ASSIGNORS))
@given(st.data())
@PROPERTY
def test_every_assignor_gives_valid_plans(name, data):
    counts, group = data.draw(groups(same_topics=data.draw(st.booleans()), prior=True))
    plan = ASSIGNORS[name].assign({**counts, "unsubscribed": 4}, group)
    assert_valid(counts, group, plan)
    if name != "cooperative-sticky":     # eager: everything subscribed is assigned in one go
        subscribed = {t for s in group.values() for t in s.topics}
        assert sum(map(len, plan.values())) == sum(n for t, n in counts.items() if t in subscribed)


# --- range ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("counts,group,expected", [
    # RangeAssignorTest.testOneConsumerOneTopic
    ({"topic": 3}, {"consumer": ["topic"]}, {"consumer": tps("topic", 0, 1, 2)}),
    # testOneConsumerMultipleTopics
    ({"topic1": 1, "topic2": 2}, {"consumer": ["topic1", "topic2"]},
     {"consumer": tps("topic1", 0) + tps("topic2", 0, 1)}),
    # testTwoConsumersOneTopicOnePartition
    ({"topic": 1}, {"consumer1": ["topic"], "consumer2": ["topic"]}, {"consumer1": tps("topic", 0), "consumer2": []}),
    # testTwoConsumersOneTopicTwoPartitions
    ({"topic": 2}, {"consumer1": ["topic"], "consumer2": ["topic"]},
     {"consumer1": tps("topic", 0), "consumer2": tps("topic", 1)}),
    # testMultipleConsumersMixedTopics
    ({"topic1": 3, "topic2": 2}, {"consumer1": ["topic1"], "consumer2": ["topic1", "topic2"], "consumer3": ["topic1"]},
     {"consumer1": tps("topic1", 0), "consumer2": tps("topic1", 1) + tps("topic2", 0, 1),
      "consumer3": tps("topic1", 2)}),
    # testTwoConsumersTwoTopicsSixPartitions (the class javadoc's example)
    ({"topic1": 3, "topic2": 3}, {"consumer1": ["topic1", "topic2"], "consumer2": ["topic1", "topic2"]},
     {"consumer1": tps("topic1", 0, 1) + tps("topic2", 0, 1), "consumer2": tps("topic1", 2) + tps("topic2", 2)}),
    # one topic of 3 over two consumers, members given out of order: sorted by member id
    ({"t": 3}, {"c1": ["t"], "c0": ["t"]}, {"c0": tps("t", 0, 1), "c1": tps("t", 2)}),
])
def test_range_matches_kafkas_range_assignor_test(counts, group, expected):
    plan = RangeAssignor().assign(counts, {m: sub(t) for m, t in group.items()})
    assert {m: sorted(p) for m, p in plan.items()} == expected


def test_range_static_members_first_by_instance_id():
    # RangeAssignorTest.testTwoStaticConsumersTwoTopicsSixPartitions / testOneStaticConsumerAndOneDynamic:
    # the instance ids, not the (restart-changing) member ids, decide the order; static before dynamic.
    group = {m: sub(["t"]) for m in ("a-member", "b-member", "c-member")}
    plan = RangeAssignor().assign({"t": 3}, group, {"a-member": "instance2", "b-member": None,
                                                   "c-member": "instance1"})
    assert plan == {"c-member": tps("t", 0), "a-member": tps("t", 1), "b-member": tps("t", 2)}


def test_range_sorts_member_ids_as_java_strings_do():
    # U+10000 is the surrogate pair D800 DC00 in Java, which sorts before U+FFFF; Python's order is the reverse.
    group = {"\uffff": sub(["t"]), "\U00010000": sub(["t"])}
    assert RangeAssignor().assign({"t": 2}, group) == {"\uffff": tps("t", 1), "\U00010000": tps("t", 0)}


@given(st.dictionaries(st.text("abc", min_size=1, max_size=3), st.just(None), min_size=1, max_size=6),
       st.integers(1, 40))
def test_range_gives_contiguous_ranges_larger_first(members, n):
    plan = RangeAssignor().assign({"t": n}, {m: sub(["t"]) for m in members})
    order = sorted(members)
    sizes = [len(plan[m]) for m in order]
    assert sizes == sorted(sizes, reverse=True) and max(sizes) - min(sizes) <= 1
    assert [tp for m in order for tp in plan[m]] == tps("t", *range(n))


# --- roundrobin ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("counts,group,expected", [
    # RoundRobinAssignorTest.testTwoConsumersTwoTopicsSixPartitions (the class javadoc's first example)
    ({"topic1": 3, "topic2": 3}, {"consumer1": ["topic1", "topic2"], "consumer2": ["topic1", "topic2"]},
     {"consumer1": tps("topic1", 0, 2) + tps("topic2", 1), "consumer2": tps("topic1", 1) + tps("topic2", 0, 2)}),
    # testMultipleConsumersMixedTopics
    ({"topic1": 3, "topic2": 2}, {"consumer1": ["topic1"], "consumer2": ["topic1", "topic2"], "consumer3": ["topic1"]},
     {"consumer1": tps("topic1", 0), "consumer2": tps("topic1", 1) + tps("topic2", 0, 1),
      "consumer3": tps("topic1", 2)}),
    # the javadoc's unequal-subscriptions example
    ({"t0": 1, "t1": 2, "t2": 3}, {"C0": ["t0"], "C1": ["t0", "t1"], "C2": ["t0", "t1", "t2"]},
     {"C0": tps("t0", 0), "C1": tps("t1", 0), "C2": tps("t1", 1) + tps("t2", 0, 1, 2)}),
    # testTwoConsumersOneTopicOnePartition
    ({"topic": 1}, {"consumer1": ["topic"], "consumer2": ["topic"]}, {"consumer1": tps("topic", 0), "consumer2": []}),
])
def test_roundrobin_matches_kafkas_round_robin_assignor_test(counts, group, expected):
    plan = RoundRobinAssignor().assign(counts, {m: sub(t) for m, t in reversed(group.items())})
    assert plan == expected


def test_roundrobin_static_members_deal_by_instance_id():
    # RoundRobinAssignorTest.testTwoStaticConsumersTwoTopicsSixPartitions: consumer2's instance sorts first.
    group = {"consumer1": sub(["t"]), "consumer2": sub(["t"])}
    plan = RoundRobinAssignor().assign({"t": 3}, group, {"consumer1": "instance2", "consumer2": "instance1"})
    assert plan == {"consumer1": tps("t", 1), "consumer2": tps("t", 0, 2)}


# --- cooperative-sticky: Kafka's cases ------------------------------------------------------------------------------

def test_sticky_walks_members_in_java_hashmap_order():
    # Kafka's sticky choices follow HashMap<String, ...> iteration, so the port computes String.hashCode:
    # well-known Java values ("polygenelubricants" hashes to Integer.MIN_VALUE; "Aa" and "BB" collide).
    from client.assignors import _java_hash, _java_hashmap_order
    assert (_java_hash("hello"), _java_hash(""), _java_hash("polygenelubricants")) == (99162322, 0, 2**31)
    assert _java_hash("Aa") == _java_hash("BB") == 2112
    assert _java_hash("\U0001F600") == (31 * 0xD83D + 0xDE00)       # UTF-16 code units, not the code point
    assert _java_hashmap_order(["consumer1", "consumer2", "consumer3", "consumer4"]) == \
        ["consumer4", "consumer3", "consumer2", "consumer1"]
    assert _java_hashmap_order(["BB", "Aa"]) == ["BB", "Aa"]             # one bucket: insertion order
    # "q" (0x71) and "a" (0x61) share bucket 1 of the default 16 (insertion order); past 12 keys (0.75 load) the
    # table doubles to 32 buckets and "q" moves to bucket 17, after everything else here
    twelve = ["q", "a"] + list("bcdefghijk")
    assert _java_hashmap_order(twelve) == twelve
    assert _java_hashmap_order(twelve + ["l"]) == ["a"] + list("bcdefghijkl") + ["q"]


STICKY = CooperativeStickyAssignor()
BOTH = ["topic1", "topic2"]


def test_sticky_two_consumers_two_topics_then_two_more_join():
    # AbstractStickyAssignorTest.testAddRemoveTwoConsumersTwoTopics (Kafka walks members in HashMap order).
    counts = {"topic1": 3, "topic2": 4}
    first = STICKY.assign(counts, {"consumer1": sub(BOTH), "consumer2": sub(BOTH)})
    assert first == {"consumer1": tps("topic1", 0, 2) + tps("topic2", 1, 3),
                     "consumer2": tps("topic1", 1) + tps("topic2", 0, 2)}
    joined = {"consumer1": sub(BOTH, first["consumer1"], 1), "consumer2": sub(BOTH, first["consumer2"], 1),
              "consumer3": sub(BOTH, [], 1), "consumer4": sub(BOTH, [], 1)}
    second = STICKY.assign(counts, joined)
    # topic1-2, topic2-3 (to consumer3) and topic2-2 (to consumer4) are being revoked: held back this round
    assert second == {"consumer1": [("topic1", 0), ("topic2", 1)], "consumer2": [("topic2", 0), ("topic1", 1)],
                      "consumer3": [], "consumer4": []}
    third = STICKY.assign(counts, {m: sub(BOTH, second[m], 2) for m in joined})
    assert third == {"consumer1": [("topic1", 0), ("topic2", 1)], "consumer2": [("topic2", 0), ("topic1", 1)],
                     "consumer3": [("topic1", 2), ("topic2", 3)], "consumer4": [("topic2", 2)]}


@pytest.mark.parametrize("counts,owned,expected", [
    # testMaxQuotaConsumerMoreThanNumExpectedMaxCapacityMembers: topic2-0 moves to consumer3, after revocation
    ({"topic1": 2, "topic2": 2},
     {"consumer1": [("topic1", 0), ("topic2", 0)], "consumer2": [("topic1", 1), ("topic2", 1)], "consumer3": []},
     {"consumer1": [("topic1", 0)], "consumer2": [("topic1", 1), ("topic2", 1)], "consumer3": []}),
    # testConsumerOwningMinQuotaExpectedMaxQuota
    ({"topic1": 2, "topic2": 3},
     {"consumer1": [("topic1", 0), ("topic2", 1)], "consumer2": [("topic1", 1), ("topic2", 2)]},
     {"consumer1": [("topic1", 0), ("topic2", 1), ("topic2", 0)], "consumer2": [("topic1", 1), ("topic2", 2)]}),
    # testAllConsumersAreUnderMinQuota
    ({"topic1": 2, "topic2": 3},
     {"consumer1": [("topic1", 0)], "consumer2": [("topic1", 1)], "consumer3": []},
     {"consumer1": [("topic1", 0), ("topic2", 1)], "consumer2": [("topic1", 1), ("topic2", 2)],
      "consumer3": [("topic2", 0)]}),
])
def test_sticky_quota_cases_from_abstract_sticky_assignor_test(counts, owned, expected):
    assert STICKY.assign(counts, {m: sub(BOTH, o, 1) for m, o in owned.items()}) == expected


@pytest.mark.parametrize("count,expected", [
    # CooperativeStickyAssignorTest.testAllConsumersHaveOwnedPartitionInvalidatedWhenClaimedByMultipleConsumers-
    # InSameGenerationWith{Equal,Unequal}PartitionsPerConsumer: topic-0 waits until both claimants revoke it.
    (3, {"consumer1": tps("topic", 1), "consumer2": tps("topic", 2), "consumer3": []}),
    (4, {"consumer1": tps("topic", 1, 3), "consumer2": tps("topic", 2), "consumer3": []}),
])
def test_sticky_partition_claimed_twice_in_one_generation_goes_to_nobody_yet(count, expected):
    group = {"consumer1": sub(["topic"], tps("topic", 0, 1), 1), "consumer2": sub(["topic"], tps("topic", 0, 2), 1),
             "consumer3": sub(["topic"], [], 1)}
    assert STICKY.assign({"topic": count}, group) == expected


def test_sticky_higher_generation_keeps_a_partition_two_members_claim():
    for first, second in (("consumer1", "consumer2"), ("consumer2", "consumer1")):
        group = {first: sub(["t"], tps("t", 0), 2), second: sub(["t"], tps("t", 0, 1), 1)}
        assert STICKY.assign({"t": 2}, group) == {first: tps("t", 0), second: tps("t", 1)}


def test_sticky_reads_the_generation_old_members_put_in_user_data():
    # testAssignorWithOldVersionSubscriptions: v1 members (no generation field) send it as user data.
    data = STICKY.subscription_user_data(["topic1"], 1)
    group = {"consumer1": Subscription(["topic1"], data, tps("topic1", 0)),
             "consumer2": Subscription(["topic1"], data, tps("topic1", 1)),
             "consumer3": sub(["topic1"], [], 1)}
    assert STICKY.assign({"topic1": 3}, group) == {"consumer1": tps("topic1", 0), "consumer2": tps("topic1", 1),
                                                   "consumer3": tps("topic1", 2)}
    # an old member whose user data says generation 1 loses a shared claim to a generation-2 member
    stale = {"consumer1": Subscription(["t"], data, tps("t", 0, 1)), "consumer2": sub(["t"], tps("t", 0), 2)}
    assert STICKY.assign({"t": 2}, stale) == {"consumer1": tps("t", 1), "consumer2": tps("t", 0)}


def test_sticky_general_case_mixed_subscriptions():
    # testMultipleConsumersMixedTopicSubscriptions (the general algorithm: subscriptions differ)
    group = {"consumer1": sub(["topic1"]), "consumer2": sub(BOTH), "consumer3": sub(["topic1"])}
    assert STICKY.assign({"topic1": 3, "topic2": 2}, group) == {
        "consumer1": tps("topic1", 0, 2), "consumer2": tps("topic2", 0, 1), "consumer3": tps("topic1", 1)}


def test_sticky_general_case_member_leaving_a_topic_gives_it_up():
    # consumer1 drops topic2: consumer2 takes topic2, and for a 2-2 balance consumer1 takes topic1-1. All three
    # partitions change hands, so all three wait this round (consumer2 revokes topic1-1, consumer1 topic2).
    group = {"consumer1": sub(["topic1"], tps("topic1", 0) + tps("topic2", 0, 1), 1),
             "consumer2": sub(BOTH, tps("topic1", 1), 1)}
    plan = STICKY.assign({"topic1": 2, "topic2": 2}, group)
    assert plan == {"consumer1": tps("topic1", 0), "consumer2": []}
    follow_up = STICKY.assign({"topic1": 2, "topic2": 2}, {m: sub(group[m].topics, plan[m], 2) for m in group})
    assert follow_up == {"consumer1": tps("topic1", 0, 1), "consumer2": tps("topic2", 0, 1)}


# --- cooperative-sticky: properties ----------------------------------------------------------------------------

def loads(plan) -> list[int]:
    return [len(p) for p in plan.values()]


def assert_cooperative(group, plan):
    """CooperativeStickyAssignorTest.verifyCooperativeValidity: nothing revoked from one member is given to
    another in the same round. Returns whether anything is being revoked (a follow-up rebalance is due)."""
    revoked = {tp for m, s in group.items() for tp in s.owned_partitions if tp not in plan[m]}
    added = {tp for m, p in plan.items() for tp in p if tp not in group[m].owned_partitions}
    assert not revoked & added, f"given away while still owned: {revoked & added}"
    return bool(revoked)


def follow_up(group, plan):
    return {m: Subscription(s.topics, None, list(plan[m]), s.generation_id + 1) for m, s in group.items()}


@given(groups(same_topics=True, prior=False))
@PROPERTY
def test_sticky_fresh_group_gets_everything_balanced(case):
    counts, group = case
    plan = STICKY.assign(counts, group)
    assert_valid(counts, group, plan)
    assert sum(loads(plan)) == sum(counts.values())
    assert max(loads(plan)) - min(loads(plan)) <= 1


@given(groups(same_topics=True, prior=True))
@PROPERTY
def test_sticky_moves_cooperatively_then_settles_balanced(case):
    counts, group = case
    plan = STICKY.assign(counts, group)
    assert_valid(counts, group, plan)
    assert_cooperative(group, plan)
    group = follow_up(group, plan)
    settled = STICKY.assign(counts, group)
    assert_valid(counts, group, settled)
    assert not assert_cooperative(group, settled), "the second round revoked again"
    assert sum(loads(settled)) == sum(counts.values())
    assert max(loads(settled)) - min(loads(settled)) <= 1
    assert all(set(plan[m]) <= set(settled[m]) for m in plan), "a kept partition moved in the second round"


@given(groups(same_topics=True, prior=False), st.randoms(use_true_random=False))
@PROPERTY
def test_sticky_balanced_prior_assignment_stays_put(case, rnd):
    counts, group = case
    every = [(t, p) for t, n in counts.items() for p in range(n)]
    rnd.shuffle(every)
    members = list(group)
    rnd.shuffle(members)
    owned = {m: every[i::len(members)] for i, m in enumerate(members)}      # any balanced deal
    prior = {m: Subscription(s.topics, None, owned[m], 3) for m, s in group.items()}
    plan = STICKY.assign(counts, prior)
    assert {m: set(p) for m, p in plan.items()} == {m: set(owned[m]) for m in group}


@given(groups(same_topics=False, prior=True))
@PROPERTY
def test_sticky_general_case_is_cooperative_and_converges_balanced(case):
    counts, group = case
    plan = STICKY.assign(counts, group)
    rounds = 0
    while True:        # CooperativeStickyAssignorTest.verifyValidityAndBalance: follow-ups while revoking
        assert_valid(counts, group, plan)
        if not assert_cooperative(group, plan):
            break
        group = follow_up(group, plan)
        plan = STICKY.assign(counts, group)
        rounds += 1
        assert rounds <= 4, "still revoking after four follow-up rebalances"
    wanted = {t for s in group.values() for t in s.topics}
    assert Counter(t for p in plan.values() for t, _ in p) == Counter({t: n for t, n in counts.items() if t in wanted})
    # AbstractStickyAssignorTest.verifyValidityAndBalance: members 2+ apart share no topic (else one could move)
    for a in plan:
        for b in plan:
            if len(plan[a]) > len(plan[b]) + 1:
                assert not {t for t, _ in plan[a]} & set(group[b].topics), (a, b, plan)


@st.composite
def messy_groups(draw):
    """What a leader may really be handed: overlapping claims, mixed and missing generations, claims on unknown
    topics or partitions that do not exist, topics listed twice, user data that is not a generation."""
    counts = {f"t{i}": draw(st.integers(0, 8)) for i in range(draw(st.integers(1, 3)))}
    topics = list(counts) + ["ghost"]
    names = draw(st.lists(st.text("ab\uffff\U00010000", min_size=1, max_size=3), min_size=1, max_size=7, unique=True))
    return counts, {n: Subscription(draw(st.lists(st.sampled_from(topics), max_size=5)),
                                    draw(st.none() | st.binary(max_size=6)),
                                    draw(st.lists(st.tuples(st.sampled_from(topics), st.integers(-1, 9)), max_size=8)),
                                    draw(st.integers(-1, 3)))
                    for n in names}


@given(messy_groups())
@PROPERTY
def test_sticky_survives_inconsistent_claims(case):
    counts, group = case
    assert_valid(counts, group, STICKY.assign(counts, group))
