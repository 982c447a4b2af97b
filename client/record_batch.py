"""The record-batch codec: the one place where individual records are encoded or decoded.

A batch is what the producer builds per partition and what the broker stores,
replicates and serves byte for byte. Its header follows Kafka's RecordBatch v2
field for field (big-endian, 61 bytes) and its records are Kafka's v2 records
(varint lengths, attributes, timestamp and offset deltas, key, value, headers): a
batch is byte for byte a Kafka batch, whichever door it came in by. The records are
encoded and decoded by aiokafka's record codec (C, ``aiokafka.record._crecords``),
behind this module only. The broker reads the header (``parse_header``,
``check_batch``) and walks the records once to check their framing
(``record_framing_error``); it never decodes them for serving.

    offset  size  field
    0       8     base_offset            set by the leader on append
    8       4     batch_length           bytes after this field (= total size - 12)
    12      4     partition_leader_epoch set by the leader on append
    16      1     magic                  = 2
    17      4     crc                    CRC-32C of every byte from offset 21 on
    21      2     attributes             0 (no compression, create time)
    23      4     last_offset_delta      = record_count - 1
    27      8     base_timestamp         ms
    35      8     max_timestamp          ms
    43      8     producer_id            -1 when not idempotent
    51      2     producer_epoch
    53      4     base_sequence
    57      4     record_count
    61      ...   records

Each record (Kafka's): length varint, attributes int8, timestamp_delta varlong,
offset_delta varint, key_length varint (-1 = null), key, value_length varint,
value, header count varint, headers. A record's offset is base_offset + its
offset_delta, which is its index in the batch.

As in Kafka, base_offset and partition_leader_epoch lie outside the CRC, so the
leader stamps them without recomputing it. The CRC is Kafka's CRC-32C (Castagnoli,
computed in C by the ``crc32c`` package): a Kafka client's CRC check accepts
raftka's batches, and ``check_batch`` accepts a Kafka client's. Data dirs written before
(zlib's CRC-32) are refused at start-up (broker/log/meta_properties.py, record.crc).
"""

from __future__ import annotations

import mmap
import struct
import zlib
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Sequence

from aiokafka.record._crecords.default_records import (CorruptRecordException, DefaultRecordBatch,
                                                       DefaultRecordBatchBuilder)
import cramjam
from crc32c import crc32c

from client.errors import CorruptMessageError

HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = 12  # base_offset + batch_length: the bytes outside batch_length
CRC_START = 21
MAGIC = 2
COMPRESSION_MASK = 0x07   # attributes: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd
# Kafka's compression.type names -> the codec id in a batch's attributes.
COMPRESSION_TYPES = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
_NO_SIZE_LIMIT = 1 << 62  # the builder's batch_size: the caller sized the batch already
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
    compression_type: int = 0,
) -> bytes:
    """Encode (key, value, timestamp_ms) tuples as one batch (Kafka's RecordBatch v2); its records
    compressed with ``compression_type`` (a COMPRESSION_TYPES id: 0 none ... 4 zstd)."""
    if not records:
        raise ValueError("a batch needs at least one record")
    builder = DefaultRecordBatchBuilder(magic=MAGIC, compression_type=compression_type, is_transactional=0,
                                        producer_id=producer_id, producer_epoch=producer_epoch,
                                        base_sequence=base_sequence, batch_size=_NO_SIZE_LIMIT)
    append = builder.append
    for offset_delta, (key, value, ts) in enumerate(records):
        append(offset_delta, timestamp=ts, key=key, value=value, headers=[])
    buf = builder.build()
    stamp(buf, 0, base_offset, partition_leader_epoch)   # both outside the CRC
    return bytes(buf)


def _assemble(body: bytes, count: int, base_ts: int, max_ts: int, base_offset: int, epoch: int,
              producer_id: int, producer_epoch: int, base_sequence: int) -> bytes:
    # Pack the header with crc=0, then fill the crc over [21:] (attributes .. end).
    header = bytearray(HEADER.pack(base_offset, HEADER_SIZE - LOG_OVERHEAD + len(body), epoch, MAGIC, 0,
                                   0, count - 1, base_ts, max_ts, producer_id, producer_epoch,
                                   base_sequence, count))
    crc = batch_crc(body, batch_crc(memoryview(header)[CRC_START:]))
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


def batch_crc(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Kafka's batch checksum (CRC-32C) of ``data``, continuing from ``crc`` (a running value, so a
    batch can be summed in pieces without joining them)."""
    return crc32c(data, crc)


def crc_ok(buf: bytes | bytearray | memoryview, pos: int, header: BatchHeader) -> bool:
    end = pos + header.size
    return batch_crc(memoryview(buf)[pos + CRC_START:end]) == header.crc


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
    """Decode the records of one batch (whose CRC the caller trusts or checked), decompressing them
    if the batch is compressed."""
    new = _new_record
    try:
        batch = DefaultRecordBatch(bytes(memoryview(buf)[pos:pos + header.size]))
        # The consumer's hot loop: one tuple per record, built by one C call.
        return [new(Record, (topic, partition, r.offset, r.timestamp, r.key, r.value))
                for r in batch if r.offset >= min_offset]
    except _UNREADABLE as e:
        raise CorruptMessageError(f"batch at offset {header.base_offset}: {_reason(e)}") from None


_new_record = tuple.__new__
# What reading a batch's records raises on bytes that are not records: aiokafka's corrupt-record error,
# a header key that is not UTF-8, a compressed body its codec cannot read (each codec raises its own).
_UNREADABLE = (CorruptRecordException, UnicodeDecodeError, ValueError, OSError, EOFError, RuntimeError,
               zlib.error, cramjam.DecompressionError)


def _reason(e: Exception) -> str:
    """aiokafka's message without its "[Error 2] CorruptRecordException: " prefix."""
    text = str(e)
    return text.split(": ", 1)[1] if text.startswith("[Error") and ": " in text else text


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


def record_framing_error(buf: bytes | bytearray | memoryview) -> str | None:
    """Why the records of one produced batch do not frame its body, or None.

    A batch whose header and CRC are fine can still lie about its records (a
    record count the body does not hold, lengths past its end, offsets out of
    order); stored, it would break every consumer of the partition. Kafka's
    LogValidator walks the records of every produced batch; so does this, in C
    (aiokafka's record iterator reads each record's varints, about 0.4 us per
    record); a compressed batch is decompressed first, as Kafka does. A header that
    does not parse is left to ``check_batch``.
    """
    try:
        h = parse_header(buf)
    except CorruptMessageError:
        return None
    if h.size != len(buf) or h.record_count < 1:
        return None
    if h.attributes & COMPRESSION_MASK not in COMPRESSION_TYPES.values():
        return f"unknown compression codec {h.attributes & COMPRESSION_MASK}"
    expected = h.base_offset
    try:
        for r in DefaultRecordBatch(bytes(buf)):
            if r.offset != expected:
                return (f"record {expected - h.base_offset} has offset delta {r.offset - h.base_offset}; "
                        "the deltas must count from 0")
            expected += 1
    except _UNREADABLE as e:
        return _reason(e)
    if expected - h.base_offset != h.record_count:
        return f"the body holds {expected - h.base_offset} records, the header says {h.record_count}"
    return None


# A produced compressed batch whose records decompress to more than this is refused (a decompression
# bomb: 1 MiB of zstd can hold gigabytes of zeros). Kafka has no such bound; raftka's brokers share
# one small machine.
DECOMPRESSED_BATCH_MAX_BYTES = 64 * 1024 * 1024
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_STREAM_CODECS = {1: cramjam.gzip, 3: cramjam.lz4, 4: cramjam.zstd}


def decompressed_over(buf: bytes | bytearray | memoryview, limit: int = DECOMPRESSED_BATCH_MAX_BYTES) -> bool | None:
    """Whether a compressed batch's records decompress to more than ``limit`` bytes (False for an
    uncompressed one; None when the body cannot be read at all: the framing check says why).

    Found without holding more than ``limit``: snappy states its lengths up front; gzip, lz4 and zstd
    decompress into an anonymous mapping of ``limit`` bytes, whose pages become memory only as
    they are written, and a body that does not fit fails there (cramjam: "failed to write whole
    buffer")."""
    try:
        h = parse_header(buf)
    except CorruptMessageError:
        return None
    codec = h.attributes & COMPRESSION_MASK
    body = memoryview(buf)[HEADER_SIZE:h.size]
    if codec == 0:
        return False
    if codec == 2:
        size = _snappy_length(body)
        return None if size is None else size > limit
    if codec not in _STREAM_CODECS:
        return None
    with mmap.mmap(-1, limit) as out:
        try:
            _STREAM_CODECS[codec].decompress_into(body, out)
        except cramjam.DecompressionError as e:
            return True if "failed to write whole buffer" in str(e) else None
    return False


def _snappy_length(body: memoryview) -> int | None:
    """The decompressed length a snappy body states: raw, or xerial-framed blocks (Java's producer)."""
    try:
        if bytes(body[:8]) != _XERIAL_MAGIC:
            return cramjam.snappy.decompress_raw_len(body)
        total, cursor = 0, 16
        while cursor < len(body):
            size, = struct.unpack_from(">i", body, cursor)
            if size < 0:
                return None
            total += cramjam.snappy.decompress_raw_len(body[cursor + 4:cursor + 4 + size])
            cursor += 4 + size
        return total
    except (cramjam.DecompressionError, struct.error, ValueError):
        return None
