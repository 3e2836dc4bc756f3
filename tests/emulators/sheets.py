"""Emulator of the Google Sheets API v4 and of Google's OAuth 2.0 token endpoint, on loopback.

Written from Google's public REST reference (spreadsheets.get, spreadsheets.batchUpdate,
spreadsheets.values get / batchGet / update / batchUpdate / append) and the service-account
JWT-bearer flow (RFC 7523). Served by `server.EmulatorServer` like the SMS provider emulators.

Endpoints (``base`` is the server's URL; the key file's ``token_uri`` is ``f"{base}/token"``):

=====================================================  ===========================================
``POST /token``                                        form ``grant_type=urn:ietf:params:oauth:
                                                       grant-type:jwt-bearer&assertion=<JWT>``
``GET  /v4/spreadsheets/{id}``                         metadata; ``fields`` honoured on top level
``POST /v4/spreadsheets/{id}:batchUpdate``             appendDimension, insertDimension,
                                                       deleteDimension, updateSheetProperties
``GET  /v4/spreadsheets/{id}/values/{range}``          values.get
``PUT  /v4/spreadsheets/{id}/values/{range}``          values.update
``POST /v4/spreadsheets/{id}/values/{range}:append``   values.append
``GET  /v4/spreadsheets/{id}/values:batchGet``         values.batchGet (``ranges`` repeated)
``POST /v4/spreadsheets/{id}/values:batchUpdate``      values.batchUpdate
``GET  /v1/projects/-/serviceAccounts/{e}/allowedLocations``  google-auth's boundary lookup
=====================================================  ===========================================

Behaviour worth knowing in tests:

* Sheets calls need ``Authorization: Bearer <token issued here>`` (else 401 UNAUTHENTICATED,
  which makes google-auth's `AuthorizedSession` fetch a new token and retry once) with a scope
  that allows the call (else 403). `expire_tokens()` forgets every issued token.
* The assertion must be a well-formed RS256 JWT with ``iss``, ``scope``, ``aud`` (Google's token
  URL or any URL ending in ``/token``) and ``iat``/``exp`` at most an hour apart around now; with
  ``public_keys`` its signature is verified against the key named by its ``kid``.
* Errors have Google's shape ``{"error": {"code", "message", "status"}}``: an unknown spreadsheet
  is 404; a range naming an unknown sheet is 400 ``Unable to parse range: ...``; a range, or
  written values, beyond the sheet's grid is 400 ``... exceeds grid limits ...``. The grid only
  grows by spreadsheets.batchUpdate (or values.append, which adds rows as Google's does).
* values.batchUpdate and spreadsheets.batchUpdate are all or nothing: one bad range, nothing
  written. ``valueInputOption`` is required. RAW stores text as is; USER_ENTERED turns text
  starting with ``=`` into a formula shown as `FORMULA_SHOWN` (and as its source with
  ``valueRenderOption=FORMULA``) and drops a leading apostrophe, as typing does.
* Faults (`inject`) apply to Sheets calls only, one per request: token and allowedLocations
  requests never take one, so a test's 429 is seen by the call it aims at whatever google-auth
  does in between. `counts` counts every request received, faulted ones included.
* Tests edit like a person with `set_cell`, `insert_rows`, `delete_rows` and `sort_rows` (typing
  ``=...`` makes a formula; the grid follows inserted and deleted rows); `add_spreadsheet` stores
  cells as given. `writes` keeps every values write as received (range, values, valueInputOption).
* `between_read_and_write` runs once, right after the next values read (get or batchGet) has been
  answered from the cells as they were, and is cleared before it runs: the edit it makes lands
  between that read and whatever the client sends next (a key re-read, then the write). A hook
  that sets a new hook puts a second edit after the following read.

Pointing gspread 6.2 at the emulator (and the recipe the product uses): gspread builds every URL
from the constant ``https://sheets.googleapis.com/v4/spreadsheets`` and sends it through
``HTTPClient.session.request(method, url, ...)``; ``gspread.Client(auth, session=s)`` uses ``s``
as that session (and ignores ``auth``). So pass a `google.auth.transport.requests.
AuthorizedSession` subclass whose ``request()`` swaps that prefix for the emulator's base URL
(`EndpointSession` below; `gspread_client()` does the whole recipe). The token exchange goes to
the key file's ``token_uri`` by itself. Set a timeout with ``client.set_timeout(...)``: gspread's
default is none.

google-auth's Regional Access Boundary ("trust boundary") lookup (on by default in 2.62; from 2.63
only when ``GOOGLE_SDK_EXPERIMENTAL_PYTHON_REGIONAL_ACCESS_BOUNDARY_LOOKUP_ENABLED`` is truthy, so
tests of it set that), which the product must keep off the network:
`google.auth.credentials.Credentials.before_request`, run by
`AuthorizedSession.request` before EVERY request, calls ``_after_refresh``, which
`CredentialsWithRegionalAccessBoundary` (a base of `google.oauth2.service_account.Credentials`)
implements as ``_maybe_start_regional_access_boundary_refresh(request, url)``. Unless the URL's
host ends in ``.rep.googleapis.com`` or the universe domain is not ``googleapis.com``, its
``_rab_manager`` (`google.auth._regional_access_boundary_utils._RegionalAccessBoundaryManager`)
starts, when no boundary is cached and no cooldown runs, a daemon thread (one at a time, on a deep
copy of the token-request transport) that GETs the URL from
``_build_regional_access_boundary_lookup_url()``: for service accounts
``https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{email}/allowedLocations``
(`google.oauth2._client._lookup_regional_access_boundary`: bearer token, up to 6 tries, no
timeout). A success caches ``encodedLocations`` for 6 h and adds ``x-allowed-locations`` to later
requests; a failure starts a 15 min cooldown, doubling up to 6 h. Nothing waits on the thread (a
blocking mode exists only behind ``_set_blocking_regional_access_boundary_lookup()``), but it does
try the network. `LocalBoundaryCredentials` (`emulator_credentials()`) redirect the lookup to the
emulator's allowedLocations, which answers ``0x0`` (no restriction), or with ``lookup_base = None``
make it no request at all. The ``GOOGLE_AUTH_TRUST_BOUNDARY_ENABLED`` variable has no effect any
more, and a non-default universe domain would also switch off the token exchange (self-signed JWTs).
"""

from __future__ import annotations

import base64
import binascii
import collections
import functools
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import gspread
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth.transport.requests import AuthorizedSession
from google.oauth2 import service_account

from tests.emulators.base import Emulator, Fault, HttpRequest, Reply, media_type

SHEETS_URL = "https://sheets.googleapis.com"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/spreadsheets"
SCOPE_READONLY = "https://www.googleapis.com/auth/spreadsheets.readonly"
_WRITE_SCOPES = frozenset({SCOPE, "https://www.googleapis.com/auth/drive",
                           "https://www.googleapis.com/auth/drive.file"})
_READ_SCOPES = _WRITE_SCOPES | {SCOPE_READONLY, "https://www.googleapis.com/auth/drive.readonly"}
TOKEN_LIFETIME = 3600
#: what a formula entered with USER_ENTERED shows as its value
FORMULA_SHOWN = "#FORMULA"
#: Google's limit on the cells of one spreadsheet, all sheets together
MAX_CELLS = 10_000_000
#: the encodedLocations Google answers for "no restriction"
NO_BOUNDARY = "0x0"

#: the keys of `SheetsEmulator.counts`
KINDS = ("token", "metadata", "values.get", "values.batchGet", "values.update", "values.batchUpdate",
         "values.append", "batchUpdate", "allowedLocations", "other")
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                 501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_QUOTA_MESSAGE = (
    "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute per user' of service "
    "'sheets.googleapis.com' for consumer 'project_number:000000000000'."
)
_UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
    "other valid authentication credential."
)
_SPREADSHEET_PATH = re.compile(r"^/v4/spreadsheets/([^/:]+)(.*)$")
_LOCATIONS_PATH = re.compile(r"^/v1/projects/-/serviceAccounts/([^/]+)/allowedLocations$")
_ENDPOINT = re.compile(r"^([A-Za-z]{0,3})([0-9]{0,7})$")
_PLAIN_TITLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUOTED_RANGE = re.compile(r"^'((?:[^']|'')*)'(?:!(.+))?$", re.DOTALL)
_CELL_LIKE = re.compile(r"^(?:[A-Za-z]{1,3}[0-9]+|[Rr][0-9]*[Cc][0-9]*)$")


class SheetsError(Exception):
    """An answer in Google's error shape; raised anywhere below `handle()`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def reply(self) -> Reply:
        return google_error(self.status, self.message)


def google_error(status: int, message: str) -> Reply:
    name = _STATUS_NAMES.get(status, "UNKNOWN")
    headers = {}
    if status == 401:
        headers["www-authenticate"] = 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
    return Reply.json(status, {"error": {"code": status, "message": message, "status": name}}, headers)


class _Formula(str):
    """A formula cell: its str value is what the sheet shows, `source` what was typed."""

    source: str

    def __new__(cls, source: str) -> _Formula:
        cell = super().__new__(cls, FORMULA_SHOWN)
        cell.source = source
        return cell


@dataclass
class _Sheet:
    sheet_id: int
    title: str
    rows: list[list[str]]  # no trailing "" in a row, no trailing [] rows
    row_count: int
    column_count: int

    def trim(self, row: int | None = None) -> None:
        if row is not None and row < len(self.rows):
            cells = self.rows[row]
            while cells and not cells[-1]:
                cells.pop()
        while self.rows and not self.rows[-1]:
            self.rows.pop()

    def properties(self, index: int) -> dict[str, Any]:
        return {
            "sheetId": self.sheet_id,
            "title": self.title,
            "index": index,
            "sheetType": "GRID",
            "gridProperties": {"rowCount": self.row_count, "columnCount": self.column_count},
        }


@dataclass
class _Book:
    spreadsheet_id: str
    title: str
    sheets: list[_Sheet]

    def sheet(self, title: str) -> _Sheet | None:
        return next((s for s in self.sheets if s.title == title), None)

    def sheet_by_id(self, sheet_id: object, where: str) -> _Sheet:
        found = next((s for s in self.sheets if s.sheet_id == sheet_id), None)
        if found is None:
            raise SheetsError(400, f"Invalid {where}: No grid with id: {sheet_id}")
        return found

    def cells(self) -> int:
        return sum(s.row_count * s.column_count for s in self.sheets)


@dataclass
class _Box:
    """A resolved range: 0-based, end exclusive; `*_open` when the range left that end unsaid."""

    sheet: _Sheet
    r0: int
    c0: int
    r1: int
    c1: int
    rows_open: bool
    cols_open: bool
    #: a single-cell range (``A1``) only says where a write starts, not how far it may go
    single: bool = False

    def a1(self) -> str:
        return a1_range(self.sheet.title, self.r0, self.c0, self.r1, self.c1)


@functools.cache
def column_letters(number: int) -> str:
    """1 -> A, 27 -> AA."""
    letters = ""
    while number > 0:
        number, rest = divmod(number - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _column_number(letters: str) -> int:
    number = 0
    for char in letters.upper():
        number = number * 26 + ord(char) - ord("A") + 1
    return number


def quote_title(title: str) -> str:
    """A sheet title as Google writes it in a range: bare when it cannot be misread."""
    if _PLAIN_TITLE.match(title) and not _CELL_LIKE.match(title):
        return title
    return "'" + title.replace("'", "''") + "'"


def a1_range(title: str, r0: int, c0: int, r1: int, c1: int) -> str:
    start = f"{column_letters(c0 + 1)}{r0 + 1}"
    end = f"{column_letters(c1)}{r1}"
    return f"{quote_title(title)}!{start}" + ("" if (r1 - r0, c1 - c0) == (1, 1) else f":{end}")


def _endpoint(text: str) -> tuple[int | None, int | None] | None:
    """``B7`` -> (col 2, row 7); either may be missing; None when it is not an A1 endpoint."""
    match = _ENDPOINT.match(text)
    if match is None or not text:
        return None
    letters, digits = match.groups()
    row = int(digits) if digits else None
    if row == 0:
        return None
    return (_column_number(letters) if letters else None, row)


def _parse_a1(text: str) -> tuple[tuple[int | None, int | None], tuple[int | None, int | None]] | None:
    first, colon, second = text.partition(":")
    start = _endpoint(first)
    if start is None:
        return None
    if not colon:
        # "A" or "7" alone would be a named range to Google, and we have none
        return (start, start) if None not in start else None
    end = _endpoint(second)
    if end is None:
        return None
    if (start[0] is None) != (end[0] is None) and (start[1] is None) != (end[1] is None):
        return None  # like "A:7"
    return start, end


def _split_title(text: str) -> tuple[str | None, str | None]:
    """``'My ''x'''!A1:B2`` -> ("My 'x'", "A1:B2"); ``Orders`` -> ("Orders", None)."""
    if text.startswith("'"):
        quoted = _QUOTED_RANGE.match(text)
        if quoted is None:
            raise ValueError("bad quoting")
        return quoted.group(1).replace("''", "'"), quoted.group(2)
    if "!" in text:
        title_text, _, a1 = text.rpartition("!")
        if not title_text or not a1:
            raise ValueError("empty title or range")
        return title_text, a1
    return None, text


class SheetsEmulator(Emulator):
    """Spreadsheets in memory, served as the Sheets API v4 serves them; see the module docstring."""

    # A values.batchUpdate of 100,000 one-cell ranges is several MB: Google takes it, so do we.
    max_body = 64 << 20

    def __init__(self, *, latency: float = 0.0, public_keys: dict[str, bytes] | None = None,
                 record_requests: bool = True) -> None:
        super().__init__(latency=latency, record_requests=record_requests)
        self.counts: collections.Counter[str] = collections.Counter()
        self.writes: list[dict[str, Any]] = []
        self.between_read_and_write: Callable[[SheetsEmulator], None] | None = None
        self.boundary_lookups: list[str] = []
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        for kid, pem in (public_keys or {}).items():
            key = serialization.load_pem_public_key(pem)
            if not isinstance(key, rsa.RSAPublicKey):
                raise ValueError(f"key {kid} is not an RSA public key")
            self._keys[kid] = key
        self._tokens: dict[str, tuple[frozenset[str], float]] = {}
        self._books: dict[str, _Book] = {}
        self._next_sheet_id = 0
        self._state = threading.RLock()

    # -- test-facing controls ---------------------------------------------------------------

    def add_spreadsheet(self, spreadsheet_id: str, sheets: dict[str, list[list[str]]], *,
                        title: str = "Test", grid: tuple[int, int] | None = None) -> None:
        """Create (or replace) a spreadsheet; `grid` (rows, columns) applies to every sheet."""
        if not sheets:
            raise ValueError("a spreadsheet has at least one sheet")
        with self._state:
            book = _Book(spreadsheet_id, title, [])
            for sheet_title, rows in sheets.items():
                cells = [[str(cell) for cell in row] for row in rows]
                width = max((len(row) for row in cells), default=0)
                row_count, column_count = grid or (max(1000, len(cells)), max(26, width))
                if len(cells) > row_count or width > column_count:
                    raise ValueError(f"{sheet_title!r}: {len(cells)}x{width} cells do not fit {grid}")
                sheet = _Sheet(self._next_sheet_id, sheet_title, cells, row_count, column_count)
                for index in range(len(cells)):
                    sheet.trim(index)
                sheet.trim()
                # Google's first sheet is gid 0, later ones random: a spread catches mix-ups
                self._next_sheet_id += 1_000_003
                book.sheets.append(sheet)
            if book.cells() > MAX_CELLS:
                raise ValueError(f"more than {MAX_CELLS} cells")
            self._books[spreadsheet_id] = book

    def values(self, spreadsheet_id: str, title: str) -> list[list[str]]:
        """The cells as shown (formulas as `FORMULA_SHOWN`), trailing empties trimmed."""
        with self._state:
            return [[str(cell) for cell in row] for row in self._sheet(spreadsheet_id, title).rows]

    def formula(self, spreadsheet_id: str, title: str, row: int, col: int) -> str | None:
        """The formula typed in a cell (1-based), or None when it holds plain text."""
        with self._state:
            rows = self._sheet(spreadsheet_id, title).rows
            cell = rows[row - 1][col - 1] if row <= len(rows) and col <= len(rows[row - 1]) else ""
            return cell.source if isinstance(cell, _Formula) else None

    def grid(self, spreadsheet_id: str, title: str) -> tuple[int, int]:
        with self._state:
            sheet = self._sheet(spreadsheet_id, title)
            return sheet.row_count, sheet.column_count

    def set_cell(self, spreadsheet_id: str, title: str, row: int, col: int, text: str) -> None:
        """Type `text` into a cell (1-based), like a person would; the grid must hold it."""
        with self._state:
            sheet = self._sheet(spreadsheet_id, title)
            if not (1 <= row <= sheet.row_count and 1 <= col <= sheet.column_count):
                raise ValueError(f"{column_letters(col)}{row} is outside the {title!r} grid")
            self._put(sheet, row - 1, col - 1, _typed(text))
            sheet.trim(row - 1)

    def insert_rows(self, spreadsheet_id: str, title: str, before: int, rows: list[list[str]]) -> None:
        """Insert rows above 1-based row `before`, growing the grid, as "Insert row above" does."""
        with self._state:
            sheet = self._sheet(spreadsheet_id, title)
            if max((len(r) for r in rows), default=0) > sheet.column_count:
                raise ValueError("inserted rows are wider than the grid")
            _insert(sheet, "ROWS", before - 1, len(rows))
            for offset, cells in enumerate(rows):
                for col, text in enumerate(cells):
                    self._put(sheet, before - 1 + offset, col, _typed(text))
                sheet.trim(before - 1 + offset)

    def delete_rows(self, spreadsheet_id: str, title: str, start: int, count: int = 1) -> None:
        """Delete `count` rows from 1-based row `start`, shrinking the grid."""
        with self._state:
            _delete(self._sheet(spreadsheet_id, title), "ROWS", start - 1, start - 1 + count)

    def sort_rows(self, spreadsheet_id: str, title: str, key: Callable[[list[str]], Any], *,
                  header_rows: int = 1, reverse: bool = False) -> None:
        """Sort the filled rows below the header, as a person selecting them and sorting does."""
        with self._state:
            sheet = self._sheet(spreadsheet_id, title)
            body = sheet.rows[header_rows:]
            body.sort(key=lambda r: key([str(c) for c in r]), reverse=reverse)
            sheet.rows[header_rows:] = body
            sheet.trim()

    def reset_counts(self) -> None:
        self.counts.clear()

    def expire_tokens(self) -> None:
        """Forget every access token issued, as if all had expired."""
        with self._state:
            self._tokens.clear()

    def reset(self) -> None:
        """The base's reset, plus counts, writes and a pending hook; the spreadsheets stay."""
        super().reset()
        self.counts.clear()
        self.writes.clear()
        self.between_read_and_write = None

    # -- the server side --------------------------------------------------------------------

    def takes_fault(self, method: str, path: str) -> bool:
        return path.startswith("/v4/")

    def record(self, request: HttpRequest) -> None:
        self.counts[_kind(request.method, request.path)] += 1
        super().record(request)

    def fault_reply(self, fault: Fault) -> Reply:
        assert fault.status is not None
        message = _QUOTA_MESSAGE if fault.status == 429 else HTTPStatus(fault.status).description
        return google_error(fault.status, message)

    def handle(self, request: HttpRequest) -> Reply:
        try:
            if request.path == "/token":
                return self._token(request)
            located = _LOCATIONS_PATH.match(request.path)
            if located is not None:
                return self._locations(request, unquote(located.group(1)))
            found = _SPREADSHEET_PATH.match(request.path)
            if found is None:
                raise SheetsError(404, "Method not found.")
            return self._sheets_call(request, unquote(found.group(1)), found.group(2))
        except SheetsError as exc:
            return exc.reply()

    def _sheets_call(self, request: HttpRequest, spreadsheet_id: str, rest: str) -> Reply:
        kind = _kind(request.method, request.path)
        if kind == "other":
            raise SheetsError(404, "Method not found.")
        self._authorize(request, write=kind in {"values.update", "values.batchUpdate",
                                                  "values.append", "batchUpdate"})
        query = parse_qs(request.query, keep_blank_values=True)
        with self._state:
            book = self._books.get(spreadsheet_id)
            if book is None:
                raise SheetsError(404, "Requested entity was not found.")
            if kind == "metadata":
                return Reply.json(200, self._metadata(book, query))
            if kind == "batchUpdate":
                return Reply.json(200, self._batch_update(book, _json_body(request)))
            if kind in {"values.get", "values.batchGet"}:
                if kind == "values.get":
                    payload: dict[str, Any] = self._read(book, unquote(rest[len("/values/"):]), query)
                else:
                    ranges = query.get("ranges", [])
                    payload = {"spreadsheetId": book.spreadsheet_id,
                               "valueRanges": [self._read(book, r, query) for r in ranges]}
                reply = Reply.json(200, payload)
                hook, self.between_read_and_write = self.between_read_and_write, None
                if hook is not None:
                    hook(self)
                return reply
            if kind == "values.batchUpdate":
                return Reply.json(200, self._values_batch_update(book, _json_body(request)))
            target = unquote(rest[len("/values/"):].removesuffix(":append"))
            body = _json_body(request)
            if kind == "values.append":
                return Reply.json(200, self._append(book, target, query, body))
            return Reply.json(200, self._values_update(book, target, query, body))

    # -- OAuth ------------------------------------------------------------------------------

    def _token(self, request: HttpRequest) -> Reply:
        if request.method != "POST":
            return _oauth_error(405, "invalid_request", "Token requests must be POST.")
        if media_type(request) != "application/x-www-form-urlencoded":
            return _oauth_error(400, "invalid_request", "Expected an application/x-www-form-urlencoded body.")
        form = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
        grant = form.get("grant_type", [""])[0]
        if grant != JWT_GRANT:
            return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")
        try:
            claims = self._verify_assertion(form.get("assertion", [""])[0])
        except ValueError as exc:
            return _oauth_error(400, "invalid_grant", str(exc))
        scopes = frozenset(str(claims.get("scope", "")).split())
        if not scopes:
            return _oauth_error(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        token = "ya29.emu-" + secrets.token_urlsafe(24)
        with self._state:
            self._tokens[token] = (scopes, time.time() + TOKEN_LIFETIME)
        return Reply.json(200, {"access_token": token, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"})

    def _verify_assertion(self, assertion: str) -> dict[str, Any]:
        parts = assertion.split(".")
        if len(parts) != 3:
            raise ValueError("Invalid JWT: not three dot-separated parts.")
        try:
            header = json.loads(_unb64(parts[0]))
            claims = json.loads(_unb64(parts[1]))
            signature = _unb64(parts[2])
        except (ValueError, binascii.Error) as exc:
            raise ValueError(f"Invalid JWT: {exc}") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise ValueError("Invalid JWT: header and claims must be JSON objects.")
        if header.get("alg") != "RS256":
            raise ValueError("Invalid JWT: only RS256 is accepted.")
        if not claims.get("iss"):
            raise ValueError("Invalid JWT: no iss claim.")
        audience = str(claims.get("aud", ""))
        if audience != GOOGLE_TOKEN_URL and not audience.endswith("/token"):
            raise ValueError("Invalid JWT: Failed audience check.")
        iat, exp, now = claims.get("iat"), claims.get("exp"), time.time()
        if not (isinstance(iat, int) and isinstance(exp, int)
                and iat - 300 <= now <= exp and 0 < exp - iat <= TOKEN_LIFETIME):
            raise ValueError(
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe. Check your iat and exp values in the JWT claim."
            )
        if self._keys:
            key = self._keys.get(str(header.get("kid", "")))
            if key is None:
                raise ValueError("Invalid JWT Signature.")
            signed = f"{parts[0]}.{parts[1]}".encode("ascii")
            try:
                key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                raise ValueError("Invalid JWT Signature.") from None
        return claims

    def _authorize(self, request: HttpRequest, *, write: bool) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self._state:
            granted = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if granted is None or granted[1] < time.time():
            raise SheetsError(401, _UNAUTHENTICATED)
        if not granted[0] & (_WRITE_SCOPES if write else _READ_SCOPES):
            raise SheetsError(403, "Request had insufficient authentication scopes.")

    def _locations(self, request: HttpRequest, email: str) -> Reply:
        self._authorize(request, write=False)
        self.boundary_lookups.append(email)
        return Reply.json(200, {"locations": [], "encodedLocations": NO_BOUNDARY})

    # -- spreadsheets.get / batchUpdate -----------------------------------------------------

    def _metadata(self, book: _Book, query: dict[str, list[str]]) -> dict[str, Any]:
        if query.get("includeGridData", ["false"])[0].lower() == "true":
            raise SheetsError(400, "The emulator does not serve includeGridData=true.")
        payload: dict[str, Any] = {
            "spreadsheetId": book.spreadsheet_id,
            "properties": {"title": book.title, "locale": "en_US", "autoRecalc": "ON_CHANGE",
                           "timeZone": "Etc/GMT"},
            "sheets": [{"properties": s.properties(i)} for i, s in enumerate(book.sheets)],
            "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{book.spreadsheet_id}/edit",
        }
        wanted = _top_fields(query.get("fields", [""])[0])
        return payload if wanted is None else {k: v for k, v in payload.items() if k in wanted}

    def _batch_update(self, book: _Book, body: dict[str, Any]) -> dict[str, Any]:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise SheetsError(400, "Must specify at least one request.")
        # all or nothing, like Google: plan every change against a copy of the grids first
        plans: list[Callable[[], None]] = []
        sizes = {s.sheet_id: [s.row_count, s.column_count] for s in book.sheets}
        for index, item in enumerate(requests):
            if not isinstance(item, dict) or len(item) != 1:
                raise SheetsError(400, f"Invalid requests[{index}]: exactly one kind of request expected.")
            (name, spec), = item.items()
            where = f"requests[{index}].{name}"
            if not isinstance(spec, dict):
                raise SheetsError(400, f"Invalid {where}: not an object.")
            plans.append(_plan(book, name, spec, where, sizes))
        cells = sum(rows * cols for rows, cols in sizes.values())
        if cells > MAX_CELLS:
            raise SheetsError(400, "This action would increase the number of cells in the workbook above "
                                   f"the limit of {MAX_CELLS} cells.")
        for apply in plans:
            apply()
        reply: dict[str, Any] = {"spreadsheetId": book.spreadsheet_id, "replies": [{} for _ in plans]}
        if body.get("includeSpreadsheetInResponse"):
            reply["updatedSpreadsheet"] = self._metadata(book, {})
        return reply

    # -- values -----------------------------------------------------------------------------

    def _resolve(self, book: _Book, text: str) -> _Box:
        try:
            title, a1 = _split_title(text.strip())
        except ValueError:
            raise SheetsError(400, f"Unable to parse range: {text}") from None
        if title is None:
            sheet = book.sheet(a1 or "")
            if sheet is not None:
                a1 = None
            elif a1 is not None and _parse_a1(a1) is not None:
                sheet = book.sheets[0]
        else:
            sheet = book.sheet(title)
        if sheet is None:
            raise SheetsError(400, f"Unable to parse range: {text}")
        if a1 is None:
            return _Box(sheet, 0, 0, sheet.row_count, sheet.column_count, True, True)
        parsed = _parse_a1(a1)
        if parsed is None:
            raise SheetsError(400, f"Unable to parse range: {text}")
        (col0, row0), (col1, row1) = parsed
        # B5:A1 means A1:B5; a missing end is the grid's edge
        rows = sorted((row0 or 1, row1 or sheet.row_count)) if row0 and row1 else [
            row0 or 1, row1 or sheet.row_count]
        cols = sorted((col0 or 1, col1 or sheet.column_count)) if col0 and col1 else [
            col0 or 1, col1 or sheet.column_count]
        if max(rows) > sheet.row_count or max(cols) > sheet.column_count:
            raise SheetsError(400, _beyond_grid(text, sheet))
        return _Box(sheet, rows[0] - 1, cols[0] - 1, rows[1], cols[1], row1 is None, col1 is None,
                    ":" not in a1)

    def _read(self, book: _Book, text: str, query: dict[str, list[str]]) -> dict[str, Any]:
        box = self._resolve(book, text)
        major = _major(query.get("majorDimension", ["ROWS"])[0] or "ROWS")
        render = query.get("valueRenderOption", ["FORMATTED_VALUE"])[0] or "FORMATTED_VALUE"
        if render not in {"FORMATTED_VALUE", "UNFORMATTED_VALUE", "FORMULA"}:
            raise SheetsError(400, f"Invalid valueRenderOption: {render}")
        values: list[list[str]] = []
        for cells in box.sheet.rows[box.r0 : box.r1]:
            row = cells[box.c0 : box.c1]
            while row and not row[-1]:
                row.pop()
            if render == "FORMULA":
                row = [c.source if isinstance(c, _Formula) else c for c in row]
            values.append(row)
        while values and not values[-1]:
            values.pop()
        if major == "COLUMNS":
            values = _transpose(values)
        payload: dict[str, Any] = {"range": box.a1(), "majorDimension": major}
        if values:
            payload["values"] = values
        return payload

    def _values_update(self, book: _Book, target: str, query: dict[str, list[str]],
                       body: dict[str, Any]) -> dict[str, Any]:
        option = _input_option(query.get("valueInputOption", [""])[0])
        self.writes.append({"range": target, "values": body.get("values"), "valueInputOption": option})
        named = body.get("range")
        if named is not None and self._resolve(book, str(named)).a1() != self._resolve(book, target).a1():
            raise SheetsError(400, f"Requested range [{target}] does not match the body's range [{named}].")
        write = self._plan_write(book, target, body)
        return {"spreadsheetId": book.spreadsheet_id, **self._apply_write(write, option)}

    def _values_batch_update(self, book: _Book, body: dict[str, Any]) -> dict[str, Any]:
        option = _input_option(body.get("valueInputOption") or "")
        data = body.get("data") or []
        if not isinstance(data, list):
            raise SheetsError(400, "Invalid data: a list of ValueRange expected.")
        for item in data:
            entry = item if isinstance(item, dict) else {}
            self.writes.append({"range": entry.get("range"), "values": entry.get("values"),
                                "valueInputOption": option})
        plans = []
        for index, item in enumerate(data):
            if not isinstance(item, dict) or not isinstance(item.get("range"), str):
                raise SheetsError(400, f"Invalid data[{index}]: range is required.")
            plans.append(self._plan_write(book, item["range"], item))
        responses = [self._apply_write(write, option) for write in plans]
        touched_rows = {(w.sheet.sheet_id, r) for w in plans for r, _ in w.cells}
        touched_cols = {(w.sheet.sheet_id, c) for w in plans for _, c in w.cells}
        payload: dict[str, Any] = {"spreadsheetId": book.spreadsheet_id}
        if responses:
            payload.update({
                "totalUpdatedRows": len(touched_rows),
                "totalUpdatedColumns": len(touched_cols),
                "totalUpdatedCells": sum(r.get("updatedCells", 0) for r in responses),
                "totalUpdatedSheets": len({w.sheet.sheet_id for w in plans if w.cells}),
                "responses": [{"spreadsheetId": book.spreadsheet_id, **r} for r in responses],
            })
        return payload

    def _append(self, book: _Book, target: str, query: dict[str, list[str]],
                body: dict[str, Any]) -> dict[str, Any]:
        option = _input_option(query.get("valueInputOption", [""])[0])
        self.writes.append({"range": target, "values": body.get("values"), "valueInputOption": option})
        box = self._resolve(book, target)
        sheet = box.sheet
        values = _matrix(body)
        if box.c0 + max((len(row) for row in values), default=0) > sheet.column_count:
            raise SheetsError(400, _beyond_grid(target, sheet))
        # the "table" is simplified to every filled row of the sheet: append below the last one
        last = len(sheet.rows)
        table = a1_range(sheet.title, 0, box.c0, last, box.c1) if last else None
        needed = last + len(values) - sheet.row_count
        if needed > 0:
            if book.cells() + needed * sheet.column_count > MAX_CELLS:
                raise SheetsError(400, "This action would increase the number of cells in the workbook "
                                       f"above the limit of {MAX_CELLS} cells.")
            sheet.row_count += needed
        start = f"{quote_title(sheet.title)}!{column_letters(box.c0 + 1)}{last + 1}"
        write = self._plan_write(book, start, {"values": values})
        payload: dict[str, Any] = {"spreadsheetId": book.spreadsheet_id,
                                   "updates": {"spreadsheetId": book.spreadsheet_id,
                                               **self._apply_write(write, option)}}
        if table is not None:
            payload["tableRange"] = table
        return payload

    def _plan_write(self, book: _Book, target: str, body: dict[str, Any]) -> _Write:
        box = self._resolve(book, target)
        values = _matrix(body)
        sheet = box.sheet
        height = len(values)
        width = max((len(row) for row in values), default=0)
        if not box.single and not box.rows_open and height > box.r1 - box.r0:
            raise SheetsError(400, f"Requested writing within range [{target}], but tried writing to "
                                   f"row [{box.r0 + height}]")
        if not box.single and not box.cols_open and width > box.c1 - box.c0:
            raise SheetsError(400, f"Requested writing within range [{target}], but tried writing to "
                                   f"column [{column_letters(box.c0 + width)}]")
        if box.r0 + height > sheet.row_count or box.c0 + width > sheet.column_count:
            raise SheetsError(400, _beyond_grid(
                a1_range(sheet.title, box.r0, box.c0, box.r0 + height, box.c0 + width), sheet))
        return _Write(box, values)

    def _apply_write(self, write: _Write, option: str) -> dict[str, Any]:
        sheet, box, values = write.sheet, write.box, write.values
        if not values:
            return {"updatedRange": box.a1()}
        for r, c in write.cells:
            self._put(sheet, r, c, _converted(values[r - box.r0][c - box.c0], option))
        rows = {r for r, _ in write.cells}
        for r in rows:
            sheet.trim(r)
        sheet.trim()
        return {
            "updatedRange": a1_range(sheet.title, box.r0, box.c0, box.r0 + len(values),
                                     box.c0 + max(len(row) for row in values)),
            "updatedRows": len(rows),
            "updatedColumns": len({c for _, c in write.cells}),
            "updatedCells": len(write.cells),
        }

    # -- helpers ----------------------------------------------------------------------------

    def _sheet(self, spreadsheet_id: str, title: str) -> _Sheet:
        sheet = self._books[spreadsheet_id].sheet(title)
        if sheet is None:
            raise KeyError(f"no sheet {title!r} in {spreadsheet_id}")
        return sheet

    @staticmethod
    def _put(sheet: _Sheet, row: int, col: int, cell: str) -> None:
        rows = sheet.rows
        if row >= len(rows):
            if not cell:
                return
            rows.extend([] for _ in range(row + 1 - len(rows)))
        cells = rows[row]
        if col >= len(cells):
            if not cell:
                return
            cells.extend("" for _ in range(col + 1 - len(cells)))
        cells[col] = cell


class _Write:
    """Values bound for a box; `cells` are the 0-based cells set (null values leave a cell be)."""

    def __init__(self, box: _Box, values: list[list[Any]]) -> None:
        self.box = box
        self.values = values
        self.sheet = box.sheet
        self.cells = [(box.r0 + i, box.c0 + j) for i, row in enumerate(values)
                      for j, value in enumerate(row) if value is not None]


def _plan(book: _Book, name: str, spec: dict[str, Any], where: str,
          sizes: dict[int, list[int]]) -> Callable[[], None]:
    """Check one spreadsheets.batchUpdate request against `sizes` (updated); return its effect."""
    if name == "appendDimension":
        sheet = book.sheet_by_id(spec.get("sheetId"), where)
        dimension, length = spec.get("dimension"), spec.get("length")
        if dimension not in {"ROWS", "COLUMNS"} or not isinstance(length, int) or length < 1:
            raise SheetsError(400, f"Invalid {where}: dimension and a positive length are required.")
        sizes[sheet.sheet_id][0 if dimension == "ROWS" else 1] += length
        return lambda: _insert(sheet, str(dimension), None, length)
    if name in {"insertDimension", "deleteDimension"}:
        span = spec.get("range") or {}
        sheet = book.sheet_by_id(span.get("sheetId"), where)
        dimension = span.get("dimension")
        start, end = span.get("startIndex", 0), span.get("endIndex")
        axis = 0 if dimension == "ROWS" else 1
        if dimension not in {"ROWS", "COLUMNS"} or not isinstance(start, int) or not isinstance(end, int) \
                or not 0 <= start < end:
            raise SheetsError(400, f"Invalid {where}: range needs a dimension and "
                                   "0 <= startIndex < endIndex.")
        if name == "insertDimension":
            if start > sizes[sheet.sheet_id][axis] or (start == sizes[sheet.sheet_id][axis]
                                                        and not spec.get("inheritFromBefore")):
                raise SheetsError(400, f"Invalid {where}: range beyond the grid "
                                       "(use inheritFromBefore to insert at the end).")
            sizes[sheet.sheet_id][axis] += end - start
            return lambda: _insert(sheet, dimension, start, end - start)
        if end > sizes[sheet.sheet_id][axis] or end - start >= sizes[sheet.sheet_id][axis]:
            raise SheetsError(400, f"Invalid {where}: cannot delete beyond the grid, nor every "
                                   f"{dimension.lower()} of a sheet.")
        sizes[sheet.sheet_id][axis] -= end - start
        return lambda: _delete(sheet, dimension, start, end)
    if name == "updateSheetProperties":
        props = spec.get("properties") or {}
        sheet = book.sheet_by_id(props.get("sheetId"), where)
        fields = {f.strip().replace("/", ".") for f in str(spec.get("fields", "")).split(",") if f.strip()}
        if not fields:
            raise SheetsError(400, f"Invalid {where}: fields is required.")
        grid = props.get("gridProperties") or {}
        every = "*" in fields
        rows = grid.get("rowCount") if every or fields & {"gridProperties", "gridProperties.rowCount"} \
            else None
        cols = grid.get("columnCount") if every or fields & {"gridProperties", "gridProperties.columnCount"} \
            else None
        title = props.get("title") if every or "title" in fields else None
        for value in (rows, cols):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise SheetsError(400, f"Invalid {where}: grid sizes must be positive.")
        if title is not None and any(s.title == title and s is not sheet for s in book.sheets):
            raise SheetsError(400, f"Invalid {where}: A sheet with the name \"{title}\" already exists.")
        size = sizes[sheet.sheet_id]
        size[0], size[1] = rows or size[0], cols or size[1]

        def apply() -> None:
            if rows is not None:
                _resize(sheet, "ROWS", rows)
            if cols is not None:
                _resize(sheet, "COLUMNS", cols)
            if title is not None:
                sheet.title = str(title)
        return apply
    raise SheetsError(400, f'Invalid JSON payload received. Unknown name "{name}" at '
                           f"'{where.rsplit('.', 1)[0]}': Cannot find field (or the emulator lacks it).")


def _insert(sheet: _Sheet, dimension: str, at: int | None, count: int) -> None:
    """Add `count` empty rows/columns before 0-based `at` (None: at the end)."""
    if dimension == "ROWS":
        if at is not None and at < len(sheet.rows):
            sheet.rows[at:at] = [[] for _ in range(count)]
        sheet.row_count += count
        return
    if at is not None:
        for cells in sheet.rows:
            if at < len(cells):
                cells[at:at] = [""] * count
    sheet.column_count += count


def _delete(sheet: _Sheet, dimension: str, start: int, end: int) -> None:
    if dimension == "ROWS":
        del sheet.rows[start:end]
        sheet.row_count -= end - start
    else:
        for index, cells in enumerate(sheet.rows):
            del cells[start:end]
            sheet.trim(index)
        sheet.column_count -= end - start
    sheet.trim()


def _resize(sheet: _Sheet, dimension: str, size: int) -> None:
    if dimension == "ROWS":
        del sheet.rows[size:]
        sheet.row_count = size
    else:
        for index, cells in enumerate(sheet.rows):
            del cells[size:]
            sheet.trim(index)
        sheet.column_count = size
    sheet.trim()


def _kind(method: str, path: str) -> str:
    if path == "/token":
        return "token"
    if _LOCATIONS_PATH.match(path):
        return "allowedLocations"
    found = _SPREADSHEET_PATH.match(path)
    if found is None:
        return "other"
    rest = found.group(2)
    table = {
        ("GET", ""): "metadata",
        ("POST", ":batchUpdate"): "batchUpdate",
        ("GET", "/values:batchGet"): "values.batchGet",
        ("POST", "/values:batchUpdate"): "values.batchUpdate",
    }
    if (method, rest) in table:
        return table[(method, rest)]
    if rest.startswith("/values/") and len(rest) > len("/values/"):
        if method == "POST" and rest.endswith(":append"):
            return "values.append"
        return {"GET": "values.get", "PUT": "values.update"}.get(method, "other")
    return "other"


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        raise SheetsError(400, "Invalid JSON payload received.") from None
    if not isinstance(body, dict):
        raise SheetsError(400, "Invalid JSON payload received. Expected an object.")
    return body


def _matrix(body: dict[str, Any]) -> list[list[Any]]:
    values = body.get("values") or []
    if not isinstance(values, list) or not all(isinstance(row, list) for row in values):
        raise SheetsError(400, "Invalid values: a list of lists expected.")
    for row in values:
        for value in row:
            if value is not None and not isinstance(value, str | int | float | bool):
                raise SheetsError(400, f"Invalid values: {type(value).__name__} is not a cell value.")
    major = _major(body.get("majorDimension") or "ROWS")
    return _transpose(values) if major == "COLUMNS" else values


def _major(value: str) -> str:
    if value not in {"ROWS", "COLUMNS"}:
        raise SheetsError(400, f"Invalid majorDimension: {value}")
    return value


def _transpose(values: list[list[Any]]) -> list[list[Any]]:
    width = max((len(row) for row in values), default=0)
    columns = [[row[j] if j < len(row) else "" for row in values] for j in range(width)]
    for column in columns:
        while column and column[-1] == "":
            column.pop()
    return columns


def _input_option(value: str) -> str:
    if not value:
        raise SheetsError(400, "'valueInputOption' is required but not specified")
    if value not in {"RAW", "USER_ENTERED"}:
        raise SheetsError(400, f"Invalid value at 'value_input_option', \"{value}\"")
    return value


def _converted(value: str | float | bool, option: str) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    return _typed(value) if option == "USER_ENTERED" else value


def _typed(text: str) -> str:
    """What the sheet holds after a person (or USER_ENTERED) enters `text`."""
    if text.startswith("="):
        return _Formula(text)
    return text.removeprefix("'")


def _beyond_grid(text: str, sheet: _Sheet) -> str:
    return (f"Range ({text}) exceeds grid limits. Max rows: {sheet.row_count}, "
            f"max columns: {sheet.column_count}")


def _top_fields(fields: str) -> set[str] | None:
    """Top-level names of a field mask (``sheets.properties,properties(title)``); None: all."""
    if not fields.strip() or fields.strip() == "*":
        return None
    names, depth, current = set(), 0, ""
    for char in fields + ",":
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            names.add(re.split(r"[./(]", current.strip(), maxsplit=1)[0])
            current = ""
            continue
        current += char
    return names


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _oauth_error(status: int, error: str, description: str) -> Reply:
    return Reply.json(status, {"error": error, "error_description": description})


def load_seed(path: Path, emulator: SheetsEmulator) -> None:
    """Load ``{"<id>": {"title": str, "sheets": {title: rows}, "grid": [rows, cols]}}`` (CLI)."""
    for spreadsheet_id, spec in json.loads(path.read_text(encoding="utf-8")).items():
        grid = spec.get("grid")
        emulator.add_spreadsheet(spreadsheet_id, spec["sheets"], title=spec.get("title", "Test"),
                                 grid=tuple(grid) if grid else None)


# -- the client recipe: real gspread and google-auth, pointed at the emulator ----------------------


class EndpointSession(AuthorizedSession):
    """An `AuthorizedSession` that sends what gspread addresses to Google's Sheets host to `api_url`."""

    def __init__(self, credentials: service_account.Credentials, api_url: str) -> None:
        super().__init__(credentials)  # type: ignore[no-untyped-call]
        self.api_url = api_url.rstrip("/")

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if isinstance(url, str) and url.startswith(SHEETS_URL + "/"):
            url = self.api_url + url[len(SHEETS_URL) :]
        return super().request(method, url, *args, **kwargs)  # type: ignore[no-untyped-call]


class LocalBoundaryCredentials(service_account.Credentials):
    """Service-account credentials whose Regional Access Boundary lookup goes to `lookup_base`.

    google-auth would send it to iamcredentials.googleapis.com; with ``lookup_base = None`` the
    lookup makes no request at all (google-auth then treats it as failed and waits 15 min).
    """

    lookup_base: str | None = None

    def _build_regional_access_boundary_lookup_url(self, request: Any = None) -> str | None:
        if self.lookup_base is None:
            return None
        email = quote(self.service_account_email, safe="@")
        return f"{self.lookup_base}/v1/projects/-/serviceAccounts/{email}/allowedLocations"


def emulator_credentials(key_file: Path, api_url: str, scopes: tuple[str, ...] = (SCOPE,),
                         *, boundary_lookup: bool = True) -> LocalBoundaryCredentials:
    """Credentials from `key_file` whose boundary lookup hits the emulator (or nothing)."""
    credentials: LocalBoundaryCredentials = LocalBoundaryCredentials.from_service_account_file(  # type: ignore[no-untyped-call]
        str(key_file), scopes=list(scopes)
    )
    credentials.lookup_base = api_url.rstrip("/") if boundary_lookup else None
    return credentials


def gspread_client(
    key_file: Path,
    api_url: str,
    *,
    scopes: tuple[str, ...] = (SCOPE,),
    timeout: tuple[float, float] = (5.0, 30.0),
    boundary_lookup: bool = True,
) -> gspread.Client:
    """A real `gspread.Client` talking to the emulator at `api_url`, token exchange included."""
    credentials = emulator_credentials(key_file, api_url, scopes, boundary_lookup=boundary_lookup)
    client = gspread.Client(auth=credentials, session=EndpointSession(credentials, api_url))
    client.set_timeout(timeout)
    return client
