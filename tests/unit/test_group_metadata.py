"""GroupMetadata: one classic consumer group's join/sync/heartbeat/leave rules, driven with explicit now_ms."""

import uuid

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from broker.group.group_metadata import (NEW_MEMBER_JOIN_TIMEOUT_MS, GroupConfig, GroupMetadata, GroupState,
                                         HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
                                         LeaveGroupResponse, MemberIdentity, SyncGroupRequest, SyncGroupResponse)
from broker.invariants import InvariantViolation
from client.errors import (CoordinatorNotAvailableError, FencedInstanceIdError, GroupMaxSizeReachedError,
                           IllegalGenerationError, InconsistentGroupProtocolError, InvalidSessionTimeoutError, MemberIdRequiredError,
                           NotCoordinatorError, RebalanceInProgressError, UnknownMemberIdError)

RANGE = (("range", b"meta-range"),)
SESSION = 10_000
REBALANCE = 30_000


def _req(member_id="", client="a", protocols=RANGE, session=SESSION, rebalance=REBALANCE, require=True,
         protocol_type="consumer", instance=None) -> JoinGroupRequest:
    return JoinGroupRequest(member_id, client, "/10.0.0.1", session, rebalance, protocol_type, protocols,
                            instance, require)


def _answers(completions) -> dict:
    tickets = [t for t, _ in completions]
    assert len(tickets) == len(set(tickets)), f"a ticket answered twice: {tickets}"
    return dict(completions)


def _only(completions, ticket):
    assert [t for t, _ in completions] == [ticket]
    return completions[0][1]


def _member_id(g: GroupMetadata, client: str, now: int, **kw) -> str:
    resp = _only(g.join_group(("first", client), _req(client=client, **kw), now), ("first", client))
    assert type(resp.error) is MemberIdRequiredError
    return resp.member_id


def _complete_rebalance(g: GroupMetadata) -> tuple[list, int]:
    out, now = [], None
    while g.state is GroupState.PREPARING_REBALANCE:
        now = g.next_deadline_ms()
        out += g.tick(now)
    return out, now


def _stable_pair(cfg: GroupConfig | None = None):
    """a (leader) and b, Stable at generation 1, assignments b"A" and b"B"; returns (g, a, b, now)."""
    g = GroupMetadata("g", cfg or GroupConfig())
    a, b = _member_id(g, "a", 0), _member_id(g, "b", 0)
    assert g.join_group("ja", _req(a, "a"), 10) == []
    assert g.join_group("jb", _req(b, "b", protocols=(("range", b"meta-b"),)), 20) == []
    _, now = _complete_rebalance(g)
    assert g.sync_group("sb", SyncGroupRequest(b, 1), now) == []
    g.sync_group("sa", SyncGroupRequest(a, 1, ((a, b"A"), (b, b"B"))), now)
    assert g.state is GroupState.STABLE
    return g, a, b, now


def _hb(g, member_id, generation, now, ticket="hb"):
    return _only(g.heartbeat(ticket, HeartbeatRequest(member_id, generation), now), ticket).error


# ---- joining -----------------------------------------------------------------------------------------


def test_first_join_gets_member_id_required_with_a_pending_id():
    g = GroupMetadata("g")
    resp = _only(g.join_group(1, _req(client="consumer-1"), 0), 1)
    assert type(resp.error) is MemberIdRequiredError
    prefix, _, rest = resp.member_id.partition("-")
    assert prefix == "consumer" and rest.startswith("1-")
    uuid.UUID(resp.member_id[len("consumer-1-"):])
    assert resp.generation_id == -1 and resp.members == ()
    assert g.state is GroupState.EMPTY and g.members == {}
    assert g.pending_members == {resp.member_id: SESSION}
    assert g.next_deadline_ms() == SESSION


def test_two_members_join_through_the_initial_delay():
    g = GroupMetadata("g")
    a, b = _member_id(g, "a", 0), _member_id(g, "b", 0)
    assert a != b
    assert g.join_group("ja", _req(a, "a", protocols=(("range", b"A-sub"),)), 10) == []
    assert g.state is GroupState.PREPARING_REBALANCE
    assert g.next_deadline_ms() == 10 + 3000
    assert g.join_group("jb", _req(b, "b", protocols=(("range", b"B-sub"),)), 20) == []
    # Both joined, but a new group's first rebalance waits out its delay (no early completion) and,
    # since b arrived during it, one more delay.
    assert g.tick(3009) == []
    assert g.tick(3010) == []
    assert g.next_deadline_ms() == 6010
    assert g.tick(6009) == []
    answers = _answers(g.tick(6010))
    assert set(answers) == {"ja", "jb"}
    leader, follower = answers["ja"], answers["jb"]
    assert leader.error is None and follower.error is None
    assert (leader.member_id, follower.member_id) == (a, b)
    assert leader.generation_id == follower.generation_id == 1
    assert leader.leader == follower.leader == a
    assert leader.protocol_type == "consumer" and leader.protocol_name == "range"
    assert [(m.member_id, m.group_instance_id, m.metadata) for m in leader.members] == [
        (a, None, b"A-sub"), (b, None, b"B-sub")]
    assert follower.members == ()
    assert g.state is GroupState.COMPLETING_REBALANCE and g.generation_id == 1


def test_initial_delay_without_newcomers_completes_after_one_delay():
    g = GroupMetadata("g")
    a = _member_id(g, "a", 0)
    g.join_group("ja", _req(a), 100)
    assert g.tick(3099) == []
    resp = _only(g.tick(3100), "ja")
    assert resp.generation_id == 1 and resp.leader == a


def test_initial_delay_extensions_stop_at_the_rebalance_timeout():
    # Kafka's InitialDelayedJoin: remaining = rebalance timeout - delay, each extension is
    # min(delay, remaining) and remaining shrinks by the previous delay.
    g = GroupMetadata("g")
    ids = [_member_id(g, c, 0, rebalance=5000) for c in "abc"]
    g.join_group("ja", _req(ids[0], "a", rebalance=5000), 0)   # delay 3000, remaining 2000
    g.join_group("jb", _req(ids[1], "b", rebalance=5000), 100)
    assert g.tick(3000) == []                                  # extended by min(3000, 2000)
    assert g.next_deadline_ms() == 5000
    g.join_group("jc", _req(ids[2], "c", rebalance=5000), 4000)  # a newcomer again, but nothing remains
    answers = _answers(g.tick(5000))
    assert set(answers) == {"ja", "jb", "jc"}
    assert all(r.generation_id == 1 for r in answers.values())


def test_a_join_without_require_known_member_id_is_added_at_once():
    g = GroupMetadata("g", GroupConfig(group_initial_rebalance_delay_ms=0))
    assert g.join_group("j", _req(require=False, client="old"), 0) == []
    (member_id,) = g.members
    assert member_id.startswith("old-") and g.pending_members == {}
    resp = _only(g.tick(0), "j")
    assert resp.member_id == member_id and resp.generation_id == 1


def test_protocol_selection_by_vote():
    g = GroupMetadata("g", GroupConfig(group_initial_rebalance_delay_ms=0))
    prefs = {"a": (("roundrobin", b"a-rr"), ("range", b"a-range")),
             "b": (("range", b"b-range"), ("roundrobin", b"b-rr")),
             "c": (("range", b"c-range"), ("roundrobin", b"c-rr"))}
    for client, protocols in prefs.items():
        g.join_group(client, _req(require=False, client=client, protocols=protocols), 0)
    answers = _answers(g.tick(0))
    leader = answers["a"]
    assert leader.protocol_name == "range"  # two votes against one
    assert [m.metadata for m in leader.members] == [b"a-range", b"b-range", b"c-range"]


def test_protocol_vote_is_among_protocols_every_member_supports():
    g = GroupMetadata("g", GroupConfig(group_initial_rebalance_delay_ms=0))
    g.join_group("a", _req(require=False, client="a", protocols=(("sticky", b"s"), ("range", b"r"))), 0)
    g.join_group("b", _req(require=False, client="b", protocols=(("cooperative", b"c"), ("range", b"r"))), 0)
    assert _answers(g.tick(0))["a"].protocol_name == "range"


def test_leader_rejoin_in_stable_rebalances_and_keeps_the_leader():
    g, a, b, now = _stable_pair()
    assert g.join_group("ra", _req(a, "a"), now + 1) == []
    assert g.state is GroupState.PREPARING_REBALANCE
    assert type(_hb(g, b, 1, now + 2)) is RebalanceInProgressError
    answers = _answers(g.join_group("rb", _req(b, "b", protocols=(("range", b"meta-b"),)), now + 3))
    assert set(answers) == {"ra", "rb"}  # every member rejoined: no need to wait for the timeout
    assert answers["ra"].generation_id == 2 and answers["ra"].leader == a
    assert len(answers["ra"].members) == 2 and answers["rb"].members == ()


def test_follower_rejoin_in_stable_with_same_metadata_gets_the_current_generation():
    g, a, b, now = _stable_pair()
    resp = _only(g.join_group("rb", _req(b, "b", protocols=(("range", b"meta-b"),)), now), "rb")
    assert (resp.error, resp.generation_id, resp.leader, resp.members) == (None, 1, a, ())
    assert g.state is GroupState.STABLE


def test_follower_rejoin_in_stable_with_new_metadata_rebalances():
    g, a, b, now = _stable_pair()
    assert g.join_group("rb", _req(b, "b", protocols=(("range", b"new"),)), now) == []
    assert g.state is GroupState.PREPARING_REBALANCE
    resp = _answers(g.join_group("ra", _req(a, "a"), now + 1))["ra"]
    assert [m.metadata for m in resp.members] == [b"meta-range", b"new"]


def test_rejoin_in_completing_rebalance():
    g = GroupMetadata("g", GroupConfig(group_initial_rebalance_delay_ms=0))
    g.join_group("a", _req(require=False, client="a"), 0)
    g.join_group("b", _req(require=False, client="b"), 0)
    answers = _answers(g.tick(0))
    a, b = answers["a"].member_id, answers["b"].member_id
    # Same metadata: the lost answer again, the member list for the leader.
    again = _only(g.join_group("a2", _req(a, "a"), 5), "a2")
    assert again.generation_id == 1 and len(again.members) == 2
    assert g.sync_group("sb", SyncGroupRequest(b, 1), 6) == []
    # New metadata: a rebalance, and b's waiting SyncGroup is told to rejoin.
    answers = _answers(g.join_group("a3", _req(a, "a", protocols=(("range", b"changed"),)), 7))
    assert set(answers) == {"sb"} and type(answers["sb"].error) is RebalanceInProgressError
    assert g.state is GroupState.PREPARING_REBALANCE


# ---- join errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("session", [5999, 1_800_001])
def test_join_with_session_timeout_out_of_range(session):
    g = GroupMetadata("g")
    resp = _only(g.join_group(1, _req(session=session), 0), 1)
    assert type(resp.error) is InvalidSessionTimeoutError
    assert g.pending_members == {}


@pytest.mark.parametrize("session", [6000, 1_800_000])
def test_join_with_session_timeout_at_the_bounds(session):
    assert type(_only(GroupMetadata("g").join_group(1, _req(session=session), 0), 1).error) is MemberIdRequiredError


def test_join_with_an_unknown_member_id():
    g, _, _, now = _stable_pair()
    resp = _only(g.join_group(1, _req("stranger-1"), now), 1)
    assert type(resp.error) is UnknownMemberIdError and resp.member_id == "stranger-1"
    resp = _only(GroupMetadata("h").join_group(2, _req("stranger-2"), 0), 2)
    assert type(resp.error) is UnknownMemberIdError


@pytest.mark.parametrize("protocol_type,protocols", [
    ("connect", RANGE),                     # another protocol type
    ("consumer", (("sticky", b""),)),       # nothing in common with the members
    ("consumer", ()),                       # no protocols at all
])
def test_join_with_inconsistent_protocols(protocol_type, protocols):
    g, _, _, now = _stable_pair()
    resp = _only(g.join_group(1, _req(protocol_type=protocol_type, protocols=protocols), now), 1)
    assert type(resp.error) is InconsistentGroupProtocolError and resp.member_id == ""
    assert g.pending_members == {}


@pytest.mark.parametrize("protocol_type,protocols", [("", RANGE), ("consumer", ())])
def test_an_empty_group_refuses_an_empty_protocol_type_or_list(protocol_type, protocols):
    resp = _only(GroupMetadata("g").join_group(1, _req(protocol_type=protocol_type, protocols=protocols), 0), 1)
    assert type(resp.error) is InconsistentGroupProtocolError


def test_group_max_size():
    g = GroupMetadata("g", GroupConfig(group_max_size=1))
    a = _member_id(g, "a", 0)  # an Empty group takes anyone
    g.join_group("ja", _req(a, "a"), 0)
    resp = _only(g.join_group(2, _req(client="b"), 1), 2)
    assert type(resp.error) is GroupMaxSizeReachedError and resp.member_id == ""
    _complete_rebalance(g)
    resp = _only(g.join_group(3, _req(client="c"), 10_000), 3)
    assert type(resp.error) is GroupMaxSizeReachedError


def test_join_a_dead_group():
    g, a, _, now = _stable_pair()
    g.mark_dead()
    assert type(_only(g.join_group(1, _req(a), now), 1).error) is CoordinatorNotAvailableError
    assert type(_only(g.join_group(2, _req(), now), 2).error) is CoordinatorNotAvailableError


def test_a_second_join_while_the_first_waits_answers_the_first():
    g = GroupMetadata("g")
    a = _member_id(g, "a", 0)
    g.join_group("j1", _req(a), 10)
    resp = _only(g.join_group("j2", _req(a), 20), "j1")
    assert type(resp.error) is RebalanceInProgressError
    assert _only(g.tick(3010), "j2").generation_id == 1


def test_a_static_member_joins_without_member_id_required():
    g = GroupMetadata("g", GroupConfig(group_initial_rebalance_delay_ms=0))
    assert g.join_group(1, _req(instance="host-7"), 0) == []          # waits for the rebalance, no round trip
    leader = _only(g.tick(0), 1)
    assert leader.error is None and leader.member_id.startswith("host-7-")
    assert [(m.member_id, m.group_instance_id) for m in leader.members] == [(leader.member_id, "host-7")]


def _static_stable_pair():
    """Static a (instance "host-a", the leader) and dynamic b, Stable at generation 1 with b"A" / b"B"."""
    g = GroupMetadata("g", GroupConfig(group_initial_rebalance_delay_ms=0))
    b = _member_id(g, "b", 0)
    assert g.join_group("ja", _req(client="a", instance="host-a"), 0) == []
    g.join_group("jb", _req(b, "b"), 0)
    joined = _answers(_complete_rebalance(g)[0])
    a = joined["ja"].member_id
    g.sync_group("sb", SyncGroupRequest(b, 1), 1)
    g.sync_group("sa", SyncGroupRequest(a, 1, ((a, b"A"), (b, b"B")), "host-a"), 1)
    assert g.state is GroupState.STABLE and g.leader_id == a
    return g, a, b


def test_a_restarted_static_member_takes_its_old_place_without_a_rebalance():
    g, old, b = _static_stable_pair()
    back = _only(g.join_group("again", _req(client="a", instance="host-a"), 100), "again")
    # The same generation at once; the leader named is the old id, so the new one does not assign.
    assert back.error is None and back.generation_id == 1 and back.leader == old and back.members == ()
    new = back.member_id
    assert new != old and new.startswith("host-a-") and g.state is GroupState.STABLE and g.leader_id == new
    synced = _only(g.sync_group("s", SyncGroupRequest(new, 1, (), "host-a"), 101), "s")
    assert (synced.error, synced.assignment) == (None, b"A")
    # The old process, if it still runs, is fenced everywhere it names the instance.
    assert type(_only(g.heartbeat("h", HeartbeatRequest(old, 1, "host-a"), 102), "h").error) is FencedInstanceIdError
    assert type(g.validate_offset_commit(old, 1, "host-a")) is FencedInstanceIdError
    assert g.validate_offset_commit(new, 1, "host-a") is None
    left = _only(g.leave_group("l", [MemberIdentity(old, "host-a")], 103), "l")
    assert type(left.members[0].error) is FencedInstanceIdError and new in g.members
    assert _hb(g, b, 1, 104) is None                                  # b never noticed


def test_a_static_member_returning_mid_rebalance_fences_its_old_join_and_takes_its_place():
    g, old, b = _static_stable_pair()
    assert g.join_group("ja2", _req(old, "a", instance="host-a"), 200) == []   # the leader asks for a rebalance
    assert g.state is GroupState.PREPARING_REBALANCE
    fenced = _only(g.join_group("again", _req(client="a", instance="host-a"), 201), "ja2")
    assert type(fenced.error) is FencedInstanceIdError and old not in g.members
    done = _answers(g.join_group("jb2", _req(b, "b"), 202))                  # everyone has joined now
    assert set(done) == {"again", "jb2"}
    new = done["again"].member_id
    assert done["again"].error is None and done["again"].generation_id == 2 and done["again"].leader == new
    assert [m.member_id for m in done["again"].members] == [b, new] or \
        {m.member_id for m in done["again"].members} == {b, new}


def test_a_static_member_returning_with_a_new_preferred_protocol_rebalances():
    g = GroupMetadata("g", GroupConfig(group_initial_rebalance_delay_ms=0))
    g.join_group("j", _req(client="a", instance="host-a"), 0)
    old = _only(g.tick(0), "j").member_id
    g.sync_group("s", SyncGroupRequest(old, 1, ((old, b"A"),), "host-a"), 1)
    assert g.state is GroupState.STABLE
    # Its vote now goes to roundrobin: the group's protocol would change, so it rebalances (at once: it is
    # the only member, and it has joined).
    joined = _only(g.join_group("again", _req(client="a", instance="host-a",
                                              protocols=(("roundrobin", b"x"), ("range", b"y"))), 2), "again")
    assert (joined.error, joined.generation_id, joined.protocol_name) == (None, 2, "roundrobin")
    assert joined.leader == joined.member_id != old and old not in g.members


# ---- sync --------------------------------------------------------------------------------------------


def test_follower_sync_waits_and_the_leader_completes_both():
    g = GroupMetadata("g")
    a, b = _member_id(g, "a", 0), _member_id(g, "b", 0)
    g.join_group("ja", _req(a, "a"), 0)
    g.join_group("jb", _req(b, "b"), 0)
    _, now = _complete_rebalance(g)
    assert g.sync_group("sb", SyncGroupRequest(b, 1), now + 1) == []
    assert g.state is GroupState.COMPLETING_REBALANCE
    answers = _answers(g.sync_group("sa", SyncGroupRequest(a, 1, ((a, b"for-a"), (b, b"for-b"))), now + 2))
    assert set(answers) == {"sa", "sb"}
    assert answers["sa"] == SyncGroupResponse(None, b"for-a", "consumer", "range")
    assert answers["sb"] == SyncGroupResponse(None, b"for-b", "consumer", "range")
    assert g.state is GroupState.STABLE
    assert g.sync_deadline_ms is None


def test_leader_sync_gives_missing_members_empty_bytes_and_ignores_strangers():
    g = GroupMetadata("g")
    a, b = _member_id(g, "a", 0), _member_id(g, "b", 0)
    g.join_group("ja", _req(a, "a"), 0)
    g.join_group("jb", _req(b, "b"), 0)
    _, now = _complete_rebalance(g)
    g.sync_group("sb", SyncGroupRequest(b, 1), now)
    answers = _answers(g.sync_group("sa", SyncGroupRequest(a, 1, ((a, b"x"), ("ghost", b"y"))), now))
    assert answers["sb"].assignment == b"" and answers["sb"].error is None
    assert "ghost" not in g.members


def test_sync_in_stable_returns_the_current_assignment():
    g, a, b, now = _stable_pair()
    assert _only(g.sync_group(1, SyncGroupRequest(b, 1), now + 5), 1) == SyncGroupResponse(
        None, b"B", "consumer", "range")
    assert g.members[b].heartbeat_deadline_ms == now + 5 + SESSION   # a SyncGroup counts as a heartbeat
    # The leader's assignments in Stable change nothing.
    assert _only(g.sync_group(2, SyncGroupRequest(a, 1, ((b, b"other"),)), now + 6), 2).assignment == b"A"
    assert g.members[b].assignment == b"B"


@pytest.mark.parametrize("change,error", [
    (dict(member_id="stranger"), UnknownMemberIdError),
    (dict(generation_id=0), IllegalGenerationError),
    (dict(generation_id=2), IllegalGenerationError),
    (dict(protocol_type="connect"), InconsistentGroupProtocolError),
    (dict(protocol_name="roundrobin"), InconsistentGroupProtocolError),
])
def test_sync_errors(change, error):
    g, _, b, now = _stable_pair()
    fields = dict(member_id=b, generation_id=1, protocol_type="consumer", protocol_name="range") | change
    resp = _only(g.sync_group(1, SyncGroupRequest(**fields), now), 1)
    assert type(resp.error) is error and resp.assignment == b""


def test_sync_with_matching_protocol_fields_succeeds():
    g, _, b, now = _stable_pair()
    resp = _only(g.sync_group(1, SyncGroupRequest(b, 1, protocol_type="consumer", protocol_name="range"), now), 1)
    assert resp.error is None and resp.assignment == b"B"


def test_sync_while_preparing_rebalance_and_when_dead():
    g, a, b, now = _stable_pair()
    g.join_group("ra", _req(a, "a"), now)
    assert type(_only(g.sync_group(1, SyncGroupRequest(b, 1), now), 1).error) is RebalanceInProgressError
    g.mark_dead()
    assert type(_only(g.sync_group(2, SyncGroupRequest(b, 1), now), 2).error) is CoordinatorNotAvailableError


def test_a_second_sync_while_the_first_waits_answers_the_first():
    g = GroupMetadata("g")
    a, b = _member_id(g, "a", 0), _member_id(g, "b", 0)
    g.join_group("ja", _req(a, "a"), 0)
    g.join_group("jb", _req(b, "b"), 0)
    _, now = _complete_rebalance(g)
    g.sync_group("s1", SyncGroupRequest(b, 1), now)
    assert type(_only(g.sync_group("s2", SyncGroupRequest(b, 1), now + 1), "s1").error) is RebalanceInProgressError
    answers = _answers(g.sync_group("sa", SyncGroupRequest(a, 1, ((b, b"B"),)), now + 2))
    assert set(answers) == {"sa", "s2"} and answers["s2"].assignment == b"B"


def test_sync_timeout_removes_members_that_never_synced():
    g = GroupMetadata("g")
    a, b = _member_id(g, "a", 0), _member_id(g, "b", 0)
    g.join_group("ja", _req(a, "a"), 0)
    g.join_group("jb", _req(b, "b"), 0)
    _, done = _complete_rebalance(g)
    g.sync_group("sa", SyncGroupRequest(a, 1, ((a, b"A"), (b, b"B"))), done + 1)
    assert g.state is GroupState.STABLE and g.sync_deadline_ms == done + REBALANCE
    for t in range(done + 5000, done + REBALANCE, 5000):  # b heartbeats, so its session lives on
        assert _hb(g, b, 1, t) is None
        assert _hb(g, a, 1, t) is None
    assert g.tick(done + REBALANCE - 1) == []
    assert g.tick(done + REBALANCE) == []
    assert list(g.members) == [a]
    assert g.state is GroupState.PREPARING_REBALANCE
    assert type(_hb(g, b, 1, done + REBALANCE + 1)) is UnknownMemberIdError
    resp = _only(g.join_group("ra", _req(a, "a"), done + REBALANCE + 2), "ra")
    assert resp.generation_id == 2 and [m.member_id for m in resp.members] == [a]


def test_a_sync_before_the_deadline_disarms_the_sync_timeout():
    g, a, b, now = _stable_pair()
    assert g.sync_deadline_ms is None
    assert g.next_deadline_ms() == now + SESSION  # only the sessions now


# ---- heartbeat ---------------------------------------------------------------------------------------


def test_heartbeat_answers_in_each_state():
    g = GroupMetadata("g")
    a, b = _member_id(g, "a", 0), _member_id(g, "b", 0)
    assert type(_hb(g, a, 0, 0)) is UnknownMemberIdError               # Empty: a is only pending
    g.join_group("ja", _req(a, "a"), 0)
    g.join_group("jb", _req(b, "b"), 0)
    assert type(_hb(g, a, 0, 1)) is RebalanceInProgressError           # PreparingRebalance
    _, now = _complete_rebalance(g)
    assert _hb(g, b, 1, now) is None                                    # CompletingRebalance
    assert type(_hb(g, b, 0, now)) is IllegalGenerationError
    g.sync_group("sb", SyncGroupRequest(b, 1), now)
    g.sync_group("sa", SyncGroupRequest(a, 1, ()), now)
    assert _hb(g, b, 1, now) is None                                    # Stable
    assert type(_hb(g, b, 2, now)) is IllegalGenerationError
    assert type(_hb(g, "stranger", 1, now)) is UnknownMemberIdError
    g.mark_dead()
    assert type(_hb(g, b, 1, now)) is CoordinatorNotAvailableError     # Dead


def test_heartbeat_resets_the_session_timer():
    g, a, b, now = _stable_pair()
    assert g.members[b].heartbeat_deadline_ms == now + SESSION
    assert _hb(g, b, 1, now + 9000) is None
    assert g.members[b].heartbeat_deadline_ms == now + 9000 + SESSION
    assert _hb(g, a, 1, now + 9000) is None
    assert g.tick(now + SESSION + 1) == []
    assert set(g.members) == {a, b}


def test_session_expiry_rebalances_the_other_member():
    g, a, b, now = _stable_pair()
    _hb(g, b, 1, now + 5000)
    assert g.tick(now + SESSION - 1) == []
    assert g.tick(now + SESSION) == []               # a (the leader) expires
    assert list(g.members) == [b] and g.leader_id == b
    assert g.state is GroupState.PREPARING_REBALANCE
    assert type(_hb(g, b, 1, now + SESSION + 1)) is RebalanceInProgressError
    resp = _only(g.join_group("rb", _req(b, "b", protocols=(("range", b"meta-b"),)), now + SESSION + 2), "rb")
    assert resp.generation_id == 2 and resp.leader == b
    assert [m.member_id for m in resp.members] == [b]


def test_rebalance_timeout_drops_a_member_that_did_not_rejoin():
    g, a, b, now = _stable_pair()
    assert g.join_group("ra", _req(a, "a"), now) == []
    for t in range(now + 5000, now + REBALANCE, 5000):
        assert type(_hb(g, b, 1, t)) is RebalanceInProgressError  # alive, but never rejoins
    assert g.tick(now + REBALANCE - 1) == []
    resp = _only(g.tick(now + REBALANCE), "ra")
    assert resp.generation_id == 2 and [m.member_id for m in resp.members] == [a]
    assert list(g.members) == [a]
    assert type(_hb(g, b, 1, now + REBALANCE + 1)) is UnknownMemberIdError


def test_a_member_waiting_on_a_rebalance_does_not_expire():
    g, a, b, now = _stable_pair()
    g.join_group("ra", _req(a, "a"), now)   # a waits on its join; both sessions end at now + SESSION
    resp = _only(g.tick(now + SESSION), "ra")
    assert list(g.members) == [a]           # b expired, a did not, and the rebalance completed without b
    assert resp.generation_id == 2 and g.state is GroupState.COMPLETING_REBALANCE


def test_a_new_members_join_expires_after_the_new_member_timeout():
    g, a, b, now = _stable_pair(GroupConfig())
    c = _member_id(g, "c", now, rebalance=600_000)
    assert g.join_group("jc", _req(c, "c", rebalance=600_000), now) == []   # a and b never rejoin
    for t in range(now + 5000, now + NEW_MEMBER_JOIN_TIMEOUT_MS, 5000):
        _hb(g, a, 1, t)
        _hb(g, b, 1, t)
        assert g.tick(t) == []              # c's session (10 s) does not apply while it waits
    assert g.members[c].heartbeat_deadline_ms == now + NEW_MEMBER_JOIN_TIMEOUT_MS
    resp = _only(g.tick(now + NEW_MEMBER_JOIN_TIMEOUT_MS), "jc")
    assert type(resp.error) is UnknownMemberIdError and resp.member_id == ""
    assert set(g.members) == {a, b}


def test_a_pending_member_holds_the_rebalance_until_it_expires():
    g, a, b, now = _stable_pair()
    c = _member_id(g, "c", now, session=20_000)
    g.join_group("ra", _req(a, "a"), now + 1)
    for t in (now + 5000, now + 9000, now + 15_000):
        _hb(g, b, 1, t)
    assert g.join_group("rb", _req(b, "b", protocols=(("range", b"meta-b"),)), now + 15_000) == []  # c pending
    answers = _answers(g.tick(now + 20_000))
    assert set(answers) == {"ra", "rb"} and answers["ra"].generation_id == 2
    assert c not in g.pending_members and c not in g.members


# ---- leave -------------------------------------------------------------------------------------------


def test_leave_answers_each_member_and_rebalances():
    g, a, b, now = _stable_pair()
    out = g.leave_group("l", [MemberIdentity(b), MemberIdentity("stranger")], now)
    resp = _only(out, "l")
    assert resp.error is None
    assert [(m.member_id, type(m.error)) for m in resp.members] == [(b, type(None)), ("stranger", UnknownMemberIdError)]
    assert list(g.members) == [a] and g.state is GroupState.PREPARING_REBALANCE
    assert _only(g.join_group("ra", _req(a, "a"), now + 1), "ra").generation_id == 2


def test_the_last_member_leaving_empties_the_group():
    g, a, b, now = _stable_pair()
    g.leave_group("l1", [MemberIdentity(a)], now)
    g.leave_group("l2", [MemberIdentity(b)], now)
    assert g.state is GroupState.EMPTY and g.members == {} and g.leader_id is None
    assert g.generation_id == 2 and g.protocol_name is None
    assert g.protocol_type == "consumer"
    assert g.next_deadline_ms() is None


def test_leave_while_waiting_answers_the_join_and_completes_the_rebalance():
    g, a, b, now = _stable_pair()
    g.join_group("ra", _req(a, "a"), now)
    answers = _answers(g.leave_group("l", [MemberIdentity(b)], now + 1))
    assert set(answers) == {"l", "ra"}       # b was the one the rebalance waited for
    assert answers["ra"].generation_id == 2
    assert type(_only(g.join_group("rb", _req(b, "b"), now + 2), "rb").error) is UnknownMemberIdError
    g.leave_group("l2", [MemberIdentity(a)], now + 3)
    assert g.state is GroupState.EMPTY and g.generation_id == 3


def test_leave_of_a_member_waiting_on_its_join_answers_it_unknown():
    g, a, b, now = _stable_pair()
    g.join_group("ra", _req(a, "a"), now)
    answers = _answers(g.leave_group("l", [MemberIdentity(a)], now + 1))
    assert type(answers["ra"].error) is UnknownMemberIdError and answers["ra"].member_id == ""
    assert list(g.members) == [b] and g.leader_id == b


def test_a_member_leaving_while_its_sync_waits_gets_an_answer():
    g = GroupMetadata("g")
    a, b = _member_id(g, "a", 0), _member_id(g, "b", 0)
    g.join_group("ja", _req(a, "a"), 0)
    g.join_group("jb", _req(b, "b"), 0)
    _, now = _complete_rebalance(g)
    g.sync_group("sb", SyncGroupRequest(b, 1), now)
    answers = _answers(g.leave_group("l", [MemberIdentity(b)], now + 1))
    assert set(answers) == {"l", "sb"} and type(answers["sb"].error) is UnknownMemberIdError
    assert list(g.members) == [a] and g.state is GroupState.PREPARING_REBALANCE


def test_leave_of_a_pending_member_and_by_instance_id():
    g = GroupMetadata("g", GroupConfig(group_initial_rebalance_delay_ms=0))
    p = _member_id(g, "p", 0)
    g.join_group("j", _req(require=False, client="s", instance="inst-1"), 0)
    _only(g.tick(0), "j")
    resp = _only(g.leave_group("l", [MemberIdentity(p), MemberIdentity("", "inst-1"), MemberIdentity("", "nope")], 1),
                 "l")
    assert [type(m.error) for m in resp.members] == [type(None), type(None), UnknownMemberIdError]
    assert g.pending_members == {} and g.members == {} and g.state is GroupState.EMPTY


def test_leave_a_dead_group():
    g, a, _, now = _stable_pair()
    g.mark_dead(CoordinatorNotAvailableError())
    resp = _only(g.leave_group("l", [MemberIdentity(a)], now), "l")
    assert type(resp.error) is CoordinatorNotAvailableError and resp.members == ()


# ---- offset commits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("member,generation,error", [
    ("", -1, None),                        # standalone commit (assign() users)
    ("anyone", -1, None),                  # Kafka: generation < 0 on an Empty group is enough
    ("anyone", 3, UnknownMemberIdError),
    ("", 0, UnknownMemberIdError),
])
def test_offset_commit_on_an_empty_group(member, generation, error):
    result = GroupMetadata("g").validate_offset_commit(member, generation)
    assert (result is None) if error is None else type(result) is error


def test_offset_commit_on_a_group_with_members():
    g, a, b, now = _stable_pair()
    assert g.validate_offset_commit(b, 1) is None
    assert type(g.validate_offset_commit(b, 0)) is IllegalGenerationError
    assert type(g.validate_offset_commit("stranger", 1)) is UnknownMemberIdError
    assert type(g.validate_offset_commit("", -1)) is UnknownMemberIdError      # only members commit
    g.join_group("ra", _req(a, "a"), now)
    assert g.state is GroupState.PREPARING_REBALANCE
    assert g.validate_offset_commit(b, 1) is None    # Kafka lets the old generation commit here
    g.join_group("rb", _req(b, "b", protocols=(("range", b"meta-b"),)), now)
    assert g.state is GroupState.COMPLETING_REBALANCE
    assert type(g.validate_offset_commit(b, 2)) is RebalanceInProgressError
    assert type(g.validate_offset_commit(b, 1)) is IllegalGenerationError
    g.mark_dead()
    assert type(g.validate_offset_commit(b, 2)) is CoordinatorNotAvailableError


def test_an_accepted_commit_restarts_the_session_only_when_given_now():
    g, _, b, now = _stable_pair()
    g.validate_offset_commit(b, 1)
    assert g.members[b].heartbeat_deadline_ms == now + SESSION
    g.validate_offset_commit(b, 1, now_ms=now + 7000)
    assert g.members[b].heartbeat_deadline_ms == now + 7000 + SESSION
    g.validate_offset_commit(b, 0, now_ms=now + 8000)   # refused: no restart
    assert g.members[b].heartbeat_deadline_ms == now + 7000 + SESSION


# ---- describe and death ------------------------------------------------------------------------------


def test_describe_in_each_state():
    g = GroupMetadata("g")
    d = g.describe()
    assert (d.state, d.protocol_type, d.protocol, d.members) == ("Empty", "", "", ())
    g, a, b, now = _stable_pair()
    d = g.describe()
    assert (d.group_id, d.state, d.protocol_type, d.protocol) == ("g", "Stable", "consumer", "range")
    assert [(m.member_id, m.client_id, m.client_host, m.metadata, m.assignment) for m in d.members] == [
        (a, "a", "/10.0.0.1", b"meta-range", b"A"), (b, "b", "/10.0.0.1", b"meta-b", b"B")]
    g.join_group("ra", _req(a, "a"), now)
    d = g.describe()
    assert (d.state, d.protocol) == ("PreparingRebalance", "")
    assert [(m.member_id, m.metadata, m.assignment) for m in d.members] == [(a, b"", b""), (b, b"", b"")]
    g.join_group("rb", _req(b, "b"), now)
    assert g.describe().state == "CompletingRebalance"
    g.mark_dead()
    d = g.describe()
    assert (d.state, d.protocol_type, d.members) == ("Dead", "", ())


@pytest.mark.parametrize("error,expected", [(None, NotCoordinatorError),
                                            (CoordinatorNotAvailableError(), CoordinatorNotAvailableError)])
def test_mark_dead_answers_waiting_joins(error, expected):
    g, a, b, now = _stable_pair()
    g.join_group("ra", _req(a, "a"), now)
    resp = _only(g.mark_dead(error), "ra")
    assert type(resp) is JoinGroupResponse and type(resp.error) is expected and resp.member_id == a
    assert g.state is GroupState.DEAD and g.next_deadline_ms() is None and g.tick(now + 10**9) == []


def test_mark_dead_answers_waiting_syncs():
    g = GroupMetadata("g")
    a, b = _member_id(g, "a", 0), _member_id(g, "b", 0)
    g.join_group("ja", _req(a, "a"), 0)
    g.join_group("jb", _req(b, "b"), 0)
    _, now = _complete_rebalance(g)
    g.sync_group("sb", SyncGroupRequest(b, 1), now)
    resp = _only(g.mark_dead(), "sb")
    assert type(resp) is SyncGroupResponse and type(resp.error) is NotCoordinatorError


@pytest.mark.parametrize("corrupt,name", [
    (lambda g, a, b: setattr(g, "leader_id", "gone"), "group_leader_is_member"),
    (lambda g, a, b: setattr(g.members[b], "assignment", None), "group_stable_members_assigned"),
    (lambda g, a, b: setattr(g.members[a], "join_ticket", "t"), "group_join_waits_while_preparing"),
    (lambda g, a, b: g.members.clear() or setattr(g, "leader_id", None), "group_members_match_state"),
])
def test_check_invariants_names_what_broke(corrupt, name):
    g, a, b, _ = _stable_pair()
    g.check_invariants()
    corrupt(g, a, b)
    with pytest.raises(InvariantViolation) as raised:
        g.check_invariants()
    assert raised.value.name == name


def test_a_ticket_must_not_be_none():
    with pytest.raises(ValueError):
        GroupMetadata("g").join_group(None, _req(), 0)


# ---- random sequences --------------------------------------------------------------------------------

PROTOCOL_CHOICES = [RANGE, (("roundrobin", b"rr"), ("range", b"r2")), (("sticky", b"s"),), ()]
CLIENTS = 4


class GroupMachine(RuleBasedStateMachine):
    """A few clients send joins, syncs, heartbeats, leaves and commits, acting on the answers they
    get as consumers do (plus stale and bogus ids), while time jumps; after every step the group's
    waiting requests must be exactly those not answered yet, and its invariants must hold."""

    def __init__(self):
        super().__init__()
        self.g = GroupMetadata("g", GroupConfig(group_min_session_timeout_ms=1000, group_max_session_timeout_ms=60_000,
                                                group_initial_rebalance_delay_ms=3000, group_max_size=3))
        self.now = 0
        self.tickets = 0
        # ticket -> (the answer's type, the sending client, its member id and generation then)
        self.outstanding: dict[int, tuple[type, int, str, int]] = {}
        self.member_id = [""] * CLIENTS
        self.generation = [-1] * CLIENTS
        self.synced = [False] * CLIENTS                   # got its assignment for its generation
        self.must_rejoin = [False] * CLIENTS
        self.leader_of: dict[str, list[str]] = {}          # a leader's member list, by its member id
        self.joined_generation: dict[str, int] = {}        # member id -> generation of its last join answer
        self.assignments: dict[int, dict[str, bytes]] = {}  # generation -> what its leader assigned
        self.highest_generation = 0

    def _send(self, answer_type: type, c: int, member_id: str, generation: int) -> int:
        self.tickets += 1
        self.outstanding[self.tickets] = (answer_type, c, member_id, generation)
        return self.tickets

    def _absorb(self, completions) -> None:
        tickets = [t for t, _ in completions]
        assert len(tickets) == len(set(tickets)), "a ticket answered twice in one call"
        for ticket, resp in completions:
            assert ticket in self.outstanding, f"ticket {ticket} answered but not pending"
            answer_type, c, member_id, generation = self.outstanding.pop(ticket)
            assert type(resp) is answer_type
            if type(resp) is JoinGroupResponse:
                self._on_join(c, resp)
            elif type(resp) is SyncGroupResponse and resp.error is None:
                assert resp.assignment == self.assignments[generation].get(member_id, b"")
                self.synced[c] = True
            elif type(resp.error) in (RebalanceInProgressError, IllegalGenerationError) and c >= 0:
                self.must_rejoin[c] = True
            elif type(resp.error) is UnknownMemberIdError and c >= 0 and self.member_id[c] == member_id:
                self.member_id[c], self.generation[c] = "", -1

    def _on_join(self, c: int, resp: JoinGroupResponse) -> None:
        if resp.error is None:
            assert resp.generation_id <= self.g.generation_id
            self.joined_generation[resp.member_id] = resp.generation_id
            if resp.leader == resp.member_id:
                ids = [m.member_id for m in resp.members]
                assert resp.member_id in ids and len(ids) == len(set(ids))
                self.leader_of[resp.member_id] = ids
            else:
                assert resp.members == ()
        if resp.error is None or type(resp.error) is MemberIdRequiredError:
            self.member_id[c], self.generation[c] = resp.member_id, resp.generation_id
            self.synced[c] = self.must_rejoin[c] = False
        elif type(resp.error) is UnknownMemberIdError:
            self.member_id[c], self.generation[c] = "", -1

    def _waiting(self, c: int) -> bool:
        return any(sender == c and kind is not HeartbeatResponse for kind, sender, _, _ in self.outstanding.values())

    @rule(c=st.integers(0, CLIENTS - 1))
    def act_as_a_consumer(self, c):
        """The consumer's loop: get an id, join, sync, heartbeat; rejoin when told to; wait for answers."""
        if self._waiting(c):
            return
        if self.member_id[c] == "" or self.generation[c] < 0 or self.must_rejoin[c]:
            self.join(c, "own", RANGE, "consumer", 5000, 5000, True)
        elif not self.synced[c]:
            self.sync(c, stale=False)
        else:
            self.heartbeat(c)

    @rule()
    def every_consumer_acts(self):
        for c in range(CLIENTS):
            self.act_as_a_consumer(c)

    @rule(c=st.integers(0, CLIENTS - 1), which=st.sampled_from(["own", "own", "empty", "bogus"]),
          protocols=st.sampled_from(PROTOCOL_CHOICES + [RANGE] * 3),
          protocol_type=st.sampled_from(["consumer"] * 5 + ["x"]),
          session=st.sampled_from([500, 5000, 5000, 20_000]), rebalance=st.sampled_from([5000, 20_000]),
          require=st.booleans())
    def join(self, c, which, protocols, protocol_type, session, rebalance, require):
        member_id = {"own": self.member_id[c], "empty": "", "bogus": "bogus-1"}[which]
        ticket = self._send(JoinGroupResponse, c, member_id, -1)
        self._absorb(self.g.join_group(ticket, JoinGroupRequest(member_id, f"c{c}", "h", session, rebalance,
                                                                protocol_type, protocols, None, require), self.now))

    @rule(c=st.integers(0, CLIENTS - 1), stale=st.booleans())
    def sync(self, c, stale):
        member_id, generation = self.member_id[c], self.generation[c] - (1 if stale else 0)
        assignments: tuple = ()
        if member_id in self.leader_of:
            # The last member is left out on purpose: it must get empty bytes.
            assignments = tuple((m, f"{m}@{generation}".encode()) for m in self.leader_of[member_id][:-1])
            g = self.g
            if (generation, g.state, g.leader_id) == (g.generation_id, GroupState.COMPLETING_REBALANCE, member_id):
                self.assignments[generation] = dict(assignments)
        ticket = self._send(SyncGroupResponse, c, member_id, generation)
        self._absorb(self.g.sync_group(ticket, SyncGroupRequest(member_id, generation, assignments), self.now))

    @rule(c=st.integers(0, CLIENTS - 1))
    def heartbeat(self, c):
        ticket = self._send(HeartbeatResponse, c, self.member_id[c], self.generation[c])
        self._absorb(self.g.heartbeat(ticket, HeartbeatRequest(self.member_id[c], self.generation[c]), self.now))

    @rule(cs=st.sets(st.integers(0, CLIENTS - 1), max_size=2), stranger=st.booleans())
    def leave(self, cs, stranger):
        identities = [MemberIdentity(self.member_id[c]) for c in sorted(cs)]
        identities += [MemberIdentity("stranger")] if stranger else []
        ticket = self._send(LeaveGroupResponse, -1, "", -1)
        out = self.g.leave_group(ticket, identities, self.now)
        self._absorb(out)
        resp = dict(out)[ticket]
        assert len(resp.members) == len(identities) or type(resp.error) is CoordinatorNotAvailableError
        for c in cs:
            self.member_id[c], self.generation[c] = "", -1

    @rule(c=st.integers(0, CLIENTS - 1))
    def commit(self, c):
        error = self.g.validate_offset_commit(self.member_id[c], self.generation[c], now_ms=self.now)
        assert error is None or type(error) in (UnknownMemberIdError, IllegalGenerationError,
                                                RebalanceInProgressError, CoordinatorNotAvailableError)

    @rule(step=st.sampled_from([0, 1, 500, 1000, 1000, 3000, 5000, 20_000, 300_001]))
    def tick(self, step):
        self.now += step
        self._absorb(self.g.tick(self.now))

    @rule()
    def tick_at_the_next_deadline(self):
        deadline = self.g.next_deadline_ms()
        if deadline is not None:
            self.now = deadline
            self._absorb(self.g.tick(self.now))

    @precondition(lambda self: self.tickets > 60)
    @rule(not_coordinator=st.booleans())
    def die(self, not_coordinator):
        self._absorb(self.g.mark_dead(NotCoordinatorError() if not_coordinator else CoordinatorNotAvailableError()))

    @invariant()
    def no_request_lost_or_answered_twice(self):
        held = [t for m in self.g.members.values() for t in (m.join_ticket, m.sync_ticket) if t is not None]
        assert len(held) == len(set(held)), "one ticket waits twice"
        assert set(held) == set(self.outstanding), "a waiting request was dropped, or an answered one still waits"

    @invariant()
    def group_invariants(self):
        g = self.g
        g.check_invariants()
        assert g.generation_id >= self.highest_generation
        self.highest_generation = g.generation_id
        if g.members and g.state is not GroupState.DEAD:
            assert g.leader_id in g.members
        if g.state is GroupState.STABLE:
            for member_id, m in g.members.items():
                assert m.assignment is not None
                assert self.joined_generation.get(member_id) == g.generation_id
        # Due now is fine (a DelayedJoin of a group whose members all left has timeout 0: the caller
        # ticks at once); in the past would mean a tick missed a timer.
        deadline = g.next_deadline_ms()
        assert deadline is None or deadline >= self.now, "a timer was left overdue"


TestGroupMachine = GroupMachine.TestCase
TestGroupMachine.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
