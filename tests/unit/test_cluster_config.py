"""cluster.toml loading: every mistake is a one-line ConfigError."""

from pathlib import Path

import pytest

from broker.config import SECRET_ENV, BrokerSettings, ConfigError, load_cluster_config

REPO = Path(__file__).resolve().parents[2]
SECRET = 'cluster_secret = "unit-test-secret"\n'    # top-level keys come before the first [[broker]]

GOOD = """
cluster_id = "c1"
cluster_secret = "unit-test-secret"

[[broker]]
id = 1
port = 9092
raft_port = 9093
inter_broker_port = 9095

[[broker]]
id = 2
host = "127.0.0.1"
port = 19092
raft_port = 19093
inter_broker_port = 19095
data_dir = "/abs/broker-2"
"""


@pytest.fixture(autouse=True)
def _no_secret_in_the_environment(monkeypatch):
    """The file alone decides, whatever the shell running the tests exports."""
    monkeypatch.delenv(SECRET_ENV, raising=False)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _broker(i: int, port: int | None = None, raft: int | None = None, extra: str = "",
            inter_broker: int | None = -1) -> str:
    """A [[broker]] table; its inter_broker_port is 30000 + id unless given (None: left out)."""
    lines = ["[[broker]]", f"id = {i}"]
    if port is not None:
        lines.append(f"port = {port}")
    if raft is not None:
        lines.append(f"raft_port = {raft}")
    if inter_broker is not None:
        lines.append(f"inter_broker_port = {30000 + i if inter_broker == -1 else inter_broker}")
    return "\n".join(lines) + "\n" + extra + "\n"


def test_the_repository_cluster_toml_loads():
    cfg = load_cluster_config(REPO / "cluster.toml")
    assert [b.broker_id for b in cfg.brokers] == [1, 2, 3]
    assert [b.port for b in cfg.brokers] == [9092, 19092, 29092]
    assert [b.inter_broker_port for b in cfg.brokers] == [9095, 19095, 29095]
    assert cfg.cluster_id == "raftka-local"
    assert cfg.brokers[0].data_dir == REPO / "data" / "broker-1"
    assert cfg.settings.min_insync_replicas == 2
    assert cfg.settings.log.retention_ms == 604800000
    assert len(cfg.cluster_secret) >= 8
    assert [(b.kafka_port, b.rack) for b in cfg.brokers] == [(9094, "rack-1"), (19094, "rack-2"), (29094, "rack-3")]
    assert "min.insync.replicas" in cfg.settings.set_in_file


def test_defaults_and_relative_data_dir_resolved_against_the_file(tmp_path):
    cfg = load_cluster_config(_write(tmp_path, GOOD))
    b1, b2 = cfg.brokers
    assert (b1.host, b1.port, b1.raft_port, b1.inter_broker_port) == ("127.0.0.1", 9092, 9093, 9095)
    assert b1.data_dir == tmp_path.resolve() / "data" / "broker-1"
    assert b2.data_dir == Path("/abs/broker-2")
    assert cfg.settings == BrokerSettings()
    assert cfg.cluster_id == "c1"
    assert cfg.cluster_secret == "unit-test-secret"


def test_relative_data_dir_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    path = _write(tmp_path, SECRET + _broker(1, 1, 2, 'data_dir = "d/one"'))
    monkeypatch.chdir("/")
    assert load_cluster_config(path).brokers[0].data_dir == tmp_path.resolve() / "d" / "one"


def test_config_table_sets_broker_and_log_settings(tmp_path):
    text = (SECRET + _broker(1, 1, 2)
            + '[config]\n"num.partitions" = 3\n"log.segment.bytes" = 4096\n"log.roll.ms" = 10\n')
    s = load_cluster_config(_write(tmp_path, text)).settings
    assert s.num_partitions == 3
    assert (s.log.segment_bytes, s.log.segment_ms) == (4096, 10)


def test_broker_lookup_by_id(tmp_path):
    cfg = load_cluster_config(_write(tmp_path, GOOD))
    assert cfg.broker(2).port == 19092
    with pytest.raises(ConfigError) as e:
        cfg.broker(99)
    assert "99" in str(e.value) and "1, 2" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_cluster_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("text,fragment", [
    ("this is = = not toml", "not valid TOML"),
    ('cluster_id = "c"\n', "no [[broker]]"),
    ("broker = []\n", "no [[broker]]"),
    ('cluster_id = ""\n' + _broker(1, 1, 2), "cluster_id"),
    (_broker(1, 9092, 9093) + _broker(1, 19092, 19093), "broker id 1 appears twice"),
    (_broker(1, 9092, 9093) + _broker(2, 9092, 19093), "9092"),
    (_broker(1, 9092, 9093) + _broker(2, 19092, 9093), "9093"),
    (_broker(1, 9092, 9092), "9092"),
    (_broker(1, None, 9093), "missing 'port'"),
    (_broker(1, 9092, None), "missing 'raft_port'"),
    (_broker(1, 9092, 9093, inter_broker=None), "missing 'inter_broker_port'"),
    (_broker(1, 9092, 9093, inter_broker=9092), "port = inter_broker_port = 9092"),
    (_broker(1, 9092, 9093) + _broker(2, 19092, 19093, inter_broker=9093), "used by broker 1 and broker 2"),
    (_broker(1, 9092, 9093, inter_broker=0), "inter_broker_port = 0 is out of range"),
    (_broker(1, 9092, 9093, inter_broker='"x"'), "inter_broker_port must be an integer"),
    ("[[broker]]\nport = 1\nraft_port = 2\n", "missing 'id'"),
    (_broker(1, 0, 9093), "out of range"),
    (_broker(1, 65536, 9093), "out of range"),
    (_broker(1, 9092, 70000), "out of range"),
    (_broker(-1, 9092, 9093), "out of range"),
    (_broker(1, '"abc"', 9093), "must be an integer"),
    (_broker(1, 9092.5, 9093), "must be an integer"),
    (_broker(1, "true", 9093), "must be an integer"),
    (_broker(1, 1, 2, 'host = "example.com"'), "not an IP address"),
    (_broker(1, 1, 2, 'rack = ""'), "rack must be a non-empty string"),
    (_broker(1, 1, 2, 'rack = 3'), "rack must be a non-empty string"),
    (_broker(1, 1, 2, 'rack = "a\\nb"'), "rack must be a non-empty string"),
    (_broker(1, 1, 2, 'data_dir = "same"') + _broker(2, 3, 4, 'data_dir = "same"'), "data_dir"),
    (_broker(1, 1, 2) + '[config]\n"no.such.setting" = 1\n', "no.such.setting"),
    (_broker(1, 1, 2) + '[config]\n"num.partitions" = "lots"\n', "must be an integer"),
    (_broker(1, 1, 2) + '[config]\n"num.partitions" = 1.5\n', "must be an integer"),
    (_broker(1, 1, 2) + '[config]\n"num.partitions" = -2\n', "out of range"),
    ('config = 3\n' + _broker(1, 1, 2), "[config]"),
])
def test_bad_config_raises_config_error(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as e:
        load_cluster_config(_write(tmp_path, SECRET + text))   # with a secret: the one mistake is the error
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)  # kbroker prints it as one line


def test_non_utf8_file_is_a_config_error(tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_bytes(b'cluster_id = "\xff"\n')
    with pytest.raises(ConfigError):
        load_cluster_config(path)


@pytest.mark.parametrize("setting", ['"log.segment.bytes" = 10', '"log.segment.bytes" = 4294967296',
                                     '"log.index.interval.bytes" = -1', '"log.roll.ms" = 0'])
def test_out_of_range_log_setting_is_a_config_error(tmp_path, setting):
    # A value the log layer refuses must come out as ConfigError (kbroker prints it on one
    # line and exits 2), not as a ValueError traceback.
    with pytest.raises(ConfigError):
        load_cluster_config(_write(tmp_path, SECRET + _broker(1, 1, 2) + "[config]\n" + setting + "\n"))


# ---- the cluster secret -------------------------------------------------------------


def test_a_missing_secret_names_the_environment_variable(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_cluster_config(_write(tmp_path, _broker(1, 1, 2)))
    assert "RAFTKA_CLUSTER_SECRET" in str(e.value) and "cluster_secret" in str(e.value)
    assert "\n" not in str(e.value)


def test_the_environment_secret_overrides_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "from-the-environment")
    assert load_cluster_config(_write(tmp_path, GOOD)).cluster_secret == "from-the-environment"
    assert load_cluster_config(_write(tmp_path, _broker(1, 1, 2))).cluster_secret == "from-the-environment"


def test_an_empty_environment_secret_falls_back_to_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "")
    assert load_cluster_config(_write(tmp_path, GOOD)).cluster_secret == "unit-test-secret"


@pytest.mark.parametrize("line", ['cluster_secret = "1234567"', "cluster_secret = 123456789",
                                  'cluster_secret = ["a-long-secret"]'])
def test_a_short_or_non_string_secret_is_refused(tmp_path, line):
    with pytest.raises(ConfigError, match="at least 8 characters"):
        load_cluster_config(_write(tmp_path, line + "\n" + _broker(1, 1, 2)))


def test_a_short_environment_secret_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "short")
    with pytest.raises(ConfigError, match="at least 8 characters"):
        load_cluster_config(_write(tmp_path, GOOD))


def test_eight_characters_are_enough(tmp_path):
    assert load_cluster_config(_write(tmp_path, 'cluster_secret = "12345678"\n' + _broker(1, 1, 2))).cluster_secret \
        == "12345678"


def test_the_secret_stays_out_of_the_config_repr(tmp_path):
    assert "unit-test-secret" not in repr(load_cluster_config(_write(tmp_path, GOOD)))


# ---- liveness and quorum timers -----------------------------------------------------


def _settings(tmp_path: Path, **config: int) -> BrokerSettings:
    table = "".join(f'"{k}" = {v}\n' for k, v in config.items())
    return load_cluster_config(_write(tmp_path, SECRET + _broker(1, 1, 2) + "[config]\n" + table)).settings


def test_liveness_and_quorum_keys_set_their_settings(tmp_path):
    s = _settings(tmp_path, **{"broker.heartbeat.interval.ms": 100, "broker.session.timeout.ms": 201,
                               "controller.quorum.election.timeout.ms": 50,
                               "controller.quorum.election.timeout.max.ms": 51,
                               "controller.quorum.heartbeat.interval.ms": 16, "metadata.commit.timeout.ms": 7})
    assert (s.broker_heartbeat_interval_ms, s.broker_session_timeout_ms) == (100, 201)
    assert (s.quorum_election_timeout_ms, s.quorum_election_timeout_max_ms, s.quorum_heartbeat_interval_ms) == \
        (50, 51, 16)
    assert s.metadata_commit_timeout_ms == 7


@pytest.mark.parametrize("config", [
    {"broker.heartbeat.interval.ms": 1000, "broker.session.timeout.ms": 2000},
    {"broker.heartbeat.interval.ms": 1000, "broker.session.timeout.ms": 1500},
    {"broker.heartbeat.interval.ms": 1500},                     # against the default session timeout 3000
    {"broker.session.timeout.ms": 500},                         # against the default heartbeat interval 250
])
def test_a_session_timeout_of_at_most_two_heartbeat_intervals_is_refused(tmp_path, config):
    with pytest.raises(ConfigError, match="broker.session.timeout.ms"):
        _settings(tmp_path, **config)


@pytest.mark.parametrize("config", [
    {"controller.quorum.election.timeout.ms": 800},             # min == max (the default max)
    {"controller.quorum.election.timeout.ms": 500, "controller.quorum.election.timeout.max.ms": 400},
    {"controller.quorum.heartbeat.interval.ms": 200},           # 3 x 200 >= the default min 400
    {"controller.quorum.election.timeout.ms": 300, "controller.quorum.heartbeat.interval.ms": 100},
])
def test_election_timeouts_out_of_order_are_refused(tmp_path, config):
    with pytest.raises(ConfigError, match="controller.quorum.election.timeout.ms"):
        _settings(tmp_path, **config)


@pytest.mark.parametrize("key", ["broker.heartbeat.interval.ms", "controller.quorum.heartbeat.interval.ms",
                                 "metadata.commit.timeout.ms"])
def test_liveness_and_quorum_intervals_must_be_positive(tmp_path, key):
    with pytest.raises(ConfigError, match=f"{key} must be at least 1"):
        _settings(tmp_path, **{key: 0})


# ---- the inter-broker server -----------------------------------------------------------


def test_inter_broker_settings_and_their_defaults(tmp_path):
    assert (BrokerSettings().inter_broker_max_workers, BrokerSettings().inter_broker_max_concurrent_streams,
            BrokerSettings().inter_broker_max_concurrent_rpcs) == (32, 16, 128)
    s = _settings(tmp_path, **{"inter.broker.max.workers": 8, "inter.broker.max.concurrent.streams": 4,
                               "inter.broker.max.concurrent.rpcs": 8})
    assert (s.inter_broker_max_workers, s.inter_broker_max_concurrent_streams, s.inter_broker_max_concurrent_rpcs) \
        == (8, 4, 8)


@pytest.mark.parametrize("config,message", [
    ({"inter.broker.max.concurrent.streams": 32}, "inter.broker.max.concurrent.streams (32) must be less than "
                                                  "inter.broker.max.workers (32)"),
    ({"inter.broker.max.concurrent.rpcs": 16}, "inter.broker.max.concurrent.rpcs must be at least "
                                               "inter.broker.max.workers"),
    ({"inter.broker.max.workers": 0}, "inter.broker.max.workers must be at least 1"),
])
def test_inter_broker_limits_must_nest(tmp_path, config, message):
    with pytest.raises(ConfigError) as e:
        _settings(tmp_path, **config)
    assert message in str(e.value)


def test_the_inter_broker_stream_cap_must_fit_a_fetch_stream_from_every_other_broker(tmp_path):
    three = SECRET + _broker(1, 1, 2) + _broker(2, 3, 4) + _broker(3, 5, 6)
    with pytest.raises(ConfigError) as e:
        load_cluster_config(_write(tmp_path, three + '[config]\n"inter.broker.max.concurrent.streams" = 1\n'))
    assert "inter.broker.max.concurrent.streams (1) must be at least the number of brokers minus one (2)" \
        in str(e.value)
    assert load_cluster_config(_write(tmp_path, three + '[config]\n"inter.broker.max.concurrent.streams" = 2\n'))


# ---- idempotent producers -------------------------------------------------------------


def test_producer_id_expiration_defaults_to_kafkas_day_and_is_settable(tmp_path):
    assert BrokerSettings().producer_id_expiration_ms == 86400000
    assert _settings(tmp_path, **{"producer.id.expiration.ms": 60000}).producer_id_expiration_ms == 60000


@pytest.mark.parametrize("value", [0, -1])
def test_producer_id_expiration_must_be_positive(tmp_path, value):
    with pytest.raises(ConfigError, match="producer.id.expiration.ms must be at least 1"):
        _settings(tmp_path, **{"producer.id.expiration.ms": value})


def test_group_settings_take_kafkas_names_and_defaults(tmp_path):
    cfg = load_cluster_config(_write(tmp_path, SECRET + _broker(1, 1, 2) + '[config]\n"offsets.topic.num.partitions" = 5\n'
                                     '"group.initial.rebalance.delay.ms" = 0\n'))
    s = cfg.settings
    assert (s.offsets_topic_num_partitions, s.group_initial_rebalance_delay_ms) == (5, 0)
    assert (s.offsets_topic_replication_factor, s.offset_metadata_max_bytes) == (3, 4096)
    assert (s.group_min_session_timeout_ms, s.group_max_session_timeout_ms) == (6000, 1800000)


@pytest.mark.parametrize("config,message", [
    ('"group.min.session.timeout.ms" = 9000\n"group.max.session.timeout.ms" = 8000\n', "at most group.max"),
    ('"offsets.topic.num.partitions" = 10001\n', "at most 10000"),
    ('"offsets.topic.replication.factor" = 0\n', "at least 1"),
])
def test_bad_group_settings_are_one_line_errors(tmp_path, config, message):
    with pytest.raises(ConfigError) as e:
        load_cluster_config(_write(tmp_path, SECRET + _broker(1, 1, 2) + "[config]\n" + config))
    assert message in str(e.value) and "\n" not in str(e.value)
