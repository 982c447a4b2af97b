"""Invariants as checks, not comments (as etcd's raft and TigerBeetle do).

A check that fails calls ``violated``: the event ``invariant_violated`` names the
invariant, the broker's handler stops the process (broker.py: exit code
EXIT_INVARIANT_VIOLATED, so a chaos run catches it where it happens instead of
serving on with broken state), and InvariantViolation is raised for whoever runs
without a handler (unit tests).
"""

from __future__ import annotations

from typing import Callable, NoReturn

import structlog

log = structlog.get_logger(__name__)


class InvariantViolation(Exception):
    """A replication invariant broke: the broker must stop (it names the invariant), not serve on."""

    def __init__(self, name: str, detail: str):
        super().__init__(f"invariant {name} broken: {detail}")
        self.name = name


_handler: Callable[[InvariantViolation], None] | None = None


def set_violation_handler(handler: Callable[[InvariantViolation], None] | None) -> None:
    global _handler
    _handler = handler


def violated(name: str, detail: str) -> NoReturn:
    error = InvariantViolation(name, detail)
    log.critical("invariant_violated", invariant=name, detail=detail)
    if _handler is not None:
        _handler(error)
    raise error
