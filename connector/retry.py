"""The one retry policy of the product, for every sink and for the Sheets client.

Three questions, answered here once:

- What does a failure prove? Each transport maps its own failures to a `Proof` (the sinks in
  `sinks/http_answers.py`, the Sheets client in `sources/sheets_client.py`); whether to try again
  follows from the proof alone (`worth_repeating`): always when the request was provably not done,
  when it may have been done only if doing it twice is harmless.
- How long to wait? `Backoff`: exponential with full jitter (spreads the retries of many clients),
  or exactly what the server's `Retry-After` asked; never longer than `longest`.
- What does `Retry-After` say? `retry_after`, in seconds or as an HTTP date.

Both clients run the policy through tenacity (`Backoff.wait_strategy` and tenacity's
`stop_before_delay`): the sinks with `AsyncRetrying`, the blocking Sheets client with `Retrying`.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from tenacity import RetryCallState
from tenacity.wait import wait_base

__all__ = ["Backoff", "Proof", "retry_after", "worth_repeating"]


class Proof(enum.Enum):
    """What a failed call proves about whether the other side did it."""

    NOT_DONE = "not done"  # refused connection, connect timeout, 429, 503: nothing happened
    MAYBE_DONE = "maybe done"  # the request left and no usable answer came back
    FINAL = "final"  # an answer that another try would not change


def worth_repeating(proof: Proof, *, repeatable: bool) -> bool:
    """Try again? When nothing was done; when it may have been, only if doing it twice is harmless
    (an idempotent call, or a sink whose operator accepted paying twice: `retry_ambiguous`)."""
    return proof is Proof.NOT_DONE or (proof is Proof.MAYBE_DONE and repeatable)


@dataclass(frozen=True, slots=True)
class Backoff:
    first: float  # seconds before the first retry, before jitter; doubles with each attempt
    longest: float  # one wait never exceeds this, whatever Retry-After says

    def wait(self, attempt: int, asked: float | None, rng: random.Random | None = None) -> float:
        """Seconds before try `attempt + 1`: `asked` (Retry-After) if the server gave it, else
        exponential with full jitter."""
        if asked is not None:
            return min(asked, self.longest)
        ceiling = min(self.longest, self.first * 2 ** (attempt - 1))
        return (rng or random).uniform(0.0, ceiling)  # jitter, not cryptography

    def wait_strategy(self, asked: Callable[[RetryCallState], float | None]) -> wait_base:
        """This back-off as tenacity's `wait=`; `asked` reads Retry-After off the failed attempt."""
        return _Wait(self, asked)


class _Wait(wait_base):
    def __init__(self, backoff: Backoff, asked: Callable[[RetryCallState], float | None]) -> None:
        self._backoff = backoff
        self._asked = asked

    def __call__(self, retry_state: RetryCallState) -> float:
        return self._backoff.wait(retry_state.attempt_number, self._asked(retry_state))


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds asked for by a `Retry-After` header: a number of seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT by definition
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    return max(seconds, 0.0)
