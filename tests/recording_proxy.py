"""A forward proxy on loopback that writes down every request it is asked to forward, and refuses it.

Point ``HTTPS_PROXY``/``HTTP_PROXY`` at it (and ``NO_PROXY`` at loopback, so the emulators stay
direct) and anything that would have left the machine shows up in `requests` instead: one
``CONNECT host:443 HTTP/1.1`` line per HTTPS connection, or the absolute-URL request line of a
plain HTTP request. Each is answered ``403`` and closed, so nothing is forwarded anywhere.

Some requests are made on threads of their own (google-auth's boundary lookup): `settle` waits for
the threads started since a snapshot, so that "the proxy saw nothing" is read after they are done.
"""

from __future__ import annotations

import socketserver
import threading
import time
from types import TracebackType

_REFUSAL = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Handler(socketserver.StreamRequestHandler):
    server: _Server
    timeout = 10  # a client that connects and says nothing cannot hold the proxy

    def handle(self) -> None:
        line = self.rfile.readline(65_536).decode("latin-1").rstrip("\r\n")
        while self.rfile.readline(65_536) not in (b"\r\n", b"\n", b""):
            pass  # the headers say nothing the record needs
        # Written down before the answer: a client that has seen the refusal has been recorded.
        with self.server.lock:
            self.server.lines.append(line)
        self.wfile.write(_REFUSAL)


class _Server(socketserver.TCPServer):
    """One connection at a time, on the serving thread: it starts no threads for `settle` to meet."""

    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.lines: list[str] = []


class RecordingProxy:
    """``with RecordingProxy() as proxy:`` serves on ``proxy.url`` until the block ends."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, name="recording-proxy",
                                        daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[str]:
        """Request lines in arrival order, e.g. ``CONNECT iamcredentials.googleapis.com:443 HTTP/1.1``."""
        with self._server.lock:
            return list(self._server.lines)

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def settle(before: set[threading.Thread], *, limit: float = 30.0) -> None:
    """Wait until every thread started since `before` (``set(threading.enumerate())``) has ended.

    `limit` only bounds a failure: a thread still alive after it fails the test.
    """
    deadline = time.monotonic() + limit
    pause = threading.Event()
    for thread in set(threading.enumerate()) - before:
        while True:
            try:
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
                break
            except RuntimeError:  # started, but not running yet: it will be in a moment
                assert time.monotonic() < deadline, f"thread {thread.name} never ran"
                pause.wait(0.01)
        assert not thread.is_alive(), f"thread {thread.name} never finished"
