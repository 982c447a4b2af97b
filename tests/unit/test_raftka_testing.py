"""raftka_testing: the harness and the brokers agree on where each data dir is, and the test workers of one run
pick their ports from disjoint shares."""

from __future__ import annotations

import os

from broker.config import load_cluster_config
from raftka_testing.cluster import TEST_PORTS, free_ports, worker_ports, write_cluster


def test_a_relative_root_gives_the_data_dirs_the_brokers_will_use(tmp_path):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        cluster = write_cluster(tmp_path.relative_to(tmp_path) / "out" / "cluster", 3, format_dirs=False)
        config = load_cluster_config(next(iter(cluster.brokers.values())).config_path)
        for b in cluster.brokers.values():
            assert config.broker(b.broker_id).data_dir.resolve() == b.data_dir.resolve()
            assert b.data_dir.is_absolute()
    finally:
        os.chdir(cwd)


def test_each_xdist_worker_picks_ports_from_its_own_share(monkeypatch):
    """CI once failed a broker start with "port in use": the other worker had picked the same port between this
    one's probe and its broker's bind."""
    shares = [set(worker_ports(f"gw{i}", 2)) for i in range(2)]
    assert not shares[0] & shares[1]
    assert shares[0] | shares[1] <= set(TEST_PORTS) and min(len(s) for s in shares) >= 4000
    assert worker_ports("", 1) == TEST_PORTS == worker_ports("master", 2)   # not under xdist: the whole range
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    assert set(free_ports(50)) <= shares[1]
