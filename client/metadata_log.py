"""The metadata log, read and told: `kclient metadata-log` (kafka-metadata-shell's log, as sentences).

    story = MetadataStory()
    for entry in read_metadata_log(client, address, from_offset=0, follow=False):
        print(story.line(entry))       # "     7  term 2  11:20:41.517  email.send-2: leader 1 -> 3, isr [3, 2]"

Each entry is one committed batch of records; a line tells each record. The story remembers each
partition's leader from the records it has seen, so a leader change reads "leader 1 -> 3" (from
offset 0 it knows every one; from a later offset the first change of a partition says "leader ? -> 3").
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from client.protocol.v1 import kafka_pb2


class MetadataStory:
    def __init__(self) -> None:
        self.leaders: dict[tuple[str, int], int] = {}
        self.partitions: dict[str, int] = {}

    def line(self, entry: kafka_pb2.MetadataLogEntry) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(entry.committed_ms / 1000))
        head = f"{entry.offset:>6}  term {entry.term}  {when}.{entry.committed_ms % 1000:03d}  "
        told = [self._tell(json.loads(r)) for r in entry.records]
        if not entry.applied:
            return head + f"refused: {entry.reason}"
        return head + ("; ".join(told) if told else "(no records: a new controller's first entry)")

    def _tell(self, r: dict) -> str:
        kind = r.get("type")
        if kind == "RegisterBroker":
            return f"broker {r['broker_id']} registered at {r['host']}:{r['port']} " \
                   f"(incarnation {str(r['incarnation_id'])[:8]})"
        if kind == "FenceBroker":
            why = f": {r['reason'].replace('_', ' ')}" if r.get("reason") else ""
            return f"broker {r['broker_id']} fenced{why} (broker epoch {r['broker_epoch']})"
        if kind == "UnfenceBroker":
            return f"broker {r['broker_id']} unfenced (broker epoch {r['broker_epoch']})"
        if kind in ("CreateTopic", "CreatePartitions"):
            return self._created(r)
        if kind == "DeleteTopic":
            self.partitions.pop(r["name"], None)
            return f"topic {r['name']} deleted"
        if kind == "ChangePartition":
            return self._changed(r)
        if kind == "AllocateProducerIds":
            return f"a block of {r['count']} producer ids for broker {r['broker_id']}"
        return f"{kind} " + " ".join(f"{k}={v}" for k, v in r.items() if k != "type")

    def _created(self, r: dict) -> str:
        topic = r.get("name") or r.get("topic")
        start = r.get("start_partition", 0)
        for i, replicas in enumerate(r["assignments"]):
            if replicas:
                self.leaders[(topic, start + i)] = replicas[0]
        self.partitions[topic] = start + len(r["assignments"])
        if r["type"] == "CreatePartitions":
            return f"topic {topic} grown to {self.partitions[topic]} partitions, new replicas {r['assignments']}"
        return f"topic {topic} created: {len(r['assignments'])} partitions, replicas {r['assignments']}"

    def _changed(self, r: dict) -> str:
        tp = (r["topic"], r["partition"])
        before = self.leaders.get(tp)
        self.leaders[tp] = r["leader"]
        name = f"{r['topic']}-{r['partition']}"
        leader = "none" if r["leader"] < 0 else str(r["leader"])
        if before == r["leader"]:
            return f"{name}: isr {list(r['isr'])} (leader {leader})"
        return f"{name}: leader {'?' if before is None else before} -> {leader}, isr {list(r['isr'])}"


def read_metadata_log(stub, from_offset: int, follow: bool,
                      timeout_s: float | None = None) -> Iterator[kafka_pb2.MetadataLogEntry]:
    """The entries a broker streams back (``stub``: its Kafka service stub)."""
    request = kafka_pb2.MetadataLogRequest(from_offset=from_offset, follow=follow)
    call = stub.MetadataLog(request, timeout=timeout_s)
    try:
        yield from call
    finally:
        # An interrupted (Ctrl-C) or abandoned read ends its stream here, before anyone closes the channel:
        # closing a channel with a call still in flight after a signal can hang (grpc/grpc#19973); this hung
        # `kclient metadata-log --follow` on SIGINT once in CI. A finished call ignores it.
        call.cancel()
