"""Wakes requests that wait for a log to grow or a high watermark to move.

Long-polling fetches and acks=all produces wait here instead of spinning. Two
kinds of event, each with its own condition, so that each waiter is woken only
by what can complete it:

- LOG_END: a leader's log grew. Followers' fetches wait for this: they read up
  to the log end, and a moved HW alone gives them nothing to carry.
- HIGH_WATERMARK: a HW moved. acks=all produces and consumers' fetches (which
  read below the HW) wait for this.

Metadata changes (leadership, ISR) notify both: every waiter re-checks. On the
acks=all path each append used to wake the produce waiters too, and each
follower fetch that moved the HW woke the other follower's long poll, which
re-read every partition it follows to find nothing new.

A follower's fetch in a session (a fetch stream) does not wait on LOG_END: it
parks in ``delayed_fetches`` (broker/delayed_fetch.py), which the replica
manager's append completes on the appending thread, before any waiter here wakes.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from broker.delayed_fetch import FetchPurgatory

LOG_END = "log_end"
HIGH_WATERMARK = "high_watermark"


class _Event:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.version = 0


class AppendNotifier:
    def __init__(self) -> None:
        self._events = {LOG_END: _Event(), HIGH_WATERMARK: _Event()}
        self.delayed_fetches = FetchPurgatory()

    def notify(self, *kinds: str) -> None:
        """Wake the waiters of ``kinds`` (default: every kind: a metadata change, which also has the parked
        fetches look again, each on its own thread)."""
        if not kinds:
            self.delayed_fetches.poke_all()
        for kind in kinds or tuple(self._events):
            event = self._events[kind]
            with event.cond:
                event.version += 1
                event.cond.notify_all()

    def wait_until(self, ready: Callable[[], bool], deadline: float,
                   still_wanted: Callable[[], bool] = lambda: True, on: str = HIGH_WATERMARK) -> bool:
        """Block until ``ready()`` (True), the monotonic ``deadline`` or ``still_wanted()`` is False,
        re-checking ``ready()`` on each event of kind ``on``."""
        event = self._events[on]
        while True:
            version = event.version
            if ready():
                return True
            with event.cond:
                while event.version == version:
                    left = deadline - time.monotonic()
                    if left <= 0 or not still_wanted():
                        return False
                    # Wake at least every 0.5 s to notice a cancelled caller.
                    event.cond.wait(min(left, 0.5))
