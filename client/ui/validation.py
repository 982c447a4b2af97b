"""The page's requests, checked before anything runs: a bad one is a RequestError, one line, never a traceback.

Only two requests change anything: the produce form (POST /api/produce) and the broker controls
(POST /api/brokers/{id}/{action}). Both are refused unless they come from the page itself:
the Host header must name the address the page was bound to (a DNS-rebinding site's name is not it),
an Origin header, when there is one, must be the page's own, and the body must be JSON (a
cross-site form cannot send application/json without a CORS preflight, which the page never grants).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

MAX_TOPIC_NAME_LENGTH = 249            # Kafka's limit (broker/metadata/topic_rules.py)
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]+")
MAX_KEY_BYTES = MAX_VALUE_BYTES = 64 * 1024
# A body holds at most a 64 KiB key and value; JSON's \uXXXX escapes can make each 6 times longer.
MAX_BODY_BYTES = 1024 * 1024
MAX_PARTITION = 2**31 - 1
PRODUCE_FIELDS = {"node", "topic", "partition", "key", "value"}


class RequestError(Exception):
    """A request the page refuses: ``status`` is the HTTP status, the message its one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, str]:
        return {"error": f"INVALID_REQUEST: {self.message}"}


@dataclass(frozen=True)
class ProduceForm:
    node: int
    topic: str
    partition: int | None
    key: bytes | None
    value: bytes


def topic_name_problem(name: str) -> str | None:
    """Kafka's topic name rules (Topic.validate): None when ``name`` is legal."""
    if not name:
        return "the topic name is empty"
    if name in (".", ".."):
        return f"the topic name cannot be '{name}'"
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        return f"the topic name is longer than {MAX_TOPIC_NAME_LENGTH} characters"
    if not _LEGAL_TOPIC.fullmatch(name):
        return "the topic name may only contain ASCII letters, digits, '.', '_' and '-'"
    return None


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; RequestError 400 for anything else (bad UTF-8, bad JSON, too deep)."""
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError(400, "the body is not UTF-8") from None
    except RecursionError:
        raise RequestError(400, "the JSON body is nested too deeply") from None
    except ValueError as e:    # JSONDecodeError, and integers too long to convert
        raise RequestError(400, f"the body is not valid JSON: {str(e).splitlines()[0][:120]}") from None
    if not isinstance(value, dict):
        raise RequestError(400, "the body must be a JSON object")
    return value


def _int_field(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(400, f"'{name}' must be an integer")
    if not low <= value <= high:
        raise RequestError(400, f"'{name}' must be between {low} and {high}")
    return value


def _bytes_field(body: dict[str, Any], name: str, limit: int, nullable: bool) -> bytes | None:
    value = body.get(name)
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise RequestError(400, f"'{name}' must be a string" + (" or null" if nullable else ""))
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:     # a lone surrogate (\ud800) is valid JSON but no text
        raise RequestError(400, f"'{name}' is not valid Unicode text") from None
    if len(data) > limit:
        raise RequestError(400, f"'{name}' is {len(data)} bytes; at most {limit} are allowed")
    return data


def parse_produce(body: dict[str, Any], known_nodes: set[int]) -> ProduceForm:
    """{node, topic, partition?, key?, value}: node a broker id the page knows (404 otherwise)."""
    unknown = sorted(set(body) - PRODUCE_FIELDS)
    if unknown:
        raise RequestError(400, f"unknown field(s) {', '.join(repr(k)[:40] for k in unknown[:5])}; "
                                f"expected {', '.join(sorted(PRODUCE_FIELDS))}")
    node = _int_field(body, "node", 0, MAX_PARTITION)
    topic = body.get("topic")
    if not isinstance(topic, str):
        raise RequestError(400, "'topic' must be a string")
    problem = topic_name_problem(topic)
    if problem is not None:
        raise RequestError(400, problem)
    partition = None if body.get("partition") is None else _int_field(body, "partition", 0, MAX_PARTITION)
    key = _bytes_field(body, "key", MAX_KEY_BYTES, nullable=True)
    value = _bytes_field(body, "value", MAX_VALUE_BYTES, nullable=False)
    if node not in known_nodes:
        raise RequestError(404, f"no broker {node} in this cluster (known: {', '.join(map(str, sorted(known_nodes)))})")
    return ProduceForm(node, topic, partition, key, value or b"")


# ---- where a state-changing request may come from ---------------------------------------------------


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or the name localhost (resolved by no DNS server: it cannot be rebound)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind_host: str, port: int) -> set[str] | None:
    """The Host headers a POST may carry when the page listens on loopback: its own address, and
    localhost for 127.0.0.1 / ::1. None when it listens elsewhere (any name may reach it then; the
    Origin check still holds and the broker controls are off)."""
    if not is_loopback_host(bind_host):
        return None
    host = f"[{bind_host}]" if ":" in bind_host and not bind_host.startswith("[") else bind_host
    names = {f"{host}:{port}"}
    if bind_host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        names |= {f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
    return names


def check_host(host: str, bind_host: str, port: int) -> None:
    """RequestError 403 unless ``host`` (the Host header) names the page's loopback address: a
    DNS-rebinding site reaches 127.0.0.1 under its own name, and that name is refused here."""
    allowed = allowed_hosts(bind_host, port)
    if allowed is not None and host.lower() not in allowed:
        raise RequestError(403, f"Host {host[:80]!r} is not this page's address "
                                f"({sorted(allowed)[-1]}): refused (DNS rebinding protection)")


def check_post_origin(headers: Mapping[str, str], bind_host: str, port: int) -> None:
    """RequestError 403 / 415 unless a state-changing request comes from the page itself (module doc)."""
    host = headers.get("Host", "")
    check_host(host, bind_host, port)
    origin = headers.get("Origin")
    if origin is not None and origin.lower() != f"http://{host}".lower():
        raise RequestError(403, f"Origin {origin[:80]!r} is not this page: cross-site requests are refused")
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise RequestError(415, "the body must be sent as Content-Type: application/json")
