"""kbroker --config cluster.toml --id N: run one broker until SIGTERM or SIGINT.

With --restart-delay SECONDS the process is the broker's supervisor instead
(broker/supervisor.py): it runs the broker as a child and restarts it that many
seconds after any exit it did not cause.

kbroker format --config cluster.toml --id N [--initial-voter] | --all-missing: format a data
dir once, before the broker's first start (broker/storage_format.py). A broker refuses to
start on an unformatted data dir.

kbroker cluster-file --brokers N [--voters K] [--out FILE [--procfile FILE]]: a cluster file (and
Procfile) for N local brokers, for `make run BROKERS=N` (broker/cluster_file.py).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tomllib
from pathlib import Path

# EXIT_BAD_CONFIG (2): configuration, port or data-dir lock error, which the supervisor does not restart.
from broker.supervisor import EXIT_BAD_CONFIG, EXIT_LOG_DIR_FAILURE, supervise

# gRPC core writes C-level lines straight to stderr; keep only its errors.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
# kio registers test strategies with hypothesis whenever hypothesis is importable (a test dependency,
# installed in the same venv). A broker never needs them, and importing hypothesis took 0.2 s, and the
# first time in a directory 2.5 s and 240 MB of peak memory (make bench: a 279 MB VmHWM per broker
# and an 8 s start in a fresh clone). Blocked here, kio goes without, as when hypothesis is absent.
sys.modules.setdefault("hypothesis", None)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < math.inf:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line like every other configuration error (argparse's own adds a usage block); still exit 2.
        self.exit(EXIT_BAD_CONFIG, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def format_main(argv: list[str]) -> int:
    """kbroker format: write meta.properties into data dirs that have none (see broker/storage_format.py)."""
    parser = _Parser(prog="kbroker format",
                     description="Format a broker's data dir once, before its first start (Kafka's kafka-storage "
                                 "format). A broker refuses to start on an unformatted data dir.")
    parser.add_argument("--config", default="cluster.toml", help="cluster file (default: cluster.toml)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, help="the broker whose data dir to format")
    which.add_argument("--all-missing", action="store_true",
                       help="every broker whose data dir has no meta.properties: as initial voters if none of "
                            "the data dirs exists yet (a brand-new cluster), else as rejoining (make run does this)")
    parser.add_argument("--initial-voter", action="store_true",
                        help="a broker of a brand-new cluster (give it to every broker of it): it votes from its "
                             "first start. Without it the broker (re)joins an existing cluster, for example after "
                             "its disk was lost, and votes only once it has caught up")
    args = parser.parse_args(argv)
    if args.all_missing and args.initial_voter:
        parser.error("--initial-voter goes with --id (--all-missing decides by itself)")

    from broker.config import ConfigError, load_cluster_config
    from broker.storage_format import FormatError, format_data_dir, format_missing

    try:
        cluster = load_cluster_config(args.config)
        if args.all_missing:
            done = [(f.broker_id, f.data_dir, f.meta.quorum_state) for f in format_missing(cluster)]
        else:
            cluster.broker(args.id)
            done = [(args.id, format_data_dir(cluster, args.id, args.initial_voter),
                     "voter" if args.initial_voter else "rejoining")]
    except (ConfigError, FormatError) as e:
        print(f"kbroker format: error: {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    for broker_id, data_dir, state in done:
        print(f"kbroker format: data dir {data_dir} of broker {broker_id} formatted ({state})")
    return 0


def cluster_file_main(argv: list[str]) -> int:
    """kbroker cluster-file: write a cluster file (and Procfile) for N local brokers (broker/cluster_file.py)."""
    from broker.cluster_file import MAX_BROKERS

    parser = _Parser(prog="kbroker cluster-file",
                     description="A cluster file for N local brokers in cluster.toml's shape (its cluster_id, "
                                 "cluster_secret and [config]), and the Procfile that runs them (make run BROKERS=N).")
    parser.add_argument("--brokers", type=int, required=True, help=f"how many brokers, 1 to {MAX_BROKERS}")
    parser.add_argument("--voters", type=int, metavar="K",
                        help="only the first K brokers vote in the metadata quorum and may become the controller "
                             "(controller_quorum_voters); the others are observers (default: every broker votes)")
    parser.add_argument("--template", default="cluster.toml",
                        help="the cluster file to copy cluster_id, cluster_secret and [config] from "
                             "(default: cluster.toml)")
    parser.add_argument("--data-root", default="data", metavar="DIR",
                        help="broker N's data dir is DIR/broker-N (default: data, as cluster.toml's)")
    parser.add_argument("--out", metavar="FILE", help="write the cluster file here (default: print it)")
    parser.add_argument("--procfile", metavar="FILE", help="also write the Procfile that runs --out's brokers")
    args = parser.parse_args(argv)
    if args.procfile and not args.out:
        parser.error("--procfile needs --out (its entries name the cluster file)")

    from broker.cluster_file import ClusterFileError, cluster_file_text, load_template, procfile_text
    from broker.config import ConfigError, parse_cluster_config

    try:
        out = Path(args.out) if args.out else None
        # The file's paths are relative to the file itself: say where the data dirs are from there.
        data_root = os.path.relpath(Path(args.data_root).resolve(), out.resolve().parent) if out else args.data_root
        text = cluster_file_text(args.brokers, args.voters, load_template(args.template), data_root)
        cluster = parse_cluster_config(tomllib.loads(text), out or Path("cluster.toml"))   # the broker's own checks
        if out is None:
            print(text, end="")
            return 0
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        if args.procfile:
            Path(args.procfile).parent.mkdir(parents=True, exist_ok=True)
            Path(args.procfile).write_text(procfile_text(args.brokers, args.out), encoding="utf-8")
    except (ClusterFileError, ConfigError) as e:
        print(f"kbroker cluster-file: error: {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except OSError as e:
        print(f"kbroker cluster-file: error: cannot write {e.filename}: {e.strerror}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    voters = ", ".join(map(str, cluster.quorum_voters))
    print(f"kbroker cluster-file: {out}: {args.brokers} brokers, voters {voters}"
          + (f"; Procfile {args.procfile}" if args.procfile else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["format"]:
        return format_main(argv[1:])
    if argv[:1] == ["cluster-file"]:
        return cluster_file_main(argv[1:])
    parser = _Parser(prog="kbroker", description="Run one raftka broker.",
                     epilog="Format a data dir before its broker's first start: kbroker format --help. "
                            "A cluster file for N brokers: kbroker cluster-file --help")
    parser.add_argument("--config", default="cluster.toml", help="cluster file (default: cluster.toml)")
    parser.add_argument("--id", type=int, required=True, help="this broker's id in the cluster file")
    parser.add_argument("--log-format", choices=("console", "json", "story"),
                        help="default: console on a terminal, json otherwise (env LOG_FORMAT)")
    parser.add_argument("--restart-delay", type=_seconds, metavar="SECONDS",
                        help="supervise: run the broker as a child process and restart it SECONDS "
                             "after it dies (kill -9, a crash, a SIGTERM sent to it alone); "
                             "exit code 2 (bad config, port in use, data dir locked) is not restarted")
    args = parser.parse_args(argv)

    from broker.config import ConfigError, load_cluster_config

    try:
        # Also before supervising: a bad file is one line from here, not the child's line plus
        # the supervisor's "not restarting".
        cluster = load_cluster_config(args.config)
        cluster.broker(args.id)
    except ConfigError as e:
        print(f"kbroker: error: {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG

    if args.restart_delay is not None:
        # Also before supervising: an unformatted data dir is one line, not a child's refusal.
        refused = _refuse_data_dir(cluster, args.config, args.id)
        if refused is not None:
            print(refused, file=sys.stderr)
            return EXIT_BAD_CONFIG
        child = [sys.executable, "-m", "broker", "--config", args.config, "--id", str(args.id)]
        if args.log_format:
            child += ["--log-format", args.log_format]
        return supervise(child, args.id, args.restart_delay)

    from broker.broker import Broker, PortInUseError
    from broker.supervisor import SignalWakeup
    from broker.log.manager import (DataDirLockedError, DataDirUnusableError, InconsistentDataDirError,
                                    UnformattedDataDirError)
    from broker.storage_format import rejoin_hint
    from broker.metadata.quorum import QuorumStartError
    from broker.logging_setup import configure_logging
    from client.errors import KafkaStorageError

    configure_logging(args.id, args.log_format)
    broker = Broker(cluster, args.id)
    # Not an Event set from the handler: a second SIGTERM landing while the first handler held the Event's
    # lock deadlocked the main thread on it (honcho signals the supervisor and its broker, and the supervisor
    # forwards one more), and honcho killed the broker 5 s later, before its clean stop.
    stop_signals = SignalWakeup()
    try:
        broker.start()
    except (PortInUseError, DataDirLockedError, DataDirUnusableError, InconsistentDataDirError,
            QuorumStartError) as e:
        print(f"kbroker: error: {e}", file=sys.stderr)
        broker.stop()
        return EXIT_BAD_CONFIG
    except UnformattedDataDirError as e:   # checked before anything is written: nothing was
        print(f"kbroker: error: {e}: {rejoin_hint(args.config, args.id)}", file=sys.stderr)
        broker.stop()
        return EXIT_BAD_CONFIG
    except KafkaStorageError as e:   # a data dir that cannot be read or written at start-up
        print(f"kbroker: error: {e}", file=sys.stderr)
        return EXIT_LOG_DIR_FAILURE
    while stop_signals.stop_signal is None:
        stop_signals.wait(None)
    broker.stop()
    return 0


def _refuse_data_dir(cluster, config_path: str, broker_id: int) -> str | None:
    """The one line kbroker prints for a data dir it would refuse to start on (unformatted, another
    cluster's or broker's), or None. Reads only."""
    from broker.log.manager import (DataDirUnusableError, InconsistentDataDirError, UnformattedDataDirError,
                                    check_meta)
    from broker.storage_format import rejoin_hint

    try:
        check_meta(cluster.broker(broker_id).data_dir, cluster.cluster_id, broker_id)
    except UnformattedDataDirError as e:
        return f"kbroker: error: {e}: {rejoin_hint(config_path, broker_id)}"
    except (InconsistentDataDirError, DataDirUnusableError) as e:
        return f"kbroker: error: {e}"
    return None


if __name__ == "__main__":
    sys.exit(main())
