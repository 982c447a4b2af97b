"""The chaos checker: the invariants of DESIGN.md §8 over one run's history.

The anomalies follow Jepsen's queue checkers (jepsen-io/redpanda); the final read through each
partition's leader is the reference: it is what every consumer may see from now on.

- lost: an acknowledged (ok) send is not at its offset in the final read.
- duplicate: one value at two places of the final read.
- inconsistent_offsets: two values claimed for one offset (acks, polls, final read, replicas below their HW).
- nonmonotonic_send: one producer's sends to one partition stored out of send order; ok sends at their
  acked offset, info sends (outcome unknown) at the place the final read has them, if it has them.
- g1a: a failed send is in the final read.
- dirty_read: a consumer saw a record the final read does not hold there.
- poll_skip, nonmonotonic_poll: a consumer jumped forward past offsets it never saw, or went back,
  within a session or across one, unless the history names a legitimate reason (see _check_session_start);
  each jump so explained is counted in ``poll_resets``.
- replica_divergence: after healing, a replica differs from the final read below the final HW.
- epoch_divergence: two replicas hold different records (or batches) at one offset in the same leader
  epoch, anywhere in their dumped logs (invariant 4: at most one leader writes in an epoch).
- metadata_violations: leader outside the ISR, ISR outside the replicas, epochs going back.
- not_healed: the cluster did not recover within the bound after the final heal.

What the history cannot show is counted, never passed silently: ``unchecked_poll_starts`` (a consumer
session's start with no final read of its partition to place the log start), ``unchecked_replica_epochs``
(replica dumps without batch leader epochs).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations, pairwise
from typing import Iterable

from tests.chaos.history import (BatchEpoch, ConsumerError, ConsumerReset, FinalRead, History, Poll, Record,
                                 ReplicaDump, Send, SessionStart)

TP = tuple[str, int]               # (topic, partition)
Key = tuple[str, int, int]         # (topic, partition, offset)

ANOMALIES = ("lost", "duplicate", "inconsistent_offsets", "nonmonotonic_send", "g1a", "dirty_read",
             "poll_skip", "nonmonotonic_poll", "replica_divergence", "epoch_divergence", "metadata_violations",
             "not_healed")
# Counted with examples like the anomalies, but not anomalies: the consumer jumps a legitimate reason
# explains, and what the history could not show (so that "not checked" never reads as "held").
NOTES = {"poll_resets": "consumer jumps a legitimate reason explains",
         "unchecked_poll_starts": "consumer session starts not checked (no final read)",
         "unchecked_replica_epochs": "replica dumps without leader epochs (epoch_divergence not checked)"}
MAX_EXAMPLES = 5


class AnomalyCounts:
    """Counters named in ``anomaly_names`` plus a few examples of each (both checkers' results)."""

    anomaly_names: tuple[str, ...] = ()
    examples: dict[str, list[str]]

    @property
    def ok(self) -> bool:
        return not any(getattr(self, name) for name in self.anomaly_names)

    @property
    def anomalies(self) -> dict[str, int]:
        """The anomalies that occurred, with their counts."""
        return {name: getattr(self, name) for name in self.anomaly_names if getattr(self, name)}

    def note(self, name: str, example: str) -> None:
        """Count one occurrence of ``name`` (an anomaly or a note), keeping the first few examples."""
        setattr(self, name, getattr(self, name) + 1)
        kept = self.examples.setdefault(name, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append(example)


@dataclass
class CheckResult(AnomalyCounts):
    """Counts of each anomaly (0 = the invariant held) and a few examples of each."""
    # what happened
    acked: int = 0                 # ok sends
    failed: int = 0                # fail sends
    unknown: int = 0               # info sends
    unknown_found: int = 0         # info sends that made it into the final read
    final_records: int = 0
    unseen: int = 0                # ok sends no poll saw: liveness, not safety, while `lost` is 0
    poll_resets: int = 0           # consumer jumps a legitimate reason explains (not anomalies)
    unchecked_poll_starts: int = 0     # session starts with no final read to place the log start
    unchecked_replica_epochs: int = 0  # replica dumps without batch leader epochs
    # the anomalies (ANOMALIES)
    lost: int = 0
    duplicate: int = 0
    inconsistent_offsets: int = 0
    nonmonotonic_send: int = 0
    g1a: int = 0
    dirty_read: int = 0
    poll_skip: int = 0
    nonmonotonic_poll: int = 0
    replica_divergence: int = 0
    epoch_divergence: int = 0
    metadata_violations: int = 0
    not_healed: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    anomaly_names = ANOMALIES

    def format(self) -> str:
        found = ", ".join(f"{name} {count}" for name, count in self.anomalies.items())
        lines = [f"chaos check: {'OK' if self.ok else 'FAILED (' + found + ')'}",
                 f"  sends: {self.acked} acked (ok), {self.failed} failed, {self.unknown} unknown "
                 f"(info; {self.unknown_found} of them in the final read)",
                 f"  final read: {self.final_records} records; unseen (acked, never polled): {self.unseen}"]
        lines += [f"    - {e}" for e in self.examples.get("unseen", [])]
        for name, what in NOTES.items():
            lines.append(f"  {what}: {getattr(self, name)}")
            lines += [f"    - {e}" for e in self.examples.get(name, [])]
        for name in ANOMALIES:
            lines.append(f"  {name:<21} {getattr(self, name)}")
            lines += [f"    - {e}" for e in self.examples.get(name, [])]
        return "\n".join(lines)


def check(history: History) -> CheckResult:
    result = CheckResult()
    final = _FinalIndex(history.finals, result)
    _check_sends(history.sends, final, result)
    _check_send_order(history.sends, final, result)
    polled = _check_polls(history, final, result)
    _count_unseen(history.sends, polled, result)
    _check_inconsistent_offsets(history, result)
    _check_replicas(history.replicas, final, result)
    _check_epochs(history.replicas, result)
    _check_metadata(history, result)
    _check_healed(history, result)
    return result


def _at(topic: str, partition: int, offset: int | None) -> str:
    return f"{topic}-{partition}@{offset}"


# ---- the reference: the final read ------------------------------------------------------

class _FinalIndex:
    """The final read per partition, by offset and by value; counts duplicates while indexing."""

    def __init__(self, finals: list[FinalRead], result: CheckResult):
        # a partition read twice keeps its last read: the harness's latest word
        self.reads: dict[TP, FinalRead] = {(f.topic, f.partition): f for f in finals}
        self.logs: dict[TP, dict[int, str]] = {}
        self.where: dict[str, Key] = {}                    # value -> its first place
        duplicates: dict[str, list[Key]] = {}
        for (topic, partition), read in self.reads.items():
            log = self.logs[(topic, partition)] = {}
            for offset, value in read.records:
                log[offset] = value
                key = (topic, partition, offset)
                first = self.where.setdefault(value, key)
                if first != key:
                    duplicates.setdefault(value, [first]).append(key)
            result.final_records += len(read.records)
        for value, places in duplicates.items():
            result.note("duplicate", f"{value} at {', '.join(_at(*k) for k in places)}")

    def mismatch(self, topic: str, partition: int, offset: int, value: str) -> str | None:
        """None if the final read holds ``value`` at ``offset`` (or cannot tell); else what it holds."""
        read = self.reads.get((topic, partition))
        if read is None:
            return f"there is no final read of {topic}-{partition}"
        if offset < read.log_start_offset:
            return None            # deleted by retention: nothing left to compare with
        if offset >= read.high_watermark:
            return f"the final HW is {read.high_watermark}"
        there = self.logs[(topic, partition)].get(offset)
        if there == value:
            return None
        return "the final read has nothing there" if there is None else f"the final read has {there} there"


# ---- sends: lost, G1a, reorder ----------------------------------------------------------

def _check_sends(sends: list[Send], final: _FinalIndex, result: CheckResult) -> None:
    for s in sends:
        if s.outcome == "ok":
            result.acked += 1
            _check_ack(s, final, result)
        elif s.outcome == "fail":
            result.failed += 1
            if s.value in final.where:
                result.note("g1a", f"{s.value} failed ({s.error}) but the final read has it at "
                                   f"{_at(*final.where[s.value])}")
        else:
            result.unknown += 1
            result.unknown_found += s.value in final.where


def _check_ack(s: Send, final: _FinalIndex, result: CheckResult) -> None:
    if s.offset is None:
        # acked without an offset: all we can ask is that it is somewhere in its partition
        place = final.where.get(s.value)
        if place is None or place[:2] != (s.topic, s.partition):
            result.note("lost", f"{s.value} acked (no offset) by {s.topic}-{s.partition}, not in its final read")
        return
    why = final.mismatch(s.topic, s.partition, s.offset, s.value)
    if why is not None:
        result.note("lost", f"{s.value} acked at {_at(s.topic, s.partition, s.offset)}; {why}")


def _check_send_order(sends: list[Send], final: _FinalIndex, result: CheckResult) -> None:
    """Per producer and partition, offsets increase with the send index (nonmonotonic-send): an
    idempotent producer keeps its order with up to 5 requests in flight. An info send the final read
    holds was written, so it is held to the order too, at the place the final read has it."""
    streams: dict[tuple[str, str, int], list[tuple[int, int, str]]] = defaultdict(list)
    for s in sends:
        place = _written_at(s, final)
        if place is not None:
            topic, partition, offset = place
            label = s.value if s.outcome == "ok" else f"{s.value} ({s.outcome})"
            streams[(s.producer, topic, partition)].append((s.index, offset, label))
    for (producer, topic, partition), written in streams.items():
        written.sort()
        for (_, off_a, val_a), (_, off_b, val_b) in pairwise(written):
            if off_b <= off_a:
                result.note("nonmonotonic_send", f"{producer} on {topic}-{partition}: {val_a} at offset {off_a} "
                                                 f"but the later {val_b} at {off_b}")


def _written_at(s: Send, final: _FinalIndex) -> Key | None:
    """Where a send was written: an ok send where its ack says, an info send where the final read has it
    (its history line knows no offset, nor even the partition); None if that is unknown."""
    if s.outcome == "ok":
        return None if s.offset is None else (s.topic, s.partition, s.offset)
    if s.outcome == "info":
        return final.where.get(s.value)
    return None            # a failed send is never written (g1a if it is)


# ---- polls: dirty reads, skips, going back ----------------------------------------------

# A consumer resumes after the last offset it polled, across sessions too: the client keeps its
# position on every partition until the workload closes it. The reasons a consumer may be elsewhere,
# each one counted in poll_resets (any other jump is poll_skip or nonmonotonic_poll):
#  - a new consumer (a session after consumer-error; or a partition it never read) has no position and
#    starts at the log start (auto.offset.reset=earliest): it may go back, and skip only what retention deleted;
#  - a consumer-reset without a reason (or "offset_out_of_range") is the one reset the client makes on its
#    own: auto.offset.reset=earliest on OFFSET_OUT_OF_RANGE, forward to the log start past deleted records
#    (a position beyond the log end cannot be a committed one: going back is an anomaly);
#  - a consumer-reset with reason "seek" is a seek the workload made.
SEEK = "seek"
AUTO_RESET = (None, "offset_out_of_range")

Stream = tuple[str, str, int]              # (consumer, topic, partition)


def _check_polls(history: History, final: _FinalIndex, result: CheckResult) -> set[str]:
    """Checks every poll; returns the values any consumer saw."""
    polled: set[str] = set()
    dirty: set[tuple[Key, str]] = set()
    starts = _session_starts(history.session_starts)
    last: dict[Stream, tuple[int, int]] = {}               # -> (session, last offset polled)
    for p in history.polls:
        if not p.records:
            continue
        stream = (p.consumer, p.topic, p.partition)
        prev = last.get(stream)
        expected = None                                    # the session's start is judged on its own
        if prev is not None and prev[0] == p.session:
            expected = prev[1] + 1
        else:
            _check_session_start(p, prev, starts, final, result)
        for offset, value in p.records:
            polled.add(value)
            if expected is not None and offset != expected:
                _note_jump(result, p, expected - 1, offset)
            expected = offset + 1
            why = final.mismatch(p.topic, p.partition, offset, value)
            if why is not None and ((p.topic, p.partition, offset), value) not in dirty:
                dirty.add(((p.topic, p.partition, offset), value))
                result.note("dirty_read", f"{p.consumer} polled {value} at {_at(p.topic, p.partition, offset)}; {why}")
        last[stream] = (p.session, p.records[-1][0])
    return polled


def _session_starts(events: list[SessionStart]) -> dict[tuple[str, int], SessionStart]:
    """(consumer, session) -> what started that session. The workload starts one session per event, in
    order, so an event without a session number starts the one after its consumer's previous event."""
    starts: dict[tuple[str, int], SessionStart] = {}
    latest: dict[str, int] = defaultdict(int)
    for e in events:
        session = latest[e.consumer] + 1 if e.session is None else e.session
        latest[e.consumer] = session
        starts[(e.consumer, session)] = e
    return starts


def _check_session_start(p: Poll, prev: tuple[int, int] | None, starts: dict[tuple[str, int], SessionStart],
                         final: _FinalIndex, result: CheckResult) -> None:
    """The first record of a session on a partition, against the reasons above."""
    first = p.records[0][0]
    read = final.reads.get((p.topic, p.partition))
    log_start = None if read is None else read.log_start_offset   # retention only moves it forward
    where = f"{p.consumer} session {p.session} on {p.topic}-{p.partition}"
    restart = None if prev is None else _new_consumer(starts, p.consumer, prev[0], p.session)
    if prev is None or restart is not None:
        # the log start when it started is at most the final one
        if log_start is None:
            result.note("unchecked_poll_starts", f"{where}: a new consumer at offset {first}, no final read")
        elif first > log_start:
            result.note("poll_skip", f"{where}: a new consumer started at offset {first} but the log starts at "
                                     f"{log_start} (t={p.time:.3f})")
        elif prev is not None and first != prev[1] + 1:
            result.note("poll_resets", f"{where}: offset {prev[1]} then {first}, a new consumer at the log start "
                                       f"after {restart.error}")
        return
    if first == prev[1] + 1:
        return
    explained = _explained_reset(starts.get((p.consumer, p.session)), p, prev[1], log_start)
    if explained is None:
        _note_jump(result, p, prev[1], first)
    else:
        name, why = explained
        result.note(name, f"{where}: offset {prev[1]} then {first}, {why}")


def _explained_reset(reset: SessionStart | None, p: Poll, prev: int,
                     log_start: int | None) -> tuple[str, str] | None:
    """("poll_resets" or "unchecked_poll_starts", why) if the consumer-reset that started the poll's
    session accounts for the jump from ``prev`` to the poll's first offset; None if nothing does."""
    first = p.records[0][0]
    if not (isinstance(reset, ConsumerReset) and reset.topic in (None, p.topic) and reset.partition == p.partition
            and (reset.from_offset, reset.to_offset) == (prev + 1, first)):
        return None                        # no record of this very jump
    if reset.reason == SEEK:
        return "poll_resets", "a seek by the workload"
    if reset.reason not in AUTO_RESET or first <= prev:
        return None                        # a committed position is never past the log end: no going back
    if log_start is None:
        return "unchecked_poll_starts", "reset forward with no final read to place the log start"
    if first <= log_start:
        return "poll_resets", "reset to the log start (offset out of range: retention deleted what it skips)"
    return None


def _new_consumer(starts: dict[tuple[str, int], SessionStart], consumer: str, after: int,
                  upto: int) -> ConsumerError | None:
    """The consumer-error that began a session in (after, upto]: the workload made a new consumer then."""
    for session in range(after + 1, upto + 1):
        start = starts.get((consumer, session))
        if isinstance(start, ConsumerError):
            return start
    return None


def _note_jump(result: CheckResult, p: Poll, prev: int, offset: int) -> None:
    kind = "poll_skip" if offset > prev + 1 else "nonmonotonic_poll"
    result.note(kind, f"{p.consumer} session {p.session} on {p.topic}-{p.partition}: "
                      f"offset {prev} then {offset} (t={p.time:.3f})")


def _count_unseen(sends: list[Send], polled: set[str], result: CheckResult) -> None:
    for s in sends:
        if s.outcome == "ok" and s.value not in polled:
            result.note("unseen", f"{s.value} acked at {_at(s.topic, s.partition, s.offset)}")


# ---- one value per offset, whoever says it ----------------------------------------------

def _claims(history: History) -> Iterable[tuple[TP, Iterable[Record], str]]:
    """Every (partition, records, who says so), the final read first so it is named in examples."""
    for f in history.finals:
        yield (f.topic, f.partition), f.records, "final read"
    for s in history.sends:
        if s.outcome == "ok" and s.offset is not None:
            yield (s.topic, s.partition), ((s.offset, s.value),), f"ack to {s.producer}"
    for p in history.polls:
        yield (p.topic, p.partition), p.records, f"poll by {p.consumer}"
    for r in history.replicas:
        # above its HW a replica may hold an uncommitted tail it has yet to truncate
        yield (r.topic, r.partition), (rec for rec in r.records if rec[0] < r.high_watermark), f"broker {r.broker}"


def _check_inconsistent_offsets(history: History, result: CheckResult) -> None:
    # per partition, offset -> the first value claimed and who claimed it; most claims repeat
    # one already made, so the hot path is one lookup and one comparison
    values: dict[TP, dict[int, str]] = defaultdict(dict)
    sources: dict[TP, dict[int, str]] = defaultdict(dict)
    conflicts: dict[Key, dict[str, str]] = {}
    for tp, records, source in _claims(history):
        log, who = values[tp], sources[tp]
        for offset, value in records:
            seen = log.get(offset)
            if seen is None:
                log[offset] = value
                who[offset] = source
            elif seen != value:
                conflicts.setdefault((*tp, offset), {seen: who[offset]}).setdefault(value, source)
    for key, claimed in conflicts.items():
        result.note("inconsistent_offsets", f"{_at(*key)}: " + ", ".join(f"{v} ({src})" for v, src in claimed.items()))


# ---- replicas after healing ---------------------------------------------------------------

def _check_replicas(dumps: list[ReplicaDump], final: _FinalIndex, result: CheckResult) -> None:
    """Each replica equals the final read below the final HW; with no final read, each pair
    agrees below the lower of their HWs. (With a final read the pairs need no check of their
    own: two copies equal to it up to its HW are equal up to anything lower.)"""
    by_tp: dict[TP, list[ReplicaDump]] = defaultdict(list)
    for d in dumps:
        by_tp[(d.topic, d.partition)].append(d)
    for (topic, partition), copies in by_tp.items():
        read = final.reads.get((topic, partition))
        if read is not None:
            for d in copies:
                at = _first_difference(d.records, read.records, read.log_start_offset, read.high_watermark)
                if at is not None:
                    result.note("replica_divergence", f"broker {d.broker}'s {topic}-{partition} differs from "
                                                      f"the final read at offset {at} (final HW {read.high_watermark})")
            continue
        for i, a in enumerate(copies):
            for b in copies[i + 1:]:
                at = _first_difference(a.records, b.records, 0, min(a.high_watermark, b.high_watermark))
                if at is not None:
                    result.note("replica_divergence", f"brokers {a.broker} and {b.broker} differ on "
                                                      f"{topic}-{partition} at offset {at} (no final read)")


def _first_difference(a: list[Record], b: list[Record], start: int, end: int) -> int | None:
    """The first offset in [start, end) where the two logs hold different values (or one has none)."""
    log_a = {o: v for o, v in a if start <= o < end}
    log_b = {o: v for o, v in b if start <= o < end}
    if log_a == log_b:
        return None
    return next(o for o in sorted(log_a.keys() | log_b.keys()) if log_a.get(o) != log_b.get(o))


def _check_epochs(dumps: list[ReplicaDump], result: CheckResult) -> None:
    """Invariant 4, at most one leader writes in a leader epoch: two replicas that hold an offset written
    in the same epoch hold the same record, in the same batch, there. Over the whole dump, above the HW
    too: a deposed leader's uncommitted tail may differ from its successor's log, but in an older epoch."""
    by_tp: dict[TP, list[tuple[int, dict[int, tuple]]]] = defaultdict(list)
    for d in dumps:
        if d.batches is None:
            result.note("unchecked_replica_epochs", f"broker {d.broker}'s {d.topic}-{d.partition}")
            continue
        by_tp[(d.topic, d.partition)].append((d.broker, _by_offset(d.records, d.batches)))
    for (topic, partition), copies in by_tp.items():
        for (broker_a, a), (broker_b, b) in combinations(copies, 2):
            clashes = sorted(o for o in a.keys() & b.keys() if a[o][0] == b[o][0] and a[o] != b[o])
            if clashes:
                o = clashes[0]
                result.note("epoch_divergence", f"brokers {broker_a} and {broker_b} differ on "
                                                f"{_at(topic, partition, o)} in leader epoch {a[o][0]}: {a[o][2]} "
                                                f"in batch {a[o][1]} vs {b[o][2]} in batch {b[o][1]} "
                                                f"(offsets that differ: {len(clashes)})")


def _by_offset(records: list[Record], batches: list[BatchEpoch]) -> dict[int, tuple[int, tuple[int, int, int], str]]:
    """offset -> (leader epoch, its batch's (base offset, last offset, CRC), value) of each record a
    batch covers. The CRC stands for the batch's bytes: a follower stores the leader's batches as they are."""
    out = {}
    ordered = sorted(batches)
    i = 0
    for offset, value in sorted(records):
        while i < len(ordered) and ordered[i][1] < offset:
            i += 1
        if i == len(ordered):
            break
        base, last, epoch, crc = ordered[i]
        if base <= offset:
            out[offset] = (epoch, (base, last, crc), value)
    return out


# ---- metadata and liveness ----------------------------------------------------------------

def _check_metadata(history: History, result: CheckResult) -> None:
    """Per sample leader ∈ ISR ⊆ replicas; per partition, in time order, epochs never go back."""
    last: dict[TP, tuple[int, int]] = {}
    for sample in sorted(history.metadata, key=lambda m: m.time):
        for p in sample.partitions:
            where = f"{p.topic}-{p.partition} at t={sample.time:.3f}"
            if p.leader != -1 and p.leader not in p.isr:
                result.note("metadata_violations", f"{where}: leader {p.leader} not in ISR {list(p.isr)}")
            if not set(p.isr) <= set(p.replicas):
                result.note("metadata_violations", f"{where}: ISR {list(p.isr)} not within replicas {list(p.replicas)}")
            epochs = (p.leader_epoch, p.partition_epoch)
            prev = last.get((p.topic, p.partition))
            if prev is not None and (epochs[0] < prev[0] or epochs[1] < prev[1]):
                result.note("metadata_violations", f"{where}: (leader epoch, partition epoch) went back "
                                                   f"from {prev} to {epochs}")
            last[(p.topic, p.partition)] = epochs


def _check_healed(history: History, result: CheckResult) -> None:
    if not history.healed:
        if history.nemeses:
            result.note("not_healed", f"no healed record after {len(history.nemeses)} nemesis events")
        return
    h = history.healed[-1]
    if h.recovery_s is None or h.recovery_s > h.bound_s:
        took = "never" if h.recovery_s is None else f"after {h.recovery_s:.1f} s"
        result.note("not_healed", f"every partition led with a full ISR: {took} (bound {h.bound_s:.1f} s, "
                                  f"healed at t={h.time:.3f})")
