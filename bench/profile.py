"""Where the time goes: W1 (sync produce), W2 (pipelined produce) and W3 (consume), on both sides.

    .venv/bin/python -m bench.profile [--records 200000] [--top 12]      (`make profile`)

Starts a fresh 3-broker cluster (RF 3, min.insync.replicas 2, 100-byte values),
runs each workload in this process, and samples this process and every broker
with py-spy (``py-spy record --gil --format raw``: only samples of a thread
holding the GIL, i.e. Python doing work). It prints, for the client and for the
three brokers summed, the files and the leaf functions with the most samples,
as a share of those samples. py-spy samples from outside, so the workloads run
at full speed (cProfile's per-call hook made W2 8x slower and skewed the shares
toward small functions).

py-spy is not a project dependency: it is a profiler binary one installs to look,
like perf (``pip install py-spy``; it needs ptrace: root or CAP_SYS_PTRACE).
Without it the script stops with that advice.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench.run import CLUSTER_CONFIG, Settings, consume_all, create_ready, produce_pipelined, produce_sync
from raftka_testing.cluster import write_cluster

TOPIC = "profile"
PY_SPY = shutil.which("py-spy")


class Sampler:
    """py-spy on some processes for the duration of a ``with`` block."""

    def __init__(self, pids: dict[str, int], out_dir: Path, label: str):
        self._pids, self._out_dir, self._label = pids, out_dir, label
        self._procs: list[tuple[str, Path, subprocess.Popen]] = []

    def __enter__(self) -> "Sampler":
        for who, pid in self._pids.items():
            out = self._out_dir / f"{self._label}-{who}.txt"
            proc = subprocess.Popen([PY_SPY, "record", "--pid", str(pid), "--rate", "250", "--gil", "--format",
                                     "raw", "--output", str(out), "--nonblocking"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._procs.append((who, out, proc))
        time.sleep(1.0)  # py-spy attaches before the workload starts
        return self

    def __exit__(self, *exc) -> None:
        for _, _, proc in self._procs:
            proc.send_signal(signal.SIGINT)   # py-spy writes its output on SIGINT
        for _, _, proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def top(self, who_prefix: str, n: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]], int]:
        """(files, leaf functions) with the most samples as shares, and the sample count."""
        files: collections.Counter[str] = collections.Counter()
        leaves: collections.Counter[str] = collections.Counter()
        for who, out, _ in self._procs:
            if not who.startswith(who_prefix) or not out.exists():
                continue
            for line in out.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                name, path = _leaf(stack)
                files[path] += int(count)
                leaves[f"{name} ({path})"] += int(count)
        total = sum(files.values())
        if not total:
            return [], [], 0
        return ([(k, c / total) for k, c in files.most_common(n)],
                [(k, c / total) for k, c in leaves.most_common(n)], total)


def _leaf(stack: str) -> tuple[str, str]:
    # py-spy's raw format: "thread;frame;frame;... count", a frame is "function (file:line)".
    frame = stack.split(";")[-1]
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return name, ("/".join(Path(path).parts[-2:]) if path else "?")


def report(title: str, figure: str, sampler: Sampler, n: int) -> None:
    print(f"\n## {title}: {figure}")
    for who, label in (("client", "client (this process)"), ("broker", "brokers (3 summed)")):
        files, leaves, total = sampler.top(who, n)
        print(f"\n{label}, {total} samples holding the GIL; by file:")
        for name, share in files:
            print(f"  {share * 100:5.1f} %  {name}")
        print("by leaf function:")
        for name, share in leaves:
            print(f"  {share * 100:5.1f} %  {name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--sync-records", type=int, default=3000, help="W1: records sent one at a time")
    args = ap.parse_args(argv)
    if PY_SPY is None:
        print("bench.profile: py-spy is not on PATH: pip install py-spy (a profiler, not a raftka dependency)")
        return 2
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="raftka-profile-") as tmp:
        cluster = write_cluster(Path(tmp), 3, CLUSTER_CONFIG)
        try:
            cluster.start_all(timeout=30)
            create_ready(cluster, TOPIC, settings.w2_partitions)
            pids = {"client": os.getpid(), **{f"broker-{b.broker_id}": b.pid for b in cluster.brokers.values()}}
            create_ready(cluster, "profile-w1", 1)
            with Sampler(pids, Path(tmp), "w1") as sampler:
                r = produce_sync(cluster.bootstrap, "profile-w1", args.sync_records)
            report("W1 produce-sync", f"p50 {r['w1_p50_ms']:.2f} ms", sampler, args.top)
            with Sampler(pids, Path(tmp), "w2") as sampler:
                r = produce_pipelined(cluster.bootstrap, TOPIC, args.records, settings)
            report("W2 produce-pipelined", f"{r['w2_records_per_s']:,.0f} records/s", sampler, args.top)
            with Sampler(pids, Path(tmp), "w3") as sampler:
                r = consume_all(cluster.bootstrap, TOPIC, args.records + 1, settings.fetch_max_wait_ms)
            report("W3 consume", f"{r['w3_records_per_s']:,.0f} records/s", sampler, args.top)
        finally:
            cluster.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
