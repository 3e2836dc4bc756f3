"""The shared machinery of HTTP sinks (sinks/http.py), on httpx.MockTransport."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from connector.events import Message, OutcomeKind
from connector.retry import Backoff, retry_after
from sinks.http import BY_STATUS, HttpSink, Kind, Verdict, lookup
from sinks.http_config import HttpSinkConfig

SECRET = "s3cr3t-token-value"
Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


class ProbeConfig(HttpSinkConfig):
    token: SecretStr = SecretStr(SECRET)


class ProbeSink(HttpSink):
    """The smallest provider: 2xx is accepted, everything else is read by status class."""

    type_name = "probe"
    config_model = ProbeConfig
    config: ProbeConfig
    first_wait = 0.01

    def request(self, group: Sequence[Message]) -> httpx.Request:
        return self.client.build_request(
            "POST",
            "http://provider.test/send",
            json={"to": [m.to for m in group], "text": group[0].text},
            headers={"Authorization": f"Bearer {self.config.token.get_secret_value()}"},
            timeout=self.timeouts,
        )

    def classify(self, group: Sequence[Message], response: httpx.Response) -> Verdict:
        if response.status_code == 299:
            raise KeyError("a reading bug")
        if response.is_success:
            return Verdict(Kind.ACCEPTED, f"id-{response.json()['n']}")
        verdict = lookup(BY_STATUS, response)
        assert verdict is not None
        return verdict


class Recorder:
    """The on_sending hook: remembers what was declared sending, in order with the requests."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def __call__(self, group: Sequence[Message]) -> None:
        self.events.append("sending " + ",".join(m.id for m in group))


def messages(count: int) -> list[Message]:
    return [Message(id=f"m{i}", to=f"+4074012345{i % 10}", text="hello") for i in range(count)]


def make(handler: Handler, **config: object) -> tuple[ProbeSink, httpx.AsyncClient]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ProbeSink("probe", ProbeConfig.model_validate(config), client), client


def ok(n: int = 1) -> httpx.Response:
    return httpx.Response(200, json={"n": n})


# -- concurrency and rate -------------------------------------------------------------------


class InFlight:
    """A provider that holds each request 10 ms and counts how many it holds at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.now += 1
        self.most = max(self.most, self.now)
        await asyncio.sleep(0.01)
        self.now -= 1
        return ok()


async def test_requests_in_flight_never_exceed_concurrency() -> None:
    provider = InFlight()
    sink, client = make(provider, concurrency=3)
    async with client:
        outcomes = await sink.send(messages(12), Recorder([]))
    assert [o.kind for o in outcomes] == [OutcomeKind.SENT] * 12
    assert provider.most == 3  # used, and never exceeded


async def test_concurrency_is_shared_by_concurrent_batches() -> None:
    provider = InFlight()
    sink, client = make(provider, concurrency=2)
    async with client:
        await asyncio.gather(*(sink.send(messages(4), Recorder([])) for _ in range(3)))
    assert provider.most == 2


async def test_rate_ceiling_spends_one_token_per_request_and_then_waits() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok()

    sink, client = make(handler, rate="3/m", concurrency=8)
    async with client:
        assert sink.limiter is not None and sink.limiter.has_capacity()
        outcomes = await sink.send(messages(3), Recorder([]))
        assert [o.kind for o in outcomes] == [OutcomeKind.SENT] * 3
        assert not sink.limiter.has_capacity()  # the three tokens of this minute are spent
        late = asyncio.create_task(sink.send(messages(1), Recorder([])))
        await asyncio.sleep(0.05)
        assert len(seen) == 3 and not late.done()  # the fourth waits for the next token (20 s)
        late.cancel()
        with pytest.raises(asyncio.CancelledError):
            await late


async def test_a_rate_below_one_per_period_still_gives_whole_tokens() -> None:
    async with httpx.AsyncClient() as client:
        half = ProbeSink("probe", ProbeConfig.model_validate({"rate": "0.5/s"}), client)
        assert half.limiter is not None
        assert (half.limiter.max_rate, half.limiter.time_period) == (1, 2)
        assert half.limiter.has_capacity()


# -- on_sending -----------------------------------------------------------------------------


async def test_on_sending_is_awaited_before_every_request_and_every_retry() -> None:
    events: list[str] = []
    answers = [httpx.Response(503, headers={"Retry-After": "0"}), httpx.Response(429), ok()]

    async def handler(request: httpx.Request) -> httpx.Response:
        events.append("request")
        return answers.pop(0)

    sink, client = make(handler)
    async with client:
        outcomes = await sink.send(messages(1), Recorder(events))
    assert outcomes[0].kind is OutcomeKind.SENT
    assert events == ["sending m0", "request"] * 3


async def test_on_sending_is_not_called_for_a_message_that_never_leaves() -> None:
    events: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        events.append("request")
        return ok()

    sink, client = make(handler)
    sink.pause("no credits")
    async with client:
        outcomes = await sink.send(messages(3), Recorder(events))
    assert [o.kind for o in outcomes] == [OutcomeKind.HELD] * 3
    assert all("no credits" in o.detail for o in outcomes)
    assert events == []


# -- Retry-After and back-off (pure) --------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("5", 5.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # already past
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(header: str | None, seconds: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)
    assert retry_after(header, now=now) == seconds


def test_backoff_honours_retry_after_but_caps_it() -> None:
    assert Backoff(0.5, 60.0).wait(1, 7.0) == 7.0
    assert Backoff(0.5, 60.0).wait(1, 3600.0) == 60.0


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(60.0, 0.5 * 2 ** (attempt - 1))
        waits = [Backoff(0.5, 60.0).wait(attempt, None, rng=rng) for _ in range(50)]
        assert all(0.0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling / 2  # spread over the whole range, not pinned to zero
    assert Backoff(0.5, 60.0).wait(40, None, rng=rng) <= 60.0


# -- retries: proved-not-taken answers -----------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ConnectTimeout("timed out"),
        httpx.PoolTimeout("no connection"),
        httpx.Response(429),
        httpx.Response(503),
    ],
    ids=["refused", "connect-timeout", "pool-timeout", "429", "503"],
)
async def test_proved_not_taken_answers_are_retried(failure: Exception | httpx.Response) -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            if isinstance(failure, Exception):
                raise failure
            return failure
        return ok(calls)

    sink, client = make(handler)
    async with client:
        outcomes = await sink.send(messages(1), Recorder([]))
    assert outcomes[0].kind is OutcomeKind.SENT and outcomes[0].detail == "id-2"
    assert calls == 2


async def test_retries_stop_at_max_retry_time_then_held_and_paused() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503, text="Service Unavailable")

    sink, client = make(handler, max_retry_time=0.2)
    with capture_logs() as logs:
        async with client:
            outcomes = await sink.send(messages(1), Recorder([]))
    (outcome,) = outcomes
    assert outcome.kind is OutcomeKind.HELD
    assert outcome.detail.startswith("sink probe paused: provider unavailable: provider busy (HTTP 503)")
    assert outcome.detail.endswith(f"after {calls} attempts")
    assert calls >= 2
    assert sink.paused
    assert any(e["event"] == "sink paused" and e["log_level"] == "error" for e in logs)


async def test_retry_after_beyond_the_bound_gives_up_at_once() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(429, headers={"Retry-After": "120"})

    sink, client = make(handler, max_retry_time=5)
    async with client:
        (outcome,) = await sink.send(messages(1), Recorder([]))
    assert outcome.kind is OutcomeKind.HELD and "after 1 attempts" in outcome.detail
    assert calls == 1


# -- ambiguous answers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "words"),
    [
        (httpx.ReadTimeout("timed out"), "read timeout after 0.5s"),
        (httpx.WriteTimeout("timed out"), "write timeout"),
        (httpx.ReadError("reset by peer"), "connection error"),
        (httpx.WriteError("broken pipe"), "connection error"),
        (httpx.RemoteProtocolError("Server disconnected"), "connection dropped"),
        (httpx.Response(500, text="boom"), "provider error (HTTP 500): boom"),
        (httpx.Response(502), "HTTP 502"),
        (httpx.Response(504), "HTTP 504"),
    ],
    ids=["read-timeout", "write-timeout", "read-error", "write-error", "dropped", "500", "502", "504"],
)
async def test_ambiguous_answers_are_unknown_not_retried(
    failure: Exception | httpx.Response, words: str
) -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if isinstance(failure, Exception):
            raise failure
        return failure

    sink, client = make(handler, timeout=0.5)
    async with client:
        (outcome,) = await sink.send(messages(1), Recorder([]))
    assert outcome.kind is OutcomeKind.UNKNOWN
    assert words in outcome.detail and outcome.detail.endswith("the provider may have taken it")
    assert calls == 1
    assert not sink.paused


async def test_retry_ambiguous_retries_them() -> None:
    events: list[str] = []
    answers: list[Exception | httpx.Response] = [httpx.ReadTimeout("t"), httpx.Response(502), ok(3)]

    async def handler(request: httpx.Request) -> httpx.Response:
        events.append("request")
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    sink, client = make(handler, retry_ambiguous=True)
    async with client:
        (outcome,) = await sink.send(messages(1), Recorder(events))
    assert outcome.kind is OutcomeKind.SENT and outcome.detail == "id-3"
    assert events == ["sending m0", "request"] * 3


async def test_retry_ambiguous_that_runs_out_stays_unknown() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500)

    sink, client = make(handler, retry_ambiguous=True, max_retry_time=0.1)
    async with client:
        (outcome,) = await sink.send(messages(1), Recorder([]))
    assert outcome.kind is OutcomeKind.UNKNOWN  # an earlier try may have been taken: not pending
    assert "provider unavailable" in outcome.detail and "may have been taken" in outcome.detail
    assert sink.paused


async def test_an_answer_we_cannot_read_is_unknown() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(299, text="odd")

    sink, client = make(handler)
    with capture_logs() as logs:
        async with client:
            (outcome,) = await sink.send(messages(1), Recorder([]))
    assert outcome.kind is OutcomeKind.UNKNOWN and "unreadable answer (HTTP 299): odd" in outcome.detail
    assert any(e["event"] == "cannot read the provider's answer" for e in logs)


# -- account problems and pausing -----------------------------------------------------------


async def test_account_problem_pauses_and_holds_the_rest_of_the_batch() -> None:
    events: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        events.append("request")
        return httpx.Response(401, json={"error": "Incorrect token."})

    sink, client = make(handler, concurrency=1)
    async with client:
        outcomes = await sink.send(messages(5), Recorder(events))
    assert [o.kind for o in outcomes] == [OutcomeKind.HELD] * 5
    assert outcomes[0].detail.startswith("sink probe paused: credentials refused (HTTP 401)")
    assert all(o.detail.startswith("sink probe paused: credentials refused") for o in outcomes[1:])
    assert events == ["sending m0", "request"]
    assert sink.paused


async def test_answers_of_requests_already_in_flight_do_not_pause_twice() -> None:
    gate = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return httpx.Response(402)

    sink, client = make(handler, concurrency=4)
    async with client:
        batch = asyncio.create_task(sink.send(messages(4), Recorder([])))
        await asyncio.sleep(0.02)
        gate.set()
        outcomes = await batch
    assert [o.kind for o in outcomes] == [OutcomeKind.HELD] * 4
    assert sink._next_pause == 2 * sink.first_pause  # paused once, not four times


async def test_a_success_after_the_pause_ends_resumes_the_sink() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return ok()

    sink, client = make(handler)
    sink.pause("no credits")
    sink.paused_until = 0.0  # the pause has run out; the reason stays until a send proves it gone
    with capture_logs() as logs:
        async with client:
            (outcome,) = await sink.send(messages(1), Recorder([]))
    assert outcome.kind is OutcomeKind.SENT
    assert sink.pause_reason == "" and sink._next_pause == sink.first_pause
    assert any(e["event"] == "sink resumed" for e in logs)


async def test_a_redirect_is_not_followed_and_pauses() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "http://elsewhere.test/"})

    sink, client = make(handler)
    async with client:
        (outcome,) = await sink.send(messages(1), Recorder([]))
    assert outcome.kind is OutcomeKind.HELD and "check the sink's url" in outcome.detail
    assert sink.paused


async def test_per_record_refusal_fails_only_that_record() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        bad = "+40740123451" in request.content.decode()
        return httpx.Response(400, text="x" * 500) if bad else ok()

    sink, client = make(handler)
    async with client:
        outcomes = await sink.send(messages(3), Recorder([]))
    assert [o.kind for o in outcomes] == [OutcomeKind.SENT, OutcomeKind.FAILED, OutcomeKind.SENT]
    assert outcomes[1].detail.startswith("refused (HTTP 400): xxx") and len(outcomes[1].detail) < 240
    assert not sink.paused


# -- secrets --------------------------------------------------------------------------------


async def test_secrets_never_reach_reasons_or_logs() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == f"Bearer {SECRET}"
        return httpx.Response(403, text=f"bad token {SECRET}")

    sink, client = make(handler)
    with capture_logs() as logs:
        async with client:
            (outcome,) = await sink.send(messages(1), Recorder([]))
    assert outcome.kind is OutcomeKind.HELD and "bad token ***" in outcome.detail
    assert SECRET not in outcome.detail and SECRET not in sink.pause_reason
    assert logs and SECRET not in repr(logs)


async def test_the_client_is_the_callers_and_stays_open() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return ok()

    sink, client = make(handler)
    async with client:
        await sink.send(messages(1), Recorder([]))
        await sink.aclose()
        assert not client.is_closed
