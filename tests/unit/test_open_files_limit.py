"""A broker raises its open-files limit to the hard limit at start (broker.broker.raise_open_files_limit): each
partition log holds a file open, and thousands of partitions need thousands of files."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import resource
from broker.broker import raise_open_files_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
"""


def test_the_soft_limit_is_raised_to_the_hard_one():
    # In a child: this process's own limit stays as it was.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    returned, soft, hard = (int(x) for x in out.stdout.split())
    assert returned == soft > 256, out.stdout
    assert soft == hard or hard == -1, out.stdout   # -1: RLIM_INFINITY, capped at fs.nr_open
