"""kbroker --restart-delay: keep one broker's slot alive when the broker dies.

`make run` is honcho, and honcho stops every process as soon as one exits, so a
broker killed with kill -9 would take the whole cluster down with it. Under this
supervisor the Procfile entry survives: the broker is restarted after a delay,
and the supervisor itself exits only when it is told to stop (SIGTERM, SIGINT),
when the broker fails in a way a restart cannot fix (exit code 2), or when the
broker keeps dying right after it starts (a crash loop).

Signals are handled without locks: a handler only records which stop signal
came, and every signal (SIGCHLD too) also writes a byte to a pipe through
signal.set_wakeup_fd. The main loop blocks in select() on that pipe, so it wakes
at once when the child exits or a stop is asked for, and never polls. (Python's
docs warn against locks in signal handlers, and threading.Event.set takes one:
it can deadlock if the signal lands while the main thread is inside Event.wait.)
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from types import FrameType

# kbroker's exit code for a configuration, port or data-dir lock error: the same
# error would come back on every restart, so the supervisor passes it on instead.
EXIT_BAD_CONFIG = 2
# kbroker's exit code after a storage failure of its data dir (a full disk, a read-only or
# damaged file): restarted, since the restart's recovery cuts the log back to whole batches.
EXIT_LOG_DIR_FAILURE = 3
# A replication invariant broke (broker/invariants.py): stop at once, answer nothing more; restarted,
# the broker recovers its logs and rejoins as a follower.
EXIT_INVARIANT_VIOLATED = 4
# A child that dies this soon after its start, this many times in a row, is in a
# crash loop: restarting it forever would only fill the terminal.
QUICK_DEATH_S = 1.0
MAX_QUICK_DEATHS = 5
# How long a broker may take to stop after the forwarded signal before it is killed.
STOP_GRACE_S = 15.0

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _say(line: str) -> None:
    print(f"kbroker: {line}", file=sys.stderr, flush=True)


def _describe(returncode: int) -> str:
    if returncode == EXIT_LOG_DIR_FAILURE:
        return f"exit code {returncode} (storage failure: its data dir went offline)"
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


class SignalWakeup:
    """The stop signal received, if any, and a pipe that becomes readable on every signal. The broker's main
    thread waits on it too (broker/__main__.py): its handlers take no lock, so a second SIGTERM landing
    inside the first one's handling cannot deadlock the thread on its own lock."""

    def __init__(self) -> None:
        self.stop_signal: int | None = None
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)  # set_wakeup_fd requires it
        self._old_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)  # a flood fills it
        # SIGCHLD needs a Python handler (a no-op here) for its byte to reach the pipe.
        self._old_handlers = {sig: signal.signal(sig, self._on_signal)
                              for sig in (*_STOP_SIGNALS, signal.SIGCHLD)}

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum in _STOP_SIGNALS and self.stop_signal is None:
            self.stop_signal = signum

    def wait(self, timeout: float | None) -> None:
        """Block until a signal came (possibly before this call) or ``timeout`` s passed."""
        select.select([self._read_fd], [], [], timeout)
        try:
            os.read(self._read_fd, 4096)
        except BlockingIOError:
            pass

    def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless a stop is asked for first; True when the sleep ran out."""
        deadline = time.monotonic() + seconds
        while self.stop_signal is None and (left := deadline - time.monotonic()) > 0:
            self.wait(left)
        return self.stop_signal is None

    def close(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_wakeup_fd)
        os.close(self._read_fd)
        os.close(self._write_fd)


def _wait_child(proc: subprocess.Popen[bytes], wakeup: SignalWakeup, stop_grace_s: float) -> int:
    """Wait for the child to exit; once a stop is asked for, pass the signal on and
    give the child ``stop_grace_s`` to stop before it is killed."""
    deadline: float | None = None
    while (returncode := proc.poll()) is None:
        if wakeup.stop_signal is not None and deadline is None:
            # Forwarded from here, not from the handler: the child is certainly not
            # reaped yet (poll() just said so), so its PID cannot belong to another process.
            proc.send_signal(wakeup.stop_signal)
            deadline = time.monotonic() + stop_grace_s
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            _say(f"the broker did not stop within {stop_grace_s:g} s; killing it")
            proc.kill()
            return proc.wait()
        wakeup.wait(left)
    return returncode


def supervise(child_argv: list[str], broker_id: int, restart_delay_s: float,
              *, stop_grace_s: float = STOP_GRACE_S) -> int:
    """Run ``child_argv`` and start it again ``restart_delay_s`` after each exit the
    supervisor did not cause; return the supervisor's own exit code."""
    wakeup = SignalWakeup()
    try:
        quick_deaths = 0
        while wakeup.stop_signal is None:
            started = time.monotonic()
            proc = subprocess.Popen(child_argv)
            returncode = _wait_child(proc, wakeup, stop_grace_s)
            if wakeup.stop_signal is not None:
                break
            why = _describe(returncode)
            if returncode == EXIT_BAD_CONFIG:
                _say(f"broker {broker_id} exited ({why}): a configuration, port or data-dir lock "
                     "error that a restart would not fix; not restarting")
                return EXIT_BAD_CONFIG
            # Any other exit is restarted, exit code 0 too: that is a SIGTERM sent to the
            # broker alone, and the user asked to stop the broker, not its slot in the cluster.
            quick_deaths = quick_deaths + 1 if time.monotonic() - started < QUICK_DEATH_S else 0
            if quick_deaths >= MAX_QUICK_DEATHS:
                _say(f"broker {broker_id} exited ({why}) {quick_deaths} times in a row within "
                     f"{QUICK_DEATH_S:g} s of starting; giving up (crash loop)")
                return 1
            _say(f"broker {broker_id} exited ({why}); restarting in {restart_delay_s:g} s")
            wakeup.sleep(restart_delay_s)
        return 0
    finally:
        wakeup.close()
