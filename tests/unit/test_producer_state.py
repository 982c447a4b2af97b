"""ProducerStateManager: Kafka's duplicate / out-of-order / epoch rules for idempotent producers."""

import pytest

from broker.producer_state import BATCHES_TO_RETAIN, Duplicate, ProducerStateManager
from client.errors import InvalidProducerEpochError, OutOfOrderSequenceNumberError


def _state(*batches) -> ProducerStateManager:
    """batches: (pid, epoch, first_seq, last_seq, first_offset)."""
    s = ProducerStateManager()
    for pid, epoch, first, last, offset in batches:
        s.observe(pid, epoch, first, last, offset, offset + last - first)
    return s


def test_non_idempotent_batches_are_never_checked_or_remembered():
    s = _state((-1, -1, -1, -1, 0))
    assert s.check(-1, -1, -1, -1) is None
    assert s.producers == {}


def test_an_unknown_producer_is_accepted_at_any_sequence():
    assert ProducerStateManager().check(7, 0, 0, 4) is None
    assert ProducerStateManager().check(7, 0, 50, 54) is None


def test_the_next_sequence_is_accepted_and_a_gap_is_out_of_order():
    s = _state((7, 0, 0, 4, 0))
    assert s.check(7, 0, 5, 9) is None
    assert isinstance(s.check(7, 0, 6, 9), OutOfOrderSequenceNumberError)
    assert isinstance(s.check(7, 0, 3, 4), OutOfOrderSequenceNumberError)   # overlaps but is no retained batch


def test_a_retained_batch_again_is_a_duplicate_with_its_original_offsets():
    s = _state((7, 0, 0, 4, 100), (7, 0, 5, 9, 105))
    assert s.check(7, 0, 0, 4) == Duplicate(100, 104)
    assert s.check(7, 0, 5, 9) == Duplicate(105, 109)


def test_only_the_last_five_batches_are_retained():
    s = _state(*[(7, 0, i, i, 10 + i) for i in range(BATCHES_TO_RETAIN + 2)])
    assert s.check(7, 0, BATCHES_TO_RETAIN + 1, BATCHES_TO_RETAIN + 1) == Duplicate(16, 16)
    assert isinstance(s.check(7, 0, 0, 0), OutOfOrderSequenceNumberError)   # fell out of the window


@pytest.mark.parametrize("epoch,first,expected", [
    (0, 5, None),                                    # same epoch, next sequence
    (1, 0, None),                                    # a new epoch starts over at 0
    (1, 5, OutOfOrderSequenceNumberError),           # ... and only at 0
])
def test_epochs(epoch, first, expected):
    s = _state((7, 0, 0, 4, 0))
    verdict = s.check(7, epoch, first, first + 4)
    assert verdict is None if expected is None else isinstance(verdict, expected)


def test_an_older_epoch_is_fenced():
    s = _state((7, 2, 0, 4, 0))
    assert isinstance(s.check(7, 1, 5, 9), InvalidProducerEpochError)


def test_a_newer_epoch_replaces_the_entry_and_older_observations_are_ignored():
    s = _state((7, 0, 0, 4, 0), (7, 1, 0, 1, 5), (7, 0, 5, 9, 7))
    assert s.producers[7].epoch == 1
    assert s.check(7, 1, 2, 3) is None
    assert s.check(7, 1, 0, 1) == Duplicate(5, 6)
