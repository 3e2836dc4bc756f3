"""A TCP proxy on loopback that a test can cut and restore: a database outage, on demand.

``with TcpProxy("127.0.0.1", 5432) as proxy:`` forwards ``127.0.0.1:proxy.port`` to the target,
byte for byte, on its own event loop in a background thread. `cut()` aborts every forwarded
connection (both sides, as a network that drops does) and closes the listening socket, so new
connections are refused; `restore()` listens again on the same port. The port stays the
process's to reuse (SO_REUSEADDR), so the client behind it needs no new address.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

READ_SIZE = 65536


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.connections = 0  # accepted so far: shows that the client behind it reconnected
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the test's side (any thread but the proxy's) -------------------------------------------

    def start(self) -> int:
        self._thread.start()
        self._call(self._listen())
        return self.port

    def cut(self) -> None:
        """Every connection dropped, new ones refused, until `restore`."""
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    @property
    def listening(self) -> bool:
        return self._server is not None

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)  # type: ignore[arg-type]

    # -- the proxy's loop -----------------------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is not None:
            return
        # The same port every time (0 only the first time): the client's URL names it.
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # the listening socket goes at once: a connect is refused from now on
        for writer in list(self._open):
            # abort, not close: no FIN after buffered bytes, the connection is simply gone
            writer.transport.abort()
        self._open.clear()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        if server is not None:
            await server.wait_closed()

    async def _client(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self._open.add(client_writer)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
            if client_writer not in self._open:  # cut while connecting upstream
                return
            self._open.add(upstream_writer)
            await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))
        except OSError:
            pass  # the target refused or reset: the client sees its connection close
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    self._open.discard(writer)
                    writer.transport.abort()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One direction until either side ends; then both sides end (the other pipe sees it too)."""
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.transport.abort()
