"""Chaos rounds and the soak: workload + one seeded fault + heal + read back + check, then a report.

One round, on a running ChaosCluster (tests/chaos/harness.py):

1. a fresh topic (3 partitions, RF 3, min ISR 2); producers and consumers start (workload.py),
   a sampler writes the committed metadata every 200 ms;
2. after a warm-up the round's nemesis (nemesis.py) strikes, is held for a seeded time, healed
   (a nemesis that re-creates the topic: the old incarnation is read back first, and a new
   workload writes the new one under the history name "<topic>#1");
3. the partitions must be led with a full ISR again within HEAL_BOUND_S (recorded as "healed"),
   and only then does the nemesis let go of what it held past its heal (release);
4. the workload runs on a little, producers stop (every send gets its outcome), consumers read
   up to the high watermarks, every replica's files are dumped;
5. the history (JSON lines) is checked (checker.py) and the unavailability windows measured
   (windows.py).

The schedule (which nemesis, which targets, how long) comes from one seed: a failing
round prints the seed and the commit, and ``--seeds S --rounds N`` replays it (with the
``--brokers`` and ``--nemeses`` of the run).

    python -m tests.chaos.runner --rounds 50 --seeds 7 --out chaos-report      (make chaos)
    python -m tests.chaos.runner --rounds 8 --brokers 4 --nemeses topic-recreate,wipe-data
    python -m tests.chaos.runner --rounds 4 --nemeses group-kill-member,group-pause-member

Consumer-group faults (group_nemesis.py: kill -9 of the group's coordinator in a rebalance or under
commits, a member paused past its session, a member killed) run as group rounds (group_round.py:
member processes, a committed-offsets sampler, group_checker.py); the soak runs each once after the
broker faults, and picks among all kinds after that.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from raftka_testing.cluster import REPO, replica_offsets, wait_for
from raftka_testing.netns import Network, unavailable_reason
from tests.chaos.checker import CheckResult, check
from tests.chaos.group_nemesis import GROUP_NEMESES
from tests.chaos.group_round import (GROUP_CONFIG, MEMBERS, PARTITIONS as GROUP_PARTITIONS, SESSION_TIMEOUT_MS,
                                    STABLE_BOUND_S, run_group_round, spread)
from tests.chaos.harness import N_BROKERS, ChaosCluster
from tests.chaos.history import History, read_history
from tests.chaos.nemesis import NEMESES, Nemesis, make
from tests.chaos.net_nemesis import NET_NEMESES
from tests.chaos.windows import FaultWindow, unavailability_windows
from tests.chaos.workload import HistoryWriter, Workload, WorkloadConfig

PARTITIONS = 3
HEAL_BOUND_S = 30.0
# Shorter than the defaults so that a round's failover fits in seconds; the same rules apply.
CLUSTER_CONFIG = {"broker.session.timeout.ms": 2000, "replica.lag.time.max.ms": 2000}
KINDS = [*NEMESES, *GROUP_NEMESES]   # the soak's fault kinds (make chaos)
# Network faults need brokers on hosts of their own (root, network namespaces): make chaos-net, --net.
ACCEPTED = [*KINDS, *NET_NEMESES]    # every fault kind --nemeses accepts


def make_nemesis(name: str, cluster: ChaosCluster) -> Nemesis:
    return NET_NEMESES[name](cluster) if name in NET_NEMESES else make(name, cluster)


@dataclass
class RoundResult:
    index: int
    seed: int
    nemesis: str
    targets: list[int]
    detail: str
    started: float                 # seconds since the run started
    history_path: Path
    check: CheckResult
    windows: list[FaultWindow]
    recovery_s: float | None       # heal -> every partition led with a full ISR
    workload_errors: list[str] = field(default_factory=list)
    replay: str = ""               # the command that replays the round (set by run())

    @property
    def ok(self) -> bool:
        return self.check.ok and not self.workload_errors


def commit() -> str:
    """The commit under test, "-dirty" if the tree has changes (printed with every seed)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def schedule(seed: int, rounds: int, kinds: list[str] | None = None) -> list[str]:
    """The nemeses of ``rounds`` rounds: each kind once in a seeded order, then seeded random picks.
    Without ``kinds`` (the soak): every broker fault once, then every group fault once, then picks among all
    (the first len(NEMESES) rounds are what they were before group faults existed)."""
    rng = random.Random(seed)
    if kinds:
        first = rng.sample(kinds, len(kinds))
    else:
        first = rng.sample(list(NEMESES), len(NEMESES)) + rng.sample(list(GROUP_NEMESES), len(GROUP_NEMESES))
        kinds = KINDS
    return (first + [rng.choice(kinds) for _ in range(max(rounds - len(first), 0))])[:rounds]


class MetadataSampler(threading.Thread):
    """Writes the committed metadata to the history every ``interval`` s: the active controller's own
    answer only (a broker that is not the controller may serve an older image, which is allowed and
    says nothing about what the quorum committed). ``label``: the topic's name in the history."""

    def __init__(self, cluster: ChaosCluster, topic: str, history: HistoryWriter, interval: float = 0.2,
                 label: str | None = None):
        super().__init__(name="chaos-sampler", daemon=True)
        self._cluster, self._topic, self._history, self._interval = cluster, topic, history, interval
        self._label = label or topic
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self._interval):
            try:
                sample = self._cluster.sample(self._topic, self._history.now(), self._label)
                if sample["controller"] is not None:
                    self._history.write(sample)
            except Exception:  # noqa: BLE001 - no broker answered this time (e.g. all killed): skip the sample
                continue

    def stop(self) -> None:
        self._done.set()
        self.join(10)


class Incarnation:
    """One incarnation of the round's topic as the history sees it: a workload and a metadata sampler that
    write under ``label``, then the read-back. A re-created topic gets a second one with its own label and
    producer names, so the checker judges it as the fresh topic it must be."""

    def __init__(self, cluster: ChaosCluster, topic: str, label: str, history: HistoryWriter, rng: random.Random,
                 config: WorkloadConfig, prefix: str):
        self.cluster, self.topic, self.label, self.history = cluster, topic, label, history
        self.load = Workload(cluster.bootstrap, topic, history, rng, config, prefix=prefix, label=label)
        self.sampler = MetadataSampler(cluster, topic, history, label=label)

    def start(self) -> "Incarnation":
        self.load.start()
        self.sampler.start()
        return self

    def abort(self) -> None:
        """A failed round: stop every thread, read nothing back."""
        self.load.stop_producers()
        self.load.stop_consumers()
        self.sampler.stop()

    def read_back(self) -> None:
        """Producers stop (every send gets its outcome); each partition is read through its leader up to the
        HW (the reference), the consumers read up to there, every replica's files are dumped."""
        self.load.stop_producers()
        finals = self.cluster.final_read(self.topic, label=self.label)
        for f in finals:
            self.history.write(f)
        hws = {f["partition"]: f["high_watermark"] for f in finals}
        try:
            wait_for(lambda: self.load.read_up_to(hws), 30, "the consumers to read up to the high watermarks", 0.1)
        except AssertionError as e:
            self.load.errors.append(str(e))
        self.load.stop_consumers()
        self.sampler.stop()
        _wait_replicas_caught_up(self.cluster, self.topic, hws)
        for dump in self.cluster.replica_dumps(self.topic, self.label):
            self.history.write(dump)


def run_round(cluster: ChaosCluster, index: int, seed: int, nemesis_name: str, out_dir: Path, run_started: float,
              workload: WorkloadConfig = WorkloadConfig(), warmup_s: float = 1.5, settle_s: float = 1.5) -> RoundResult:
    rng = random.Random(f"{seed}-{index}")
    topic = f"chaos-{index}"
    path = out_dir / f"round-{index:03d}-{nemesis_name}.jsonl"
    cluster.create_topic(topic, PARTITIONS)
    started = time.monotonic() - run_started
    nemesis = make_nemesis(nemesis_name, cluster)
    errors: list[str] = []
    with path.open("w") as fh:
        history = HistoryWriter(fh, run_started)
        current: Incarnation | None = Incarnation(cluster, topic, topic, history, rng, workload, f"r{index}").start()
        try:
            wait_for(lambda: current.load.acked >= 20 or current.load.errors, 30, "the workload's first acks")
            time.sleep(warmup_s)   # the schedule: let acks flow before the fault (not an assertion)
            if nemesis.recreates_topic:   # the old incarnation is judged on its own, before it is deleted
                current.read_back()
                errors += current.load.errors
                current = None
            struck = history.now()   # before start(): a rolling restart does its whole roll inside it
            event = nemesis.start(cluster, topic, rng)
            history.write(event.to_record("start", struck))
            if current is None:
                current = Incarnation(cluster, topic, f"{topic}#1", history, rng, workload, f"r{index}i1").start()
            time.sleep(rng.uniform(*nemesis.hold_range()))   # the schedule: how long the fault lasts
            nemesis.heal(cluster)
            history.write(event.to_record("heal", history.now()))
            recovery = cluster.wait_healed(topic, HEAL_BOUND_S)
            history.write({"f": "healed", "time": history.now(), "recovery_s": recovery, "bound_s": HEAL_BOUND_S})
            nemesis.release(cluster)
            time.sleep(settle_s)   # acks must flow again after the heal (the window's end)
        except BaseException:
            if current is not None:
                current.abort()
            raise
        finally:
            nemesis.release(cluster)
        current.read_back()
    history_read = read_history(path)
    windows = _windows(history_read, current.label)
    # A nemesis may promise more than safety: which side keeps serving (net_nemesis.py).
    broken = nemesis.broken_promise(windows[0], cluster.session_timeout_s) if windows else None
    return RoundResult(index, seed, nemesis_name, list(event.targets), event.detail, started, path,
                       check(history_read), windows, recovery,
                       errors + current.load.errors + ([f"promise broken: {broken}"] if broken else []))


@contextlib.contextmanager
def hosts_for(names: list[str], brokers: int) -> Iterator[Network | None]:
    """A network of hosts (one per broker, behind one router) when a network fault is scheduled, else None.
    The brokers stop before it goes (ChaosCluster closes first, inside this)."""
    if not set(names) & set(NET_NEMESES):
        yield None
        return
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"network faults need network namespaces: {reason}")
    network = Network([f"b{i}" for i in range(1, brokers + 1)]).create()
    try:
        yield network
    finally:
        network.destroy()


def run_short(cluster: ChaosCluster, kinds: list[str], seed: int, out_dir: Path) -> list[RoundResult]:
    """`make test`'s short run on a started cluster: each kind once, with a shorter lead-in and settling than
    a soak's, printing a line per round; it stops after the first failing round (the last result)."""
    results: list[RoundResult] = []
    run_started = time.monotonic()
    for index, kind in enumerate(kinds):
        result = run_round(cluster, index, seed, kind, out_dir, run_started, warmup_s=0.75, settle_s=1.0)
        results.append(result)
        window = result.windows[0].window_s if result.windows else None
        print(f"  round {index} {kind:<23} targets {result.targets}: acked {result.check.acked}, unknown "
              f"{result.check.unknown}, final {result.check.final_records}, window {_s(window)}, "
              f"recovery {_s(result.recovery_s)}: {result.detail}", flush=True)
        if not result.ok:
            break
    return results


def _windows(history: History, label: str) -> list[FaultWindow]:
    """The unavailability windows, measured on the acks of the topic incarnation that lived through the
    fault (a re-created topic's old one stopped before it)."""
    return unavailability_windows(replace(history, sends=[s for s in history.sends if s.topic == label]))


def _wait_replicas_caught_up(cluster: ChaosCluster, topic: str, hws: dict[int, int]) -> None:
    """Producers stopped: let every follower fetch up to the final HW before its files are read."""
    def caught_up() -> bool:   # offsets only: the segment files are read once, after this
        for p in cluster.partitions(topic):
            for broker_id in p.replicas:
                offsets = replica_offsets(cluster.broker(broker_id), topic, p.partition)
                if offsets is None or min(offsets.log_end_offset, offsets.high_watermark) < hws.get(p.partition, 0):
                    return False
        return True
    try:
        wait_for(caught_up, 15, f"every replica of {topic} to reach the final HW", 0.2)
    except AssertionError:
        pass  # the checker reports the divergence with the exact offsets


def replay_command(seed: int, rounds: int, brokers: int = N_BROKERS, kinds: list[str] | None = None,
                   voters: int | None = None) -> str:
    """The runner command that replays a seed's schedule up to round ``rounds - 1``."""
    return (f"python -m tests.chaos.runner --seeds {seed} --rounds {rounds}"
            + (f" --brokers {brokers}" if brokers != N_BROKERS else "")
            + (f" --voters {voters}" if voters is not None else "")
            + (f" --nemeses {','.join(kinds)}" if kinds else ""))


def failure_message(result: RoundResult, seed: int, commit_id: str) -> str:
    replay = result.replay or replay_command(seed, result.index + 1)
    return (f"chaos round {result.index} ({result.nemesis} on {result.targets}: {result.detail}) FAILED\n"
            f"seed {seed}, commit {commit_id}; replay: {replay}\nhistory: {result.history_path}\n"
            f"{result.check.format()}\n"
            + (f"{result.group_check.format()}\n{result.summary()}\n" if hasattr(result, "group_check") else "")
            + "".join(f"workload error: {e}\n" for e in result.workload_errors))


def run(seeds: list[int], rounds: int, out_dir: Path, kinds: list[str] | None = None,
        log=lambda line: print(line, flush=True), brokers: int = N_BROKERS,
        voters: int | None = None) -> list[RoundResult]:
    commit_id = commit()
    results: list[RoundResult] = []
    for seed in seeds:
        log(f"chaos: seed {seed}, commit {commit_id}, {brokers} brokers"
            + (f" (brokers 1-{voters} vote, the others observe)" if voters is not None else "")
            + f", {rounds} rounds, histories in {out_dir}")
        seed_dir = out_dir / f"seed-{seed}"
        shutil.rmtree(seed_dir / "cluster", ignore_errors=True)   # a replay starts from empty logs
        seed_dir.mkdir(parents=True, exist_ok=True)
        run_started = time.monotonic()
        names = schedule(seed, rounds, kinds)
        config = {**CLUSTER_CONFIG, **GROUP_CONFIG} if set(names) & set(GROUP_NEMESES) else CLUSTER_CONFIG
        with hosts_for(names, brokers) as network, ChaosCluster(seed_dir / "cluster", config, brokers,
                                                                network=network, voters=voters) as cluster:
            cluster.start()
            for index, name in enumerate(names):
                if name in GROUP_NEMESES:
                    result = run_group_round(cluster, index, seed, name, seed_dir, run_started)
                else:
                    result = run_round(cluster, index, seed, name, seed_dir, run_started)
                result.replay = replay_command(seed, index + 1, brokers, kinds, voters)
                results.append(result)
                w = result.windows[0].window_s if result.windows else None
                log(f"  round {index:3d} {name:<23} targets {result.targets} acked {result.check.acked:5d} "
                    f"unknown {result.check.unknown:3d} window {_s(w)} recovery {_s(result.recovery_s)} "
                    f"{'ok' if result.ok else 'FAILED'}")
                if name in GROUP_NEMESES:
                    log(f"      {result.summary()}")
                if not result.ok:
                    log(failure_message(result, seed, commit_id))
    return results


# ---- the soak report --------------------------------------------------------------


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def report(results: list[RoundResult], seeds: list[int], commit_id: str, duration_s: float,
           brokers: int = N_BROKERS) -> str:
    lines = ["# raftka chaos soak", "",
             f"Seeds {', '.join(map(str, seeds))}; commit {commit_id}; {brokers} brokers; {len(results)} rounds in "
             f"{duration_s / 60:.1f} min; cluster config {CLUSTER_CONFIG}; topic per round: {PARTITIONS} "
             "partitions, RF 3, min ISR 2; idempotent acks=all producers.", "",
             f"**Verdict: {'every invariant held' if all(r.ok for r in results) else 'ANOMALIES FOUND'}** "
             f"({sum(not r.ok for r in results)} failing round(s)).", "",
             "## Summary per fault kind", "",
             "Window = the longest gap between two acks on one partition overlapping the fault (min / median / "
             "max); recovery = heal to every partition led with a full ISR.", "",
             "| fault | rounds | acked | unknown | lost | duplicates | other anomalies | window s | recovery s |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for kind in ACCEPTED:
        rs = [r for r in results if r.nemesis == kind]
        if not rs:
            continue
        other = sum(sum(r.check.anomalies.values()) - r.check.lost - r.check.duplicate for r in rs)
        windows = [w.window_s for r in rs for w in r.windows if w.window_s is not None]
        lines.append(f"| {kind} | {len(rs)} | {sum(r.check.acked for r in rs)} | {sum(r.check.unknown for r in rs)} "
                     f"| {sum(r.check.lost for r in rs)} | {sum(r.check.duplicate for r in rs)} | {other} "
                     f"| {_spread(windows)} | {_spread([r.recovery_s for r in rs if r.recovery_s is not None])} |")
    total = [sum(getattr(r.check, k) for r in results) for k in ("acked", "unknown", "lost", "duplicate")]
    lines += [f"| **all** | {len(results)} | {total[0]} | {total[1]} | {total[2]} | {total[3]} | "
              f"{sum(sum(r.check.anomalies.values()) for r in results) - total[2] - total[3]} | "
              f"{_spread([w.window_s for r in results for w in r.windows if w.window_s is not None])} | "
              f"{_spread([r.recovery_s for r in results if r.recovery_s is not None])} |", ""]
    lines += _group_summary([r for r in results if r.nemesis in GROUP_NEMESES])
    failing = [r for r in results if not r.ok]
    if failing:
        lines += ["## Failing rounds", ""]
        for r in failing:
            lines += ["```", failure_message(r, r.seed, commit_id).rstrip(), "```", ""]
    lines += ["## Timeline", "", "Times are seconds since the seed's run started.", "",
              "| seed | round | at s | fault | targets | leader changes (partition: old -> new @ epoch) | "
              "window s | recovery s | result |", "|---:|---:|---:|---|---|---|---|---|---|"]
    for r in results:
        changes = "; ".join(f"{c.partition}: {c.old} -> {c.new} @ {c.epoch} (+{c.time - r.windows[0].start:.2f})"
                            for w in r.windows for c in w.leader_changes) if r.windows else ""
        w = r.windows[0].window_s if r.windows else None
        lines.append(f"| {r.seed} | {r.index} | {r.started:.1f} | {r.nemesis} | {r.targets} | {changes or '-'} "
                     f"| {_s(w)} | {_s(r.recovery_s)} | {'ok' if r.ok else 'FAILED: ' + str(_anomalies(r))} |")
    return "\n".join(lines) + "\n"


def _anomalies(r) -> dict[str, int]:
    return {**r.check.anomalies, **(r.group_check.anomalies if hasattr(r, "group_check") else {})}


def _group_summary(results: list) -> list[str]:
    """The group rounds (group_round.py): their own invariants (group_checker.py) and times."""
    if not results:
        return []
    lines = ["## Consumer-group rounds", "",
             f"Group config {GROUP_CONFIG}; topic per round: {GROUP_PARTITIONS} partitions, RF 3, min ISR 2; {MEMBERS} "
             f"member processes (session {SESSION_TIMEOUT_MS / 1000:.0f} s), a committed-offsets sampler. Stable = "
             "every live member in one generation, assignments disjoint and covering, the coordinator Stable with "
             f"them (bound {STABLE_BOUND_S:.0f} s after the heal); times min / median / max.", "",
             "| fault | rounds | acked | read | lost | commits ok | commits failed | samples | max commit regression "
             "| group anomalies | heal -> stable s | fault -> stable s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for kind in GROUP_NEMESES:
        rs = [r for r in results if r.nemesis == kind]
        if not rs:
            continue
        g = [r.group_check for r in rs]
        lines.append(f"| {kind} | {len(rs)} | {sum(c.acked for c in g)} | {sum(c.read for c in g)} "
                     f"| {sum(c.lost for c in g)} | {sum(c.commits for c in g)} "
                     f"| {sum(sum(c.commit_errors.values()) for c in g)} | {sum(c.samples for c in g)} "
                     f"| {max(c.max_commit_regression for c in g)} | {sum(sum(c.anomalies.values()) for c in g)} "
                     f"| {spread([r.stable_s for r in rs if r.stable_s is not None])} "
                     f"| {spread([r.fault_to_stable_s for r in rs if r.fault_to_stable_s is not None])} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.runner", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="", help="comma-separated seeds (default: one random seed)")
    parser.add_argument("--rounds", type=int, default=50, help="rounds per seed (default 50)")
    parser.add_argument("--out", default="", help="report folder (default: a new temporary folder)")
    parser.add_argument("--brokers", type=int, default=N_BROKERS,
                        help=f"brokers in the cluster (default {N_BROKERS}; 4 and 5 supported); topics keep RF 3")
    parser.add_argument("--voters", type=int, default=None,
                        help="only brokers 1 to N vote in the metadata quorum, the others observe "
                             "(controller_quorum_voters; default: every broker votes)")
    parser.add_argument("--nemeses", default="", help=f"comma-separated fault kinds (default: all of {', '.join(KINDS)})")
    parser.add_argument("--net", action="store_true",
                        help=f"network faults: each broker on a host of its own (needs root); the default kinds "
                             f"become {', '.join(NET_NEMESES)}")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()] or [random.randrange(1 << 31)]
    except ValueError:
        parser.error(f"--seeds must be integers, not {args.seeds!r}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.brokers < 3:
        parser.error("--brokers must be at least 3 (the topics have RF 3)")
    if args.voters is not None and not 1 <= args.voters <= args.brokers:
        parser.error(f"--voters must be from 1 to --brokers ({args.brokers}), not {args.voters}")
    kinds = [k.strip() for k in args.nemeses.split(",") if k.strip()] or (list(NET_NEMESES) if args.net else None)
    unknown = [k for k in kinds or [] if k not in ACCEPTED]
    if unknown:
        parser.error(f"unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(ACCEPTED)}")
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="raftka-chaos-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = run(seeds, args.rounds, out_dir, kinds, brokers=args.brokers, voters=args.voters)
    text = report(results, seeds, commit(), time.monotonic() - started, args.brokers)
    (out_dir / "report.md").write_text(text)
    print(text)
    print(f"report: {out_dir / 'report.md'}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
