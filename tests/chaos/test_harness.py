"""The chaos harness against real brokers: each nemesis takes effect, heal() heals, close() leaves nothing.

One cluster for the module (starting three brokers is the slow part); every test
starts from a healed cluster, so one failure does not cascade into the next.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from client.producer import Producer
from tests.chaos.harness import ChaosCluster, PartitionInfo, process_state
from tests.chaos.nemesis import NEMESES, Nemesis, NemesisEvent, make
from tests.integration.cluster import wait_for

pytestmark = pytest.mark.integration

TOPIC = "chaos"
HEAL_BOUND_S = 30.0
FAILOVER_BOUND_S = 10.0


@pytest.fixture(scope="module")
def chaos(tmp_path_factory):
    cluster = ChaosCluster(tmp_path_factory.mktemp("chaos"), {"broker.session.timeout.ms": 3000})
    try:
        cluster.start()
        cluster.create_topic(TOPIC, 3)
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def healthy(chaos):
    """The cluster, healed: everything runs, every partition led with a full ISR."""
    chaos.heal()
    assert chaos.wait_healed(TOPIC, HEAL_BOUND_S) is not None
    return chaos


def start(cluster: ChaosCluster, name: str) -> tuple[Nemesis, NemesisEvent, dict[int, int]]:
    """Start nemesis ``name``; also return each broker's PID from before the fault."""
    pids = {i: cluster.pid(i) for i in cluster.ids}
    nemesis = make(name, cluster)
    return nemesis, nemesis.start(cluster, TOPIC, random.Random(7)), pids


def heal_and_check(cluster: ChaosCluster, nemesis: Nemesis) -> None:
    nemesis.heal(cluster)
    assert not cluster.dead_ids() and not cluster.paused_ids()
    assert cluster.wait_healed(TOPIC, HEAL_BOUND_S) is not None


def by_partition(cluster: ChaosCluster) -> dict[int, PartitionInfo]:
    return {p.partition: p for p in cluster.partitions(TOPIC)}


def test_kill_leader_moves_its_partitions_to_a_new_leader_epoch(healthy):
    before = by_partition(healthy)
    nemesis, event, pids = start(healthy, "kill-leader")
    (target,) = event.targets
    assert process_state(pids[target]) is None
    assert healthy.dead_ids() == [target]
    led = [p for p in before.values() if p.leader == target]
    assert led, f"broker {target} led nothing: {before}"

    def moved() -> bool:
        now = by_partition(healthy)
        return all(now[p.partition].leader not in (-1, target) and now[p.partition].leader_epoch > p.leader_epoch
                   for p in led)
    wait_for(moved, FAILOVER_BOUND_S, f"new leaders, higher epochs, for what broker {target} led")
    heal_and_check(healthy, nemesis)


def test_pause_leader_short_stops_the_process_until_healed(healthy):
    nemesis, event, pids = start(healthy, "pause-leader-short")
    (target,) = event.targets
    assert nemesis.max_hold_s == 1.5
    assert process_state(pids[target]) == "T"
    assert healthy.paused_ids() == [target] and target not in healthy.live_ids()
    # Held well below the session timeout (the runner's job; here a fixed hold, not an assertion):
    # the controller still counts the stopped broker alive and its leaderships stay.
    time.sleep(nemesis.max_hold_s / 2)
    assert healthy.fenced_ids() == []
    heal_and_check(healthy, nemesis)
    assert process_state(pids[target]) in ("R", "S")
    assert healthy.pid(target) == pids[target]   # continued, not restarted


def test_kill_controller_hands_the_quorum_to_another_broker(healthy):
    nemesis, event, pids = start(healthy, "kill-controller")
    (target,) = event.targets
    assert process_state(pids[target]) is None
    wait_for(lambda: healthy.controller_id() not in (None, target), FAILOVER_BOUND_S,
             f"a controller other than broker {target}")
    heal_and_check(healthy, nemesis)


def test_kill_all_keeps_acked_records(healthy):
    with Producer(healthy.bootstrap, acks="all") as producer:
        acked = [producer.send(TOPIC, f"v{i}".encode(), partition=i % 3).result(timeout=20) for i in range(6)]
    nemesis, event, pids = start(healthy, "kill-all")
    assert event.targets == [1, 2, 3]
    assert all(process_state(pid) is None for pid in pids.values())
    assert healthy.controller_id() is None and healthy.live_ids() == []
    heal_and_check(healthy, nemesis)

    final = {r["partition"]: r for r in healthy.final_read(TOPIC)}
    for i, md in enumerate(acked):
        assert [md.offset, f"v{i}"] in final[md.partition]["records"]
    dumps = healthy.replica_dumps(TOPIC)
    assert {(d["broker"], d["partition"]) for d in dumps} == {(b, p) for b in (1, 2, 3) for p in range(3)}
    for d in dumps:   # after a heal every replica holds what its leader acked
        assert d["records"][:len(final[d["partition"]]["records"])] == final[d["partition"]]["records"]
    sample = healthy.sample(TOPIC, 1.0)
    assert sample["controller"] in (1, 2, 3) and sample["fenced"] == [] and len(sample["partitions"]) == 3


# ---- issue 14's nemeses ---------------------------------------------------------------


def test_every_nemesis_has_a_hold_range_and_two_brokers_are_refused(tmp_path):
    for name in NEMESES:
        lo, hi = make(name).hold_range()
        assert 0 < lo <= hi, name
    with pytest.raises(ValueError, match="at least 3 brokers"):
        ChaosCluster(tmp_path / "two", brokers=2)


def test_pause_controller_hands_the_quorum_over_and_continues(healthy):
    nemesis, event, pids = start(healthy, "pause-controller")
    (target,) = event.targets
    assert process_state(pids[target]) == "T"
    assert nemesis.min_hold_s > healthy.session_timeout_s
    wait_for(lambda: healthy.controller_id() not in (None, target), FAILOVER_BOUND_S,
             f"a controller other than the paused broker {target}")
    heal_and_check(healthy, nemesis)
    assert healthy.pid(target) == pids[target]   # continued, not restarted


def test_kill_leader_stalled_isr_kills_the_leader_and_continues_its_followers(healthy):
    nemesis, event, pids = start(healthy, "kill-leader-stalled-isr")
    dead = [i for i in event.targets if process_state(pids[i]) is None]
    assert len(dead) == 1 and healthy.dead_ids() == dead, event
    assert all(process_state(pids[i]) in ("R", "S") for i in event.targets if i not in dead)
    heal_and_check(healthy, nemesis)


def test_preferred_elections_move_leadership_back_to_the_restarted_broker(healthy):
    nemesis, event, pids = start(healthy, "preferred-elections")
    (target,) = event.targets
    assert healthy.pid(target) != pids[target]   # killed and started again at once
    heal_and_check(healthy, nemesis)
    assert "moved" in event.detail and "NOT every" not in event.detail, event.detail
    assert all(p.leader == p.replicas[0] for p in healthy.partitions(TOPIC)), healthy.partitions(TOPIC)


def test_faults_in_sequence_strike_two_or_three_times(healthy):
    nemesis, event, _ = start(healthy, "faults-in-sequence")
    assert event.detail.count("; then ") in (1, 2), event.detail
    heal_and_check(healthy, nemesis)


def test_client_saturation_holds_idle_streams_until_released(healthy):
    nemesis, event, pids = start(healthy, "client-saturation")
    (target,) = event.targets
    assert healthy.pid(target) != pids[target]
    assert len(nemesis._crowd) == len(healthy.ids) - 1
    heal_and_check(healthy, nemesis)
    assert "idle streams" in event.detail and nemesis._crowd   # held past the heal
    nemesis.release(healthy)
    nemesis.release(healthy)   # idempotent
    assert nemesis._crowd == []


def test_wipe_data_brings_a_broker_back_from_an_empty_formatted_dir(healthy):
    nemesis, event, pids = start(healthy, "wipe-data")
    (target,) = event.targets
    assert process_state(pids[target]) is None
    assert sorted(p.name for p in healthy.broker(target).data_dir.iterdir() if not p.name.startswith(".")) == \
        ["meta.properties"]
    heal_and_check(healthy, nemesis)
    final = {r["partition"]: r["records"] for r in healthy.final_read(TOPIC)}
    copies = [d for d in healthy.replica_dumps(TOPIC) if d["broker"] == target]
    assert copies and all(d["records"][:len(final[d["partition"]])] == final[d["partition"]] for d in copies)


def test_topic_recreate_gives_a_fresh_topic_the_dead_replica_does_not_fill(healthy):
    topic = "chaos-recreate"
    healthy.create_topic(topic, 3)
    with Producer(healthy.bootstrap, acks="all") as producer:
        for i in range(6):
            producer.send(topic, f"old-{i}".encode(), partition=i % 3).result(timeout=20)
    nemesis = make("topic-recreate", healthy)
    event = nemesis.start(healthy, topic, random.Random(7))
    assert nemesis.recreates_topic and len(event.targets) == 1
    nemesis.heal(healthy)
    assert healthy.wait_healed(topic, HEAL_BOUND_S) is not None
    reads = healthy.final_read(topic)
    assert len(reads) == 3 and all(r["records"] == [] for r in reads), reads
    assert all(d["records"] == [] for d in healthy.replica_dumps(topic)), "an old record in the new incarnation"


def ours_running(pid: int, config: Path) -> bool:
    """Whether ``pid`` is still one of our brokers (a reused PID of another program does not count)."""
    try:
        return str(config) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return False


def test_close_leaves_no_process_of_its_own(chaos):
    """Last in the module: close() SIGCONTs a paused broker and kills every PID it ever started."""
    chaos.pause(chaos.ids[0])
    chaos.close()
    config = chaos.cluster.root / "cluster.toml"
    assert len(chaos.started_pids) >= 3
    assert [pid for pid in chaos.started_pids if ours_running(pid, config)] == []
