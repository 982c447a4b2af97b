"""cluster.toml loading: every mistake is a one-line ConfigError."""

from pathlib import Path

import pytest

from broker.config import BrokerSettings, ConfigError, load_cluster_config

REPO = Path(__file__).resolve().parents[2]

GOOD = """
cluster_id = "c1"

[[broker]]
id = 1
port = 9092
raft_port = 9093

[[broker]]
id = 2
host = "127.0.0.1"
port = 19092
raft_port = 19093
data_dir = "/abs/broker-2"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _broker(i: int, port: int | None = None, raft: int | None = None, extra: str = "") -> str:
    lines = ["[[broker]]", f"id = {i}"]
    if port is not None:
        lines.append(f"port = {port}")
    if raft is not None:
        lines.append(f"raft_port = {raft}")
    return "\n".join(lines) + "\n" + extra + "\n"


def test_the_repository_cluster_toml_loads():
    cfg = load_cluster_config(REPO / "cluster.toml")
    assert [b.broker_id for b in cfg.brokers] == [1, 2, 3]
    assert [b.port for b in cfg.brokers] == [9092, 19092, 29092]
    assert cfg.cluster_id == "raftka-local"
    assert cfg.brokers[0].data_dir == REPO / "data" / "broker-1"
    assert cfg.settings.min_insync_replicas == 2
    assert cfg.settings.log.retention_ms == 604800000


def test_defaults_and_relative_data_dir_resolved_against_the_file(tmp_path):
    cfg = load_cluster_config(_write(tmp_path, GOOD))
    b1, b2 = cfg.brokers
    assert (b1.host, b1.port, b1.raft_port) == ("127.0.0.1", 9092, 9093)
    assert b1.data_dir == tmp_path.resolve() / "data" / "broker-1"
    assert b2.data_dir == Path("/abs/broker-2")
    assert cfg.settings == BrokerSettings()
    assert cfg.cluster_id == "c1"


def test_relative_data_dir_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    path = _write(tmp_path, _broker(1, 1, 2, 'data_dir = "d/one"'))
    monkeypatch.chdir("/")
    assert load_cluster_config(path).brokers[0].data_dir == tmp_path.resolve() / "d" / "one"


def test_config_table_sets_broker_and_log_settings(tmp_path):
    text = _broker(1, 1, 2) + '[config]\n"num.partitions" = 3\n"log.segment.bytes" = 4096\n"log.roll.ms" = 10\n'
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
    ("[[broker]]\nport = 1\nraft_port = 2\n", "missing 'id'"),
    (_broker(1, 0, 9093), "out of range"),
    (_broker(1, 65536, 9093), "out of range"),
    (_broker(1, 9092, 70000), "out of range"),
    (_broker(-1, 9092, 9093), "out of range"),
    (_broker(1, '"abc"', 9093), "must be an integer"),
    (_broker(1, 9092.5, 9093), "must be an integer"),
    (_broker(1, "true", 9093), "must be an integer"),
    (_broker(1, 1, 2, 'host = "example.com"'), "not an IP address"),
    (_broker(1, 1, 2, 'data_dir = "same"') + _broker(2, 3, 4, 'data_dir = "same"'), "data_dir"),
    (_broker(1, 1, 2) + '[config]\n"no.such.setting" = 1\n', "no.such.setting"),
    (_broker(1, 1, 2) + '[config]\n"num.partitions" = "lots"\n', "must be an integer"),
    (_broker(1, 1, 2) + '[config]\n"num.partitions" = 1.5\n', "must be an integer"),
    (_broker(1, 1, 2) + '[config]\n"num.partitions" = -2\n', "out of range"),
    ('config = 3\n' + _broker(1, 1, 2), "[config]"),
])
def test_bad_config_raises_config_error(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as e:
        load_cluster_config(_write(tmp_path, text))
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
        load_cluster_config(_write(tmp_path, _broker(1, 1, 2) + "[config]\n" + setting + "\n"))
