"""kclient: Kafka's console tools for raftka (topics, produce, consume, groups, cluster, perf).

Output follows kafka-topics.sh / kafka-console-producer.sh / kafka-console-consumer.sh,
kafka-consumer-groups.sh for groups, and kafka-producer-perf-test.sh / kafka-consumer-perf-test.sh
for perf (client/perf.py).
Errors are one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeAlias

import grpc

from client.admin import Admin, GroupDescription, TopicDescription
from client.client import KafkaClient
from client.consumer import Consumer
from client.metadata_log import MetadataStory, read_metadata_log
from client.replica_state import replica_rows, replica_table
from client.errors import InvalidRequestError, KafkaError, UnknownTopicOrPartitionError
from client.perf import SettingError, consumer_prop, producer_prop, run_consumer, run_producer
from client.producer import Producer
from client.trace import MermaidTracer, stderr_tracer
from client.ui.cli_ui import add_ui_parser

EXIT_ERROR = 1


class UsageError(Exception):
    """A bad combination of flags: printed like argparse's own errors, exit 2."""


class CommandError(Exception):
    """A refusal the tool itself decides (Kafka's tool prints "Error: ..."): one line, exit 1."""


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # no C-level gRPC lines in a user's terminal
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as e:
        parser.error(str(e))
    except (KafkaError, CommandError) as e:
        print(f"{args.error_prefix}{e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as e:
        return 143 if isinstance(e, Terminated) else 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # quiet exit under `| head`
        return 0
    finally:
        if getattr(args, "mermaid", None) is not None:  # the hops so far, even after an error
            print(args.mermaid.render(), file=sys.stderr)
    return 0


# argparse's sub-parser registry; its class is private, so name it once here.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kclient", description="Talk to a raftka cluster.")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{topics,produce,consume,groups,cluster,metadata-log,leader-election,perf,ui}")
    # The order here is the order `kclient --help` lists the subcommands in.
    for add in (add_topics_parser, add_produce_parser, add_consume_parser, add_groups_parser, add_cluster_parser,
                add_metadata_log_parser, add_leader_election_parser, add_perf_parser, add_ui_parser):
        add(sub)
    return parser


def add_common_args(p: argparse.ArgumentParser, trace: bool = True) -> None:
    p.add_argument("--bootstrap", "--bootstrap-server", default=":9092", metavar="B",
                   help="broker(s) to start from, host:port[,host:port]; ':19092' is localhost (default :9092)")
    if not trace:  # perf: a line per hop of every record would be the measurement
        return
    p.add_argument("--trace", nargs="?", const="text", choices=("text", "mermaid"),
                   help="print every hop on stderr: as lines (text, the default) or, at the end, as a "
                        "mermaid sequenceDiagram (mermaid)")


def add_topics_parser(sub: Subparsers) -> None:
    t = sub.add_parser("topics", help="create, list, describe, alter, delete topics (kafka-topics.sh)")
    add_common_args(t)
    action = t.add_mutually_exclusive_group(required=True)
    for flag in ("--create", "--list", "--describe", "--alter", "--delete"):
        action.add_argument(flag, action="store_true")
    t.add_argument("--topic")
    t.add_argument("--partitions", type=int, default=-1,
                   help="with --create: the partition count (default: num.partitions); with --alter: the new, "
                        "higher count (keyed records may then map to other partitions)")
    t.add_argument("--replication-factor", type=int, default=-1)
    t.add_argument("--config", action="append", default=[], metavar="K=V", help="topic config (repeatable)")
    t.add_argument("--if-not-exists", action="store_true")
    t.add_argument("--if-exists", action="store_true")
    t.add_argument("--replicas", action="store_true",
                   help="with --describe: each replica's log start, high watermark and log end as its own broker "
                        "sees them, and its lag as the leader counts it (DescribeReplicas on every broker)")
    t.set_defaults(run=run_topics, error_prefix="Error while executing topic command : ")


def add_produce_parser(sub: Subparsers) -> None:
    p = sub.add_parser("produce", help="send stdin lines as records (kafka-console-producer.sh)")
    add_common_args(p)
    p.add_argument("--topic", required=True)
    p.add_argument("--acks", default="all", choices=("all", "-1", "1", "0"))
    p.add_argument("--key-separator", metavar="SEP", help="each line is KEY<SEP>VALUE")
    p.add_argument("--partition", type=int)
    p.add_argument("--max-block-ms", type=int, default=10000,
                   help="how long to wait for the topic's metadata (default 10000)")
    p.add_argument("--request-timeout-ms", type=int, default=30000)
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--compression-type", default="none", choices=("none", "gzip", "snappy", "lz4", "zstd"))
    p.add_argument("--first-to-bootstrap", action="store_true",
                   help="send the first produce to the bootstrap broker, leader or not, to see its "
                        "NOT_LEADER_OR_FOLLOWER answer and leader hint (the lesson's redirect, hop by hop)")
    p.set_defaults(run=run_produce, error_prefix="Error: ")


def add_consume_parser(sub: Subparsers) -> None:
    c = sub.add_parser("consume", help="print records (kafka-console-consumer.sh)")
    add_common_args(c)
    c.add_argument("--topic", required=True)
    start = c.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true")
    start.add_argument("--offset", help="earliest, latest or an offset (needs --partition)")
    c.add_argument("--partition", type=int)
    c.add_argument("--max-messages", type=int)
    c.add_argument("--timeout-ms", type=int, help="exit when no record arrived for this long")
    c.add_argument("--print-key", action="store_true")
    c.add_argument("--print-partition", action="store_true")
    c.add_argument("--print-offset", action="store_true")
    c.add_argument("--replica", type=int, metavar="ID",
                   help="read broker ID's local copy (up to its own high watermark) instead of the leader's")
    c.add_argument("--group", help="consume as a member of this consumer group: the group splits the "
                                   "topic's partitions among its members and keeps their committed offsets")
    c.add_argument("--consumer-property", type=consumer_prop, action="append", default=[], metavar="KEY=VALUE",
                   help="a consumer setting, e.g. session.timeout.ms=6000 (repeatable)")
    c.set_defaults(run=run_consume, error_prefix="Error: ")


def add_groups_parser(sub: Subparsers) -> None:
    g = sub.add_parser("groups", help="list, describe, reset and delete consumer groups (kafka-consumer-groups.sh)")
    add_common_args(g)
    action = g.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true", help="every consumer group of the cluster")
    action.add_argument("--describe", action="store_true",
                        help="each partition's committed offset, log end offset, lag and owner")
    action.add_argument("--reset-offsets", action="store_true",
                        help="move the group's committed offsets (an inactive group only); a plan unless --execute")
    action.add_argument("--delete", action="store_true", help="delete an empty group and its offsets")
    action.add_argument("--delete-offsets", action="store_true",
                        help="delete the group's offsets of --topic (not of a topic its members subscribe to)")
    g.add_argument("--group", metavar="G")
    g.add_argument("--state", action="store_true",
                   help="with --describe: the group's coordinator, assignment strategy, state and member count")
    g.add_argument("--topic", action="append", default=[], metavar="T[:P,P...]",
                   help="with --reset-offsets / --delete-offsets: a topic, or some of its partitions (repeatable)")
    g.add_argument("--all-topics", action="store_true",
                   help="with --reset-offsets: every partition the group has committed an offset for")
    scenario = g.add_mutually_exclusive_group()
    scenario.add_argument("--to-earliest", action="store_true", help="each partition's log start offset")
    scenario.add_argument("--to-latest", action="store_true", help="each partition's log end offset")
    scenario.add_argument("--to-offset", type=int, metavar="N", help="offset N (kept within the log)")
    scenario.add_argument("--shift-by", type=int, metavar="N", help="the committed offset + N (kept within the log)")
    run = g.add_mutually_exclusive_group()
    run.add_argument("--execute", action="store_true", help="commit the new offsets (default: print the plan)")
    run.add_argument("--dry-run", action="store_true", help="print the plan only (the default)")
    g.set_defaults(run=run_groups, error_prefix="Error: ")


def add_cluster_parser(sub: Subparsers) -> None:
    k = sub.add_parser("cluster", help="cluster id, controller and brokers")
    add_common_args(k)
    k.set_defaults(run=run_cluster, error_prefix="Error: ")


def add_metadata_log_parser(sub: Subparsers) -> None:
    m = sub.add_parser("metadata-log", help="the cluster's metadata log, an event a line (kafka-metadata-shell)")
    add_common_args(m, trace=False)
    m.add_argument("--from", dest="from_offset", type=int, default=0, metavar="N",
                   help="from metadata offset N (default 0: the oldest the broker keeps)")
    m.add_argument("--follow", action="store_true", help="keep printing new entries as they commit (Ctrl-C ends)")
    m.set_defaults(run=run_metadata_log, error_prefix="Error: ")


def add_leader_election_parser(sub: Subparsers) -> None:
    e = sub.add_parser("leader-election", help="move leaders back to preferred replicas (kafka-leader-election.sh)")
    add_common_args(e)
    kind = e.add_mutually_exclusive_group(required=True)
    kind.add_argument("--preferred", dest="election_type", action="store_const", const="preferred",
                      help="leader = the first replica of the assignment, if it is live and in sync")
    kind.add_argument("--unclean", dest="election_type", action="store_const", const="unclean",
                      help="an offline partition takes any live replica (may lose acknowledged records)")
    kind.add_argument("--election-type", dest="election_type", type=str.lower, choices=("preferred", "unclean"))
    e.add_argument("--topic", help="default: every topic (--all-topic-partitions)")
    e.add_argument("--partition", type=int)
    e.add_argument("--all-topic-partitions", action="store_true", help="every partition of every topic (default)")
    e.set_defaults(run=run_leader_election, error_prefix="Error: ")


def add_perf_parser(sub: Subparsers) -> None:
    perf = sub.add_parser("perf", help="measure throughput and latency (kafka-*-perf-test.sh)")
    tools = perf.add_subparsers(dest="perf_command", required=True, metavar="{produce,consume}")
    add_perf_produce_parser(tools)
    add_perf_consume_parser(tools)


def add_perf_produce_parser(tools: Subparsers) -> None:
    pp = tools.add_parser("produce", help="send records as fast as asked (kafka-producer-perf-test.sh)")
    add_common_args(pp, trace=False)
    pp.add_argument("--topic", required=True)
    pp.add_argument("--num-records", type=positive_int, required=True, metavar="N")
    pp.add_argument("--record-size", type=positive_int, required=True, metavar="S",
                    help="bytes of each record's value (random uppercase letters, no key)")
    pp.add_argument("--acks", default="all", choices=("all", "-1", "1", "0"))
    pp.add_argument("--throughput", type=throughput, default=-1.0, metavar="MSG_PER_S",
                    help="records/s at most; -1: as fast as possible (default)")
    pp.add_argument("--producer-props", nargs="+", type=producer_prop, default=[], metavar="K=V",
                    help="Kafka producer configs (linger.ms, batch.size, acks, enable.idempotence, "
                         "max.in.flight.requests.per.connection, request.timeout.ms, max.block.ms, ...); "
                         "they win over --acks")
    pp.add_argument("--reporting-interval", type=positive_int, default=5000, metavar="MS",
                    help="a progress line this often (default 5000)")
    pp.set_defaults(run=run_perf_produce, error_prefix="Error: ")


def add_perf_consume_parser(tools: Subparsers) -> None:
    pc = tools.add_parser("consume", help="read records from the beginning (kafka-consumer-perf-test.sh)")
    add_common_args(pc, trace=False)
    pc.add_argument("--topic", required=True)
    pc.add_argument("--messages", type=positive_int, required=True, metavar="N")
    pc.add_argument("--timeout", type=positive_int, default=10000, metavar="MS",
                    help="give up (exit 1) after this long without a record (default 10000)")
    pc.set_defaults(run=lambda args: run_consumer(args, sys.stdout), error_prefix="Error: ")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def throughput(text: str) -> float:
    """Kafka's --throughput: records/s, or negative for no limit; 0 would never send."""
    value = float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive, or -1 for no limit, not 0")
    return value


def _tracer(args):
    if args.trace == "mermaid":
        args.mermaid = getattr(args, "mermaid", None) or MermaidTracer("kclient")
        return args.mermaid
    return stderr_tracer if args.trace else None


# ---- topics -------------------------------------------------------------------------


def run_topics(args) -> int:
    if args.replicas and not args.describe:
        raise UsageError("--replicas goes with --describe")
    with Admin(args.bootstrap, tracer=_tracer(args)) as admin:
        if args.list:
            for name in admin.list_topics():
                print(name)
            return 0
        if args.describe:
            topics = [admin.describe_topic(args.topic)] if args.topic else admin.describe_topics()
            if args.replicas:
                return describe_replicas(admin, topics)
            for topic in topics:
                print(describe_lines(topic))
            return 0
        if not args.topic:
            raise UsageError("--topic is required with --create, --alter and --delete")
        if args.alter:
            return alter_topic(admin, args)
        if args.create:
            configs = parse_configs(args.config)
            try:
                admin.create_topic(args.topic, args.partitions, args.replication_factor, configs)
            except KafkaError as e:
                if args.if_not_exists and e.name == "TOPIC_ALREADY_EXISTS":
                    return 0
                raise
            print(f"Created topic {args.topic}.")
            return 0
        try:
            admin.delete_topic(args.topic)
        except KafkaError as e:
            if args.if_exists and e.name == "UNKNOWN_TOPIC_OR_PARTITION":
                return 0
            raise
        return 0


def alter_topic(admin: Admin, args) -> int:
    """kafka-topics.sh --alter --partitions N: grow the topic; silent on success, as Kafka is."""
    if args.partitions == -1:
        raise UsageError("--partitions is required with --alter (raftka alters only the partition count)")
    if args.replication_factor != -1 or args.config:
        raise UsageError("--replication-factor and --config cannot be used with --alter")
    try:
        admin.create_partitions(args.topic, args.partitions)
    except KafkaError as e:
        if args.if_exists and e.name == "UNKNOWN_TOPIC_OR_PARTITION":
            return 0
        raise
    return 0


def parse_configs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidRequestError(f"Invalid topic config {pair!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def describe_replicas(admin: Admin, topics: list[TopicDescription]) -> int:
    """topics --describe --replicas: the replica table, then a line per broker that did not answer."""
    answers = admin.describe_replicas([t.name for t in topics])
    print(replica_table(replica_rows([(t.name, p.partition, tuple(p.replicas), tuple(p.isr))
                                      for t in topics for p in t.partitions], answers)))
    for a in answers:
        if a.error:
            print(f"broker {a.broker_id} ({a.address}) did not answer: {a.error}", file=sys.stderr)
    return 0


def describe_lines(topic: TopicDescription) -> str:
    """kafka-topics.sh --describe: a topic line, then one tab-led line per partition."""
    rf = len(topic.partitions[0].replicas) if topic.partitions else 0
    configs = ",".join(f"{k}={v}" for k, v in sorted(topic.configs.items()))
    lines = [f"Topic: {topic.name}\tPartitionCount: {len(topic.partitions)}\tReplicationFactor: {rf}\tConfigs: {configs}"]
    for p in topic.partitions:
        leader = str(p.leader) if p.leader >= 0 else "none"
        lines.append(f"\tTopic: {topic.name}\tPartition: {p.partition}\tLeader: {leader}\t"
                     f"Replicas: {','.join(map(str, p.replicas))}\tIsr: {','.join(map(str, p.isr))}")
    return "\n".join(lines)


# ---- produce ------------------------------------------------------------------------


def run_produce(args) -> int:
    interactive = sys.stdin.isatty()
    failures = 0

    def report(line_key: bytes | None, value: bytes, fut: Future) -> None:
        nonlocal failures
        error = fut.exception()
        if error is not None:
            failures += 1
            key = line_key.decode(errors="replace") if line_key is not None else "null"
            print(f"Error when sending message to topic {args.topic} with key: {key}, value: {len(value)} bytes "
                  f"with error: {error}", file=sys.stderr, flush=True)

    with Producer(args.bootstrap, acks=args.acks, linger_ms=args.linger_ms, max_block_ms=args.max_block_ms,
                  request_timeout_ms=args.request_timeout_ms, first_to_bootstrap=args.first_to_bootstrap,
                  tracer=_tracer(args), compression_type=args.compression_type) as producer:
        for number, line in enumerate(_lines(interactive), start=1):
            key, value = split_key(line, args.key_separator, number)
            fut = producer.send(args.topic, value, key=key, partition=args.partition)
            fut.add_done_callback(lambda f, k=key, v=value: report(k, v, f))
            if interactive:  # one line at a time: show the error before the next prompt
                try:
                    fut.result()
                except KafkaError:
                    pass
        producer.flush()
    return EXIT_ERROR if failures else 0


def _lines(interactive: bool):
    while True:
        if interactive:
            print(">", end="", flush=True)
        line = sys.stdin.buffer.readline()
        if not line:
            return
        yield line.rstrip(b"\n").rstrip(b"\r")


def split_key(line: bytes, separator: str | None, number: int) -> tuple[bytes | None, bytes]:
    if separator is None:
        return None, line
    key, sep, value = line.partition(separator.encode())
    if not sep:
        raise InvalidRequestError(f"No key separator found on line number {number}: "
                                  f"'{line.decode(errors='replace')}'")
    return key, value


# ---- consume ------------------------------------------------------------------------


def run_consume(args) -> int:
    offset = None
    reset = "earliest" if args.from_beginning else "latest"
    if args.group is not None and (args.partition is not None or args.offset is not None):
        raise UsageError("Options group and partition/offset cannot be specified together: a group hands "
                         "out the partitions and starts each at its committed offset.")
    if args.offset is not None:
        if args.partition is None:
            raise UsageError("The partition is required when offset is specified.")
        if args.offset in ("earliest", "latest"):
            reset = args.offset
        else:
            try:
                offset = int(args.offset)
            except ValueError:
                raise UsageError(f"--offset must be earliest, latest or a number, not {args.offset!r}") from None
    count = 0
    idle_limit = args.timeout_ms / 1000 if args.timeout_ms is not None else None
    settings = {"auto_offset_reset": reset}
    settings.update((k.replace(".", "_"), v) for k, v in args.consumer_property)
    if args.group is not None:
        settings.update(group_id=args.group, on_assign=_said("assigned"), on_revoke=_said("revoked"),
                        on_lost=_said("lost"))
        # As Java's shutdown hook does for kafka-console-consumer.sh: SIGTERM closes the consumer like
        # Ctrl-C, so it commits and leaves the group instead of waiting out its session timeout.
        signal.signal(signal.SIGTERM, _interrupt)
    with Consumer(args.bootstrap, args.topic, offset=offset, partition=args.partition, replica=args.replica,
                  tracer=_tracer(args), **settings) as consumer:
        consumer.ensure_topics()  # fail fast on an unknown topic or partition
        idle = 0.0
        try:
            while args.max_messages is None or count < args.max_messages:
                wait = min(1.0, idle_limit - idle) if idle_limit is not None else 1.0
                records = consumer.poll(timeout=max(wait, 0.0))
                if not records:
                    idle += wait
                    if idle_limit is not None and idle >= idle_limit:
                        break
                    continue
                idle = 0.0
                for r in records:
                    if args.max_messages is not None and count >= args.max_messages:
                        break
                    print(format_record(r, args), flush=False)
                    count += 1
                sys.stdout.flush()
        finally:
            print(f"Processed a total of {count} messages", file=sys.stderr)
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C; the exit status is 143 (128 + 15), as a JVM's is."""


def _interrupt(signum, frame) -> None:
    raise Terminated


def _said(what: str):
    """A rebalance callback that tells the user (on stderr, apart from the records) what the group did."""
    def say(partitions) -> None:
        listed = ", ".join(f"{t}-{p}" for t, p in sorted(partitions)) or "nothing"
        print(f"[group] {what}: {listed}", file=sys.stderr, flush=True)
    return say


def format_record(r, args) -> str:
    """DefaultMessageFormatter's order: Partition, Offset, key, value, tab-separated."""
    fields = []
    if args.print_partition:
        fields.append(f"Partition:{r.partition}")
    if args.print_offset:
        fields.append(f"Offset:{r.offset}")
    if args.print_key:
        fields.append(r.key.decode(errors="replace") if r.key is not None else "null")
    fields.append(r.value.decode(errors="replace") if r.value is not None else "null")
    return "\t".join(fields)


# ---- groups -------------------------------------------------------------------------

MISSING = "-"        # kafka-consumer-groups.sh's MISSING_COLUMN_VALUE
REBALANCING = ("PreparingRebalance", "CompletingRebalance")


def run_groups(args) -> int:
    resetting = args.to_earliest or args.to_latest or args.to_offset is not None or args.shift_by is not None
    if not args.reset_offsets and (resetting or args.execute or args.dry_run or args.all_topics):
        raise UsageError("--to-earliest, --to-latest, --to-offset, --shift-by, --all-topics, --execute and "
                         "--dry-run go with --reset-offsets")
    if args.state and not args.describe:
        raise UsageError("--state goes with --describe")
    if args.topic and not (args.reset_offsets or args.delete_offsets):
        raise UsageError("--topic goes with --reset-offsets and --delete-offsets")
    if not args.list and not args.group:
        raise UsageError("--group is required with --describe, --reset-offsets, --delete and --delete-offsets")
    if args.reset_offsets and not resetting:
        raise UsageError("--reset-offsets needs one of --to-earliest, --to-latest, --to-offset, --shift-by")
    if args.reset_offsets and not args.topic and not args.all_topics:
        raise UsageError("One of the reset scopes should be defined: --all-topics, --topic.")
    if args.delete_offsets and not args.topic:
        raise UsageError("--delete-offsets needs --topic")
    with Admin(args.bootstrap, tracer=_tracer(args)) as admin:
        if args.list:
            for group in admin.list_groups():
                if group.protocol_type in ("consumer", ""):    # consumer groups only, as Kafka's tool lists
                    print(group.group_id)
            return 0
        if args.describe:
            return describe_state(admin, args.group) if args.state else describe_group(admin, args.group)
        if args.reset_offsets:
            return reset_offsets(admin, args)
        if args.delete_offsets:
            return delete_offsets(admin, args)
        try:
            admin.delete_group(args.group)
        except KafkaError as e:
            raise CommandError(f"Deletion of some consumer groups failed: Group '{args.group}' could not be "
                               f"deleted due to: {e}") from None
        print(f"Deletion of requested consumer groups ('{args.group}') was successful.")
        return 0


@dataclass(frozen=True)
class LagRow:
    """One line of kafka-consumer-groups.sh --describe (None / "-": unknown)."""
    group: str
    topic: str
    partition: int
    current_offset: int | None
    log_end_offset: int | None
    consumer_id: str = MISSING
    host: str = MISSING
    client_id: str = MISSING

    @property
    def lag(self) -> int | None:
        """Kafka's getLag: the log end minus the committed offset, when both are known."""
        if self.current_offset is None or self.current_offset == -1 or self.log_end_offset is None:
            return None
        return self.log_end_offset - self.current_offset


def lag_rows(description: GroupDescription, committed: dict[tuple[str, int], int],
             log_ends: dict[tuple[str, int], int]) -> list[LagRow]:
    """Kafka's collectGroupOffsets: a row per partition a member owns (members with the most partitions
    first, each member's partitions in topic, partition order), then a row per partition with a committed
    offset that no member owns."""
    def row(tp: tuple[str, int], *owner: str) -> LagRow:
        return LagRow(description.group_id, tp[0], tp[1], committed.get(tp), log_ends.get(tp), *owner)

    rows: list[LagRow] = []
    owned: set[tuple[str, int]] = set()
    members = [m for m in description.members if m.assignment.partitions]
    for m in sorted(members, key=lambda m: len(set(m.assignment.partitions)), reverse=True):
        mine = sorted(set(m.assignment.partitions))
        owned.update(mine)
        rows += [row(tp, m.member_id, m.host, m.client_id) for tp in mine]
    rows += [row(tp) for tp in sorted(set(committed) - owned)]
    return rows


def lag_table(rows: list[LagRow]) -> str:
    """kafka-consumer-groups.sh --describe: a blank line, the header, a line per row; the group, topic,
    consumer id and host columns are as wide as their longest value (at least 15)."""
    def shown(value: object) -> str:
        return MISSING if value is None else str(value)

    g = max([15] + [len(r.group) for r in rows])
    t = max([15] + [len(r.topic) for r in rows])
    c = max([15] + [len(r.consumer_id) for r in rows])
    h = max([15] + [len(r.host) for r in rows])

    def line(*cols: object) -> str:
        group, topic, partition, current, end, lag, consumer, host, client = map(shown, cols)
        return (f"{group:<{g}} {topic:<{t}} {partition:<10} {current:<15} {end:<15} {lag:<15} "
                f"{consumer:<{c}} {host:<{h}} {client}")

    lines = [line("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST",
                  "CLIENT-ID")]
    lines += [line(r.group, r.topic, r.partition, r.current_offset, r.log_end_offset, r.lag, r.consumer_id, r.host,
                   r.client_id) for r in rows]
    return "\n" + "\n".join(lines) + "\n"


def reset_table(group: str, offsets: dict[tuple[str, int], int]) -> str:
    """kafka-consumer-groups.sh --reset-offsets' plan (and, with --execute, what it committed)."""
    if not offsets:
        return "\n"
    g = max(15, len(group))
    t = max([15] + [len(topic) for topic, _ in offsets])
    lines = [f"{'GROUP':<{g}} {'TOPIC':<{t}} {'PARTITION':<10} NEW-OFFSET"]
    lines += [f"{group:<{g}} {topic:<{t}} {partition:<10} {offsets[(topic, partition)]}"
              for topic, partition in sorted(offsets)]
    return "\n" + "\n".join(lines) + "\n"


def describe_group(admin: Admin, group: str) -> int:
    description = admin.describe_group(group)
    committed = admin.committed_offsets(group)
    state = description.state
    if state == "Dead":
        if not committed:
            raise CommandError(f"Consumer group '{group}' does not exist.")
        state = "Empty"     # offsets without a membership: a group Kafka's coordinator knows as Empty
    owned = [tp for m in description.members for tp in m.assignment.partitions]
    log_ends = admin.list_offsets(list(dict.fromkeys([*committed, *owned])), "latest", missing_ok=True)
    if state == "Empty":
        print(f"\nConsumer group '{group}' has no active members.", file=sys.stderr)
    elif state in REBALANCING:
        print(f"\nWarning: Consumer group '{group}' is rebalancing.", file=sys.stderr)
    rows = lag_rows(description, committed, log_ends)
    if rows:
        print(lag_table(rows), end="")
    return 0


def describe_state(admin: Admin, group: str) -> int:
    """kafka-consumer-groups.sh --describe --state: one line of GROUP, COORDINATOR (ID), ASSIGNMENT-STRATEGY,
    STATE and #MEMBERS (the coordinator's client address: where kill -9 moves the group)."""
    description = admin.describe_group(group)
    if description.state == "Dead" and not admin.committed_offsets(group):
        raise CommandError(f"Consumer group '{group}' does not exist.")
    broker_id, (host, port) = admin.find_coordinator(group)
    coordinator = f"{host}:{port}  ({broker_id})"
    state = "Empty" if description.state == "Dead" else description.state
    g, c = max(15, len(group)), max(25, len(coordinator))
    for cols in (("GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"),
                 (group, coordinator, description.protocol or "", state, len(description.members))):
        print(f"\n{cols[0]:<{g}} {cols[1]:<{c}} {cols[2]:<20} {cols[3]:<20} {cols[4]}", end="")
    print()
    return 0


def topic_partitions(admin: Admin, topic_args: list[str]) -> list[tuple[str, int]]:
    """Kafka's --topic: "T" is every partition of T, "T:0,2" those partitions; each must exist."""
    out: list[tuple[str, int]] = []
    for arg in topic_args:
        topic, sep, listed = arg.partition(":")
        partitions = [p.partition for p in admin.describe_topic(topic).partitions]
        if not sep:
            out += [(topic, p) for p in partitions]
            continue
        try:
            wanted = [int(p) for p in listed.split(",")]
        except ValueError:
            raise UsageError(f"Invalid topic arg '{arg}', expected topic name and partitions") from None
        absent = [f"{topic}-{p}" for p in wanted if p not in partitions]
        if absent:
            raise UnknownTopicOrPartitionError(f'The partitions "{",".join(absent)}" do not exist')
        out += [(topic, p) for p in wanted]
    return list(dict.fromkeys(out))


def reset_offsets(admin: Admin, args) -> int:
    """Kafka's --reset-offsets: only while the group is inactive (Empty, or unknown); a plan unless
    --execute, which commits it as a standalone commit."""
    group = args.group
    state = admin.describe_group(group).state
    if state not in ("Empty", "Dead"):
        raise CommandError(f"Assignments can only be reset if the group '{group}' is inactive, but the current "
                           f"state is {state}.")
    if args.all_topics:
        partitions = sorted(admin.committed_offsets(group))
    else:
        partitions = topic_partitions(admin, args.topic)
    if args.to_earliest or args.to_latest:
        new = admin.list_offsets(partitions, "earliest" if args.to_earliest else "latest")
    else:
        if args.shift_by is not None:
            current = admin.committed_offsets(group, partitions)
            missing = [tp for tp in partitions if tp not in current]
            if missing:
                raise CommandError(f"Cannot shift offset for partition {missing[0][0]}-{missing[0][1]} since there "
                                   "is no current committed offset")
            requested = {tp: current[tp] + args.shift_by for tp in partitions}
        else:
            requested = {tp: args.to_offset for tp in partitions}
        new = within_log(requested, admin.list_offsets(partitions, "earliest"), admin.list_offsets(partitions))
    if args.execute:
        admin.commit_offsets(group, new)
    print(reset_table(group, new), end="")
    return 0


def within_log(requested: dict[tuple[str, int], int], starts: dict[tuple[str, int], int],
               ends: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """Kafka's checkOffsetsRange: an offset past the log end becomes the end, one before its start the start."""
    out = {}
    for (topic, partition), offset in requested.items():
        end, start = ends[(topic, partition)], starts[(topic, partition)]
        if offset > end:
            print(f"WARN: New offset ({offset}) is higher than latest offset for topic partition {topic}-{partition}. "
                  f"Value will be set to {end}.", file=sys.stderr)
            offset = end
        elif offset < start:
            print(f"WARN: New offset ({offset}) is lower than earliest offset for topic partition {topic}-{partition}. "
                  f"Value will be set to {start}.", file=sys.stderr)
            offset = start
        out[(topic, partition)] = offset
    return out


def delete_offsets(admin: Admin, args) -> int:
    """Kafka's --delete-offsets: the table of each partition's outcome after one summary line."""
    partitions = topic_partitions(admin, args.topic)
    admin.delete_offsets(args.group, partitions)
    print(f"Request succeeded for deleting offsets from group {args.group}.")
    t = max([15] + [len(topic) for topic, _ in partitions])
    print()
    print(f"{'TOPIC':<{t}} {'PARTITION':<10} STATUS")
    for topic, partition in sorted(partitions):
        print(f"{topic:<{t}} {partition:<10} Successful")
    return 0


# ---- perf -------------------------------------------------------------------------


def run_perf_produce(args) -> int:
    try:
        return run_producer(args, sys.stdout)
    except SettingError as e:  # e.g. enable.idempotence=true with acks=1: a usage error, exit 2
        raise UsageError(str(e)) from None


# ---- cluster ------------------------------------------------------------------------


def run_cluster(args) -> int:
    with Admin(args.bootstrap, tracer=_tracer(args)) as admin:
        c = admin.describe_cluster()
    print(f"Cluster ID: {c.cluster_id}")
    print(f"Controller: {c.controller_id if c.controller_id >= 0 else 'none'}")
    print(f"{len(c.brokers)} brokers:")
    for b in c.brokers:
        state = "alive" if b.alive else "fenced"
        print(f"  broker {b.id} at {b.host}:{b.port}: {state}" + (", controller" if b.id == c.controller_id else ""))
    return 0


# ---- metadata-log ----------------------------------------------------------------------


def run_metadata_log(args) -> int:
    """One line per committed metadata batch, told as sentences, from the first bootstrap broker."""
    if args.from_offset < 0:
        raise UsageError("--from must be 0 or more")
    client = KafkaClient(args.bootstrap)
    story = MetadataStory()
    address = client.bootstrap[0]
    try:
        for entry in read_metadata_log(client.connections.kafka(address), args.from_offset, args.follow,
                                       None if args.follow else client.request_timeout_s):
            print(story.line(entry), flush=True)
    except grpc.RpcError as e:
        raise client.map_rpc_error(e, address) from None
    finally:
        client.close()
    return 0


# ---- leader-election -----------------------------------------------------------------


def run_leader_election(args) -> int:
    """kafka-leader-election.sh's three kinds of lines; exit 1 if any partition failed."""
    if args.partition is not None and not args.topic:
        raise UsageError("--partition needs --topic")
    if args.topic and args.all_topic_partitions:
        raise UsageError("--topic and --all-topic-partitions exclude each other")
    with Admin(args.bootstrap, tracer=_tracer(args)) as admin:
        results = admin.elect_leaders(args.election_type, args.topic, args.partition)
    kind = args.election_type.upper()
    done = [f"{r.topic}-{r.partition}" for r in results if r.error is None]
    not_needed = [f"{r.topic}-{r.partition}" for r in results
                  if r.error is not None and r.error.name == "ELECTION_NOT_NEEDED"]
    failed = [r for r in results if r.error is not None and r.error.name != "ELECTION_NOT_NEEDED"]
    if done:
        print(f"Successfully completed leader election ({kind}) for partitions {', '.join(done)}")
    if not_needed:
        print(f"Valid replica already elected for partitions {', '.join(not_needed)}")
    for r in failed:
        print(f"Error completing leader election ({kind}) for partition: {r.topic}-{r.partition}: {r.error}",
              file=sys.stderr)
    if not results:
        print("No partitions to elect (no topics).")
    return EXIT_ERROR if failed else 0


if __name__ == "__main__":
    sys.exit(main())
