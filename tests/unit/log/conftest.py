"""Fixtures for the storage tests: batches, log folders, logs that get closed."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from broker.log import LogConfig, PartitionLog
from client.record_batch import build_batch, stamp


def batch(values: int = 1, value_size: int = 10, ts: int = 1_000, tag: int = 0) -> bytes:
    """A batch of ``values`` records whose bytes differ by ``tag`` (so reads can be told apart)."""
    return build_batch([(b"k%d" % tag, bytes([tag % 256]) * value_size, ts + i) for i in range(values)])


def stamped(raw: bytes, base_offset: int, epoch: int) -> bytes:
    """``raw`` as the log stores it after a leader append."""
    buf = bytearray(raw)
    stamp(buf, 0, base_offset, epoch)
    return bytes(buf)


@pytest.fixture
def make_batch() -> Callable[..., bytes]:
    return batch


@pytest.fixture
def make_stamped() -> Callable[[bytes, int, int], bytes]:
    return stamped


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "orders-0"


@pytest.fixture
def open_log(log_dir: Path) -> Iterator[Callable[..., PartitionLog]]:
    """open_log(config=None, now_ms=0, directory=log_dir): logs still open at the end are
    closed uncleanly (like a killed process), so file handles never leak between tests."""
    opened: list[PartitionLog] = []

    def _open(config: LogConfig | None = None, now_ms: int = 0, directory: Path | None = None) -> PartitionLog:
        plog = PartitionLog.open(directory or log_dir, config or LogConfig(), now_ms)
        opened.append(plog)
        return plog

    yield _open
    for plog in opened:
        plog.close(clean=False)
