"""The record-batch codec: Kafka RecordBatch v2 header, raftka record body."""

import struct

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from client.errors import CorruptMessageError
from client.record_batch import (CRC_START, HEADER_SIZE, LOG_OVERHEAD, MAGIC, Record, batch_crc,
                                 build_batch, check_batch, crc_ok, decode_all, iter_batches, parse_header,
                                 record_framing_error, stamp)

COUNT_AT = 57          # record_count, int32
LAST_DELTA_AT = 23     # last_offset_delta, int32
MAGIC_AT = 16
CRC_AT = 17


def _recrc(buf: bytearray) -> bytearray:
    struct.pack_into(">I", buf, CRC_AT, crc32c(bytes(buf[CRC_START:])))
    return buf


def test_header_is_61_bytes_and_batch_length_excludes_offset_and_length_fields():
    batch = build_batch([(b"k", b"v", 1000)])
    h = parse_header(batch)
    assert HEADER_SIZE == 61
    assert h.size == len(batch)
    assert h.batch_length == len(batch) - LOG_OVERHEAD
    assert h.magic == MAGIC
    assert h.record_count == 1 and h.last_offset_delta == 0


def test_round_trip_keys_values_and_timestamps():
    records = [(b"k1", b"v1", 1000), (None, b"v2", 1005), (b"k3", None, 999), (None, None, 2000)]
    batch = build_batch(records, base_offset=40)
    out = decode_all(batch, topic="t", partition=3)
    assert out == [Record("t", 3, 40, 1000, b"k1", b"v1"), Record("t", 3, 41, 1005, None, b"v2"),
                   Record("t", 3, 42, 999, b"k3", None), Record("t", 3, 43, 2000, None, None)]
    assert [(r.topic, r.partition, r.offset, r.timestamp) for r in out] == [("t", 3, 40 + i, ts) for i, ts in
                                                                            enumerate((1000, 1005, 999, 2000))]


def test_empty_bytes_and_none_stay_distinct_for_key_and_value():
    batch = build_batch([(b"", None, 1), (None, b"", 2), (b"", b"", 3), (None, None, 4)])
    got = [(r.key, r.value) for r in decode_all(batch)]
    assert got == [(b"", None), (None, b""), (b"", b""), (None, None)]
    # identity of the kind, not just falsiness
    assert got[0][0] is not None and got[1][0] is None


def test_header_timestamps_are_the_first_and_the_max_of_the_records():
    """As Kafka's MemoryRecordsBuilder: the base is the first record's timestamp (deltas may be
    negative), the max is the largest (retention reads it)."""
    batch = build_batch([(None, b"a", 50), (None, b"b", 10), (None, b"c", 70), (None, b"d", 30)])
    h = parse_header(batch)
    assert (h.base_timestamp, h.max_timestamp) == (50, 70)
    assert [r.timestamp for r in decode_all(batch)] == [50, 10, 70, 30]


def test_build_batch_refuses_an_empty_record_list():
    with pytest.raises(ValueError):
        build_batch([])


def test_timestamps_more_than_int32_ms_apart_round_trip():
    # Kafka encodes the timestamp delta as a varlong: any two timestamps fit in one batch.
    # A producer may be given explicit timestamps (send(timestamp_ms=...)) 25+ days apart.
    records = [(None, b"old", 0), (None, b"new", 1_700_000_000_000)]
    out = decode_all(build_batch(records))
    assert [r.timestamp for r in out] == [0, 1_700_000_000_000]


# ---- check_batch ------------------------------------------------------------------


def test_check_batch_accepts_a_good_batch_and_returns_its_header():
    batch = build_batch([(b"k", b"v", 7), (b"k2", b"v2", 8)], base_offset=0)
    h = check_batch(batch)
    assert h.record_count == 2
    assert h.size == len(batch)


@pytest.mark.parametrize("cut", [1, 10, HEADER_SIZE - 1, HEADER_SIZE + 1])
def test_check_batch_rejects_a_truncated_batch(cut):
    batch = build_batch([(b"key", b"value" * 10, 7)])
    with pytest.raises(CorruptMessageError):
        check_batch(batch[:len(batch) - cut])


def test_check_batch_rejects_a_header_only_prefix():
    batch = build_batch([(b"key", b"value", 7)])
    with pytest.raises(CorruptMessageError):
        check_batch(batch[:HEADER_SIZE])


@pytest.mark.parametrize("where", ["record", "attributes", "timestamp", "producer_id"])
def test_check_batch_rejects_one_flipped_byte_under_the_crc(where):
    batch = bytearray(build_batch([(b"key", b"value", 7), (None, b"other", 9)]))
    pos = {"record": HEADER_SIZE + 5, "attributes": 22, "timestamp": 30, "producer_id": 45}[where]
    batch[pos] ^= 0x01
    with pytest.raises(CorruptMessageError):
        check_batch(bytes(batch))


def test_check_batch_rejects_flipped_crc_field():
    batch = bytearray(build_batch([(b"key", b"value", 7)]))
    batch[CRC_AT] ^= 0xFF
    with pytest.raises(CorruptMessageError):
        check_batch(bytes(batch))


def test_check_batch_rejects_trailing_bytes():
    batch = build_batch([(b"key", b"value", 7)])
    with pytest.raises(CorruptMessageError):
        check_batch(batch + b"\x00")


def test_check_batch_rejects_two_concatenated_batches():
    one = build_batch([(b"a", b"1", 1)])
    with pytest.raises(CorruptMessageError):
        check_batch(one + one)


def test_check_batch_rejects_a_record_count_that_disagrees_with_last_offset_delta():
    batch = bytearray(build_batch([(b"a", b"1", 1), (b"b", b"2", 2)]))
    struct.pack_into(">i", batch, COUNT_AT, 3)
    _recrc(batch)  # only the count is wrong, the CRC is right
    assert crc32c(bytes(batch[CRC_START:])) == parse_header(batch).crc
    with pytest.raises(CorruptMessageError):
        check_batch(bytes(batch))


@pytest.mark.parametrize("count", [0, -1])
def test_check_batch_rejects_a_non_positive_record_count(count):
    batch = bytearray(build_batch([(b"a", b"1", 1)]))
    struct.pack_into(">i", batch, COUNT_AT, count)
    struct.pack_into(">i", batch, LAST_DELTA_AT, count - 1)
    _recrc(batch)
    with pytest.raises(CorruptMessageError):
        check_batch(bytes(batch))


@pytest.mark.parametrize("magic", [0, 1, 3, 0x7F])
def test_check_batch_rejects_bad_magic(magic):
    batch = bytearray(build_batch([(b"a", b"1", 1)]))
    batch[MAGIC_AT] = magic
    with pytest.raises(CorruptMessageError):
        check_batch(bytes(batch))


def test_parse_header_rejects_batch_length_smaller_than_a_header():
    batch = bytearray(build_batch([(b"a", b"1", 1)]))
    struct.pack_into(">i", batch, 8, HEADER_SIZE - LOG_OVERHEAD - 1)
    with pytest.raises(CorruptMessageError):
        parse_header(batch)


# ---- the CRC is Kafka's: CRC-32C, checked against kafka-python ---------------------


def test_batch_crc_is_crc32c_and_runs_on_in_pieces():
    assert batch_crc(b"123456789") == 0xE3069283   # CRC-32C's check value (zlib's CRC-32 gives 0xCBF43926)
    assert batch_crc(b"56789", batch_crc(memoryview(b"1234"))) == 0xE3069283


def _kafka_python_batch(producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1) -> bytes:
    """A batch as a real Kafka client builds it (varint records; its own CRC-32C)."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=producer_id, producer_epoch=producer_epoch,
                                        base_sequence=base_sequence, batch_size=1 << 20)
    for i in range(3):
        builder.append(i, timestamp=1_000 + i, key=None if i == 1 else b"k%d" % i, value=b"v" * i, headers=[])
    return bytes(builder.build())


@pytest.mark.parametrize("producer", [(-1, -1, -1), (7, 2, 40)], ids=["plain", "idempotent"])
def test_a_kafka_python_batch_passes_check_batch(producer):
    batch = _kafka_python_batch(*producer)
    h = check_batch(batch)
    assert crc_ok(batch, 0, h)
    assert (h.record_count, h.producer_id, h.base_sequence) == (3, producer[0], producer[2])
    flipped = bytearray(batch)
    flipped[-1] ^= 0x01
    with pytest.raises(CorruptMessageError, match="CRC mismatch"):
        check_batch(bytes(flipped))


@pytest.mark.parametrize("producer", [{}, {"producer_id": 7, "producer_epoch": 2, "base_sequence": 40}],
                         ids=["plain", "idempotent"])
def test_a_raftka_batch_passes_kafka_pythons_crc_check(producer):
    batch = bytearray(build_batch([(b"k", b"v", 5), (None, b"w" * 300, 9), (b"", None, 7)], **producer))
    assert DefaultRecordBatch(bytes(batch)).validate_crc()
    stamp(batch, 0, 1234, 7)   # the leader's fields lie outside the CRC, in Kafka too
    kafka = DefaultRecordBatch(bytes(batch))
    assert (kafka.base_offset, kafka.leader_epoch, kafka.crc) == (1234, 7, parse_header(batch).crc)
    assert kafka.validate_crc()
    batch[30] ^= 0x01   # max_timestamp: under the CRC
    assert not DefaultRecordBatch(bytes(batch)).validate_crc()


# ---- stamp -------------------------------------------------------------------------


def test_stamp_sets_base_offset_and_epoch_and_keeps_the_crc_valid():
    batch = bytearray(build_batch([(b"a", b"1", 1), (b"b", b"2", 2)]))
    crc_before = parse_header(batch).crc
    stamp(batch, 0, 1234, 7)
    h = check_batch(bytes(batch))
    assert h.base_offset == 1234
    assert h.partition_leader_epoch == 7
    assert h.crc == crc_before
    assert [r.offset for r in decode_all(batch)] == [1234, 1235]


def test_stamp_at_a_position_changes_only_that_batch():
    first = build_batch([(None, b"x", 1)], base_offset=0)
    second = build_batch([(None, b"y", 1)], base_offset=0)
    buf = bytearray(first + second)
    stamp(buf, len(first), 1, 3)
    (p0, h0), (p1, h1) = list(iter_batches(buf))
    assert (h0.base_offset, h0.partition_leader_epoch) == (0, -1)
    assert (p1, h1.base_offset, h1.partition_leader_epoch) == (len(first), 1, 3)
    assert [r.offset for r in decode_all(buf)] == [0, 1]


# ---- decode_all / iter_batches -------------------------------------------------------


def _run_of_batches():
    a = build_batch([(None, b"a0", 1), (None, b"a1", 1), (None, b"a2", 1)], base_offset=0)
    b = build_batch([(None, b"b3", 2), (None, b"b4", 2)], base_offset=3)
    c = build_batch([(None, b"c5", 3)], base_offset=5)
    return a + b + c


def test_decode_all_returns_every_record_of_a_run_of_batches():
    assert [(r.offset, r.value) for r in decode_all(_run_of_batches())] == [
        (0, b"a0"), (1, b"a1"), (2, b"a2"), (3, b"b3"), (4, b"b4"), (5, b"c5")]


@pytest.mark.parametrize("min_offset,expected", [(0, [0, 1, 2, 3, 4, 5]), (1, [1, 2, 3, 4, 5]),
                                                 (3, [3, 4, 5]), (4, [4, 5]), (5, [5]), (6, [])])
def test_decode_all_with_min_offset_skips_earlier_records(min_offset, expected):
    assert [r.offset for r in decode_all(_run_of_batches(), min_offset=min_offset)] == expected


def test_decode_all_with_min_offset_does_not_check_skipped_batches():
    buf = bytearray(_run_of_batches())
    buf[HEADER_SIZE + 2] ^= 0xFF  # corrupt a record of the first batch (offsets 0..2)
    assert [r.offset for r in decode_all(buf, min_offset=3)] == [3, 4, 5]
    with pytest.raises(CorruptMessageError):
        decode_all(buf, min_offset=0)


def test_decode_all_raises_on_a_crc_mismatch_and_not_when_told_to_skip_the_check():
    buf = bytearray(build_batch([(None, b"value", 1)]))
    buf[-2] ^= 0x20  # b"value" -> b"valuE" (the last byte is the record's header count)
    with pytest.raises(CorruptMessageError):
        decode_all(buf)
    assert decode_all(buf, verify_crc=False)[0].value == b"valuE"


@pytest.mark.parametrize("tail", [1, 12, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 3])
def test_iter_batches_stops_at_a_partial_tail(tail):
    whole = _run_of_batches()
    extra = build_batch([(b"k", b"v" * 40, 9)], base_offset=6)
    buf = whole + extra[:tail]
    got = list(iter_batches(buf))
    assert [h.base_offset for _, h in got] == [0, 3, 5]
    assert [r.offset for r in decode_all(buf)] == [0, 1, 2, 3, 4, 5]


def test_iter_batches_yields_positions_of_each_batch():
    buf = _run_of_batches()
    positions = [p for p, _ in iter_batches(buf)]
    sizes = [h.size for _, h in iter_batches(buf)]
    assert positions == [0, sizes[0], sizes[0] + sizes[1]]
    assert sum(sizes) == len(buf)


def test_iter_batches_of_empty_buffer_yields_nothing():
    assert list(iter_batches(b"")) == []
    assert decode_all(b"") == []


def test_decode_raises_corrupt_message_when_record_count_exceeds_the_records():
    # A consistent header (count 3, last delta 2, good CRC) over a body holding two records:
    # check_batch cannot see it (it never walks records); decoding must report corruption.
    batch = bytearray(build_batch([(b"a", b"1", 1), (b"b", b"2", 2)]))
    struct.pack_into(">i", batch, COUNT_AT, 3)
    struct.pack_into(">i", batch, LAST_DELTA_AT, 2)
    _recrc(batch)
    with pytest.raises(CorruptMessageError):
        decode_all(bytes(batch))


def test_decode_raises_corrupt_message_when_records_do_not_fill_the_body():
    batch = bytearray(build_batch([(b"a", b"1", 1), (b"b", b"2", 2)]))
    struct.pack_into(">i", batch, COUNT_AT, 1)
    struct.pack_into(">i", batch, LAST_DELTA_AT, 0)
    _recrc(batch)
    with pytest.raises(CorruptMessageError):
        decode_all(bytes(batch))


# ---- property ----------------------------------------------------------------------

optional_bytes = st.one_of(st.none(), st.binary(max_size=64))


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(st.tuples(optional_bytes, optional_bytes, st.integers(0, 2**31 - 1)),
                     min_size=1, max_size=20),
    ts_base=st.integers(0, 2**42),   # -1 is Kafka's NO_TIMESTAMP, which a v2 batch does not carry per record
    base_offset=st.integers(0, 2**62),
    epoch=st.integers(-1, 2**31 - 1),
)
def test_property_build_then_decode_round_trips(records, ts_base, base_offset, epoch):
    # Timestamps spread over less than 2**31 ms, so that the property is about the rest of the
    # codec (the wide-spread case has its own test above).
    recs = [(k, v, ts_base + t) for k, v, t in records]
    batch = build_batch(recs, base_offset=base_offset, partition_leader_epoch=epoch)
    h = check_batch(batch)
    assert h.record_count == len(recs)
    assert (h.base_offset, h.partition_leader_epoch) == (base_offset, epoch)
    assert h.base_timestamp == recs[0][2]
    assert h.max_timestamp == max(r[2] for r in recs)
    assert h.next_offset == base_offset + len(recs)
    assert decode_all(batch) == [Record("", -1, base_offset + i, t, k, v) for i, (k, v, t) in enumerate(recs)]


def _batch_with_body(body: bytes, count: int) -> bytes:
    # A valid header and CRC around a hand-made body: only the record lengths are wrong.
    from client.record_batch import _assemble
    return _assemble(body, count, 0, 0, 0, -1, -1, -1, -1)


def _varint(n: int) -> bytes:
    """Kafka's zigzag varint, written here independently of the codec under test."""
    v, out = (n << 1) ^ (n >> 63), b""
    while v >= 0x80:
        out, v = out + bytes([(v & 0x7F) | 0x80]), v >> 7
    return out + bytes([v])


def _record(offset_delta: int, key_length: int, value: bytes, length_fix: int = 0, tail: bytes = b"") -> bytes:
    inner = (b"\x00" + _varint(0) + _varint(offset_delta) + _varint(key_length) + _varint(len(value)) + value
             + _varint(0) + tail)
    return _varint(len(inner) + length_fix) + inner


@pytest.mark.parametrize("body,count,reason", [
    (_record(0, -1, b"v", length_fix=40), 1, "Can't read|Invalid record size"),
    (_record(0, -1, b"v") + b"extra", 1, "unconsumed bytes"),
    (_record(0, -1, b"v"), 2, "Can't read"),
])
def test_record_lengths_that_disagree_with_the_body_are_corrupt_even_with_a_good_crc(body, count, reason):
    batch = _batch_with_body(body, count)
    check_batch(batch)  # the broker's header-and-CRC check passes: the records are the decoder's to judge
    with pytest.raises(CorruptMessageError, match=reason):
        decode_all(batch)
    assert record_framing_error(batch) is not None


def test_offset_deltas_that_do_not_count_from_zero_are_refused():
    batch = _batch_with_body(_record(0, -1, b"a") + _record(5, -1, b"b"), 2)
    assert "offset delta 5" in record_framing_error(batch)


def _kafka_python_framing_ok(batch: bytes) -> bool:
    """The reference: kafka-python's own (pure Python) record reader, and Kafka's rule that the
    offset deltas count 0, 1, 2... up to the header's record count."""
    from kafka.record.default_records import DefaultRecordBatch as Reference
    h = parse_header(batch)
    try:
        offsets = [r.offset for r in Reference(bytes(batch))]
    except Exception:   # noqa: BLE001 - any refusal of the reference reader
        return False
    return offsets == list(range(h.base_offset, h.base_offset + h.record_count))


@settings(max_examples=300)
@given(sizes=st.lists(st.tuples(st.integers(-1, 6), st.integers(-1, 200)), min_size=1, max_size=8),
       poke=st.integers(0, 10_000), value=st.integers(0, 255))
def test_record_framing_error_agrees_with_kafka_pythons_reader(sizes, poke, value):
    """On good batches and on ones whose record count or one body byte was tampered with, the
    broker's framing check judges as kafka-python's reader does."""
    records = [(None if k < 0 else b"k" * k, None if v < 0 else b"v" * v, 1) for k, v in sizes]
    batch = bytearray(build_batch(records))
    assert record_framing_error(bytes(batch)) is None and _kafka_python_framing_ok(bytes(batch))
    if poke % 3 == 0:   # lie about the record count
        struct.pack_into(">i", batch, 57, max(1, len(records) + value % 5 - 2))
    else:               # change one byte of the records
        batch[HEADER_SIZE + poke % (len(batch) - HEADER_SIZE)] = value
    assert (record_framing_error(bytes(batch)) is None) == _kafka_python_framing_ok(bytes(batch))


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_a_compressed_batch_round_trips_and_its_records_are_checked(codec):
    from client.record_batch import COMPRESSION_MASK, COMPRESSION_TYPES
    records = [(b"k%d" % i, b"v" * 50 + b"%d" % i, 1000 + i) for i in range(200)]
    batch = build_batch(records, base_offset=7, compression_type=COMPRESSION_TYPES[codec])
    h = check_batch(batch)
    assert h.attributes & COMPRESSION_MASK == COMPRESSION_TYPES[codec]
    assert len(batch) < len(build_batch(records)) / 2, "the records were not compressed"
    assert record_framing_error(batch) is None
    assert decode_all(batch) == [Record("", -1, 7 + i, t, k, v) for i, (k, v, t) in enumerate(records)]
    bad = bytearray(batch)
    bad[57:61] = (201).to_bytes(4, "big")   # one record more than the compressed body holds
    assert record_framing_error(bytes(bad)) is not None


def test_a_gzip_batch_is_read_by_kafka_pythons_own_reader():
    from kafka.record.default_records import DefaultRecordBatch as Reference
    batch = build_batch([(None, b"hello", 1), (b"k", b"world", 2)], compression_type=1)
    assert [(r.key, r.value) for r in Reference(batch)] == [(None, b"hello"), (b"k", b"world")]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_a_compressed_batch_is_measured_against_a_decompressed_limit_without_holding_more(codec):
    from client.record_batch import COMPRESSION_TYPES, decompressed_over
    small = build_batch([(None, b"x" * 1000, 1)], compression_type=COMPRESSION_TYPES[codec])
    big = build_batch([(None, b"\0" * (3 << 20), 1)], compression_type=COMPRESSION_TYPES[codec])
    assert decompressed_over(small, 1 << 20) is False
    assert decompressed_over(big, 1 << 20) is True
    assert decompressed_over(big, 8 << 20) is False
    mangled = small[:70] + b"\xff" * 20 + small[90:]
    assert decompressed_over(mangled, 1 << 20) is None        # unreadable: the framing check says why


def test_raw_and_xerial_snappy_state_their_length():
    import cramjam
    from aiokafka.codec import snappy_encode
    from client.record_batch import _snappy_length
    data = bytes(range(256)) * 1000
    assert _snappy_length(memoryview(bytes(cramjam.snappy.compress_raw(data)))) == len(data)
    assert _snappy_length(memoryview(snappy_encode(data, xerial_compatible=True, xerial_blocksize=4096))) == len(data)
