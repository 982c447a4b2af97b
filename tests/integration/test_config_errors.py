"""kbroker's configuration errors and kclient's bad arguments, against the real processes.

Every bad start of `python -m broker` must print exactly one line on stderr (no traceback),
exit with 2 (EXIT_BAD_CONFIG: the supervisor does not restart it) and leave the data dir as it
was: not created, or not changed down to the mtimes. A config error exits well under a second,
so most cases need no running cluster; subprocess.run's timeout is the deadline of each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Callable

import pytest

from client.admin import Admin
from client.record_batch import CRC_START, iter_batches
from tests.integration.cluster import REPO, free_port, free_ports, kclient, write_cluster

HEAD = {"cluster_id": "raftka-test", "cluster_secret": "raftka-test-secret"}


def run_kbroker(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAFTKA_CLUSTER_SECRET"}  # the file's secret, or none
    env.update(LOG_FORMAT="json", GRPC_VERBOSITY="ERROR")
    return subprocess.run([sys.executable, "-m", "broker", *args], capture_output=True, timeout=20, cwd=REPO,
                          env=env)


def snapshot(root: Path) -> dict[str, tuple[int, int, int]] | None:
    """Every path under ``root`` with its type, size and mtime (None if ``root`` does not exist)."""
    if not os.path.lexists(root):
        return None
    st = root.lstat()
    out = {".": (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)}
    if stat.S_ISDIR(st.st_mode):
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = Path(dirpath, name)
                st = path.lstat()
                out[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
    return out


def assert_refused(result: subprocess.CompletedProcess, *words: str) -> str:
    err = result.stderr.decode(errors="replace")
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert result.returncode == 2, (result.returncode, err)
    assert len(lines) == 1 and lines[0].startswith("kbroker: error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value if isinstance(value, (int, float)) else str(value))  # a JSON string is a TOML string


def write_toml(root: Path, spec: dict) -> Path:
    lines = [f"{k} = {toml_value(v)}" for k, v in spec["head"].items()]
    for broker in spec["brokers"]:
        lines += ["[[broker]]"] + [f"{k} = {toml_value(v)}" for k, v in broker.items()]
    if spec["config"]:
        lines += ["[config]"] + [f'"{k}" = {toml_value(v)}' for k, v in spec["config"].items()]
    path = root / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def good_spec(root: Path) -> dict:
    """Two brokers on free ports, data under ``root``: valid as it is."""
    p = free_ports(6)
    return {"head": dict(HEAD), "config": {}, "brokers": [
        {"id": i, "host": "127.0.0.1", "port": p[3 * i - 3], "raft_port": p[3 * i - 2],
         "inter_broker_port": p[3 * i - 1], "data_dir": str(root / f"broker-{i}")} for i in (1, 2)]}


def _set(where: str, key: str, value) -> Callable[[dict], None]:
    """An edit of the valid spec: where is "head", "config", "b1" or "b2"."""
    def edit(spec: dict) -> None:
        table = spec["brokers"][int(where[1]) - 1] if where.startswith("b") else spec[where]
        if value is None:
            del table[key]
        else:
            table[key] = value
    return edit


def _same(key_a: str, key_b: str, second_broker: bool) -> Callable[[dict], None]:
    """Broker 1's key_a takes the value of key_b (of broker 1, or of broker 2)."""
    def edit(spec: dict) -> None:
        b1, b2 = spec["brokers"]
        b1[key_a] = (b2 if second_broker else b1)[key_b]
    return edit


def _swap_data_dir(spec: dict) -> None:
    spec["brokers"][1]["data_dir"] = spec["brokers"][0]["data_dir"]


# An edit of a valid two-broker cluster.toml -> words kbroker --id 1 must print.
SPEC_CASES = {
    "broker without id": (_set("b1", "id", None), ["missing 'id'"]),
    "duplicate broker id": (_set("b2", "id", 1), ["broker id 1 appears twice"]),
    "port = raft_port of one broker": (_same("raft_port", "port", False), ["port = raft_port", "must differ"]),
    "same port on two brokers": (_same("port", "port", True), ["used by broker 1 and broker 2"]),
    "same raft_port on two brokers": (_same("raft_port", "raft_port", True), ["used by broker 1 and broker 2"]),
    "raft_port = other broker's port": (_same("raft_port", "port", True), ["used by broker 1 and broker 2"]),
    "inter_broker_port = raft_port of one broker": (_same("inter_broker_port", "raft_port", False),
                                                    ["raft_port = inter_broker_port", "must differ"]),
    "inter_broker_port = other broker's port": (_same("inter_broker_port", "port", True),
                                                ["used by broker 1 and broker 2"]),
    "broker without inter_broker_port": (_set("b1", "inter_broker_port", None), ["missing 'inter_broker_port'"]),
    "inter_broker_port out of range": (_set("b1", "inter_broker_port", 65536),
                                       ["inter_broker_port = 65536 is out of range"]),
    "inter-broker streams as many as its workers": (_set("config", "inter.broker.max.concurrent.streams", 32), [
        "inter.broker.max.concurrent.streams (32) must be less than inter.broker.max.workers (32)"]),
    "port out of range": (_set("b1", "port", 70000), ["port = 70000 is out of range"]),
    "port 0": (_set("b1", "port", 0), ["port = 0 is out of range"]),
    "port is text": (_set("b1", "port", "abc"), ["port must be an integer"]),
    "host not an address": (_set("b1", "host", "example.com"), ["not an IP address"]),
    "two brokers, one data_dir": (_swap_data_dir, ["share a data_dir"]),
    "unknown setting": (_set("config", "no.such.setting", 1), ["unknown setting 'no.such.setting'"]),
    "setting is text": (_set("config", "num.partitions", "many"), ["num.partitions must be an integer"]),
    "setting is a float": (_set("config", "num.partitions", 1.5), ["num.partitions must be an integer"]),
    "setting is a bool": (_set("config", "num.partitions", True), ["num.partitions must be an integer"]),
    "setting below its minimum": (_set("config", "min.insync.replicas", 0), ["min.insync.replicas must be at least 1"]),
    "no cluster secret": (_set("head", "cluster_secret", None), ["no cluster secret"]),
    "short cluster secret": (_set("head", "cluster_secret", "short"), ["at least 8 characters"]),
    "empty cluster_id": (_set("head", "cluster_id", ""), ["cluster_id must be a non-empty string"]),
}


@pytest.mark.parametrize("case", SPEC_CASES)
def test_bad_cluster_toml_is_one_line_and_exit_2(tmp_path, case):
    edit, words = SPEC_CASES[case]
    spec = good_spec(tmp_path)
    edit(spec)
    config = write_toml(tmp_path, spec)
    before = snapshot(tmp_path)
    assert_refused(run_kbroker("--config", str(config), "--id", "1"), *words)
    assert snapshot(tmp_path) == before  # no data dir created, nothing else touched


def _unreadable(root: Path, config: Path) -> list[str]:
    if os.geteuid() == 0:  # root reads a chmod 000 file anyway: make the read itself fail (EISDIR)
        config.unlink()
        config.mkdir()
    else:
        config.chmod(0)
    return ["--config", str(config), "--id", "1"]


def _bytes(data: bytes) -> Callable[[Path, Path], list[str]]:
    def setup(root: Path, config: Path) -> list[str]:
        config.write_bytes(data)
        return ["--config", str(config), "--id", "1"]
    return setup


def _argv(*args: str) -> Callable[[Path, Path], list[str]]:
    return lambda root, config: [a.replace("{config}", str(config)).replace("{root}", str(root)) for a in args]


def _data_dir_at(path: str) -> Callable[[Path, Path], list[str]]:
    """Broker 1's data_dir is ``path`` under root, after a regular file named f was put there."""
    def setup(root: Path, config: Path) -> list[str]:
        (root / "f").write_text("not a directory\n")
        spec = good_spec(root)
        spec["brokers"][0]["data_dir"] = str(root / path)
        write_toml(root, spec)
        return ["--config", str(config), "--id", "1"]
    return setup


def _empty_data_dir(root: Path, config: Path) -> list[str]:
    """Broker 1's data dir exists but is empty: a new disk, or a lost one."""
    (root / "broker-1").mkdir()
    return ["--config", str(config), "--id", "1"]


# A setup of root (which holds a valid cluster.toml) -> kbroker's argv, and the words it must print.
START_CASES = {
    "--id missing": (_argv("--config", "{config}"), ["--id", "(see kbroker --help)"]),
    "--id not a number": (_argv("--config", "{config}", "--id", "one"), ["invalid int value: 'one'"]),
    "--id not in the file": (_argv("--config", "{config}", "--id", "7"), ["broker id 7 is not in", "(it names 1, 2)"]),
    "cluster.toml missing": (_argv("--config", "{root}/nope.toml", "--id", "1"), ["nope.toml: no such file"]),
    "cluster.toml unreadable": (_unreadable, ["cannot read cluster config"]),
    "not TOML": (_bytes(b"this is = = not toml\n"), ["is not valid TOML", "line 1"]),
    "not UTF-8": (_bytes(b'cluster_id = "\xff"\n'), ["is not UTF-8 text", "0xff"]),
    "supervised, bad file": (_argv("--config", "{root}/nope.toml", "--id", "1", "--restart-delay", "1"),
                             ["no such file"]),
    "supervised, bad delay": (_argv("--config", "{config}", "--id", "1", "--restart-delay", "-1"),
                              ["--restart-delay"]),
    "data dir is a file": (_data_dir_at("f"), ["is a file, not a directory"]),
    # A data dir that does not exist (here: cannot) is unformatted: the broker never creates one itself.
    "data dir inside a file": (_data_dir_at("f/broker-1"), ["f/broker-1 is not formatted"]),
    "data dir missing": (_argv("--config", "{config}", "--id", "1"),
                         ["broker-1 is not formatted: run 'kbroker format --config ", " --id 1' to (re)join an "
                          "existing cluster, or add --initial-voter on every broker of a brand-new cluster"]),
    "data dir empty": (_empty_data_dir, ["broker-1 is not formatted", "kbroker format"]),
}


@pytest.mark.parametrize("case", START_CASES)
def test_bad_start_is_one_line_and_exit_2(tmp_path, case):
    setup, words = START_CASES[case]
    config = write_toml(tmp_path, good_spec(tmp_path))
    argv = setup(tmp_path, config)
    before = snapshot(tmp_path)
    assert_refused(run_kbroker(*argv), *words)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("which", ["port", "raft_port", "inter_broker_port"])
def test_port_in_use_is_one_line_and_exit_2(tmp_path, which):
    spec = good_spec(tmp_path)
    config = write_toml(tmp_path, spec)
    port = spec["brokers"][0][which]
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        before = snapshot(tmp_path)
        assert_refused(run_kbroker("--config", str(config), "--id", "1"), f"127.0.0.1:{port} ({which})", "in use")
    assert snapshot(tmp_path) == before
    assert not Path(spec["brokers"][0]["data_dir"]).exists()


# ---- data dirs that belong to someone else -------------------------------------------------------------


@pytest.fixture(scope="module")
def stopped_data_dir(tmp_path_factory) -> Path:
    """The data dir of broker 1 of cluster raftka-test, with a partition log, after a clean stop."""
    cluster = write_cluster(tmp_path_factory.mktemp("stopped"), 1)
    broker = cluster.brokers[1].start()
    try:
        with Admin(bootstrap=broker.bootstrap) as admin:
            admin.create_topic("kept", partitions=1, replication_factor=1)
        assert broker.terminate() == 0
    finally:
        cluster.stop_all()
    assert (broker.data_dir / "clean-shutdown").exists()  # recovery would remove it
    return broker.data_dir


def config_for(root: Path, data_dir: Path, cluster_id: str = "raftka-test", broker_id: int = 1) -> Path:
    """A one-broker cluster.toml on fresh ports whose broker ``broker_id`` uses ``data_dir``."""
    port, raft_port, inter_broker_port = free_ports(3)
    return write_toml(root, {"head": dict(HEAD, cluster_id=cluster_id), "config": {}, "brokers": [
        {"id": broker_id, "host": "127.0.0.1", "port": port, "raft_port": raft_port,
         "inter_broker_port": inter_broker_port, "data_dir": str(data_dir)}]})


@pytest.mark.parametrize("cluster_id, broker_id, words", [
    ("another-cluster", 1, ["belongs to cluster.id=raftka-test broker.id=1", "not cluster.id=another-cluster"]),
    ("raftka-test", 2, ["belongs to cluster.id=raftka-test broker.id=1", "not cluster.id=raftka-test broker.id=2"]),
], ids=["another cluster", "another broker id"])
def test_data_dir_of_someone_else_is_refused_untouched(tmp_path, stopped_data_dir, cluster_id, broker_id, words):
    config = config_for(tmp_path, stopped_data_dir, cluster_id, broker_id)
    before = snapshot(stopped_data_dir)
    assert_refused(run_kbroker("--config", str(config), "--id", str(broker_id)), *words)
    assert snapshot(stopped_data_dir) == before  # checked before recovery, which would remove clean-shutdown


def test_data_dir_locked_by_a_running_broker_is_refused_untouched(tmp_path, single_broker):
    config = config_for(tmp_path, single_broker.data_dir)
    pid_file = single_broker.data_dir / "broker.pid"
    single_broker.signal(signal.SIGSTOP)  # it holds the lock but writes nothing while we compare
    try:
        before = snapshot(single_broker.data_dir)
        assert_refused(run_kbroker("--config", str(config), "--id", "1"), "used by another broker process")
        after = snapshot(single_broker.data_dir)
    finally:
        single_broker.signal(signal.SIGCONT)
    assert after == before
    assert pid_file.read_text() == f"{single_broker.pid}\n"  # the refused process left the owner's pid file
    single_broker.wait_ready(timeout=10)


# ---- a data dir of a raftka before Kafka's CRC-32C ------------------------------------------------------


def _edit_record_crc(data_dir: Path, line: str) -> None:
    """meta.properties with its record.crc line replaced by ``line`` ("" removes it)."""
    meta = data_dir / "meta.properties"
    kept = [x for x in meta.read_text().splitlines() if not x.startswith("record.crc=")]
    meta.write_text("\n".join(kept + ([line] if line else [])) + "\n")


def _as_old_raftka(data_dir: Path) -> None:
    """What raftka wrote before CRC-32C: no record.crc, and every batch checksummed with zlib's CRC-32."""
    _edit_record_crc(data_dir, "")
    for segment in data_dir.glob("*-*/*.log"):
        data = bytearray(segment.read_bytes())
        for pos, h in list(iter_batches(data)):
            data[pos + 17:pos + 21] = zlib.crc32(data[pos + CRC_START:pos + h.size]).to_bytes(4, "big")
        segment.write_bytes(data)


OLD_LOGS = ["holds partition logs (kept-0) in raftka's old batch format", "Kafka's RecordBatch v2",
            "delete the data dir and run kbroker format again"]

# A change to a copy of a stopped broker's data dir (one partition log) -> extra kbroker args, words it prints.
OLD_DATA_DIR_CASES = {
    "logs of an older raftka": (_as_old_raftka, [], OLD_LOGS),
    "logs of an older raftka, supervised": (_as_old_raftka, ["--restart-delay", "1"], OLD_LOGS),
    "record.crc of another checksum": (lambda d: _edit_record_crc(d, "record.crc=crc32"), [],
                                       ["says record.crc=crc32: this raftka reads only record.crc=crc32c"]),
}


@pytest.mark.parametrize("case", OLD_DATA_DIR_CASES)
def test_data_dir_of_an_older_raftka_is_refused_untouched(tmp_path, stopped_data_dir, case):
    edit, args, words = OLD_DATA_DIR_CASES[case]
    data_dir = tmp_path / "broker-1"
    shutil.copytree(stopped_data_dir, data_dir)
    edit(data_dir)
    config = config_for(tmp_path, data_dir)
    before = snapshot(data_dir)
    assert_refused(run_kbroker("--config", str(config), "--id", "1", *args), *words)
    assert snapshot(data_dir) == before   # checked before recovery, which would cut every old batch


def test_data_dir_of_an_older_raftka_without_logs_gets_record_crc_and_starts(tmp_path):
    cluster = write_cluster(tmp_path, 1)
    broker = cluster.brokers[1]
    _edit_record_crc(broker.data_dir, "")   # formatted by an older raftka, never given a partition
    try:
        broker.start()
        assert "record.crc=crc32c" in (broker.data_dir / "meta.properties").read_text()
        with Admin(bootstrap=broker.bootstrap) as admin:
            admin.create_topic("new", partitions=1, replication_factor=1)
        assert broker.terminate() == 0
        broker.start()   # its log is not taken for an old one
    finally:
        cluster.stop_all()


# ---- kclient -------------------------------------------------------------------------------------------


def assert_client_error(result: subprocess.CompletedProcess, name: str) -> None:
    err = result.stderr.decode(errors="replace")
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert result.returncode != 0
    assert len(lines) == 1 and name in lines[0], lines


NOBODY = f"127.0.0.1:{free_port()}"  # nothing listens there (the port was free a moment ago)


@pytest.mark.parametrize("args, name", [
    (["topics", "--list", "--bootstrap", NOBODY], "NoBrokersAvailable"),
    (["consume", "--topic", "t", "--bootstrap", NOBODY, "--timeout-ms", "1000"], "NoBrokersAvailable"),
    (["topics", "--list", "--bootstrap", "abc"], "INVALID_REQUEST: bootstrap address 'abc' has no port"),
    (["cluster", "--bootstrap", ":99999"], "INVALID_REQUEST: bootstrap address ':99999': port out of range"),
    (["consume", "--topic", "t", "--bootstrap", "host:port"], "INVALID_REQUEST: bootstrap address 'host:port'"),
], ids=["unreachable", "unreachable consume", "no port", "port out of range", "port not a number"])
def test_kclient_bad_bootstrap_is_one_line(args, name):
    assert_client_error(kclient(*args, timeout=20), name)


@pytest.mark.parametrize("args", [
    ["topics", "--describe", "--topic", "no-such-topic"],
    ["consume", "--topic", "no-such-topic", "--timeout-ms", "1000"],
    ["produce", "--topic", "no-such-topic", "--max-block-ms", "500"],
], ids=["describe", "consume", "produce"])
def test_kclient_unknown_topic_is_one_line(single_broker, args):
    assert_client_error(kclient(*args, "--bootstrap", single_broker.bootstrap, input=b"v\n", timeout=20),
                        "UNKNOWN_TOPIC_OR_PARTITION")
