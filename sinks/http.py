"""What every sink that speaks HTTP to a provider shares, so a provider module only builds its
request and reads its answer.

The path of one request (one message, or one bulk group):

    slot (concurrency) -> Retry-After hold -> token (rate) -> still not paused or stopping?
        -> on_sending -> request -> Verdict

and around it, the retry loop: answers that prove the provider did not take the message (refused
connection, connect timeout, 429, 503) are sent again with exponential back-off and full jitter,
honouring `Retry-After`, until `max_retry_time` would be exceeded; then the message is held and
the sink paused. Answers after which the provider may have taken it (read timeout, dropped
connection, 500/502/504) become `unknown`, because a resend may pay twice, unless the sink sets
`retry_ambiguous`. An account problem pauses the sink: every message of the batch that has not left
yet is held, and none leaves until the pause ends. A 429 or 503 that says `Retry-After` holds every
request of the sink for that long, not only the message that got it: the provider means the client.

Stopping: after `stop()` nothing more leaves (waits for a slot, a token, a hold or a back-off end
at once, held); after `abort()` the requests still on the wire are given up as `unknown`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import ClassVar

import httpx
import structlog
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_before_delay

from connector.errors import Fenced
from connector.events import Message, Outcome
from connector.redact import Redactor
from connector.retry import Backoff, worth_repeating
from sinks.base import STOPPED, SendingHook, SettledHook, Sink
from sinks.http_answers import (
    BY_STATUS,
    MAYBE_TAKEN,
    SERVER_ERRORS,
    Kind,
    OutcomeRow,
    Verdict,
    body_text,
    find_key,
    json_body,
    lookup,
    trim,
    verdict_for_error,
    verdict_of,
    what,
)
from sinks.http_config import HttpSinkConfig

__all__ = [  # the answer vocabulary is re-exported: provider modules import it from here
    "BY_STATUS",
    "MAYBE_TAKEN",
    "SERVER_ERRORS",
    "HttpSink",
    "Kind",
    "OutcomeRow",
    "Verdict",
    "body_text",
    "find_key",
    "json_body",
    "lookup",
    "trim",
    "verdict_of",
]

log = structlog.get_logger(__name__)

ABORTED = "no answer before the shutdown grace ended" + MAYBE_TAKEN


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
        self.held_until = 0.0  # monotonic: no request leaves before this (the provider's Retry-After)
        self._paused_at = 0.0
        self._on_wire: set[asyncio.Task[object]] = set()  # tasks awaiting an answer right now
        self._aborted = False
        self.redact = Redactor(config.secrets()).text  # for reasons: provider bodies may echo a key

    @property
    def in_flight(self) -> int:
        return self.config.concurrency

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

    # -- the machinery ----------------------------------------------------------------------

    async def send(
        self, messages: Sequence[Message], on_sending: SendingHook, on_settled: SettledHook | None = None
    ) -> list[Outcome]:
        if self.stopping.is_set() or self.paused:
            reason = STOPPED if self.stopping.is_set() else self.held_reason
            return [Outcome.held(reason) for _ in messages]
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
        return self.outcomes_of(group, await self.attempt(group, on_sending))

    async def attempt(self, group: Sequence[Message], on_sending: SendingHook) -> Verdict:
        """Send `group` until its answer is final, or the retry time is spent (connector/retry.py)."""
        began = time.monotonic()
        first = await self._once(group, on_sending)
        if not self._worth_retrying(first):
            return first  # nearly every send: no retry machinery is built for it
        kinds: list[Kind] = [first.kind]  # of every try: an earlier ambiguous one may have been paid for
        answered: list[Verdict] = [first]  # the first try is tenacity's first attempt, already made

        async def one_try() -> Verdict:
            if answered:
                return answered.pop()
            verdict = await self._once(group, on_sending)
            kinds.append(verdict.kind)
            return verdict

        def give_up(state: RetryCallState) -> Verdict:
            verdict: Verdict = state.outcome.result() if state.outcome is not None else first
            reason = f"provider unavailable: {verdict.detail} after {state.attempt_number} attempts"
            if not self.paused:  # the other groups of the batch give up too: one pause
                self.pause(reason)
            if Kind.AMBIGUOUS in kinds:
                return Verdict(Kind.AMBIGUOUS, f"{reason}; an earlier try may have been taken")
            return Verdict(Kind.PAUSED, self.held_reason)

        retrying = AsyncRetrying(
            retry=retry_if_result(self._worth_retrying),
            wait=Backoff(self.first_wait, self.longest_wait).wait_strategy(_asked_wait),
            stop=stop_before_delay(self.config.max_retry_time - (time.monotonic() - began)),
            sleep=self._rest,
            before_sleep=self._log_retry,
            retry_error_callback=give_up,
        )
        verdict: Verdict = await retrying(one_try)
        if verdict.kind is Kind.PAUSED and Kind.AMBIGUOUS in kinds[:-1]:
            return Verdict(Kind.AMBIGUOUS, f"{verdict.detail}; an earlier try may have been taken")
        return verdict

    def _worth_retrying(self, verdict: Verdict) -> bool:
        return worth_repeating(verdict.proof, repeatable=self.config.retry_ambiguous)

    def _log_retry(self, state: RetryCallState) -> None:
        verdict: Verdict | None = state.outcome.result() if state.outcome is not None else None
        log.warning(
            "provider busy, will retry",
            sink=self.name,
            reason=self.redact(verdict.detail if verdict is not None else ""),
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 2),
        )

    async def _once(self, group: Sequence[Message], on_sending: SendingHook) -> Verdict:
        """One request: a slot, the provider's hold, a token; then send unless paused or stopping."""
        async with self.slots:
            while (hold := self.held_until - time.monotonic()) > 0 and not self.stopping.is_set():
                await self._rest(hold)
            if self.limiter is not None and not self.paused:
                await self._token(self.limiter)
            if self.stopping.is_set():
                return Verdict(Kind.PAUSED, STOPPED)
            if self.paused:
                return Verdict(Kind.PAUSED, self.held_reason)
            try:
                request = self.request(group)
            except httpx.InvalidURL as exc:
                verdict = Verdict(Kind.ACCOUNT, f"cannot build the request: {what(exc)}")
                self._learn(group, verdict, time.monotonic())
                return verdict
            try:
                await on_sending(group)
            except Fenced as exc:
                return Verdict(Kind.LOST, str(exc))
            left_at = time.monotonic()
            verdict = await self._exchange(group, request)
        self._learn(group, verdict, left_at)
        return verdict

    async def _exchange(self, group: Sequence[Message], request: httpx.Request) -> Verdict:
        """The request on the wire, and what its answer (or its failure) proves."""
        task = asyncio.current_task()
        assert task is not None
        self._on_wire.add(task)
        try:
            response = await self.client.send(request, follow_redirects=False)
        except httpx.HTTPError as exc:
            return verdict_for_error(exc, self.config)
        except asyncio.CancelledError:
            # Only `abort()`'s own cancellation becomes an answer; any other one goes on up.
            if not self._aborted or task.uncancel() > 0:
                raise
            return Verdict(Kind.AMBIGUOUS, ABORTED)
        finally:
            self._on_wire.discard(task)
        return self._read(group, response)

    async def _rest(self, seconds: float) -> None:
        """Sleep, but wake as soon as the connector stops: a stopping sink sends nothing more."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _token(self, limiter: AsyncLimiter) -> None:
        """A token of the rate limit, unless the connector stops first."""
        if limiter.has_capacity():
            await limiter.acquire()
            return
        token = asyncio.ensure_future(limiter.acquire())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait((token, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not token.done():
                token.cancel()

    def abort(self) -> None:
        self._aborted = True
        for task in list(self._on_wire):
            task.cancel()

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
        """What an answer tells about the sink as a whole: pause, hold, resume, or a bug of ours."""
        kinds = {v.kind for v in verdict.each} if verdict.each else {verdict.kind}
        if Kind.ACCOUNT in kinds:
            # Requests that left before the pause began answer the same: one pause, not one each.
            if not (self.paused and self._paused_at >= left_at):
                account = next(v for v in (verdict.each or (verdict,)) if v.kind is Kind.ACCOUNT)
                self.pause(account.detail)
        elif Kind.ACCEPTED in kinds and self.pause_reason and self._paused_at <= left_at:
            self.resume()
        if verdict.kind is Kind.BUSY and verdict.retry_after is not None:
            until = time.monotonic() + min(verdict.retry_after, self.longest_wait)
            if until > self.held_until:
                self.held_until = until
                log.warning(
                    "provider asked to wait; the sink holds every request",
                    sink=self.name,
                    wait_s=round(until - time.monotonic(), 2),
                )
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

    def outcomes_of(self, group: Sequence[Message], verdict: Verdict) -> list[Outcome]:
        """One outcome per message of the group, in order."""
        verdicts = verdict.each if verdict.each is not None else (verdict,) * len(group)
        return [self._outcome(v) for v in verdicts]

    def _outcome(self, verdict: Verdict) -> Outcome:
        detail = self.redact(verdict.detail)
        if verdict.kind is Kind.ACCOUNT:  # held because the sink paused: the status says so
            detail = f"sink {self.name} paused: {detail}"
        return _OUTCOMES[verdict.kind](detail)


def _asked_wait(state: RetryCallState) -> float | None:
    """The provider's Retry-After, carried by the verdict of the try that failed."""
    verdict: Verdict | None = state.outcome.result() if state.outcome is not None else None
    return verdict.retry_after if verdict is not None else None


_OUTCOMES = {
    Kind.ACCEPTED: Outcome.sent,
    Kind.REFUSED: Outcome.failed,
    Kind.BUG: Outcome.failed,
    Kind.ACCOUNT: Outcome.held,
    Kind.BUSY: Outcome.held,
    Kind.AMBIGUOUS: Outcome.unknown,
    Kind.PAUSED: Outcome.held,  # never left: paused, retries spent, or stopping
    Kind.LOST: Outcome.lost,
}
