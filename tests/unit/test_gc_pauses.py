"""GcPauses (broker/gc_pauses.py): survivors are frozen out of full collections, cycles among them are still
freed by the periodic full collection, and a long collection is an event. Real gc, driven with ``now``."""

from __future__ import annotations

import gc
import weakref

import pytest
import structlog

from broker.gc_pauses import GcPauses


class Node:
    def __init__(self):
        self.other = None


@pytest.fixture
def pauses():
    p = GcPauses(freeze_every_s=1.0, full_collection_every_s=600.0)
    yield p
    p.uninstall()
    gc.unfreeze()


def test_survivors_are_frozen_at_each_interval_and_full_collections_do_not_walk_them(pauses):
    pauses.install()
    assert gc.get_freeze_count() > 0
    pauses.tick(now=100.0)           # sets the first full collection at 700
    kept = [Node() for _ in range(1000)]
    before = gc.get_freeze_count()
    pauses.tick(now=100.5)           # not yet a second since
    assert gc.get_freeze_count() == before
    pauses.tick(now=101.0)
    assert gc.get_freeze_count() >= before + len(kept)


def test_a_cycle_frozen_while_alive_is_freed_by_the_full_collection_once_garbage(pauses):
    pauses.install()
    pauses.tick(now=0.0)
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    pauses.tick(now=1.0)             # alive: frozen
    del a, b                         # now a garbage cycle, which reference counting cannot free
    gc.collect()                     # frozen: even a full collection leaves it
    assert ref() is not None
    pauses.tick(now=600.0)           # the periodic full collection unfreezes first
    assert ref() is None


def test_a_collection_longer_than_the_limit_is_logged_at_the_next_tick(pauses, monkeypatch):
    clock = iter([10.0, 10.25])
    monkeypatch.setattr("broker.gc_pauses.time.monotonic", lambda: next(clock))
    pauses._on_collection("start", {"generation": 2})
    pauses._on_collection("stop", {"generation": 2, "collected": 0})
    monkeypatch.undo()
    with structlog.testing.capture_logs() as logs:
        pauses.tick(now=5.0)
    assert [(e["event"], e["generation"], e["ms"]) for e in logs] == [("gc_pause", 2, 250.0)]
