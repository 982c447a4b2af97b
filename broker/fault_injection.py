"""Faults a test asks a broker for through its environment (never set in production).

RAFTKA_TEST_DROP_PRODUCE_ANSWERS=N: the next N produce answers that carry a success are lost on the
way, after the append (the batch is stored and replicated; the producer sees a broken connection),
so the idempotent producer's resend is tested against a real broker.
"""

from __future__ import annotations

import os
import threading

DROP_PRODUCE_ANSWERS_ENV = "RAFTKA_TEST_DROP_PRODUCE_ANSWERS"


class AnswerDroppedForTest(Exception):
    """The answer in hand is to be lost: each front door drops it its way (gRPC: UNAVAILABLE)."""


class FaultBudget:
    """A fault injected a fixed number of times (0 unless the environment asks for it)."""

    def __init__(self, count: int):
        self._left = count
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, name: str = DROP_PRODUCE_ANSWERS_ENV) -> "FaultBudget":
        try:
            return cls(max(int(os.environ.get(name, "0")), 0))
        except ValueError:
            return cls(0)

    def take(self) -> bool:
        if self._left <= 0:
            return False
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True
