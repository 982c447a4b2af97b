"""Kafka error codes, their classes and the retry flags; agreement with the proto enum."""

import pytest

from client import errors
from client.errors import (ERRORS_BY_CODE, CorruptMessageError, FencedLeaderEpochError, KafkaError,
                           LeaderHintInfo, NotLeaderOrFollowerError, RecordTooLargeError,
                           UnknownServerError, error_for_code)
from client.protocol.v1 import common_pb2

ENUM = common_pb2.ErrorCode.DESCRIPTOR


def _error_classes():
    return [obj for obj in vars(errors).values()
            if isinstance(obj, type) and issubclass(obj, KafkaError) and obj is not KafkaError]


def test_every_code_maps_to_a_class_with_that_code():
    assert ERRORS_BY_CODE
    for code, cls in ERRORS_BY_CODE.items():
        assert cls.code == code
        assert issubclass(cls, KafkaError)


def test_every_class_with_a_code_is_in_the_table():
    coded = [cls for cls in _error_classes() if cls.code is not None]
    assert {cls.code for cls in coded} == set(ERRORS_BY_CODE)
    assert len({cls.code for cls in coded}) == len(coded), "two classes share a code"


def test_not_leader_or_follower_is_retriable_and_invalidates_metadata():
    assert NotLeaderOrFollowerError.retriable
    assert NotLeaderOrFollowerError.invalid_metadata
    assert NotLeaderOrFollowerError.code == 6


def test_record_too_large_is_not_retriable():
    assert RecordTooLargeError.code == 10
    assert not RecordTooLargeError.retriable


@pytest.mark.parametrize("code", [-2, 9999, 11, 0])
def test_error_for_unknown_code_is_unknown_server_error(code):
    err = error_for_code(code, "boom")
    assert type(err) is UnknownServerError
    assert str(code) in err.message


def test_error_for_code_keeps_message_and_leader_hint():
    hint = LeaderHintInfo(2, 9, "127.0.0.1", 19092)
    err = error_for_code(6, "moved", hint)
    assert isinstance(err, NotLeaderOrFollowerError)
    assert err.message == "moved"
    assert err.leader_hint == hint
    assert str(err) == "NOT_LEADER_OR_FOLLOWER: moved"


def test_error_for_code_without_message_uses_the_description():
    err = error_for_code(2)
    assert isinstance(err, CorruptMessageError)
    assert err.message == CorruptMessageError.description


def test_fenced_leader_epoch_flags_follow_kafka():
    assert FencedLeaderEpochError.retriable and FencedLeaderEpochError.invalid_metadata


def test_every_proto_error_code_has_a_class_named_like_the_enum():
    names_by_number: dict[int, set[str]] = {}
    for v in ENUM.values:
        names_by_number.setdefault(v.number, set()).add(v.name)
    assert names_by_number[10] == {"RECORD_TOO_LARGE", "MESSAGE_TOO_LARGE"}
    for number, names in names_by_number.items():
        if number == 0:
            assert names == {"NONE"}
            continue
        cls = ERRORS_BY_CODE.get(number)
        assert cls is not None, f"proto ErrorCode {sorted(names)} = {number} has no error class"
        assert cls.name in names, f"class {cls.__name__} is named {cls.name}, proto says {sorted(names)}"


def test_every_error_class_code_is_in_the_proto_enum():
    numbers = {v.number for v in ENUM.values}
    missing = {code: cls.__name__ for code, cls in ERRORS_BY_CODE.items() if code not in numbers}
    assert missing == {}
