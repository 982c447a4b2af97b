"""LOG_FORMAT=story (make run's .env): the cluster's story, one event a line, without honcho's duplicates."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from raftka_testing.cluster import REPO

SCRIPT = """
import structlog
from broker.logging_setup import configure_logging
configure_logging(2, "story")
log = structlog.get_logger("t")
log.info("log_opened", topic="email.send", partition=0)
log.info("leader_elected", topic="email.send", partition=0, leader=2, leader_epoch=1, previous_leader=1)
log.info("became_leader", topic="__consumer_offsets", partition=7, leader_epoch=3)
log.warning("isr_updated", topic="email.send", partition=1, isr=[2, 3])
log.info("broker_fenced", broker=1, reason="connection_lost")
"""


def story(level: str | None = None) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("LOG_FORMAT", None)
    if level:
        env["LOG_LEVEL"] = level
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return out.stderr.splitlines()


def test_the_story_keeps_what_happened_and_drops_the_routine_and_the_duplicates():
    assert story() == [
        "leader_elected topic=email.send partition=0 leader=2 leader_epoch=1 previous_leader=1",
        "WARNING isr_updated topic=email.send partition=1 isr=[2, 3]",    # routine, but a warning stays
        "broker_fenced broker=1 reason=connection_lost",
    ]


def test_log_level_debug_tells_everything():
    lines = story("DEBUG")
    assert "log_opened topic=email.send partition=0" in lines
    assert "became_leader topic=__consumer_offsets partition=7 leader_epoch=3" in lines
    # honcho's prefix has the time and the broker: neither is repeated.
    assert not any("broker_id" in line or re.match(r"\d{4}-\d\d-\d\dT", line) for line in lines), lines
