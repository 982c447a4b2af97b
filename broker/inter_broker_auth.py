"""How a broker proves to another broker that it is one: the inter-broker server (Replication and
Controller, on each broker's inter_broker_port) answers only calls that carry the cluster's token.

Those services take the caller's word for its broker id: a ReplicaFetch naming a
follower moves the leader's high watermark, a BrokerHeartbeat can ask for a broker
to be fenced. Anyone who can reach that port could otherwise fake a follower (and
make acks=all answer before the real follower has the batch) or fence a broker.

The token is HMAC-SHA256(cluster secret, cluster id), sent as call metadata by the
broker's own channels and checked by a server interceptor in constant time. It is
derived, not the secret itself, so a token read off the wire does not give away
the key of the Raft port. Without TLS it is a bearer token: whoever can sniff the
loopback interface can replay it (see the README's guarantees).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Callable

import grpc

AUTH_HEADER = "raftka-broker-auth"
REFUSAL = "broker-to-broker API: the call lacks this cluster's broker token (only brokers may call it)"


def broker_token(cluster_id: str, secret: str) -> str:
    return hmac.new(secret.encode(), f"raftka inter-broker v1 {cluster_id}".encode(), hashlib.sha256).hexdigest()


class _WithToken(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the token to every call made on a broker's own channels."""

    def __init__(self, token: str):
        self._metadata = ((AUTH_HEADER, token),)

    def _details(self, details):
        metadata = tuple(details.metadata or ()) + self._metadata
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = credentials, wait_for_ready, compression


def with_token(token: str) -> Callable[[grpc.Channel], grpc.Channel]:
    """A channel wrapper for client.connection.Connections: every call carries ``token``."""
    interceptor = _WithToken(token)
    return lambda channel: grpc.intercept_channel(channel, interceptor)


class BrokerOnly(grpc.ServerInterceptor):
    """Refuses (UNAUTHENTICATED) every call without the token on the server it guards: the inter-broker
    server serves brokers only."""

    def __init__(self, token: str):
        self._token = token.encode()

    def intercept_service(self, continuation, handler_call_details):
        sent = next((v for k, v in handler_call_details.invocation_metadata or () if k == AUTH_HEADER), "")
        if hmac.compare_digest(sent.encode() if isinstance(sent, str) else sent, self._token):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        return refusing(handler, grpc.StatusCode.UNAUTHENTICATED, REFUSAL) if handler is not None else None


def refusing(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
    """A handler that ends every call to ``handler``'s method with ``code`` before reading a request.

    A streaming one whatever the method's shape (the caller still gets the status): grpcio reads a
    unary request on a worker thread before it calls the handler, so a stranger's half-sent request
    would hold that thread until its connection ends, and the inter-broker server does not age its
    connections."""
    def refuse(_requests, context):
        context.abort(code, details)

    return grpc.stream_stream_rpc_method_handler(refuse)
