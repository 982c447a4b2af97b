"""What DescribeConfigs answers: a topic's or a broker's configs, each with where its value comes from.

Kafka's ConfigHelper, for the configs raftka has. A topic config is the topic's own value
(TOPIC_CONFIG), else the broker setting that gives its default (STATIC_BROKER_CONFIG when
cluster.toml sets it, DEFAULT_CONFIG when it is raftka's default). Broker settings are read-only:
raftka has no dynamic broker configs. Pure: the request layer passes the image's topic configs and
the broker's settings in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from broker.config import BrokerSettings, setting_names, setting_value

# Kafka's ConfigSource and ConfigType values (DescribeConfigsResponse.json).
TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG = 1, 4, 5
BOOLEAN, STRING, INT, LONG, LIST = 1, 2, 3, 5, 7


@dataclass(frozen=True)
class ConfigSynonym:
    name: str
    value: str | None
    source: int


@dataclass(frozen=True)
class ConfigEntry:
    name: str
    value: str | None
    source: int
    read_only: bool
    config_type: int
    synonyms: tuple[ConfigSynonym, ...] = ()    # Kafka's order: the one in force first


# topic config -> (the broker setting that gives its default, its Kafka type, the value when no
# broker setting exists for it in raftka)
TOPIC_CONFIG_DEFAULTS: dict[str, tuple[str, int, str | None]] = {
    "cleanup.policy": ("log.cleanup.policy", LIST, "delete"),
    "flush.messages": ("log.flush.interval.messages", LONG, None),
    "index.interval.bytes": ("log.index.interval.bytes", INT, None),
    "max.message.bytes": ("message.max.bytes", INT, None),
    "min.insync.replicas": ("min.insync.replicas", INT, None),
    "retention.bytes": ("log.retention.bytes", LONG, None),
    "retention.ms": ("log.retention.ms", LONG, None),
    "segment.bytes": ("log.segment.bytes", INT, None),
    "segment.ms": ("log.roll.ms", LONG, None),
    "unclean.leader.election.enable": ("unclean.leader.election.enable", BOOLEAN, "false"),
}


def _broker_synonym(key: str, settings: BrokerSettings, fixed: str | None) -> ConfigSynonym:
    if key not in setting_names():
        return ConfigSynonym(key, fixed, DEFAULT_CONFIG)
    source = STATIC_BROKER_CONFIG if key in settings.set_in_file else DEFAULT_CONFIG
    return ConfigSynonym(key, str(setting_value(settings, key)), source)


def topic_configs(topic: Mapping[str, str], settings: BrokerSettings, keys: list[str] | None) -> list[ConfigEntry]:
    """Every topic config raftka knows (or those of ``keys``), in force for a topic whose own are ``topic``."""
    out = []
    for name, (broker_key, kind, fixed) in TOPIC_CONFIG_DEFAULTS.items():
        if keys is not None and name not in keys:
            continue
        synonyms = ([ConfigSynonym(name, topic[name], TOPIC_CONFIG)] if name in topic else [])
        synonyms.append(_broker_synonym(broker_key, settings, fixed))
        first = synonyms[0]
        out.append(ConfigEntry(name, first.value, first.source, False, kind, tuple(synonyms)))
    return out


def broker_configs(settings: BrokerSettings, rack: str | None, keys: list[str] | None) -> list[ConfigEntry]:
    """This broker's settings (cluster.toml's [config], in Kafka's names) and its broker.rack."""
    out = []
    for key in setting_names():
        if keys is None or key in keys:
            syn = _broker_synonym(key, settings, None)
            out.append(ConfigEntry(key, syn.value, syn.source, True, LONG if key.endswith(".ms") else INT, (syn,)))
    if rack is not None and (keys is None or "broker.rack" in keys):
        out.append(ConfigEntry("broker.rack", rack, STATIC_BROKER_CONFIG, True, STRING,
                               (ConfigSynonym("broker.rack", rack, STATIC_BROKER_CONFIG),)))
    return out
