"""A small HTTP/1.1 server for the emulators, on asyncio streams and h11.

Not uvicorn: a test double must be able to misbehave like a broken network does, i.e. hold a
request, answer anything, or close the socket before or after reading the body without a word.
Connections are kept alive (clients pool them) and the per-request path stays short, so one
process answers a few thousand small requests per second.

In a test: ``with EmulatorServer(RoEmulator(token="t")) as url: ...``.
As a process (benchmarks, crash tests):
``python -m tests.emulators.server ro|pk|sheets --port N [--latency 0.02] [--token T] [--key K]
[--email E] [--mask M] [--credits N] [--log PATH] [--seed SHEETS.json]`` prints ``listening on URL``
and appends each accepted message to ``--log`` as one JSON line; ``sheets`` starts with the
spreadsheets of ``--seed`` (see `sheets.load_seed`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import threading
import traceback
from http import HTTPStatus
from pathlib import Path
from types import TracebackType

import h11

from tests.emulators.base import Emulator, Fault, HttpRequest, Reply

__all__ = ["Emulator", "EmulatorServer", "Fault", "main"]

READ_SIZE = 65536
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class _Connection:
    """One client socket: a loop of read request, maybe misbehave, answer."""

    def __init__(
        self, emulator: Emulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.emulator = emulator
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.SERVER)
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if peer else ""

    async def _event(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.reader.read(READ_SIZE))

    async def serve(self) -> None:
        emulator = self.emulator
        while True:
            event = await self._event()
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed or PAUSED: the client is done with us
            target = event.target.decode("latin-1")
            path, _, query = target.partition("?")
            method = event.method.decode("ascii")
            fault = emulator.next_fault() if emulator.takes_fault(method, path) else None
            headers: dict[str, str] = {}
            for name, value in event.headers:
                key = name.decode("latin-1")
                text = value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            if fault is not None and fault.drop == "before_body":
                emulator.record(HttpRequest(method, path, query, headers, b"", self.client))
                await self._hold(fault)
                return
            body = await self._body()
            if body is None:
                self._send(Reply.json(413, {"error": "Request Entity Too Large"}), method)
                return
            reply = emulator.dispatch(HttpRequest(method, path, query, headers, body, self.client), fault)
            await self._hold(fault)
            if reply is None:
                return
            self._send(reply, method)
            if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                return
            self.conn.start_next_cycle()

    async def _body(self) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.emulator.max_body:
                    return None
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise ConnectionError("client went away in the middle of a body")

    async def _hold(self, fault: Fault | None) -> None:
        wait = self.emulator.latency + (fault.delay if fault is not None else 0.0)
        if wait > 0:
            await asyncio.sleep(wait)

    def _send(self, reply: Reply, method: str) -> None:
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            *reply.headers.items(),
        ]
        reason = _REASONS.get(reply.status, b"")
        parts = [self.conn.send(h11.Response(status_code=reply.status, headers=headers, reason=reason))]
        if method != "HEAD" and reply.body:
            parts.append(self.conn.send(h11.Data(data=reply.body)))
        parts.append(self.conn.send(h11.EndOfMessage()))
        self.writer.write(b"".join(part for part in parts if part))

    def bad_request(self) -> None:
        with contextlib.suppress(h11.LocalProtocolError):
            self._send(Reply.json(400, {"error": "Bad Request"}), "POST")

    def server_error(self, exc: Exception) -> None:
        with contextlib.suppress(h11.LocalProtocolError):
            self._send(Reply.json(500, {"error": f"emulator bug: {exc!r}"}), "POST")


class _Listener:
    """The asyncio side: accepts sockets and remembers them so `close()` can end held requests."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def open(self, port: int) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", port, backlog=512)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.emulator.connections += 1
        connection = _Connection(self.emulator, reader, writer)
        try:
            await connection.serve()
        except h11.RemoteProtocolError:
            connection.bad_request()
        except ConnectionError:
            pass
        except Exception as exc:
            # a bug in an emulator must be loud in the test that hit it, not a silent hang
            traceback.print_exc()
            connection.server_error(exc)
        finally:
            self.tasks.discard(task)
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


class EmulatorServer:
    """Runs an emulator on 127.0.0.1 in a background thread with its own event loop."""

    def __init__(self, emulator: Emulator, port: int = 0) -> None:
        self.emulator = emulator
        self.port = port
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: _Listener | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        if self._thread is not None:
            return self.url
        loop = asyncio.new_event_loop()
        listener = _Listener(self.emulator)
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self.port = loop.run_until_complete(listener.open(self.port))
            except OSError as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="emulator", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            loop.close()
            raise failure[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop, self._listener, self._thread = loop, listener, thread
        return self.url

    def stop(self) -> None:
        loop, listener, thread = self._loop, self._listener, self._thread
        if loop is None or listener is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(listener.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self.emulator.close()
        self._loop = self._listener = self._thread = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def build_emulator(args: argparse.Namespace) -> Emulator:
    from tests.emulators.robo_pk import PkEmulator
    from tests.emulators.robo_ro import RoEmulator

    if args.provider == "sheets":
        from tests.emulators.sheets import SheetsEmulator, load_seed

        sheets = SheetsEmulator(latency=args.latency, record_requests=False)
        if args.seed:
            load_seed(Path(args.seed), sheets)
        return sheets
    common = {"latency": args.latency, "log": args.log, "record_requests": False}
    if args.provider == "ro":
        credits_ = 1_000_000 if args.credits is None else int(args.credits)
        return RoEmulator(token=args.token, credits=credits_, **common)
    balance = 1000.0 if args.credits is None else float(args.credits)
    return PkEmulator(email=args.email, key=args.key, mask=args.mask, balance=balance, **common)


async def _serve_forever(emulator: Emulator, port: int) -> None:
    listener = _Listener(emulator)
    bound = await listener.open(port)
    print(f"listening on http://127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await listener.close()
    emulator.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators.server")
    parser.add_argument("provider", choices=["ro", "pk", "sheets"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds held before answering")
    parser.add_argument("--token", default="test-token", help="RO token")
    parser.add_argument("--key", default="test-key", help="PK API key")
    parser.add_argument("--email", default="ops@example.com", help="PK account email")
    parser.add_argument("--mask", default="SMS-ALERT", help="PK approved mask")
    parser.add_argument("--credits", default=None, help="RO credits, or PK balance")
    parser.add_argument("--log", default=None, help="append each accepted message here (JSON lines)")
    parser.add_argument("--seed", default=None, help="sheets: JSON file of spreadsheets to serve")
    args = parser.parse_args(argv)
    asyncio.run(_serve_forever(build_emulator(args), args.port))


if __name__ == "__main__":
    main()
