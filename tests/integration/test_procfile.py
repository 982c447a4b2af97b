"""`honcho start` with the project's own Procfile, on a fresh directory: no step by hand.

The Procfile's entries format the missing data dirs themselves (kbroker format --all-missing,
under a lock); started at the same moment, the three must agree that the cluster is brand
new and format every data dir as an initial voter, or no quorum could ever form.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.integration.cluster import REPO, free_port, metadata, wait_for, write_cluster

pytestmark = pytest.mark.integration


def test_honcho_start_on_a_fresh_directory_formats_every_broker_as_a_voter_and_elects(tmp_path):
    cluster = write_cluster(tmp_path, 3, format_dirs=False)
    ui_port = free_port()
    (tmp_path / "Procfile").write_text(procfile_for(cluster.bootstrap, ui_port))
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '')}", LOG_FORMAT="json",
               PYTHONUNBUFFERED="1")
    log = open(tmp_path / "honcho.log", "wb")
    honcho = subprocess.Popen([str(bin_dir / "honcho"), "start"], cwd=tmp_path, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def all_up():
            assert honcho.poll() is None, (tmp_path / "honcho.log").read_text()[-3000:]
            r = metadata(cluster.brokers[1])
            return r is not None and r.controller_id > 0 and sum(b.alive for b in r.brokers) == 3
        wait_for(all_up, 40, "three brokers registered and unfenced under honcho", 0.2)
        states = [(b.data_dir / "meta.properties").read_text().split("quorum.state=")[1].split()[0]
                  for b in cluster.brokers.values()]
        assert states == ["voter", "voter", "voter"], states

        def page_shows_three_alive() -> bool:   # the Procfile's ui entry: the page, beside the brokers
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/api/state", timeout=2) as r:
                    brokers = json.load(r).get("brokers", [])
            except OSError:
                return False
            return [b["state"] for b in brokers] == ["alive"] * 3
        wait_for(page_shows_three_alive, 20, f"the ui entry's page on port {ui_port} to show three alive brokers", 0.2)
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)   # our own session: honcho and the brokers it started
        try:
            honcho.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait(5)
        log.close()


def procfile_for(bootstrap: str, ui_port: int) -> str:
    """The project's Procfile, its ui entry pointed at this test's brokers and a free port (8080 and the
    lesson's ports may be taken on this machine); every other entry as it is."""
    text = (REPO / "Procfile").read_text()
    ui_lines = [line for line in text.splitlines() if line.startswith("ui:")]
    assert len(ui_lines) == 1, "the Procfile has one ui entry (kclient ui beside the brokers)"
    line = ui_lines[0]
    assert re.search(r"--bootstrap \S+", line) and re.search(r"--port 8080\b", line), line
    assert "--cluster-config cluster.toml" in line, line
    local = re.sub(r"--port 8080\b", f"--port {ui_port}", re.sub(r"--bootstrap \S+", f"--bootstrap {bootstrap}", line))
    return text.replace(line, local)
