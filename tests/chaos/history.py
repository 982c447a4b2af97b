"""The history of a chaos run: one JSON object per line, its "f" field names the operation.

Jepsen's vocabulary: a send is ``ok`` (acknowledged, offset known), ``fail`` (definitely not
written) or ``info`` (unknown: a timeout or a lost connection may or may not have written it).
Only ``ok`` sends must survive; the checker (checker.py) reads the history back from here.

Readers skip an unknown "f" so that a newer harness can add operations without breaking an
older checker; a line that is not a well-formed operation raises ValueError naming its line.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Callable, ClassVar, Iterable, Literal, Union

Record = tuple[int, str]                   # (offset, value) as the partition holds it
BatchEpoch = tuple[int, int, int, int]     # (base offset, last offset, partition leader epoch, CRC) of one batch
Outcome = Literal["ok", "fail", "info"]
Phase = Literal["start", "heal"]


@dataclass(slots=True)
class Send:
    """One producer send and its acknowledgement (offset) if it got one."""
    KIND: ClassVar[str] = "send"
    producer: str
    value: str                             # unique per run: "<producer>-<send index>"
    key: str | None
    topic: str
    partition: int
    outcome: Outcome
    offset: int | None
    invoked: float                         # monotonic seconds since the run started
    completed: float
    error: str | None = None

    @property
    def index(self) -> int:
        """The producer's send index, the integer after the last dash of the value."""
        try:
            return int(self.value.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            raise ValueError(f"send value {self.value!r} does not end in '-<send index>'") from None


@dataclass(slots=True)
class Poll:
    """Records one consumer fetched from one partition, in the order it received them."""
    KIND: ClassVar[str] = "poll"
    consumer: str
    session: int                           # a new session starts over from a position of its choice
    topic: str
    partition: int
    records: list[Record]
    time: float


@dataclass(slots=True)
class ConsumerReset:
    """A consumer's first record on a partition was not at the offset after its last one: the workload
    starts a new session there (Kafka's words: the position was reset, e.g. auto.offset.reset)."""
    KIND: ClassVar[str] = "consumer-reset"
    consumer: str
    partition: int
    time: float
    from_offset: int = field(metadata={"json": "from"})    # the offset the session expected next
    to_offset: int = field(metadata={"json": "to"})        # the offset the consumer got instead
    reason: str | None = None              # "seek": the workload moved it; None: the consumer did on its own
    session: int | None = None             # the session it starts; None: the consumer's next one
    topic: str | None = None               # None: the consumer's one topic


@dataclass(slots=True)
class ConsumerError:
    """A consumer failed for good: the workload closes it and starts a new session with a new consumer
    that has no position (it starts at the log start: auto.offset.reset=earliest)."""
    KIND: ClassVar[str] = "consumer-error"
    consumer: str
    time: float
    error: str
    session: int | None = None             # the session it starts; None: the consumer's next one


SessionStart = Union[ConsumerReset, ConsumerError]


@dataclass(slots=True)
class FinalRead:
    """After healing: the whole partition read through its leader, log start up to the HW."""
    KIND: ClassVar[str] = "final"
    topic: str
    partition: int
    records: list[Record]
    high_watermark: int
    log_start_offset: int = 0


@dataclass(slots=True)
class ReplicaDump:
    """After healing: one broker's own copy of a partition, everything up to its LEO."""
    KIND: ClassVar[str] = "replica"
    broker: int
    topic: str
    partition: int
    records: list[Record]
    high_watermark: int                    # -1: the broker did not answer
    log_end_offset: int
    # Each batch header of the segment files, in file order (None: a harness that does not dump them,
    # and the checker cannot tell which leader epoch wrote which offset)
    batches: list[BatchEpoch] | None = None


@dataclass(slots=True)
class PartitionMetadata:
    """One partition in a metadata sample (Kafka's PartitionRegistration)."""
    topic: str
    partition: int
    leader: int                            # -1: offline
    leader_epoch: int
    partition_epoch: int
    isr: tuple[int, ...]
    replicas: tuple[int, ...]


@dataclass(slots=True)
class MetadataSample:
    """The committed metadata as one broker reported it at ``time``."""
    KIND: ClassVar[str] = "metadata"
    time: float
    controller: int | None
    partitions: list[PartitionMetadata]
    fenced: tuple[int, ...] = ()


@dataclass(slots=True)
class NemesisEvent:
    """A fault starting or being healed."""
    KIND: ClassVar[str] = "nemesis"
    kind: str                              # e.g. "kill-leader", "pause-follower"
    targets: tuple[int, ...]               # broker ids
    phase: Phase
    time: float
    detail: str | None = None


@dataclass(slots=True)
class Healed:
    """After the final heal: how long until every partition was led with a full ISR again."""
    KIND: ClassVar[str] = "healed"
    time: float
    recovery_s: float | None               # None: not within bound_s
    bound_s: float


Op = Union[Send, Poll, ConsumerReset, ConsumerError, FinalRead, ReplicaDump, MetadataSample, NemesisEvent, Healed]

# "f" -> (operation class, the History list that holds it)
_KINDS: dict[str, tuple[type, str]] = {
    Send.KIND: (Send, "sends"),
    Poll.KIND: (Poll, "polls"),
    # one list for both, so that the order of a consumer's session starts survives the reading
    ConsumerReset.KIND: (ConsumerReset, "session_starts"),
    ConsumerError.KIND: (ConsumerError, "session_starts"),
    FinalRead.KIND: (FinalRead, "finals"),
    ReplicaDump.KIND: (ReplicaDump, "replicas"),
    MetadataSample.KIND: (MetadataSample, "metadata"),
    NemesisEvent.KIND: (NemesisEvent, "nemeses"),
    Healed.KIND: (Healed, "healed"),
}


@dataclass
class History:
    """Every operation of a run, by kind, each list in the order it was written."""
    sends: list[Send] = field(default_factory=list)
    polls: list[Poll] = field(default_factory=list)
    session_starts: list[SessionStart] = field(default_factory=list)
    finals: list[FinalRead] = field(default_factory=list)
    replicas: list[ReplicaDump] = field(default_factory=list)
    metadata: list[MetadataSample] = field(default_factory=list)
    nemeses: list[NemesisEvent] = field(default_factory=list)
    healed: list[Healed] = field(default_factory=list)

    def add(self, op: Op) -> None:
        getattr(self, _KINDS[op.KIND][1]).append(op)

    @classmethod
    def of(cls, ops: Iterable[Op | dict[str, Any]]) -> History:
        """A History of operations, or of "f" dicts as the harness writes them (checked like lines)."""
        history = cls()
        for op in ops:
            parsed = parse_op(op) if isinstance(op, dict) else op
            if parsed is not None:
                history.add(parsed)
        return history


# ---- writing ---------------------------------------------------------------------------

def to_json(op: Op) -> dict[str, Any]:
    """The line's object: "f" first, then the fields (tuples become JSON arrays when dumped)."""
    return {"f": op.KIND, **_fields(op)}


def _fields(obj: Any) -> dict[str, Any]:
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        # the PartitionMetadata of a sample are the one nesting of the format
        out[_key(f)] = [_fields(p) for p in value] if f.type == "list[PartitionMetadata]" else value
    return out


def _key(f: Any) -> str:
    """The field's name in a line: its own, unless that is a Python keyword ("from")."""
    return f.metadata.get("json", f.name)


def append(fh: IO[str], op: Op | dict[str, Any]) -> None:
    """Write one operation (or a ready "f" dict) as one line. Flushing is the caller's choice."""
    obj = op if isinstance(op, dict) else to_json(op)
    fh.write(json.dumps(obj, separators=(",", ":")) + "\n")


def write_jsonl(path: str | Path, ops: Iterable[Op | dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for op in ops:
            append(fh, op)


# ---- reading ---------------------------------------------------------------------------

def read_history(path: str | Path) -> History:
    with open(path, encoding="utf-8") as fh:
        return parse_lines(fh)


def parse_lines(lines: Iterable[str]) -> History:
    """A History from JSONL text; blank lines and unknown "f" values are skipped."""
    history = History()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            op = parse_op(json.loads(line))
        except (ValueError, TypeError) as e:   # json.JSONDecodeError is a ValueError
            raise ValueError(f"history line {number}: {e}") from None
        if op is not None:
            history.add(op)
    return history


def parse_op(obj: Any) -> Op | None:
    """One decoded line as an operation; None for an "f" this reader does not know."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("f")
    if not isinstance(kind, str):
        raise ValueError('no "f" field naming the operation')
    known = _KINDS.get(kind)
    return None if known is None else _build(known[0], obj)


def _build(cls: type, obj: dict[str, Any]) -> Any:
    """An instance of ``cls`` from ``obj``, each field checked against its annotation."""
    label = getattr(cls, "KIND", cls.__name__)
    args = {}
    for name, key, parse, default in _specs(cls):
        if key in obj:
            try:
                args[name] = parse(obj[key])
            except (ValueError, TypeError) as e:
                raise ValueError(f"{label}.{key}: {e}") from None
        elif default is not MISSING:
            args[name] = default
        else:
            raise ValueError(f'{label}: missing field "{key}"')
    return cls(**args)


def _typed(*types: type) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        # bool is an int to Python, never to the history format
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise TypeError(f"expected {names}, got {repr(value)[:40]}")
        return value
    return parse


def _one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {repr(value)[:40]}")
        return value
    return parse


_int = _typed(int)
_str = _typed(str)
_list = _typed(list, tuple)      # tuples too: History.of takes dicts that never went through JSON


def _records(value: Any) -> list[Record]:
    out = []
    for r in _list(value):
        if not isinstance(r, (list, tuple)) or len(r) != 2:
            raise ValueError(f"a record is [offset, value], got {repr(r)[:40]}")
        out.append((_int(r[0]), _str(r[1])))
    return out


def _batches(value: Any) -> list[BatchEpoch] | None:
    if value is None:
        return None
    out = []
    for b in _list(value):
        if not isinstance(b, (list, tuple)) or len(b) != 4:
            raise ValueError(f"a batch is [base offset, last offset, leader epoch, crc], got {repr(b)[:40]}")
        out.append((_int(b[0]), _int(b[1]), _int(b[2]), _int(b[3])))
    return out


def _ints(value: Any) -> tuple[int, ...]:
    return tuple(_int(v) for v in _list(value))


def _partitions(value: Any) -> list[PartitionMetadata]:
    return [_build(PartitionMetadata, _typed(dict)(p)) for p in _list(value)]


# The parser of each annotation the operations use (annotations are strings: see __future__).
_PARSERS: dict[str, Callable[[Any], Any]] = {
    "str": _str,
    "str | None": _typed(str, type(None)),
    "int": _int,
    "int | None": _typed(int, type(None)),
    "float": _typed(int, float),
    "float | None": _typed(int, float, type(None)),
    "Outcome": _one_of("ok", "fail", "info"),
    "Phase": _one_of("start", "heal"),
    "list[Record]": _records,
    "tuple[int, ...]": _ints,
    "list[PartitionMetadata]": _partitions,
    "list[BatchEpoch] | None": _batches,
}

_SPECS: dict[type, list[tuple[str, str, Callable[[Any], Any], Any]]] = {}


def _specs(cls: type) -> list[tuple[str, str, Callable[[Any], Any], Any]]:
    """(attribute, key in the line, parser, default) of each field."""
    # worked out once per class: a run has hundreds of thousands of lines
    spec = _SPECS.get(cls)
    if spec is None:
        spec = _SPECS[cls] = [(f.name, _key(f), _PARSERS[f.type], f.default) for f in fields(cls)]
    return spec
