"""The sparse offset index: entries, lookups, truncation, sanity checks, sparseness in a log."""

import struct

from broker.log import LogConfig
from broker.log.offset_index import OffsetIndex
from client.record_batch import iter_batches, parse_header


def test_lookup_finds_the_last_entry_at_or_below(tmp_path):
    index = OffsetIndex.open(tmp_path / "00000000000000000100.index", 100)
    for offset, position in [(100, 0), (110, 500), (125, 1000)]:
        index.append(offset, position)
    assert index.lookup(99) == (100, 0)
    assert index.lookup(100) == (100, 0)
    assert index.lookup(124) == (110, 500)
    assert index.lookup(125) == (125, 1000)
    assert index.lookup(10**9) == (125, 1000)
    # persisted as it grows: relative offsets, big-endian int32 pairs
    raw = (tmp_path / "00000000000000000100.index").read_bytes()
    assert list(struct.iter_unpack(">ii", raw)) == [(0, 0), (10, 500), (25, 1000)]
    index.close()


def test_truncate_drops_entries_at_or_above(tmp_path):
    path = tmp_path / "00000000000000000000.index"
    index = OffsetIndex.open(path, 0)
    for offset, position in [(0, 0), (10, 100), (20, 200)]:
        index.append(offset, position)
    index.truncate_to(10)
    assert index.entries == [(0, 0)]
    assert path.stat().st_size == 8
    index.close()


def test_load_accepts_a_sane_file_and_rejects_insane_ones(tmp_path):
    path = tmp_path / "00000000000000000000.index"
    index = OffsetIndex.open(path, 0)
    for offset, position in [(0, 0), (10, 100), (20, 200)]:
        index.append(offset, position)
    index.close()

    def load(raw: bytes, segment_size: int = 300) -> bool:
        path.write_bytes(raw)
        idx = OffsetIndex.open(path, 0)
        try:
            return idx.load(segment_size)
        finally:
            idx.close()

    good = struct.pack(">iiiiii", 0, 0, 10, 100, 20, 200)
    assert load(good)
    assert not load(good[:-3])                                        # not a multiple of 8
    assert not load(struct.pack(">iiii", 0, 0, 10, 100) + struct.pack(">ii", 5, 200))  # offsets go back
    assert not load(struct.pack(">iiii", 0, 0, 10, 100) + struct.pack(">ii", 20, 50))  # positions go back
    assert not load(good, segment_size=150)                           # position past the segment end
    assert not load(struct.pack(">ii", 3, 0))                         # first entry is not the base
    assert not load(b"", segment_size=100)                            # data but no entry


def test_index_is_sparse_and_points_at_batches(open_log, make_batch):
    plog = open_log(LogConfig(index_interval_bytes=1024))
    sizes = 0
    for i in range(200):
        sizes += plog.append_as_leader(make_batch(values=2, value_size=40, tag=i), 0, 0).size
    batch_size = sizes // 200
    raw = (plog.directory / "00000000000000000000.index").read_bytes()
    entries = list(struct.iter_unpack(">ii", raw))
    # one entry per >= 1024 bytes, plus the first batch
    assert 1 + sizes // (1024 + batch_size) <= len(entries) <= 1 + sizes // 1024
    assert len(entries) < 200 // 5
    log_bytes = (plog.directory / "00000000000000000000.log").read_bytes()
    for relative_offset, position in entries:
        assert parse_header(log_bytes, position).base_offset == relative_offset
    # every offset reads from its own batch
    for offset in range(0, 400, 7):
        got = next(iter_batches(plog.read(offset, 1)))[1]
        assert got.base_offset <= offset <= got.last_offset
