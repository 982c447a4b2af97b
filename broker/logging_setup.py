"""structlog for a broker process: one event per line, every line bound to broker_id.

JSON when stderr is not a terminal (honcho, tests), readable console lines when
it is; LOG_FORMAT=console|json overrides. Standard-library loggers (grpc,
pysyncobj) go through the same formatter, so their lines carry broker_id too.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging(broker_id: int, fmt: str | None = None, level: str = "INFO") -> None:
    fmt = fmt or os.environ.get("LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    static = {"broker_id": broker_id}

    # A processor, not bind_contextvars: gRPC runs each RPC in a fresh context and
    # threads start with an empty one, so context bindings would be lost there.
    def add_static(_logger, _name, event: dict) -> dict:
        for key, value in static.items():
            event.setdefault(key, value)
        return event

    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        add_static,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=shared + [structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    if fmt == "console":
        tail = [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    else:
        tail = [structlog.processors.ExceptionRenderer(
                    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
                structlog.processors.JSONRenderer()]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pysyncobj").setLevel("WARNING")
