"""`kclient metadata-log`: the cluster's metadata log as events, from any broker (KRaft's __cluster_metadata
as kafka-metadata-shell reads it), against three real brokers and a real kill -9.

The registrations, the topic's creation, the dead broker's fencing and the election that follows are
there in order, with the same offsets and the same records on every broker; --follow prints a change
as it commits; bad input is one line.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

from raftka_testing.cluster import REPO, create_ready, partitions
from tests.integration.cluster import kclient, wait_for

pytestmark = pytest.mark.integration


def told(broker) -> list[str]:
    result = kclient("metadata-log", "--bootstrap", broker.bootstrap)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().splitlines()


def story_of(lines: list[str]) -> list[tuple[int, str]]:
    """(offset, what happened) of each line: the term and the time differ from broker to broker."""
    out = []
    for line in lines:
        offset, _term, _n, _when, what = line.split(maxsplit=4)
        out.append((int(offset), what))
    return out


def test_the_metadata_log_tells_a_failover_the_same_on_every_broker(running_cluster):
    cluster = running_cluster(3)
    create_ready(cluster, "story", 2)
    leader = partitions(cluster.brokers[1], "story")[0].leader_id
    cluster.brokers[leader].kill()
    survivors = [b for b in cluster.brokers.values() if b.broker_id != leader]
    wait_for(lambda: (p := partitions(survivors[0], "story")) and p[0].leader_id not in (-1, leader), 20,
             "a new leader of story-0")
    wait_for(lambda: any(f"story-0: leader {leader} ->" in line for line in told(survivors[0])), 10,
             "the election in the metadata log")
    lines = told(survivors[0])
    story = story_of(lines)
    offsets = [o for o, _ in story]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), offsets
    text = "\n".join(what for _, what in story)
    for b in (1, 2, 3):
        assert f"broker {b} registered at 127.0.0.1:{cluster.brokers[b].port}" in text, text
    assert "topic story created: 2 partitions" in text
    fenced = next(i for i, (_, w) in enumerate(story) if w.startswith(f"broker {leader} fenced"))
    elected = next(i for i, (_, w) in enumerate(story) if f"story-0: leader {leader} ->" in w)
    assert fenced <= elected, "the election came before the fencing"
    # The cause is in the record: a kill -9 closes the dead broker's connections (liveness.py).
    assert story[fenced][1].startswith(f"broker {leader} fenced: connection lost"), story[fenced]
    # Every broker applied the same batches: the same offsets tell the same records.
    other = dict(story_of(told(survivors[1])))
    assert all(other.get(o, w) == w for o, w in story), "two brokers tell different records at one offset"
    print(f"\n[metadata-log] {len(lines)} entries; the failover:\n  " + "\n  ".join(lines[fenced:elected + 1]))


def test_follow_prints_a_change_as_it_commits_and_bad_input_is_one_line(running_cluster):
    cluster = running_cluster(3)
    broker = cluster.brokers[2]
    last = story_of(told(broker))[-1][0]
    # kclient as a terminal starts it: SIGINT at its default (Ctrl-C). A shell without job control starts
    # background commands with SIGINT ignored, and Python then installs no KeyboardInterrupt handler: a test
    # run from such a shell (CI's may be one) would wait forever for a Ctrl-C the process never sees.
    as_from_a_terminal = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                          "from client.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", as_from_a_terminal, "metadata-log", "--bootstrap", broker.bootstrap,
                             "--from", str(last + 1), "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.decode().rstrip() for line in proc.stdout), daemon=True)
    reader.start()
    try:
        create_ready(cluster, "followed", 1)
        wait_for(lambda: any("topic followed created: 1 partitions" in line for line in lines), 10,
                 "the follower printing the new topic")
        assert all(int(line.split()[0]) > last for line in lines), lines
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130, proc.stderr.read().decode()
    bad = kclient("metadata-log", "--bootstrap", broker.bootstrap, "--from", "-1")
    err = bad.stderr.decode()
    assert bad.returncode == 2 and "--from must be 0 or more" in err and "Traceback" not in err, err
