"""The client's metadata cache: leader hints (KIP-951) never go back in epoch (KIP-320)."""

from client.errors import LeaderHintInfo
from client.metadata import ClusterMetadata
from client.protocol.v1 import kafka_pb2


def _response(leader: int, epoch: int, topic: str = "t", partitions: int = 2,
              error_code: int = 0) -> kafka_pb2.MetadataResponse:
    return kafka_pb2.MetadataResponse(
        cluster_id="c1", controller_id=1,
        brokers=[kafka_pb2.BrokerMetadata(broker_id=b, host="127.0.0.1", port=9092 + 10000 * (b - 1), alive=True)
                 for b in (1, 2, 3)],
        topics=[kafka_pb2.TopicMetadata(
            name=topic, error_code=error_code, configs={"retention.ms": "1000"},
            partitions=[] if error_code else [
                kafka_pb2.PartitionMetadata(partition=p, leader_id=leader, leader_epoch=epoch,
                                            replicas=[1, 2, 3], isr=[1, 2, 3])
                for p in range(partitions)])])


def _meta(leader: int = 1, epoch: int = 5) -> ClusterMetadata:
    m = ClusterMetadata()
    m.update(_response(leader, epoch))
    return m


def test_update_fills_brokers_topics_and_partitions():
    m = _meta()
    assert m.cluster_id == "c1" and m.controller_id == 1
    assert m.broker_address(2) == ("127.0.0.1", 19092)
    p = m.partition("t", 1)
    assert (p.leader, p.leader_epoch, p.replicas, p.isr) == (1, 5, (1, 2, 3), (1, 2, 3))
    assert m.topics["t"].configs == {"retention.ms": "1000"}
    assert m.partition("t", 2) is None and m.partition("nope", 0) is None
    assert m.age_s() < 60


def test_hint_with_newer_epoch_moves_the_leader():
    m = _meta(leader=1, epoch=5)
    assert m.apply_leader_hint("t", 0, LeaderHintInfo(2, 6, "127.0.0.1", 19092))
    assert (m.partition("t", 0).leader, m.partition("t", 0).leader_epoch) == (2, 6)
    assert m.partition("t", 1).leader == 1  # other partitions untouched


def test_hint_with_the_same_epoch_applies():
    m = _meta(leader=1, epoch=5)
    assert m.apply_leader_hint("t", 0, LeaderHintInfo(3, 5, "127.0.0.1", 29092))
    assert m.partition("t", 0).leader == 3


def test_hint_with_an_older_epoch_is_ignored():
    m = _meta(leader=1, epoch=5)
    assert not m.apply_leader_hint("t", 0, LeaderHintInfo(2, 4, "127.0.0.1", 19092))
    assert (m.partition("t", 0).leader, m.partition("t", 0).leader_epoch) == (1, 5)


def test_hint_without_leader_or_for_unknown_partition_is_ignored():
    m = _meta()
    assert not m.apply_leader_hint("t", 0, LeaderHintInfo(-1, 9, "", 0))
    assert not m.apply_leader_hint("t", 7, LeaderHintInfo(2, 9, "h", 1))
    assert not m.apply_leader_hint("other", 0, LeaderHintInfo(2, 9, "h", 1))
    assert m.partition("t", 0).leader == 1


def test_hint_for_an_unknown_broker_adds_its_address():
    m = _meta()
    assert m.apply_leader_hint("t", 0, LeaderHintInfo(4, 6, "10.0.0.4", 39092))
    assert m.broker_address(4) == ("10.0.0.4", 39092)


def test_update_with_an_older_epoch_does_not_undo_a_newer_hint():
    m = _meta(leader=1, epoch=5)
    m.apply_leader_hint("t", 0, LeaderHintInfo(2, 6, "127.0.0.1", 19092))
    m.update(_response(leader=1, epoch=5))  # a lagging broker's answer
    assert (m.partition("t", 0).leader, m.partition("t", 0).leader_epoch) == (2, 6)
    assert m.partition("t", 1).leader == 1


def test_update_with_a_newer_epoch_replaces_a_hint():
    m = _meta(leader=1, epoch=5)
    m.apply_leader_hint("t", 0, LeaderHintInfo(2, 6, "127.0.0.1", 19092))
    m.update(_response(leader=3, epoch=7))
    assert (m.partition("t", 0).leader, m.partition("t", 0).leader_epoch) == (3, 7)


def test_update_never_goes_back_to_an_older_leader_epoch():
    m = _meta(leader=2, epoch=8)
    m.update(_response(leader=1, epoch=3))
    assert (m.partition("t", 0).leader, m.partition("t", 0).leader_epoch) == (2, 8)


def test_topic_error_removes_the_topic_and_marks_it_unknown():
    m = _meta()
    m.update(_response(leader=1, epoch=5, error_code=3))
    assert "t" not in m.topics and "t" in m.unknown_topics
    m.update(_response(leader=1, epoch=5))
    assert "t" in m.topics and "t" not in m.unknown_topics


def test_metadata_older_than_max_age_is_refreshed_before_use():
    """metadata.max.age.ms: leader_for refreshes a cache that is too old, even without an error."""
    import time

    from client.client import KafkaClient

    class Counting(KafkaClient):  # counts refreshes instead of calling a broker
        refreshes = 0

        def refresh_metadata(self, topics=None):
            self.refreshes += 1
            self._refreshed_at = time.monotonic()

    client = Counting(":1", metadata_max_age_ms=60_000)
    client.metadata.update(_response(leader=1, epoch=5))
    client._refreshed_at = time.monotonic()
    client.leader_for("t", 0)
    assert client.refreshes == 0                      # fresh: used as it is
    client._refreshed_at -= 61
    client.leader_for("t", 0)
    assert client.refreshes == 1                      # older than the max age: refreshed first
