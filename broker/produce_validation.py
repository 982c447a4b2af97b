"""Where a produced batch is validated before any leader appends it (Kafka's LogValidator checks).

Everything here depends on the request and the batch alone, so it runs outside the partition's
lock; what depends on the partition (the leader epoch, min.insync.replicas, the producer's
sequence) is checked by Partition.append_as_leader under its lock.
"""

from __future__ import annotations

from client import record_batch
from client.errors import (CorruptMessageError, InvalidRequiredAcksError, KafkaError, RecordTooLargeError,
                           UnsupportedCompressionTypeError)
from client.record_batch import BatchHeader

VALID_ACKS = (-1, 0, 1)
CODEC_ATTRIBUTE = 22   # the low byte of the batch's attributes (offset 21, 2 bytes, big-endian)


def acks_error(acks: int) -> KafkaError | None:
    if acks not in VALID_ACKS:
        return InvalidRequiredAcksError(f"acks must be -1, 0 or 1, not {acks}")
    return None


def validate_batch(batch: bytes, max_message_bytes: int) -> BatchHeader | KafkaError:
    """The batch's header when it may be appended: one whole v2 batch no larger than max.message.bytes,
    a good CRC, records that frame its body (decompressed first: a compressed batch is checked, then
    stored and served as it came). Else the error that refuses it (RECORD_TOO_LARGE,
    CORRUPT_MESSAGE): a batch that lied about its records would break every consumer of the partition."""
    if len(batch) > max_message_bytes:
        return RecordTooLargeError(f"The record batch is {len(batch)} bytes, larger than max.message.bytes "
                                   f"({max_message_bytes}).")
    codec = batch[CODEC_ATTRIBUTE] & record_batch.COMPRESSION_MASK if len(batch) > CODEC_ATTRIBUTE else 0
    if codec not in record_batch.COMPRESSION_TYPES.values():
        return UnsupportedCompressionTypeError(f"compression codec {codec} is none of Kafka's "
                                               "(0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)")
    if record_batch.decompressed_over(batch):
        return RecordTooLargeError(f"The records of the compressed batch are larger than "
                                   f"{record_batch.DECOMPRESSED_BATCH_MAX_BYTES} bytes once decompressed.")
    problem = record_batch.record_framing_error(batch)
    if problem is not None:
        return CorruptMessageError(problem)
    try:
        return record_batch.check_batch(batch)
    except CorruptMessageError as e:
        return e


ZSTD = 4


def zstd_refused(batch: bytes) -> KafkaError | None:
    """KIP-110: a Produce below v7 may not carry zstd (a client that old could not read it back)."""
    if len(batch) > CODEC_ATTRIBUTE and batch[CODEC_ATTRIBUTE] & record_batch.COMPRESSION_MASK == ZSTD:
        return UnsupportedCompressionTypeError("Produce requests with version < 7 are not allowed to use "
                                               "ZStandard compression")
    return None
