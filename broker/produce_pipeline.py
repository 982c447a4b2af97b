"""A pipelined produce stream: append each request as it arrives, answer them in the same order.

A producer keeps several requests in flight on one stream. A reader thread appends each request
to the leaders' logs the moment it arrives (in stream order, so the batches land in the producer's
order); the caller's thread answers them one by one, each once its acks are satisfied. At most
MAX_PENDING_PRODUCES appended requests wait for their answer; beyond that the reader stops reading
and the transport's flow control pushes back on the producer.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

from broker.api_messages import MalformedRequestError, ProduceRequest, ProduceResponse
from broker.kafka_apis import KafkaApis, PendingProduce

MAX_PENDING_PRODUCES = 64
POLL_S = 0.5   # how often both sides look whether the caller left or the broker is stopping


@dataclass(frozen=True)
class _Refused:
    """A request the reader could not append (malformed): the answering side raises its error."""
    error: MalformedRequestError


class _Ended:
    """The reader has nothing more: the stream ended, broke, or the broker is stopping."""


class ProducePipeline:
    def __init__(self, apis: KafkaApis, call: object, caller_waiting: Callable[[], bool]):
        self._apis = apis
        self._call = call                         # the stream's slot holder (admission.StreamSlots)
        self._caller_waiting = caller_waiting     # False once the producer has gone
        self._pending: queue.Queue = queue.Queue(maxsize=MAX_PENDING_PRODUCES)

    def run(self, requests: Iterator[ProduceRequest]) -> Iterator[ProduceResponse]:
        """The answers, in request order. Holds a client slot while the stream lasts."""
        with self._apis.client_slots.hold(self._call, "ProduceStream"):
            threading.Thread(target=self._read, args=(requests,), name="produce-stream", daemon=True).start()
            yield from self._answer()

    def _open(self) -> bool:
        return self._caller_waiting() and not self._apis.stopping.is_set()

    def _put(self, item) -> bool:
        while self._caller_waiting():
            try:
                self._pending.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _read(self, requests: Iterator[ProduceRequest]) -> None:
        try:
            for request in requests:
                if self._apis.stopping.is_set():
                    return   # not appended: the producer retries it elsewhere
                try:
                    pending: PendingProduce | _Refused = self._apis.append_produce(request)
                except MalformedRequestError as e:   # ends the stream, with its reason
                    self._put(_Refused(e))
                    return
                if not self._put(pending):
                    return
        except Exception:  # noqa: BLE001 - the producer cancelled or the stream broke: nothing more to read
            pass
        finally:
            self._put(_Ended())

    def _answer(self) -> Iterator[ProduceResponse]:
        while True:
            try:
                item = self._pending.get(timeout=POLL_S)
            except queue.Empty:
                if not self._open():
                    return
                continue
            if isinstance(item, _Ended):
                return
            if isinstance(item, _Refused):
                raise item.error
            yield self._apis.complete_produce(item)
