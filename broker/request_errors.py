"""The refusal of a request as a whole, apart from the per-partition errors its answer carries."""

from __future__ import annotations


class MalformedRequestError(Exception):
    """The request as a whole cannot be served (too many partitions, a negative size, a consumer's
    replica id on the follower API, a broker named twice in an ISR...): the caller sent something no
    broker would accept. Each front door says so its way (gRPC: INVALID_ARGUMENT)."""
