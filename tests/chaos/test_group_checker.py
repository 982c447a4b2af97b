"""The group checker (group_checker.py) on hand-made histories: a clean one passes, and each invariant
broken on purpose is caught and counted (and what is legitimate is not)."""

from __future__ import annotations

import json

from tests.chaos.group_checker import ANOMALIES, check_group, check_group_file

T = "t"
M1, M2 = "member-1-id", "member-2-id"


def send(p: int, offset: int, value: str, t: float, outcome: str = "ok") -> dict:
    return {"f": "send", "producer": "p0", "value": value, "key": "k", "topic": T, "partition": p,
            "outcome": outcome, "offset": offset if outcome == "ok" else None, "invoked": t, "completed": t + 0.01}


def assign(member: str, member_id: str, generation: int, partitions: list[int], t: float) -> dict:
    return {"f": "gm-assign", "member": member, "time": t, "generation": generation, "member_id": member_id,
            "partitions": partitions, "assignment": partitions}


def state(member: str, member_id: str, generation: int, partitions: list[int], t: float) -> dict:
    return {"f": "gm-state", "member": member, "time": t, "generation": generation, "member_id": member_id,
            "assignment": partitions}


def read(member: str, p: int, records: list[tuple[int, str]], t: float, generation: int = 1) -> dict:
    return {"f": "gm-read", "member": member, "time": t, "topic": T, "partition": p, "generation": generation,
            "member_id": M1 if member == "m1" else M2, "records": [list(r) for r in records]}


def commit(member: str, offsets: dict[int, int], invoked: float, completed: float, generation: int = 1,
           error: str | None = None) -> dict:
    return {"f": "gm-commit", "member": member, "time": completed, "invoked": invoked, "topic": T,
            "generation": generation, "member_id": M1 if member == "m1" else M2,
            "offsets": sorted([p, o] for p, o in offsets.items()),
            "outcome": "ok" if error is None else "error", "error": error, "detail": None}


def sample(offsets: dict[int, int], invoked: float, completed: float) -> dict:
    return {"f": "gm-sample", "invoked": invoked, "time": completed, "topic": T,
            "offsets": sorted([p, o] for p, o in offsets.items())}


def stable(stable_s: float | None, bound_s: float = 20.0) -> dict:
    return {"f": "gm-stable", "time": 50.0, "heal_time": 49.0, "stable_s": stable_s, "bound_s": bound_s,
            "view": "generation 2"}


def clean() -> list[dict]:
    """Two members split two partitions in generation 1, read every acked record, commit as they go; a
    nemesis, m2 is evicted (lost), m1 takes both partitions in generation 2 from the committed offsets
    and reads p1's rest again (at-least-once); the sampler sees the committed offsets only grow."""
    h = [send(0, i, f"p0-{i}", 1.0 + i / 10) for i in range(5)] + [send(1, i, f"p1-{i}", 1.0 + i / 10)
                                                                   for i in range(4)]
    h += [send(0, -1, "p0-x", 1.5, outcome="info")]   # an unknown send: nothing to read
    h += [assign("m1", M1, 1, [0], 2.0), assign("m2", M2, 1, [1], 2.0), state("m1", M1, 1, [0], 2.1),
          state("m2", M2, 1, [1], 2.1)]
    h += [read("m1", 0, [(0, "p0-0"), (1, "p0-1")], 3.0), commit("m1", {0: 2}, 3.0, 3.1),
          read("m2", 1, [(0, "p1-0"), (1, "p1-1")], 3.0), commit("m2", {1: 2}, 3.0, 3.2),
          sample({0: 2, 1: 2}, 3.3, 3.4),
          read("m1", 0, [(2, "p0-2"), (3, "p0-3"), (4, "p0-4")], 4.0), commit("m1", {0: 5}, 4.0, 4.1),
          read("m2", 1, [(2, "p1-2")], 4.0)]
    h += [{"f": "nemesis", "kind": "group-pause-member", "targets": [], "phase": "start", "time": 4.5,
           "detail": "SIGSTOP of m2", "members": ["m2"]},
          sample({0: 5, 1: 2}, 5.0, 5.1),
          # m2 comes back after its eviction: a zombie commit fails, its partitions are lost
          commit("m2", {1: 3}, 12.0, 12.1, error="CommitFailedError"),
          {"f": "gm-lost", "member": "m2", "time": 12.2, "generation": 1, "member_id": M2, "now_generation": -1,
           "partitions": [1]},
          assign("m1", M1, 2, [0, 1], 9.0), state("m1", M1, 2, [0, 1], 9.1),
          read("m1", 1, [(2, "p1-2"), (3, "p1-3")], 9.5, generation=2), commit("m1", {0: 5, 1: 4}, 9.5, 9.6, 2),
          sample({0: 5, 1: 4}, 10.0, 10.1), stable(1.5)]
    return h


def test_a_clean_history_passes_with_its_counts():
    result = check_group(clean())
    assert result.ok, result.format()
    assert (result.acked, result.read, result.lost, result.re_read) == (9, 9, 0, 1)
    assert result.commits == 4 and dict(result.commit_errors) == {"CommitFailedError": 1}
    assert result.samples == 3 and result.max_commit_regression == 0
    assert result.lost_callbacks == 1 and result.generations == 2 and result.members == 2
    assert result.stable_s == 1.5


def test_a_commit_going_backwards_is_caught():
    # generation 2's new owner of p0 commits 3 after the group had committed 5 there: a rolled-back commit
    h = clean() + [commit("m1", {0: 3}, 11.0, 11.1, 2)]
    result = check_group(h)
    assert result.commit_regression == 1 and result.sample_regression == 0, result.format()
    assert result.max_commit_regression == 2
    assert not result.ok and "commit 3" in result.examples["commit_regression"][0]


def test_a_commit_below_what_a_sample_saw_is_a_regression():
    h = clean() + [sample({0: 9}, 10.5, 10.6), commit("m1", {0: 6}, 11.0, 11.1, 2)]
    result = check_group(h)
    assert result.commit_regression == 1 and result.max_commit_regression == 3, result.format()


def test_overlapping_commits_are_not_ordered():
    # a lower commit invoked before the higher one completed (m2 stopped between its answer and writing
    # it down, say): real time does not order them, so it is not a regression
    # m1 commits p1 = 4 from 9.5 to 9.6; m2's p1 = 3, sent at 9.55, overlaps it
    result = check_group(clean() + [commit("m2", {1: 3}, 9.55, 9.9)])
    assert result.ok, result.format()
    # the same commit sent after m1's completed is ordered after it, and behind it
    result = check_group(clean() + [commit("m2", {1: 3}, 9.65, 9.9)])
    assert result.commit_regression == 1 and result.max_commit_regression == 1, result.format()


def test_a_sampled_offset_going_backwards_is_caught():
    h = clean() + [sample({0: 4, 1: 4}, 10.5, 10.6)]
    result = check_group(h)
    assert result.sample_regression == 1 and result.commit_regression == 0, result.format()
    assert result.max_commit_regression == 1


def test_a_sample_below_an_acknowledged_commit_is_caught():
    # a coordinator that forgot an acknowledged commit: nothing else committed, but the sample is behind
    h = clean() + [commit("m1", {1: 9}, 10.2, 10.3, 2), sample({0: 5, 1: 4}, 10.5, 10.6)]
    result = check_group(h)
    assert result.sample_regression == 1 and result.max_commit_regression == 5, result.format()
    assert "after commit 9" in result.examples["sample_regression"][0]


def test_two_owners_in_one_generation_are_caught():
    h = clean() + [state("m2", M2, 2, [1], 9.2)]   # m1 owns p0 and p1 in generation 2
    result = check_group(h)
    assert result.double_owner == 1, result.format()
    assert "partition 1 owned in generation 2" in result.examples["double_owner"][0]


def test_the_same_partition_in_different_generations_is_fine():
    h = clean() + [state("m2", M2, 3, [1], 13.0)]
    assert check_group(h).double_owner == 0


def test_an_acked_record_never_read_is_lost():
    h = [r for r in clean() if not (r["f"] == "gm-read" and r["partition"] == 1 and r["records"][-1][0] == 3)]
    result = check_group(h)
    assert result.lost == 1 and result.read == 8, result.format()
    assert "p1-3 acked at t-1@3" in result.examples["lost"][0]


def test_another_value_read_at_an_acked_offset_is_inconsistent():
    h = clean() + [send(1, 4, "p1-4", 8.0), read("m1", 1, [(4, "other")], 9.7, generation=2)]
    result = check_group(h)
    assert result.inconsistent_read == 1 and result.lost == 0, result.format()


def test_a_group_not_stable_in_time_is_caught():
    late = [r for r in clean() if r["f"] != "gm-stable"] + [stable(25.0)]
    never = [r for r in clean() if r["f"] != "gm-stable"] + [stable(None)]
    missing = [r for r in clean() if r["f"] != "gm-stable"]
    for h in (late, never, missing):
        result = check_group(h)
        assert result.not_stable == 1 and set(result.anomalies) == {"not_stable"}, result.format()


def test_every_anomaly_is_formatted_and_a_file_reads_the_same(tmp_path):
    h = clean() + [commit("m1", {0: 3}, 11.0, 11.1, 2)]
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in h))
    result = check_group_file(path)
    assert result.commit_regression == 1
    text = result.format()
    assert all(name in text for name in ANOMALIES) and "FAILED (commit_regression 1)" in text
