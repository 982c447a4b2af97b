"""raftka_testing.write_cluster: the harness and the brokers agree on where each data dir is."""

from __future__ import annotations

import os

from broker.config import load_cluster_config
from raftka_testing.cluster import write_cluster


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
