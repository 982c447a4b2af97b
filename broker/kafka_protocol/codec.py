"""The Kafka wire codec: the only module that imports kio.

kio (pinned in pyproject.toml) generates one frozen dataclass per (message, version) from Kafka's
own JSON schemas, with flexible versions and tagged fields. This adapter reads a request frame
(its header, then its body at the version the header names) and writes a response at the
request's version from plain values given by field name: a field the version lacks is left out,
one the caller does not give takes Kafka's default. So the rest of the listener speaks one shape
per API, whatever version a client picked.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import struct
import typing
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from kio.index import KioIndexError, load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer

ZERO_UUID = uuid.UUID(int=0)
_UTC = datetime.timezone.utc


class FrameError(Exception):
    """A frame that does not parse: the connection is closed (as Kafka's socket server does)."""


@dataclass(frozen=True)
class RequestFrame:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Any                # the kio request entity


def peek_header(frame: bytes) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id): the part of every request header that never changes."""
    if len(frame) < 8:
        raise FrameError(f"a request of {len(frame)} bytes is shorter than a request header")
    return struct.unpack_from(">hhi", frame, 0)


@lru_cache(maxsize=None)
def _request_schema(api_key: int, api_version: int):
    return load_request_schema(api_key, api_version)


@lru_cache(maxsize=None)
def _response_schema(api_key: int, api_version: int):
    return load_response_schema(api_key, api_version)


@lru_cache(maxsize=None)
def _reader(cls):
    return entity_reader(cls)


@lru_cache(maxsize=None)
def _writer(cls):
    return entity_writer(cls)


def has_schema(api_key: int, api_version: int) -> bool:
    try:
        _request_schema(api_key, api_version)
        return True
    except KioIndexError:
        return False


def parse_request(frame: bytes) -> RequestFrame:
    """The header and body of one request (its size prefix already removed)."""
    api_key, api_version, correlation_id = peek_header(frame)
    try:
        cls = _request_schema(api_key, api_version)
    except KioIndexError as e:
        raise FrameError(f"no schema for api_key {api_key} version {api_version}") from e
    try:
        header, offset = _reader(cls.__header_schema__)(frame, 0)
        body, used = _reader(cls)(frame, offset)
    except Exception as e:  # noqa: BLE001 - the native reader raises several kinds on a bad frame
        raise FrameError(f"api_key {api_key} v{api_version}: {type(e).__name__}: {e}") from None
    if offset + used != len(frame):
        raise FrameError(f"api_key {api_key} v{api_version}: {len(frame) - offset - used} bytes after the body")
    return RequestFrame(api_key, api_version, correlation_id, header.client_id, body)


def encode_response(api_key: int, api_version: int, correlation_id: int, values: dict[str, Any]) -> bytes:
    """One size-prefixed response frame: the header the version calls for, then the body."""
    cls = _response_schema(api_key, api_version)
    header_cls = cls.__header_schema__
    out = io.BytesIO()
    out.write(b"\x00\x00\x00\x00")
    _writer(header_cls)(out, header_cls(correlation_id=correlation_id))
    _writer(cls)(out, build(cls, values))
    buf = out.getbuffer()
    struct.pack_into(">i", buf, 0, len(buf) - 4)
    return bytes(buf)


# ---- plain values -> an entity of one version, and back -------------------------------------------------


def build(cls, values: dict[str, Any]):
    """An instance of ``cls`` from ``values`` by field name: nested entities from dicts, Kafka's
    defaults for what is not given, fields the version does not have ignored."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = _convert(f, values[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs[f.name] = _kafka_default(f)
    return cls(**kwargs)


def _entity_of(tp) -> type | None:
    """The entity class in an annotation ``X``, ``X | None`` or ``tuple[X, ...]`` (None for primitives)."""
    args = typing.get_args(tp)
    if args:
        inner = [a for a in args if a is not type(None) and a is not Ellipsis]
        return _entity_of(inner[0]) if len(inner) == 1 else None
    return tp if dataclasses.is_dataclass(tp) else None


def _is_tuple(tp) -> bool:
    """``tuple[X, ...]`` or ``tuple[X, ...] | None``."""
    if typing.get_origin(tp) is tuple:
        return True
    return any(typing.get_origin(a) is tuple for a in typing.get_args(tp))


def _convert(f: dataclasses.Field, value: Any):
    entity = _entity_of(f.type)
    if entity is not None:
        if _is_tuple(f.type):
            return tuple(v if dataclasses.is_dataclass(v) else build(entity, v) for v in value)
        return value if value is None or dataclasses.is_dataclass(value) else build(entity, value)
    if _is_tuple(f.type):
        return tuple(value)
    kind = f.metadata.get("kafka_type")
    if kind == "error_code":
        return ErrorCode(value)
    if kind in ("timedelta_i32", "timedelta_i64"):
        return datetime.timedelta(milliseconds=value)
    if kind == "datetime_i64":
        return None if value is None or value < 0 else datetime.datetime.fromtimestamp(value / 1000, _UTC)
    if kind == "uuid":
        return value if isinstance(value, uuid.UUID) or value is None else uuid.UUID(value)
    return value


def _kafka_default(f: dataclasses.Field):
    if _is_tuple(f.type):
        return ()
    entity = _entity_of(f.type)
    if entity is not None:
        return build(entity, {})
    kind = f.metadata.get("kafka_type", "")
    if kind == "error_code":
        return ErrorCode(0)
    if kind.startswith("timedelta"):
        return datetime.timedelta(0)
    if kind == "string":
        return ""
    if kind == "bool":
        return False
    if kind == "uuid":
        return ZERO_UUID
    if kind in ("records", "bytes", "datetime_i64"):
        return None
    return 0


def millis(value) -> int:
    """A request's timedelta field (timeout, max_wait) in milliseconds."""
    return int(value.total_seconds() * 1000) if isinstance(value, datetime.timedelta) else int(value)


def error_code_of(value) -> int:
    return int(value)
