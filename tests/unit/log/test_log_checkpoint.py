"""Offset checkpoint files: atomic writes, garbage reads as None."""

import pytest

from broker.log.checkpoint import read_offset_checkpoint, write_offset_checkpoint


def test_round_trip_and_overwrite(tmp_path):
    path = tmp_path / "high-watermark-checkpoint"
    write_offset_checkpoint(path, 42)
    assert read_offset_checkpoint(path) == 42
    write_offset_checkpoint(path, 7)
    assert read_offset_checkpoint(path) == 7
    assert path.read_text() == "0\n7\n"
    assert [p.name for p in tmp_path.iterdir()] == ["high-watermark-checkpoint"]  # no temp file left


def test_missing_file_reads_as_none(tmp_path):
    assert read_offset_checkpoint(tmp_path / "nope") is None


@pytest.mark.parametrize("content", [b"", b"0\n", b"0\nabc\n", b"1\n5\n", b"0\n5", b"0\n5\n6\n",
                                     b"\xff\xfe", b"0\n-3\n"])
def test_garbage_reads_as_none(tmp_path, content):
    path = tmp_path / "cp"
    path.write_bytes(content)
    assert read_offset_checkpoint(path) is None
