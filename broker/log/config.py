"""Per-partition log settings, in Kafka's topic-config names.

A broker has defaults (cluster.toml's ``log.*`` keys); a topic may override any of
them (``segment.bytes``, ``retention.ms``, ...). ``LogConfig.from_topic_config``
folds a topic's overrides into the broker defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Positions in a segment and relative offsets in its index are int32 (as in Kafka),
# so a segment can never be larger than this.
MAX_SEGMENT_BYTES = 2**31 - 1
# Kafka's lower bound for segment.bytes (the smallest legacy record); a batch larger
# than the segment size is refused, so tiny values make a topic unwritable, on purpose.
MIN_SEGMENT_BYTES = 14
UNLIMITED = -1

# Kafka topic-config name -> LogConfig field.
TOPIC_CONFIG_FIELDS: dict[str, str] = {
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "index.interval.bytes": "index_interval_bytes",
    "flush.messages": "flush_interval_messages",
}


@dataclass(frozen=True)
class LogConfig:
    """How one partition log rolls, retains, indexes and fsyncs (Kafka's defaults)."""

    segment_bytes: int = 1073741824           # roll when the active segment would exceed this
    segment_ms: int = 604800000               # roll when the active segment's first batch is this old
    retention_ms: int = 604800000             # delete segments whose newest batch is older; -1 = forever
    retention_bytes: int = UNLIMITED          # delete oldest segments while the log is bigger; -1 = no limit
    index_interval_bytes: int = 4096          # bytes between two sparse index entries
    # fsync policy: -1 = never (rely on the OS page cache and on replication, Kafka's
    # default: a killed process loses nothing the OS already has); N = fsync the active
    # segment every N appended batches (Kafka counts records; raftka counts batches).
    flush_interval_messages: int = UNLIMITED

    def __post_init__(self) -> None:
        _check_range("segment.bytes", self.segment_bytes, MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES)
        _check_range("segment.ms", self.segment_ms, 1, 2**63 - 1)
        _check_range("retention.ms", self.retention_ms, -1, 2**63 - 1)
        _check_range("retention.bytes", self.retention_bytes, -1, 2**63 - 1)
        _check_range("index.interval.bytes", self.index_interval_bytes, 0, 2**31 - 1)
        if self.flush_interval_messages != UNLIMITED:
            _check_range("flush.messages", self.flush_interval_messages, 1, 2**63 - 1)

    @classmethod
    def from_topic_config(cls, configs: dict[str, str], defaults: "LogConfig") -> "LogConfig":
        """``defaults`` overridden by the log settings among a topic's configs.

        Keys that are not log settings (``min.insync.replicas``, ...) are ignored: they
        belong to other layers. Values are strings, as Kafka's topic configs are.
        Raises ValueError naming the key and the bad value.
        """
        overrides: dict[str, int] = {}
        for name, field_name in TOPIC_CONFIG_FIELDS.items():
            if name in configs:
                overrides[field_name] = _parse_int(name, configs[name])
        return dataclasses.replace(defaults, **overrides)


def _parse_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"invalid value {value!r} for {name}: expected an integer")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"invalid value {value!r} for {name}: expected an integer") from None


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"invalid value {value!r} for {name}: expected an integer")
    if not lo <= value <= hi:
        allowed = "-1 or an integer >= 1" if name == "flush.messages" else f"an integer in [{lo}, {hi}]"
        raise ValueError(f"invalid value {value} for {name}: expected {allowed}")
