"""Bootstrap address parsing."""

import pytest

from client.connection import format_address, parse_bootstrap
from client.errors import InvalidRequestError


def test_port_only_means_loopback():
    assert parse_bootstrap(":9092") == [("127.0.0.1", 9092)]


def test_comma_list_keeps_order_and_skips_blanks_and_spaces():
    assert parse_bootstrap(":9092, 10.0.0.2:19092,,host:29092 ") == [
        ("127.0.0.1", 9092), ("10.0.0.2", 19092), ("host", 29092)]


def test_localhost_becomes_ipv4_loopback():
    assert parse_bootstrap("localhost:1") == [("127.0.0.1", 1)]


def test_bracketed_ipv6_host_loses_its_brackets():
    assert parse_bootstrap("[::1]:9092") == [("::1", 9092)]


def test_highest_port_is_accepted():
    assert parse_bootstrap(":65535") == [("127.0.0.1", 65535)]


@pytest.mark.parametrize("bad", ["nohost", ":abc", ":0", "", " , ", ":65536", ":-1", "host:"])
def test_bad_bootstrap_raises_invalid_request(bad):
    with pytest.raises(InvalidRequestError):
        parse_bootstrap(bad)


def test_format_address_is_host_colon_port():
    assert format_address(("127.0.0.1", 9092)) == "127.0.0.1:9092"
