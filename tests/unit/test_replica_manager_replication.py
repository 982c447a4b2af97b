"""Replication between two real ReplicaManagers (leader broker 1, follower broker 2) in one process.

Each broker has its own LogManager in a tmp_path folder; both read one metadata
image that the test changes with records (as the Raft log would) and announces
to both with on_metadata_change. No replica fetcher threads run: the test plays
the fetcher, carrying each fetch from the follower to the leader and the answer
back (fetch_position -> leader.fetch -> follower.on_fetched). The fetcher control
and the AlterPartition sender are recorders: they are this project's own seams.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog

from broker.append_notifier import AppendNotifier
from broker.config import BrokerSettings
from broker.logging_setup import PARTITION_EVENTS_EACH_UP_TO
from broker.log import LogManager, PartitionLog
from broker.metadata.image import MetadataImage, apply_batch
from broker.metadata.records import (ChangePartition, CreateTopic, DeleteTopic, FenceBroker, RegisterBroker,
                                     UnfenceBroker)
from broker.replica_manager import FetchRequestPartition, FetchResult, ProduceResult, ReplicaManager
from client.errors import (FencedLeaderEpochError, NotEnoughReplicasError, NotLeaderOrFollowerError,
                           OffsetOutOfRangeError)
from client.record_batch import build_batch, decode_all

TOPIC, TOPIC_ID = "orders", "id-orders"
TP = (TOPIC, 0)
MAX_BYTES = 1 << 20
LAG_MS = 5000


class Clock:
    """Both brokers' clock_ms: moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


class Fetchers:
    """Records what the replica manager asks of the follower fetchers."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def follow(self, tp: tuple[str, int], leader_id: int, leader_epoch: int) -> None:
        self.calls.append(("follow", tp, leader_id, leader_epoch))

    def stop_following(self, tp: tuple[str, int]) -> None:
        self.calls.append(("stop", tp))


class AlterPartitions:
    """Records the ISR changes sent to the controller, with their on_not_applied / still_pending callbacks."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.on_not_applied: list = []
        self.still_pending: list = []

    def __call__(self, request: dict, on_not_applied, still_pending) -> None:
        self.requests.append(request)
        self.on_not_applied.append(on_not_applied)
        self.still_pending.append(still_pending)


@dataclass
class Metadata:
    image: MetadataImage


@dataclass
class Broker:
    broker_id: int
    replicas: ReplicaManager
    logs: LogManager
    fetchers: Fetchers = field(default_factory=Fetchers)
    alters: AlterPartitions = field(default_factory=AlterPartitions)

    @property
    def log(self) -> PartitionLog:
        return self.logs.get(*TP)

    @property
    def hw(self) -> int:
        return self.replicas.high_watermarks()[TP]

    def values(self) -> list[bytes]:
        return [r.value for r in decode_all(self.log.read(0, MAX_BYTES))]


class Pair:
    """Brokers 1 and 2 hosting orders-0 (replicas (1, 2)), first led by broker 1 at epoch 0."""

    def __init__(self, tmp_path: Path, min_isr: int, lag_clock: Clock | None = None):
        self.clock = Clock()
        self.lag_clock = lag_clock or self.clock   # the ISR lag clock; the same one unless a test splits them
        self.metadata = Metadata(MetadataImage("unit-cluster"))
        settings = BrokerSettings(replica_lag_time_max_ms=LAG_MS)
        self.brokers = {b: self._broker(tmp_path / f"broker-{b}", b, settings) for b in (1, 2)}
        self.change(RegisterBroker(1, "127.0.0.1", 9001, "inc-1"), RegisterBroker(2, "127.0.0.1", 9002, "inc-2"),
                    UnfenceBroker(1, 0), UnfenceBroker(2, 0),
                    CreateTopic(TOPIC, TOPIC_ID, ((1, 2),), {"min.insync.replicas": str(min_isr)}))

    def _broker(self, data_dir: Path, broker_id: int, settings: BrokerSettings) -> Broker:
        logs = LogManager(data_dir, settings.log)
        logs.open(self.clock())
        fetchers, alters = Fetchers(), AlterPartitions()
        replicas = ReplicaManager(broker_id, logs, self.metadata, settings, AppendNotifier(), clock_ms=self.clock,
                                  fetchers=fetchers, alter_partition=alters, lag_clock_ms=self.lag_clock)
        return Broker(broker_id, replicas, logs, fetchers, alters)

    def close(self) -> None:
        for b in self.brokers.values():
            b.logs.close()

    @property
    def epoch(self) -> int:
        return self.metadata.image.partition(*TP).leader_epoch

    def change(self, *records) -> None:
        """Commit one metadata batch and announce it to both brokers."""
        old = self.metadata.image
        new, outcome = apply_batch(old, records)
        assert outcome.applied, outcome.reason
        self.metadata.image = new
        for b in self.brokers.values():
            b.replicas.on_metadata_change(old, new)

    def move(self, leader: int, isr: tuple[int, ...]) -> None:
        reg = self.metadata.image.partition(*TP)
        self.change(ChangePartition(TOPIC, TOPIC_ID, 0, reg.partition_epoch, leader, isr))

    def produce(self, leader: int, *values: bytes, acks: int = 1, timeout_ms: int = 1000) -> ProduceResult:
        batch = build_batch([(None, v, 1000 + i) for i, v in enumerate(values)])
        [result] = self.brokers[leader].replicas.append_records(acks, timeout_ms, [(TOPIC, 0, batch, -1)])
        return result

    def fetch_at(self, follower: int, leader: int, offset: int, last_fetched_epoch: int,
                 epoch: int | None = None) -> FetchResult:
        p = FetchRequestPartition(TOPIC, 0, offset, self.epoch if epoch is None else epoch, MAX_BYTES,
                                  last_fetched_epoch)
        [result] = self.brokers[leader].replicas.fetch(replica_id=follower, max_wait_ms=0, min_bytes=0,
                                                       max_bytes=MAX_BYTES, partitions=[p])
        return result

    def fetch(self, follower: int = 2, leader: int = 1) -> FetchResult:
        """The follower's next fetch, as its fetcher would build it."""
        position = self.brokers[follower].replicas.fetch_position(TP, leader, self.epoch)
        assert position is not None, f"broker {follower} does not follow broker {leader} at epoch {self.epoch}"
        return self.fetch_at(follower, leader, *position)

    def deliver(self, result: FetchResult, follower: int = 2, leader: int = 1) -> None:
        assert self.brokers[follower].replicas.on_fetched(TP, leader, self.epoch, result) is True

    def replicate(self, follower: int = 2, leader: int = 1) -> FetchResult:
        result = self.fetch(follower, leader)
        self.deliver(result, follower, leader)
        return result


@pytest.fixture
def make_pair(tmp_path):
    pairs: list[Pair] = []

    def make(min_isr: int = 2, lag_clock: Clock | None = None) -> Pair:
        pairs.append(Pair(tmp_path / f"pair-{len(pairs)}", min_isr, lag_clock))
        return pairs[-1]

    yield make
    for p in pairs:
        p.close()


@pytest.fixture
def pair(make_pair) -> Pair:
    return make_pair()


def _values(first: int, last: int, prefix: bytes = b"v") -> list[bytes]:
    return [prefix + b"%d" % i for i in range(first, last + 1)]


def _in_background(call) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    return thread, out


def _wait_for(predicate, what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


# ---- the data path --------------------------------------------------------------------


def test_roles_reach_the_fetchers(pair):
    assert pair.brokers[1].fetchers.calls == [("stop", TP)]
    assert pair.brokers[2].fetchers.calls == [("follow", TP, 1, 0)]


def test_records_arrive_byte_identical_and_the_hw_follows_one_round_trip_later(pair):
    leader, follower = pair.brokers[1], pair.brokers[2]
    assert pair.produce(1, *_values(0, 2)).base_offset == 0
    assert pair.produce(1, *_values(3, 4)).base_offset == 3
    first = pair.fetch()
    assert first.error is None and first.records and first.high_watermark == 0
    pair.deliver(first)
    assert (follower.log.log_end_offset, follower.hw, leader.hw) == (5, 0, 0)
    second = pair.fetch()                      # fetch offset 5: the leader learns the follower holds 0..4
    assert (second.records, second.high_watermark, leader.hw) == (b"", 5, 5)
    assert follower.hw == 0                    # not until it reads the answer
    pair.deliver(second)
    assert follower.hw == 5
    assert follower.log.read(0, MAX_BYTES) == leader.log.read(0, MAX_BYTES)
    assert follower.values() == _values(0, 4)
    assert follower.log.epoch_entries == leader.log.epoch_entries


def test_acks_all_is_refused_below_min_isr_and_nothing_is_appended(pair):
    pair.move(1, (1,))
    result = pair.produce(1, b"a", acks=-1)
    assert isinstance(result.error, NotEnoughReplicasError) and result.base_offset == -1
    assert pair.brokers[1].log.log_end_offset == 0
    # acks=1 is stored, but the HW stands still while the ISR is below min.insync.replicas (KIP-966).
    assert pair.produce(1, b"b", acks=1).error is None
    assert (pair.brokers[1].log.log_end_offset, pair.brokers[1].hw) == (1, 0)


def test_acks_all_answers_once_the_follower_fetched_past_the_batch(pair):
    thread, out = _in_background(lambda: pair.produce(1, b"a", b"b", acks=-1, timeout_ms=5000))
    _wait_for(lambda: pair.brokers[1].log.log_end_offset == 2, "the leader append")
    pair.replicate()
    assert thread.is_alive()                   # the leader does not know yet that the follower has it
    pair.replicate()
    thread.join(5)
    assert out and out[0].error is None and out[0].base_offset == 0


def test_acks_all_fails_fast_when_the_leader_is_deposed(pair):
    thread, out = _in_background(lambda: pair.produce(1, b"a", acks=-1, timeout_ms=30000))
    _wait_for(lambda: pair.brokers[1].log.log_end_offset == 1, "the leader append")
    pair.move(2, (1, 2))
    thread.join(5)
    assert out and isinstance(out[0].error, NotLeaderOrFollowerError)


def test_a_fetch_at_an_old_epoch_is_fenced_and_an_answer_for_an_old_epoch_is_dropped(pair):
    pair.produce(1, b"a")
    stale = pair.fetch()                       # answered at epoch 0 ...
    pair.move(2, (1, 2))                       # ... read after broker 2 took over at epoch 1
    assert isinstance(pair.fetch_at(2, 1, 0, -1, epoch=0).error, NotLeaderOrFollowerError)   # 1 leads no more
    assert pair.brokers[2].replicas.on_fetched(TP, 1, 0, stale) is True
    assert pair.brokers[2].log.log_end_offset == 0
    assert isinstance(pair.fetch_at(1, 2, 0, -1, epoch=0).error, FencedLeaderEpochError)


# ---- ISR changes ---------------------------------------------------------------------


def test_a_follower_that_catches_up_is_proposed_for_the_isr_once(make_pair):
    pair = make_pair(min_isr=1)
    pair.move(1, (1,))                         # partition epoch 1
    alters = pair.brokers[1].alters
    pair.produce(1, *_values(0, 4))
    assert pair.brokers[1].hw == 5             # the leader alone is enough with min ISR 1
    pair.replicate()                           # fetch offset 0: behind the HW
    assert alters.requests == []
    pair.replicate()                           # fetch offset 5: caught up
    expected = {"topic": TOPIC, "topic_id": TOPIC_ID, "partition": 0, "leader_epoch": 0, "partition_epoch": 1,
                "new_isr": [1, 2]}
    assert alters.requests == [expected]
    pair.replicate()
    assert len(alters.requests) == 1           # one change in flight at a time
    alters.on_not_applied[0]()                 # proven not applied: the next fetch proposes again
    pair.replicate()
    assert alters.requests == [expected, expected]
    pair.move(1, (1, 2))                       # committed
    pair.replicate()
    assert len(alters.requests) == 2


def _many(pair: Pair, count: int, isr: tuple[int, ...]) -> list[FetchRequestPartition]:
    """Topic "many" of ``count`` partitions on both brokers, led by broker 1 with ``isr``; the follower's fetch
    of all of them at the leader's end."""
    pair.change(CreateTopic("many", "id-many", ((1, 2),) * count, {"min.insync.replicas": "1"}))
    pair.change(*[ChangePartition("many", "id-many", p, 0, 1, isr) for p in range(count)])
    return [FetchRequestPartition("many", p, 0, 0, MAX_BYTES, -1) for p in range(count)]


@pytest.mark.parametrize("count", [3, PARTITION_EVENTS_EACH_UP_TO + 1, 500])
@pytest.mark.parametrize("in_session", [False, True])
def test_isr_expansions_of_one_fetch_are_an_event_each_or_one_for_them_all(make_pair, count, in_session):
    """A restarted follower catches up on thousands of partitions in one fetch: one event then, not one each
    (that logging was nearly all of what the leader's fetch handler did, at 10,000 partitions)."""
    pair = make_pair(min_isr=1)
    wanted = _many(pair, count, (1,))
    leader = pair.brokers[1].replicas
    with structlog.testing.capture_logs() as logs:
        if in_session:   # a fetch stream's first request (KIP-227)
            leader.session_fetch(leader.open_session(2), 0, MAX_BYTES, wanted, [], incremental=False)
        else:
            leader.fetch(replica_id=2, max_wait_ms=0, min_bytes=0, max_bytes=MAX_BYTES, partitions=wanted)
    assert sorted(r["partition"] for r in pair.brokers[1].alters.requests if r["topic"] == "many") == list(range(count))
    events = [e for e in logs if e["event"].startswith("isr_expand")]
    if count <= PARTITION_EVENTS_EACH_UP_TO:
        assert [(e["event"], e["partition"], e["replica"], e["isr"]) for e in events] == [
            ("isr_expand_requested", p, 2, [1, 2]) for p in range(count)]
    else:
        assert [{k: e[k] for k in ("event", "topic", "partitions", "first_partition", "first_replica", "first_isr")}
                for e in events] == [{"event": "isr_expands_requested", "topic": "many", "partitions": count,
                                      "first_partition": 0, "first_replica": 2, "first_isr": [1, 2]}]


@pytest.mark.parametrize("in_session", [False, True])
def test_an_expansion_is_told_when_proposed_not_when_the_long_poll_ends(make_pair, in_session):
    """The controller may apply an expansion long before the follower's long poll ends (nothing new to
    answer): the event must already be there (a test read the log in that gap and found none)."""
    pair = make_pair(min_isr=1)
    wanted = _many(pair, 1, (1,))
    leader = pair.brokers[1].replicas
    with structlog.testing.capture_logs() as logs:
        if in_session:
            session = leader.open_session(2)
            poll = lambda: leader.session_fetch(session, 3000, MAX_BYTES, wanted, [], incremental=False)  # noqa: E731
        else:
            poll = lambda: leader.fetch(replica_id=2, max_wait_ms=3000, min_bytes=1,  # noqa: E731
                                        max_bytes=MAX_BYTES, partitions=wanted)
        thread, _ = _in_background(poll)
        _wait_for(lambda: any(e["event"] == "isr_expand_requested" for e in logs), "the expansion's event", 2.0)
        assert thread.is_alive(), "the long poll ended before the check: the test proves nothing"
        thread.join(5)
    assert [(e["topic"], e["partition"], e["replica"]) for e in logs if e["event"] == "isr_expand_requested"] == [
        ("many", 0, 2)]


@pytest.mark.parametrize("count", [2, PARTITION_EVENTS_EACH_UP_TO + 1])
def test_isr_shrinks_of_one_pass_are_an_event_each_or_one_for_them_all(make_pair, count):
    pair = make_pair(min_isr=1)
    _many(pair, count, (1, 2))
    pair.clock.now += LAG_MS + 1
    with structlog.testing.capture_logs() as logs:
        pair.brokers[1].replicas.maybe_shrink_isr()
    shrunk = pair.brokers[1].alters.requests   # "orders"-0 too: its follower never fetched either
    assert len(shrunk) == count + 1 and all(r["new_isr"] == [1] for r in shrunk)
    events = [e for e in logs if e["event"].startswith("isr_shrink")]
    single = [(e["event"], e["topic"], e["isr"], e["previous_isr"]) for e in events if "partitions" not in e]
    bulk = [(e["event"], e["topic"], e["partitions"], e["first_isr"], e["first_previous_isr"])
            for e in events if "partitions" in e]
    if count <= PARTITION_EVENTS_EACH_UP_TO:
        assert single == [("isr_shrink_requested", TOPIC, [1], [1, 2])] + [
            ("isr_shrink_requested", "many", [1], [1, 2])] * count and not bulk
    else:   # the limit is per topic: TOPIC's one partition keeps its own line
        assert single == [("isr_shrink_requested", TOPIC, [1], [1, 2])]
        assert bulk == [("isr_shrinks_requested", "many", count, [1], [1, 2])]


def test_a_fenced_follower_is_not_proposed_for_the_isr(make_pair):
    pair = make_pair(min_isr=1)
    pair.move(1, (1,))
    pair.change(FenceBroker(2, 0))
    pair.replicate()
    pair.replicate()
    assert pair.brokers[1].alters.requests == []


def test_a_follower_behind_for_longer_than_the_lag_time_is_dropped_from_the_isr(pair):
    alters = pair.brokers[1].alters
    pair.replicate()                           # at the leader's end: caught up now
    pair.clock.now += LAG_MS // 2
    pair.produce(1, b"a")
    pair.clock.now += LAG_MS // 2
    pair.brokers[1].replicas.maybe_shrink_isr()
    assert alters.requests == []               # exactly the lag time: not yet
    pair.clock.now += 1
    pair.brokers[1].replicas.maybe_shrink_isr()
    assert alters.requests == [{"topic": TOPIC, "topic_id": TOPIC_ID, "partition": 0, "leader_epoch": 0,
                                "partition_epoch": 0, "new_isr": [1]}]
    pair.brokers[1].replicas.maybe_shrink_isr()
    assert len(alters.requests) == 1


def test_a_wall_clock_step_does_not_shrink_the_isr(make_pair):
    """The ISR lag is measured on a monotonic clock: the wall clock jumping an hour ahead (NTP, a VM
    resumed) is not an hour of follower lag (issue 14, defect 7)."""
    pair = make_pair(lag_clock=Clock())
    pair.replicate()
    pair.produce(1, b"a")
    pair.clock.now += 3_600_000                # wall time only
    pair.brokers[1].replicas.maybe_shrink_isr()
    assert pair.brokers[1].alters.requests == []
    pair.lag_clock.now += LAG_MS + 1           # real lag
    pair.brokers[1].replicas.maybe_shrink_isr()
    assert [r["new_isr"] for r in pair.brokers[1].alters.requests] == [[1]]


def test_a_follower_at_the_leader_end_stays_in_the_isr_however_long_it_is_quiet(pair):
    pair.produce(1, b"a")
    pair.replicate()
    pair.replicate()
    pair.clock.now += 100 * LAG_MS
    pair.brokers[1].replicas.maybe_shrink_isr()
    assert pair.brokers[1].alters.requests == []


# ---- leader change: divergence and truncation (KIP-101 / KIP-595) -----------------------


def _diverge(pair: Pair) -> None:
    """Epoch 0 on broker 1: 0..9 replicated, 10..11 only on broker 1; then broker 2 leads at epoch 1."""
    for i in range(0, 10, 2):
        pair.produce(1, *_values(i, i + 1))
    pair.replicate()
    pair.replicate()                           # the follower learns HW 10
    pair.produce(1, *_values(10, 11))
    assert (pair.brokers[1].log.log_end_offset, pair.brokers[2].log.log_end_offset) == (12, 10)
    pair.move(2, (2,))                         # broker 1 "died"; broker 2 is elected
    assert pair.epoch == 1


def test_a_deposed_leader_truncates_its_unreplicated_tail_at_the_diverging_epoch(make_pair):
    pair = make_pair(min_isr=1)
    _diverge(pair)
    old, new = pair.brokers[1], pair.brokers[2]
    assert old.fetchers.calls[-1] == ("follow", TP, 2, 1)
    assert new.fetchers.calls[-1] == ("stop", TP)
    assert pair.produce(2, b"x10", b"x11", b"x12").base_offset == 10
    assert old.replicas.fetch_position(TP, 2, 1) == (12, 0)
    diverged = pair.fetch(follower=1, leader=2)
    assert (diverged.error, diverged.records, diverged.diverging_epoch) == (None, b"", (0, 10))
    assert new.alters.requests == []           # a diverging fetch says nothing about what broker 1 holds
    pair.deliver(diverged, follower=1, leader=2)
    assert old.replicas.fetch_position(TP, 2, 1) == (10, 0)
    pair.replicate(follower=1, leader=2)
    assert old.log.read(0, MAX_BYTES) == new.log.read(0, MAX_BYTES)
    assert old.values() == _values(0, 9) + [b"x10", b"x11", b"x12"]
    assert [(e.epoch, e.start_offset) for e in old.log.epoch_entries] == [(0, 0), (1, 10)]
    pair.replicate(follower=1, leader=2)       # at the leader's end now: back into the ISR
    assert [r["new_isr"] for r in new.alters.requests] == [[2, 1]]


def test_a_follower_past_the_leader_end_without_epochs_is_cut_back_to_it(make_pair):
    pair = make_pair(min_isr=1)
    _diverge(pair)
    result = pair.fetch_at(1, 2, 12, -1)       # no last fetched epoch: no divergence check possible
    assert isinstance(result.error, OffsetOutOfRangeError) and result.log_end_offset == 10
    pair.deliver(result, follower=1, leader=2)
    assert pair.brokers[1].log.log_end_offset == 10
    pair.produce(2, b"x10")
    pair.replicate(follower=1, leader=2)
    assert pair.brokers[1].log.read(0, MAX_BYTES) == pair.brokers[2].log.read(0, MAX_BYTES)
    assert pair.brokers[1].values() == _values(0, 9) + [b"x10"]


def test_an_out_of_range_fetch_does_not_count_as_caught_up(make_pair):
    pair = make_pair(min_isr=1)
    _diverge(pair)
    result = pair.fetch_at(1, 2, 12, -1)
    assert isinstance(result.error, OffsetOutOfRangeError)
    assert pair.brokers[2].alters.requests == []


# ---- acks=all waits are tied to the epoch of the append (issue 14, defect 2) --------------


def test_an_acks_all_wait_that_starts_after_the_leadership_was_lost_and_regained_fails(make_pair):
    """A produce stream serializes its waits, so a wait can start long after its append. The batch was
    appended at epoch 0; by the time the wait starts broker 1 has lost the leadership, truncated the
    batch away, and leads again at epoch 2 with another batch at that offset. The new epoch's HW passes
    the offset, but the batch is gone: the answer must be NOT_LEADER_OR_FOLLOWER, never success."""
    pair = make_pair(min_isr=1)
    old_batch = build_batch([(None, b"appended-at-epoch-0", 1000)])
    [appended] = pair.brokers[1].replicas.append_to_leader(-1, [(TOPIC, 0, old_batch, -1)])
    assert appended.error is None and appended.base_offset == 0 and appended.leader_epoch == 0
    pair.move(2, (2,))                                        # epoch 1: broker 2 leads, never got it
    assert pair.produce(2, b"written-at-epoch-1").base_offset == 0
    for _ in range(3):                                        # broker 1 truncates and copies broker 2's batch
        pair.replicate(follower=1, leader=2)
    assert pair.brokers[1].values() == [b"written-at-epoch-1"]
    pair.move(1, (1, 2))                                      # epoch 2: broker 1 leads again
    assert pair.epoch == 2
    pair.replicate()
    pair.replicate()
    assert pair.brokers[1].hw == 1                            # the new epoch's HW passed offset 0
    [answer] = pair.brokers[1].replicas.await_replication(-1, [appended], time.monotonic() + 5)
    assert isinstance(answer.error, NotLeaderOrFollowerError), answer


def test_an_acks_all_wait_at_the_epoch_of_the_append_succeeds(pair):
    [appended] = pair.brokers[1].replicas.append_to_leader(-1, [(TOPIC, 0, build_batch([(None, b"a", 1)]), -1)])
    pair.replicate()
    pair.replicate()
    [answer] = pair.brokers[1].replicas.await_replication(-1, [appended], time.monotonic() + 5)
    assert answer.error is None and answer.base_offset == 0


# ---- a re-created topic never adopts a returning replica's old log (issue 14, defect 1) ------


def _restart(pair: Pair, broker_id: int, image_before: MetadataImage) -> Broker:
    """Broker ``broker_id`` comes back: its logs reopened from disk, its first diff against an empty image
    (as after a kill -9: its image replays to ``pair.metadata.image``)."""
    old = pair.brokers[broker_id]
    old.logs.close(clean=False)
    settings = BrokerSettings(replica_lag_time_max_ms=LAG_MS)
    fresh = pair._broker(old.logs.data_dir, broker_id, settings)
    pair.brokers[broker_id] = fresh
    fresh.replicas.on_metadata_change(MetadataImage(image_before.cluster_id), pair.metadata.image)
    return fresh


@pytest.mark.parametrize("old_epoch_higher", [False, True])
def test_a_recreated_topic_replaces_a_returning_replicas_log_of_the_old_topic(make_pair, old_epoch_higher):
    pair = make_pair(min_isr=1)
    for i in range(3):
        pair.produce(1, b"old-%d" % i)
    pair.replicate()
    pair.replicate()
    if old_epoch_higher:                       # the old topic's log ends at a higher epoch than the new one's
        pair.move(2, (1, 2))
        pair.move(1, (1, 2))
        pair.produce(1, b"old-at-epoch-2")
        pair.replicate()
        pair.replicate()
    assert pair.brokers[2].values()[:3] == [b"old-0", b"old-1", b"old-2"]
    # Broker 2 is away (dead, not yet fenced) while the topic is deleted and re-created with the same
    # name and replicas: it never sees the deletion.
    before = pair.metadata.image
    broker2 = pair.brokers.pop(2)
    pair.change(DeleteTopic(TOPIC, TOPIC_ID), CreateTopic(TOPIC, "id-orders-2", ((1, 2),), {"min.insync.replicas": "1"}))
    pair.brokers[2] = broker2
    assert pair.brokers[1].values() == []      # the live leader took the new topic: an empty log
    pair.produce(1, b"new-0")
    fresh = _restart(pair, 2, before)
    assert fresh.values() == [], "the returning replica kept the deleted topic's records"
    assert fresh.logs.topic_id(*TP) == "id-orders-2"
    for _ in range(3):
        pair.replicate()
    assert fresh.values() == [b"new-0"]
    assert fresh.log.read(0, MAX_BYTES) == pair.brokers[1].log.read(0, MAX_BYTES)


def test_a_log_without_a_topic_id_on_disk_adopts_the_metadatas(tmp_path):
    logs = LogManager(tmp_path / "d", BrokerSettings().log)
    logs.open(0)
    try:
        legacy = logs.get_or_create("t", 0, None, 0)           # no id: a folder of an older raftka
        legacy.append_as_leader(build_batch([(None, b"kept", 1)]), 0, 1)
        assert logs.topic_id("t", 0) is None
        assert logs.get_or_create("t", 0, None, 0, "id-t") is legacy
        assert logs.topic_id("t", 0) == "id-t"
        assert (legacy.directory / "partition.metadata").read_text() == "version: 0\ntopic_id: id-t\n"
        assert logs.get_or_create("t", 0, None, 0, "id-other") is not legacy
        assert logs.get("t", 0).log_end_offset == 0 and logs.topic_id("t", 0) == "id-other"
    finally:
        logs.close()


def test_an_idle_producer_id_expires_after_producer_id_expiration_ms(pair):
    """Kafka's producer.id.expiration.ms: the leader forgets a producer whose last batch is older (by its
    own max timestamp, against wall time), so producer state does not grow for ever (issue 14, defect 7)."""
    settings_ms = pair.brokers[1].replicas._settings.producer_id_expiration_ms
    batch = build_batch([(None, b"a", pair.clock.now)], producer_id=7, producer_epoch=0, base_sequence=0)
    [first] = pair.brokers[1].replicas.append_to_leader(1, [(TOPIC, 0, batch, -1)])
    [again] = pair.brokers[1].replicas.append_to_leader(1, [(TOPIC, 0, batch, -1)])
    assert (first.base_offset, again.base_offset) == (0, 0)          # a duplicate while remembered
    pair.clock.now += settings_ms - 1
    assert pair.brokers[1].replicas.remove_expired_producers() == 0
    pair.clock.now += 1
    assert pair.brokers[1].replicas.remove_expired_producers() == 1
    [after] = pair.brokers[1].replicas.append_to_leader(1, [(TOPIC, 0, batch, -1)])
    assert after.error is not None or after.base_offset == 1         # forgotten: no longer its duplicate


def test_an_expansion_proven_not_applied_releases_the_hw_it_held_back_at_once(make_pair):
    """No fetch need come: at scale the follower left in the ISR was at the log end, and its fetch session
    sent nothing for the partition, so acks=all waited for ever (replica_manager._alter_not_applied)."""
    pair = make_pair(min_isr=1)
    pair.move(1, (1,))
    pair.produce(1, *_values(0, 4))
    pair.replicate()
    pair.replicate()                           # broker 2 caught up: proposed for the ISR, pending
    assert len(pair.brokers[1].alters.requests) == 1 and pair.brokers[1].hw == 5
    pair.produce(1, b"held")                   # the HW now waits for broker 2, a member of the pending ISR
    assert pair.brokers[1].hw == 5
    pair.brokers[1].alters.on_not_applied[0]()   # INELIGIBLE_REPLICA: broker 2 was fenced meanwhile
    assert pair.brokers[1].hw == 6
