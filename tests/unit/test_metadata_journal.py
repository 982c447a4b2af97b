"""The metadata log kept for readers (broker/metadata/journal.py) and told as sentences (client/metadata_log.py)."""

from __future__ import annotations

import json
import threading

from broker.metadata.journal import MetadataEntry, MetadataJournal
from client.metadata_log import MetadataStory
from client.protocol.v1 import kafka_pb2


def entry(offset: int) -> MetadataEntry:
    return MetadataEntry(offset, 1, 1_700_000_000_000 + offset, [{"type": "UnfenceBroker", "broker_id": 1,
                                                                 "broker_epoch": offset}])


def test_the_journal_reads_from_an_offset_keeps_a_bounded_tail_and_restarts_after_a_snapshot():
    j = MetadataJournal(max_entries=3)
    for o in range(5):
        j.append(entry(o))
    assert j.first_offset == 2                                    # bounded: the oldest two are gone
    got, nxt = j.read(0, 10)
    assert [e.offset for e in got] == [2, 3, 4] and nxt == 5      # asked for 0: from the oldest kept
    got, nxt = j.read(4, 10)
    assert [e.offset for e in got] == [4] and nxt == 5
    assert j.read(5, 10) == ([], 5)
    j.append(entry(1))                                            # a snapshot took the image back: start over
    assert [e.offset for e in j.read(0, 10)[0]] == [1]


def test_a_reader_waits_for_the_next_entry():
    j = MetadataJournal()
    j.append(entry(0))
    assert not j.wait_beyond(0, 0.05)
    threading.Timer(0.05, lambda: j.append(entry(1))).start()
    assert j.wait_beyond(0, 5.0)


def pb(offset: int, *records: dict, applied: bool = True) -> kafka_pb2.MetadataLogEntry:
    return kafka_pb2.MetadataLogEntry(offset=offset, term=2, committed_ms=1_700_000_000_123,
                                      records=[json.dumps(r) for r in records], applied=applied, reason="stale")


def test_the_story_remembers_leaders_so_an_election_reads_old_to_new():
    story = MetadataStory()
    create = {"type": "CreateTopic", "name": "t", "topic_id": "x", "assignments": [[1, 2, 3], [2, 3, 1]], "configs": {}}
    assert story.line(pb(3, create)).endswith("topic t created: 2 partitions, replicas [[1, 2, 3], [2, 3, 1]]")
    fence = {"type": "FenceBroker", "broker_id": 1, "broker_epoch": 0}
    elect = {"type": "ChangePartition", "topic": "t", "topic_id": "x", "partition": 0, "partition_epoch": 0,
             "leader": 2, "isr": [2, 3]}
    shrink = {**elect, "partition": 1, "leader": 2}
    line = story.line(pb(7, fence, elect, shrink))
    assert line.split(maxsplit=4)[:3] == ["7", "term", "2"]
    assert line.endswith("broker 1 fenced (broker epoch 0); t-0: leader 1 -> 2, isr [2, 3]; "
                         "t-1: isr [2, 3] (leader 2)")
    assert MetadataStory().line(pb(9, elect)).endswith("t-0: leader ? -> 2, isr [2, 3]")   # joined late
    assert story.line(pb(8, fence, applied=False)).endswith("refused: stale")
    why = {**fence, "reason": "connection_lost"}          # a log written since the record says why
    assert story.line(pb(10, why)).endswith("broker 1 fenced: connection lost (broker epoch 0)")
