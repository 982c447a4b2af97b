"""The committed gRPC stubs in client/protocol/ are what proto/generate.py makes from proto/."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "client" / "protocol"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def test_committed_stubs_match_a_fresh_generation(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "proto" / "generate.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"proto/generate.py failed:\n{run.stderr}"
    fresh = _files(tmp_path / "client" / "protocol")
    committed = _files(COMMITTED)
    assert fresh, "proto/generate.py generated nothing"
    missing = sorted(set(fresh) - set(committed))
    assert not missing, f"client/protocol/ lacks generated files {missing}: run make proto"
    stale = sorted(name for name in fresh if fresh[name] != committed[name])
    assert not stale, f"client/protocol/ files differ from proto/: {stale}: run make proto"
    extra = sorted(set(committed) - set(fresh))
    assert not extra, f"client/protocol/ has files no .proto generates: {extra} (stale? run make proto)"
