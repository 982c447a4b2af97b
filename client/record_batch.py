"""The record-batch codec: the one place where individual records are encoded or decoded.

A batch is what the producer builds per partition and what the broker stores,
replicates and serves byte for byte. Its header follows Kafka's RecordBatch v2
field for field (big-endian, 61 bytes); its body is raftka's own simple record
format. The broker reads only the header (``parse_header``, ``check_batch``),
never the records.

    offset  size  field
    0       8     base_offset            set by the leader on append
    8       4     batch_length           bytes after this field (= total size - 12)
    12      4     partition_leader_epoch set by the leader on append
    16      1     magic                  = 2
    17      4     crc                    zlib.crc32 of every byte from offset 21 on
    21      2     attributes             0 (no compression, create time)
    23      4     last_offset_delta      = record_count - 1
    27      8     base_timestamp         ms
    35      8     max_timestamp          ms
    43      8     producer_id            -1 when not idempotent
    51      2     producer_epoch
    53      4     base_sequence
    57      4     record_count
    61      ...   records

Each record: timestamp_delta int64, key_length int32 (-1 = null),
value_length int32 (-1 = null), key bytes, value bytes. A record's offset is
base_offset + its index in the batch.

As in Kafka, base_offset and partition_leader_epoch lie outside the CRC, so the
leader stamps them without recomputing it. Kafka uses CRC-32C; raftka uses
zlib's CRC-32, which the standard library computes in C.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Sequence

from client.errors import CorruptMessageError

HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = 12  # base_offset + batch_length: the bytes outside batch_length
CRC_START = 21
MAGIC = 2
RECORD_HEADER = struct.Struct(">qii")
NO_PRODUCER_ID = -1
NO_SEQUENCE = -1
_BASE_OFFSET = struct.Struct(">q")
_LEADER_EPOCH = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class BatchHeader:
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Bytes the whole batch takes, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1


class Record(NamedTuple):
    """A decoded record, shaped like kafka-python's ConsumerRecord (the consumer hands these out as is).

    A tuple, so the decoder builds each one with a single C call (``tuple.__new__``)
    instead of running an ``__init__``: that was two thirds of a consumer's time per
    record. ``topic`` and ``partition`` are the caller's (the batch does not carry them).
    """

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


def build_batch(
    records: Sequence[tuple[bytes | None, bytes | None, int]],
    *,
    base_offset: int = 0,
    partition_leader_epoch: int = -1,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = -1,
    base_sequence: int = NO_SEQUENCE,
) -> bytes:
    """Encode (key, value, timestamp_ms) tuples as one batch."""
    if not records:
        raise ValueError("a batch needs at least one record")
    base_ts = min(r[2] for r in records)
    max_ts = max(r[2] for r in records)
    pack = RECORD_HEADER.pack
    parts: list[bytes] = []
    append = parts.append
    for key, value, ts in records:
        append(pack(ts - base_ts, -1 if key is None else len(key), -1 if value is None else len(value)))
        if key:
            append(key)
        if value:
            append(value)
    body = b"".join(parts)
    return _assemble(body, len(records), base_ts, max_ts, base_offset, partition_leader_epoch,
                     producer_id, producer_epoch, base_sequence)


def _assemble(body: bytes, count: int, base_ts: int, max_ts: int, base_offset: int, epoch: int,
              producer_id: int, producer_epoch: int, base_sequence: int) -> bytes:
    # Pack the header with crc=0, then fill the crc over [21:] (attributes .. end).
    header = bytearray(HEADER.pack(base_offset, HEADER_SIZE - LOG_OVERHEAD + len(body), epoch, MAGIC, 0,
                                   0, count - 1, base_ts, max_ts, producer_id, producer_epoch,
                                   base_sequence, count))
    crc = zlib.crc32(body, zlib.crc32(memoryview(header)[CRC_START:]))
    struct.pack_into(">I", header, 17, crc)
    return bytes(header) + body


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Read the header of the batch at ``pos``; CorruptMessageError if it cannot be one."""
    if len(buf) - pos < HEADER_SIZE:
        raise CorruptMessageError(f"batch header truncated: {len(buf) - pos} of {HEADER_SIZE} bytes")
    h = BatchHeader(*HEADER.unpack_from(buf, pos))
    if h.magic != MAGIC:
        raise CorruptMessageError(f"unsupported batch magic {h.magic} (expected {MAGIC})")
    if h.batch_length < HEADER_SIZE - LOG_OVERHEAD:
        raise CorruptMessageError(f"batch length {h.batch_length} is smaller than a header")
    return h


def crc_ok(buf: bytes | bytearray | memoryview, pos: int, header: BatchHeader) -> bool:
    end = pos + header.size
    return zlib.crc32(memoryview(buf)[pos + CRC_START:end]) == header.crc


def check_batch(buf: bytes | bytearray | memoryview) -> BatchHeader:
    """Validate a produced batch: exactly one whole batch, sane counts, good CRC.

    Raises CorruptMessageError. This reads the header and checksums the body in C;
    it never walks the records.
    """
    h = parse_header(buf)
    if h.size != len(buf):
        raise CorruptMessageError(f"batch declares {h.size} bytes but {len(buf)} were sent")
    if h.record_count < 1 or h.last_offset_delta != h.record_count - 1:
        raise CorruptMessageError(
            f"record count {h.record_count} does not match last offset delta {h.last_offset_delta}")
    if not crc_ok(buf, 0, h):
        raise CorruptMessageError("batch CRC mismatch")
    return h


def stamp(buf: bytearray, pos: int, base_offset: int, partition_leader_epoch: int) -> None:
    """Set the leader-assigned fields (outside the CRC) of the batch at ``pos``."""
    _BASE_OFFSET.pack_into(buf, pos, base_offset)
    _LEADER_EPOCH.pack_into(buf, pos + 12, partition_leader_epoch)


def iter_batches(buf: bytes | bytearray | memoryview) -> Iterator[tuple[int, BatchHeader]]:
    """(position, header) of each whole batch in ``buf``; stops at a partial tail."""
    pos, n = 0, len(buf)
    while n - pos >= HEADER_SIZE:
        h = parse_header(buf, pos)
        if pos + h.size > n:
            return
        yield pos, h
        pos += h.size


def decode_records(buf: bytes | bytearray | memoryview, pos: int, header: BatchHeader, min_offset: int = 0,
                   topic: str = "", partition: int = -1) -> list[Record]:
    """Decode the records of one batch (whose CRC the caller trusts or checked)."""
    data = bytes(memoryview(buf)[pos + HEADER_SIZE:pos + header.size])
    try:
        out = _decode_body(data, header, topic, partition)
    except struct.error:
        raise CorruptMessageError(f"batch at offset {header.base_offset}: records overrun the body") from None
    skip = min_offset - header.base_offset
    return out[skip:] if skip > 0 else out


_new_record = tuple.__new__


def _decode_body(data: bytes, header: BatchHeader, topic: str, partition: int) -> list[Record]:
    # The consumer's hot loop: locals only, one unpack and one tuple per record.
    unpack = RECORD_HEADER.unpack_from
    step = RECORD_HEADER.size
    out: list[Record] = []
    append = out.append
    p, base_off, base_ts = 0, header.base_offset, header.base_timestamp
    for offset in range(base_off, base_off + header.record_count):
        ts_delta, klen, vlen = unpack(data, p)
        p += step
        if klen == -1:
            key = None
        else:
            key = data[p:p + klen]
            p += klen
        if vlen == -1:
            value = None
        else:
            value = data[p:p + vlen]
            p += vlen
        if klen < -1 or vlen < -1:
            raise CorruptMessageError(f"batch at offset {header.base_offset}: negative record length")
        append(_new_record(Record, (topic, partition, offset, base_ts + ts_delta, key, value)))
    if p != len(data):
        # Lengths that point past the body (slices stop short) or leave bytes unread.
        raise CorruptMessageError(f"batch at offset {header.base_offset}: records do not fill the body")
    return out


def decode_all(buf: bytes | bytearray | memoryview, min_offset: int = 0, verify_crc: bool = True,
               topic: str = "", partition: int = -1) -> list[Record]:
    """Every record at or above ``min_offset`` in a run of batches (a fetch answer)."""
    out: list[Record] = []
    for pos, h in iter_batches(buf):
        if h.next_offset <= min_offset:
            continue
        if verify_crc and not crc_ok(buf, pos, h):
            raise CorruptMessageError(f"batch at offset {h.base_offset}: CRC mismatch")
        out.extend(decode_records(buf, pos, h, min_offset, topic, partition))
    return out


_RECORD_LENGTHS = struct.Struct(">ii")   # key_length, value_length: after a record's timestamp delta


def record_framing_error(buf: bytes | bytearray | memoryview) -> str | None:
    """Why the records of one produced batch do not frame its body, or None.

    A batch whose header and CRC are fine can still lie about its records (a
    record count the body does not hold, lengths past its end); stored, it would
    break every consumer of the partition. A batch whose records all have the
    lengths of its first (the usual case: one producer, one kind of record) is
    checked in C (``_uniform_framing``); any other walks the record lengths in
    Python (about 0.2 us per record), never building a record. A header that
    does not parse is left to ``check_batch``, which names the problem.
    """
    try:
        h = parse_header(buf)
    except CorruptMessageError:
        return None
    if h.size != len(buf) or h.record_count < 1:
        return None
    if _uniform_framing(buf, h):
        return None
    unpack, step = _RECORD_LENGTHS.unpack_from, RECORD_HEADER.size
    p, end = HEADER_SIZE, h.size
    for i in range(h.record_count):
        if p + step > end:
            return f"record {i} of {h.record_count} starts past the end of the batch body"
        klen, vlen = unpack(buf, p + 8)
        if klen < -1 or vlen < -1:
            return f"record {i} has a negative length (key {klen}, value {vlen})"
        p += step + max(klen, 0) + max(vlen, 0)
    if p != end:
        return (f"the {h.record_count} records declared take {p - HEADER_SIZE} bytes but the body has "
                f"{end - HEADER_SIZE}")
    return None


def _uniform_framing(buf: bytes | bytearray | memoryview, h: BatchHeader) -> bool:
    """True if every record has the first record's key and value lengths and together they fill
    the body exactly: then the framing is right. Byte slices with a step compare the 8 length
    bytes of all records at once, in C, with no Python work per record."""
    first = HEADER_SIZE + 8   # the first record's key_length
    if h.size - HEADER_SIZE < RECORD_HEADER.size:
        return False
    klen, vlen = _RECORD_LENGTHS.unpack_from(buf, first)
    if klen < -1 or vlen < -1:
        return False
    stride = RECORD_HEADER.size + max(klen, 0) + max(vlen, 0)
    if stride * h.record_count != h.size - HEADER_SIZE:
        return False
    lengths = bytes(buf[first:first + 8])
    # Slicing the batch itself (no copy of the body): each slice is one length byte per record.
    return all(bytes(buf[first + i:h.size:stride]) == lengths[i:i + 1] * h.record_count for i in range(8))
