"""The pure parts of `make bench` (bench/run.py): repetitions summarised against a target, the
failover window from ack times, lost and duplicated records, the table. No I/O, no clock."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """``bound`` is met when the figure's ``judged_on`` statistic ("median" or "max") is at most
    (``higher_is_better`` False) or at least (True) the bound."""
    bound: float
    higher_is_better: bool = False
    judged_on: str = "median"

    def met(self, summary: "Summary") -> bool:
        value = getattr(summary, self.judged_on)
        return value >= self.bound if self.higher_is_better else value <= self.bound

    def text(self, unit: str) -> str:
        bound = f"{self.bound:,.0f}" if self.bound >= 1000 else f"{self.bound:g}"
        return f"{'>=' if self.higher_is_better else '<='} {bound}{' ' + unit if unit else ''} ({self.judged_on})"

    def as_json(self) -> dict:
        return {"op": ">=" if self.higher_is_better else "<=", "bound": self.bound, "judged_on": self.judged_on}


@dataclass(frozen=True)
class Summary:
    values: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        return max(self.values)


@dataclass(frozen=True)
class Figure:
    """One measured quantity: its repetitions, unit, how it prints, and its target (if any)."""
    name: str
    label: str
    unit: str
    values: tuple[float, ...]
    target: Target | None = None
    decimals: int = 2

    @property
    def summary(self) -> Summary:
        return Summary(self.values)

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.summary)

    def fmt(self, value: float) -> str:
        return f"{value:,.{self.decimals}f}"

    def as_json(self) -> dict:
        s = self.summary
        return {"min": s.min, "median": s.median, "max": s.max, "values": list(self.values), "unit": self.unit,
                "target": None if self.target is None else self.target.as_json(), "met": self.met}


def failover_window(ack_times: Iterable[float], kill_time: float, look_ahead: int = 3) -> float | None:
    """Seconds from the last ack at or before ``kill_time`` to the first ack after it, taken as the
    longest gap between consecutive acks from that last one through the first ``look_ahead`` after
    the kill (None if there is no ack on either side).

    The longest gap, not simply the first ack after the kill: an answer that arrived just before the
    kill can be stamped just after it (the stamping thread waits for the GIL, up to 5 ms), and the
    stall then comes one ack later.
    """
    ordered = sorted(ack_times)
    before = [t for t in ordered if t <= kill_time]
    after = [t for t in ordered if t > kill_time][:look_ahead]
    if not before or not after:
        return None
    around = [before[-1], *after]
    return max(b - a for a, b in zip(around, around[1:]))


@dataclass(frozen=True)
class ReadBack:
    lost: int          # acknowledged values not read back
    duplicates: int    # extra copies of values read more than once


def read_back(acked: Iterable[bytes], read: Iterable[bytes]) -> ReadBack:
    counts = Counter(read)
    return ReadBack(sum(1 for v in set(acked) if v not in counts), sum(c - 1 for c in counts.values() if c > 1))


def table(figures: Iterable[Figure]) -> str:
    """figure | target | min | median | max | met? (with unit), one line each."""
    rows = [("figure", "target", "min", "median", "max", "met?")]
    for f in figures:
        s = f.summary
        met = "-" if f.met is None else ("yes" if f.met else "NO")
        rows.append((f"{f.label} ({f.unit})", "-" if f.target is None else f.target.text(f.unit),
                     f.fmt(s.min), f.fmt(s.median), f.fmt(s.max), met))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)
