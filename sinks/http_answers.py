"""What a provider's answer proves, in words the HTTP sinks share: the kinds, the verdict, the
outcome-table rows, and what a transport failure says about whether the request was taken.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from connector.retry import Proof, retry_after
from sinks.http_config import HttpSinkConfig

REASON_LIMIT = 200  # characters of the provider's body kept in a reason
_SPACE = re.compile(r"\s+")
MAYBE_TAKEN = ": the provider may have taken it"


class Kind(enum.Enum):
    """What one provider answer proves; `HttpSink.outcomes_of` turns it into outcomes."""

    ACCEPTED = "accepted"  # taken -> sent
    REFUSED = "refused"  # this message will not go as it stands -> failed
    BUG = "bug"  # we built the request wrong -> failed, and logged as an error
    ACCOUNT = "account"  # no message can go until a person acts -> pause, held
    BUSY = "busy"  # proved not taken, worth another try -> retried, then held
    AMBIGUOUS = "ambiguous"  # the request left and may have been taken -> unknown
    PAUSED = "paused"  # never left: the sink is paused -> held
    LOST = "lost"  # never left: the messages are another instance's now (`on_sending` said Fenced)


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Kind
    detail: str  # provider id or code when accepted, else the reason
    retry_after: float | None = None  # seconds the provider asked us to wait
    code: str | None = None  # the provider's own answer code, when it has them
    each: tuple[Verdict, ...] | None = None  # per message of a bulk group, when the answer says

    @property
    def proof(self) -> Proof:
        """What this answer proves about the request, for the retry policy (connector/retry.py)."""
        return _PROOF.get(self.kind, Proof.FINAL)


_PROOF = {Kind.BUSY: Proof.NOT_DONE, Kind.AMBIGUOUS: Proof.MAYBE_DONE}


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """One row of an outcome table: which answers it covers (status and/or words) and their meaning."""

    kind: Kind
    meaning: str
    statuses: Collection[int] = ()
    words: tuple[str, ...] = ()

    def matches(self, status: int, text: str) -> bool:
        if self.statuses and status not in self.statuses:
            return False
        lowered = text.lower()
        return not self.words or any(word in lowered for word in self.words)


SERVER_ERRORS = range(500, 600)

# Shared by the providers for answers that carry nothing more specific than their HTTP status.
BY_STATUS: tuple[OutcomeRow, ...] = (
    OutcomeRow(Kind.BUSY, "provider busy", statuses=(429, 503)),
    OutcomeRow(Kind.AMBIGUOUS, "provider error", statuses=SERVER_ERRORS),
    OutcomeRow(Kind.ACCOUNT, "credentials refused", statuses=(401, 403)),
    OutcomeRow(Kind.ACCOUNT, "payment required", statuses=(402,)),
    # Not followed on purpose: a redirected POST may lose its body; the url needs fixing.
    OutcomeRow(Kind.ACCOUNT, "redirected elsewhere: check the sink's url", statuses=range(300, 400)),
    OutcomeRow(Kind.REFUSED, "refused", statuses=range(400, 500)),
)


def lookup(table: Sequence[OutcomeRow], response: httpx.Response) -> Verdict | None:
    """The verdict of the first row of `table` that covers this answer, with the body kept."""
    text = body_text(response)
    for row in table:
        if row.matches(response.status_code, text):
            return verdict_of(row.kind, row.meaning, response, text)
    return None


def verdict_of(
    kind: Kind, meaning: str, response: httpx.Response, text: str, code: str | None = None
) -> Verdict:
    where = f"code {code}" if code is not None else f"HTTP {response.status_code}"
    detail = f"{meaning} ({where})" + (f": {text}" if text else "")
    if kind is Kind.AMBIGUOUS:
        detail += MAYBE_TAKEN
    wait = retry_after(response.headers.get("retry-after")) if kind is Kind.BUSY else None
    return Verdict(kind, detail, retry_after=wait, code=code)


def body_text(response: httpx.Response) -> str:
    """The provider's body on one line, trimmed: enough for a person to see what it said."""
    return trim(_SPACE.sub(" ", response.text).strip())


def trim(text: str, limit: int = REASON_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def json_body(response: httpx.Response) -> Any:
    """The JSON answer, or None when the body is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def find_key(value: Any, keys: Sequence[str], depth: int = 2) -> Any:
    """The first of `keys` found in a JSON object, looking `depth` levels into nested objects."""
    if not isinstance(value, dict):
        return None
    for key in keys:
        if value.get(key) not in (None, "", [], {}):
            return value[key]
    if depth > 0:
        for nested in value.values():
            found = find_key(nested, keys, depth - 1)
            if found is not None:
                return found
    return None


def verdict_for_error(exc: httpx.HTTPError, config: HttpSinkConfig) -> Verdict:
    """What a transport failure proves about whether the provider took the request."""
    if isinstance(exc, httpx.ConnectTimeout):
        return Verdict(Kind.BUSY, f"connect timeout after {config.connect_timeout:g}s")
    if isinstance(exc, httpx.PoolTimeout):
        return Verdict(Kind.BUSY, f"no free connection after {config.timeout:g}s")
    if isinstance(exc, httpx.ConnectError | httpx.ProxyError):
        return Verdict(Kind.BUSY, f"cannot connect: {what(exc)}")
    if isinstance(exc, httpx.ReadTimeout):
        return Verdict(Kind.AMBIGUOUS, f"read timeout after {config.timeout:g}s{MAYBE_TAKEN}")
    if isinstance(exc, httpx.WriteTimeout):
        return Verdict(Kind.AMBIGUOUS, f"write timeout after {config.timeout:g}s{MAYBE_TAKEN}")
    if isinstance(exc, httpx.RemoteProtocolError):
        return Verdict(Kind.AMBIGUOUS, f"connection dropped before the answer: {what(exc)}{MAYBE_TAKEN}")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        # The same for every message (a bad url or a token that cannot be a header): a person fixes it.
        return Verdict(Kind.ACCOUNT, f"cannot build the request: {what(exc)}")
    return Verdict(Kind.AMBIGUOUS, f"connection error: {what(exc)}{MAYBE_TAKEN}")


def what(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
