"""Pre-vote: a node asks whether it would win before it stands (Raft thesis §9.6; KRaft's KIP-996).

Without it, a voter that cannot hear the leader for one election timeout stands at once with a
higher term, and any peer whose log is no longer than its own votes for it: the live controller
is deposed. A broker restarted at 10,000 partitions did exactly that. Its Raft node timed out
(0.4-0.8 s) before the leader's redial (1 s) reached it, and the follower it had dialled voted for
it: a controller election with nothing wrong. The same happens when a partitioned voter comes back.

So a node whose election timer fires first sends a PreVote for the term it would stand in. It
changes nothing on the peers. A peer grants it only when the candidate's log is at least as up to
date as its own, the term is higher than its own, and it has not heard from a leader within
``quiet_s``. A leader grants none. Only with a majority of grants (its own included) does the node
really stand; otherwise it waits another election timeout and asks again. Its term never rises
while a leader is alive, so when the leader's heartbeat reaches it, it follows.

``quiet_s`` is shorter than the minimum election timeout. When a leader dies, a peer's timer fires
at least that long after its last heartbeat, which the other voters heard at about the same moment,
so they already grant. A live leader's heartbeats (every appendEntriesPeriod) keep every peer it
reaches inside the window.

Plain state, no I/O: the Raft adapter (quorum.py, _RaftNode) sends and receives the messages on
pysyncobj's tick thread and passes ``now`` in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PRE_VOTE = "raftka_pre_vote"
PRE_VOTE_RESPONSE = "raftka_pre_vote_response"
# The window, as a share of the minimum election timeout, in which a heard leader counts as alive.
QUIET_SHARE = 0.75


@dataclass(frozen=True)
class LogPosition:
    """The last entry of a Raft log: compared by term, then index (Raft's "at least as up to date")."""
    term: int
    index: int

    def at_least(self, other: "LogPosition") -> bool:
        return (self.term, self.index) >= (other.term, other.index)


@dataclass
class PreVote:
    quiet_s: float
    last_leader_contact: float = float("-inf")   # when a current leader was last heard (or this node led)
    round_term: int | None = None                # the term the open round asks for
    granted_by: set[str] = field(default_factory=set)
    won_term: int | None = None                  # a round won, not yet taken by the election

    def heard_from_leader(self, now: float) -> None:
        """A leader of at least this node's term spoke (or this node leads): any round is moot."""
        self.last_leader_contact = now
        self.round_term = None
        self.won_term = None

    def start_round(self, current_term: int, last: LogPosition) -> dict:
        """The request to send every other voter, for the term this node would stand in."""
        self.round_term = current_term + 1
        self.granted_by = set()
        self.won_term = None
        return {"type": PRE_VOTE, "term": self.round_term, "last_log_term": last.term, "last_log_index": last.index}

    def refusal(self, request: dict, now: float, current_term: int, last: LogPosition, leading: bool) -> str | None:
        """Why this node refuses ``request`` (None: it grants). Granting changes nothing here."""
        if leading:
            return "this node is the leader"
        heard = now - self.last_leader_contact
        if heard < self.quiet_s:
            return f"heard from the leader {heard:.2f} s ago"
        if request.get("term", -1) <= current_term:
            return f"term {request.get('term')} is not above this node's {current_term}"
        asked = LogPosition(request.get("last_log_term", -1), request.get("last_log_index", -1))
        if not asked.at_least(last):
            return f"log at {asked.term}/{asked.index} is behind this node's {last.term}/{last.index}"
        return None

    @staticmethod
    def response(request: dict, refusal: str | None) -> dict:
        return {"type": PRE_VOTE_RESPONSE, "term": request.get("term"), "granted": refusal is None}

    def on_response(self, voter: str, response: dict, voters: int) -> bool:
        """Count a grant from ``voter``; True when it completes a majority of ``voters`` (self included)."""
        if self.round_term is None or response.get("term") != self.round_term or not response.get("granted"):
            return False
        self.granted_by.add(voter)
        if self.won_term is None and len(self.granted_by) + 1 > voters / 2:
            self.won_term = self.round_term
            return True
        return False

    def take_win(self, current_term: int) -> bool:
        """Whether a won round lets this node stand now, in ``current_term + 1`` (consumed if so)."""
        won = self.won_term is not None and self.won_term == current_term + 1
        if won:
            self.won_term = None
            self.round_term = None
        return won
