"""The producer's record accumulator: batching, linger, in-flight bound and retry order per partition, memory bound.

Time is passed explicitly to drain(now); batches are stamped with time.monotonic(),
so "now" values are taken from the same clock around the appends.
"""

import time

import pytest

from client.accumulator import BATCH_HEADER, RecordAccumulator, record_size
from client.errors import KafkaTimeoutError

LINGER_MS = 60_000  # long enough that a test never reaches it by accident


def _acc(batch_size=1000, linger_ms=LINGER_MS, buffer_memory=1_000_000, max_block_ms=0, max_in_flight=5):
    """``batch_size`` here is the room for records: the batch header comes on top."""
    return RecordAccumulator(batch_size + BATCH_HEADER, linger_ms, buffer_memory, max_block_ms, max_in_flight)


def _retry(acc, batch, at=None):
    """What the sender does with a batch that must be retried."""
    batch.attempts += 1
    batch.retry_at = time.monotonic() if at is None else at
    acc.requeue(batch)


def _number(*batches, producer_id=7, first=0):
    """What the sender does when it builds idempotent batches: one sequence per record, in order."""
    for b in batches:
        b.producer_id, b.base_sequence = producer_id, first
        first += len(b.records)


def _value(total_size: int) -> bytes:
    """A value whose record (no key) takes exactly ``total_size`` bytes."""
    value = next(b"x" * n for n in range(total_size, -1, -1) if record_size(None, b"x" * n) <= total_size)
    assert record_size(None, value) == total_size, f"no record takes exactly {total_size} bytes"
    return value


def test_records_to_the_same_partition_share_a_batch():
    acc = _acc()
    acc.append("t", 0, b"k", b"v1", 1)
    acc.append("t", 0, None, b"v2", 2)
    acc.append("t", 1, None, b"v3", 3)
    acc.begin_flush()
    ready, _, _ = acc.drain(time.monotonic())
    by_tp = {(b.topic, b.partition): b for b in ready}
    assert len(ready) == 2
    assert by_tp[("t", 0)].records == [(b"k", b"v1", 1), (None, b"v2", 2)]
    assert by_tp[("t", 1)].records == [(None, b"v3", 3)]
    assert by_tp[("t", 0)].size == record_size(b"k", b"v1") + record_size(None, b"v2")


def test_a_record_that_does_not_fit_starts_a_new_batch():
    acc = _acc(batch_size=100)
    for _ in range(3):
        acc.append("t", 0, None, _value(30), 0)  # 90 bytes: still one batch
    acc.append("t", 0, None, _value(30), 0)      # 120 > 100: a second batch
    ready, _, _ = acc.drain(time.monotonic())
    assert len(ready) == 1  # the first is due at once (full), the second is not
    assert len(ready[0].records) == 3
    assert ready[0].full


def test_a_batch_reaching_batch_size_is_reported_full_and_due_at_once():
    acc = _acc(batch_size=100)
    _, filled = acc.append("t", 0, None, _value(50), 0)
    assert not filled
    _, filled = acc.append("t", 0, None, _value(50), 0)
    assert filled
    ready, _, _ = acc.drain(time.monotonic())
    assert len(ready) == 1 and len(ready[0].records) == 2


def test_a_record_larger_than_batch_size_gets_its_own_batch():
    acc = _acc(batch_size=100)
    acc.append("t", 0, None, _value(20), 0)
    _, filled = acc.append("t", 0, None, _value(500), 0)
    assert filled
    ready, _, _ = acc.drain(time.monotonic())
    # The small one (due because another is queued), then the big one on its own, in that order.
    assert [b.size for b in ready] == [20, 500]


def test_drain_waits_for_linger_then_returns_the_batch():
    acc = _acc()
    acc.append("t", 0, None, b"v", 0)
    t1 = time.monotonic()
    ready, next_ready, _ = acc.drain(t1)
    assert ready == []
    assert next_ready <= t1 + 1.0  # drain never asks to sleep for more than a second
    assert acc.drain(t1 + LINGER_MS / 1000 - 1)[0] == []
    ready, _, _ = acc.drain(t1 + LINGER_MS / 1000)
    assert len(ready) == 1


def test_drain_reports_when_the_linger_ends():
    acc = _acc(linger_ms=100)
    t0 = time.monotonic()
    acc.append("t", 0, None, b"v", 0)
    t1 = time.monotonic()
    ready, next_ready, _ = acc.drain(t0)
    assert ready == []
    assert t0 + 0.1 <= next_ready <= t1 + 0.1


def test_zero_linger_makes_a_batch_due_at_once():
    acc = _acc(linger_ms=0)
    acc.append("t", 0, None, b"v", 0)
    ready, _, _ = acc.drain(time.monotonic())
    assert len(ready) == 1


def test_flushing_makes_batches_due_before_linger_and_end_flush_stops_that():
    acc = _acc()
    acc.append("t", 0, None, b"v", 0)
    acc.begin_flush()
    ready, _, _ = acc.drain(time.monotonic())
    assert len(ready) == 1
    acc.done(ready[0])
    acc.end_flush()
    acc.append("t", 0, None, b"w", 0)
    assert acc.drain(time.monotonic())[0] == []


def test_up_to_max_in_flight_batches_per_partition_until_done():
    acc = _acc(batch_size=100, max_in_flight=2)
    for i in range(4):  # four full batches of one partition
        acc.append("t", 0, None, _value(100), i)
    acc.append("t", 1, None, _value(100), 0)
    now = time.monotonic()
    first, _, _ = acc.drain(now)
    assert [(b.partition, b.records[0][2]) for b in first] == [(0, 0), (0, 1), (1, 0)]  # in partition order
    assert acc.drain(now)[0] == []  # partition 0 has batches queued, but two are in flight
    acc.done(first[0])
    second, _, _ = acc.drain(now)
    assert [(b.partition, b.records[0][2]) for b in second] == [(0, 2)]


def test_no_batch_goes_to_a_new_leader_while_batches_of_its_partition_are_in_flight_to_the_old_one():
    """A later batch reaching the new leader before earlier ones (outcome unknown, in flight to the old
    leader) resolve would be stored as the producer's first there; the earlier ones would then get
    OUT_OF_ORDER_SEQUENCE_NUMBER for good (found by the chaos suite's topic-recreate round)."""
    acc = _acc(batch_size=100)
    for i in range(3):
        acc.append("t", 0, None, _value(100), i)
    acc.append("t", 1, None, _value(100), 0)
    leaders = {("t", 0): "old", ("t", 1): "b"}
    now = time.monotonic()
    first, _, _ = acc.drain(now, leaders.get)
    assert [(b.partition, b.records[0][2]) for b in first] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    for b in first:
        b.sent_to = leaders[(b.topic, b.partition)]
    acc.append("t", 0, None, _value(100), 3)
    acc.append("t", 1, None, _value(100), 1)
    leaders[("t", 0)] = "new"                       # the leader of t-0 moved; t-1's did not
    held, _, _ = acc.drain(time.monotonic() + 1, leaders.get)
    assert [(b.partition, b.records[0][2]) for b in held] == [(1, 1)]
    for b in first[:3]:                              # the old leader's stream broke: all three come back
        _retry(acc, b)
    retried, _, _ = acc.drain(time.monotonic() + 1, leaders.get)
    assert [(b.partition, b.records[0][2]) for b in retried] == [(0, 0)]   # in order, the first alone


def test_requeue_puts_the_batch_back_first_and_frees_the_partition():
    acc = _acc(batch_size=100, max_in_flight=1)
    acc.append("t", 0, None, _value(100), 0)
    acc.append("t", 0, None, _value(100), 1)
    (sent,), _, _ = acc.drain(time.monotonic())
    assert sent.records[0][2] == 0
    _retry(acc, sent)
    (again,), _, _ = acc.drain(time.monotonic())
    assert again is sent          # the retried batch goes before the younger one
    acc.done(again)
    (younger,), _, _ = acc.drain(time.monotonic())
    assert younger.records[0][2] == 1


def test_retries_go_back_in_drain_order_and_alone_once_nothing_is_in_flight():
    acc = _acc(batch_size=100)
    for i in range(4):
        acc.append("t", 0, None, _value(100), i)
    b0, b1, b2, b3 = acc.drain(time.monotonic())[0]
    _number(b0, b1, b2, b3)
    acc.append("t", 0, None, _value(100), 4)   # a batch never sent yet
    acc.append("t", 0, None, _value(100), 5)
    # A stream broke: the answers come back in order, each batch is requeued as it is handled.
    _retry(acc, b0)
    assert acc.drain(time.monotonic())[0] == []   # b1..b3 still in flight: the retry waits
    assert acc.has_unresolved_earlier(b1) and not acc.has_unresolved_earlier(b0)
    _retry(acc, b2)     # handled out of order on purpose: requeue still sorts by drain order
    _retry(acc, b1)
    acc.done(b3)        # b3's answer was a success (say, a duplicate of a stored batch)
    order = []
    for _ in range(2):
        (batch,), _, _ = acc.drain(time.monotonic())   # one retry at a time
        assert acc.drain(time.monotonic())[0] == []
        order.append(batch.records[0][2])
        acc.done(batch)
    (last_retry,), _, _ = acc.drain(time.monotonic())
    assert order + [last_retry.records[0][2]] == [0, 1, 2]
    # Behind the last retry, new batches are pipelined again (if it fails they overtook it, and
    # the sender retries them after it: OUT_OF_ORDER_SEQUENCE_NUMBER with an earlier retry queued).
    rest, _, _ = acc.drain(time.monotonic())
    assert [b.records[0][2] for b in rest] == [4, 5]


def test_a_requeued_batch_waits_for_its_retry_time_even_while_flushing():
    acc = _acc(batch_size=100)
    acc.append("t", 0, None, _value(100), 0)
    (sent,), _, _ = acc.drain(time.monotonic())
    sent.attempts = 1
    sent.retry_at = time.monotonic() + 30
    acc.requeue(sent)
    acc.begin_flush()
    assert acc.drain(sent.retry_at - 1)[0] == []
    assert acc.drain(sent.retry_at)[0] == [sent]


def test_appends_after_a_requeue_do_not_join_the_retried_batch():
    acc = _acc(batch_size=1000)
    acc.append("t", 0, None, b"a", 0)
    acc.begin_flush()
    (sent,), _, _ = acc.drain(time.monotonic())
    sent.attempts = 1
    sent.retry_at = time.monotonic()
    acc.requeue(sent)
    acc.append("t", 0, None, b"b", 1)
    assert [r[1] for r in sent.records] == [b"a"]


def test_full_buffer_with_zero_max_block_raises_timeout():
    acc = _acc(batch_size=1000, buffer_memory=100, max_block_ms=0)
    acc.append("t", 0, None, _value(60), 0)
    with pytest.raises(KafkaTimeoutError):
        acc.append("t", 1, None, _value(60), 0)
    acc.append("t", 1, None, _value(40), 0)  # exactly fills the buffer: accepted


def test_done_frees_buffer_space():
    acc = _acc(batch_size=1000, buffer_memory=100, max_block_ms=0)
    acc.append("t", 0, None, _value(60), 0)
    acc.begin_flush()
    (batch,), _, _ = acc.drain(time.monotonic())
    with pytest.raises(KafkaTimeoutError):
        acc.append("t", 0, None, _value(60), 0)
    acc.done(batch)
    acc.append("t", 0, None, _value(60), 0)  # no longer raises


def test_requeue_does_not_free_buffer_space():
    acc = _acc(batch_size=1000, buffer_memory=100, max_block_ms=0)
    acc.append("t", 0, None, _value(60), 0)
    acc.begin_flush()
    (batch,), _, _ = acc.drain(time.monotonic())
    acc.requeue(batch)
    with pytest.raises(KafkaTimeoutError):
        acc.append("t", 0, None, _value(60), 0)


def test_a_record_larger_than_the_buffer_is_accepted_when_the_buffer_is_empty():
    acc = _acc(batch_size=1000, buffer_memory=100, max_block_ms=0)
    acc.append("t", 0, None, _value(500), 0)
    with pytest.raises(KafkaTimeoutError):
        acc.append("t", 0, None, b"", 0)


def test_has_incomplete_until_every_batch_is_done():
    acc = _acc(batch_size=100)
    assert not acc.has_incomplete()
    acc.append("t", 0, None, _value(100), 0)
    acc.append("t", 1, None, _value(100), 0)
    ready, _, _ = acc.drain(time.monotonic())
    acc.done(ready[0])
    assert acc.has_incomplete()
    acc.done(ready[1])
    assert not acc.has_incomplete()


def test_version_changes_when_a_batch_is_done():
    acc = _acc()
    acc.append("t", 0, None, b"v", 0)
    acc.begin_flush()
    (batch,), _, version = acc.drain(time.monotonic())
    acc.done(batch)
    assert acc.drain(time.monotonic())[2] != version


def test_complete_resolves_futures_with_consecutive_offsets():
    acc = _acc()
    f1, _ = acc.append("t", 3, None, b"a", 11)
    f2, _ = acc.append("t", 3, None, b"b", 12)
    acc.begin_flush()
    (batch,), _, _ = acc.drain(time.monotonic())
    batch.complete(100)
    assert [(m.topic, m.partition, m.offset, m.timestamp) for m in (f1.result(0), f2.result(0))] == [
        ("t", 3, 100, 11), ("t", 3, 101, 12)]


def test_fail_sets_the_exception_on_every_future():
    acc = _acc()
    f1, _ = acc.append("t", 0, None, b"a", 0)
    f2, _ = acc.append("t", 0, None, b"b", 0)
    acc.begin_flush()
    (batch,), _, _ = acc.drain(time.monotonic())
    err = KafkaTimeoutError("expired")
    batch.fail(err)
    assert f1.exception(0) is err and f2.exception(0) is err


def test_batch_size_accounting_matches_the_encoded_batch_body():
    from client.record_batch import HEADER_SIZE, build_batch

    acc = _acc()
    acc.append("t", 0, b"key", b"value", 1)
    acc.append("t", 0, None, b"", 2)
    acc.append("t", 0, b"", None, 3)
    acc.begin_flush()
    (batch,), _, _ = acc.drain(time.monotonic())
    # An upper bound, close: at most the bound's slack per record (timestamp and offset deltas).
    slack = batch.size - (len(build_batch(batch.records)) - HEADER_SIZE)
    assert 0 <= slack <= 3 * 6, slack


def test_record_futures_share_their_batch_outcome_and_callbacks_fire_once():
    acc = _acc()
    f1, _ = acc.append("t", 0, None, b"a", 5)
    seen = []
    f1.add_done_callback(lambda f: seen.append(("before", f.result(0).offset)))
    assert not f1.done()
    with pytest.raises(TimeoutError):
        f1.result(timeout=0.01)
    acc.begin_flush()
    (batch,), _, _ = acc.drain(time.monotonic())
    batch.complete(7)
    f1.add_done_callback(lambda f: seen.append(("after", f.result(0).offset)))
    assert f1.done() and f1.exception(0) is None
    assert seen == [("before", 7), ("after", 7)]


def test_a_failed_batch_raises_from_result():
    acc = _acc()
    f1, _ = acc.append("t", 0, None, b"a", 5)
    acc.begin_flush()
    (batch,), _, _ = acc.drain(time.monotonic())
    batch.fail(KafkaTimeoutError("expired"))
    with pytest.raises(KafkaTimeoutError):
        f1.result(0)


def test_abort_on_new_batch_queues_nothing_when_the_record_needs_a_new_batch():
    acc = _acc(batch_size=100)
    future, needs_new = acc.append("t", 0, None, _value(60), 0, abort_on_new_batch=True)
    assert future is None and needs_new and not acc.has_incomplete()   # no batch yet: the partitioner moves on
    acc.append("t", 0, None, _value(60), 0)
    future, _ = acc.append("t", 0, None, _value(30), 1, abort_on_new_batch=True)
    assert future is not None                                          # fits the open batch: stays
    future, needs_new = acc.append("t", 0, None, _value(30), 2, abort_on_new_batch=True)
    assert future is None and needs_new                                # 120 > 100: would open a new batch
    ready, _, _ = acc.drain(time.monotonic() + LINGER_MS)
    assert [[r[2] for r in b.records] for b in ready] == [[0, 1]]


def test_an_encoded_batch_never_exceeds_batch_size():
    # Found by the bench: batch.size = max.message.bytes (1 MiB) gave batches 9 bytes too big
    # (RECORD_TOO_LARGE), because only the records were counted, not the 61-byte header.
    from client.record_batch import build_batch

    acc = RecordAccumulator(1000, LINGER_MS, 1_000_000, 0)
    for i in range(40):
        acc.append("t", 0, None, b"v" * 84, i)       # 100 bytes a record in the body
    acc.begin_flush()
    ready, _, _ = acc.drain(time.monotonic())
    sizes = [len(build_batch(b.records)) for b in ready]
    # Full within two records: the size per record is a bound a few bytes over the real one.
    assert len(sizes) == 5 and max(sizes) <= 1000 and sizes[0] > 1000 - 2 * 100, sizes


def test_a_retry_skips_its_backoff_once_a_newer_leader_is_known():
    """KIP-951: the backoff is for asking the same leader again; a new leader epoch ends it."""
    acc = _acc(linger_ms=0)
    acc.append("t", 0, None, b"a", 1)
    acc.append("t", 1, None, b"b", 1)
    now = time.monotonic()
    (b0, b1), _, _ = acc.drain(now)
    for batch in (b0, b1):
        batch.leader_epoch = 4          # the epoch the failed attempt was aimed at
        _retry(acc, batch, at=now + 10)
    assert acc.backing_off(now) == {("t", 0), ("t", 1)}
    assert acc.drain(now)[0] == []

    assert not acc.leader_changed(("t", 0), 4, now)      # same leader: keep backing off
    assert acc.drain(now)[0] == []
    assert acc.leader_changed(("t", 0), 5, now)          # a newer one: go now
    ready, _, _ = acc.drain(now)
    assert ready == [b0]
    assert acc.backing_off(now) == {("t", 1)}            # the other partition still waits
    assert acc.drain(now + 10)[0] == [b1]


def test_a_split_batch_is_replaced_by_its_halves_in_its_place_and_its_futures_follow_them():
    acc = _acc(batch_size=10_000, linger_ms=0)
    futures = [acc.append("t", 0, None, f"r{i}".encode(), 100 + i)[0] for i in range(5)]
    now = time.monotonic()
    (big,), _, _ = acc.drain(now)
    later = acc.append("t", 0, None, b"later", 200)[0]       # a newer batch queued behind it
    first, second = acc.split(big, 2)
    assert ([r[1] for r in first.records], [r[1] for r in second.records]) == ([b"r0", b"r1"], [b"r2", b"r3", b"r4"])

    ready, _, _ = acc.drain(now)
    assert ready == [first]                # a retry goes alone: the halves first, in order
    acc.done(first)
    first.complete(40)
    assert not futures[0].done()           # the record's batch is done only once both halves are
    ready, _, _ = acc.drain(now)
    assert ready == [second]
    acc.done(second)
    second.complete(90)                    # another producer wrote 42..89 in between
    assert [f.result(0).offset for f in futures] == [40, 41, 90, 91, 92]
    assert [f.result(0).timestamp for f in futures] == [100, 101, 102, 103, 104]
    ready, _, _ = acc.drain(time.monotonic())
    assert [r[1] for r in ready[0].records] == [b"later"]
    acc.done(ready[0])
    ready[0].complete(93)
    assert later.result(0).offset == 93
    assert not acc.has_incomplete()


def test_a_half_can_be_split_again_and_keeps_its_place():
    acc = _acc(batch_size=10_000, linger_ms=0)
    futures = [acc.append("t", 0, None, f"r{i}".encode(), 1)[0] for i in range(4)]
    now = time.monotonic()
    (big,), _, _ = acc.drain(now)
    first, second = acc.split(big, 2)
    (sent,), _, _ = acc.drain(now)
    a, b = acc.split(sent, 1)              # the first half was too large as well
    order = []
    for _ in range(3):
        (batch,), _, _ = acc.drain(now)
        order.append([r[1] for r in batch.records])
        acc.done(batch)
        batch.complete(len(order) * 10)
    assert order == [[b"r0"], [b"r1"], [b"r2", b"r3"]]
    assert [f.result(0).offset for f in futures] == [10, 20, 30, 31]
    assert not acc.has_incomplete()


def test_a_failed_half_fails_only_its_own_records():
    acc = _acc(batch_size=10_000, linger_ms=0)
    futures = [acc.append("t", 0, None, f"r{i}".encode(), 1)[0] for i in range(4)]
    (big,), _, _ = acc.drain(time.monotonic())
    first, second = acc.split(big, 2)
    first.complete(0)
    second.fail(RuntimeError("too large even alone"))
    assert [f.exception(0) is None for f in futures] == [True, True, False, False]
    assert futures[1].result(0).offset == 1
    with pytest.raises(RuntimeError):
        futures[3].result(0)


# ---- OUT_OF_ORDER_SEQUENCE_NUMBER behind an unresolved batch (Kafka's canRetry) -----------------


def test_an_earlier_batch_still_in_flight_makes_out_of_order_retriable_until_it_is_answered():
    """The leader moved: b0 is still in flight to the old one (no answer yet, outcome unknown) when b1,
    sent to the new leader, comes back OUT_OF_ORDER_SEQUENCE_NUMBER. b1 only overtook b0."""
    acc = _acc(batch_size=100)
    for i in range(3):
        acc.append("t", 0, None, _value(100), i)
    b0, b1, b2 = acc.drain(time.monotonic())[0]
    _number(b0, b1, b2)
    assert acc.has_unresolved_earlier(b1) and acc.has_unresolved_earlier(b2)
    assert not acc.has_unresolved_earlier(b0)            # nothing before the first: a real gap
    acc.done(b0)                                         # b0 acknowledged
    assert not acc.has_unresolved_earlier(b1)            # now b1's OUT_OF_ORDER is a real gap
    assert acc.has_unresolved_earlier(b2)                # b1 still in flight


def test_an_earlier_batch_waiting_to_be_retried_makes_out_of_order_retriable():
    acc = _acc(batch_size=100)
    for i in range(2):
        acc.append("t", 0, None, _value(100), i)
    b0, b1 = acc.drain(time.monotonic())[0]
    _number(b0, b1)
    _retry(acc, b0)                                      # its answer was lost: queued for a retry
    assert acc.has_unresolved_earlier(b1)                # so b1's OUT_OF_ORDER is retried too
    _retry(acc, b1)
    assert acc.drain(time.monotonic())[0] == [b0]        # b0 goes first, alone ...
    acc.done(b0)                                         # ... and fails for good
    assert not acc.has_unresolved_earlier(b1)            # resolved: a gap before b1 now is real


def test_only_a_lower_sequence_of_the_same_producer_and_partition_counts():
    acc = _acc(batch_size=100)
    for i in range(3):
        acc.append("t", 0, None, _value(100), i)
    acc.append("t", 1, None, _value(100), 3)
    old_id, mine, later, elsewhere = acc.drain(time.monotonic())[0]
    _number(old_id, producer_id=6, first=0)              # sent under a producer id given up since
    _number(mine, later, producer_id=7)
    _number(elsewhere, producer_id=7, first=0)           # another partition numbers on its own
    assert not acc.has_unresolved_earlier(mine)          # old_id's sequences are another producer's
    assert not acc.has_unresolved_earlier(elsewhere)
    assert acc.has_unresolved_earlier(later)             # mine (sequence 0) is in flight
    acc.done(mine)
    assert not acc.has_unresolved_earlier(later)
    later.base_sequence = -1                             # never numbered: never sent, so never out of order
    assert not acc.has_unresolved_earlier(later)


def test_the_halves_of_a_split_batch_stay_unresolved_until_each_is_done():
    acc = _acc(batch_size=10_000, linger_ms=0)
    for i in range(4):
        acc.append("t", 0, None, f"r{i}".encode(), i)
    (big,), _, _ = acc.drain(time.monotonic())
    acc.append("t", 0, None, b"next", 9)
    (after,), _, _ = acc.drain(time.monotonic())
    _number(big, after)
    first, second = acc.split(big, 2)                    # RECORD_TOO_LARGE: the halves keep big's sequences
    _number(first, second)
    assert acc.has_unresolved_earlier(after)             # both halves wait in the queue
    acc.done(after)                                      # (its answer came: the halves go alone now)
    for half in (first, second):
        assert acc.drain(time.monotonic())[0] == [half]
        assert acc.has_unresolved_earlier(after)         # a half is in flight, or still queued
        acc.done(half)
    assert not acc.has_unresolved_earlier(after)


def test_an_idempotent_partition_has_one_batch_in_flight_until_one_is_acknowledged_under_its_producer_id():
    """The chaos suite's topic-recreate rounds (29 unknown sends in 12): a new producer's first two batches of a
    partition went pipelined to the broker about to lead it; it refused the first (NOT_LEADER_OR_FOLLOWER) and,
    leading by then, stored the second as that producer's first (a broker takes any sequence from a producer it
    does not know). The first then got OUT_OF_ORDER_SEQUENCE_NUMBER for good."""
    acc = _acc(batch_size=100)
    for i in range(4):
        acc.append("t", 0, None, _value(100), i)
    acc.append("t", 1, None, _value(100), 0)
    now = time.monotonic() + 1
    first, _, _ = acc.drain(now, producer_id=-1)           # no producer id yet: one per partition
    assert [(b.partition, b.records[0][2]) for b in first] == [(0, 0), (1, 0)]
    _number(*first, producer_id=7)
    assert acc.drain(now, producer_id=7)[0] == []            # nothing more until one is acknowledged
    acc.done(first[0], acknowledged=True)                    # t-0's first batch acknowledged under 7
    pipelined, _, _ = acc.drain(now, producer_id=7)
    assert [(b.partition, b.records[0][2]) for b in pipelined] == [(0, 1), (0, 2), (0, 3)]
    for b in pipelined:
        acc.done(b, acknowledged=False)                      # failed for good: the sender takes a new id
    acc.append("t", 0, None, _value(100), 4)
    acc.append("t", 0, None, _value(100), 5)
    assert [b.records[0][2] for b in acc.drain(now, producer_id=8)[0]] == [4]   # a new id: one again
    assert [b.records[0][2] for b in acc.drain(now)[0]] == [5]               # not idempotent: no such rule
