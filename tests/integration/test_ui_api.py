"""kclient ui against a real 3-broker cluster, through its HTTP API: the state it shows, the lesson's produce
with its redirect, every bad request refused in one line (and the page lives on), the controls refused."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.cluster import REPO, metadata, wait_for, write_cluster

pytestmark = pytest.mark.integration

# ---- the ui process (the browser test and tests/ui_timing.py use these too) ---------------------------------


@dataclass
class UiProcess:
    proc: subprocess.Popen
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def stop(self) -> None:
        """SIGTERM to the ui we started (by PID), SIGKILL if it does not end."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_ui(bootstrap: str, *extra: str, timeout: float = 15.0) -> UiProcess:
    """`kclient ui --port 0 ...`; waits for its `raftka ui: http://host:port/` line."""
    # stderr to a file: a pipe nobody reads would block the ui once full.
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "client.cli", "ui", "--bootstrap", bootstrap, "--port", "0", *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=err, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            proc.kill()
            proc.wait(5)
            err.seek(0)
            raise AssertionError(f"kclient ui did not print its address (exit {proc.returncode}): "
                                 f"{err.read().decode(errors='replace')[-2000:]}")
        if select.select([proc.stdout], [], [], left)[0]:
            line += proc.stdout.read1(4096)
    first = line.decode().splitlines()[0]
    assert first.startswith("raftka ui: http://127.0.0.1:"), first
    port = int(first.rstrip("/").rsplit(":", 1)[1])
    return UiProcess(proc, "127.0.0.1", port)


def call(ui: UiProcess, method: str, path: str, body: bytes | str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """One HTTP request; the answer's status and JSON body (AssertionError if it is not JSON)."""
    conn = http.client.HTTPConnection(ui.host, ui.port, timeout=20)
    try:
        sent = {"Content-Type": "application/json", "Origin": f"http://{ui.host}:{ui.port}", **(headers or {})}
        conn.request(method, path, body=body.encode() if isinstance(body, str) else body,
                     headers={k: v for k, v in sent.items() if v is not None})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        raise AssertionError(f"{method} {path}: {response.status} and not JSON: {raw[:300]!r}") from None


def state(ui: UiProcess) -> dict:
    status, snapshot = call(ui, "GET", "/api/state")
    assert status == 200
    return snapshot


def ui_leaders(snapshot: dict, topic: str) -> dict[int, int]:
    return {p["partition"]: p["leader"] for t in snapshot.get("topics", []) if t["name"] == topic
            for p in t["partitions"]}


# ---- a cluster and a page for this module ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_and_ui(tmp_path_factory):
    cluster = write_cluster(tmp_path_factory.mktemp("ui-api"), 3).start_all()
    ui = None
    try:
        from client.admin import Admin
        with Admin(cluster.bootstrap) as admin:
            admin.create_topic("lesson", partitions=3, replication_factor=3)
        ui = start_ui(cluster.bootstrap)
        yield cluster, ui
    finally:
        if ui is not None:
            ui.stop()
        cluster.stop_all()


def test_state_shows_what_metadata_says(cluster_and_ui):
    cluster, ui = cluster_and_ui

    def agree():
        truth = metadata(cluster.brokers[1], ["lesson"])
        snapshot = state(ui)
        leaders = {p.partition: p.leader_id for p in truth.topics[0].partitions}
        return (snapshot["status"] == "ok" and ui_leaders(snapshot, "lesson") == leaders
                and snapshot["controller_id"] == truth.controller_id
                and [(b["broker_id"], b["state"]) for b in snapshot["brokers"]] == [(1, "alive"), (2, "alive"),
                                                                                      (3, "alive")]
                and all(b["raft_term"] is not None for b in snapshot["brokers"])   # each one's own answer came
                and snapshot)
    snapshot = wait_for(agree, 10, "the page's state to match Metadata")
    assert all(b["raft_term"] > 0 and b["metadata_offset"] > 0 for b in snapshot["brokers"]), snapshot["brokers"]
    # The timeline is streamed (MetadataLog, follow) apart from the polled state: it may come a moment later.
    wait_for(lambda: any(i["kind"] == "topic" and i["text"].startswith("topic lesson created: 3 partitions")
                         for i in state(ui)["timeline"]), 10, "the topic's creation in the page's timeline")
    assert snapshot["controls"]["enabled"] is False and "--cluster-config" in snapshot["controls"]["reason"]


def test_produce_through_a_follower_is_redirected_to_the_leader(cluster_and_ui):
    cluster, ui = cluster_and_ui
    leader = metadata(cluster.brokers[1], ["lesson"]).topics[0].partitions[0].leader_id
    follower = next(i for i in (1, 2, 3) if i != leader)
    status, answer = call(ui, "POST", "/api/produce", json.dumps(
        {"node": follower, "topic": "lesson", "partition": 0, "key": "k", "value": "through a follower"}))
    assert status == 200 and answer["produce_error"] is None, answer
    assert answer["partition"] == 0 and answer["offset"] >= 0
    kinds = [(h["kind"], h["api"], h["broker_id"]) for h in answer["hops"]]
    assert ("request", "Produce", follower) in kinds and ("redirect", "Produce", follower) in kinds, kinds
    assert kinds[-1] == ("response", "Produce", leader), kinds
    # The leader's bar grows past the record.
    def leader_bar():
        for t in state(ui)["topics"]:
            for p in t["partitions"] if t["name"] == "lesson" else ():
                bar = next(b for b in p["bars"] if b["broker_id"] == leader) if p["partition"] == 0 else None
                if bar and bar["log_end_offset"] and bar["log_end_offset"] > answer["offset"]:
                    return bar
        return None
    bar = wait_for(leader_bar, 5, "the leader's bar to pass the produced offset")
    assert bar["role"] == "leader" and bar["high_watermark"] > answer["offset"]


BAD_REQUESTS = [
    # (method, path, body, extra headers, status, words in the error)
    ("POST", "/api/produce", "{", {}, 400, "not valid JSON"),
    ("POST", "/api/produce", "[1]", {}, 400, "must be a JSON object"),
    ("POST", "/api/produce", b"\xff\xfe", {}, 400, "not UTF-8"),
    ("POST", "/api/produce", '{"node": 1, "topic": "../etc", "value": "v"}', {}, 400, "may only contain"),
    ("POST", "/api/produce", '{"node": 1, "topic": "lesson", "value": "v", "x": 1}', {}, 400, "unknown field"),
    ("POST", "/api/produce", '{"node": 99, "topic": "lesson", "value": "v"}', {}, 404, "no broker 99"),
    ("POST", "/api/produce", json.dumps({"node": 1, "topic": "lesson", "value": "v" * 70000}), {}, 400, "at most"),
    ("POST", "/api/produce", "x" * (2 * 1024 * 1024), {}, 413, "larger than"),
    ("POST", "/api/produce", '{"node": 1, "topic": "lesson", "value": "v"}', {"Content-Type": "text/plain"}, 415,
     "application/json"),
    ("POST", "/api/produce", '{"node": 1, "topic": "lesson", "value": "v"}', {"Origin": "http://evil.example"}, 403,
     "cross-site"),
    ("POST", "/api/produce", '{"node": 1, "topic": "lesson", "value": "v"}',
     {"Host": "rebound.example:80", "Origin": None}, 403, "DNS rebinding"),
    ("GET", "/api/state", None, {"Host": "rebound.example"}, 403, "DNS rebinding"),
    ("GET", "/api/produce", None, {}, 405, "GET is not allowed"),
    ("DELETE", "/api/state", None, {}, 405, "DELETE is not allowed"),
    ("PUT", "/api/brokers/1/kill", "{}", {}, 405, "PUT is not allowed"),
    ("GET", "/api/nothing-here", None, {}, 404, "no such page"),
    ("POST", "/api/brokers/1/kill", "{}", {}, 403, "--cluster-config"),
    ("POST", "/api/brokers/1/kill", '{"force": true}', {}, 400, "takes no fields"),
    ("POST", "/api/brokers/x/kill", "{}", {}, 404, "no such page"),
]


@pytest.mark.parametrize("method, path, body, headers, status, words", BAD_REQUESTS,
                         ids=[f"{m} {p} {s} {w}" for m, p, _, _, s, w in BAD_REQUESTS])
def test_bad_requests_are_one_line_errors_and_the_page_lives_on(cluster_and_ui, method, path, body, headers, status,
                                                               words):
    cluster, ui = cluster_and_ui
    got, answer = call(ui, method, path, body, headers)
    assert got == status, answer
    assert list(answer) == ["error"] and answer["error"].startswith("INVALID_REQUEST: "), answer
    assert words in answer["error"] and "\n" not in answer["error"] and "Traceback" not in answer["error"], answer
    assert ui.proc.poll() is None
    assert state(ui)["status"] == "ok"
    assert all(b.alive() for b in cluster.brokers.values())   # nothing was killed


def test_controls_are_refused_for_brokers_off_loopback_and_a_taken_port_is_one_line(cluster_and_ui, tmp_path):
    cluster, _ = cluster_and_ui
    remote = tmp_path / "cluster.toml"
    text = (cluster.root / "cluster.toml").read_text()
    remote.write_text(text.replace('host = "127.0.0.1"', 'host = "192.0.2.1"', 1))   # TEST-NET-1: never local
    ui = start_ui(cluster.bootstrap, "--cluster-config", str(remote))
    try:
        snapshot = state(ui)
        assert snapshot["controls"]["enabled"] is False and "broker 1 is on 192.0.2.1" in snapshot["controls"]["reason"]
        status, answer = call(ui, "POST", "/api/brokers/2/kill", "{}")
        assert status == 403 and "broker 1 is on 192.0.2.1" in answer["error"], answer
        assert all(b.alive() for b in cluster.brokers.values())
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            done = subprocess.run([sys.executable, "-m", "client.cli", "ui", "--bootstrap", cluster.bootstrap,
                                   "--port", str(port)], cwd=REPO, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, done
        assert done.stderr.strip().count("\n") == 0 and f"cannot listen on 127.0.0.1:{port}" in done.stderr, done.stderr
        assert done.stdout == ""
    finally:
        ui.stop()


def test_the_static_page_is_served_with_its_protections(cluster_and_ui):
    _, ui = cluster_and_ui
    conn = http.client.HTTPConnection(ui.host, ui.port, timeout=10)
    try:
        for path, kind in (("/", "text/html"), ("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200 and kind in r.getheader("Content-Type"), (path, r.status)
            assert "frame-ancestors 'none'" in r.getheader("Content-Security-Policy")
            assert body
        conn.request("GET", "/static/../../../etc/passwd")
        r = conn.getresponse()
        assert r.status in (403, 404) and b"root:" not in r.read()
    finally:
        conn.close()
    assert Path(REPO / "client/ui/static/index.html").read_text().count("<script") == 1   # no inline script
