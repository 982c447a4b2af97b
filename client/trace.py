"""Trace hook: every hop the client makes, as events a caller can print or collect.

``kclient --trace`` prints them on stderr, so the lesson's diagram (ask any node
for metadata, learn the leader, send to the leader) can be watched for real.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class TraceEvent:
    kind: str                 # "request" | "response" | "error" | "redirect" | "retry"
    api: str                  # Metadata, Produce, Fetch, ...
    address: str              # host:port of the broker
    broker_id: int | None     # None while only the address is known (bootstrap)
    detail: str


Tracer = Callable[[TraceEvent], None]


def _who(e: TraceEvent) -> str:
    return f"broker {e.broker_id} ({e.address})" if e.broker_id is not None else e.address


def format_event(e: TraceEvent) -> str:
    arrow = {"request": "->", "response": "<-", "error": "<-", "redirect": "=>", "retry": "=>"}[e.kind]
    return f"[trace] {e.api:<14} {arrow} {_who(e)}: {e.detail}"


def stderr_tracer(event: TraceEvent) -> None:
    print(format_event(event), file=sys.stderr, flush=True)


class MermaidTracer:
    """Collects the hops and renders them as a mermaid sequenceDiagram (the lesson's own format).

        tracer = MermaidTracer(); Producer(..., tracer=tracer); ...; print(tracer.render())
    """

    def __init__(self, client_name: str = "Client") -> None:
        self.client_name = client_name
        self.events: list[TraceEvent] = []

    def __call__(self, event: TraceEvent) -> None:
        self.events.append(event)

    def render(self) -> str:
        ids = {e.address: e.broker_id for e in self.events if e.broker_id is not None}
        names: dict[str, str] = {}
        lines = ["sequenceDiagram", f"    participant C as {self.client_name}"]
        for e in self.events:
            key, name = _participant(e, ids)
            if key not in names:
                names[key] = name
                lines.append(f"    participant {key} as {name}")
        for e in self.events:
            key, _ = _participant(e, ids)
            text = f"{e.api}: {e.detail}".replace(";", ",").replace("#", "no.")
            if e.kind == "request":
                lines.append(f"    C->>{key}: {text}")
            elif e.kind in ("response", "error", "redirect"):  # a redirect is the broker's answer with a hint
                lines.append(f"    {key}-->>C: {text}")
            else:  # retry: the client's own decision
                lines.append(f"    Note over C: {text}")
        return "\n".join(lines)


def _participant(e: TraceEvent, ids: dict[str, int]) -> tuple[str, str]:
    """(mermaid id, label) of the broker an event talks to; a bootstrap address counts as its broker."""
    broker_id = e.broker_id if e.broker_id is not None else ids.get(e.address)
    if broker_id is None:
        return "B_" + e.address.replace(".", "_").replace(":", "_"), e.address
    return f"B{broker_id}", f"Broker {broker_id} (:{e.address.rsplit(':', 1)[-1]})"
