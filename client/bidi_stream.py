"""A bidirectional gRPC call whose requests are written from a queue: the part both pipelined
streams share.

Two streams use it: the producer's ProduceStream (client/produce_stream.py: a reader thread
hands its answers to the sender) and a follower's ReplicaFetchStream (broker/replica_fetcher.py:
one request, then its answer, in lock step on the fetcher thread). Only the request side and
the ending are shared; how answers are read is each user's own.

gRPC consumes a stream-stream call's request iterator on a thread of its own, which blocks on
the queue for the next request. Ending the call therefore takes two steps: a sentinel that ends
the iterator (else that thread waits on the queue forever) and a cancel that ends the answer
side (else a reader blocked on a silent broker waits forever).
"""

from __future__ import annotations

import queue
from typing import Any, Callable, Iterator

_END = None  # the sentinel: ends the request side of the call


class StreamEnded(Exception):
    """The server ended the stream (it is stopping)."""


class BidiStream:
    """One stream-stream call: ``send`` queues a request; iterate it or ``next_answer`` for answers."""

    def __init__(self, method: Callable[[Iterator[Any]], Any]):
        """``method``: the stub's stream-stream method, e.g. ``stub.ProduceStream``. No deadline is
        given: the call lives as long as its user; each request's timeout is the user's to enforce
        (by closing the stream when it runs out)."""
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._call = method(iter(self._requests.get, _END))

    def send(self, request: Any) -> None:
        self._requests.put(request)

    def __iter__(self) -> Iterator[Any]:
        """The answers in order; ends when the server ends the call, raises grpc.RpcError when it fails
        or is cancelled."""
        return self._call

    def next_answer(self) -> Any:
        """The next answer (blocking): StreamEnded when the server ended the call, grpc.RpcError when it
        failed or was cancelled."""
        try:
            return next(self._call)
        except StopIteration:
            raise StreamEnded() from None

    def close(self) -> None:
        """End both sides. Safe to call more than once, and from any thread: an answer blocked in
        another thread then raises grpc.RpcError (CANCELLED)."""
        if self._closed:
            return
        self._closed = True
        self._requests.put(_END)   # lets gRPC's thread that consumes the requests finish
        self._call.cancel()        # a no-op once the call has ended by itself
