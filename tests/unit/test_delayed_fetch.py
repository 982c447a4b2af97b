"""A parked fetch (broker/delayed_fetch.py): completed once, by the thread that brings its data, never
blocking or failing that thread; expired at its deadline; cancelled when its follower goes."""

from __future__ import annotations

import threading
import time

import pytest

from broker.delayed_fetch import COMPLETE, IGNORE, POKE, POLL_S, DelayedFetch, EventWaker, FetchPurgatory
from broker.fetch_session import FetchSession
from broker.partition import FetchRequestPartition
from tests.unit.test_replica_manager_replication import MAX_BYTES, TOPIC, TP, Pair


class Parked:
    """A fetch whose data comes when ``arrive`` is called; records who answered it, and with what."""

    def __init__(self, wait_s: float = 5.0, respond_error: Exception | None = None, waker=None):
        self.data: list[str] = []
        self.answers: list[tuple[list[str], int]] = []   # (answer, answering thread)
        self.reads = 0
        self.respond_error = respond_error
        self.fetch = DelayedFetch(self._ready, lambda: list(self.data), self._respond, time.monotonic() + wait_s,
                                  waker)

    def arrive(self, value: str) -> None:
        self.data.append(value)

    def _ready(self) -> bool:
        self.reads += 1
        return bool(self.data)

    def _respond(self, answer: list[str]) -> None:
        if self.respond_error is not None:
            raise self.respond_error
        self.answers.append((answer, threading.get_ident()))


def _await_in_background(purgatory: FetchPurgatory, fetch: DelayedFetch, still_wanted=lambda: True):
    out: list = []

    def run() -> None:
        try:
            out.append(purgatory.await_completion(fetch, still_wanted))
        except Exception as e:  # noqa: BLE001 - the test looks at it
            out.append(e)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_an_append_answers_a_parked_fetch_on_the_appending_thread():
    purgatory = FetchPurgatory()
    p = Parked()
    purgatory.park(p.fetch)
    assert not p.fetch.completed and len(purgatory) == 1
    owner, out = _await_in_background(purgatory, p.fetch)
    p.arrive("a")
    purgatory.complete_on_append(TP)
    assert p.answers == [(["a"], threading.get_ident())], "answered by the appender, at once"
    owner.join(2)
    assert out == [True] and len(purgatory) == 0
    purgatory.complete_on_append(TP)
    assert len(p.answers) == 1, "answered twice"


def test_a_fetch_is_watched_before_its_last_check():
    """Watch, then try: an append landing between a fetch's read and its parking finds it watched."""
    purgatory = FetchPurgatory()
    seen_watched: list[int] = []
    fetch = DelayedFetch(lambda: seen_watched.append(len(purgatory)) or False, list, lambda _: None,
                         time.monotonic() + 5)
    purgatory.park(fetch)
    assert seen_watched == [1]


def test_a_fetch_with_data_already_is_answered_on_its_own_thread_and_not_watched():
    purgatory = FetchPurgatory()
    p = Parked()
    p.arrive("a")
    purgatory.park(p.fetch)
    assert p.answers == [(["a"], threading.get_ident())] and len(purgatory) == 0
    assert purgatory.await_completion(p.fetch, lambda: True) is True


def test_racing_completers_answer_once():
    purgatory = FetchPurgatory()
    p = Parked()
    purgatory.park(p.fetch)
    p.arrive("a")
    start = threading.Barrier(8)

    def complete() -> None:
        start.wait()
        for _ in range(50):
            purgatory.complete_on_append(TP)
            p.fetch.try_complete()
            p.fetch.expire()
    threads = [threading.Thread(target=complete) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(p.answers) == 1


def test_the_deadline_answers_what_was_read_without_reading_again():
    """Like the long poll before it: at the deadline the answer is what the reads so far found."""
    purgatory = FetchPurgatory()
    p = Parked(wait_s=0.05)
    purgatory.park(p.fetch)
    assert p.reads == 1
    p.fetch.expire()
    assert [a for a, _ in p.answers] == [[]] and p.reads == 1
    assert purgatory.await_completion(p.fetch, lambda: True) is True and len(purgatory) == 0


def test_an_unanswered_fetch_is_answered_at_its_deadline():
    purgatory = FetchPurgatory()
    p = Parked(wait_s=0.05)
    purgatory.park(p.fetch)
    started = time.monotonic()
    assert purgatory.await_completion(p.fetch, lambda: True) is True
    assert time.monotonic() - started >= 0.04 and [a for a, _ in p.answers] == [[]]


def test_a_follower_gone_cancels_without_an_answer():
    purgatory = FetchPurgatory()
    p = Parked()
    purgatory.park(p.fetch)
    wanted = [True]
    owner, out = _await_in_background(purgatory, p.fetch, lambda: wanted[0])
    wanted[0] = False
    owner.join(4)   # before the 5 s deadline, whose answer would make it True
    assert out == [False] and p.answers == [] and len(purgatory) == 0
    p.arrive("late")
    purgatory.complete_on_append(TP)
    assert p.answers == [], "a cancelled fetch was answered"


@pytest.mark.parametrize("where", ["read", "respond"])
def test_a_failure_on_the_appending_thread_is_the_fetchs_not_the_appenders(where):
    purgatory = FetchPurgatory()
    boom = OSError("the follower's socket broke")
    p = Parked(respond_error=boom if where == "respond" else None)
    if where == "read":
        p.fetch._ready = lambda: (_ for _ in ()).throw(boom) if p.data else False
    purgatory.park(p.fetch)
    owner, out = _await_in_background(purgatory, p.fetch)
    p.arrive("a")
    purgatory.complete_on_append(TP)   # must not raise: it is a producer's append
    owner.join(2)
    assert out == [boom] and len(purgatory) == 0


def test_a_metadata_poke_has_the_owner_look_on_its_own_thread():
    purgatory = FetchPurgatory()
    p = Parked()
    purgatory.park(p.fetch)
    owner, out = _await_in_background(purgatory, p.fetch)
    p.arrive("error")
    purgatory.poke_all()
    owner.join(4)   # before the 5 s deadline: only the poke has it read again before then
    assert out == [True] and [t for _, t in p.answers] == [owner.ident]


class CountingWaker(EventWaker):
    """A transport that sends the answer itself: completion must not wake the owner."""
    wakes_on_completion = False

    def __init__(self) -> None:
        super().__init__()
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1
        super().wake()


def test_a_transport_that_sends_the_answer_is_not_woken_by_completion():
    purgatory = FetchPurgatory()
    waker = CountingWaker()
    p = Parked(waker=waker)
    purgatory.park(p.fetch)
    p.arrive("a")
    purgatory.complete_on_append(TP)
    assert len(p.answers) == 1 and waker.wakes == 0
    p.fetch.poke()
    assert waker.wakes == 1


def test_the_replica_manager_answers_a_parked_session_fetch_inside_the_leaders_append(tmp_path):
    """Kafka's DelayedFetch: the produce's own thread answers the follower waiting at the log end."""
    pair = Pair(tmp_path, 1)
    try:
        _parked_and_answered_by_the_append(pair)
    finally:
        pair.close()


def _parked_and_answered_by_the_append(pair: Pair) -> None:
    leader = pair.brokers[1].replicas
    session: FetchSession = leader.open_session(2)
    at_end = [FetchRequestPartition(TOPIC, 0, 0, pair.epoch, MAX_BYTES, -1)]
    first = leader.session_fetch(session, 0, MAX_BYTES, at_end, [], incremental=False)
    assert [r.partition for r in first] == [0] and not first[0].records
    answers: list[tuple[list, int]] = []
    fetch = leader.park_session_fetch(session, 5000, MAX_BYTES, [], [], True,
                                      lambda results: answers.append((results, threading.get_ident())))
    assert answers == [] and not fetch.completed
    pair.produce(1, b"a")
    assert len(answers) == 1, "the append returned before the parked fetch was answered"
    [result], thread = answers[0]
    assert thread == threading.get_ident() and result.topic == TOPIC and result.records
    assert leader.await_fetch(fetch, lambda: True) is True


def test_an_append_tries_only_the_fetches_it_feeds_and_pokes_the_costly_ones():
    """Kafka keys its purgatory by partition; a fetch whose round reads many partitions (a follower outside
    the ISR: thousands after a restart) is poked, to read once on its own thread for many appends."""
    purgatory = FetchPurgatory()
    waker = CountingWaker()
    actions = {("t", 0): COMPLETE, ("t", 1): POKE}
    p = Parked(waker=waker)
    p.fetch.on_append = lambda key: actions.get(key, IGNORE)
    purgatory.park(p.fetch)
    p.arrive("a")
    purgatory.complete_on_append(("t", 2))
    assert p.answers == [] and waker.wakes == 0 and p.reads == 1      # not its partition: not even read
    purgatory.complete_on_append(("t", 1))
    assert p.answers == [] and waker.wakes == 1 and p.reads == 1      # poked, not read on the appender
    purgatory.complete_on_append(("t", 0))
    assert [a for a, _ in p.answers] == [["a"]]


def test_a_session_with_a_watched_partition_is_not_settled(tmp_path):
    pair = Pair(tmp_path, 1)
    try:
        leader = pair.brokers[1].replicas
        session = leader.open_session(2)
        wrong_epoch = [FetchRequestPartition(TOPIC, 0, 0, pair.epoch + 5, MAX_BYTES, -1)]   # an error: watched
        leader.session_fetch(session, 0, MAX_BYTES, wrong_epoch, [], incremental=False)
        assert not session.settled()
        at_end = [FetchRequestPartition(TOPIC, 0, 0, pair.epoch, MAX_BYTES, -1)]
        leader.session_fetch(session, 0, MAX_BYTES, at_end, [], incremental=True)
        assert session.settled()
    finally:
        pair.close()


def test_a_sleep_that_merely_timed_out_does_not_read_again():
    """Between pokes the owner only sleeps: a round of a follower outside the ISR reads thousands of partitions,
    and a read per sleep doubled the leaders' work while a restarted broker rejoined every ISR."""
    purgatory = FetchPurgatory()
    p = Parked(wait_s=3 * POLL_S)
    purgatory.park(p.fetch)
    assert purgatory.await_completion(p.fetch, lambda: True) is True
    assert p.reads == 1 and [a for a, _ in p.answers] == [[]]
