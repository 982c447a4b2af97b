"""Which brokers the controller should fence: heartbeats and dropped connections (Kafka's BrokerHeartbeatManager).

Plain state driven with ``now`` (monotonic seconds); no threads, sockets or clocks.
Two ways to die:

- a killed process drops its connections: its Raft link to the controller goes
  down and its heartbeats stop, so it is fenced once it has also missed two
  heartbeat intervals (a link that flaps under a live broker is not enough);
- a hung process (SIGSTOP) keeps its connections open: it is fenced when no
  heartbeat came for broker.session.timeout.ms.

Heartbeat times are soft state held only by the active controller, as in KRaft:
a controller that takes over starts every broker's clock at its activation
(the grace period), since it cannot know when the old one last heard from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SESSION_TIMEOUT = "session_timeout"
CONNECTION_LOST = "connection_lost"


@dataclass
class BrokerLiveness:
    heartbeat_interval_s: float
    session_timeout_s: float
    last_heartbeat: dict[int, float] = field(default_factory=dict)
    link_up: dict[int, bool] = field(default_factory=dict)
    activated_at: float = 0.0

    def activate(self, now: float) -> None:
        """A new controller: everyone gets a fresh session (the grace period)."""
        self.last_heartbeat.clear()
        self.link_up.clear()
        self.activated_at = now

    def heartbeat(self, broker_id: int, now: float) -> None:
        self.last_heartbeat[broker_id] = now

    def set_link(self, broker_id: int, up: bool) -> None:
        self.link_up[broker_id] = up

    def fence_reason(self, broker_id: int, now: float) -> str | None:
        """Why ``broker_id`` should be fenced now, or None while it counts as alive."""
        last = self.last_heartbeat.get(broker_id, self.activated_at)
        silent = now - last
        if silent > self.session_timeout_s:
            return SESSION_TIMEOUT
        if not self.link_up.get(broker_id, True) and silent > 2 * self.heartbeat_interval_s:
            return CONNECTION_LOST
        return None
