"""`honcho start` with the project's own Procfile, on a fresh directory: no step by hand.

The Procfile's entries format the missing data dirs themselves (kbroker format --all-missing,
under a lock); started at the same moment, the three must agree that the cluster is brand
new and format every data dir as an initial voter, or no quorum could ever form.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cluster import REPO, metadata, wait_for, write_cluster

pytestmark = pytest.mark.integration


def test_honcho_start_on_a_fresh_directory_formats_every_broker_as_a_voter_and_elects(tmp_path):
    cluster = write_cluster(tmp_path, 3, format_dirs=False)
    shutil.copy(REPO / "Procfile", tmp_path / "Procfile")
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
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)   # our own session: honcho and the brokers it started
        try:
            honcho.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait(5)
        log.close()
