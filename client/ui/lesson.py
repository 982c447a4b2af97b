"""The lesson's form: one record produced through a chosen node, with every hop the client made.

The producer is the library's own, with ``first_to_bootstrap``: its first batch goes to the chosen
node even when that node only holds a follower, so the redirect (NOT_LEADER_OR_FOLLOWER with the
leader's address, then the retry there) shows in the hops, as in `kclient produce --first-to-bootstrap
--trace mermaid`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from client.errors import KafkaError
from client.producer import Producer
from client.trace import TraceEvent
from client.ui.validation import ProduceForm

# Short enough that the page answers while a learner watches; long enough for a failover to finish.
PRODUCE_TIMEOUT_MS = 8000
MAX_HOPS = 200


@dataclass(frozen=True)
class Hop:
    kind: str                 # request | response | error | redirect | retry (client/trace.py)
    api: str
    address: str
    broker_id: int | None     # resolved from the address when the event named none (a bootstrap call)
    detail: str


@dataclass(frozen=True)
class ProduceOutcome:
    node: int
    address: str
    topic: str
    partition: int | None
    offset: int | None
    produce_error: str | None        # "NOT_ENOUGH_REPLICAS: ..." one line; None when stored
    hops: list[Hop]

    def to_json(self) -> dict:
        return asdict(self)


def hops_of(events: list[TraceEvent]) -> list[Hop]:
    """The trace as hops; a bootstrap address counts as its broker once any event names it."""
    ids = {e.address: e.broker_id for e in events if e.broker_id is not None}
    return [Hop(e.kind, e.api, e.address, e.broker_id if e.broker_id is not None else ids.get(e.address),
                e.detail[:500]) for e in events[:MAX_HOPS]]


def produce_through(form: ProduceForm, address: str) -> ProduceOutcome:
    """Send ``form``'s record through the broker at ``address`` (acks=all); never raises a KafkaError."""
    events: list[TraceEvent] = []
    partition = offset = None
    error = None
    try:
        with Producer(bootstrap=address, acks="all", first_to_bootstrap=True, tracer=events.append, linger_ms=0,
                      request_timeout_ms=PRODUCE_TIMEOUT_MS // 2, delivery_timeout_ms=PRODUCE_TIMEOUT_MS,
                      max_block_ms=PRODUCE_TIMEOUT_MS // 2) as producer:
            md = producer.send(form.topic, form.value, key=form.key, partition=form.partition).result(
                timeout=PRODUCE_TIMEOUT_MS / 1000 + 2)
            partition, offset = md.partition, md.offset
    except KafkaError as e:
        error = _one_line(str(e))
    except TimeoutError:
        error = f"REQUEST_TIMED_OUT: no answer within {PRODUCE_TIMEOUT_MS} ms"
    return ProduceOutcome(form.node, address, form.topic, partition if partition is not None else form.partition,
                          offset, error, hops_of(list(events)))


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]
