"""A consumer-group member process for the group chaos rounds, and the handle the harness drives it by.

    python -m tests.chaos.group_member --bootstrap B --group G --topic T --name m1 --out m1.jsonl \\
        [--strategy range] [--session-timeout-ms 6000] [--heartbeat-interval-ms 500]

The process is one raftka group consumer (client/consumer.py) polling in a loop. Every event is one
JSON line in ``--out``, flushed at once, its time ``time.time()`` (several processes write histories
that are merged by time; on one machine that clock is shared):

- ``gm-start`` / ``gm-stop``: the process began (pid, settings) / ended (reason);
- ``gm-assign`` / ``gm-revoke`` / ``gm-lost``: the rebalance callbacks (generation, member id, the
  partitions; an assign also has the whole ``assignment`` after it, i.e. what the member owns in that
  generation);
- ``gm-state``: (generation, member id, assignment) each time it changed, seen after a poll;
- ``gm-read``: the records one poll returned of one partition ([offset, value] pairs), with the
  generation the member had;
- ``gm-commit``: a synchronous commit after each poll that returned records: ``invoked`` and
  ``time`` (completed), ``offsets`` ([partition, offset] pairs), the generation it was sent in, the
  ``outcome`` ("ok", or "error" with ``error`` = the exception's class, e.g. CommitFailedError);
- ``gm-error``: a poll that raised (the member goes on polling).

SIGTERM ends the loop and closes the consumer (it leaves the group; with enable_auto_commit=False
it commits nothing on the way out). SIGSTOP/SIGCONT need nothing: after a long stop the member finds
out it was evicted (a lost callback, a CommitFailedError) and rejoins, and both are in the file.

``MemberProcess`` (the harness side) starts one, signals it by its own PID only, and follows its
file: the member's latest state, how far it read, its commits.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import IO

POLL_S = 0.3
MAX_LIFETIME_S = 1800.0        # a member never outlives this, whatever happens to its harness
MAX_UNEXPECTED_ERRORS = 50     # non-Kafka exceptions before the member gives up (a harness bug)


# ---- the member process -------------------------------------------------------------------------

class _Out:
    """One JSON line per event, flushed at once (a kill -9 loses at most the line being written)."""

    def __init__(self, fh: IO[str], name: str):
        self._fh, self._name = fh, name
        self._lock = threading.Lock()

    def write(self, kind: str, **fields) -> None:
        line = json.dumps({"f": kind, "member": self._name, "time": fields.pop("time", None) or time.time(),
                           **fields}, separators=(",", ":"))
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()


class _Member:
    """One member's consumer and what it writes: its callbacks, and each poll's state and reads."""

    def __init__(self, args: argparse.Namespace, out: _Out):
        from client.consumer import Consumer

        self.args, self.out = args, out
        self.known = {"generation": -1, "member_id": ""}   # the last generation it had (lost resets it)
        self.last_state: tuple | None = None
        self.consumer = None
        self.consumer = Consumer(
            args.bootstrap, group_id=args.group, topics=[args.topic], auto_offset_reset="earliest",
            enable_auto_commit=False, session_timeout_ms=args.session_timeout_ms,
            heartbeat_interval_ms=args.heartbeat_interval_ms, max_poll_interval_ms=args.max_poll_interval_ms,
            partition_assignment_strategy=args.strategy, fetch_max_wait_ms=100,
            request_timeout_ms=args.request_timeout_ms, retry_backoff_ms=50, retry_backoff_max_ms=500,
            on_assign=self.on_assign, on_revoke=self.on_revoke, on_lost=self.on_lost)

    def generation(self) -> tuple[int, str]:
        return self.consumer.generation() if self.consumer is not None else (-1, "")

    def on_assign(self, tps) -> None:
        g, m = self.generation()
        self.known.update(generation=g, member_id=m)
        self.out.write("gm-assign", generation=g, member_id=m, partitions=_parts(tps),
                       assignment=_parts(self.consumer.assignment()))

    def on_revoke(self, tps) -> None:
        g, m = self.generation()
        self.out.write("gm-revoke", generation=g, member_id=m, partitions=_parts(tps))

    def on_lost(self, tps) -> None:
        g, _ = self.generation()
        self.out.write("gm-lost", generation=self.known["generation"], member_id=self.known["member_id"],
                       now_generation=g, partitions=_parts(tps))

    def handle(self, records) -> None:
        """After a poll: the state if it changed, then the records read, then a sync commit."""
        g, m = self.consumer.generation()
        state = (g, m, tuple(_parts(self.consumer.assignment())))
        if state != self.last_state:
            self.last_state = state
            if g >= 0:
                self.known.update(generation=g, member_id=m)
            self.out.write("gm-state", generation=g, member_id=m, assignment=list(state[2]))
        if not records:
            return
        by_partition: dict[int, list[list]] = {}
        for r in records:
            value = (r.value or b"").decode("utf-8", errors="replace")
            by_partition.setdefault(r.partition, []).append([r.offset, value])
        now = time.time()
        for p, recs in sorted(by_partition.items()):
            self.out.write("gm-read", time=now, topic=self.args.topic, partition=p, generation=g, member_id=m,
                           records=recs)
        commit(self.consumer, self.out, self.args.topic)


def _parts(tps) -> list[int]:
    return sorted(p for _, p in tps)


def run_member(args: argparse.Namespace) -> int:
    from client.errors import KafkaError

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with open(args.out, "a", encoding="utf-8") as fh:
        out = _Out(fh, args.name)
        out.write("gm-start", pid=os.getpid(), group=args.group, topic=args.topic, strategy=args.strategy,
                  session_timeout_ms=args.session_timeout_ms)
        member = _Member(args, out)
        unexpected, reason = 0, "SIGTERM"
        deadline = time.monotonic() + args.max_lifetime_s
        try:
            while not stop.is_set():
                if time.monotonic() >= deadline:
                    reason = f"max lifetime {args.max_lifetime_s:.0f} s"
                    break
                try:
                    member.handle(member.consumer.poll(POLL_S))
                except KafkaError as e:
                    out.write("gm-error", error=type(e).__name__, detail=str(e)[:300])
                    stop.wait(0.2)
                except Exception as e:  # noqa: BLE001 - recorded; a harness bug should not hang the round
                    unexpected += 1
                    out.write("gm-error", error=type(e).__name__, detail=traceback.format_exc()[-2000:])
                    if unexpected >= MAX_UNEXPECTED_ERRORS:
                        reason = f"{unexpected} unexpected errors"
                        break
                    stop.wait(0.2)
        finally:
            try:
                member.consumer.close()
            except Exception as e:  # noqa: BLE001 - the session timeout ends the membership instead
                out.write("gm-error", error=type(e).__name__, detail=f"close: {e}"[:300])
            out.write("gm-stop", reason=reason)
    return 0 if unexpected < MAX_UNEXPECTED_ERRORS else 2


def commit(consumer, out: _Out, topic: str) -> None:
    """Commit the positions of every owned partition (what poll returned), synchronously, and record it."""
    from client.errors import KafkaError

    offsets = {tp: consumer.positions[tp] for tp in consumer.assignment() if tp in consumer.positions}
    if not offsets:
        return
    g, m = consumer.generation()
    invoked = time.time()
    outcome, error, detail = "ok", None, None
    try:
        consumer.commit(offsets)
    except KafkaError as e:
        outcome, error, detail = "error", type(e).__name__, str(e)[:300]
    out.write("gm-commit", time=time.time(), invoked=invoked, topic=topic, generation=g, member_id=m,
              offsets=sorted([p, o] for (_, p), o in offsets.items()), outcome=outcome, error=error, detail=detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.group_member", description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True, help="the JSON-lines file (appended to)")
    parser.add_argument("--strategy", default="range", help="partition.assignment.strategy (default range)")
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=500)
    parser.add_argument("--max-poll-interval-ms", type=int, default=20000)
    parser.add_argument("--request-timeout-ms", type=int, default=5000)
    parser.add_argument("--max-lifetime-s", type=float, default=MAX_LIFETIME_S)
    return run_member(parser.parse_args(argv))


# ---- the harness side ---------------------------------------------------------------------------

def _process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(")") + 2]


class MemberProcess:
    """One member process this harness started, and what its file says so far (refresh() reads on)."""

    def __init__(self, name: str, path: Path, proc: subprocess.Popen):
        self.name, self.path, self.proc = name, path, proc
        self.paused = False
        self.stopping = False          # SIGTERM sent (once: a second one could land after the handler is gone)
        self.killed = False            # kill -9'd by the harness
        self.exit_code: int | None = None
        self._offset = 0
        self._partial = b""
        # what the file says
        self.started = False
        self.stopped = False
        self.generation, self.member_id, self.assignment = -1, "", ()
        self.read_up_to: dict[int, int] = {}     # partition -> the offset after the highest record read
        self.commits_ok = 0
        self.commit_errors: Counter[str] = Counter()
        self.last_commit_ok = 0.0                # time.time() of the last successful commit
        self.lost = 0
        self.errors: Counter[str] = Counter()

    @classmethod
    def spawn(cls, bootstrap: str, group: str, topic: str, name: str, path: Path, strategy: str = "range",
              session_timeout_ms: int = 6000, heartbeat_interval_ms: int = 500, cwd: Path | None = None,
              extra: list[str] | None = None) -> "MemberProcess":
        from raftka_testing.cluster import REPO
        log = path.with_suffix(".log").open("ab")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.group_member", "--bootstrap", bootstrap, "--group", group,
                 "--topic", topic, "--name", name, "--out", str(path), "--strategy", strategy,
                 "--session-timeout-ms", str(session_timeout_ms), "--heartbeat-interval-ms",
                 str(heartbeat_interval_ms), *(extra or [])],
                cwd=cwd or REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        finally:
            log.close()
        return cls(name, path, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def live(self) -> bool:
        """Running and not stopped: a member that can take part in the group."""
        return self.alive() and not self.paused

    # ---- signals (this PID only) -------------------------------------------------------------

    def kill(self) -> None:
        """kill -9 and reap."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.exit_code = self.proc.wait(10)
        self.killed, self.paused = True, False

    def pause(self) -> None:
        """SIGSTOP, and wait until the kernel says it is stopped."""
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True
        deadline = time.monotonic() + 2.0
        while _process_state(self.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)

    def resume(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def request_stop(self) -> None:
        """SIGTERM (once), without waiting: the member closes its consumer (leaves the group) and exits."""
        if self.paused:
            self.resume()
        if not self.stopping and self.alive():
            self.proc.send_signal(signal.SIGTERM)
        self.stopping = True

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait for the exit; None if it did not end in time (then it is killed)."""
        if not self.alive():
            self.exit_code = self.proc.returncode
            return self.exit_code
        self.request_stop()
        try:
            self.exit_code = self.proc.wait(timeout)
            return self.exit_code
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    # ---- its file ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the lines written since the last call (a line still being written waits)."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self._apply(json.loads(line))

    def _apply(self, r: dict) -> None:
        kind = r.get("f")
        if kind == "gm-start":
            self.started = True
        elif kind == "gm-stop":
            self.stopped = True
        elif kind in ("gm-state", "gm-assign"):
            self.generation, self.member_id = r["generation"], r["member_id"]
            self.assignment = tuple(sorted(r["assignment"]))
        elif kind == "gm-revoke":
            self.assignment = tuple(p for p in self.assignment if p not in r["partitions"])
        elif kind == "gm-lost":
            self.lost += 1
            self.generation, self.assignment = -1, ()
        elif kind == "gm-read":
            p, last = r["partition"], r["records"][-1][0]
            self.read_up_to[p] = max(self.read_up_to.get(p, 0), last + 1)
        elif kind == "gm-commit":
            if r["outcome"] == "ok":
                self.commits_ok += 1
                self.last_commit_ok = r["time"]
            else:
                self.commit_errors[r["error"]] += 1
        elif kind == "gm-error":
            self.errors[r["error"]] += 1

    def records(self) -> list[dict]:
        """Every complete line of its file."""
        out = []
        try:
            with self.path.open(encoding="utf-8") as fh:
                for line in fh:
                    if line.endswith("\n") and line.strip():
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
        return out


if __name__ == "__main__":
    sys.exit(main())
