"""Wakes requests that wait for a log to grow or a high watermark to move.

Long-polling fetches and acks=all produces wait here instead of spinning. One
notifier per broker: every append or HW change bumps a version and wakes all
waiters, which re-check their own condition. With a handful of waiters per
broker that is cheaper than per-partition bookkeeping across multi-partition
fetches.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class AppendNotifier:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version = 0

    def notify(self) -> None:
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    def wait_until(self, ready: Callable[[], bool], deadline: float,
                   still_wanted: Callable[[], bool] = lambda: True) -> bool:
        """Block until ``ready()`` (True), the monotonic ``deadline`` or ``still_wanted()`` is False."""
        while True:
            version = self._version
            if ready():
                return True
            with self._cond:
                while self._version == version:
                    left = deadline - time.monotonic()
                    if left <= 0 or not still_wanted():
                        return False
                    # Wake at least every 0.5 s to notice a cancelled caller.
                    self._cond.wait(min(left, 0.5))
