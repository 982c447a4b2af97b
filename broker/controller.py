"""The controller: decides topic creation and deletion and writes the records.

Decisions (validation, replica placement) happen here, outside apply, so that
the records carry their outcome and apply stays deterministic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import structlog

from broker.config import BrokerSettings
from broker.metadata.image import MetadataImage
from broker.metadata.placement import assign_replicas
from broker.metadata.records import CreateTopic, DeleteTopic
from broker.metadata import topic_rules
from client.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TopicRequest:
    name: str
    num_partitions: int        # -1: the cluster default (num.partitions)
    replication_factor: int    # -1: the cluster default (default.replication.factor)
    configs: dict[str, str]


class Controller:
    def __init__(self, store, settings: BrokerSettings, rng: random.Random | None = None):
        self._store = store
        self._settings = settings
        self._rng = rng or random.Random()

    @property
    def image(self) -> MetadataImage:
        return self._store.image

    def create_topic(self, req: TopicRequest, validate_only: bool = False) -> KafkaError | None:
        record_or_error = self._plan_create(req)
        if isinstance(record_or_error, KafkaError):
            return record_or_error
        if not validate_only:
            self._store.submit(record_or_error)
            log.info("topic_created", topic=req.name, partitions=len(record_or_error.assignments),
                     assignments=[list(r) for r in record_or_error.assignments])
        return None

    def _plan_create(self, req: TopicRequest) -> CreateTopic | KafkaError:
        image = self.image
        partitions = self._settings.num_partitions if req.num_partitions == -1 else req.num_partitions
        rf = self._settings.default_replication_factor if req.replication_factor == -1 else req.replication_factor
        live = image.live_broker_ids()
        error = (topic_rules.topic_name_error(req.name)
                 or (TopicAlreadyExistsError(f"Topic '{req.name}' already exists.")
                     if req.name in image.topics else None)
                 or topic_rules.partition_count_error(partitions)
                 or topic_rules.replication_factor_error(rf, len(live))
                 or topic_rules.topic_config_error(req.configs))
        if error is not None:
            return error
        n = len(live)
        assignments = assign_replicas(partitions, rf, live, self._rng.randrange(n),
                                      self._rng.randrange(max(n - 1, 1)))
        return CreateTopic(req.name, assignments, dict(req.configs))

    def delete_topic(self, name: str) -> KafkaError | None:
        if name not in self.image.topics:
            return UnknownTopicOrPartitionError(f"Topic '{name}' does not exist.")
        self._store.submit(DeleteTopic(name))
        log.info("topic_deleted", topic=name)
        return None
