"""Group nemeses: faults of a consumer group's coordinator and members, for group rounds (group_round.py).

    nemesis = make_group("group-kill-member")
    event = nemesis.start(ctx, rng)            # ctx: a GroupContext (cluster, topic, group, member processes)
    ...                                         # the round holds it: rng.uniform(*nemesis.hold_range(ctx))
    nemesis.heal(ctx)                           # brokers run again / the member continues / a replacement runs

- group-kill-coordinator-rebalance: a rebalance is started (a new member joins, or one is stopped with
  SIGTERM and leaves), and the moment the coordinator says the group is rebalancing, kill -9 of the
  coordinator (the broker leading the group's __consumer_offsets partition). Heal restarts it.
- group-kill-coordinator-commits: once every member commits (each commits after every poll), kill -9
  of the coordinator. Heal restarts it. An acknowledged commit must survive: the new coordinator
  loads the offsets partition, and nothing the group committed may go back.
- group-pause-member: SIGSTOP of one member for longer than its session timeout (+2 s): it is evicted
  and its partitions move; after SIGCONT it must find out (lost partitions, CommitFailedError) and rejoin.
- group-kill-member: kill -9 of one member; heal starts a replacement member.

Targets are picked with the round's ``rng`` from what the group and the cluster say right now. The
event's ``targets`` are broker ids (the history's nemesis record); the members hit are in ``members``.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from client.errors import KafkaError
from tests.chaos.nemesis import NemesisEvent

if TYPE_CHECKING:
    from tests.chaos.group_round import GroupContext

REBALANCE_SEEN_S = 10.0   # how long a rebalance may take to show at the coordinator before the kill anyway


class GroupNemesis:
    """A group fault. heal() by default restarts every dead broker (and continues paused ones)."""

    name = ""
    hold_s: tuple[float, float] = (1.0, 2.5)

    def __init__(self) -> None:
        self.members: list[str] = []     # the member processes hit (names)

    def start(self, ctx: "GroupContext", rng: random.Random) -> NemesisEvent:
        raise NotImplementedError

    def heal(self, ctx: "GroupContext") -> None:
        ctx.cluster.heal()

    def hold_range(self, ctx: "GroupContext") -> tuple[float, float]:
        return self.hold_s

    def _event(self, targets: list[int], detail: str) -> NemesisEvent:
        return NemesisEvent(self.name, sorted(set(targets)), detail)


def _coordinator_detail(ctx: "GroupContext", coordinator: int) -> str:
    controller = ctx.cluster.controller_id()
    leads = [p.partition for p in ctx.cluster.partitions(ctx.topic) if p.leader == coordinator]
    return (f"coordinator {coordinator} of group {ctx.group} (controller {controller}; it leads partitions "
            f"{leads} of {ctx.topic})")


def _state(ctx: "GroupContext") -> str:
    try:
        return ctx.describe().state
    except KafkaError as e:
        return f"unknown ({type(e).__name__})"


class KillCoordinatorRebalance(GroupNemesis):
    name = "group-kill-coordinator-rebalance"

    def start(self, ctx: "GroupContext", rng: random.Random) -> NemesisEvent:
        coordinator = ctx.wait_coordinator()
        detail = _coordinator_detail(ctx, coordinator)
        live = sorted(m.name for m in ctx.live_members())
        how = rng.choice(("join", "leave") if len(live) > 1 else ("join",))
        began = time.monotonic()
        if how == "join":
            m = ctx.spawn_member()
            self.members = [m.name]
            what = f"member {m.name} started (joins)"
        else:
            name = rng.choice(live)
            ctx.members[name].request_stop()   # SIGTERM: the member leaves the group on its way out
            self.members = [name]
            what = f"member {name} stopped with SIGTERM (leaves)"
        # The kill lands in the rebalance: as soon as the coordinator says the group is not Stable.
        state = _state(ctx)
        deadline = time.monotonic() + REBALANCE_SEEN_S
        while state == "Stable" and time.monotonic() < deadline:
            time.sleep(0.03)
            state = _state(ctx)
        seen = time.monotonic() - began
        ctx.cluster.kill(coordinator)
        note = (f"the group was {state} {seen:.2f} s after" if state != "Stable"
                else f"NO rebalance seen within {REBALANCE_SEEN_S:.0f} s of")
        return self._event([coordinator], f"{what}; kill -9 of the {detail}: {note} the start")


class KillCoordinatorCommits(GroupNemesis):
    name = "group-kill-coordinator-commits"

    def start(self, ctx: "GroupContext", rng: random.Random) -> NemesisEvent:
        coordinator = ctx.wait_coordinator()
        flowing = ctx.commits_flowing(0.5)
        if not flowing:   # the members commit after every poll with records: wait for a moment they all do
            deadline = time.monotonic() + 10
            while not flowing and time.monotonic() < deadline:
                time.sleep(0.05)
                flowing = ctx.commits_flowing(0.5)
        commits = sum(m.commits_ok for m in ctx.members.values())
        detail = _coordinator_detail(ctx, coordinator)
        ctx.cluster.kill(coordinator)
        return self._event([coordinator], f"kill -9 of the {detail} while the members commit ({commits} commits so "
                                          f"far; every member committed within 0.5 s: {flowing})")


class PauseMember(GroupNemesis):
    """Held past the member's session timeout (+2 s): the coordinator evicts it and rebalances."""
    name = "group-pause-member"

    def hold_range(self, ctx: "GroupContext") -> tuple[float, float]:
        return ctx.session_timeout_s + 2.0, ctx.session_timeout_s + 3.0

    def start(self, ctx: "GroupContext", rng: random.Random) -> NemesisEvent:
        m = ctx.members[rng.choice(sorted(m.name for m in ctx.live_members()))]
        m.refresh()
        m.pause()
        self.members = [m.name]
        return self._event([], f"SIGSTOP of member {m.name} (pid {m.pid}, generation {m.generation}, owns "
                               f"{list(m.assignment)}), past its {ctx.session_timeout_s:.1f} s session")

    def heal(self, ctx: "GroupContext") -> None:
        for name in self.members:
            ctx.members[name].resume()


class KillMember(GroupNemesis):
    """kill -9 of a member; heal starts a replacement (a new member id: the dead one leaves by its session)."""
    name = "group-kill-member"
    hold_s = (0.5, 2.0)

    def start(self, ctx: "GroupContext", rng: random.Random) -> NemesisEvent:
        m = ctx.members[rng.choice(sorted(m.name for m in ctx.live_members()))]
        m.refresh()
        m.kill()
        self.members = [m.name]
        return self._event([], f"kill -9 of member {m.name} (pid {m.pid}, generation {m.generation}, owned "
                               f"{list(m.assignment)})")

    def heal(self, ctx: "GroupContext") -> None:
        self.members.append(ctx.spawn_member().name)


GROUP_NEMESES: dict[str, type[GroupNemesis]] = {n.name: n for n in (
    KillCoordinatorRebalance, KillCoordinatorCommits, PauseMember, KillMember)}


def make_group(name: str) -> GroupNemesis:
    try:
        return GROUP_NEMESES[name]()
    except KeyError:
        raise ValueError(f"unknown group nemesis {name!r}; known: {', '.join(GROUP_NEMESES)}") from None
