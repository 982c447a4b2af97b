"""ChaosCluster: three (or four) real brokers the chaos tests start, break, heal and read back.

The brokers run as this process's own children (never under honcho: honcho stops
every process when one exits), on free loopback ports and data dirs under ``root``,
through raftka_testing.cluster. The harness ends only the PIDs it started, and
every wait is a condition with a deadline (wait_for): a sleep is never an assertion.

What the cluster looks like is read from one live, unpaused broker's own Metadata
answer, preferably the controller's: the controller holds the committed image
first, a follower's copy may lag it by a few hundred ms.
"""

from __future__ import annotations

import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from broker.config import BrokerSettings
from client.admin import Admin
from client.protocol.v1 import kafka_pb2
from client.record_batch import decode_all, iter_batches
from raftka_testing.cluster import (BrokerProcess, Cluster, describe_replicas_of, log_bytes, metadata, partition_dir,
                                    read_replica, replica_offsets, wait_for, write_cluster)
from raftka_testing.netns import Network

N_BROKERS = 3                 # the default; 4 leaves a broker outside each RF-3 partition (topic-recreate)
METADATA_TIMEOUT_S = 1.0      # one broker's Metadata answer; a silent broker costs at most this
READY_TIMEOUT_S = 30.0        # start / restart / heal: a 2-core machine restarting three brokers at once
DEFAULT_SESSION_TIMEOUT_S = BrokerSettings().broker_session_timeout_ms / 1000


@dataclass(frozen=True)
class PartitionInfo:
    """One partition as the answering broker's metadata image has it (Kafka's PartitionRegistration)."""
    topic: str
    partition: int
    leader: int               # -1: offline (no leader)
    leader_epoch: int
    partition_epoch: int
    isr: list[int]
    replicas: list[int]

    @property
    def fully_replicated(self) -> bool:
        """Led, and every replica is in sync (order does not matter: the ISR is a set)."""
        return self.leader >= 0 and set(self.isr) == set(self.replicas)


def process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc/<pid>/stat (R, S, T = stopped, Z, ...), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: the state follows the last ')'.
    return stat[stat.rindex(")") + 2]


def _text(value: bytes | None) -> str | None:
    """A record value as the workload wrote it (UTF-8); a broken byte shows as U+FFFD rather than failing."""
    return None if value is None else value.decode("utf-8", errors="replace")


def _partition_infos(response: kafka_pb2.MetadataResponse | None, topic: str) -> list[PartitionInfo]:
    if response is None:
        return []
    for t in response.topics:
        if t.name == topic and not t.error_code:
            return [PartitionInfo(topic, p.partition, p.leader_id, p.leader_epoch,
                                  p.partition_epoch, list(p.isr), list(p.replicas))
                    for p in t.partitions]
    return []


def _fenced(response: kafka_pb2.MetadataResponse | None) -> list[int]:
    return [] if response is None else sorted(b.broker_id for b in response.brokers if not b.alive)


def _controller(response: kafka_pb2.MetadataResponse | None) -> int | None:
    """The controller, only if the answer comes from the controller itself.

    A survivor keeps naming a killed or paused Raft leader until its own election
    timeout; a self-claim from a live broker is what makes a controller current.
    """
    if response is None or response.controller_id < 0 or response.controller_id != response.answered_by:
        return None
    return response.controller_id


class ChaosCluster:
    """Brokers with kill -9, SIGTERM, SIGSTOP/SIGCONT, restart and a wiped data dir, plus what the checkers
    need to read."""

    def __init__(self, root: Path, config: dict | None = None, brokers: int = N_BROKERS,
                 network: Network | None = None, voters: int | None = None):
        """``network``: run broker i on host "b{i}" of that (created) Network, so link nemeses can cut it.
        ``voters``: only brokers 1 to ``voters`` vote in the metadata quorum, the others observe (None: all)."""
        if brokers < 3:
            raise ValueError(f"a chaos cluster needs at least 3 brokers (the topics have RF 3), not {brokers}")
        if voters is not None and not 1 <= voters <= brokers:
            raise ValueError(f"voters must be from 1 to the number of brokers ({brokers}), not {voters}")
        self.config: dict = dict(config or {})
        self.network: Network | None = network
        self.cluster: Cluster = write_cluster(Path(root), brokers, self.config, network=network,
                                              voters=None if voters is None else list(range(1, voters + 1)))
        self._paused: set[int] = set()
        self._controller_hint: int | None = None   # ask this broker first: it was the controller last time
        self.started_pids: list[int] = []          # every PID this harness ever started (for leak checks)

    # ---- lifecycle --------------------------------------------------------------

    def start(self, timeout: float = READY_TIMEOUT_S) -> "ChaosCluster":
        """Start all brokers at once (the Raft quorum needs a majority), wait until they agree on a controller."""
        self.cluster.start_all(wait=False)
        self._note_started(self.cluster.brokers)
        self._wait_ready(self.cluster.brokers, timeout)
        self.cluster.wait_controller(timeout=timeout)
        return self

    def close(self) -> None:
        """SIGCONT every paused broker (so none is left stopped if a kill fails), then SIGKILL all we started.
        Idempotent: also the test teardown."""
        for broker_id in list(self._paused):
            self.resume(broker_id)
        self.cluster.stop_all()

    def __enter__(self) -> "ChaosCluster":
        """``with ChaosCluster(root) as c: c.start(); ...``: whatever happens, the block ends in close()."""
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def ids(self) -> list[int]:
        return sorted(self.cluster.brokers)

    @property
    def bootstrap(self) -> str:
        """Every broker's address: clients fail over between them on their own."""
        return self.cluster.bootstrap

    @property
    def session_timeout_s(self) -> float:
        """broker.session.timeout.ms of this cluster: a hung broker is fenced after it."""
        ms = self.config.get("broker.session.timeout.ms")
        return DEFAULT_SESSION_TIMEOUT_S if ms is None else int(ms) / 1000

    def broker(self, broker_id: int) -> BrokerProcess:
        return self.cluster.brokers[broker_id]

    def pid(self, broker_id: int) -> int:
        return self.broker(broker_id).pid

    # ---- faults -----------------------------------------------------------------

    def kill(self, broker_id: int) -> None:
        """kill -9 and reap: no controlled shutdown, the controller learns of it from lost connections."""
        self.kill_many([broker_id])

    def kill_many(self, broker_ids: Iterable[int]) -> None:
        """kill -9 several brokers at once: every signal goes out before the first reap, so none outlives another."""
        ids = list(broker_ids)
        for broker_id in ids:
            self.broker(broker_id).signal(signal.SIGKILL)   # works on a stopped process too
        for broker_id in ids:
            self.broker(broker_id).kill()                   # reaps (the signal is already delivered)
            self._paused.discard(broker_id)

    def terminate(self, broker_id: int, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the exit: a controlled shutdown that moves its leaderships first."""
        if broker_id in self._paused:
            self.resume(broker_id)   # a stopped process would hold the SIGTERM until continued
        return self.broker(broker_id).terminate(timeout)

    def pause(self, broker_id: int) -> None:
        """SIGSTOP: the process keeps its sockets open but answers nothing (a hung broker, a GC pause)."""
        b = self.broker(broker_id)
        b.signal(signal.SIGSTOP)
        self._paused.add(broker_id)
        wait_for(lambda: process_state(b.pid) == "T", 2.0, f"broker {broker_id} (pid {b.pid}) to stop")

    def resume(self, broker_id: int) -> None:
        """SIGCONT a paused broker."""
        self.broker(broker_id).signal(signal.SIGCONT)
        self._paused.discard(broker_id)

    def restart(self, broker_id: int, wait: bool = True, timeout: float = READY_TIMEOUT_S) -> None:
        """Start a dead broker again on the same ports and data dir (a new incarnation that must catch up)."""
        self.restart_many([broker_id], wait, timeout)

    def restart_many(self, broker_ids: Iterable[int], wait: bool = True, timeout: float = READY_TIMEOUT_S) -> None:
        """Start several dead brokers at once, then wait for each: after kill-two or kill-all only
        starting them together lets a Raft majority form, so waiting for one first would deadlock."""
        ids = list(broker_ids)
        for broker_id in ids:
            b = self.broker(broker_id)
            if b.alive():
                raise RuntimeError(f"broker {broker_id} (pid {b.pid}) is still running; kill it before a restart")
            b.start(wait=False)
        self._note_started(ids)
        if wait:
            self._wait_ready(ids, timeout)

    def wipe(self, broker_id: int) -> None:
        """Delete a dead broker's data dir (a disk replaced after a crash) and format it again as a rejoining
        node, not an initial voter: a voter with an empty Raft log could elect a leader that lacks committed
        metadata (KIP-853). It keeps its id and ports; restart() brings it back."""
        self.broker(broker_id).lose_disk()

    def heal(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Undo every fault: SIGCONT the paused, restart the dead all at once, wait until each is ready."""
        for broker_id in self.paused_ids():
            self.resume(broker_id)
        self.restart_many(self.dead_ids(), wait=False)
        self._wait_ready(self.ids, timeout)

    def live_ids(self) -> list[int]:
        """Running and not paused: the brokers that can answer."""
        return [i for i in self.ids if self.broker(i).alive() and i not in self._paused]

    def paused_ids(self) -> list[int]:
        return sorted(self._paused)

    def dead_ids(self) -> list[int]:
        """Never started, exited or killed."""
        return [i for i in self.ids if not self.broker(i).alive()]

    def _note_started(self, broker_ids: Iterable[int]) -> None:
        self.started_pids += [self.pid(i) for i in broker_ids]

    def _wait_ready(self, broker_ids: Iterable[int], timeout: float) -> None:
        """Each broker answers, knows a controller and is registered and unfenced (one shared deadline)."""
        deadline = time.monotonic() + timeout
        for broker_id in broker_ids:
            self.broker(broker_id).wait_ready(max(deadline - time.monotonic(), 0.1))

    # ---- metadata ---------------------------------------------------------------

    def _answer(self, topics: list[str] | None = None) -> kafka_pb2.MetadataResponse | None:
        """The controller's own Metadata answer if a live broker claims to be it, else any live broker's.

        Asks the last known controller first; a broker that names another live broker
        as controller sends us there next.
        """
        live = self.live_ids()
        order = sorted(live, key=lambda i: i != self._controller_hint)
        tried: set[int] = set()
        fallback = None
        while order:
            broker_id = order.pop(0)
            if broker_id in tried:
                continue
            tried.add(broker_id)
            r = metadata(self.broker(broker_id), topics, METADATA_TIMEOUT_S)
            if r is None:
                continue
            if _controller(r) is not None:
                self._controller_hint = broker_id
                return r
            fallback = fallback or r
            if r.controller_id in live and r.controller_id not in tried:
                order.insert(0, r.controller_id)
        return fallback

    def controller_id(self) -> int | None:
        """The live broker that says it is the controller (Raft leader), None while there is none.

        A Raft leader that lost its majority keeps saying so (pysyncobj steps down only
        when it hears a higher term): during kill-two this names the lone survivor,
        whose metadata stays frozen until the others return.
        """
        return _controller(self._answer())

    def partitions(self, topic: str) -> list[PartitionInfo]:
        """Leader, epochs, ISR and replicas of each partition ([] if nobody answers or the topic is unknown)."""
        return _partition_infos(self._answer([topic]), topic)

    def leader_of(self, topic: str, partition: int) -> int | None:
        for p in self.partitions(topic):
            if p.partition == partition:
                return p.leader if p.leader >= 0 else None
        return None

    def fenced_ids(self) -> list[int]:
        """Registered brokers the controller has fenced (missed heartbeats or lost connections)."""
        return _fenced(self._answer([]))

    def sample(self, topic: str, t: float, label: str | None = None) -> dict:
        """A history "metadata" record; controller, partitions and fenced come from one answer, so they agree.
        ``label``: the name the history gives this incarnation of the topic (default: the topic's)."""
        r = self._answer([topic])
        return {"f": "metadata", "time": t, "controller": _controller(r),
                "partitions": [{**asdict(p), "topic": label or topic} for p in _partition_infos(r, topic)],
                "fenced": _fenced(r)}

    def create_topic(self, topic: str, partitions: int, replication_factor: int = 3, min_insync_replicas: int = 2,
                     timeout: float = READY_TIMEOUT_S, full_isr: bool = True) -> list[PartitionInfo]:
        """Create through the client's Admin and wait until every partition is led with a full ISR
        (``full_isr=False``: only led, for a topic created while one of its replicas is down)."""
        with Admin(self.bootstrap) as admin:
            admin.create_topic(topic, partitions, replication_factor,
                               config={"min.insync.replicas": str(min_insync_replicas)})
        return wait_for(lambda: self._replicated(topic, partitions, full_isr), timeout,
                        f"{topic}: {partitions} partitions led" + (", ISR = replicas" if full_isr else ""))

    def delete_topic(self, topic: str) -> None:
        """Delete through the client's Admin (the controller commits it; each live broker drops its logs)."""
        with Admin(self.bootstrap) as admin:
            admin.delete_topic(topic)

    def _replicated(self, topic: str, count: int | None = None, full_isr: bool = True) -> list[PartitionInfo] | None:
        parts = self.partitions(topic)
        if not parts or (count is not None and len(parts) != count):
            return None
        return parts if all(p.fully_replicated if full_isr else p.leader >= 0 for p in parts) else None

    # ---- the end of a run ---------------------------------------------------------

    def wait_healed(self, topic: str, bound_s: float) -> float | None:
        """Seconds until the controller sees every partition led with ISR == replicas and no broker fenced;
        None if not within ``bound_s``. Call it once every broker runs unpaused (heal())."""
        if self.dead_ids() or self.paused_ids():
            raise RuntimeError(f"heal first: dead {self.dead_ids()}, paused {self.paused_ids()}")
        started = time.monotonic()

        def healed() -> bool:
            r = self._answer([topic])
            parts = _partition_infos(r, topic)
            return (_controller(r) is not None and not _fenced(r)
                    and {b.broker_id for b in r.brokers} == set(self.ids)
                    and bool(parts) and all(p.fully_replicated for p in parts)
                    and self.images_agree(topic))
        try:
            wait_for(healed, bound_s, f"{topic} healed", 0.05)
        except AssertionError:
            return None
        return time.monotonic() - started

    def images_agree(self, topic: str) -> bool:
        """Every broker has applied the same metadata (the same metadata offset: the same batches, so the same
        image) and its own Metadata answer gives ``topic`` the same leaders, epochs and ISRs and the same
        brokers alive: after a heal, a broker cut off (or paused) must catch up, not serve an old image."""
        offsets, views = set(), set()
        for broker_id in self.ids:
            answer = describe_replicas_of(self.broker(broker_id), topic)
            r = metadata(self.broker(broker_id), [topic], METADATA_TIMEOUT_S)
            if answer is None or r is None:
                return False
            offsets.add(answer.metadata_offset)
            views.add((tuple(sorted((b.broker_id, b.alive) for b in r.brokers)), r.controller_id,
                       tuple((p.partition, p.leader, p.leader_epoch, p.partition_epoch, tuple(sorted(p.isr)))
                             for p in _partition_infos(r, topic))))
        return len(offsets) == 1 and len(views) == 1

    def final_read(self, topic: str, timeout: float = 30.0, label: str | None = None) -> list[dict]:
        """History "final" records: each partition read through its leader from the log start up to its HW.

        The leader's own copy below its HW is exactly what a consumer may see; take
        this after wait_healed, with producers stopped, so the HW holds still.
        ``label``: the topic's name in the history (an incarnation of a re-created topic).
        """
        out = []
        for p in self.partitions(topic):
            if p.leader < 0:
                raise RuntimeError(f"{topic}-{p.partition} has no leader; wait_healed first")
            leader = self.broker(p.leader)
            offsets = wait_for(lambda: replica_offsets(leader, topic, p.partition), timeout,
                               f"leader {p.leader} of {topic}-{p.partition} to answer")
            # With producers stopped and the ISR full, the HW reaches the log end once the followers
            # fetch again; a leader just restarted starts from its (older) HW checkpoint. Read after
            # that, or the final read would miss acknowledged records that are there.
            deadline = time.monotonic() + timeout
            while offsets.high_watermark < offsets.log_end_offset and time.monotonic() < deadline:
                time.sleep(0.05)
                offsets = replica_offsets(leader, topic, p.partition) or offsets
            records = read_replica(leader, topic, p.partition, offsets.high_watermark, timeout)
            out.append({"f": "final", "topic": label or topic, "partition": p.partition,
                        "records": [[o, _text(v)] for o, v in records],
                        "high_watermark": offsets.high_watermark, "log_start_offset": offsets.log_start_offset})
        return out

    def replica_dumps(self, topic: str, label: str | None = None) -> list[dict]:
        """History "replica" records: every replica's copy of every partition, straight from its segment files
        (everything up to its LEO, also what lies above the HW), each batch's offsets and leader epoch, with
        the HW and LEO the broker reports (-1 if it does not answer). Take it after wait_healed and a
        quiescence, so the files are complete. ``label`` as in final_read."""
        out = []
        for p in self.partitions(topic):
            # The replicas only: with 4 brokers a non-replica may keep a folder of a deleted incarnation,
            # which it serves to no one.
            for broker_id in sorted(p.replicas):
                b = self.broker(broker_id)
                if not partition_dir(b, topic, p.partition).exists():
                    continue
                offsets = replica_offsets(b, topic, p.partition) if broker_id in self.live_ids() else None
                data = log_bytes(b, topic, p.partition)
                out.append({"f": "replica", "broker": broker_id, "topic": label or topic, "partition": p.partition,
                            "records": [[r.offset, _text(r.value)] for r in decode_all(data)],
                            "batches": [[h.base_offset, h.last_offset, h.partition_leader_epoch, h.crc]
                                        for _, h in iter_batches(data)],
                            "high_watermark": offsets.high_watermark if offsets else -1,
                            "log_end_offset": offsets.log_end_offset if offsets else -1})
        return out
