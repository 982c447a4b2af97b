"""AppendNotifier: a waiter re-checks only on the kind of event it waits for."""

import threading
import time

import pytest

from broker.append_notifier import HIGH_WATERMARK, LOG_END, AppendNotifier


def _waiter(notifier: AppendNotifier, on: str):
    """A thread waiting on ``on`` until ``done`` is set; counts its ready() checks."""
    state = {"checks": 0, "result": None}
    first_check = threading.Event()
    done = threading.Event()

    def ready() -> bool:
        state["checks"] += 1
        first_check.set()
        return done.is_set()

    def run():
        state["result"] = notifier.wait_until(ready, time.monotonic() + 10, on=on)

    t = threading.Thread(target=run)
    t.start()
    assert first_check.wait(5)
    return t, done, state


@pytest.mark.parametrize("on,other", [(LOG_END, HIGH_WATERMARK), (HIGH_WATERMARK, LOG_END)])
def test_a_waiter_ignores_the_other_kind_of_event(on, other):
    notifier = AppendNotifier()
    t, done, state = _waiter(notifier, on)
    for _ in range(5):
        notifier.notify(other)     # no re-check: only the first and the last
    done.set()
    notifier.notify(on)
    t.join(5)
    assert state == {"checks": 2, "result": True}


def test_notify_without_a_kind_wakes_every_waiter():
    notifier = AppendNotifier()
    waiters = [_waiter(notifier, LOG_END), _waiter(notifier, HIGH_WATERMARK)]
    for _, done, _ in waiters:
        done.set()
    notifier.notify()    # a metadata change: everyone re-checks
    for t, _, state in waiters:
        t.join(5)
        assert state == {"checks": 2, "result": True}


def test_the_deadline_ends_a_wait_that_nothing_completes():
    notifier = AppendNotifier()
    started = time.monotonic()
    assert notifier.wait_until(lambda: False, started + 0.2, on=LOG_END) is False
    assert time.monotonic() - started >= 0.2
