"""The fake servers over HTTPS, with certificates from a throwaway CA (trustme)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import trustme

from tests.fakes.server import FakeServer, Handler


@contextmanager
def serve_tls(handler: Handler, ca: trustme.CA) -> Iterator[FakeServer]:
    """Like `serve`, but TLS on 127.0.0.1 with a certificate `ca` signed; url is https://."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    server = FakeServer(handler)
    server._server.socket = context.wrap_socket(server._server.socket, server_side=True)
    server.url = f"https://127.0.0.1:{server.port}"
    server.start()
    try:
        yield server
    finally:
        server.stop()
