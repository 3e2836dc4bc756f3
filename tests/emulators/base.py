"""What every provider emulator shares: faults, the request record and the accepted-message log.

An `Emulator` is transport-free: `server.EmulatorServer` (or `server.main`) parses HTTP and calls
`dispatch()` once per fully read request. Each request first takes the next queued `Fault`, if
any. The emulator does its normal handling (and takes the message) as soon as the request is
read; the answer is then held for `latency` plus the fault's `delay`. So a client that times out
while waiting has, like with a real provider, possibly paid: the outcome is ambiguous on purpose.

A fault with a `status`, a `drop` or a provider `code` replaces the normal answer and nothing is
accepted, unless `accept=True`: then the message is taken first and the failure comes after, which
is what a 500/502/504 or a cut connection can hide in real life.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal

JSON_TYPE = "application/json"


@dataclass
class Fault:
    """One scripted misbehaviour, consumed by exactly one request (check-balance included)."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: Literal["before_body", "after_body"] | None = None
    delay: float = 0.0
    accept: bool = False
    # PK only: answer HTTP 200 with this provider code (e.g. "205") instead of handling.
    code: str | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.status, self.drop, self.code)) > 1:
            raise ValueError("a Fault takes at most one of status, drop and code")
        if self.status is not None and not 200 <= self.status <= 599:
            raise ValueError(f"status {self.status} is not a final HTTP status")
        if self.accept and (self.drop == "before_body" or self.code is not None):
            raise ValueError("accept=True needs the body: use it with status or drop='after_body'")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")

    @property
    def replaces_answer(self) -> bool:
        return self.status is not None or self.drop is not None or self.code is not None


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    client: str
    at: float = field(default_factory=time.monotonic)  # when the request was read (this process's clock)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "client": self.client,
            "at": self.at,
        }


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON_TYPE

    @classmethod
    def json(cls, status: int, payload: object, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(payload).encode(), dict(headers or {}))


class Emulator:
    """Base of the provider emulators. Subclasses implement `handle()`; all else is shared.

    Attributes are safe to read from the test thread while the server thread runs: lists only
    grow by `append` (atomic in CPython) and the fault queue is guarded by a lock.
    """

    #: whether `Fault(code=...)` means anything to this provider
    uses_codes = False
    #: largest request body the server reads before answering 413
    max_body = 1 << 20

    def __init__(
        self, *, latency: float = 0.0, log: str | Path | None = None, record_requests: bool = True
    ) -> None:
        self.latency = latency
        self.accepted: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        # sockets accepted so far: lets a test see that its client pool reuses connections
        self.connections = 0
        self.record_requests = record_requests
        self._log_path = Path(log) if log is not None else None
        self._log_file: Any = None
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._accepted_changed = threading.Condition(self._lock)

    # -- test-facing controls ---------------------------------------------------------------

    def inject(self, *faults: Fault) -> None:
        for fault in faults:
            if fault.code is not None and not self.uses_codes:
                raise ValueError(f"{type(self).__name__} has no provider codes: use status")
        with self._lock:
            self._faults.extend(faults)

    def reset(self) -> None:
        """Forget recorded requests, accepted messages, connections and queued faults.

        Account state (token, credits, balance, ...) and latency stay as they are.
        """
        with self._lock:
            self.connections = 0
            self._faults.clear()
            self.accepted.clear()
            self.requests.clear()

    @property
    def faults_pending(self) -> int:
        with self._lock:
            return len(self._faults)

    def wait_accepted(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least `count` messages were accepted; return a snapshot of them."""
        with self._accepted_changed:
            if not self._accepted_changed.wait_for(lambda: len(self.accepted) >= count, timeout):
                raise TimeoutError(f"{len(self.accepted)} of {count} messages accepted in {timeout}s")
            return list(self.accepted)

    def close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- called by the server, on its loop --------------------------------------------------

    def next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def takes_fault(self, method: str, path: str) -> bool:
        """Whether a request to `path` consumes the next queued fault; all do unless overridden."""
        return True

    def record(self, request: HttpRequest) -> None:
        if self.record_requests:
            self.requests.append(request.as_dict())

    def dispatch(self, request: HttpRequest, fault: Fault | None) -> Reply | None:
        """The answer to send, or None to close the connection without one."""
        self.record(request)
        if fault is None:
            return self.handle(request)
        if not fault.replaces_answer:
            reply = self.handle(request)
        else:
            if fault.accept:
                self.handle(request)
            if fault.drop is not None:
                return None
            reply = self.fault_reply(fault)
        reply.headers.update(fault.headers)
        return reply

    def handle(self, request: HttpRequest) -> Reply:
        raise NotImplementedError

    def fault_reply(self, fault: Fault) -> Reply:
        assert fault.status is not None
        return Reply.json(fault.status, {"error": HTTPStatus(fault.status).phrase})

    # -- for subclasses ---------------------------------------------------------------------

    def take(self, to: str, text: str) -> str:
        """Record one accepted message and return its new id."""
        message = {"to": to, "text": text, "id": uuid.uuid4().hex}
        with self._accepted_changed:
            self.accepted.append(message)
            if self._log_path is not None:
                if self._log_file is None:
                    self._log_file = self._log_path.open("a", encoding="utf-8")
                self._log_file.write(json.dumps(message) + "\n")
                self._log_file.flush()
            self._accepted_changed.notify_all()
        return message["id"]


def media_type(request: HttpRequest) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
