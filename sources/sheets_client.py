"""The blocking side of the Google Sheets source: auth, routing, timeouts, retries, cached handles.

Everything here blocks (gspread sits on `requests`); `sources.google_sheets` calls it through
`asyncio.to_thread` only. One `SheetsClient` serves one source and is used by one thread at a time.

Requests go through a session that sends gspread's fixed `https://sheets.googleapis.com` URLs to
`api_url` (`sources.sheets_auth`), so an emulator on loopback can stand in for Google; the token
endpoint is whatever the key file's `token_uri` names.

Quota and faults: gspread's own `BackOffHTTPClient` ignores `Retry-After` and can retry without a
bound, so every call goes through the product's one retry policy (`connector.retry`) with
tenacity: 429 and 503 (and 5xx, timeouts or cut connections where repeating the call is harmless)
are retried with jittered exponential back-off or exactly what `Retry-After` asks, and given up
once the next wait would pass `max_retry_time`. Every request carries `timeout`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import gspread
import requests
import structlog
from google.auth import exceptions as auth_exceptions
from gspread.exceptions import APIError, SpreadsheetNotFound, WorksheetNotFound
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_any, stop_before_delay
from tenacity.stop import stop_base

from connector.retry import Backoff, Proof, worth_repeating
from connector.retry import retry_after as parse_retry_after
from sources.sheets_auth import SCOPES, SheetsError, load_credentials, routed_session

__all__ = ["SCOPES", "SheetsClient", "SheetsError", "load_credentials"]

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Grid:
    """What the cached handles know about the worksheet."""

    spreadsheet_id: str
    spreadsheet_title: str
    sheet_id: int
    title: str
    rows: int
    cols: int

    def a1(self, rng: str = "") -> str:
        """`'Title'!rng`: quoted, so titles with spaces or quotes still parse."""
        quoted = "'" + self.title.replace("'", "''") + "'"
        return f"{quoted}!{rng}" if rng else quoted


@dataclass(frozen=True, slots=True)
class Block:
    """Cells as read, with the sheet position (1-based) of `values[0][0]`."""

    row: int
    col: int
    values: list[list[str]]


@dataclass(frozen=True, slots=True)
class Cell:
    row: int  # 1-based
    col: int  # 1-based
    text: str


def retry_after(exc: BaseException) -> float | None:
    """Seconds a 429/503 answer asks to wait (`Retry-After` as seconds or an HTTP date)."""
    if not isinstance(exc, APIError):
        return None
    return parse_retry_after(exc.response.headers.get("Retry-After"))


def status_of(exc: BaseException) -> int | None:
    if isinstance(exc, APIError):
        return int(exc.response.status_code)
    return None


def proof_of(exc: BaseException) -> Proof:
    """What a failed call proves about whether Google did it (connector/retry.py decides the rest)."""
    status = status_of(exc)
    if status is not None:
        if status in (429, 503):
            return Proof.NOT_DONE
        return Proof.MAYBE_DONE if status >= 500 else Proof.FINAL
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return Proof.NOT_DONE
    if isinstance(exc, requests.exceptions.Timeout | requests.exceptions.ConnectionError):
        return Proof.MAYBE_DONE
    if isinstance(exc, auth_exceptions.RefreshError):
        return Proof.NOT_DONE if getattr(exc, "retryable", False) else Proof.FINAL
    return Proof.NOT_DONE if isinstance(exc, auth_exceptions.TransportError) else Proof.FINAL


def transient(exc: BaseException, *, idempotent: bool) -> bool:
    """Worth another try? Only what proves the call was not done, unless repeating it is harmless."""
    return worth_repeating(proof_of(exc), repeatable=idempotent)


class _Cancelled(stop_base):
    """Stop retrying once the source is stopping."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._event.is_set()


class SheetsClient:
    """One worksheet of one spreadsheet, through gspread, with handles cached between calls."""

    backoff_base = 1.0  # seconds before the first retry without Retry-After; doubles each time
    backoff_cap = 60.0  # one wait never longer, whatever Retry-After says

    def __init__(
        self,
        *,
        key_file: Path | None,
        spreadsheet: str,
        worksheet: str | None,
        api_url: str,
        timeout: float,
        max_retry_time: float,
        source: str = "",
    ) -> None:
        self.key_file = key_file
        self.spreadsheet_key = spreadsheet
        self.worksheet_title = worksheet
        self.api_url = api_url
        self.timeout = timeout
        self.max_retry_time = max_retry_time
        self.source = source
        self._client: gspread.Client | None = None
        self._email = ""
        self._spreadsheet: gspread.Spreadsheet | None = None
        self._grid: Grid | None = None
        self._cancelled = threading.Event()

    # -- handles ------------------------------------------------------------------------------------

    def grid(self) -> Grid:
        """The worksheet's handles, opened on first use (a token and two metadata requests)."""
        if self._grid is None:
            self._grid = self._retry(self._open, idempotent=True, what="open the worksheet")
        return self._grid

    def forget(self) -> None:
        """Drop the cached handles: the next call opens the spreadsheet again."""
        self._spreadsheet = None
        self._grid = None

    def _gspread(self) -> gspread.Client:
        if self._client is None:
            if self.key_file is None:
                raise SheetsError("no credentials: set `credentials` or GOOGLE_APPLICATION_CREDENTIALS")
            creds = load_credentials(self.key_file)
            self._email = str(creds.service_account_email)
            client = gspread.Client(creds, session=routed_session(creds, self.api_url))
            client.set_timeout(self.timeout)
            self._client = client
        return self._client

    def _open(self) -> Grid:
        client = self._gspread()
        try:
            spreadsheet = client.open_by_key(self.spreadsheet_key)
        except SpreadsheetNotFound as e:
            raise SheetsError(
                f"spreadsheet {self.spreadsheet_key} not found, or not shared with {self._email}"
            ) from e
        except PermissionError as e:
            raise SheetsError(
                f"spreadsheet {self.spreadsheet_key}: {self._email} has no access; share it with that account"
            ) from e
        try:
            if self.worksheet_title is None:
                worksheet = spreadsheet.get_worksheet(0)
            else:
                worksheet = spreadsheet.worksheet(self.worksheet_title)
        except WorksheetNotFound as e:
            raise SheetsError(
                f"worksheet {self.worksheet_title!r} not found in spreadsheet {spreadsheet.title!r}"
            ) from e
        self._spreadsheet = spreadsheet
        grid = Grid(
            spreadsheet_id=spreadsheet.id,
            spreadsheet_title=spreadsheet.title,
            sheet_id=int(worksheet.id),
            title=worksheet.title,
            rows=int(worksheet.row_count),
            cols=int(worksheet.col_count),
        )
        log.info("sheet opened", source=self.source, spreadsheet=grid.spreadsheet_title, worksheet=grid.title)
        return grid

    # -- calls --------------------------------------------------------------------------------------

    def read(self, rng: str = "") -> Block:
        """One values.get of `rng` (A1 without the sheet), or of the whole used range."""

        def call(grid: Grid, spreadsheet: gspread.Spreadsheet) -> Block:
            answer = spreadsheet.values_get(grid.a1(rng))
            return _block(answer)

        return self._with_handles(call, idempotent=True, what="read the sheet")

    def write(self, cells: Sequence[Cell]) -> int:
        """One values:batchUpdate, RAW, with runs of adjacent cells in a column joined into one range."""
        runs = _runs(cells)

        def call(grid: Grid, spreadsheet: gspread.Spreadsheet) -> None:
            body = {
                "valueInputOption": "RAW",
                "data": [{"range": grid.a1(rng), "values": values} for rng, values in runs],
            }
            spreadsheet.values_batch_update(body)

        # Writing the same text into the same cells twice changes nothing: safe to repeat.
        self._with_handles(call, idempotent=True, what="write statuses")
        return len(runs)

    def widen(self, cols: int) -> None:
        """Make the grid at least `cols` columns wide (one spreadsheets.batchUpdate when needed)."""
        grid = self.grid()
        if grid.cols >= cols:
            return

        def call(grid: Grid, spreadsheet: gspread.Spreadsheet) -> None:
            body = {
                "requests": [
                    {
                        "appendDimension": {
                            "sheetId": grid.sheet_id,
                            "dimension": "COLUMNS",
                            "length": cols - grid.cols,
                        }
                    }
                ]
            }
            spreadsheet.batch_update(body)

        # Not idempotent: a repeated append adds columns again. Retried only on proof it was not done.
        self._with_handles(call, idempotent=False, what="widen the sheet")
        self._grid = Grid(
            grid.spreadsheet_id, grid.spreadsheet_title, grid.sheet_id, grid.title, grid.rows, cols
        )
        log.info("sheet widened", source=self.source, worksheet=grid.title, columns=cols)

    def cancel(self) -> None:
        """Stop waiting between retries (the source is stopping); the call in hand fails."""
        self._cancelled.set()

    def _with_handles(
        self, call: Callable[[Grid, gspread.Spreadsheet], T], *, idempotent: bool, what: str
    ) -> T:
        fresh = self._grid is None
        grid = self.grid()
        assert self._spreadsheet is not None
        spreadsheet = self._spreadsheet
        try:
            return self._retry(lambda: call(grid, spreadsheet), idempotent=idempotent, what=what)
        except SheetsError as e:
            # A 404/400 on cached handles: the worksheet may have been renamed, deleted or resized
            # since they were opened. Open again and try once more; fresh handles get no second go.
            if fresh or status_of(e.__cause__ or e) not in (400, 404):
                raise
        log.info("sheet handles stale; opening again", source=self.source)
        self.forget()
        grid = self.grid()
        assert self._spreadsheet is not None
        spreadsheet = self._spreadsheet
        return self._retry(lambda: call(grid, spreadsheet), idempotent=idempotent, what=what)

    def _retry(self, call: Callable[[], T], *, idempotent: bool, what: str) -> T:
        started = time.monotonic()
        retrying = Retrying(
            retry=retry_if_exception(lambda e: transient(e, idempotent=idempotent)),
            wait=Backoff(self.backoff_base, self.backoff_cap).wait_strategy(_asked_wait),
            stop=stop_any(stop_before_delay(self.max_retry_time), _Cancelled(self._cancelled)),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(call)
        except SheetsError:
            raise
        except APIError as e:
            raise SheetsError(f"cannot {what}: {_describe(e, retrying, started)}") from e
        except (requests.exceptions.RequestException, auth_exceptions.GoogleAuthError) as e:
            raise SheetsError(f"cannot {what}: {_describe(e, retrying, started)}") from e

    def _sleep(self, seconds: float) -> None:
        self._cancelled.wait(seconds)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "sheets call retried",
            source=self.source,
            attempt=state.attempt_number,
            status=status_of(exc) if exc is not None else None,
            error=type(exc).__name__,
            wait_s=round(state.upcoming_sleep, 2),
        )


def _asked_wait(state: RetryCallState) -> float | None:
    exc = state.outcome.exception() if state.outcome is not None else None
    return retry_after(exc) if exc is not None else None


def _describe(exc: BaseException, retrying: Retrying, started: float) -> str:
    attempts = retrying.statistics.get("attempt_number", 1)
    elapsed = time.monotonic() - started
    if isinstance(exc, APIError):
        message = str(exc.error.get("message", "")) or exc.response.reason
        text = f"HTTP {exc.response.status_code}: {message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    if attempts > 1:
        text += f" (gave up after {attempts} attempts over {elapsed:.1f}s)"
    return text


def _block(answer: Any) -> Block:
    """A values.get answer as strings, placed by the start of its `range` (A1 when it has none)."""
    values = [[str(cell) for cell in row] for row in answer.get("values", [])]
    row, col = 1, 1
    rng = str(answer.get("range", ""))
    start = rng.rpartition("!")[2].split(":", 1)[0]
    if start:
        letters = start.rstrip("0123456789")
        digits = start[len(letters) :]
        if letters.isalpha():
            col = column_number(letters)
        if digits:
            row = int(digits)
    return Block(row, col, values)


def column_letter(col: int) -> str:
    """1 -> A, 27 -> AA."""
    letters = ""
    while col > 0:
        col, rest = divmod(col - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def column_number(letters: str) -> int:
    number = 0
    for char in letters.upper():
        number = number * 26 + ord(char) - ord("A") + 1
    return number


def _runs(cells: Sequence[Cell]) -> list[tuple[str, list[list[str]]]]:
    """Cells grouped into vertical runs: thousands of adjacent statuses become one range."""
    ordered = sorted(cells, key=lambda c: (c.col, c.row))
    runs: list[tuple[str, list[list[str]]]] = []
    start: Cell | None = None
    texts: list[list[str]] = []
    for cell in ordered:
        if start is not None and cell.col == start.col and cell.row == start.row + len(texts):
            texts.append([cell.text])
            continue
        if start is not None:
            runs.append((_range(start, len(texts)), texts))
        start, texts = cell, [[cell.text]]
    if start is not None:
        runs.append((_range(start, len(texts)), texts))
    return runs


def _range(start: Cell, height: int) -> str:
    letter = column_letter(start.col)
    first = f"{letter}{start.row}"
    return first if height == 1 else f"{first}:{letter}{start.row + height - 1}"
