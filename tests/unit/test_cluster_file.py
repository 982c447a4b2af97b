"""kbroker cluster-file (broker/cluster_file.py): a cluster file and Procfile for N local brokers, and the
controller_quorum_voters setting they may carry (broker/config.py, broker/storage_format.py)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from broker.cluster_file import (EPHEMERAL_LOW, MAX_BROKERS, ClusterFileError, broker_ports, cluster_file_text,
                                 load_template, procfile_text)
from broker.config import ConfigError, load_cluster_config, parse_cluster_config
from broker.storage_format import FormatError, format_data_dir

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = str(REPO / "cluster.toml")


def kbroker(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The real CLI, in a process of its own (importing broker.__main__ here would block hypothesis)."""
    return subprocess.run([sys.executable, "-m", "broker", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def generated(n: int, voters: int | None = None, where: Path = REPO / "cluster.toml"):
    """The generated file for ``n`` brokers, parsed as the broker parses it, as if it were at ``where``."""
    return parse_cluster_config(tomllib.loads(cluster_file_text(n, voters, load_template(TEMPLATE))), where)


def test_three_brokers_are_cluster_toml_itself():
    ours, theirs = generated(3), load_cluster_config(REPO / "cluster.toml")
    assert ours.brokers == theirs.brokers   # ids, ports, racks, data dirs
    assert ours.settings == theirs.settings and ours.cluster_id == theirs.cluster_id
    assert ours.cluster_secret == theirs.cluster_secret and ours.quorum_voters == (1, 2, 3)


def test_every_port_of_nine_brokers_is_distinct_and_below_the_ephemeral_range():
    ports = [p for i in range(1, MAX_BROKERS + 1) for p in vars(broker_ports(i)).values() if p != i]
    assert len(ports) == 6 * MAX_BROKERS == len(set(ports))
    assert all(1024 <= p < EPHEMERAL_LOW < 65536 for p in ports), sorted(ports)
    assert [broker_ports(i).port for i in range(1, 8)] == [9092, 19092, 29092, 9192, 19192, 29192, 9292]
    four = broker_ports(4)
    assert (four.raft_port, four.kafka_port, four.inter_broker_port, four.metrics_port, four.replication_port) == (
        9193, 9194, 9195, 9196, 9197)


def test_five_brokers_keep_the_shape_racks_and_data_dirs():
    cluster = generated(5)
    assert [(b.broker_id, b.rack, b.data_dir) for b in cluster.brokers] == [
        (i, f"rack-{i}", REPO / "data" / f"broker-{i}") for i in range(1, 6)]
    assert cluster.quorum_voters == (1, 2, 3, 4, 5)
    assert cluster.settings.default_replication_factor == 3 and cluster.settings.min_insync_replicas == 2


def test_voters_are_the_first_k_brokers_and_the_rest_observe():
    cluster = generated(7, voters=3)
    assert cluster.quorum_voters == (1, 2, 3)
    assert [b.broker_id for b in cluster.brokers if not cluster.is_voter(b.broker_id)] == [4, 5, 6, 7]
    assert "controller_quorum_voters" not in cluster_file_text(7, 7, load_template(TEMPLATE))


@pytest.mark.parametrize("n", [1, 2])
def test_fewer_than_three_brokers_get_replication_factors_they_can_meet(n):
    settings = generated(n).settings
    assert settings.default_replication_factor == n == settings.offsets_topic_replication_factor
    assert settings.min_insync_replicas == 1


@pytest.mark.parametrize("brokers, voters, words", [(0, None, "--brokers must be from 1 to 9, not 0"),
                                                    (MAX_BROKERS + 1, None, "--brokers must be from 1 to 9"),
                                                    (5, 0, "--voters must be from 1 to the number of brokers"),
                                                    (5, 6, "(5), not 6")])
def test_bad_counts_are_refused(brokers, voters, words):
    with pytest.raises(ClusterFileError, match=words.replace("(", r"\(").replace(")", r"\)")):
        cluster_file_text(brokers, voters, load_template(TEMPLATE))


def test_the_procfile_has_the_projects_broker_entries_and_a_ui_on_every_broker():
    ours = procfile_text(3, "cluster.toml").splitlines()
    project = (REPO / "Procfile").read_text().splitlines()
    assert [line for line in ours if line.startswith("broker")] == [line for line in project
                                                                    if line.startswith("broker")]
    assert [line for line in procfile_text(5, "data/cluster-5.toml").splitlines() if line.startswith("ui:")] == [
        "ui: kclient ui --bootstrap :9092,:19092,:29092,:9192,:19192 --port 8080 "
        "--cluster-config data/cluster-5.toml"]


def test_the_cli_writes_both_files_with_data_dirs_relative_to_the_cluster_file(tmp_path):
    done = kbroker(["cluster-file", "--brokers", "5", "--voters", "3", "--template", TEMPLATE,
                    "--out", "data/cluster-5.toml", "--procfile", "data/Procfile-5"], tmp_path)
    assert done.returncode == 0, done.stderr
    cluster = load_cluster_config(tmp_path / "data" / "cluster-5.toml")
    assert [b.data_dir for b in cluster.brokers] == [tmp_path / "data" / f"broker-{i}" for i in range(1, 6)]
    assert cluster.quorum_voters == (1, 2, 3)
    procfile = (tmp_path / "data" / "Procfile-5").read_text()
    assert "exec kbroker --config data/cluster-5.toml --id 5 --restart-delay 5" in procfile
    assert "voters 1, 2, 3" in done.stdout


@pytest.mark.parametrize("args, words", [
    (["--brokers", "12", "--out", "c.toml"], "--brokers must be from 1 to 9, not 12"),
    (["--brokers", "five", "--out", "c.toml"], "invalid int value: 'five'"),
    (["--brokers", "5", "--voters", "9", "--out", "c.toml"], "--voters must be from 1 to the number of brokers (5), "
                                                             "not 9"),
    (["--brokers", "3", "--template", "missing.toml", "--out", "c.toml"], "cannot read template missing.toml"),
    (["--brokers", "3", "--procfile", "P"], "--procfile needs --out"),
])
def test_the_cli_refuses_bad_input_in_one_line_with_exit_2(tmp_path, args, words):
    template = [] if "--template" in args else ["--template", TEMPLATE]
    done = kbroker(["cluster-file", *args, *template], tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not list(tmp_path.iterdir())   # nothing written


# ---- controller_quorum_voters in a cluster file (broker/config.py) -------------------------------------


def _with_voters(tmp_path: Path, voters: str) -> Path:
    text = cluster_file_text(3, None, load_template(TEMPLATE))
    path = tmp_path / "cluster.toml"
    path.write_text(text.replace("cluster_id =", f"controller_quorum_voters = {voters}\ncluster_id =", 1))
    return path


@pytest.mark.parametrize("voters, words", [("[]", "must be a non-empty list of broker ids"),
                                           ("3", "must be a non-empty list"),
                                           ('["1"]', "must hold broker ids (integers), not '1'"),
                                           ("[true]", "must hold broker ids (integers), not True"),
                                           ("[1, 4]", "names broker 4, which has no [[broker]] entry"),
                                           ("[1, 1]", "names a broker twice")])
def test_a_bad_voter_list_is_one_config_error(tmp_path, voters, words):
    with pytest.raises(ConfigError) as e:
        load_cluster_config(_with_voters(tmp_path, voters))
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_voter_list_is_read_in_order_and_a_missing_one_means_all(tmp_path):
    assert load_cluster_config(_with_voters(tmp_path, "[3, 1]")).quorum_voters == (1, 3)
    assert load_cluster_config(REPO / "cluster.toml").quorum_voters == (1, 2, 3)


# ---- formatting with voters (broker/storage_format.py) -------------------------------------------------


def test_the_only_voter_cannot_be_formatted_to_rejoin_but_an_observer_can(tmp_path):
    cluster = load_cluster_config(_with_voters(tmp_path, "[1]"))
    with pytest.raises(FormatError, match="broker 1 is the only voter"):
        format_data_dir(cluster, 1, False)
    assert format_data_dir(cluster, 2, False) == cluster.broker(2).data_dir   # it catches up from voter 1
