"""What every sink that speaks HTTP to a provider shares, so a provider module only builds its
request and reads its answer.

The path of one request (one message, or one bulk group):

    slot (concurrency) -> token (rate) -> still not paused? -> on_sending -> request -> Verdict

and around it, the retry loop: answers that prove the provider did not take the message (refused
connection, connect timeout, 429, 503) are sent again with exponential back-off and full jitter,
honouring `Retry-After`, until `max_retry_time` would be exceeded; then the message is held and
the sink paused. Answers after which the provider may have taken it (read timeout, dropped
connection, 500/502/504) become `unknown`, because a resend may pay twice, unless the sink sets
`retry_ambiguous`. An account problem pauses the sink: every message of the batch that has not left
yet is held, and none leaves until the pause ends.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import logging
import random
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote, quote_plus

import httpx
import structlog
from aiolimiter import AsyncLimiter

from connector.events import Message, Outcome
from connector.retry import retry_after
from sinks.base import SendingHook, SettledHook, Sink
from sinks.http_config import HttpSinkConfig

log = structlog.get_logger(__name__)

REASON_LIMIT = 200  # characters of the provider's body kept in a reason
_SPACE = re.compile(r"\s+")
MAYBE_TAKEN = ": the provider may have taken it"


class Kind(enum.Enum):
    """What one provider answer proves; `HttpSink.settle` turns it into outcomes."""

    ACCEPTED = "accepted"  # taken -> sent
    REFUSED = "refused"  # this message will not go as it stands -> failed
    BUG = "bug"  # we built the request wrong -> failed, and logged as an error
    ACCOUNT = "account"  # no message can go until a person acts -> pause, held
    BUSY = "busy"  # proved not taken, worth another try -> retried, then held
    AMBIGUOUS = "ambiguous"  # the request left and may have been taken -> unknown
    PAUSED = "paused"  # never left: the sink is paused -> held


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Kind
    detail: str  # provider id or code when accepted, else the reason
    retry_after: float | None = None  # seconds the provider asked us to wait
    code: str | None = None  # the provider's own answer code, when it has them
    each: tuple[Verdict, ...] | None = None  # per message of a bulk group, when the answer says


@dataclass(frozen=True, slots=True)
class Answer:
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
BY_STATUS: tuple[Answer, ...] = (
    Answer(Kind.BUSY, "provider busy", statuses=(429, 503)),
    Answer(Kind.AMBIGUOUS, "provider error", statuses=SERVER_ERRORS),
    Answer(Kind.ACCOUNT, "credentials refused", statuses=(401, 403)),
    Answer(Kind.ACCOUNT, "payment required", statuses=(402,)),
    # Not followed on purpose: a redirected POST may lose its body; the url needs fixing.
    Answer(Kind.ACCOUNT, "redirected elsewhere: check the sink's url", statuses=range(300, 400)),
    Answer(Kind.REFUSED, "refused", statuses=range(400, 500)),
)


def lookup(table: Sequence[Answer], response: httpx.Response) -> Verdict | None:
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


def backoff(
    attempt: int, asked: float | None, *, first: float, longest: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before try `attempt + 1`: the provider's `Retry-After` if it gave one,
    else exponential with full jitter (spreads the retries of many senders); never above `longest`."""
    if asked is not None:
        return min(asked, longest)
    ceiling = min(longest, first * 2 ** (attempt - 1))
    return (rng or random).uniform(0.0, ceiling)  # jitter, not cryptography


def verdict_for_error(exc: httpx.HTTPError, config: HttpSinkConfig) -> Verdict:
    """What a transport failure proves about whether the provider took the request."""
    if isinstance(exc, httpx.ConnectTimeout):
        return Verdict(Kind.BUSY, f"connect timeout after {config.connect_timeout:g}s")
    if isinstance(exc, httpx.PoolTimeout):
        return Verdict(Kind.BUSY, f"no free connection after {config.timeout:g}s")
    if isinstance(exc, httpx.ConnectError | httpx.ProxyError):
        return Verdict(Kind.BUSY, f"cannot connect: {_what(exc)}")
    if isinstance(exc, httpx.ReadTimeout):
        return Verdict(Kind.AMBIGUOUS, f"read timeout after {config.timeout:g}s{MAYBE_TAKEN}")
    if isinstance(exc, httpx.WriteTimeout):
        return Verdict(Kind.AMBIGUOUS, f"write timeout after {config.timeout:g}s{MAYBE_TAKEN}")
    if isinstance(exc, httpx.RemoteProtocolError):
        return Verdict(Kind.AMBIGUOUS, f"connection dropped before the answer: {_what(exc)}{MAYBE_TAKEN}")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        # The same for every message (a bad url or a token that cannot be a header): a person fixes it.
        return Verdict(Kind.ACCOUNT, f"cannot build the request: {_what(exc)}")
    return Verdict(Kind.AMBIGUOUS, f"connection error: {_what(exc)}{MAYBE_TAKEN}")


def _what(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class _RedactSecrets(logging.Filter):
    """httpx logs every request's url at INFO, and a provider that wants its key in the query
    string (Robo SMS Pakistan's check-balance) would put the key in the log."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, secret: str) -> None:
        self.secrets.update({secret, quote(secret, safe=""), quote_plus(secret)})

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(secret in text for secret in self.secrets):
            for secret in sorted(self.secrets, key=len, reverse=True):
                text = text.replace(secret, "***")
            record.msg, record.args = text, ()
        return True


_httpx_redaction = _RedactSecrets()
logging.getLogger("httpx").addFilter(_httpx_redaction)


class HttpSink(Sink):
    """Base of the provider sinks: subclasses say how to build a request and read its answer."""

    first_wait: ClassVar[float] = 0.5  # seconds before the first retry (before jitter)
    longest_wait: ClassVar[float] = 60.0  # one wait never exceeds this, whatever Retry-After says

    config: HttpSinkConfig

    def __init__(self, name: str, config: HttpSinkConfig, client: httpx.AsyncClient) -> None:
        super().__init__(name, config, client)
        self.slots = asyncio.Semaphore(config.concurrency)
        self.limiter: AsyncLimiter | None = None
        if config.rate is not None:
            # aiolimiter cannot hand out a whole token when fewer than one arrive per period.
            count, per = config.rate.count, config.rate.per
            self.limiter = AsyncLimiter(count, per) if count >= 1 else AsyncLimiter(1, per / count)
        self.timeouts = httpx.Timeout(
            connect=config.connect_timeout, read=config.timeout, write=config.timeout, pool=config.timeout
        )
        self._paused_at = 0.0
        self._secrets = [s for s in config.secrets() if s]
        for secret in self._secrets:
            _httpx_redaction.add(secret)

    # -- for the provider modules -----------------------------------------------------------

    @abc.abstractmethod
    def request(self, group: Sequence[Message]) -> httpx.Request:
        """The request that carries `group` (build it with `self.client.build_request`)."""

    @abc.abstractmethod
    def classify(self, group: Sequence[Message], response: httpx.Response) -> Verdict:
        """What the provider's answer means."""

    def groups(self, messages: Sequence[Message]) -> list[list[int]]:
        """Indexes of the messages that travel together; one request each by default."""
        return [[i] for i in range(len(messages))]

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # -- the machinery ----------------------------------------------------------------------

    async def send(
        self, messages: Sequence[Message], on_sending: SendingHook, on_settled: SettledHook | None = None
    ) -> list[Outcome]:
        if self.paused:
            return [Outcome.held(f"sink paused: {self.pause_reason}") for _ in messages]
        outcomes: list[Outcome | None] = [None] * len(messages)

        async def run(indexes: list[int]) -> None:
            group = [messages[i] for i in indexes]
            results = await self.deliver(group, on_sending)
            for i, outcome in zip(indexes, results, strict=True):
                outcomes[i] = outcome
            if on_settled is not None:
                await on_settled(group, results)

        async with asyncio.TaskGroup() as tasks:
            for indexes in self.groups(messages):
                tasks.create_task(run(indexes))
        assert all(o is not None for o in outcomes), "every message belongs to exactly one group"
        return [o for o in outcomes if o is not None]

    async def deliver(self, group: Sequence[Message], on_sending: SendingHook) -> list[Outcome]:
        """Outcomes for one group; a provider may override it to split a refused bulk group."""
        return self.settle(group, await self.attempt(group, on_sending))

    async def attempt(self, group: Sequence[Message], on_sending: SendingHook) -> Verdict:
        """Send `group` until its answer is final, or the retry time is spent."""
        began = time.monotonic()
        tries = 0
        maybe_taken = False
        while True:
            tries += 1
            verdict = await self._once(group, on_sending)
            if not self._worth_retrying(verdict):
                if maybe_taken and verdict.kind is Kind.PAUSED:
                    return Verdict(Kind.AMBIGUOUS, f"{verdict.detail}; an earlier try may have been taken")
                return verdict
            maybe_taken = maybe_taken or verdict.kind is Kind.AMBIGUOUS
            wait = backoff(tries, verdict.retry_after, first=self.first_wait, longest=self.longest_wait)
            if time.monotonic() - began + wait > self.config.max_retry_time:
                reason = f"provider unavailable: {verdict.detail} after {tries} attempts"
                if not self.paused:  # the other groups of the batch give up too: one pause
                    self.pause(reason)
                if maybe_taken:
                    return Verdict(Kind.AMBIGUOUS, f"{reason}; an earlier try may have been taken")
                return Verdict(Kind.BUSY, reason)
            log.warning(
                "provider busy, will retry",
                sink=self.name,
                reason=self.redact(verdict.detail),
                attempt=tries,
                wait_s=round(wait, 2),
            )
            await asyncio.sleep(wait)

    def _worth_retrying(self, verdict: Verdict) -> bool:
        return verdict.kind is Kind.BUSY or (verdict.kind is Kind.AMBIGUOUS and self.config.retry_ambiguous)

    async def _once(self, group: Sequence[Message], on_sending: SendingHook) -> Verdict:
        """One request: wait for a slot and a token, then send unless the sink paused meanwhile."""
        async with self.slots:
            if self.limiter is not None and not self.paused:
                await self.limiter.acquire()
            if self.paused:
                return Verdict(Kind.PAUSED, f"sink paused: {self.pause_reason}")
            try:
                request = self.request(group)
            except httpx.InvalidURL as exc:
                verdict = Verdict(Kind.ACCOUNT, f"cannot build the request: {_what(exc)}")
                self._learn(group, verdict, time.monotonic())
                return verdict
            await on_sending(group)
            left_at = time.monotonic()
            try:
                response = await self.client.send(request, follow_redirects=False)
            except httpx.HTTPError as exc:
                verdict = verdict_for_error(exc, self.config)
            else:
                verdict = self._read(group, response)
        self._learn(group, verdict, left_at)
        return verdict

    def _read(self, group: Sequence[Message], response: httpx.Response) -> Verdict:
        try:
            return self.classify(group, response)
        except Exception:  # the request left: a reading bug must not pass for a refusal
            log.exception("cannot read the provider's answer", sink=self.name, status=response.status_code)
            return Verdict(
                Kind.AMBIGUOUS,
                f"unreadable answer (HTTP {response.status_code}): {body_text(response)}{MAYBE_TAKEN}",
            )

    def _learn(self, group: Sequence[Message], verdict: Verdict, left_at: float) -> None:
        """What an answer tells about the sink as a whole: pause, resume, or a bug of ours."""
        kinds = {v.kind for v in verdict.each} if verdict.each else {verdict.kind}
        if Kind.ACCOUNT in kinds:
            # Requests that left before the pause began answer the same: one pause, not one each.
            if not (self.paused and self._paused_at >= left_at):
                account = next(v for v in (verdict.each or (verdict,)) if v.kind is Kind.ACCOUNT)
                self.pause(account.detail)
        elif Kind.ACCEPTED in kinds and self.pause_reason and self._paused_at <= left_at:
            self.resume()
        if Kind.BUG in kinds:
            log.error(
                "provider says our request is malformed: a bug",
                sink=self.name,
                messages=len(group),
                reason=self.redact(verdict.detail),
            )
        log.debug("provider answered", sink=self.name, messages=len(group), verdict=verdict.kind.value)

    def pause(self, reason: str) -> None:
        self._paused_at = time.monotonic()
        super().pause(self.redact(reason))

    def settle(self, group: Sequence[Message], verdict: Verdict) -> list[Outcome]:
        """One outcome per message of the group, in order."""
        verdicts = verdict.each if verdict.each is not None else (verdict,) * len(group)
        return [_OUTCOMES[v.kind](self.redact(v.detail)) for v in verdicts]


_OUTCOMES = {
    Kind.ACCEPTED: Outcome.sent,
    Kind.REFUSED: Outcome.failed,
    Kind.BUG: Outcome.failed,
    Kind.ACCOUNT: Outcome.held,
    Kind.BUSY: Outcome.held,  # only once the retries are spent
    Kind.AMBIGUOUS: Outcome.unknown,
    Kind.PAUSED: Outcome.held,
}
