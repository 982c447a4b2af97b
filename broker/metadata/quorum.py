"""The metadata quorum: a thin pysyncobj adapter around the pure metadata image.

Every broker embeds one pysyncobj node; the three form a Raft group whose log
carries metadata record batches. The Raft leader is the controller. Committed
batches are applied by ``apply_batch`` on pysyncobj's tick thread, identically
on every node; listeners are told on that thread and must only wake someone
(they never block it with file or network work).

Settings follow the measurements in shared/notes/pysyncobj-grpc.md: no append
batching (0.5 ms commits, not 100 ms), a huge connectionTimeout (an idle
follower-follower link would otherwise drop the first RequestVote and double
the election time), 1 s redial, no fork inside a gRPC process, loopback bind,
and a password: pysyncobj's wire format is pickle, so without the cluster
secret a stranger's frame is dropped before it is ever unpickled.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import structlog
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.node import TCPNode
from pysyncobj.syncobj import SyncObjException
from pysyncobj.transport import TCPTransport

from broker.metadata.image import BatchOutcome, MetadataImage, apply_batch, image_from_dict, image_to_dict
from broker.metadata.records import MetadataRecord, record_from_dict, record_to_dict

log = structlog.get_logger(__name__)

_FAIL_NAMES = {getattr(FAIL_REASON, n): n for n in dir(FAIL_REASON) if n.isupper()}


class QuorumStartError(Exception):
    """The Raft port cannot be bound (in use, or not a local address)."""


class CommitError(Exception):
    """A batch was not confirmed committed. Its outcome is unknown: read the image, then retry."""


class MetadataStateMachine(SyncObjConsumer):
    """The replicated state: one MetadataImage, replaced (never mutated) by each committed batch."""

    def __init__(self, cluster_id: str):
        # Everything set before SyncObjConsumer.__init__ is left out of its dumps;
        # _serialize below dumps the image alone, as builtins.
        self._image = MetadataImage(cluster_id=cluster_id)
        self._listeners: list[Callable[[], None]] = []
        super().__init__()

    @property
    def image(self) -> MetadataImage:
        return self._image  # one reference read: readers on any thread get a whole image

    def add_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    # The only replicated method: record types evolve inside the dicts, so the
    # method id pysyncobj derives from names never changes under an old journal.
    @replicated
    def commit_records(self, records: list[dict]) -> BatchOutcome:
        try:
            self._image, outcome = apply_batch(self._image, [record_from_dict(r) for r in records])
        except Exception as e:  # noqa: BLE001 -- a malformed batch (bad type, bad value) must not wedge the
            # tick thread, which would retry the same entry forever; the same code gives the same answer on
            # every node, so skipping it keeps the replicas identical.
            self._image, _ = apply_batch(self._image, [])
            outcome = BatchOutcome(False, self._image.offset - 1, f"malformed batch: {e!r}")
        self._notify()
        return outcome

    def _serialize(self):
        return image_to_dict(self._image)

    def _deserialize(self, data) -> None:
        self._image = image_from_dict(data)
        self._notify()


# An incoming Raft connection must say which node it is (after the password handshake: two small
# messages, sent at once by a real peer) within this time and this many bytes, or it is dropped.
UNIDENTIFIED_TIMEOUT_S = 5.0
UNIDENTIFIED_MAX_BYTES = 64 * 1024


class StrangerBoundTransport(TCPTransport):
    """pysyncobj's transport, with a bound on connections that never identify themselves.

    pysyncobj keeps any connection until ``connectionTimeout`` of silence, which is 3600 s here
    so that idle links between peers survive (a shorter one loses the first RequestVote after a
    leader dies). A stranger's connection would get the same: a half-sent frame announcing 2 GiB
    holds its socket and buffers whatever follows for an hour. Runs on pysyncobj's own thread
    (its tick), like everything else that touches its connections.
    """

    def __init__(self, *args, **kwargs):
        self._accepted_at: dict = {}   # connection -> when it was accepted, until it identifies itself
        super().__init__(*args, **kwargs)

    def _onNewIncomingConnection(self, conn):
        self._accepted_at[conn] = time.monotonic()
        # pysyncobj reads whatever a socket has in one loop before its tick runs again: a stranger
        # streaming a huge frame would be buffered for as long as it keeps sending. So, until the
        # connection identifies itself, each read also checks the size (an instance attribute
        # shadows TcpConnection's private __processRead; removed once the peer is known).
        read = conn._TcpConnection__processRead

        def bounded_read() -> bool:
            more = read()
            if (more and len(conn._TcpConnection__readBuffer) > UNIDENTIFIED_MAX_BYTES
                    and conn in self._unknownConnections):   # a known peer may send big messages
                self._drop(conn, "too many bytes before identifying itself")
                return False
            return more

        conn._TcpConnection__processRead = bounded_read
        super()._onNewIncomingConnection(conn)

    def _onTick(self):
        super()._onTick()
        accepted_at = self._accepted_at
        if not accepted_at:
            return
        now = time.monotonic()
        for conn in list(accepted_at):
            if conn not in self._unknownConnections:
                del accepted_at[conn]   # identified as a peer, or gone
                conn.__dict__.pop("_TcpConnection__processRead", None)
            elif now - accepted_at[conn] > UNIDENTIFIED_TIMEOUT_S:
                self._drop(conn, "did not identify itself in time")

    def _drop(self, conn, why: str) -> None:
        accepted_at = self._accepted_at.pop(conn, None)
        log.info("raft_stranger_dropped", why=why, waited_s=round(time.monotonic() - (accepted_at or 0.0), 2))
        self._unknownConnections.discard(conn)
        conn.disconnect()


class MetadataQuorum:
    def __init__(self, cluster_id: str, self_address: str, peers: dict[int, str], local_broker_id: int,
                 data_dir: Path, secret: str, election_timeout_s: tuple[float, float] = (0.4, 0.8),
                 heartbeat_period_s: float = 0.1):
        self.local_broker_id = local_broker_id
        self._self_address = self_address
        self._peers = dict(peers)                       # broker id -> "host:raft_port", self excluded
        self._broker_of = {a: b for b, a in peers.items()}
        self._broker_of[self_address] = local_broker_id
        self._peer_nodes = {b: TCPNode(a) for b, a in peers.items()}
        self._data_dir = data_dir
        self._secret = secret
        self._timeouts = election_timeout_s
        self._heartbeat_period_s = heartbeat_period_s
        self.state_machine = MetadataStateMachine(cluster_id)
        self._raft: SyncObj | None = None
        # Commits waited on, so that refuse_commits() can end those waits at once.
        self._waiting: set[threading.Event] = set()
        self._waiting_lock = threading.Lock()
        self._refusing = False
        self.ready = threading.Event()

    def start(self) -> None:
        low, high = self._timeouts
        conf = SyncObjConf(
            bindAddress=self._self_address,
            password=self._secret,
            journalFile=str(self._data_dir / "raft.journal"),
            fullDumpFile=str(self._data_dir / "raft.dump"),
            appendEntriesUseBatch=False,
            raftMinTimeout=low, raftMaxTimeout=high,
            appendEntriesPeriod=self._heartbeat_period_s,
            connectionTimeout=3600.0,
            connectionRetryTime=1.0,
            leaderFallbackTimeout=3.0,
            commandsWaitLeader=False,
            useFork=False,
            maxBindRetries=3,
            bindRetryTime=0.2,
            dynamicMembershipChange=False,
            onReady=self.ready.set,
        )
        self._raft = SyncObj(self._self_address, list(self._peers.values()), conf=conf,
                             consumers=[self.state_machine], transportClass=StrangerBoundTransport)
        try:
            self._raft.waitBinded()
        except SyncObjException:
            self._raft.destroy_synchronous()
            self._raft = None
            raise QuorumStartError(f"cannot listen on {self._self_address} (raft_port): the port is in use") from None

    def refuse_commits(self) -> None:
        """The broker is stopping: end every wait for a commit now (CommitError, outcome unknown)
        and refuse new ones. A controller that lost its quorum (the other brokers stopped first)
        would otherwise hold its stop for metadata.commit.timeout.ms, past honcho's patience."""
        with self._waiting_lock:
            self._refusing = True
            for done in self._waiting:
                done.set()

    def stop(self) -> None:
        self.refuse_commits()
        if self._raft is not None:
            self._raft.destroy_synchronous()
            self._raft = None

    # ---- reads (any thread; pysyncobj's own fields, possibly a tick old) ------------

    @property
    def image(self) -> MetadataImage:
        return self.state_machine.image

    def add_listener(self, listener: Callable[[], None]) -> None:
        self.state_machine.add_listener(listener)

    def is_leader(self) -> bool:
        return self._raft is not None and self._raft._isLeader()

    def leader_caught_up(self) -> bool:
        """Raft leader, and its image holds every committed record: it applied the no-op entry
        pysyncobj appends on election (Raft: a new leader knows what is committed only once an entry
        of its own term is). Until then its image may be older than the last controller's, so it must
        neither decide (KRaft's new controller also replays the log before it acts) nor call itself
        the controller in Metadata answers."""
        raft = self._raft
        if raft is None or not raft._isLeader():
            return False
        # Private to pysyncobj 0.3.17 (pinned): the index of the election's no-op entry.
        noop_index = getattr(raft, "_SyncObj__noopIDx", None)
        return noop_index is not None and raft.raftLastApplied >= noop_index

    def term(self) -> int:
        return self._raft._getTerm() if self._raft is not None else -1

    def controller_id(self) -> int:
        """The broker whose Raft node this node believes leads, or -1 (may be stale: never a lock)."""
        if self._raft is None:
            return -1
        if self._raft._isLeader():
            return self.local_broker_id if self.leader_caught_up() else -1
        leader = self._raft._getLeader()
        return self._broker_of.get(str(leader), -1) if leader is not None else -1

    def peer_connected(self, broker_id: int) -> bool:
        node = self._peer_nodes.get(broker_id)
        return node is not None and self._raft is not None and self._raft.isNodeConnected(node)

    # ---- writes (never from the tick thread) --------------------------------------

    def submit(self, records: Sequence[MetadataRecord], timeout_s: float) -> BatchOutcome:
        """Commit one all-or-nothing batch; CommitError when the outcome is unknown."""
        done = threading.Event()
        answer: list = []

        def on_result(result, error) -> None:
            answer.append((result, error))
            done.set()

        with self._waiting_lock:
            if self._raft is None or self._refusing:
                raise CommitError("the metadata quorum is stopping")
            self._waiting.add(done)
        try:
            self.state_machine.commit_records([record_to_dict(r) for r in records], callback=on_result)
            if not done.wait(timeout_s):
                raise CommitError(f"no commit within {timeout_s:.1f} s")
        finally:
            with self._waiting_lock:
                self._waiting.discard(done)
        if not answer:
            raise CommitError("the metadata quorum is stopping: the outcome is unknown")
        result, error = answer[0]
        if error != FAIL_REASON.SUCCESS:
            raise CommitError(f"not committed: {_FAIL_NAMES.get(error, error)}")
        return result
