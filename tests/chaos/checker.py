"""The chaos checker: the invariants of DESIGN.md §8 over one run's history.

The anomalies follow Jepsen's queue checkers (jepsen-io/redpanda): lost, duplicate,
inconsistent-offsets, nonmonotonic-send, G1a, poll-skip, nonmonotonic-poll; plus a dirty
read (a consumer saw a record that later vanished), replica divergence after healing,
metadata sanity and liveness after the final heal. The final read through each partition's
leader is the reference: it is what every consumer may see from now on.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Iterable

from tests.chaos.history import FinalRead, History, Record, ReplicaDump, Send

TP = tuple[str, int]               # (topic, partition)
Key = tuple[str, int, int]         # (topic, partition, offset)

ANOMALIES = ("lost", "duplicate", "inconsistent_offsets", "nonmonotonic_send", "g1a", "dirty_read",
             "poll_skip", "nonmonotonic_poll", "replica_divergence", "metadata_violations", "not_healed")
MAX_EXAMPLES = 5


@dataclass
class CheckResult:
    """Counts of each anomaly (0 = the invariant held) and a few examples of each."""
    # what happened
    acked: int = 0                 # ok sends
    failed: int = 0                # fail sends
    unknown: int = 0               # info sends
    unknown_found: int = 0         # info sends that made it into the final read
    final_records: int = 0
    unseen: int = 0                # ok sends no poll saw: liveness, not safety, while `lost` is 0
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
    metadata_violations: int = 0
    not_healed: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(getattr(self, name) for name in ANOMALIES)

    @property
    def anomalies(self) -> dict[str, int]:
        """The anomalies that occurred, with their counts."""
        return {name: getattr(self, name) for name in ANOMALIES if getattr(self, name)}

    def note(self, name: str, example: str) -> None:
        """Count one occurrence of ``name`` (an anomaly, or "unseen"), keeping the first few examples."""
        setattr(self, name, getattr(self, name) + 1)
        kept = self.examples.setdefault(name, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append(example)

    def format(self) -> str:
        found = ", ".join(f"{name} {count}" for name, count in self.anomalies.items())
        lines = [f"chaos check: {'OK' if self.ok else 'FAILED (' + found + ')'}",
                 f"  sends: {self.acked} acked (ok), {self.failed} failed, {self.unknown} unknown "
                 f"(info; {self.unknown_found} of them in the final read)",
                 f"  final read: {self.final_records} records; unseen (acked, never polled): {self.unseen}"]
        lines += [f"    - {e}" for e in self.examples.get("unseen", [])]
        for name in ANOMALIES:
            lines.append(f"  {name:<21} {getattr(self, name)}")
            lines += [f"    - {e}" for e in self.examples.get(name, [])]
        return "\n".join(lines)


def check(history: History) -> CheckResult:
    result = CheckResult()
    final = _FinalIndex(history.finals, result)
    _check_sends(history.sends, final, result)
    _check_send_order(history.sends, result)
    polled = _check_polls(history, final, result)
    _count_unseen(history.sends, polled, result)
    _check_inconsistent_offsets(history, result)
    _check_replicas(history.replicas, final, result)
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


def _check_send_order(sends: list[Send], result: CheckResult) -> None:
    """Per producer and partition, acked offsets increase with the send index (nonmonotonic-send)."""
    streams: dict[tuple[str, str, int], list[tuple[int, int, str]]] = defaultdict(list)
    for s in sends:
        if s.outcome == "ok" and s.offset is not None:
            streams[(s.producer, s.topic, s.partition)].append((s.index, s.offset, s.value))
    for (producer, topic, partition), acked in streams.items():
        acked.sort()
        for (_, off_a, val_a), (_, off_b, val_b) in pairwise(acked):
            if off_b <= off_a:
                result.note("nonmonotonic_send", f"{producer} on {topic}-{partition}: {val_a} at offset {off_a} "
                                                 f"but the later {val_b} at {off_b}")


# ---- polls: dirty reads, skips, going back ----------------------------------------------

def _check_polls(history: History, final: _FinalIndex, result: CheckResult) -> set[str]:
    """Checks every poll; returns the values any consumer saw."""
    polled: set[str] = set()
    dirty: set[tuple[Key, str]] = set()
    last: dict[tuple[str, int, str, int], int] = {}        # (consumer, session, tp) -> last offset
    for p in history.polls:
        stream = (p.consumer, p.session, p.topic, p.partition)
        prev = last.get(stream)
        for offset, value in p.records:
            polled.add(value)
            if prev is not None and offset != prev + 1:
                kind = "poll_skip" if offset > prev + 1 else "nonmonotonic_poll"
                result.note(kind, f"{p.consumer} session {p.session} on {p.topic}-{p.partition}: "
                                  f"offset {prev} then {offset} (t={p.time:.3f})")
            prev = offset
            why = final.mismatch(p.topic, p.partition, offset, value)
            if why is not None and ((p.topic, p.partition, offset), value) not in dirty:
                dirty.add(((p.topic, p.partition, offset), value))
                result.note("dirty_read", f"{p.consumer} polled {value} at {_at(p.topic, p.partition, offset)}; {why}")
        if prev is not None:
            last[stream] = prev
    return polled


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
