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
Raft links are different: every broker watches its own, whatever its role, so a
new controller knows how long a link has been down. When the old controller
and a broker died together (one process: the usual case), the new one fences
that broker at once instead of after a further two heartbeat intervals.
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
    link_down_since: dict[int, float] = field(default_factory=dict)   # absent: up (or never seen)
    activated_at: float = 0.0

    def activate(self, now: float) -> None:
        """A new controller: everyone gets a fresh session (the grace period). The link times
        stay: this broker observed them itself."""
        self.last_heartbeat.clear()
        self.activated_at = now

    def heartbeat(self, broker_id: int, now: float) -> None:
        self.last_heartbeat[broker_id] = now

    def set_link(self, broker_id: int, up: bool, now: float) -> None:
        if up:
            self.link_down_since.pop(broker_id, None)
        else:
            self.link_down_since.setdefault(broker_id, now)

    def fence_reason(self, broker_id: int, now: float) -> str | None:
        """Why ``broker_id`` should be fenced now, or None while it counts as alive."""
        heard = self.last_heartbeat.get(broker_id)
        if now - (self.activated_at if heard is None else heard) > self.session_timeout_s:
            return SESSION_TIMEOUT
        down_since = self.link_down_since.get(broker_id)
        if down_since is not None:
            # Its last sign of life: its last heartbeat to this controller, or, before the first
            # one, the moment its Raft link dropped.
            last_sign = down_since if heard is None else heard
            if now - last_sign > 2 * self.heartbeat_interval_s:
                return CONNECTION_LOST
        return None
