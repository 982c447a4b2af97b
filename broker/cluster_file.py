"""A cluster file and its Procfile for N local brokers: what `make run BROKERS=5 [VOTERS=3]` runs.

    kbroker cluster-file --brokers 5 [--voters 3] --out data/cluster-5.toml --procfile data/Procfile-5

The file has cluster.toml's shape: broker i on 127.0.0.1, rack "rack-i", its data in data/broker-i
(so `make kill BROKER=i` finds its PID file), and five ports from one base port (client +0, Raft +1,
Kafka protocol +2, inter-broker +3, metrics +4). Brokers 1 to 3 keep cluster.toml's base ports 9092,
19092 and 29092; brokers 4 to 6 take 9192, 19192, 29192, brokers 7 to 9 9292, 19292, 29292. Continuing
with 39092 and 49092 would put ports inside Linux's ephemeral range (32768-60999 by default), where the
kernel may be lending one to an outgoing connection at the moment its broker starts (it then refuses to
start), and broker 7 would need 69092, past 65535.

cluster_id, cluster_secret and the [config] table are copied from a template (cluster.toml), so the
settings never drift; a cluster of one or two brokers gets replication factors it can meet.
``--voters K`` makes the first K brokers the metadata quorum's voters (controller_quorum_voters) and
the others observers (broker/metadata/quorum.py). Plain functions, no I/O but load_template.
"""

from __future__ import annotations

import json
import posixpath
import shlex
import tomllib
from dataclasses import dataclass
from typing import Any

MAX_BROKERS = 9      # a laptop's worth: nine brokers already hold 45 ports and 9 Python processes
FIRST_BASE_PORT = 9092
# One base port per broker: three columns ten thousand apart (cluster.toml's), rows a hundred apart.
COLUMNS, COLUMN_STEP, ROW_STEP = 3, 10000, 100
# Every port must stay below the kernel's ephemeral range (see the module docstring).
EPHEMERAL_LOW = 32768
RESTART_DELAY_S = 5  # the Procfile's --restart-delay: time to watch the others elect before it returns
UI_PORT = 8080


class ClusterFileError(Exception):
    """Bad input to the generator; the message is the one line `kbroker cluster-file` prints."""


@dataclass(frozen=True)
class BrokerPorts:
    broker_id: int
    port: int                # client gRPC
    raft_port: int           # metadata quorum (pysyncobj)
    kafka_port: int          # Apache Kafka's protocol
    inter_broker_port: int   # Replication and Controller
    metrics_port: int        # Prometheus
    replication_port: int    # followers' fetch streams, plain TCP (broker/replication_socket.py)


@dataclass(frozen=True)
class Template:
    """What a generated file copies from the template cluster file."""
    cluster_id: str
    cluster_secret: str | None     # None: the file has none (RAFTKA_CLUSTER_SECRET must give it)
    config: dict[str, Any]


def base_port(broker_id: int) -> int:
    """9092, 19092, 29092 for brokers 1-3 (cluster.toml), then the same a hundred higher per three brokers."""
    row, column = divmod(broker_id - 1, COLUMNS)
    return FIRST_BASE_PORT + COLUMN_STEP * column + ROW_STEP * row


def broker_ports(broker_id: int) -> BrokerPorts:
    base = base_port(broker_id)
    ports = BrokerPorts(broker_id, base, base + 1, base + 2, base + 3, base + 4, base + 5)
    if not 1024 <= base < base + 5 < EPHEMERAL_LOW:
        raise ClusterFileError(f"broker {broker_id}'s ports {base}-{base + 5} fall outside 1024-{EPHEMERAL_LOW - 1}")
    return ports


def voter_count(brokers: int, voters: int | None) -> int:
    """How many voters (the first ones): ``voters``, or every broker when it is None."""
    if not 1 <= brokers <= MAX_BROKERS:
        raise ClusterFileError(f"--brokers must be from 1 to {MAX_BROKERS}, not {brokers}")
    if voters is None:
        return brokers
    if not 1 <= voters <= brokers:
        raise ClusterFileError(f"--voters must be from 1 to the number of brokers ({brokers}), not {voters}")
    return voters


def load_template(path: str) -> Template:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ClusterFileError(f"cannot read template {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ClusterFileError(f"template {path} is not valid TOML: {e}") from None
    config = raw.get("config", {})
    if not isinstance(config, dict):
        raise ClusterFileError(f"template {path}: [config] must be a table")
    secret = raw.get("cluster_secret")
    return Template(str(raw.get("cluster_id", "raftka-local")), secret if isinstance(secret, str) else None,
                    dict(config))


def config_for(template_config: dict[str, Any], brokers: int) -> dict[str, Any]:
    """The template's [config], with replication factors a cluster of fewer than three brokers can meet
    (topics and __consumer_offsets could not be created otherwise)."""
    config = dict(template_config)
    if brokers < 3:
        config["default.replication.factor"] = brokers
        config["min.insync.replicas"] = 1
        config["offsets.topic.replication.factor"] = brokers
    return config


def cluster_file_text(brokers: int, voters: int | None, template: Template, data_root: str = "data") -> str:
    """The cluster file for ``brokers`` brokers whose first ``voters`` vote (None: all). ``data_root``: the
    data dirs' folder as written in the file, i.e. relative to the file's own folder ("." beside it)."""
    k = voter_count(brokers, voters)
    lines = [f"# Generated by `kbroker cluster-file --brokers {brokers}"
             + (f" --voters {voters}" if voters is not None else "") + "` (make run BROKERS=N rewrites it):",
             "# cluster.toml's shape and [config] (see cluster.toml for what each key means).",
             f"cluster_id = {_toml(template.cluster_id)}"]
    if template.cluster_secret is not None:
        lines.append(f"cluster_secret = {_toml(template.cluster_secret)}")
    if k < brokers:
        lines += ["# The brokers whose Raft nodes vote and may become the controller (Kafka's",
                  "# controller.quorum.voters); the others are observers: they replicate the metadata log",
                  "# but never vote or lead.",
                  f"controller_quorum_voters = [{', '.join(str(i) for i in range(1, k + 1))}]"]
    for i in range(1, brokers + 1):
        p = broker_ports(i)
        data_dir = posixpath.normpath(posixpath.join(data_root, f"broker-{i}"))
        lines += ["", "[[broker]]", f"id = {i}", 'host = "127.0.0.1"', f"port = {p.port}",
                  f"raft_port = {p.raft_port}", f"inter_broker_port = {p.inter_broker_port}",
                  f"replication_port = {p.replication_port}", f"kafka_port = {p.kafka_port}",
                  f"metrics_port = {p.metrics_port}", f'rack = "rack-{i}"',
                  f"data_dir = {_toml(data_dir)}"]
    lines += ["", "[config]"] + [f"{_toml(key)} = {_toml(value)}"
                                 for key, value in config_for(template.config, brokers).items()]
    return "\n".join(lines) + "\n"


def procfile_text(brokers: int, config_path: str, restart_delay_s: int = RESTART_DELAY_S,
                  ui_port: int = UI_PORT) -> str:
    """The Procfile that runs them (honcho, from the checkout): one supervised entry per broker, each
    formatting the missing data dirs first, as the project's Procfile does, and the live cluster page."""
    voter_count(brokers, None)
    config = shlex.quote(config_path)
    lines = [f"# Generated by `kbroker cluster-file` for {config_path} (make run BROKERS=N rewrites it); what each",
             "# entry does: see the project's Procfile."]
    lines += [f"broker{i}: kbroker format --config {config} --all-missing && exec kbroker --config {config} "
              f"--id {i} --restart-delay {restart_delay_s}" for i in range(1, brokers + 1)]
    bootstrap = ",".join(f":{broker_ports(i).port}" for i in range(1, brokers + 1))
    lines.append(f"ui: kclient ui --bootstrap {bootstrap} --port {ui_port} --cluster-config {config}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    """A TOML scalar: what cluster.toml's keys and [config] values are (JSON's string escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return json.dumps(value)
    raise ClusterFileError(f"cannot copy {value!r} from the template: only integers, booleans and strings")
