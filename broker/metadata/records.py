"""Metadata records: the commands that change the cluster image.

Like KRaft's metadata log, the image is the result of applying these records
in order. They are plain dataclasses of builtin types so that any log (the
local journal now, the Raft quorum later) can carry them as dicts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class RegisterBroker:
    broker_id: int
    host: str
    port: int


@dataclass(frozen=True)
class CreateTopic:
    name: str
    # assignments[p] = the replica list of partition p; the first replica is
    # the preferred leader. Decided by the controller (placement.py), never in apply.
    assignments: tuple[tuple[int, ...], ...]
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeleteTopic:
    name: str


MetadataRecord = RegisterBroker | CreateTopic | DeleteTopic
_TYPES: dict[str, type] = {cls.__name__: cls for cls in (RegisterBroker, CreateTopic, DeleteTopic)}


def record_to_dict(record: MetadataRecord) -> dict[str, Any]:
    return {"type": type(record).__name__, **asdict(record)}


def record_from_dict(data: dict[str, Any]) -> MetadataRecord:
    data = dict(data)
    cls = _TYPES[data.pop("type")]
    if cls is CreateTopic:
        data["assignments"] = tuple(tuple(r) for r in data["assignments"])
    return cls(**data)
