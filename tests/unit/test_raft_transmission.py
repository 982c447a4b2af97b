"""A big Raft entry sent in chunks is reassembled whole (quorum.premature_finish).

pysyncobj 0.3.17's leader splits an entry of appendEntriesBatchSizeBytes or more into chunks and marks
one 'finish' by the length of the command, not of the pickled entry (SyncObj.__sendAppendEntries). The
chunks below are cut and marked by that same rule, from a real pysyncobj entry.
"""

from __future__ import annotations

from pysyncobj import pickle as pysyncobj_pickle

from broker.metadata.quorum import premature_finish

BATCH = 2 ** 16   # pysyncobj's default appendEntriesBatchSizeBytes


def pysyncobj_chunks(command: bytes, index: int = 7, term: int = 2) -> list[tuple[str, bytes]]:
    """(transmission, data) as the leader sends them."""
    entry = pysyncobj_pickle.dumps((command, index, term))
    out = []
    for pos in range(0, len(entry), BATCH):
        kind = "start" if pos == 0 else "finish" if pos + BATCH >= len(command) else "process"
        out.append((kind, entry[pos:pos + BATCH]))
    return out


def reassemble(chunks: list[tuple[str, bytes]]) -> list:
    """What the follower unpickles, with the correction applied: one entry per real 'finish'."""
    entries, received = [], ""
    for kind, data in chunks:
        if kind == "finish" and premature_finish(received, data):
            kind = "process"
        if kind == "start":
            received = data
        elif kind == "process":
            received += data
        else:
            entries.append(pysyncobj_pickle.loads(received + data))
            received = ""
    return entries


def test_an_entry_whose_pickle_outgrows_its_command_has_a_premature_finish_that_is_treated_as_process():
    command = bytes(range(128, 256)) * 600          # 76,800 bytes, every one above 0x7f: twice as long pickled
    chunks = pysyncobj_chunks(command)
    assert [k for k, _ in chunks] == ["start", "finish", "finish"]   # the bug: two chunks say 'finish'
    assert reassemble(chunks) == [(command, 7, 2)]


def test_a_command_just_a_multiple_of_the_chunk_long_has_one_too():
    command = b"x" * (3 * BATCH)                    # its pickle's last few bytes spill into a 4th chunk
    assert [k for k, _ in pysyncobj_chunks(command)] == ["start", "process", "finish", "finish"]
    assert reassemble(pysyncobj_chunks(command)) == [(command, 7, 2)]


def test_a_well_marked_entry_is_unchanged_and_a_chunk_without_start_is_left_to_pysyncobj():
    command = b"x" * (3 * BATCH - 1000)
    chunks = pysyncobj_chunks(command)
    assert [k for k, _ in chunks] == ["start", "process", "finish"]
    assert reassemble(chunks) == [(command, 7, 2)]
    assert not premature_finish("", b"anything")
