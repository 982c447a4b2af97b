"""Unavailability windows: how long each fault kept producers from getting acks.

A fault's window is the longest silence between two consecutive acks on one partition
(completion times of ok sends) that overlaps the fault, taken over every partition: with
acks flowing every few milliseconds, that silence is the failover a client lived through
(leader gone, controller fences it after the session timeout, a new leader is elected,
the client refreshes its metadata and retries).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

from tests.chaos.history import History, NemesisEvent

TP = tuple[str, int]


class LeaderChange(NamedTuple):
    time: float
    partition: str                 # "topic-partition"
    old: int                       # -1: offline
    new: int
    epoch: int                     # the new leader epoch


@dataclass
class FaultWindow:
    kind: str
    targets: tuple[int, ...]
    start: float
    heal: float | None             # None: never healed on its own (the final heal ended it)
    window_s: float | None         # None: some partition never acked again after the fault
    leader_changes: list[LeaderChange]


def unavailability_windows(history: History) -> list[FaultWindow]:
    """One window per nemesis "start", over [start, its heal, else the next fault's start]."""
    acks = _ack_times(history)
    changes = _leader_changes(history)
    starts = sorted((e for e in history.nemeses if e.phase == "start"), key=lambda e: e.time)
    heals = [e for e in history.nemeses if e.phase == "heal"]
    used: set[int] = set()
    windows = []
    for i, fault in enumerate(starts):
        heal = _heal_time(fault, heals, used)
        end = heal if heal is not None else starts[i + 1].time if i + 1 < len(starts) else math.inf
        windows.append(FaultWindow(kind=fault.kind, targets=fault.targets, start=fault.time, heal=heal,
                                   window_s=_longest_gap(acks, fault.time, end),
                                   leader_changes=[c for c in changes if fault.time <= c.time <= end]))
    return windows


def _ack_times(history: History) -> dict[TP, list[float]]:
    acks: dict[TP, list[float]] = defaultdict(list)
    for s in history.sends:
        if s.outcome == "ok":
            acks[(s.topic, s.partition)].append(s.completed)
    for times in acks.values():
        times.sort()
    return acks


def _longest_gap(acks: dict[TP, list[float]], start: float, end: float) -> float | None:
    """The longest gap between consecutive acks of one partition that overlaps [start, end]."""
    longest = 0.0
    for times in acks.values():
        after = bisect_right(times, start)          # the first ack after the fault started
        if after == len(times):
            return None                             # this partition never acked again
        j = max(after, 1)
        while j < len(times) and times[j - 1] < end:
            longest = max(longest, times[j] - times[j - 1])
            j += 1
    return longest


def _heal_time(fault: NemesisEvent, heals: list[NemesisEvent], used: set[int]) -> float | None:
    """The first unused heal of the same kind after the fault, preferring the same targets."""
    later = [i for i, h in enumerate(heals) if i not in used and h.kind == fault.kind and h.time >= fault.time]
    candidates = [i for i in later if heals[i].targets == fault.targets] or later
    if not candidates:
        return None
    pick = candidates[0]
    used.add(pick)
    return heals[pick].time


def _leader_changes(history: History) -> list[LeaderChange]:
    """Leader changes in time order. Samples come from brokers with views of different age,
    so a sample counts only if its leader epoch is newer than any seen: a stale view must
    not read as a change back and forth."""
    current: dict[TP, tuple[int, int]] = {}         # tp -> (leader, leader epoch)
    changes = []
    for sample in sorted(history.metadata, key=lambda m: m.time):
        for p in sample.partitions:
            tp = (p.topic, p.partition)
            known = current.get(tp)
            if known is not None and p.leader_epoch <= known[1]:
                continue
            current[tp] = (p.leader, p.leader_epoch)
            if known is not None and p.leader != known[0]:
                changes.append(LeaderChange(sample.time, f"{p.topic}-{p.partition}", known[0], p.leader,
                                            p.leader_epoch))
    return changes
