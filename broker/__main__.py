"""kbroker --config cluster.toml --id N: run one broker until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
import sys

# gRPC core writes C-level lines straight to stderr; keep only its errors.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

EXIT_BAD_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kbroker", description="Run one raftka broker.")
    parser.add_argument("--config", default="cluster.toml", help="cluster file (default: cluster.toml)")
    parser.add_argument("--id", type=int, required=True, help="this broker's id in the cluster file")
    parser.add_argument("--log-format", choices=("console", "json"),
                        help="default: console on a terminal, json otherwise (env LOG_FORMAT)")
    args = parser.parse_args(argv)

    from broker.broker import Broker, PortInUseError
    from broker.config import ConfigError, load_cluster_config
    from broker.log.manager import DataDirLockedError, InconsistentDataDirError
    from broker.logging_setup import configure_logging

    try:
        cluster = load_cluster_config(args.config)
        cluster.broker(args.id)
    except ConfigError as e:
        print(f"kbroker: error: {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    configure_logging(args.id, args.log_format)
    broker = Broker(cluster, args.id)
    signal.signal(signal.SIGTERM, lambda *_: broker.request_stop())
    signal.signal(signal.SIGINT, lambda *_: broker.request_stop())
    try:
        broker.start()
    except (PortInUseError, DataDirLockedError, InconsistentDataDirError) as e:
        print(f"kbroker: error: {e}", file=sys.stderr)
        broker.stop()
        return EXIT_BAD_CONFIG
    broker.wait()
    broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
