"""raftka's client library: Admin, Producer, Consumer, and Kafka's errors as exceptions."""

from client.admin import Admin
from client.consumer import Consumer, ConsumerRecord
from client.producer import Producer, RecordMetadata
from client import errors

__all__ = ["Admin", "Producer", "Consumer", "ConsumerRecord", "RecordMetadata", "errors"]
