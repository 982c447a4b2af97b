"""Keeps Python's cyclic garbage collector from stopping a broker for hundreds of milliseconds.

Measured at 10,000 partitions (a gc.callbacks probe in each broker): a full collection (generation 2)
walks every tracked object (partition state, the metadata image, logs: millions of them), found
nothing to free, and held the GIL for 100-500 ms, every 1-3 s while a broker restarted. That stalls
pysyncobj's tick, whose heartbeats go every 100 ms against election timeouts of 0.4-0.8 s: both
followers' timers fired and a controller election followed with nothing wrong. It also took about
5 s of CPU per broker a minute. Kafka's brokers know the same trouble as JVM GC pauses.

So what is still alive after a young collection is frozen now and then (gc.freeze: moved to the
permanent generation, which no collection walks). Reference counting frees frozen objects as
before; only garbage in a reference cycle among frozen objects waits, until the full collection
that runs, unfrozen, every FULL_COLLECTION_EVERY_S. Any collection longer than PAUSE_LOGGED_S is an
event. The broker's housekeeping thread calls ``tick``; nothing here runs on its own.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

FREEZE_EVERY_S = 1.0
FULL_COLLECTION_EVERY_S = 600.0
PAUSE_LOGGED_S = 0.1


@dataclass
class GcPauses:
    freeze_every_s: float = FREEZE_EVERY_S
    full_collection_every_s: float = FULL_COLLECTION_EVERY_S
    next_freeze: float = 0.0
    next_full_collection: float | None = None   # set at the first tick
    _began: float = field(default=0.0, repr=False)
    # (generation, seconds, freed) of long collections, logged by the next tick: a collection runs inside
    # whatever allocation triggered it, maybe under a logging lock, so the callback itself never logs.
    _long: list[tuple[int, float, int]] = field(default_factory=list, repr=False)

    def install(self) -> None:
        """Freeze what start-up built, and time every collection from now on."""
        gc.collect(1)
        gc.freeze()
        gc.callbacks.append(self._on_collection)

    def uninstall(self) -> None:
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)

    def tick(self, now: float) -> None:
        while self._long:
            generation, took, freed = self._long.pop(0)
            log.info("gc_pause", generation=generation, ms=round(took * 1000, 1), freed=freed)
        if self.next_full_collection is None:
            self.next_full_collection = now + self.full_collection_every_s
        if now >= self.next_full_collection:
            self.next_full_collection = now + self.full_collection_every_s
            self.next_freeze = now + self.freeze_every_s
            self._full_collection()
        elif now >= self.next_freeze:
            self.next_freeze = now + self.freeze_every_s
            gc.collect(1)   # young cycles first: what is frozen is what survived
            gc.freeze()

    def _full_collection(self) -> None:
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        began = time.monotonic()
        freed = gc.collect()
        log.info("gc_full_collection", objects=frozen, freed=freed, ms=round((time.monotonic() - began) * 1000, 1))
        gc.freeze()

    def _on_collection(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.monotonic()
            return
        took = time.monotonic() - self._began
        if took >= PAUSE_LOGGED_S and len(self._long) < 100:
            self._long.append((info.get("generation", -1), took, info.get("collected", 0)))
