"""A loopback TCP proxy that can freeze (bytes stop flowing, sockets stay open, as a hung
network or server looks to a client) and that lets a test watch the bytes and act on them,
for instance kill a PostgreSQL session just after its COMMIT went through."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# (link, bytes) -> None; called before the bytes are passed on, on the pipe's own thread
Watcher = Callable[["Link", bytes], None]


@dataclass
class Link:
    """One client connection and its upstream connection."""

    client: socket.socket
    upstream: socket.socket
    state: dict[str, object] = field(default_factory=dict)  # for watchers


class TcpProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target>."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.links: list[Link] = []
        self._flowing = threading.Event()
        self._flowing.set()
        self.from_client: Watcher | None = None
        self.from_server: Watcher | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        """Stop passing bytes either way (they are held, not dropped); sockets stay open."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Pass bytes again, including what was held and any close."""
        self._flowing.set()

    def close(self) -> None:
        """Stop listening and close every link."""
        self.thaw()
        for sock in [
            self.server,
            *(s for link in self.links for s in (link.client, link.upstream)),
        ]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            link = Link(client, upstream)
            self.links.append(link)
            threading.Thread(target=self._pipe, args=(link, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(link, False), daemon=True).start()

    def _pipe(self, link: Link, from_client: bool) -> None:
        source, sink = (link.client, link.upstream) if from_client else (link.upstream, link.client)
        watcher = self.from_client if from_client else self.from_server
        try:
            while data := source.recv(65_536):
                self._flowing.wait()
                if watcher is not None:
                    watcher(link, data)
                sink.sendall(data)
            self._flowing.wait()
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_RDWR)


@contextmanager
def proxy_to(port: int) -> Iterator[TcpProxy]:
    """A proxy to `port` on loopback, closed afterwards."""
    proxy = TcpProxy(port)
    try:
        yield proxy
    finally:
        proxy.close()


# ------------------------------------------------------------------ PostgreSQL wire watching

COMMIT = b"COMMIT\x00"  # in a Query message from the client and in CommandComplete back
BACKEND_KEY = b"K\x00\x00\x00\x0c"  # BackendKeyData: the session's process id follows


class PgSessionKiller:
    """Kills (pg_terminate_backend, from another session) the PostgreSQL session that
    commits a transaction which wrote `marker` (for instance b"ingestion_outcomes"), either
    just after the server confirmed the COMMIT or just before the COMMIT reaches it."""

    def __init__(
        self, proxy: TcpProxy, admin_url: str, marker: bytes, *, after_commit: bool, times: int = 1
    ) -> None:
        self.admin_url = admin_url
        self.marker = marker
        self.after_commit = after_commit
        self.left = times
        self.killed: list[int] = []
        self._lock = threading.Lock()
        proxy.from_client = self._client_bytes
        proxy.from_server = self._server_bytes

    def _server_bytes(self, link: Link, data: bytes) -> None:
        at = data.find(BACKEND_KEY)
        if at >= 0 and "pid" not in link.state:
            link.state["pid"] = int.from_bytes(data[at + 5 : at + 9], "big")
        if self.after_commit and COMMIT in data and link.state.pop("marked", False):
            self._kill(link)  # before the client hears that its COMMIT went through

    def _client_bytes(self, link: Link, data: bytes) -> None:
        if self.marker in data:
            link.state["marked"] = True
        if not self.after_commit and COMMIT in data and link.state.pop("marked", False):
            self._kill(link)  # the COMMIT never reaches the server

    def _kill(self, link: Link) -> None:
        with self._lock:
            if self.left <= 0 or "pid" not in link.state:
                return
            self.left -= 1
        import psycopg

        pid = int(str(link.state["pid"]))
        self.killed.append(pid)  # before: the client may see the effect before this returns
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            # waits (up to 5 s) until the session has really ended
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
