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
    return f"[trace] {e.api:<11} {arrow} {_who(e)}: {e.detail}"


def stderr_tracer(event: TraceEvent) -> None:
    print(format_event(event), file=sys.stderr, flush=True)
