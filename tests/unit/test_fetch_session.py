"""Fetch sessions (KIP-227; broker/fetch_session.py): what the leader reads and answers in a follower's session,
and the ISR lag rule for partitions a session leaves unread.

The pure session is driven with hand-made partition states; the replication tests run two real ReplicaManagers
(tests/unit/test_replica_manager_replication.py's Pair: real logs in tmp_path, the test plays the fetcher).
"""

from __future__ import annotations

import threading

from broker.fetch_session import FetchSession
from broker.metadata.image import PartitionRegistration
from broker.partition import FetchRequestPartition, FetchResult
from broker.partition_state import PartitionState
from client.errors import NotLeaderOrFollowerError
from tests.unit.test_replica_manager_replication import LAG_MS, MAX_BYTES, TOPIC, TP, Clock, Pair

FOLLOWER = 2


def position(partition: int, offset: int, epoch: int = 0) -> FetchRequestPartition:
    return FetchRequestPartition(TOPIC, partition, offset, epoch, MAX_BYTES, 0)


def leader_state(partition: int, leo: int, hw: int | None = None, isr=(1, 2, 3)) -> PartitionState:
    state = PartitionState(TOPIC, partition, 1)
    state.become_leader(PartitionRegistration((1, 2, 3), isr, 1, 0, 0), now_ms=0)
    state.log_end_offset, state.high_watermark = leo, leo if hw is None else hw
    return state


def answered(session: FetchSession, states: dict[int, PartitionState], records: dict[int, bytes] | None = None,
             now_ms: int = 1):
    """One round as the replica manager runs it: read what needs a read among the partitions to examine,
    answer what has news; (the partitions read, the partition ids answered)."""
    reads = {}
    for tp in session.candidates(now_ms):
        sp, state = session.partitions[tp], states.get(tp[1])
        if session.needs_read(tp, sp, state):
            reads[tp] = (FetchResult(tp[0], tp[1], NotLeaderOrFollowerError("gone"))
                         if state is None or not state.is_leader else
                         FetchResult(tp[0], tp[1], None, state.high_watermark, state.log_start_offset,
                                     state.log_end_offset, (records or {}).get(tp[1], b"")))
    return sorted(reads), sorted(r.partition for r in session.answer(reads))


def test_a_full_request_is_answered_whole_and_an_idle_incremental_one_reads_and_answers_nothing():
    s = FetchSession(FOLLOWER)
    states = {p: leader_state(p, 10) for p in range(5)}
    s.update([position(p, 10) for p in range(5)], [], incremental=False, now_ms=100)
    assert answered(s, states) == ([(TOPIC, p) for p in range(5)], list(range(5)))
    s.update([], [], incremental=True, now_ms=600)
    assert answered(s, states) == ([], [])
    assert s.fetched_at((TOPIC, 3)) == 600 and s.fetched_at((TOPIC, 9)) is None


def test_a_new_position_is_read_once_even_when_nothing_else_changed():
    # The read records the follower's position (it moves the HW): skipping it would stall acks=all.
    s = FetchSession(FOLLOWER)
    states = {0: leader_state(0, 10, hw=8)}
    s.update([position(0, 8)], [], incremental=False, now_ms=0)
    answered(s, states)                          # told: HW 8, log end 10; the follower fetches the rest
    s.update([position(0, 10)], [], incremental=True, now_ms=1)
    assert answered(s, states) == ([TP], [])     # read (position recorded), nothing new to answer
    assert answered(s, states) == ([], [])


def test_new_data_a_moved_hw_or_log_start_and_a_moved_leadership_are_read_and_answered():
    s = FetchSession(FOLLOWER)
    states = {p: leader_state(p, 10) for p in range(4)}
    s.update([position(p, 10) for p in range(4)], [], incremental=False, now_ms=0)
    answered(s, states)
    states[0].log_end_offset = 11                                     # an append: records for the follower
    states[1].high_watermark = 9                                      # (a HW the follower was not told)
    states[2].log_start_offset = 5                                    # retention
    states[3].leader_id = 3                                           # not the leader any more
    for p in range(4):
        s.mark((TOPIC, p))                                            # as the replica manager does
    assert answered(s, states, records={0: b"batch"}) == ([(TOPIC, p) for p in range(4)], [0, 1, 2, 3])
    states[3].leader_id = 1
    s.mark((TOPIC, 3))
    # 3: told an error last, now its offsets. 0 was answered its records: it is looked at again when the
    # follower names its new position (or the leader's side changes again).
    assert answered(s, states) == ([(TOPIC, 3)], [3])
    s.update([position(0, 11)], [], incremental=True, now_ms=2)
    assert answered(s, states) == ([(TOPIC, 0)], [])


def test_a_follower_outside_the_isr_is_read_every_round():
    # Its fetch is what brings it back into the ISR once it has caught up (and the leader can propose it).
    s = FetchSession(FOLLOWER)
    states = {0: leader_state(0, 10, isr=(1, 3)), 1: leader_state(1, 10)}
    s.update([position(0, 10), position(1, 10)], [], incremental=False, now_ms=0)
    answered(s, states)
    for _ in range(3):
        assert answered(s, states) == ([TP], [])


def test_errors_are_told_every_round_and_forgotten_or_replaced_partitions_leave_the_session():
    s = FetchSession(FOLLOWER)
    states = {0: leader_state(0, 10)}
    s.update([position(0, 10), position(1, 10)], [], incremental=False, now_ms=0)
    assert answered(s, states) == ([(TOPIC, 0), (TOPIC, 1)], [0, 1])
    assert answered(s, states) == ([(TOPIC, 1)], [1])                 # partition 1 is not hosted: told again
    s.update([], [(TOPIC, 1)], incremental=True, now_ms=1)
    assert answered(s, states) == ([], []) and list(s.partitions) == [TP]
    s.update([position(5, 0)], [], incremental=False, now_ms=2)      # a full request replaces the session
    assert list(s.partitions) == [(TOPIC, 5)]


# ---- the ISR lag rule for partitions a session leaves unread --------------------------------------------


def test_a_follower_at_the_log_end_counts_as_caught_up_at_its_sessions_latest_round():
    state = leader_state(0, 10)
    follower = state.followers[FOLLOWER]
    assert not state.on_follower_fetch(FOLLOWER, 10, now_ms=1_000)   # last read of this partition: t = 1 s
    lagging_follower = state.followers[3]
    state.on_follower_fetch(3, 4, now_ms=1_000)
    lagging_caught_up = lagging_follower.last_caught_up_ms
    # 60 s idle, the session fetching all along (its latest round at 60 s), then an append.
    state.on_leader_append(11, fetched_at={FOLLOWER: 60_000, 3: 60_000})
    assert follower.last_caught_up_ms == 60_000
    assert lagging_follower.last_caught_up_ms == lagging_caught_up   # it was behind: its round proves nothing
    assert state.isr_to_shrink(now_ms=60_001, lag_time_max_ms=LAG_MS) == (1, 2)
    # Without a live session the follower's last fetch (1 s) is all there is: it is lagging.
    bare = leader_state(0, 10)
    bare.on_follower_fetch(FOLLOWER, 10, now_ms=1_000)
    bare.on_follower_fetch(3, 10, now_ms=1_000)
    bare.on_leader_append(11)
    assert bare.isr_to_shrink(now_ms=60_001, lag_time_max_ms=LAG_MS) == (1,)


def session_fetch(pair: Pair, session: FetchSession, partitions: list[FetchRequestPartition], incremental=True):
    return pair.brokers[1].replicas.session_fetch(session, 0, MAX_BYTES, partitions, [], incremental)


def test_in_a_session_acks_all_completes_and_an_idle_minute_does_not_drop_the_follower(tmp_path):
    clock = Clock()
    pair = Pair(tmp_path, min_isr=2, lag_clock=clock)
    try:
        _idle_minute_in_a_session(pair, clock)
    finally:
        pair.close()


def _idle_minute_in_a_session(pair: Pair, clock: Clock) -> None:
    leader, follower = pair.brokers[1].replicas, pair.brokers[2].replicas
    session = leader.open_session(2)

    def fetch_round(incremental=True) -> list[FetchResult]:
        offset, last_epoch = follower.fetch_position(TP, 1, pair.epoch)
        answer = session_fetch(pair, session, [FetchRequestPartition(TOPIC, 0, offset, pair.epoch, MAX_BYTES,
                                                                     last_epoch)], incremental)
        for r in answer:
            pair.deliver(r)
        return answer

    assert [r.partition for r in fetch_round(incremental=False)] == [0]
    pair.produce(1, b"a", b"b")
    assert fetch_round()[0].records                                    # the data
    fetch_round()                                                      # the new position: the HW moves
    assert pair.brokers[1].hw == 2
    clock.now += 60_000                                                # an idle minute, rounds every 0.5 s
    for _ in range(3):
        assert session_fetch(pair, session, []) == []
    pair.produce(1, b"c")
    leader.maybe_shrink_isr()
    assert pair.brokers[1].alters.requests == [], "the follower left the ISR after an idle minute in a session"
    leader.close_session(session)
    clock.now += 60_000
    pair.produce(1, b"d")
    leader.maybe_shrink_isr()
    assert [r["new_isr"] for r in pair.brokers[1].alters.requests] == [[1]], "a follower without a session stays"


def test_only_marked_and_watched_partitions_are_examined_and_a_full_scan_catches_an_unmarked_change():
    s = FetchSession(FOLLOWER)
    states = {p: leader_state(p, 10) for p in range(1000)}
    s.update([position(p, 10) for p in range(1000)], [], incremental=False, now_ms=0)
    assert len(answered(s, states, now_ms=0)[1]) == 1000              # the first round answers everything
    assert s.candidates(now_ms=500) == []                             # idle: nothing to look at
    states[7].log_end_offset = 11
    s.mark((TOPIC, 7))
    s.mark((TOPIC, 5000))                                             # not in the session: ignored
    assert answered(s, states, now_ms=1000) == ([(TOPIC, 7)], [7])
    s.update([position(7, 11)], [], incremental=True, now_ms=1001)   # the follower took it
    assert answered(s, states, now_ms=1001) == ([(TOPIC, 7)], [])     # its new position, recorded
    states[8].log_end_offset = 11                                     # a change nobody marked
    assert answered(s, states, now_ms=1500) == ([], [])
    assert answered(s, states, now_ms=10_001) == ([(TOPIC, 8)], [8])  # the periodic full scan finds it


# ---- durability of a metadata change of many partitions (replica_manager.py, SYNC_TOGETHER_FROM) -------------


def test_a_big_metadata_change_syncs_once_and_a_small_one_fsyncs_as_it_goes(tmp_path, monkeypatch):
    """A new topic of many partitions: their logs and new leader epochs are written without an fsync each and
    made durable by one syncfs before any leads; a topic of a few partitions fsyncs file by file."""
    import broker.log.checkpoint as checkpoint
    import broker.log.manager as manager
    from broker.append_notifier import AppendNotifier
    from broker.config import BrokerSettings
    from broker.log import LogManager
    from broker.metadata.image import MetadataImage, apply_batch
    from broker.metadata.records import CreateTopic, RegisterBroker, UnfenceBroker
    from broker.replica_manager import SYNC_TOGETHER_FROM, ReplicaManager
    fsyncs, syncs = [], []
    real_fsync = checkpoint.os.fsync
    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    monkeypatch.setattr(manager, "sync_filesystem", lambda path: syncs.append(path))
    logs = LogManager(tmp_path, BrokerSettings().log)
    logs.open(0)
    image = apply_batch(MetadataImage("c"), [RegisterBroker(b, "127.0.0.1", 9000 + b, f"i{b}") for b in (1, 2)]
                        + [UnfenceBroker(b, 0) for b in (1, 2)])[0]
    metadata = type("Metadata", (), {"image": image})()
    replicas = ReplicaManager(1, logs, metadata, BrokerSettings(), AppendNotifier())
    try:
        for name, count in (("big", SYNC_TOGETHER_FROM + 4), ("small", 2)):
            fsyncs.clear(), syncs.clear()
            assignment = tuple(((1, 2), (2, 1))[p % 2] for p in range(count))   # broker 1 leads half
            old, metadata.image = metadata.image, apply_batch(metadata.image, [CreateTopic(name, f"id-{name}",
                                                                                           assignment, {})])[0]
            assert replicas.on_metadata_change(old, metadata.image) == []
            led = [p for p in range(count) if replicas.led_partitions(name).get(p) == 0]
            assert len(led) == count // 2
            if name == "big":
                assert (syncs, fsyncs) == ([tmp_path], [])
            else:   # per new log: partition.metadata and its folder; per new leader: its epoch file and folder
                assert syncs == [] and len(fsyncs) == 2 * count + 2 * len(led)
    finally:
        logs.close()


def test_a_failover_of_many_partitions_writes_only_their_leader_epochs_several_at_a_time(tmp_path, monkeypatch):
    """Broker 1 takes over the partitions broker 2 led (a kill -9 of broker 2): it writes each new leader epoch
    (KIP-279), several at once (a broker under load hands the GIL away at each of a write's system calls, and
    one at a time a 10,000-partition failover took seconds), and nothing else: no HW checkpoint (the periodic
    one has it), neither for its new leaderships nor for the partitions it goes on following."""
    import broker.log.leader_epoch_cache as epoch_cache
    import broker.log.log as log_module
    from broker.append_notifier import AppendNotifier
    from broker.config import BrokerSettings
    from broker.log import LogManager
    from broker.metadata.image import MetadataImage, apply_batch
    from broker.metadata.records import ChangePartition, CreateTopic, RegisterBroker, UnfenceBroker
    from broker.replica_manager import _FILE_STEP_WORKERS, ReplicaManager
    from client.record_batch import build_batch
    count = 4 * _FILE_STEP_WORKERS   # broker 2 leads half: 2 * workers new leaderships, enough to run in parallel
    logs = LogManager(tmp_path, BrokerSettings().log)
    logs.open(0)
    image = apply_batch(MetadataImage("c"), [RegisterBroker(b, "127.0.0.1", 9000 + b, f"i{b}") for b in (1, 2, 3)]
                        + [UnfenceBroker(b, 0) for b in (1, 2, 3)]
                        + [CreateTopic("t", "id-t", tuple(((2, 1, 3), (3, 1, 2))[p % 2] for p in range(count)),
                                       {})])[0]
    metadata = type("Metadata", (), {"image": image})()
    replicas = ReplicaManager(1, logs, metadata, BrokerSettings(), AppendNotifier())
    written: list[str] = []
    lock = threading.Lock()
    both_in_flight = threading.Barrier(2, timeout=5)   # the first two epoch writes must overlap, or time out
    real_write = epoch_cache.write_checkpoint

    def recording(path, text, durable=True):
        with lock:
            written.append(path.name)
            first_two = len(written) <= 2
        if first_two:
            both_in_flight.wait()
        real_write(path, text, durable)
    try:
        assert replicas.on_metadata_change(MetadataImage("c"), image) == []
        for hosted in replicas.hosted_partitions().values():   # one record each, which the HW passed
            hosted.log.append_as_follower(build_batch([(None, b"v", 1000)]), 0)
            hosted.state.high_watermark = 1
        monkeypatch.setattr(epoch_cache, "write_checkpoint", recording)
        monkeypatch.setattr(log_module, "write_offset_checkpoint", lambda *a, **k: written.append("HW"))
        old, metadata.image = image, apply_batch(image, [
            ChangePartition("t", "id-t", p, image.partition("t", p).partition_epoch, 1 if p % 2 == 0 else 3,
                            (1, 3)) for p in range(count)])[0]
        assert replicas.on_metadata_change(old, metadata.image) == []
        assert sorted(replicas.led_partitions("t")) == list(range(0, count, 2))
        assert written == ["leader-epoch-checkpoint"] * (count // 2)
    finally:
        logs.close()


def test_a_read_earlier_in_the_round_is_stale_once_the_hw_or_log_start_moved():
    """Each look takes a partition's mark: a HW moved (by the other follower's fetch) after this round read the
    partition must be read again, or the answer carries the old HW and nothing marks it for the next round
    (a follower's HW stayed one write behind)."""
    state = leader_state(0, leo=50, hw=49)
    read = FetchResult(TOPIC, 0, None, high_watermark=49, log_start_offset=0, log_end_offset=50)
    assert not FetchSession.read_is_stale(read, state)
    state.high_watermark = 50
    assert FetchSession.read_is_stale(read, state)
    state.high_watermark, state.log_start_offset = 49, 10
    assert FetchSession.read_is_stale(read, state)
