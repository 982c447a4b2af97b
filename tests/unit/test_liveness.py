"""BrokerLiveness: when the controller fences a broker (Kafka's BrokerHeartbeatManager), driven by explicit times."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.liveness import CONNECTION_LOST, SESSION_TIMEOUT, BrokerLiveness

INTERVAL = 1.0    # broker.heartbeat.interval.ms, in seconds
SESSION = 5.0     # broker.session.timeout.ms
START = 100.0     # the controller's activation time
EPS = 1e-3


def _liveness() -> BrokerLiveness:
    live = BrokerLiveness(heartbeat_interval_s=INTERVAL, session_timeout_s=SESSION)
    live.activate(START)
    return live


# (last heartbeat, Raft link up, alive until, then fenced for): silence is measured from the last
# heartbeat, or from the controller's activation (START) for a broker it never heard from.
@pytest.mark.parametrize("heard_at,link_up,alive_until,reason", [
    (START + 10, True, START + 10 + SESSION, SESSION_TIMEOUT),
    # A hung process (SIGSTOP) keeps its connections open: two missed heartbeats are not enough.
    (START, True, START + SESSION, SESSION_TIMEOUT),
    # A killed one drops them: two missed heartbeats are.
    (START, False, START + 2 * INTERVAL, CONNECTION_LOST),
    # A flapping link under a broker that still heartbeats: it counts from the fresh heartbeat.
    (START + 3, False, START + 3 + 2 * INTERVAL, CONNECTION_LOST),
    # Never heard from: the grace period after activation.
    (None, True, START + SESSION, SESSION_TIMEOUT),
    (None, False, START + 2 * INTERVAL, CONNECTION_LOST),
], ids=["session", "hung-link-up", "link-down", "link-down-fresh-heartbeat", "grace", "grace-link-down"])
def test_fence_deadlines(heard_at, link_up, alive_until, reason):
    live = _liveness()
    if heard_at is not None:
        live.heartbeat(1, heard_at)
    live.set_link(1, link_up, heard_at or START)
    assert live.fence_reason(1, (heard_at or START) + EPS) is None
    assert live.fence_reason(1, alive_until) is None                  # exactly at the deadline: still alive
    assert live.fence_reason(1, alive_until + EPS) == reason


def test_each_heartbeat_restarts_the_session():
    live = _liveness()
    for t in range(1, 20):           # 19 s of heartbeats every second, far past one session timeout
        live.heartbeat(1, START + t)
        assert live.fence_reason(1, START + t + INTERVAL) is None
    assert live.fence_reason(1, START + 19 + SESSION + EPS) == SESSION_TIMEOUT


def test_a_link_that_comes_back_up_stops_the_connection_lost_rule():
    live = _liveness()
    live.heartbeat(1, START)
    live.set_link(1, False, START)
    live.set_link(1, True, START + INTERVAL)
    assert live.fence_reason(1, START + 3 * INTERVAL) is None


def test_activation_forgets_heartbeats_heard_before_it():
    # A new controller cannot trust the old one's clock: every broker starts a fresh session.
    live = BrokerLiveness(heartbeat_interval_s=INTERVAL, session_timeout_s=SESSION)
    live.heartbeat(1, 0.0)
    assert live.fence_reason(1, START) == SESSION_TIMEOUT
    live.activate(START)
    assert live.fence_reason(1, START + SESSION - EPS) is None
    assert live.fence_reason(1, START + SESSION + EPS) == SESSION_TIMEOUT


def test_brokers_are_judged_independently():
    live = _liveness()
    live.heartbeat(1, START + 4)
    live.set_link(2, False, START + 3)
    live.heartbeat(2, START + 4)
    assert live.fence_reason(1, START + SESSION + EPS) is None
    assert live.fence_reason(2, START + SESSION + EPS) is None
    assert live.fence_reason(3, START + SESSION + EPS) == SESSION_TIMEOUT
    assert live.fence_reason(2, START + 4 + 2 * INTERVAL + EPS) == CONNECTION_LOST
    assert live.fence_reason(1, START + 4 + 2 * INTERVAL + EPS) is None


@given(beats=st.lists(st.floats(0, 30), max_size=5), link_up=st.booleans(),
       first=st.floats(0, 60), later=st.floats(0, 60))
def test_property_without_new_heartbeats_a_fenced_broker_stays_fenceable(beats, link_up, first, later):
    live = _liveness()
    for t in sorted(beats):
        live.heartbeat(1, START + t)
    live.set_link(1, link_up, START)
    t1 = START + max(beats, default=0) + first
    if live.fence_reason(1, t1) is not None:
        assert live.fence_reason(1, t1 + later) is not None


def test_a_new_controller_fences_at_once_a_broker_whose_link_dropped_before_it_took_over():
    # The old controller and broker 1 were one process: killed together. This broker saw the link
    # drop at START - 3 while it was a follower; it wins the election and activates at START.
    live = BrokerLiveness(heartbeat_interval_s=INTERVAL, session_timeout_s=SESSION)
    live.set_link(1, False, START - 3)
    live.set_link(2, True, START - 3)
    live.activate(START)
    assert live.fence_reason(1, START + EPS) == CONNECTION_LOST
    assert live.fence_reason(2, START + EPS) is None           # link up: the grace period applies


def test_a_link_that_dropped_just_before_activation_still_gets_two_intervals():
    live = BrokerLiveness(heartbeat_interval_s=INTERVAL, session_timeout_s=SESSION)
    live.set_link(1, False, START - 0.5)
    live.activate(START)
    assert live.fence_reason(1, START - 0.5 + 2 * INTERVAL) is None
    assert live.fence_reason(1, START - 0.5 + 2 * INTERVAL + EPS) == CONNECTION_LOST


def test_a_heartbeat_after_activation_counts_over_the_link_drop():
    # A live broker whose Raft link is down (reconnecting) but which heartbeats to the new controller.
    live = BrokerLiveness(heartbeat_interval_s=INTERVAL, session_timeout_s=SESSION)
    live.set_link(1, False, START - 3)
    live.activate(START)
    live.heartbeat(1, START)
    assert live.fence_reason(1, START + 2 * INTERVAL) is None
    assert live.fence_reason(1, START + 2 * INTERVAL + EPS) == CONNECTION_LOST


def test_set_link_keeps_the_first_moment_the_link_was_seen_down():
    live = _liveness()
    live.set_link(1, False, START)
    live.set_link(1, False, START + 1.5)   # still down at the next tick
    assert live.fence_reason(1, START + 2 * INTERVAL + EPS) == CONNECTION_LOST
