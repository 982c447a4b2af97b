"""Real broker processes for tests: own ports, own data dirs, started and ended by PID.

Every broker is `python -m broker` in its own session; tests kill only the PIDs
they started. Readiness and every other wait are conditions with deadlines.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from client.protocol.v1 import kafka_pb2, kafka_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll ``condition`` until it returns a truthy value; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class BrokerProcess:
    broker_id: int
    port: int
    raft_port: int
    data_dir: Path
    config_path: Path
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, wait: bool = True) -> "BrokerProcess":
        log = open(self.log_path, "ab")
        env = dict(os.environ, LOG_FORMAT="json", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "broker", "--config", str(self.config_path),
                                      "--id", str(self.broker_id)], stdout=log, stderr=subprocess.STDOUT,
                                     cwd=REPO, env=env, start_new_session=True)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"broker {self.broker_id} exited with {self.proc.returncode}:\n{self.log()}")
            with grpc.insecure_channel(self.bootstrap) as ch:
                try:
                    kafka_pb2_grpc.KafkaStub(ch).Metadata(kafka_pb2.MetadataRequest(), timeout=1)
                    return True
                except grpc.RpcError:
                    return False
        wait_for(ready, timeout, f"broker {self.broker_id} to answer on {self.bootstrap}", 0.1)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """kill -9 and reap."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> int:
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Cluster:
    root: Path
    brokers: dict[int, BrokerProcess] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values())

    def stop_all(self) -> None:
        for b in self.brokers.values():
            if b.alive():
                b.signal(signal.SIGKILL)
                b.proc.wait(timeout=10)


def write_cluster(root: Path, n: int = 1, config: dict[str, int] | None = None) -> Cluster:
    """A cluster.toml with ``n`` brokers on free loopback ports, data under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(root)
    lines = ['cluster_id = "raftka-test"']
    config_path = root / "cluster.toml"
    for i in range(1, n + 1):
        b = BrokerProcess(i, free_port(), free_port(), root / f"broker-{i}", config_path, root / f"broker-{i}.log")
        cluster.brokers[i] = b
        lines += ["[[broker]]", f"id = {i}", 'host = "127.0.0.1"', f"port = {b.port}",
                  f"raft_port = {b.raft_port}", f'data_dir = "{b.data_dir}"']
    if config:
        lines.append("[config]")
        lines += [f'"{k}" = {v}' for k, v in config.items()]
    config_path.write_text("\n".join(lines) + "\n")
    return cluster


def kclient(*args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real CLI (`python -m client.cli`) and capture its output."""
    return subprocess.run([sys.executable, "-m", "client.cli", *args], input=input, capture_output=True,
                          timeout=timeout, cwd=REPO)
