"""The consumer-group invariants over one group round's merged history (group_round.py), each counted.

The history's records (JSON objects, "f" names the kind; times are time.time() seconds):
``send`` (workload.py: the producer's sends and their acks), ``gm-read`` / ``gm-commit`` / ``gm-assign``
/ ``gm-state`` / ``gm-lost`` (group_member.py), ``gm-sample`` (the sampler's committed offsets, with the
call's ``invoked`` and completion ``time``) and ``gm-stable`` (the round's stability measurement).

1. commit_regression, sample_regression: what the group committed never goes back. Per partition, a
   successful commit or a sample that *started after* another successful commit or sample *completed*
   must not be lower (operations that overlap in time are not ordered, so a member stopped between
   its commit's answer and writing it down cannot fake a regression). A coordinator failover that
   forgets or rolls back an acknowledged commit shows here: a sample, or the new owner's commits,
   below it. ``max_commit_regression`` is the largest drop seen (0 when the invariant holds).
2. double_owner: no partition is owned by two members in the same generation (every assignment a
   member reports, at its assign callback and after each poll, is a claim for that generation).
3. lost, inconsistent_read: every acknowledged record is read by some member at least once (at-least-
   once through every rebalance and failover: a commit past a record nobody read is a gap); a read at
   an acknowledged offset of another value is inconsistent. ``read`` counts the acked records read.
4. not_stable: after the heal, the group was stable again within the bound the round states.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from tests.chaos.checker import AnomalyCounts

ANOMALIES = ("commit_regression", "sample_regression", "double_owner", "lost", "inconsistent_read", "not_stable")
MAX_EXAMPLES = 5

TP = tuple[str, int]


@dataclass
class GroupCheckResult(AnomalyCounts):
    """Counts of each anomaly (0 = the invariant held), what happened, and a few examples of each."""
    # what happened
    acked: int = 0                  # acknowledged sends
    read: int = 0                   # acknowledged records some member read
    reads: int = 0                  # records read in all (a record read again after a rebalance counts again)
    re_read: int = 0                # acknowledged records read more than once (at-least-once redelivery)
    commits: int = 0                # successful commits
    commit_errors: Counter = field(default_factory=Counter)   # failed commits by error (CommitFailedError, ...)
    samples: int = 0                # committed-offset samples
    lost_callbacks: int = 0         # on_lost calls (a member found out it was evicted)
    generations: int = 0            # distinct generations members reported
    members: int = 0                # member processes in the history
    max_commit_regression: int = 0  # the largest drop of a committed offset (commits and samples)
    stable_s: float | None = None   # heal -> stable, as the round measured it
    stable_bound_s: float | None = None
    # the anomalies (ANOMALIES)
    commit_regression: int = 0
    sample_regression: int = 0
    double_owner: int = 0
    lost: int = 0
    inconsistent_read: int = 0
    not_stable: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    anomaly_names = ANOMALIES

    def format(self) -> str:
        found = ", ".join(f"{name} {count}" for name, count in self.anomalies.items())
        stable = "-" if self.stable_s is None else f"{self.stable_s:.2f} s"
        bound = "-" if self.stable_bound_s is None else f"{self.stable_bound_s:.0f} s"
        lines = [f"group check: {'OK' if self.ok else 'FAILED (' + found + ')'}",
                 f"  acked {self.acked}, read {self.read} (records read in all {self.reads}, acked read more than "
                 f"once {self.re_read}), lost {self.lost}",
                 f"  commits ok {self.commits}, failed {dict(self.commit_errors)}; samples {self.samples}; "
                 f"max commit regression {self.max_commit_regression}",
                 f"  members {self.members}, generations {self.generations}, lost callbacks {self.lost_callbacks}; "
                 f"stable after heal {stable} (bound {bound})"]
        for name in ANOMALIES:
            lines.append(f"  {name:<18} {getattr(self, name)}")
            lines += [f"    - {e}" for e in self.examples.get(name, [])]
        return "\n".join(lines)


def read_records(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def check_group_file(path: str | Path) -> GroupCheckResult:
    return check_group(read_records(path))


def check_group(records: Iterable[dict]) -> GroupCheckResult:
    records = list(records)
    result = GroupCheckResult()
    t0 = min((_time(r) for r in records), default=0.0)
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_kind[r.get("f", "")].append(r)
    result.members = len({r["member"] for k in ("gm-start", "gm-read", "gm-commit", "gm-state") for r in by_kind[k]})
    result.lost_callbacks = len(by_kind["gm-lost"])
    _check_committed(by_kind, result, t0)
    _check_owners(by_kind, result)
    _check_reads(by_kind, result)
    _check_stable(by_kind, result)
    return result


def _time(r: dict) -> float:
    for k in ("time", "completed", "invoked"):
        v = r.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return 0.0


# ---- 1. committed offsets never go back -----------------------------------------------------------

@dataclass(frozen=True)
class _Observed:
    invoked: float
    completed: float
    offset: int
    kind: str          # "commit" or "sample"
    label: str         # who, for the examples


def _check_committed(by_kind: dict[str, list[dict]], result: GroupCheckResult, t0: float) -> None:
    observed: dict[TP, list[_Observed]] = defaultdict(list)
    for c in by_kind["gm-commit"]:
        if c.get("outcome") != "ok":
            result.commit_errors[c.get("error") or "unknown"] += 1
            continue
        result.commits += 1
        for p, offset in c["offsets"]:
            observed[(c.get("topic", ""), p)].append(_Observed(
                c["invoked"], c["time"], offset, "commit", f"{c['member']} (generation {c.get('generation')})"))
    for s in by_kind["gm-sample"]:
        result.samples += 1
        for p, offset in s["offsets"]:
            observed[(s.get("topic", ""), p)].append(_Observed(s["invoked"], s["time"], offset, "sample", "sampler"))
    for (topic, p), obs in sorted(observed.items()):
        _check_order(topic, p, obs, result, t0)


def _check_order(topic: str, partition: int, obs: list[_Observed], result: GroupCheckResult, t0: float) -> None:
    """Each observation vs the highest one that completed before it was invoked."""
    by_completion = sorted(obs, key=lambda o: o.completed)
    best: _Observed | None = None
    i = 0
    for o in sorted(obs, key=lambda o: o.invoked):
        while i < len(by_completion) and by_completion[i].completed < o.invoked:
            if best is None or by_completion[i].offset > best.offset:
                best = by_completion[i]
            i += 1
        if best is not None and o.offset < best.offset:
            drop = best.offset - o.offset
            result.max_commit_regression = max(result.max_commit_regression, drop)
            name = "commit_regression" if o.kind == "commit" else "sample_regression"
            result.note(name, f"{topic}-{partition}: {o.kind} {o.offset} by {o.label} invoked at "
                              f"+{o.invoked - t0:.3f} s, after {best.kind} {best.offset} by {best.label} completed at "
                              f"+{best.completed - t0:.3f} s (back by {drop})")


# ---- 2. one owner per partition and generation -------------------------------------------------------

def _check_owners(by_kind: dict[str, list[dict]], result: GroupCheckResult) -> None:
    owners: dict[tuple[int, int], dict[str, str]] = defaultdict(dict)   # (generation, partition) -> member id -> name
    generations = set()
    for r in by_kind["gm-assign"] + by_kind["gm-state"]:
        g = r.get("generation", -1)
        if g is None or g < 0:
            continue
        generations.add(g)
        for p in r.get("assignment", ()):
            owners[(g, p)][r["member_id"]] = r["member"]
    result.generations = len(generations)
    for (g, p), who in sorted(owners.items()):
        if len(who) > 1:
            result.note("double_owner", f"partition {p} owned in generation {g} by "
                                        + ", ".join(f"{name} ({mid})" for mid, name in sorted(who.items())))


# ---- 3. no gap: every acked record read ------------------------------------------------------------

def _check_reads(by_kind: dict[str, list[dict]], result: GroupCheckResult) -> None:
    read: dict[tuple[str, int, int], Counter] = defaultdict(Counter)   # (topic, partition, offset) -> value -> times
    values_of: dict[TP, set[str]] = defaultdict(set)
    for r in by_kind["gm-read"]:
        for offset, value in r["records"]:
            read[(r.get("topic", ""), r["partition"], offset)][value] += 1
            values_of[(r.get("topic", ""), r["partition"])].add(value)
            result.reads += 1
    for s in by_kind["send"]:
        if s.get("outcome") != "ok":
            continue
        result.acked += 1
        topic, p, offset, value = s["topic"], s["partition"], s.get("offset"), s["value"]
        if offset is None:   # acked without an offset: it must be somewhere in its partition
            if value in values_of[(topic, p)]:
                result.read += 1
            else:
                result.note("lost", f"{value} acked (no offset) by {topic}-{p}, never read")
            continue
        seen = read.get((topic, p, offset))
        if not seen:
            result.note("lost", f"{value} acked at {topic}-{p}@{offset}, never read by any member")
        elif value not in seen:
            result.note("inconsistent_read", f"{value} acked at {topic}-{p}@{offset}, members read "
                                             f"{sorted(seen)} there")
        else:
            result.read += 1
            result.re_read += seen[value] > 1


# ---- 4. stable again after the heal ------------------------------------------------------------------

def _check_stable(by_kind: dict[str, list[dict]], result: GroupCheckResult) -> None:
    stables = by_kind["gm-stable"]
    if not stables:
        if by_kind["nemesis"]:
            result.note("not_stable", "no gm-stable record after the nemesis")
        return
    s = stables[-1]
    result.stable_s, result.stable_bound_s = s.get("stable_s"), s.get("bound_s")
    if result.stable_s is None or (result.stable_bound_s is not None and result.stable_s > result.stable_bound_s):
        took = "never" if result.stable_s is None else f"after {result.stable_s:.2f} s"
        result.note("not_stable", f"stable again {took} (bound {result.stable_bound_s} s); last seen: {s.get('view')}")
