"""`kclient ui`: the live cluster page, in a process of its own (it outlives any broker's death).

    kclient ui --bootstrap :9092,:19092,:29092 [--host 127.0.0.1] [--port 8080] [--cluster-config cluster.toml]

Prints `raftka ui: http://127.0.0.1:8080/` once it listens. --cluster-config names the local
cluster's file: with it, and the page and every broker on loopback, the page has kill -9 / pause /
resume / restart buttons (controls.py). A port in use, or a bad file, is one line and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from client.connection import parse_bootstrap
from client.errors import KafkaError
from client.ui import controls
from client.ui.poller import ClusterWatch
from client.ui.snapshot import ControlsInfo

EXIT_USAGE = 2


def add_ui_parser(sub) -> None:
    u = sub.add_parser("ui", help="the live cluster page in a browser (brokers, partitions, metadata log, groups)")
    u.add_argument("--bootstrap", "--bootstrap-server", default=":9092", metavar="B",
                   help="broker(s) to start from, host:port[,host:port] (default :9092)")
    u.add_argument("--host", default="127.0.0.1", help="address the page listens on (default 127.0.0.1)")
    u.add_argument("--port", type=int, default=8080, help="its port (default 8080; 0 picks a free one)")
    u.add_argument("--cluster-config", metavar="PATH",
                   help="the local cluster's cluster.toml: adds kill / pause / resume / restart buttons "
                        "(only when the page and every broker are on loopback)")
    u.set_defaults(run=run_ui, error_prefix="kclient ui: ")


def run_ui(args: argparse.Namespace) -> int:
    if not 0 <= args.port < 65536:
        return _usage(f"--port {args.port} is out of range (0-65535)")
    try:
        parse_bootstrap(args.bootstrap)
    except KafkaError as e:
        return _usage(e.message)
    brokers = None
    if args.cluster_config:
        from broker.config import ConfigError
        try:
            brokers = controls.load_controlled_brokers(args.cluster_config)
        except ConfigError as e:
            return _usage(str(e))
    policy = controls.control_policy(args.host, brokers)
    configured = {b.broker_id: f"{b.host}:{b.port}" for b in brokers or ()}
    info = ControlsInfo(policy.enabled, policy.reason, list(controls.ACTIONS) if policy.enabled else [])
    logging.basicConfig(level=logging.WARNING, format="kclient ui: %(message)s", stream=sys.stderr)
    watch = ClusterWatch(args.bootstrap, info, configured)
    from client.ui.server import serve
    try:
        return asyncio.run(serve(watch, policy, args.host, args.port))
    except KeyboardInterrupt:
        return 0


def _usage(message: str) -> int:
    print(f"kclient ui: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE
