"""kbroker --config cluster.toml --id N: run one broker until SIGTERM or SIGINT.

With --restart-delay SECONDS the process is the broker's supervisor instead
(broker/supervisor.py): it runs the broker as a child and restarts it that many
seconds after any exit it did not cause.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys

# EXIT_BAD_CONFIG (2): configuration, port or data-dir lock error, which the supervisor does not restart.
from broker.supervisor import EXIT_BAD_CONFIG, EXIT_LOG_DIR_FAILURE, supervise

# gRPC core writes C-level lines straight to stderr; keep only its errors.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


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


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="kbroker", description="Run one raftka broker.")
    parser.add_argument("--config", default="cluster.toml", help="cluster file (default: cluster.toml)")
    parser.add_argument("--id", type=int, required=True, help="this broker's id in the cluster file")
    parser.add_argument("--log-format", choices=("console", "json"),
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
        child = [sys.executable, "-m", "broker", "--config", args.config, "--id", str(args.id)]
        if args.log_format:
            child += ["--log-format", args.log_format]
        return supervise(child, args.id, args.restart_delay)

    from broker.broker import Broker, PortInUseError
    from broker.log.manager import DataDirLockedError, DataDirUnusableError, InconsistentDataDirError
    from broker.metadata.quorum import QuorumStartError
    from broker.logging_setup import configure_logging
    from client.errors import KafkaStorageError

    configure_logging(args.id, args.log_format)
    broker = Broker(cluster, args.id)
    signal.signal(signal.SIGTERM, lambda *_: broker.request_stop())
    signal.signal(signal.SIGINT, lambda *_: broker.request_stop())
    try:
        broker.start()
    except (PortInUseError, DataDirLockedError, DataDirUnusableError, InconsistentDataDirError,
            QuorumStartError) as e:
        print(f"kbroker: error: {e}", file=sys.stderr)
        broker.stop()
        return EXIT_BAD_CONFIG
    except KafkaStorageError as e:   # a data dir that cannot be read or written at start-up
        print(f"kbroker: error: {e}", file=sys.stderr)
        return EXIT_LOG_DIR_FAILURE
    broker.wait()
    broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
