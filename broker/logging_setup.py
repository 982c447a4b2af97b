"""structlog for a broker process: one event per line, every line bound to broker_id.

JSON when stderr is not a terminal (tests, tools), readable console lines when it is;
LOG_FORMAT=console|json|story overrides. Standard-library loggers (grpc, pysyncobj) go
through the same formatter, so their lines carry broker_id too.

``story`` is for `make run` (the .env honcho reads): honcho already prefixes each line with a
time and the broker, so a story line is the event and its fields alone, and the routine events
(a log opened, a follower's ISR copy updated, the internal __consumer_offsets topic's partitions)
are left out unless LOG_LEVEL=DEBUG: what remains is the cluster's story (registrations, fencing,
elections, ISR shrink and expand, topics, warnings).
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import TextIO

import structlog


# Events that say a routine step went as planned, many times per failover: out of the story at INFO.
ROUTINE_EVENTS = frozenset({
    "log_opened", "log_created", "log_closed", "logs_loaded", "became_follower", "isr_updated", "became_followers",
    "isrs_updated", "leader_epoch_assigned", "offsets_partition_loaded", "offsets_partition_unloaded",
    "broker_fenced_state", "metadata_caught_up", "group_stored", "isr_expand_requested", "isr_expands_requested",
    "alter_partition_committed", "alter_partitions_committed", "replica_fetch_error", "replica_fetch_errors",
    "kafka_listener_started", "registration_refused", "replication_stream_accepted"})
INTERNAL_TOPICS = frozenset({"__consumer_offsets"})

# One change touching more partitions of a topic than this in the same way logs one event for them: a broker
# rejoining 10,000 ISRs wrote 10,000 lines per kind, about 50 us apiece, a fifth of the cluster's CPU, and
# half the time each 1,000-change AlterPartition held the controller's write lock. The limit is per topic, so
# a topic with a few partitions in a small change (a test's, a lesson's) still has its own lines to find.
PARTITION_EVENTS_EACH_UP_TO = 20
# ... and a change touching more partitions than this in all logs one event per topic, however few of each:
# spread over 100 topics, 1,000 ISR changes are 10 per topic, and were 1,000 lines on every broker (and as many
# again on the controller and the leader that asked). At 10,000 partitions a restarted broker's way back into
# every ISR wrote about 30,000 lines at 0.1 to 0.35 ms each under that load: a third of its restart's seconds.
PARTITION_EVENTS_PER_CHANGE_UP_TO = 100


def log_partitions(logger, event: str, bulk_event: str, each: list[dict], first_keys: Sequence[str] = ("isr",),
                   **common) -> None:
    """``event`` once per partition (each dict holds its ``topic`` and ``partition``), or one ``bulk_event`` per
    topic for a topic with more than PARTITION_EVENTS_EACH_UP_TO of them, and for every topic when there are more
    than PARTITION_EVENTS_PER_CHANGE_UP_TO in all: the topic, the count, which ones (``partition_ranges``,
    "0-4,7") and the first partition's ``first_keys`` fields as ``first_<key>``. ``common``: fields of every
    event (a commit's time)."""
    by_topic: dict[str, list[dict]] = {}
    for fields in each:
        by_topic.setdefault(fields["topic"], []).append(fields)
    in_bulk = len(each) > PARTITION_EVENTS_PER_CHANGE_UP_TO
    for topic, of_topic in by_topic.items():
        if not in_bulk and len(of_topic) <= PARTITION_EVENTS_EACH_UP_TO:
            for fields in of_topic:
                logger.info(event, **fields, **common)
            continue
        first = of_topic[0]
        logger.info(bulk_event, topic=topic, partitions=len(of_topic),
                    partition_ranges=partition_ranges(f["partition"] for f in of_topic),
                    first_partition=first["partition"], **{f"first_{k}": first[k] for k in first_keys}, **common)


def partition_ranges(partitions: Iterable[int]) -> str:
    """Partition numbers as runs: [0, 1, 2, 3, 7, 9, 10] -> "0-3,7,9-10"."""
    runs: list[list[int]] = []
    for p in sorted(set(partitions)):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def parse_partition_ranges(text: str) -> list[int]:
    """partition_ranges' inverse: "0-3,7" -> [0, 1, 2, 3, 7]."""
    out: list[int] = []
    for run in filter(None, text.split(",")):
        first, _, last = run.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out


def story_filter(level: str):
    """A processor that drops routine events (and per-partition events of internal topics) below WARNING,
    unless ``level`` is DEBUG."""
    def drop_routine(_logger, method: str, event: dict) -> dict:
        if level == "DEBUG" or event.get("level", method) in ("warning", "error", "critical", "exception"):
            return event
        if event.get("event") in ROUTINE_EVENTS or event.get("topic") in INTERNAL_TOPICS:
            raise structlog.DropEvent
        return event
    return drop_routine


def render_story(_logger, method: str, event: dict) -> str:
    """``event key=value ...``: no time and no broker id (honcho's prefix has both); a level only when it
    is worth one (warning and above)."""
    name = event.pop("event", "")
    level = str(event.pop("level", method))
    for key in ("timestamp", "broker_id", "committed_at_ms"):   # a time: for tools, not the story
        event.pop(key, None)
    exc = event.pop("exception", None)
    fields = " ".join(f"{k}={v}" for k, v in event.items())
    head = f"{level.upper()} " if level not in ("info", "debug") else ""
    return f"{head}{name} {fields}".rstrip() + (f"\n{exc}" if exc else "")


class LineWriter:
    """Writes log lines on a thread of its own, all that wait in one write, so that logging costs its thread
    the formatting only. A broker's threads wrote each line themselves, a system call at which the other busy
    threads could take the GIL for up to a switch interval: 0.19 ms a line beside two busy threads, against
    0.047 ms queued (``/tmp/lat/logconvoy.py``), and 0.6 to 7 ms a line in the controller while a restarted
    broker rejoined 10,000 ISRs (timed per batch of events). Not logging.handlers.QueueListener: it writes
    (and flushes) each record on its own, so under that load its thread would fall behind by a switch
    interval per line; here a turn writes everything that waits. A line waits for the writer's next turn, a
    few ms under load; ``flush`` waits until everything logged before it is written (logging.shutdown at
    exit, and a halt, call it), so only a kill -9 can lose the last few ms of lines, as with any buffered log."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._lines: queue.SimpleQueue = queue.SimpleQueue()   # a line, or an Event that flush waits on
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def put(self, line: str) -> None:
        self._lines.put(line)

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until every line put before this call is written; False after ``timeout``."""
        written = threading.Event()
        self._lines.put(written)
        return written.wait(timeout)

    def _run(self) -> None:
        while True:
            batch, flushed = [], []
            item = self._lines.get()
            while True:
                (flushed if isinstance(item, threading.Event) else batch).append(item)
                try:
                    item = self._lines.get_nowait()
                except queue.Empty:
                    break
            try:
                if batch:
                    self._stream.write("".join(batch))
                self._stream.flush()
            except Exception:  # noqa: BLE001 - a closed or broken stderr: the lines are lost, the broker goes on
                pass
            for event in flushed:
                event.set()


class QueuedStreamHandler(logging.StreamHandler):
    """logging.StreamHandler whose lines go through a LineWriter: formatted on the caller's thread, written
    on the writer's."""

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        self.writer = LineWriter(stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.put(self.format(record) + self.terminator)
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise into the caller
            self.handleError(record)

    def flush(self) -> None:
        self.writer.flush()


def flush_logs() -> None:
    """Write every line logged so far (before the process ends without running atexit: os._exit)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def configure_logging(broker_id: int, fmt: str | None = None, level: str | None = None) -> None:
    fmt = fmt or os.environ.get("LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    level = (level or os.environ.get("LOG_LEVEL") or "INFO").upper()
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
    # Dropping happens in structlog's own chain (which handles DropEvent), before the formatter.
    dropping = [story_filter(level)] if fmt == "story" else []
    structlog.configure(
        processors=shared + dropping + [structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    if fmt == "story":
        tail = [structlog.processors.format_exc_info, render_story]
    elif fmt == "console":
        tail = [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    else:
        tail = [structlog.processors.ExceptionRenderer(
                    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
                structlog.processors.JSONRenderer()]
    handler = QueuedStreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail]))
    # No caller lookup per record (a stack walk that doubled each event's cost, about 60 -> 30 us): the
    # logging HOWTO's own optimisation. Events name themselves; no renderer here prints file or line.
    logging._srcfile = None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pysyncobj").setLevel("WARNING")
