"""The fetcher's watchdog decision: a stream whose answer is overdue is cancelled, no sooner."""

from __future__ import annotations

from broker.config import BrokerSettings
from broker.replica_fetcher import ANSWER_GRACE_S, ReplicaFetcherThread


class RecordingStream:
    """Stands in for the gRPC stream: only its close() is observed."""

    def __init__(self):
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def fetcher() -> ReplicaFetcherThread:
    # Not started: the test drives the check directly with its own clock.
    return ReplicaFetcherThread(2, 1, ("127.0.0.1", 1), None, BrokerSettings(replica_fetch_wait_max_ms=500), None)


def test_nothing_is_cancelled_while_no_request_awaits_an_answer():
    t = fetcher()
    t._stream = RecordingStream()
    assert not t.cancel_if_overdue(now=1e9)
    assert t._stream.closed == 0


def test_a_stream_is_cancelled_only_after_the_long_poll_plus_grace():
    t = fetcher()
    stream = t._stream = RecordingStream()
    t._sent_at = 100.0
    limit = 0.5 + ANSWER_GRACE_S
    assert not t.cancel_if_overdue(now=100.0 + limit - 0.01)
    assert stream.closed == 0
    assert t.cancel_if_overdue(now=100.0 + limit + 0.01)
    assert stream.closed == 1
