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

A voter stands only after a majority granted it a PreVote (pre_vote.py), so a restarted or
reconnected broker does not depose a live controller.

A node whose data dir is ``rejoining`` (formatted after a lost disk: broker/storage_format.py)
takes no part in elections until it has caught up (RejoinGate, _RaftNode).

A broker left out of ``controller_quorum_voters`` (cluster.toml) is an observer, as a KRaft broker
without the controller role is: pysyncobj's read-only node (``selfNode=None``). It binds no Raft
port, dials every voter, replicates and applies the metadata log, but it is in no voter's
``otherNodes``: no majority counts it, and it never stands (pysyncobj starts an election only
``if selfNode is not None``) nor answers a RequestVote, so it can never be the Raft leader, which
is the controller. It names itself to the voters (ObserverTransport) so that the controller can
watch its link as it watches a voter's (liveness.py).
"""

from __future__ import annotations

import functools
import pickle
import threading
import time
from pathlib import Path
from typing import Callable, Collection, Sequence

import structlog
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.monotonic import monotonic
from pysyncobj.node import Node, TCPNode
from pysyncobj.syncobj import _RAFT_STATE, SyncObjException
from pysyncobj.transport import TCPTransport

from broker import metrics
from broker.metadata.image import BatchOutcome, MetadataImage, apply_batch, image_from_dict, image_to_dict
from broker.metadata.journal import MetadataEntry, MetadataJournal
from broker.metadata.pre_vote import PRE_VOTE, PRE_VOTE_RESPONSE, QUIET_SHARE, LogPosition, PreVote
from broker.metadata.records import MetadataRecord, record_from_dict, record_to_dict

log = structlog.get_logger(__name__)

_FAIL_NAMES = {getattr(FAIL_REASON, n): n for n in dir(FAIL_REASON) if n.isupper()}


class QuorumStartError(Exception):
    """The Raft port cannot be bound (in use, or not a local address)."""


class CommitError(Exception):
    """A batch was not confirmed committed. Its outcome is unknown: read the image, then retry."""


class MetadataStateMachine(SyncObjConsumer):
    """The replicated state: one MetadataImage, replaced (never mutated) by each committed batch."""

    def __init__(self, cluster_id: str, term: Callable[[], int] = lambda: -1):
        # Everything set before SyncObjConsumer.__init__ is left out of its dumps;
        # _serialize below dumps the image alone, as builtins.
        self._image = MetadataImage(cluster_id=cluster_id)
        self._listeners: list[Callable[[], None]] = []
        self.journal = MetadataJournal()   # the applied batches, for `kclient metadata-log`
        self._term = term
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
        self.journal.append(MetadataEntry(outcome.offset, self._term(), int(time.time() * 1000),
                                          list(records) if isinstance(records, list) else [],
                                          outcome.applied, outcome.reason))
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


# What an observer sends where a pysyncobj node sends its address (a read-only one: 'readonly').
OBSERVER_HELLO = "raftka-observer:"


def observer_node(address: str) -> Node:
    """The node a voter's pysyncobj files the observer at ``address`` (host:raft_port) under: a read-only
    node whose id names the broker, the same on every reconnect (pysyncobj numbers 'readonly' ones)."""
    return Node(OBSERVER_HELLO + address)


class ObserverTransport(StrangerBoundTransport):
    """StrangerBoundTransport, with observers that say which broker they are.

    pysyncobj's read-only node introduces itself as 'readonly' and a voter files it under a counter,
    so no voter could tell whose link dropped, and the controller would see every observer's link as
    down (liveness.py would fence an observer after two missed heartbeats instead of the session
    timeout). Here an observer sends OBSERVER_HELLO + its address instead, and a voter that expects
    it (the cluster file's observers) files the connection as pysyncobj files a read-only one, under
    observer_node(address). Any other hello goes to pysyncobj, which drops a stranger's connection.
    Runs on pysyncobj's tick thread, like the rest of the transport.
    """

    def __init__(self, syncObj, selfNode, otherNodes):
        # Set by _RaftNode before SyncObj.__init__ builds the transport.
        self._hello: str | None = syncObj._observer_hello            # None: this node is a voter
        self._expected = {observer_node(a).id for a in syncObj._observer_addresses}
        super().__init__(syncObj, selfNode, otherNodes)

    def _sendSelfAddress(self, conn):
        if self._hello is None:
            super()._sendSelfAddress(conn)
        else:
            conn.send(self._hello)

    def _onIncomingMessageReceived(self, conn, message):
        handshaking = self._syncObj.encryptor is not None and not conn.sendRandKey
        if handshaking or not isinstance(message, str) or message not in self._expected:
            super()._onIncomingMessageReceived(conn, message)
            return
        node = Node(message)
        previous = self._connections.get(node)
        if previous is not None and previous is not conn:
            previous.disconnect()   # a restarted observer's old connection: pysyncobj forgets it first
        # What TCPTransport._onIncomingMessageReceived does for 'readonly', under the observer's own id.
        self._unknownConnections.discard(conn)
        self._readonlyNodes.add(node)
        self._connections[node] = conn
        conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
        self._onReadonlyNodeConnected(node)


class RejoinGate:
    """Whether the local Raft node may vote yet: not while its data dir is ``rejoining``.

    A rejoining node's log starts empty. Raft grants a vote to any candidate whose log is at
    least as up to date as the voter's, and every log is, so its vote could elect a lagging
    peer, whose log then overwrites entries that only the third node holds: committed metadata
    lost. Kafka keeps such a node an observer until it has caught up (KIP-853); here it neither
    grants votes nor stands until it has applied what a current leader has committed, then it
    persists ``voter`` (``persist_voter``: meta.properties) and votes from then on.

    ``voting`` and ``votes_refused`` are read and counted on pysyncobj's tick thread; the move
    to voter runs on the gate's own thread, so the file write (fsync) never holds up a tick.
    """

    def __init__(self, rejoining: bool, persist_voter: Callable[[], None] | None = None,
                 broker_of: dict[str, int] | None = None):
        self.voting = not rejoining   # one bool, written once (by _become_voter): no lock needed
        self.votes_refused = 0
        self._persist_voter = persist_voter
        self._broker_of = broker_of or {}
        self._caught_up = threading.Event()
        self._caught_up_at: tuple[int, int] = (-1, -1)   # (applied Raft index, term)
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.voting:
            self._thread = threading.Thread(target=self._become_voter, name="quorum-rejoin", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._caught_up.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def broker_name(self, node_id: str) -> int | str:
        """The broker id of a Raft node id ("host:port"), for events."""
        return self._broker_of.get(node_id, node_id)

    def refused(self, node, message: dict) -> None:
        """Tick thread: a RequestVote (or a leader's TimeoutNow) was dropped unanswered."""
        self.votes_refused += 1
        log.info("quorum_vote_refused", why="rejoining: not caught up yet", message=message.get("type"),
                 candidate=self._broker_of.get(str(node), str(node)), term=message.get("term"))

    def caught_up(self, applied: int, term: int) -> None:
        """Tick thread: only wakes the gate's thread."""
        if not self._caught_up.is_set():
            self._caught_up_at = (applied, term)
            self._caught_up.set()

    def _become_voter(self) -> None:
        self._caught_up.wait()
        if self._stopping:
            return
        try:
            if self._persist_voter is not None:
                self._persist_voter()   # first durable, then voting: a crash in between stays rejoining
        except Exception as e:  # noqa: BLE001 -- a full disk, a wiped or garbled meta.properties: staying a
            # non-voter is safe (only less available), and the next start tries again.
            log.error("quorum_voter_write_failed", error=str(e))
            return
        self.voting = True
        applied, term = self._caught_up_at
        log.info("quorum_voter_again", applied_index=applied, term=term)


def premature_finish(received, data: bytes) -> bool:
    """Whether a chunk marked 'finish' leaves the entry incomplete: it is then one more 'process' chunk.

    pysyncobj 0.3.17 sends an entry of appendEntriesBatchSizeBytes or more in chunks, and marks a chunk
    'finish' once it reaches the length of the entry's command, not of the pickled entry. The pickle is
    longer: protocol 2 writes bytes as latin-1 text in UTF-8, two bytes for each byte above 0x7f. So a
    chunk before the last can say 'finish'; the follower's unpickling of the part raised in its tick
    ('failed _onTick', seen at 10,000 partitions on every controlled shutdown's batch) and the rest of
    the entry waited for the next read. ``received``: the chunks so far (pysyncobj's buffer)."""
    if not isinstance(received, bytes):
        return False   # no 'start' seen: pysyncobj's own handling applies
    try:
        pickle.loads(received + data)
    except Exception:  # noqa: BLE001 -- truncated: any unpickling error says "not complete yet"
        return True
    return False


class _RaftNode(SyncObj):
    """pysyncobj's node, kept out of elections while its RejoinGate says so.

    pysyncobj's non-voting member (a read-only node: what an observer is) can never start to vote,
    so a rejoining voter runs as a full node kept out of elections by two overridden private hooks
    (0.3.17 is pinned; tests/unit/test_quorum_rejoin.py fails if these names go away):
    - ``_SyncObj__onMessageReceived``: SyncObj.__init__ hands ``self.__onMessageReceived`` to
      the transport as its message callback, and that name resolves through this subclass.
      While not voting, RequestVote is dropped unanswered, so no vote is ever granted (nor its
      term adopted), and so is TimeoutNow, a leader's request to stand at once.
    - ``_onTick``: a follower whose ``_SyncObj__raftElectionDeadline`` has passed becomes a
      candidate at the start of a tick; while not voting, the deadline is pushed a whole election
      timeout ahead just before, so it never passes.
    After each tick it asks whether the node has caught up (``_caught_up``) and tells the gate.

    A voting node's election timer starts a PreVote round first (pre_vote.py): the same two hooks send
    and answer it, and pysyncobj stands only once a majority granted it.
    """

    def __init__(self, *args, gate: RejoinGate, pre_vote: PreVote, observer_hello: str | None = None,
                 observer_addresses: Sequence[str] = (), **kwargs):
        # Before SyncObj.__init__: attributes added after it would be pickled into its dumps, and
        # its tick thread (started inside it) already reads this one; ObserverTransport the others.
        self._gate = gate
        self._pre_vote = pre_vote
        self._observer_hello = observer_hello
        self._observer_addresses = tuple(observer_addresses)
        super().__init__(*args, **kwargs)

    def _SyncObj__onMessageReceived(self, node, message):
        kind = message.get("type")
        if kind in (PRE_VOTE, PRE_VOTE_RESPONSE):
            self._on_pre_vote_message(node, message)
            return
        if not self._gate.voting and kind in ("request_vote", "timeout_now"):
            self._gate.refused(node, message)
            return
        if kind == "append_entries":
            if message.get("term", -1) >= self._SyncObj__raftCurrentTerm:
                self._pre_vote.heard_from_leader(monotonic())
            if message.get("transmission") == "finish" and premature_finish(self._SyncObj__recvTransmission,
                                                                            message["data"]):
                message = dict(message, transmission="process")
        SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _on_pre_vote_message(self, node, message: dict) -> None:
        """Answer a peer's PreVote, or count an answer to ours (pre_vote.py). Only voters take part."""
        if node not in self._SyncObj__otherNodes:
            return
        if message["type"] == PRE_VOTE_RESPONSE:
            if self._pre_vote.on_response(node.id, message, len(self._SyncObj__otherNodes) + 1):
                log.info("pre_vote_won", term=message.get("term"), granted_by=self._names(self._pre_vote.granted_by))
                self._SyncObj__raftElectionDeadline = 0.0   # stand at the next tick
            return
        if not self._gate.voting:
            self._gate.refused(node, message)
            self._SyncObj__transport.send(node, PreVote.response(message, "rejoining"))
            return
        last = LogPosition(self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex())
        refusal = self._pre_vote.refusal(message, monotonic(), self._SyncObj__raftCurrentTerm, last,
                                         leading=self._SyncObj__raftState == _RAFT_STATE.LEADER)
        if refusal is not None:
            log.info("pre_vote_refused", candidate=self._names([node.id])[0], term=message.get("term"), why=refusal)
        self._SyncObj__transport.send(node, PreVote.response(message, refusal))

    def _names(self, node_ids) -> list:
        return [self._gate.broker_name(i) for i in sorted(node_ids)]

    def _pre_vote_tick(self, now: float) -> None:
        """Before pysyncobj's tick: an election timer that fired starts a PreVote round instead of an
        election; pysyncobj stands only once a round was won (pre_vote.py)."""
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            self._pre_vote.heard_from_leader(now)
            return
        if self._SyncObj__raftElectionDeadline >= now or not self._SyncObj__connectedToAnyone():
            return
        if self._pre_vote.take_win(self._SyncObj__raftCurrentTerm):
            return   # pysyncobj's tick stands now
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        last = LogPosition(self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex())
        request = self._pre_vote.start_round(self._SyncObj__raftCurrentTerm, last)
        for node in self._SyncObj__otherNodes:
            self._SyncObj__transport.send(node, request)

    def _onTick(self, timeToWait=0.0):
        gate = self._gate
        if not gate.voting:
            self._SyncObj__raftElectionDeadline = monotonic() + self.conf.raftMaxTimeout
        elif self._SyncObj__selfNode is not None and self._SyncObj__otherNodes:
            self._pre_vote_tick(monotonic())
        super()._onTick(timeToWait)
        if not gate.voting:
            caught_up = self._caught_up()
            if caught_up is not None:
                gate.caught_up(*caught_up)

    def _caught_up(self) -> tuple[int, int] | None:
        """(applied index, term) once this node has applied all that a current leader has committed.

        ``_SyncObj__leaderCommitIndex`` is the commit index of the last append_entries from the
        leader (None before the first). Reaching it is not enough on its own: a leader fresh from
        its election may not know yet what its predecessor committed (Raft learns that only by
        committing an entry of its own term, the no-op pysyncobj appends on election). So the last
        applied entry must also be of the current term, which here is the leader's (a non-voter's
        term moves only with append_entries, as its RequestVotes are dropped). After a snapshot,
        pysyncobj keeps the last applied entry in the journal, so it can always be read.
        """
        leader_commit = self._SyncObj__leaderCommitIndex
        applied, term = self.raftLastApplied, self._getTerm()
        if self._getLeader() is None or leader_commit is None or applied < leader_commit:
            return None
        entries = self._SyncObj__getEntries(applied, 1)
        if not entries or entries[0][2] != term:
            return None
        return applied, term


class MetadataQuorum:
    def __init__(self, cluster_id: str, self_address: str, peers: dict[int, str], local_broker_id: int,
                 data_dir: Path, secret: str, election_timeout_s: tuple[float, float] = (0.4, 0.8),
                 heartbeat_period_s: float = 0.1, rejoining: bool = False,
                 mark_voter: Callable[[], None] | None = None, voters: Collection[int] | None = None):
        """``rejoining``: the data dir was formatted to rejoin an existing cluster (a lost disk): this
        node neither votes nor stands until it has caught up, then calls ``mark_voter`` (which must
        persist that: meta.properties) and votes from then on.

        ``voters``: the brokers whose nodes vote (controller_quorum_voters); None: all of them. A node
        not among them is an observer, for which ``rejoining`` means nothing: it never votes, and its
        meta.properties keeps the state it was formatted with."""
        self.local_broker_id = local_broker_id
        self._self_address = self_address
        self.observer = voters is not None and local_broker_id not in voters
        # broker id -> "host:raft_port", self excluded
        self._voter_peers = {b: a for b, a in peers.items() if voters is None or b in voters}
        self._observer_peers = {b: a for b, a in peers.items() if b not in self._voter_peers}
        self._broker_of = {a: b for b, a in peers.items()}
        self._broker_of[self_address] = local_broker_id
        # The Raft links: this node's to every voter; a voter's also to every observer (which dials it).
        self._peer_nodes = {b: TCPNode(a) for b, a in self._voter_peers.items()}
        if not self.observer:
            self._peer_nodes.update({b: observer_node(a) for b, a in self._observer_peers.items()})
        self._data_dir = data_dir
        self._secret = secret
        self._timeouts = election_timeout_s
        self._heartbeat_period_s = heartbeat_period_s
        self.state_machine = MetadataStateMachine(cluster_id, self.term)
        self._gate = RejoinGate(rejoining and not self.observer, mark_voter, self._broker_of)
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
        # An observer is pysyncobj's read-only node (selfNode None): no server, no vote, never a candidate.
        hello = observer_node(self._self_address).id if self.observer else None
        self._raft = _RaftNode(None if self.observer else self._self_address, list(self._voter_peers.values()),
                               conf=conf, consumers=[self.state_machine], transportClass=ObserverTransport,
                               gate=self._gate, pre_vote=PreVote(quiet_s=low * QUIET_SHARE), observer_hello=hello,
                               observer_addresses=list(self._observer_peers.values()))
        if self.observer:
            # No waitBinded(): a read-only transport never signals its bind, it would wait forever.
            log.info("quorum_observer", why="not in controller_quorum_voters: replicates the metadata log, "
                     "never votes or leads", voters=sorted(self._voter_peers))
            return
        try:
            self._raft.waitBinded()
        except SyncObjException:
            self._raft.destroy_synchronous()
            self._raft = None
            raise QuorumStartError(f"cannot listen on {self._self_address} (raft_port): the port is in use") from None
        if not self._gate.voting:
            log.info("quorum_rejoining", why="data dir formatted to rejoin: no vote until caught up",
                     data_dir=str(self._data_dir))
        self._gate.start()

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
        self._gate.stop()
        if self._raft is not None:
            self._raft.destroy_synchronous()
            self._raft = None

    # ---- reads (any thread; pysyncobj's own fields, possibly a tick old) ------------

    @property
    def image(self) -> MetadataImage:
        return self.state_machine.image

    def add_listener(self, listener: Callable[[], None]) -> None:
        self.state_machine.add_listener(listener)

    @property
    def voting(self) -> bool:
        """False while this node is rejoining (it neither votes nor stands for election), and always on
        an observer."""
        return not self.observer and self._gate.voting

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
        """Whether this node's Raft link to ``broker_id`` is up. True for a broker it has no link with (one
        observer to another): there is nothing to watch, and only a voter, which links to all, is ever the
        controller that fences on it."""
        if self.observer and broker_id in self._observer_peers:
            return True
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
        started = time.monotonic()
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
        metrics.of(self.local_broker_id).metadata_committed(started)
        return result
