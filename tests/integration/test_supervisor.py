"""kbroker --restart-delay's supervisor with real processes, but a stand-in child.

The child is a tiny script written to tmp_path (not a broker), so these tests do
not depend on the broker code. Each supervisor runs in its own session; cleanup
kills only that session's process group. Every wait is a condition with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.cluster import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# The stand-in broker: appends its PID to a file (one line per start), then acts
# out its first argument. A SIGTERM sent to it is a graceful stop: exit code 0.
CHILD = """\
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if sys.argv[2] == "ignore-sigterm":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
os.write(fd, f"{os.getpid()}\\n".encode())
os.close(fd)
if sys.argv[2].startswith("exit-"):
    sys.exit(int(sys.argv[2][5:]))
while True:
    time.sleep(60)
"""

# supervise() as kbroker --restart-delay runs it: argv is delay, grace, then the child's argv.
WRAPPER = """\
import sys
from broker.supervisor import supervise
sys.exit(supervise(sys.argv[3:], 1, float(sys.argv[1]), stop_grace_s=float(sys.argv[2])))
"""


def eventually(condition, timeout: float, what: str):
    """The first truthy value of ``condition()``, polled until ``timeout`` s; else AssertionError."""
    return wait_for(condition, timeout, what, interval=0.02)


def alive(pid: int) -> bool:
    """Whether ``pid`` exists (the supervisor reaps its children, so a dead child is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Supervised:
    proc: subprocess.Popen
    starts_file: Path
    stderr_file: Path

    def child_pids(self) -> list[int]:
        text = self.starts_file.read_text() if self.starts_file.exists() else ""
        return [int(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def wait_for_start(self, n: int) -> int:
        """The PID of the n-th child start (1-based) once it has started and is alive."""
        pids = eventually(lambda: (p := self.child_pids()) and len(p) >= n and alive(p[n - 1]) and p,
                          10, f"child start #{n} alive")
        return pids[n - 1]

    def stderr(self) -> str:
        return self.stderr_file.read_text()

    def wait(self, timeout: float = 10) -> int:
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def supervised(tmp_path):
    """``start(mode, delay)`` runs a supervisor over the stand-in child; all killed at the end."""
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    started: list[Supervised] = []

    def start(mode: str, restart_delay_s: float = 0.2, stop_grace_s: float = 15.0) -> Supervised:
        starts_file, stderr_file = tmp_path / f"starts{len(started)}.txt", tmp_path / f"stderr{len(started)}.txt"
        with open(stderr_file, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", WRAPPER, str(restart_delay_s), str(stop_grace_s),
                 sys.executable, str(child), str(starts_file), mode],
                stdout=err, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        s = Supervised(proc, starts_file, stderr_file)
        started.append(s)
        return s

    yield start
    for s in started:
        # The session (and so process group) the test made: the supervisor and its children.
        try:
            os.killpg(s.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        s.proc.wait(timeout=10)


def test_kill_9_child_is_restarted(supervised):
    s = supervised("sleep")
    first = s.wait_for_start(1)
    os.kill(first, signal.SIGKILL)
    second = s.wait_for_start(2)
    assert second != first and not alive(first)
    assert "kbroker: broker 1 exited (killed by SIGKILL); restarting in 0.2 s" in s.stderr()
    assert s.proc.poll() is None


def test_sigterm_to_child_alone_is_restarted(supervised):
    s = supervised("sleep")
    os.kill(s.wait_for_start(1), signal.SIGTERM)
    s.wait_for_start(2)
    assert "broker 1 exited (exit code 0); restarting" in s.stderr()


def test_sigterm_to_supervisor_stops_both_without_restart(supervised):
    s = supervised("sleep")
    child = s.wait_for_start(1)
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait() == 0
    assert not alive(child)
    assert len(s.child_pids()) == 1
    assert "restarting" not in s.stderr()


def test_sigint_during_restart_delay_exits_at_once(supervised):
    s = supervised("sleep", restart_delay_s=60)
    os.kill(s.wait_for_start(1), signal.SIGKILL)
    eventually(lambda: "restarting in 60 s" in s.stderr(), 10, "the restart line")
    s.proc.send_signal(signal.SIGINT)
    assert s.wait(timeout=5) == 0
    assert len(s.child_pids()) == 1


def test_child_that_ignores_the_stop_is_killed_after_the_grace(supervised):
    s = supervised("ignore-sigterm", stop_grace_s=0.5)
    child = s.wait_for_start(1)
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait() == 0
    assert not alive(child)
    assert "did not stop within 0.5 s; killing it" in s.stderr()


def test_exit_code_2_is_not_restarted(supervised):
    s = supervised("exit-2")
    assert s.wait() == 2
    assert len(s.child_pids()) == 1
    assert "broker 1 exited (exit code 2)" in s.stderr() and "not restarting" in s.stderr()


def test_crash_loop_gives_up(supervised):
    s = supervised("exit-1")
    assert s.wait() == 1
    assert len(s.child_pids()) == 5
    assert s.stderr().count("restarting in 0.2 s") == 4
    assert "exited (exit code 1) 5 times in a row within 1 s of starting; giving up (crash loop)" in s.stderr()
