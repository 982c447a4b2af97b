"""The page's picture of the cluster, built from the client library's answers: no sockets, no threads.

The poller (poller.py) asks the cluster and hands the answers here as they came: the Metadata view
(Admin.describe_cluster / describe_topics), each broker's own view of its replicas (DescribeReplicas),
the groups with their committed offsets and log ends, and the metadata log's entries. What comes out
is plain dataclasses that ``asdict`` turns into the JSON the page draws. Unit tests drive every
function here directly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from client.replica_state import BrokerReplicas, ReplicaView

# A topic whose name starts with two underscores is Kafka's internal (__consumer_offsets): its 50
# partitions would bury the lesson's topic, so the page folds them into one line.
INTERNAL_PREFIX = "__"
TIMELINE_MAX = 150


# ---- what the page shows ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaBar:
    """One replica of a partition as its own broker reports it: the bar log start / HW / log end."""
    broker_id: int
    role: str                        # "leader" | "follower" | "offline" (its broker did not answer)
    in_isr: bool
    log_start_offset: int | None = None
    high_watermark: int | None = None
    log_end_offset: int | None = None
    size_bytes: int | None = None
    lag: int | None = None           # the leader's log end minus this replica's (the leader's view)
    caught_up_ms_ago: int | None = None


@dataclass(frozen=True)
class PartitionRow:
    topic: str
    partition: int
    leader: int                      # -1: no leader (offline)
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    under_replicated: bool
    bars: list[ReplicaBar]


@dataclass(frozen=True)
class TopicRow:
    name: str
    internal: bool
    partitions: list[PartitionRow]


@dataclass(frozen=True)
class BrokerRow:
    broker_id: int
    address: str
    state: str                       # "alive" | "fenced" | "unreachable" | "unregistered" | "unknown"
    is_controller: bool
    leader_count: int                # partitions it leads, internal ones included (as Kafka counts)
    raft_term: int | None = None
    metadata_offset: int | None = None
    error: str | None = None         # why its own view is missing (it did not answer)


@dataclass(frozen=True)
class GroupLag:
    topic: str
    partition: int
    committed_offset: int
    log_end_offset: int | None       # the partition's high watermark; None: unknown now
    lag: int | None
    owner: str | None                # the member's client id and host, None when nobody owns it


@dataclass(frozen=True)
class GroupRow:
    group_id: str
    state: str
    protocol: str
    members: int
    coordinator: int
    total_lag: int | None
    partitions: list[GroupLag]
    error: str | None = None


@dataclass(frozen=True)
class TimelineItem:
    offset: int
    term: int
    committed_ms: int
    kind: str          # broker, fence, unfence, election, offline, isr-shrink, isr-expand, isr, topic,
    #                    internal, controller, refused
    text: str


@dataclass(frozen=True)
class ControlsInfo:
    enabled: bool
    reason: str        # why not, in one line; or what restart means
    actions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Snapshot:
    status: str                      # "ok" | "no-broker" | "starting"
    message: str                     # one line for the page's status bar
    cluster_id: str
    controller_id: int
    brokers: list[BrokerRow]
    topics: list[TopicRow]
    groups: list[GroupRow]
    groups_error: str | None
    timeline: list[TimelineItem]
    controls: ControlsInfo
    replicas_available: bool         # False: no broker answered DescribeReplicas (an older broker)
    generated_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---- inputs: the shapes the client library answers in --------------------------------------------


@dataclass(frozen=True)
class MetadataView:
    """One Metadata answer: Admin.describe_cluster() and describe_topics(), or why there is none."""
    cluster: Any | None              # client.admin.ClusterDescription
    topics: list[Any]                # client.admin.TopicDescription
    error: str | None = None


# ---- brokers ------------------------------------------------------------------------------------


def broker_rows(view: MetadataView, replicas: dict[int, BrokerReplicas],
                configured: dict[int, str]) -> list[BrokerRow]:
    """Every broker the cluster registered (and every one cluster.toml names), with its state.

    fenced: the controller says so. unreachable: registered and not fenced (yet), but it did not answer
    the page just now (killed a moment ago, or paused). unknown: no broker answered at all."""
    leads: dict[int, int] = {}
    for t in view.topics:
        for p in t.partitions:
            leads[p.leader] = leads.get(p.leader, 0) + 1
    registered = {b.id: b for b in view.cluster.brokers} if view.cluster is not None else {}
    controller = view.cluster.controller_id if view.cluster is not None else -1
    rows = []
    for broker_id in sorted(set(registered) | set(configured)):
        b = registered.get(broker_id)
        address = f"{b.host}:{b.port}" if b is not None else configured[broker_id]
        own = replicas.get(broker_id)
        answered = own is not None and own.error is None
        if view.cluster is None:
            state = "unknown"
        elif b is None:
            state = "unregistered"
        elif not b.alive:
            state = "fenced"
        elif own is not None and own.error is not None:
            state = "unreachable"
        else:
            state = "alive"
        rows.append(BrokerRow(
            broker_id, address, state, broker_id == controller, leads.get(broker_id, 0),
            own.raft_term if answered else None, own.metadata_offset if answered else None,
            own.error if own is not None and not answered else None))
    return rows


# ---- topics, partitions and the replica bars ------------------------------------------------------


def topic_rows(view: MetadataView, replicas: dict[int, BrokerReplicas]) -> list[TopicRow]:
    """Topics by name, user topics first; each partition with a bar per replica."""
    own: dict[tuple[str, int, int], ReplicaView] = {}
    for broker in replicas.values():
        if broker.error is None:
            for r in broker.replicas:
                own[(r.topic, r.partition, r.broker_id)] = r
    rows = []
    for t in sorted(view.topics, key=lambda t: (t.name.startswith(INTERNAL_PREFIX), t.name)):
        parts = [partition_row(t.name, p, own) for p in sorted(t.partitions, key=lambda p: p.partition)]
        rows.append(TopicRow(t.name, t.name.startswith(INTERNAL_PREFIX), parts))
    return rows


def partition_row(topic: str, p: Any, own: dict[tuple[str, int, int], ReplicaView]) -> PartitionRow:
    """``p``: a PartitionDescription (leader, leader_epoch, replicas, isr) from the Metadata answer."""
    leader_view = own.get((topic, p.partition, p.leader))
    followers = {f.broker_id: f for f in leader_view.followers} if leader_view is not None else {}
    bars = []
    for broker_id in p.replicas:
        mine = own.get((topic, p.partition, broker_id))
        in_isr = broker_id in p.isr
        seen = followers.get(broker_id)
        lag = seen.lag if seen is not None else (0 if broker_id == p.leader and mine is not None else None)
        caught_up = seen.caught_up_ms_ago if seen is not None else None
        if mine is None:
            # Its broker is silent: the leader's record of its fetches is all there is.
            known_end = seen.log_end_offset if seen is not None and seen.log_end_offset >= 0 else None
            bars.append(ReplicaBar(broker_id, "offline", in_isr, log_end_offset=known_end, lag=lag,
                                   caught_up_ms_ago=caught_up))
            continue
        role = "leader" if broker_id == p.leader else "follower"
        bars.append(ReplicaBar(broker_id, role, in_isr, mine.log_start_offset, mine.high_watermark,
                               mine.log_end_offset, mine.size_bytes, lag, caught_up))
    return PartitionRow(topic, p.partition, p.leader, p.leader_epoch, list(p.replicas), list(p.isr),
                        len(p.isr) < len(p.replicas), bars)


# ---- groups and lag -------------------------------------------------------------------------------


def group_row(description: Any, committed: dict[tuple[str, int], int],
              log_ends: dict[tuple[str, int], int]) -> GroupRow:
    """A group (Admin.describe_group), its committed offsets and each partition's high watermark
    (Admin.list_offsets "latest"): lag = high watermark - committed, as kafka-consumer-groups.sh."""
    owners: dict[tuple[str, int], str] = {}
    for m in description.members:
        for tp in m.assignment.partitions:
            owners[tuple(tp)] = f"{m.client_id}@{m.host}" if m.host else m.client_id
    lags = []
    for tp in sorted(set(committed) | set(owners)):
        end = log_ends.get(tp)
        offset = committed.get(tp, -1)
        lag = max(end - offset, 0) if end is not None and offset >= 0 else None
        lags.append(GroupLag(tp[0], tp[1], offset, end, lag, owners.get(tp)))
    known = [g.lag for g in lags if g.lag is not None]
    return GroupRow(description.group_id, description.state, description.protocol, len(description.members),
                    description.coordinator, sum(known) if known else None, lags)


# ---- the metadata log, told -----------------------------------------------------------------------


class TimelineStory:
    """Tells each committed metadata batch as readable items, one per event.

    It remembers each partition's leader, leader epoch and ISR from the records it has seen (the
    records carry no epoch: the image adds one at every leader change, and so does this), so a change
    reads "email.send-0: leader 1 → 2, epoch 1". Read from offset 0 it knows every partition; from a
    later offset the first change of a partition says "leader ? → 2" and no epoch."""

    def __init__(self) -> None:
        self.leaders: dict[tuple[str, int], int] = {}
        self.epochs: dict[tuple[str, int], int] = {}
        self.isr: dict[tuple[str, int], tuple[int, ...]] = {}
        self.partitions: dict[str, int] = {}

    def items(self, offset: int, term: int, committed_ms: int, records: Sequence[dict],
              applied: bool = True, reason: str = "") -> list[TimelineItem]:
        def item(kind: str, text: str) -> TimelineItem:
            return TimelineItem(offset, term, committed_ms, kind, text)

        if not applied:
            return [item("refused", f"batch refused: {reason or 'a precondition failed'}")]
        if not records:
            return [item("controller", f"a new controller took over (Raft term {term})")]
        out: list[TimelineItem] = []
        internal: dict[str, list[int]] = {}          # topic -> [leader changes, ISR changes]
        for r in records:
            told = self._tell(r, internal)
            if told is not None:
                out.append(item(*told))
        for topic, (moved, changed) in internal.items():
            parts = ([f"{moved} leader change{'s' * (moved != 1)}"] if moved else []) + \
                    ([f"{changed} ISR change{'s' * (changed != 1)}"] if changed else [])
            out.append(item("internal", f"{topic}: {', '.join(parts)}"))
        return out

    def _tell(self, r: dict, internal: dict[str, list[int]]) -> tuple[str, str] | None:
        kind = r.get("type")
        if kind == "RegisterBroker":
            return "broker", f"broker {r['broker_id']} registered at {r['host']}:{r['port']} (a new incarnation)"
        if kind == "FenceBroker":
            why = r.get("reason")    # "" in a log written before the record carried it
            return "fence", f"broker {r['broker_id']} fenced" + (f": {str(why).replace('_', ' ')}" if why else "")
        if kind == "UnfenceBroker":
            return "unfence", f"broker {r['broker_id']} unfenced: caught up, serving again"
        if kind in ("CreateTopic", "CreatePartitions"):
            return "topic", self._created(r)
        if kind == "DeleteTopic":
            self._forget(r["name"])
            return "topic", f"topic {r['name']} deleted"
        if kind == "ChangePartition":
            return self._changed(r, internal)
        if kind == "AllocateProducerIds":
            return None      # routine bookkeeping: a block of producer ids, not an event worth a line
        return "other", f"{kind} " + " ".join(f"{k}={v}" for k, v in r.items() if k != "type")

    def _created(self, r: dict) -> str:
        topic = r.get("name") or r.get("topic")
        start = r.get("start_partition", 0)
        for i, replicas in enumerate(r["assignments"]):
            tp = (topic, start + i)
            self.leaders[tp], self.epochs[tp], self.isr[tp] = (replicas[0] if replicas else -1), 0, tuple(replicas)
        self.partitions[topic] = start + len(r["assignments"])
        if r["type"] == "CreatePartitions":
            return f"topic {topic} grown to {self.partitions[topic]} partitions"
        if topic.startswith(INTERNAL_PREFIX):
            return f"topic {topic} created: {len(r['assignments'])} partitions"
        placed = " / ".join(",".join(map(str, a)) for a in r["assignments"])
        return f"topic {topic} created: {len(r['assignments'])} partitions, replicas {placed}"

    def _forget(self, topic: str) -> None:
        self.partitions.pop(topic, None)
        for known in (self.leaders, self.epochs, self.isr):
            for tp in [tp for tp in known if tp[0] == topic]:
                del known[tp]

    def _changed(self, r: dict, internal: dict[str, list[int]]) -> tuple[str, str] | None:
        tp = (r["topic"], r["partition"])
        before, leader = self.leaders.get(tp), r["leader"]
        old_isr, isr = self.isr.get(tp), tuple(r["isr"])
        self.leaders[tp], self.isr[tp] = leader, isr
        moved = before != leader
        if moved:
            self.epochs[tp] = self.epochs[tp] + 1 if tp in self.epochs else None
        if r["topic"].startswith(INTERNAL_PREFIX):
            counts = internal.setdefault(r["topic"], [0, 0])
            counts[0 if moved else 1] += 1
            return None
        name, isr_text = f"{r['topic']}-{r['partition']}", ",".join(map(str, isr)) or "empty"
        if moved:
            epoch = self.epochs.get(tp)
            tail = (f", epoch {epoch}" if epoch is not None else "") + f" (ISR {isr_text})"
            if leader < 0:
                return "offline", f"{name}: leader {_who(before)} → none: offline, no replica in sync" + tail
            return "election", f"{name}: leader {_who(before)} → {leader}" + tail
        return isr_change(name, old_isr, isr)


def isr_change(name: str, old: tuple[int, ...] | None, new: tuple[int, ...]) -> tuple[str, str]:
    """(kind, text) of an ISR-only change: shrink, expand, or just a new list."""
    now = ",".join(map(str, new)) or "empty"
    if old is not None:
        left, joined = [b for b in old if b not in new], [b for b in new if b not in old]
        if left and not joined:
            return "isr-shrink", f"{name}: ISR shrank to {now} (broker {_ids(left)} fell behind or left)"
        if joined and not left:
            return "isr-expand", f"{name}: ISR expanded to {now} (broker {_ids(joined)} caught up)"
    return "isr", f"{name}: ISR now {now}"


def _who(broker_id: int | None) -> str:
    return "?" if broker_id is None else ("none" if broker_id < 0 else str(broker_id))


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(map(str, ids))


def entry_records(raw: Iterable[str]) -> list[dict]:
    """The JSON records of a MetadataLogEntry; a record that does not parse is told as such, not dropped."""
    out = []
    for text in raw:
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        out.append(value if isinstance(value, dict) else {"type": "Unreadable", "record": str(text)[:80]})
    return out


# ---- the whole picture ------------------------------------------------------------------------------


def build_snapshot(view: MetadataView | None, replicas: dict[int, BrokerReplicas],
                   groups: list[GroupRow], groups_error: str | None, timeline: Sequence[TimelineItem],
                   controls: ControlsInfo, configured: dict[int, str], now_ms: int | None = None) -> Snapshot:
    """The page's snapshot. ``view`` None: not asked yet; a view with an error: no broker answered."""
    view = view or MetadataView(None, [], None)
    if view.cluster is None:
        status = "starting" if view.error is None else "no-broker"
        message = "asking the cluster…" if view.error is None else f"no broker answers: {view.error}"
    else:
        status, message = "ok", ""
    newest_first = list(reversed(timeline[-TIMELINE_MAX:]))
    return Snapshot(
        status=status, message=message,
        cluster_id=view.cluster.cluster_id if view.cluster is not None else "",
        controller_id=view.cluster.controller_id if view.cluster is not None else -1,
        brokers=broker_rows(view, replicas, configured), topics=topic_rows(view, replicas),
        groups=groups, groups_error=groups_error, timeline=newest_first, controls=controls,
        replicas_available=any(r.error is None for r in replicas.values()),
        generated_ms=int(time.time() * 1000) if now_ms is None else now_ms)


def same_picture(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Two snapshots that differ only in when they were made show the same page: no need to push."""
    if a is None:
        return False
    return {k: v for k, v in a.items() if k != "generated_ms"} == {k: v for k, v in b.items() if k != "generated_ms"}
