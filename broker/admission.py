"""Admission control: caps on the calls that hold a server thread for long.

Produce streams and long-polling fetches on the client listener, replica fetch streams and
long-polling replica fetches on the inter-broker listener each hold a slot of that listener's
StreamSlots. One more is refused at once (SlotsExhaustedError; gRPC: RESOURCE_EXHAUSTED), so idle
streams can never take the threads that Metadata, heartbeats and other short calls need.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import structlog

log = structlog.get_logger(__name__)


class SlotsExhaustedError(Exception):
    """Every slot is held: the call is refused now, the caller retries later."""


class StreamSlots:
    def __init__(self, limit: int, broker_id: int, setting: str = "grpc.max.concurrent.streams"):
        self.limit = limit
        self._broker_id = broker_id
        self._setting = setting   # named in the refusal, so the operator knows which cap was hit
        self._lock = threading.Lock()
        self._holders: set[int] = set()   # id() of the calls holding a slot

    @contextlib.contextmanager
    def hold(self, call: object, what: str) -> Iterator[None]:
        """Hold one slot for ``call`` (nothing more if it holds one already: a fetch stream's fetches),
        or raise SlotsExhaustedError."""
        key = id(call)
        with self._lock:
            if key in self._holders:
                taken = False
            elif len(self._holders) >= self.limit:
                taken = None
            else:
                self._holders.add(key)
                taken = True
        if taken is None:
            log.warning("stream_refused", call=what, limit=self.limit, setting=self._setting)
            raise SlotsExhaustedError(f"{what} refused: broker {self._broker_id} already serves {self.limit} "
                                      f"streams and long polls ({self._setting}); retry later")
        try:
            yield
        finally:
            if taken:
                with self._lock:
                    self._holders.discard(key)
