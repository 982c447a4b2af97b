"""The chaos checker on hand-built histories: each planted anomaly is found, a clean run passes."""

import json
import re
from dataclasses import replace

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.chaos.checker import MAX_EXAMPLES, check
from tests.chaos.history import (ConsumerError, ConsumerReset, FinalRead, Healed, History, MetadataSample,
                                 NemesisEvent, PartitionMetadata, Poll, ReplicaDump, Send, read_history, to_json,
                                 write_jsonl)
from tests.chaos.windows import LeaderChange, unavailability_windows

T = "chaos"


def send(value: str, partition: int, offset: int | None = None, outcome: str = "ok", t: float = 1.0) -> Send:
    producer = value.rsplit("-", 1)[0]
    error = "NotEnoughReplicasError: 1 in sync, 2 needed" if outcome == "fail" else None
    return Send(producer=producer, value=value, key=None, topic=T, partition=partition, outcome=outcome,
                offset=offset, invoked=t, completed=t + 0.01, error=error)


def final(partition: int, values: list[str], start: int = 0, hw: int | None = None) -> FinalRead:
    return FinalRead(T, partition, list(enumerate(values, start)), start + len(values) if hw is None else hw, start)


def replica(broker: int, partition: int, values: list[str], hw: int | None = None,
            epochs: list[int] | None = None) -> ReplicaDump:
    """A replica's dump, one record per batch; ``epochs`` gives each batch's leader epoch (default 1)."""
    epochs = [1] * len(values) if epochs is None else epochs
    # A stand-in for each batch's CRC (CRC-32C, as in a real dump): equal records, equal CRC.
    batches = [(o, o, e, crc32c(v.encode())) for o, (v, e) in enumerate(zip(values, epochs))]
    return ReplicaDump(broker, T, partition, list(enumerate(values)), len(values) if hw is None else hw, len(values),
                       batches)


def poll(consumer: str, partition: int, records: list[tuple[int, str]], session: int = 0, t: float = 2.0) -> Poll:
    return Poll(consumer, session, T, partition, records, t)


def sample(t: float, leader: int = 1, leader_epoch: int = 1, partition_epoch: int = 1, isr=(1, 2, 3),
           replicas=(1, 2, 3), partition: int = 0) -> MetadataSample:
    return MetadataSample(t, 1, [PartitionMetadata(T, partition, leader, leader_epoch, partition_epoch,
                                                   tuple(isr), tuple(replicas))])


# Partition 0 holds p0-0, p0-1, p1-2, p0-2; partition 1 holds p1-0, p1-1 and p0-3, an info
# send that did get written. p1-3 failed for good.
P0 = ["p0-0", "p0-1", "p1-2", "p0-2"]
P1 = ["p1-0", "p1-1", "p0-3"]


def clean_ops() -> list:
    return [
        sample(0.5),
        sample(0.5, leader=2, isr=(2, 3, 1), replicas=(2, 3, 1), partition=1),
        send("p0-0", 0, 0, t=1.0), send("p0-1", 0, 1, t=1.1), send("p1-0", 1, 0, t=1.1), send("p1-1", 1, 1, t=1.2),
        send("p1-2", 0, 2, t=1.3), send("p0-2", 0, 3, t=1.4), send("p0-3", 1, outcome="info", t=1.5),
        send("p1-3", 1, outcome="fail", t=1.6),
        NemesisEvent("kill-leader", (1,), "start", 1.7, "SIGKILL broker 1"),
        poll("c0", 0, [(0, "p0-0"), (1, "p0-1")], t=1.8), poll("c0", 0, [(2, "p1-2"), (3, "p0-2")], t=1.9),
        poll("c1", 1, list(enumerate(P1)), t=1.9),
        NemesisEvent("kill-leader", (1,), "heal", 2.0),
        Healed(3.0, 1.8, 30.0),
        final(0, P0), final(1, P1),
        *(replica(b, p, log) for b in (1, 2, 3) for p, log in enumerate((P0, P1))),
    ]


def roundtrip(tmp_path, ops: list) -> History:
    """Through the file format and back, so every test also exercises write_jsonl/read_history."""
    path = tmp_path / "history.jsonl"
    write_jsonl(path, ops)
    return read_history(path)


def checked(tmp_path, ops: list):
    return check(roundtrip(tmp_path, ops))


def clean_but(*new) -> list:
    """The clean history with each of ``new`` in place of the operation of its kind on its partition (and broker)."""
    def same(op, other) -> bool:
        return (type(op) is type(other) and op.partition == other.partition
                and getattr(op, "broker", None) == getattr(other, "broker", None))
    return [op for op in clean_ops() if not any(same(op, n) for n in new)] + list(new)


# ---- the file format ---------------------------------------------------------------------

def test_round_trip_keeps_every_operation(tmp_path):
    ops = clean_ops()
    assert roundtrip(tmp_path, ops) == History.of(ops)


def test_history_of_plain_dicts_as_the_harness_writes_them():
    ops = clean_ops()
    assert History.of([to_json(op) for op in ops]) == History.of(ops)
    assert History.of([{"f": "txn-commit"}]) == History()


def test_unknown_operations_are_skipped(tmp_path):
    path = tmp_path / "history.jsonl"
    write_jsonl(path, [send("p0-0", 0, 0), {"f": "txn-commit", "producer": "p0"}, final(0, ["p0-0"])])
    history = read_history(path)
    assert len(history.sends) == 1 and len(history.finals) == 1
    assert check(history).ok


@pytest.mark.parametrize("bad, why", [
    ("{not json", "line 2"),
    ('{"f": "final", "topic": "chaos", "partition": 0, "records": []}', 'line 2: final: missing field "high_watermark"'),
    ('{"f": "poll", "consumer": "c0", "session": 0, "topic": "chaos", "partition": 0, "records": [[0]], "time": 1}',
     "line 2: poll.records"),
    ('{"f": "send", "producer": "p0", "value": "p0-0", "key": null, "topic": "chaos", "partition": "0", '
     '"outcome": "ok", "offset": 0, "invoked": 1, "completed": 2}', "line 2: send.partition"),
    ('{"f": "send", "producer": "p0", "value": "p0-0", "key": null, "topic": "chaos", "partition": 0, '
     '"outcome": "maybe", "offset": 0, "invoked": 1, "completed": 2}', "line 2: send.outcome"),
    ('{"f": "replica", "broker": 1, "topic": "chaos", "partition": 0, "records": [], "high_watermark": 0, '
     '"log_end_offset": 0, "batches": [[0, 0, 1]]}', "line 2: replica.batches: a batch is [base offset"),
    ('{"f": "consumer-reset", "consumer": "c0", "partition": 0, "time": 1, "from": 3}',
     'line 2: consumer-reset: missing field "to"'),
    ("[1, 2]", "line 2: expected a JSON object"),
    ('{"topic": "chaos"}', 'line 2: no "f"'),
])
def test_a_malformed_line_names_its_number(tmp_path, bad, why):
    path = tmp_path / "history.jsonl"
    path.write_text(json.dumps({"f": "healed", "time": 1.0, "recovery_s": None, "bound_s": 30.0}) + "\n" + bad + "\n")
    with pytest.raises(ValueError, match=re.escape(why)):
        read_history(path)


# ---- a clean run ---------------------------------------------------------------------------

def test_a_clean_history_passes_with_the_right_counts(tmp_path):
    r = checked(tmp_path, clean_ops())
    assert r.ok, r.format()
    assert (r.acked, r.failed, r.unknown, r.unknown_found, r.final_records, r.unseen) == (6, 1, 1, 1, 7, 0)
    assert r.anomalies == {}
    assert r.format().startswith("chaos check: OK")


def test_acked_but_never_polled_is_unseen_not_an_anomaly(tmp_path):
    r = checked(tmp_path, [op for op in clean_ops() if not (isinstance(op, Poll) and op.partition == 1)])
    assert r.ok and r.unseen == 2
    assert "p1-0 acked at chaos-1@0" in r.examples["unseen"]


# ---- planted anomalies -----------------------------------------------------------------------

def test_planted_lost_write(tmp_path):
    r = checked(tmp_path, clean_but(FinalRead(T, 0, [(0, "p0-0"), (2, "p1-2"), (3, "p0-2")], 4, 0)))
    assert r.lost == 1 and not r.ok
    assert "p0-1" in r.examples["lost"][0] and "chaos-0@1" in r.examples["lost"][0]
    assert "lost 1" in r.format().splitlines()[0]


def test_an_ack_at_or_above_the_final_high_watermark_is_lost(tmp_path):
    r = checked(tmp_path, clean_ops() + [send("p0-4", 0, 4, t=1.45)])
    assert r.lost == 1 and "the final HW is 4" in r.examples["lost"][0]


def test_planted_duplicate(tmp_path):
    r = checked(tmp_path, clean_but(final(1, P1 + ["p1-0"])))
    assert r.duplicate == 1 and r.lost == 0
    assert r.examples["duplicate"] == ["p1-0 at chaos-1@0, chaos-1@3"]


def test_an_info_send_found_in_the_final_read_keeps_the_producer_order(tmp_path):
    # p0-4 timed out (info) but was written at offset 9, before the earlier p0-3 (ok at 10)
    ops = [send("p0-3", 2, 10, t=1.0), replace(send("p0-4", 2, outcome="info", t=1.1), partition=-1),
           send("p0-5", 2, 11, t=1.2), FinalRead(T, 2, [(9, "p0-4"), (10, "p0-3"), (11, "p0-5")], 12, 9)]
    r = checked(tmp_path, ops)
    assert r.anomalies == {"nonmonotonic_send": 1}
    assert r.examples["nonmonotonic_send"] == ["p0 on chaos-2: p0-3 at offset 10 but the later p0-4 (info) at 9"]


def test_info_sends_in_order_or_never_written_pass(tmp_path):
    ops = [send("p0-3", 2, 10, t=1.0), send("p0-4", 2, outcome="info", t=1.1), send("p0-5", 2, outcome="info", t=1.2),
           send("p0-6", 2, 12, t=1.3), FinalRead(T, 2, [(10, "p0-3"), (11, "p0-4"), (12, "p0-6")], 13, 10)]
    r = checked(tmp_path, ops)
    assert r.ok, r.format()
    assert (r.unknown, r.unknown_found) == (2, 1)


def test_planted_reorder(tmp_path):
    ops = [send("p0-3", 2, 10, t=1.0), send("p0-4", 2, 9, t=1.1), FinalRead(T, 2, [(9, "p0-4"), (10, "p0-3")], 11, 9)]
    r = checked(tmp_path, ops)
    assert r.nonmonotonic_send == 1 and r.anomalies == {"nonmonotonic_send": 1}
    assert "p0-3 at offset 10" in r.examples["nonmonotonic_send"][0]


def test_inconsistent_offsets(tmp_path):
    ops = [send("p0-1", 0, 5), final(0, ["p2-0", "p2-1", "p2-2", "p2-3", "p2-4", "p1-0"])]
    r = checked(tmp_path, ops)
    assert r.inconsistent_offsets == 1 and r.lost == 1
    assert r.examples["inconsistent_offsets"] == ["chaos-0@5: p1-0 (final read), p0-1 (ack to p0)"]


def test_g1a_a_failed_send_in_the_final_read(tmp_path):
    r = checked(tmp_path, clean_but(final(1, P1 + ["p1-3"])))
    assert r.g1a == 1 and "p1-3 failed (NotEnoughReplicasError" in r.examples["g1a"][0]


def test_dirty_read(tmp_path):
    r = checked(tmp_path, clean_ops() + [poll("c0", 0, [(4, "p0-4")], t=1.95)])
    assert r.anomalies == {"dirty_read": 1}
    assert r.examples["dirty_read"] == ["c0 polled p0-4 at chaos-0@4; the final HW is 4"]


def test_poll_skip_and_nonmonotonic_poll_but_a_new_consumer_may_start_over(tmp_path):
    ops = [final(0, P0),
           poll("c0", 0, [(0, "p0-0"), (1, "p0-1")]), poll("c0", 0, [(3, "p0-2")]),       # skips offset 2
           poll("c1", 0, [(0, "p0-0"), (1, "p0-1")]), poll("c1", 0, [(1, "p0-1")]),       # repeats offset 1
           poll("c2", 0, [(0, "p0-0"), (1, "p0-1")]),
           ConsumerError("c2", 2.5, "OffsetOutOfRangeError: no reset policy"), poll("c2", 0, [(0, "p0-0")], session=1)]
    r = checked(tmp_path, ops)
    assert r.anomalies == {"poll_skip": 1, "nonmonotonic_poll": 1}
    assert "c0 session 0 on chaos-0: offset 1 then 3" in r.examples["poll_skip"][0]
    assert r.poll_resets == 1
    assert r.examples["poll_resets"] == ["c2 session 1 on chaos-0: offset 1 then 0, a new consumer at the log start "
                                         "after OffsetOutOfRangeError: no reset policy"]


# ---- consumers across sessions: only a recorded, legitimate reason explains a jump ----------------

def reset(consumer: str, partition: int, frm: int, to: int, reason: str | None = None) -> dict:
    """A consumer-reset line exactly as the workload writes it ("from" and "to" are its keys)."""
    line = {"f": "consumer-reset", "consumer": consumer, "partition": partition, "time": 2.5, "from": frm, "to": to}
    return line if reason is None else {**line, "reason": reason}


def test_consumer_reset_lines_parse_with_their_from_and_to_keys(tmp_path):
    history = roundtrip(tmp_path, [reset("c0", 1, 7, 3), to_json(ConsumerReset("c0", 1, 2.6, 3, 9, "seek", 2, T))])
    assert [(r.from_offset, r.to_offset, r.reason, r.session) for r in history.session_starts] == \
        [(7, 3, None, None), (3, 9, "seek", 2)]
    assert to_json(history.session_starts[1])["from"] == 3


# Partition 0 after retention deleted offsets 0..2: a reset forward to offset 3 would skip nothing left.
RETAINED = FinalRead(T, 0, [(3, "p0-2")], 4, 3)


@pytest.mark.parametrize("ops, anomaly", [
    # a new session with no recorded reason is no licence to go back ...
    ([poll("c0", 1, [(0, "p1-0"), (1, "p1-1")]), poll("c0", 1, [(0, "p1-0")], session=1)], "nonmonotonic_poll"),
    # ... nor to skip, even what retention deleted
    ([poll("c0", 0, [(0, "p0-0")]), poll("c0", 0, [(3, "p0-2")], session=1)], "poll_skip"),
    # a reset the consumer made on its own only ever goes forward to the log start
    ([poll("c0", 0, [(0, "p0-0"), (1, "p0-1")]), reset("c0", 0, 2, 0), poll("c0", 0, [(0, "p0-0")], session=1)],
     "nonmonotonic_poll"),
    # ... and skips only what retention deleted: offset 1 of partition 1 is still there
    ([poll("c0", 1, [(0, "p1-0")]), reset("c0", 1, 1, 2), poll("c0", 1, [(2, "p0-3")], session=1)], "poll_skip"),
    # a reason the checker does not know explains nothing
    ([poll("c0", 0, [(0, "p0-0")]), reset("c0", 0, 1, 3, "rebalance"), poll("c0", 0, [(3, "p0-2")], session=1)],
     "poll_skip"),
    # a reset record explains only the very jump it describes: not another partition's, nor another offset's
    ([poll("c0", 0, [(0, "p0-0")]), reset("c0", 1, 1, 3), poll("c0", 0, [(3, "p0-2")], session=1)], "poll_skip"),
    ([poll("c0", 0, [(0, "p0-0")]), reset("c0", 0, 1, 2), poll("c0", 0, [(3, "p0-2")], session=1)], "poll_skip"),
    # a new consumer starts at the log start, not where the old one stopped
    ([poll("c0", 1, [(0, "p1-0"), (1, "p1-1")]), ConsumerError("c0", 2.5, "KafkaError: boom"),
      poll("c0", 1, [(2, "p0-3")], session=1)], "poll_skip"),
    # so does the first session
    ([poll("c0", 1, [(1, "p1-1"), (2, "p0-3")])], "poll_skip"),
])
def test_planted_jump_across_sessions(tmp_path, ops, anomaly):
    r = checked(tmp_path, [RETAINED, final(1, P1), *ops])
    assert r.anomalies == {anomaly: 1}, r.format()
    assert r.poll_resets == 0


def test_a_reset_on_one_partition_leaves_the_others_where_they_were(tmp_path):
    # the seek on partition 0 starts session 1, but the consumer keeps its position on partition 1
    ops = [final(0, P0), final(1, P1), poll("c0", 1, [(0, "p1-0"), (1, "p1-1")]), poll("c0", 0, [(0, "p0-0")]),
           reset("c0", 0, 1, 0, "seek"), poll("c0", 0, [(0, "p0-0")], session=1),
           poll("c0", 1, [(0, "p1-0")], session=1)]
    r = checked(tmp_path, ops)
    assert r.anomalies == {"nonmonotonic_poll": 1} and r.poll_resets == 1
    assert "c0 session 1 on chaos-1: offset 1 then 0" in r.examples["nonmonotonic_poll"][0]


def test_legitimate_resets_pass_and_are_counted(tmp_path):
    # retention deleted offsets 0..2 of partition 0: a reset forward to the log start skips nothing left
    ops = [FinalRead(T, 0, [(3, "p0-2")], 4, 3), final(1, P1),
           poll("c0", 0, [(0, "p0-0")]), poll("c0", 1, [(0, "p1-0")]),
           reset("c0", 0, 1, 3), poll("c0", 0, [(3, "p0-2")], session=1),
           poll("c0", 1, [(1, "p1-1")], session=1),                        # partition 1 goes on where it was
           reset("c0", 1, 2, 0, "seek"), poll("c0", 1, [(0, "p1-0")], session=2),
           ConsumerError("c0", 3.0, "KafkaError: boom"),
           poll("c0", 0, [(3, "p0-2")], session=3), poll("c0", 1, [(0, "p1-0")], session=3)]
    r = checked(tmp_path, ops)
    assert r.ok, r.format()
    # the reset to the log start, the seek, then the new consumer back at each log start
    assert r.poll_resets == 4
    assert [e.split(", ", 1)[1] for e in r.examples["poll_resets"]] == [
        "reset to the log start (offset out of range: retention deleted what it skips)",
        "a seek by the workload"] + ["a new consumer at the log start after KafkaError: boom"] * 2
    assert "consumer jumps a legitimate reason explains: 4" in r.format()


def test_a_session_start_without_a_final_read_is_counted_as_not_checked(tmp_path):
    r = checked(tmp_path, [poll("c0", 2, [(5, "p0-5")]), poll("c0", 2, [(6, "p0-6")]),
                           reset("c0", 2, 7, 9), poll("c0", 2, [(9, "p0-9")], session=1)])
    assert r.unchecked_poll_starts == 2 and r.poll_resets == 0
    assert r.anomalies == {"dirty_read": 3}           # no final read: every polled record is suspect
    assert "consumer session starts not checked (no final read): 2" in r.format()


def test_replica_divergence_below_the_high_watermark(tmp_path):
    r = checked(tmp_path, clean_but(replica(3, 0, ["p0-0", "p0-1", "p9-9", "p0-2"])))
    assert r.replica_divergence == 1
    assert r.examples["replica_divergence"][0].startswith("broker 3's chaos-0 differs from the final read at offset 2")


def test_a_replica_tail_above_the_high_watermark_is_not_divergence(tmp_path):
    # broker 3 still holds an uncommitted record it has yet to truncate
    r = checked(tmp_path, clean_but(replica(3, 0, P0 + ["p5-5"], hw=4)))
    assert r.ok, r.format()


def test_replicas_without_a_final_read_are_compared_pairwise_below_their_high_watermarks():
    r = check(History.of([replica(1, 0, ["a-0", "a-1", "a-2"]), replica(2, 0, ["a-0", "b-1", "a-2"], hw=3),
                          replica(3, 0, ["a-0", "a-1", "c-2"], hw=2)]))
    assert r.replica_divergence == 2          # 1 vs 2 and 2 vs 3 at offset 1; 1 vs 3 agree below 2
    assert "brokers 1 and 2 differ on chaos-0 at offset 1" in r.examples["replica_divergence"][0]


# ---- invariant 4: one leader per epoch, so equal epoch and offset means equal records ----------

def test_planted_epoch_divergence_above_the_high_watermark(tmp_path):
    # brokers 1 and 2 both wrote offset 4 in leader epoch 2: two leaders in one epoch. Above the HW,
    # so no other check sees it.
    r = checked(tmp_path, clean_but(replica(1, 0, P0 + ["p0-4"], hw=4, epochs=[1, 1, 1, 1, 2]),
                                    replica(2, 0, P0 + ["p2-9"], hw=4, epochs=[1, 1, 1, 1, 2])))
    assert r.anomalies == {"epoch_divergence": 1}, r.format()
    assert r.examples["epoch_divergence"] == [
        f"brokers 1 and 2 differ on chaos-0@4 in leader epoch 2: p0-4 in batch (4, 4, {crc32c(b'p0-4')}) "
        f"vs p2-9 in batch (4, 4, {crc32c(b'p2-9')}) (offsets that differ: 1)"]


def test_same_epoch_same_records_in_different_batch_bytes_is_epoch_divergence(tmp_path):
    other = replica(3, 1, P1)
    other.batches[1] = (1, 1, 1, 12345)                # same value, other bytes (e.g. a timestamp)
    r = checked(tmp_path, clean_but(other))
    assert r.anomalies == {"epoch_divergence": 2}      # against broker 1 and broker 2


def test_a_deposed_leaders_tail_in_an_older_epoch_may_differ(tmp_path):
    # broker 1 led epoch 1 and kept an uncommitted p9-9 at offset 4; broker 2 wrote p0-4 there in epoch 2
    r = checked(tmp_path, clean_but(replica(1, 0, P0 + ["p9-9"], hw=4, epochs=[1, 1, 1, 1, 1]),
                                    replica(2, 0, P0 + ["p0-4"], hw=4, epochs=[1, 1, 1, 1, 2])))
    assert r.ok, r.format()
    assert r.unchecked_replica_epochs == 0


def test_replica_dumps_without_epochs_are_counted_as_not_checked(tmp_path):
    # broker 3 holds p9-9 at offset 4 where broker 1 has p0-4, in an epoch nobody can tell
    r = checked(tmp_path, clean_but(replica(1, 0, P0 + ["p0-4"], hw=4),
                                    replace(replica(3, 0, P0 + ["p9-9"], hw=4), batches=None),
                                    replace(replica(3, 1, P1), batches=None)))
    assert r.ok and r.unchecked_replica_epochs == 2, r.format()
    assert r.examples["unchecked_replica_epochs"] == ["broker 3's chaos-0", "broker 3's chaos-1"]
    assert "replica dumps without leader epochs (epoch_divergence not checked): 2" in r.format()


def test_metadata_epoch_decrease_and_isr_rules(tmp_path):
    ops = [sample(1.0, leader_epoch=3, partition_epoch=7), sample(2.0, leader_epoch=3, partition_epoch=7),
           sample(3.0, leader_epoch=2, partition_epoch=7),
           sample(4.0, leader=3, leader_epoch=4, partition_epoch=8, isr=(1, 2)),
           sample(5.0, leader=-1, leader_epoch=5, partition_epoch=9, isr=()),
           sample(6.0, leader=1, leader_epoch=6, partition_epoch=10, isr=(1, 4))]
    r = checked(tmp_path, ops)
    assert r.anomalies == {"metadata_violations": 3}
    went_back, not_in_isr, outside = r.examples["metadata_violations"]
    assert "went back from (3, 7) to (2, 7)" in went_back
    assert "leader 3 not in ISR [1, 2]" in not_in_isr
    assert "ISR [1, 4] not within replicas" in outside


@pytest.mark.parametrize("healed", [[Healed(40.0, None, 30.0)], [Healed(40.0, 31.5, 30.0)], []])
def test_not_healed(tmp_path, healed):
    r = checked(tmp_path, [op for op in clean_ops() if not isinstance(op, Healed)] + healed)
    assert r.anomalies == {"not_healed": 1}


def test_no_healed_record_is_fine_without_faults(tmp_path):
    assert checked(tmp_path, [op for op in clean_ops() if not isinstance(op, (Healed, NemesisEvent))]).ok


def test_examples_are_capped(tmp_path):
    r = checked(tmp_path, [send(f"p0-{i}", 0, i) for i in range(MAX_EXAMPLES + 2)] + [final(0, [])])
    assert r.lost == MAX_EXAMPLES + 2 and len(r.examples["lost"]) == MAX_EXAMPLES


# ---- unavailability windows ------------------------------------------------------------------

def acks_every_10ms(partition: int, start: float, end: float) -> list[Send]:
    """Acks completing at start, start + 10 ms, ... before end (values and offsets do not matter here)."""
    return [replace(send(f"p{partition}-{i}", partition, i), completed=start + i * 0.01)
            for i in range(round((end - start) / 0.01))]


def test_unavailability_window_of_a_leader_kill():
    sends = acks_every_10ms(0, 0.0, 10.0) + acks_every_10ms(1, 0.0, 5.0) + acks_every_10ms(1, 5.4, 10.0)
    history = History.of([*sends,
                          sample(4.0, leader=2, leader_epoch=1, partition=1),
                          sample(5.3, leader=1, leader_epoch=2, isr=(1, 3), partition=1),
                          sample(5.35, leader=2, leader_epoch=1, partition=1),       # a stale view
                          NemesisEvent("kill-leader", (2,), "start", 5.0),
                          NemesisEvent("kill-leader", (2,), "heal", 8.0)])
    [w] = unavailability_windows(history)
    assert (w.kind, w.targets, w.start, w.heal) == ("kill-leader", (2,), 5.0, 8.0)
    assert w.window_s == pytest.approx(0.4, abs=0.02)
    assert w.leader_changes == [LeaderChange(5.3, "chaos-1", 2, 1, 2)]


def test_no_ack_after_a_fault_is_no_window():
    history = History.of([*acks_every_10ms(0, 0.0, 1.0), NemesisEvent("pause", (1,), "start", 2.0)])
    [w] = unavailability_windows(history)
    assert w.window_s is None and w.heal is None


# ---- property: clean histories pass, and a missing ack is always found ----------------------------

@st.composite
def clean_histories(draw) -> list:
    """Random producers sending to random partitions; each written record takes the next offset."""
    producers, partitions = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    plan = draw(st.lists(st.tuples(st.integers(0, producers - 1), st.integers(0, partitions - 1),
                                   st.sampled_from(["ok", "ok", "ok", "fail", "info-written", "info-lost"])),
                         min_size=1, max_size=40))
    sent = [0] * producers
    logs: list[list[str]] = [[] for _ in range(partitions)]
    ops: list = []
    for t, (producer, partition, outcome) in enumerate(plan):
        value = f"p{producer}-{sent[producer]}"
        sent[producer] += 1
        offset = len(logs[partition]) if outcome in ("ok", "info-written") else None
        if offset is not None:
            logs[partition].append(value)
        ops.append(send(value, partition, offset if outcome == "ok" else None, outcome.split("-")[0], t * 0.01))
    ops += [poll("c0", p, list(enumerate(log)), t=1.0) for p, log in enumerate(logs) if log]
    ops += [final(p, log) for p, log in enumerate(logs)]
    ops += [replica(b, p, log) for b in (1, 2, 3) for p, log in enumerate(logs)]
    ops += [sample(0.5, partition=p) for p in range(partitions)]
    return ops


@settings(max_examples=150, deadline=None)
@given(clean_histories(), st.data())
def test_property_clean_passes_and_any_missing_ack_is_lost(ops, data):
    r = check(History.of(ops))
    assert r.ok, r.format()
    acked = [op for op in ops if isinstance(op, Send) and op.outcome == "ok"]
    assert r.acked == len(acked) and r.unseen == 0
    if not acked:
        return
    gone = data.draw(st.sampled_from(acked))
    holed = [replace(op, records=[rec for rec in op.records if rec[1] != gone.value])
             if isinstance(op, FinalRead) and op.partition == gone.partition else op for op in ops]
    r = check(History.of(holed))
    assert r.lost == 1 and gone.value in r.examples["lost"][0]
