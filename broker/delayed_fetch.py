"""A follower's fetch that waits for new data, completed by the thread that brings it (Kafka's DelayedFetch
and its purgatory).

A follower that holds the leader's log end long-polls: its fetch is parked until the leader appends. Before
this, the parked fetch's own thread slept on a condition and woke on each append; the answers to the two
followers of an acks=all write then went out 0.17 and 0.32 ms after the append, one thread hand-off (and
GIL hand-off) apart, on the write's critical path. Kafka completes a delayed fetch on the thread whose
append satisfied it (ReplicaManager.tryCompleteDelayedFetch after appendRecords) and hands the answer to the
network layer; here the appending thread reads for each parked fetch and hands its answer to the
transport, which writes what the socket takes at once and leaves the rest to the connection's thread.

The rules, each a check below:
- Watch, then try (Kafka's tryCompleteElseWatch): a fetch is watched before its last check, so an append
  between its own read and its parking is never missed.
- Exactly once: try_complete, expire and cancel take the fetch's lock; the first to complete it answers it.
- The completer never blocks on a follower: ``respond`` must not block (the transport's contract).
- The completer's failure is the fetch's: an error while reading or answering is kept (``error``) and
  raised on the fetch's own thread, which ends that stream; the appender's produce goes on.
- Only what is cheap runs on the appender: an append is checked against the fetches that hold its partition
  (Kafka keys its purgatory by partition), and one whose round would read many partitions (a follower
  outside the ISR reads every such partition each round, thousands after a restart) is poked instead: its
  own thread then reads once for all the appends since, as every waiter did before.

Plain Python with threads: tests drive it directly.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Generic, Protocol, TypeVar

Answer = TypeVar("Answer")
POLL_S = 0.5   # the owner's longest sleep: it notices a follower gone, or the broker stopping, this often
# What an append of one partition does to a parked fetch (``on_append``):
COMPLETE, POKE, IGNORE = "complete", "poke", "ignore"   # try it on the appending thread; wake its own; nothing


class Waker(Protocol):
    """How a parked fetch's own thread sleeps and is woken: by completion too, or (a transport that writes
    the answer itself) only by ``wake`` and by what it watches (a socket poll: the follower's next request)."""
    wakes_on_completion: bool

    def wait(self, fetch: "DelayedFetch", timeout: float) -> bool:
        """Sleep up to ``timeout``; True when woken by ``wake``."""

    def wake(self) -> None: ...


class EventWaker:
    wakes_on_completion = True

    def __init__(self) -> None:
        self._event = threading.Event()

    def wait(self, fetch: "DelayedFetch", timeout: float) -> bool:
        woken = self._event.wait(timeout)
        self._event.clear()   # a wake lost here is harmless: the owner looks again right after
        return woken

    def wake(self) -> None:
        self._event.set()


class DelayedFetch(Generic[Answer]):
    """One parked fetch. ``ready()`` reads what is new and says whether there is something to answer (it
    keeps its reads); ``answer()`` makes the answer from them; ``respond(answer)`` hands it to the
    transport. Completed once, by try_complete (new data), expire (the deadline: answer what there is) or
    cancel (nobody to answer)."""

    def __init__(self, ready: Callable[[], bool], answer: Callable[[], Answer],
                 respond: Callable[[Answer], None], deadline: float, waker: Waker | None = None,
                 on_append: Callable[[object], str] = lambda key: COMPLETE):
        self.deadline = deadline            # monotonic
        self.on_append = on_append          # an appended partition -> COMPLETE, POKE or IGNORE
        self.error: BaseException | None = None
        self._ready = ready
        self._answer = answer
        self._respond = respond
        self._lock = threading.Lock()
        self._completed = False
        self._cancelled = False
        self._waker = waker or EventWaker()

    @property
    def completed(self) -> bool:
        return self._completed

    def try_complete(self) -> bool:
        """Answer now if there is something to answer; True once completed (by anyone)."""
        with self._lock:
            if self._completed:
                return True
            try:
                if not self._ready():
                    return False
            except Exception as e:  # noqa: BLE001 - the fetch's failure, raised on its own thread
                self._fail(e)
                return True
            self._complete()
            return True

    def expire(self) -> None:
        """The deadline passed: answer what the reads so far found (an empty answer too). Not read again:
        a read consumes what changed since the last (a fetch session's marks), which the next fetch then
        would not look at, and the answer would not carry."""
        with self._lock:
            if not self._completed:
                self._complete()

    def cancel(self) -> None:
        """Complete without an answer: the follower went, or the broker is stopping."""
        with self._lock:
            if not self._completed:
                self._completed = self._cancelled = True
        self._waker.wake()

    def poke(self) -> None:
        """Have the fetch's own thread look again (a metadata change: it may now answer an error)."""
        self._waker.wake()

    def await_completion(self, still_wanted: Callable[[], bool]) -> bool:
        """On the fetch's own thread: until it is completed, expiring it at its deadline and looking again
        when poked. False when cancelled because ``still_wanted()`` turned False; raises its ``error``."""
        while not self._completed:
            left = self.deadline - time.monotonic()
            if left <= 0:
                self.expire()
                break
            woken = self._waker.wait(self, min(left, POLL_S))
            if self._completed:
                break
            if not still_wanted():
                self.cancel()
                break
            if woken:   # a poke: something changed. Not after a mere timeout: a round outside the ISR reads
                self.try_complete()   # thousands of partitions, and nothing asked for it
        if self.error is not None:
            raise self.error
        return not self._cancelled

    def _complete(self) -> None:
        # Under the lock (so answered once). ``completed`` turns True only once respond returned: the owner,
        # which reads it without the lock, then finds what respond left for it (a half-sent answer).
        try:
            self._respond(self._answer())
        except Exception as e:  # noqa: BLE001
            self.error = e
        self._completed = True
        if self._waker.wakes_on_completion or self.error is not None:
            self._waker.wake()

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self._completed = True
        self._waker.wake()


class FetchPurgatory:
    """The parked fetches. An append tries those it feeds on the appending thread (``complete_on_append``);
    a metadata change pokes them all, so that each looks on its own thread (a big change would otherwise
    read thousands of partitions on the metadata publisher's thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: set[DelayedFetch] = set()

    def __len__(self) -> int:
        return len(self._watched)

    def park(self, fetch: DelayedFetch) -> None:
        """Watch ``fetch``, then try it once (an append in between is seen by one or the other)."""
        with self._lock:
            self._watched.add(fetch)
        if fetch.try_complete():
            self.unwatch(fetch)

    def unwatch(self, fetch: DelayedFetch) -> None:
        with self._lock:
            self._watched.discard(fetch)

    def await_completion(self, fetch: DelayedFetch, still_wanted: Callable[[], bool]) -> bool:
        """DelayedFetch.await_completion, no longer watched after."""
        try:
            return fetch.await_completion(still_wanted)
        finally:
            self.unwatch(fetch)

    def complete_on_append(self, key: object) -> None:
        """``key`` (a partition) was appended to: each parked fetch says what that does to it."""
        if not self._watched:   # every produce comes here; a fetch parking now tries itself once watched
            return
        with self._lock:
            watched = list(self._watched)
        for fetch in watched:
            action = fetch.on_append(key)
            if action == COMPLETE and fetch.try_complete():
                self.unwatch(fetch)
            elif action == POKE:
                fetch.poke()

    def poke_all(self) -> None:
        with self._lock:
            watched = list(self._watched)
        for fetch in watched:
            fetch.poke()
