"""The page's eyes: threads that ask the cluster and follow its metadata log, then publish a snapshot.

The client library is synchronous gRPC, so each source has its own thread and its own short timeout:
a dead or paused broker slows down only the source that asked it, never the page. Every thread
stores its latest answer and calls ``_changed``, which builds the snapshot (snapshot.py) and hands
it to ``publish`` when the page would look different.

    metadata   every 0.4 s  Admin.describe_cluster() + describe_topics(): brokers, leaders, ISR
    replicas   every 0.4 s  each broker's DescribeReplicas: log start / HW / log end, Raft term
    groups     every 2 s    list_groups, describe_group, committed_offsets, list_offsets: lag
    log        streamed     the metadata log (MetadataLog, follow), from the offset after the last seen,
                            through another broker when the one it reads from dies or stops answering
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from typing import Any, Callable

import grpc

from client.admin import Admin
from client.connection import Address, Connections, format_address, parse_bootstrap
from client.errors import KafkaError
from client.protocol.v1 import kafka_pb2
from client.ui import snapshot as snap

log = logging.getLogger("raftka.ui")

POLL_INTERVAL_S = 0.4
GROUPS_INTERVAL_S = 2.0
REQUEST_TIMEOUT_MS = 1000
MAX_GROUPS = 50
LOG_RETRY_S = 0.3


class ClusterWatch:
    def __init__(self, bootstrap: str, controls: snap.ControlsInfo, configured: dict[int, str],
                 publish: Callable[[str], None] = lambda text: None, interval_s: float = POLL_INTERVAL_S,
                 groups_interval_s: float = GROUPS_INTERVAL_S):
        self.bootstrap = bootstrap
        self._bootstrap_addresses = parse_bootstrap(bootstrap)
        self._controls, self._configured, self._publish = controls, configured, publish
        self._interval_s, self._groups_interval_s = interval_s, groups_interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._view: snap.MetadataView | None = None
        self._replicas: dict[int, Any] = {}
        self._groups: list[snap.GroupRow] = []
        self._groups_error: str | None = None
        self._timeline: deque[snap.TimelineItem] = deque(maxlen=snap.TIMELINE_MAX * 2)
        self._last: dict[str, Any] | None = None
        self._last_json = ""
        self._log_call: Any = None
        self._log_source: Address | None = None
        self._connections = Connections()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        for name, target in (("metadata", self._metadata_loop), ("replicas", self._replicas_loop),
                             ("groups", self._groups_loop), ("metadata-log", self._log_loop)):
            t = threading.Thread(target=self._guarded, args=(target,), name=f"ui-{name}", daemon=True)
            self._threads.append(t)
            t.start()
        self._changed()

    def stop(self) -> None:
        self._stop.set()
        call = self._log_call
        if call is not None:
            call.cancel()
        for t in self._threads:
            t.join(timeout=3)
        self._connections.close()

    def _guarded(self, loop: Callable[[], None]) -> None:
        """A source's loop; an unexpected error is logged in one line and the loop goes on (the page lives)."""
        while not self._stop.is_set():
            try:
                loop()
            except Exception as e:  # noqa: BLE001 - the page must outlive any one bad answer
                log.warning("ui source %s failed: %s: %s", threading.current_thread().name, type(e).__name__, e)
                self._stop.wait(1.0)

    # ---- what the server asks --------------------------------------------------------------------

    def set_publisher(self, publish: Callable[[str], None]) -> None:
        """Where each new snapshot goes (the server's SSE hub); set before start()."""
        self._publish = publish

    def current_json(self) -> str:
        with self._lock:
            return self._last_json

    def broker_address(self, broker_id: int) -> str | None:
        """The client address of a broker the page knows (registered, or named by cluster.toml)."""
        with self._lock:
            view = self._view
        if view is not None and view.cluster is not None:
            for b in view.cluster.brokers:
                if b.id == broker_id:
                    return f"{b.host}:{b.port}"
        return self._configured.get(broker_id)

    def known_brokers(self) -> set[int]:
        with self._lock:
            view = self._view
        known = set(self._configured)
        if view is not None and view.cluster is not None:
            known |= {b.id for b in view.cluster.brokers}
        return known

    # ---- publishing --------------------------------------------------------------------------------

    def _changed(self) -> None:
        with self._lock:
            picture = snap.build_snapshot(self._view, dict(self._replicas), list(self._groups), self._groups_error,
                                          list(self._timeline), self._controls, self._configured).to_json()
            if snap.same_picture(self._last, picture):
                return
            self._last = picture
            self._last_json = text = json.dumps(picture, separators=(",", ":"))
            unhealthy = {b["address"] for b in picture["brokers"] if b["state"] in ("fenced", "unreachable")}
        self._publish(text)
        source, call = self._log_source, self._log_call
        if call is not None and source is not None and format_address(source) in unhealthy:
            call.cancel()   # its broker is gone or silent: a paused one would hold the stream open for ever

    # ---- sources -----------------------------------------------------------------------------------

    def _metadata_loop(self) -> None:
        with Admin(self.bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS) as admin:
            while not self._stop.is_set():
                try:
                    view = snap.MetadataView(admin.describe_cluster(), admin.describe_topics())
                except KafkaError as e:
                    view = snap.MetadataView(None, [], str(e))
                with self._lock:
                    self._view = view
                self._changed()
                self._stop.wait(self._interval_s)

    def _replicas_loop(self) -> None:
        # Admin.describe_replicas asks every registered broker at once, each with its own short timeout:
        # a dead or paused broker comes back as an answer with its error, never as a stall.
        with Admin(self.bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS) as admin:
            while not self._stop.is_set():
                try:
                    answers = {b.broker_id: b for b in admin.describe_replicas()}
                except KafkaError as e:   # no broker answered Metadata: the metadata source says so already
                    log.debug("replicas: %s", e)
                    answers = {}
                with self._lock:
                    self._replicas = answers
                self._changed()
                self._stop.wait(self._interval_s)

    def _groups_loop(self) -> None:
        with Admin(self.bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS * 2) as admin:
            while not self._stop.is_set():
                try:
                    rows, error = collect_groups(admin), None
                except KafkaError as e:
                    rows, error = None, str(e)
                with self._lock:
                    if rows is not None:
                        self._groups = rows
                    self._groups_error = error
                self._changed()
                self._stop.wait(self._groups_interval_s)

    def _log_loop(self) -> None:
        """Follow the metadata log; on a broker's death or silence, go on through another from the next offset."""
        story, next_offset = snap.TimelineStory(), 0
        while not self._stop.is_set():
            for address in self._log_candidates():
                if self._stop.is_set():
                    return
                next_offset = self._follow_from(address, story, next_offset)
            self._stop.wait(LOG_RETRY_S)

    def _log_candidates(self) -> list[Address]:
        """Brokers that answered the page just now first (the alive ones), then the bootstrap list."""
        with self._lock:
            view, replicas = self._view, dict(self._replicas)
        alive: list[Address] = []
        if view is not None and view.cluster is not None:
            alive = [(b.host, b.port) for b in view.cluster.brokers
                     if b.alive and (b.id not in replicas or replicas[b.id].error is None)]
        return alive + [a for a in self._bootstrap_addresses if a not in alive]

    def _follow_from(self, address: Address, story: snap.TimelineStory, next_offset: int) -> int:
        # The stub is called directly (not read_metadata_log) to keep the call object: cancel() is how a
        # stream to a paused broker, which would never end by itself, is given up.
        call = self._connections.kafka(address).MetadataLog(
            kafka_pb2.MetadataLogRequest(from_offset=next_offset, follow=True))
        self._log_call, self._log_source = call, address
        try:
            for entry in call:
                if entry.offset < next_offset:
                    continue
                items = story.items(entry.offset, entry.term, entry.committed_ms,
                                    snap.entry_records(entry.records), entry.applied, entry.reason)
                next_offset = entry.offset + 1
                with self._lock:
                    self._timeline.extend(items)
                self._changed()
        except grpc.RpcError:
            pass   # dead, silent (cancelled) or restarting: the caller tries the next broker
        finally:
            self._log_call = self._log_source = None
        return next_offset


def collect_groups(admin: Admin) -> list[snap.GroupRow]:
    """Every group with its lag; a group that cannot be described now is a row with its error."""
    described = []
    for listing in admin.list_groups()[:MAX_GROUPS]:
        try:
            d = admin.describe_group(listing.group_id)
            described.append((d, admin.committed_offsets(listing.group_id)))
        except KafkaError as e:
            described.append((listing, str(e)))
    wanted = {tp for d, c in described if isinstance(c, dict) for tp in c}
    wanted |= {tuple(tp) for d, c in described if isinstance(c, dict)
               for m in d.members for tp in m.assignment.partitions}
    ends = admin.list_offsets(sorted(wanted), "latest", missing_ok=True) if wanted else {}
    rows = []
    for d, committed in described:
        if isinstance(committed, str):
            rows.append(snap.GroupRow(d.group_id, d.state, "", 0, -1, None, [], committed))
        else:
            rows.append(snap.group_row(d, committed, ends))
    return rows
