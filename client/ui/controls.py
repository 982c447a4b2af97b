"""The page's broker buttons: kill -9, pause, resume and restart of a broker of the local `make run` cluster.

They act on the PID the broker wrote to <data_dir>/broker.pid (as `make kill BROKER=N` does) and only
after checking that this PID runs a broker with `--id N`: a stale PID file, left by a broker gone
since, must never send a signal to whatever process holds that number now.

They exist only when the page listens on loopback and every broker of cluster.toml has a loopback
host: then whoever can press them could already kill those processes from a shell on this machine.
Anywhere else the buttons are not drawn and the endpoints answer 403.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from client.ui.validation import RequestError, is_loopback_host

# restart is SIGTERM: the broker's controlled shutdown, and under `make run` the Procfile's
# `kbroker --restart-delay` supervisor starts it again after the delay.
ACTIONS: dict[str, signal.Signals] = {"kill": signal.SIGKILL, "pause": signal.SIGSTOP,
                                      "resume": signal.SIGCONT, "restart": signal.SIGTERM}
RESTART_NOTE = ("restart is SIGTERM (a controlled shutdown): under `make run` the broker's supervisor starts it "
                "again after its --restart-delay; without a supervisor, restart only stops it")


@dataclass(frozen=True)
class ControlledBroker:
    broker_id: int
    host: str
    port: int          # its client port: the page's address for it before it registers
    data_dir: Path


@dataclass(frozen=True)
class ControlPolicy:
    enabled: bool
    reason: str                        # why not (one line), or what restart means when enabled
    brokers: dict[int, ControlledBroker] = field(default_factory=dict)


def control_policy(bind_host: str, brokers: list[ControlledBroker] | None, config_error: str | None = None
                   ) -> ControlPolicy:
    """The rules: a cluster config given, the page on loopback, every broker in it on loopback."""
    if config_error is not None:
        return ControlPolicy(False, f"broker controls are off: {config_error}")
    if brokers is None:
        return ControlPolicy(False, "broker controls are off: start the page with --cluster-config cluster.toml "
                                    "(a local cluster) to get them")
    if not is_loopback_host(bind_host):
        return ControlPolicy(False, f"broker controls are off: the page listens on {bind_host}, not on loopback")
    remote = [b for b in brokers if not is_loopback_host(b.host)]
    if remote:
        return ControlPolicy(False, f"broker controls are off: broker {remote[0].broker_id} is on {remote[0].host}, "
                                    "not on this machine's loopback")
    return ControlPolicy(True, RESTART_NOTE, {b.broker_id: b for b in brokers})


def load_controlled_brokers(path: str) -> list[ControlledBroker]:
    """cluster.toml's brokers, read with the broker's own loader (data_dir relative to the file);
    ConfigError (one line) if the file is bad."""
    from broker.config import load_cluster_config   # the broker's loader: one parser for the file

    config = load_cluster_config(path)
    return [ControlledBroker(b.broker_id, b.host, b.port, b.data_dir) for b in config.brokers]


def process_args(pid: int) -> list[str] | None:
    """The command line of ``pid``, or None if no such process (Linux: /proc; elsewhere ps)."""
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self/cmdline").exists():
        try:
            return [a for a in proc.read_bytes().decode(errors="replace").split("\0") if a]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
    try:
        out = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.split() if out.returncode == 0 and out.stdout.strip() else None


def is_broker_process(args: list[str], broker_id: int) -> bool:
    """A broker (`python -m broker` or `kbroker`) started with `--id N` (the Makefile's kill check)."""
    runs_broker = any(a == "broker" or a == "kbroker" or a.endswith("/kbroker") for a in args)
    joined = " ".join(args)
    return runs_broker and re.search(rf"--id(=| ){broker_id}( |$)", joined) is not None


def broker_pid(broker: ControlledBroker) -> int:
    """The PID of the running broker, from its data dir's broker.pid, checked; RequestError 409 if none."""
    pid_file = broker.data_dir / "broker.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except FileNotFoundError:
        raise RequestError(409, f"broker {broker.broker_id} is not running (no {pid_file})") from None
    except (OSError, ValueError):
        raise RequestError(409, f"broker {broker.broker_id}: {pid_file} does not hold a PID") from None
    args = process_args(pid)
    if not args:    # gone, or a zombie nobody reaped yet (its command line is empty)
        raise RequestError(409, f"broker {broker.broker_id} is not running (PID {pid} from {pid_file} is gone)")
    if not is_broker_process(args, broker.broker_id):
        raise RequestError(409, f"PID {pid} from {pid_file} is not broker {broker.broker_id} (a stale file?): "
                                "nothing sent")
    return pid


def control_broker(policy: ControlPolicy, broker_id: int, action: str) -> str:
    """Send ``action``'s signal to broker ``broker_id``; the one line that says what was done."""
    if not policy.enabled:
        raise RequestError(403, policy.reason)
    if action not in ACTIONS:
        raise RequestError(404, f"unknown action {action[:40]!r}; one of {', '.join(ACTIONS)}")
    broker = policy.brokers.get(broker_id)
    if broker is None:
        raise RequestError(404, f"no broker {broker_id} in the cluster config "
                                f"(it names {', '.join(map(str, sorted(policy.brokers)))})")
    pid = broker_pid(broker)
    sig = ACTIONS[action]
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise RequestError(409, f"broker {broker_id} (PID {pid}) exited just now: nothing sent") from None
    except PermissionError:
        raise RequestError(403, f"not allowed to signal PID {pid} (broker {broker_id})") from None
    return f"{action}: {sig.name} sent to broker {broker_id} (PID {pid})"
