"""A broker process never imports hypothesis (a test dependency that kio picks up when importable):
it cost every broker 0.2 s, and in a fresh checkout 2.5 s and 240 MB of peak memory at start."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_broker_entry_point_keeps_hypothesis_out(tmp_path):
    probe = ("import sys, broker.__main__, broker.broker, broker.kafka_protocol.codec; "
             "print(sys.modules.get('hypothesis') is None)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    assert not (tmp_path / ".hypothesis").exists()
