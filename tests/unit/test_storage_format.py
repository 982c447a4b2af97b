"""kbroker format (broker/storage_format.py): a data dir is formatted once, and a broker never formats one itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.__main__ import main as kbroker
from broker.config import ClusterConfig, load_cluster_config
from broker.log.manager import LOCK_FILE, lock_data_dir
from broker.log.meta_properties import (REJOINING, VOTER, mark_voter, read_meta_properties)
from broker.storage_format import FormatError, format_data_dir, format_missing

BROKER = """
[[broker]]
id = {id}
port = {port}
raft_port = {raft}
inter_broker_port = {inter}
data_dir = "data/broker-{id}"
"""


def write_config(root: Path, n: int = 3) -> Path:
    """A cluster.toml of ``n`` brokers (never started: the ports are only numbers here)."""
    text = 'cluster_id = "c1"\ncluster_secret = "unit-test-secret"\n' + "".join(
        BROKER.format(id=i, port=40000 + 3 * i, raft=40001 + 3 * i, inter=40002 + 3 * i) for i in range(1, n + 1))
    path = root / "cluster.toml"
    path.write_text(text)
    return path


@pytest.fixture
def cluster(tmp_path) -> ClusterConfig:
    return load_cluster_config(write_config(tmp_path))


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize("initial_voter, state", [(True, VOTER), (False, REJOINING)])
def test_format_writes_meta_properties_with_a_fresh_directory_id(cluster, initial_voter, state):
    data_dir = format_data_dir(cluster, 2, initial_voter)
    assert data_dir == cluster.broker(2).data_dir
    meta = read_meta_properties(data_dir)
    assert (meta.cluster_id, meta.broker_id, meta.quorum_state) == ("c1", 2, state)
    assert len(meta.directory_id) == 32
    assert sorted(p.name for p in data_dir.iterdir()) == [LOCK_FILE, "meta.properties"]


def test_format_twice_is_refused_and_changes_nothing(cluster, tmp_path):
    format_data_dir(cluster, 1, True)
    before = snapshot(tmp_path)
    with pytest.raises(FormatError, match="is already formatted"):
        format_data_dir(cluster, 1, False)
    assert snapshot(tmp_path) == before


def test_a_data_dir_with_data_but_no_meta_properties_is_refused(cluster):
    data_dir = cluster.broker(1).data_dir
    (data_dir / "orders-0").mkdir(parents=True)
    with pytest.raises(FormatError, match=r"is not empty \(orders-0\)"):
        format_data_dir(cluster, 1, False)
    assert not (data_dir / "meta.properties").exists()


def test_an_emptied_data_dir_with_its_lock_file_left_is_formatted(cluster):
    # `rm -rf data/broker-1/*` keeps the hidden .lock: that dir is as empty as a new disk.
    data_dir = cluster.broker(1).data_dir
    data_dir.mkdir(parents=True)
    (data_dir / LOCK_FILE).touch()
    format_data_dir(cluster, 1, False)
    assert read_meta_properties(data_dir).quorum_state == REJOINING


def test_a_data_dir_locked_by_a_running_broker_is_refused(cluster):
    data_dir = cluster.broker(1).data_dir
    data_dir.mkdir(parents=True)
    fd = lock_data_dir(data_dir)
    try:
        with pytest.raises(FormatError, match="used by another broker process"):
            format_data_dir(cluster, 1, False)
    finally:
        os.close(fd)


@pytest.mark.parametrize("file, words", [("data/broker-1", "is a file, not a directory"),
                                         ("data", "cannot create data dir")])
def test_a_file_in_the_way_is_refused(cluster, tmp_path, file, words):
    (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / file).write_text("not a directory\n")
    with pytest.raises(FormatError, match=words):
        format_data_dir(cluster, 1, True)


def test_a_one_broker_cluster_cannot_rejoin(tmp_path):
    one = load_cluster_config(write_config(tmp_path, 1))
    with pytest.raises(FormatError, match="no peer to catch up from"):
        format_data_dir(one, 1, False)
    assert not one.broker(1).data_dir.exists()


def test_format_missing_brand_new_cluster_formats_every_broker_as_an_initial_voter(cluster):
    done = format_missing(cluster)
    assert [(f.broker_id, f.meta.quorum_state) for f in done] == [(1, VOTER), (2, VOTER), (3, VOTER)]
    assert format_missing(cluster) == []   # formatted data dirs are left alone


def test_format_missing_after_a_lost_disk_formats_only_that_one_as_rejoining(cluster):
    format_missing(cluster)
    voters = {b: read_meta_properties(cluster.broker(b).data_dir) for b in (1, 3)}
    os.remove(cluster.broker(2).data_dir / "meta.properties")
    os.remove(cluster.broker(2).data_dir / LOCK_FILE)
    cluster.broker(2).data_dir.rmdir()
    assert [(f.broker_id, f.meta.quorum_state) for f in format_missing(cluster)] == [(2, REJOINING)]
    assert {b: read_meta_properties(cluster.broker(b).data_dir) for b in (1, 3)} == voters


def test_mark_voter_keeps_the_identity(cluster):
    data_dir = format_data_dir(cluster, 3, False)
    before = read_meta_properties(data_dir)
    after = mark_voter(data_dir)
    assert after == read_meta_properties(data_dir)
    assert (after.quorum_state, after.directory_id, after.broker_id) == (VOTER, before.directory_id, 3)
    assert not list(data_dir.glob("*.tmp"))


# ---- the CLI: kbroker format ---------------------------------------------------------------------------


def run(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    try:
        code = kbroker(list(argv))
    except SystemExit as e:   # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def test_cli_formats_one_broker(tmp_path, capsys):
    config = write_config(tmp_path)
    code, out, err = run(capsys, "format", "--config", str(config), "--id", "1", "--initial-voter")
    assert (code, err) == (0, [])
    assert out == [f"kbroker format: data dir {tmp_path.resolve() / 'data/broker-1'} of broker 1 formatted (voter)"]
    code, out, err = run(capsys, "format", "--config", str(config), "--all-missing")
    assert code == 0 and [line.rsplit(" ", 1)[1] for line in out] == ["(rejoining)", "(rejoining)"]


@pytest.mark.parametrize("argv, words", [
    (["--id", "1"], "is already formatted"),
    (["--id", "9"], "broker id 9 is not in"),
    ([], "one of the arguments --id --all-missing is required"),
    (["--all-missing", "--initial-voter"], "--initial-voter goes with --id"),
    (["--id", "x"], "invalid int value"),
], ids=["twice", "unknown id", "no id", "all-missing with initial-voter", "bad id"])
def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, words):
    config = write_config(tmp_path)
    assert run(capsys, "format", "--config", str(config), "--id", "1", "--initial-voter")[0] == 0
    before = snapshot(tmp_path)
    code, out, err = run(capsys, "format", "--config", str(config), *argv)
    assert code == 2 and out == [] and len(err) == 1, (code, out, err)
    assert err[0].startswith("kbroker format: error: ") and words in err[0], err
    assert snapshot(tmp_path) == before


def test_supervised_start_on_an_unformatted_data_dir_is_one_line_and_writes_nothing(tmp_path, capsys):
    config = write_config(tmp_path)
    code, out, err = run(capsys, "--config", str(config), "--id", "2", "--restart-delay", "5")
    assert code == 2 and out == [] and len(err) == 1, err
    assert err[0] == (f"kbroker: error: data dir {tmp_path.resolve() / 'data/broker-2'} is not formatted: "
                      f"run 'kbroker format --config {config} --id 2' to (re)join an existing cluster, "
                      f"or add --initial-voter on every broker of a brand-new cluster")
    assert snapshot(tmp_path) == {"cluster.toml": (tmp_path / "cluster.toml").stat().st_mtime_ns}
